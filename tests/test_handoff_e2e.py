"""Handoff end to end against the simulator: a course attendee asks 怎么开户, is qualified, offered to a
licensed manager by card, accepted with one tap, and the kf conversation moves to the manager; an
ignored card is reassigned on time, counted from when it reached the manager (a card held for compliance
review does not count). The bot's parts read one controlled clock; the simulator keeps its own."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.config import Settings
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.delivery.review import release
from bot.handoff.managers import ManagerFields, add_manager
from bot.handoff.sla import HandoffSweeper
from bot.kf.syncer import KfSyncer
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from bot.worker import Worker
from handlers import build_dispatcher
from models.base import utcnow
from models.campaigns import Course, CourseAttendance
from models.deliveries import Delivery
from models.handoff import Handoff
from models.inbox import EventStatus, InboundEvent
from models.leads import HookCode, Lead
from tests.callbacks import envelope, params_of
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import approved, ensure_people

DEFAULTS = Path(__file__).resolve().parents[1] / "scripts_library" / "defaults"
SCRIPTS = ["welcome_xiaohongshu", "welcome_default", "fallback", "handoff_brief", "handoff_note"]
START = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai


class Desk:
    """The bot's event path, senders and handoff sweep on one controlled clock, stepped by the test."""

    def __init__(self, services: Services, sim: Simulator) -> None:
        self.services, self.sim = services, sim
        self.now = START
        s = services
        self.sender = DeliveryDispatcher(s.settings, s.db, s.coordinator, s.client, clock=self.clock)
        self.sweeper = HandoffSweeper(s.settings, s.db, s.coordinator, lambda: s.client, clock=self.clock)
        self.delivered = 0
        self.open_kfid = str(
            s.client.post("kf/account/add", {"name": "开户咨询", "media_id": "MEDIA1"}, app="kf")["open_kfid"]
        )
        s.client.post("kf/add_contact_way", {"open_kfid": self.open_kfid, "scene": "s1"}, app="kf")
        s.client.post(
            "kf/servicer/add", {"open_kfid": self.open_kfid, "userid_list": ["lisi", "wangwu"]}, app="kf"
        )

    def clock(self) -> datetime:
        return self.now

    def pump(self) -> None:
        """Callbacks → inbox → kf pulls → handlers → sends, all at the clock's time."""
        s = self.services
        assert s.ingestor is not None
        for xml in self.sim.emitted_callbacks[self.delivered :]:
            query, body = envelope(xml)
            p = params_of(query)
            s.ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body)
        self.delivered = len(self.sim.emitted_callbacks)
        for _ in range(2):
            self.stamp()
            outcomes = Worker(s.settings, s.db, s.coordinator, build_dispatcher(), clock=self.clock).drain()
            assert all(o.status in ("done", "ignored") for o in outcomes), outcomes
            KfSyncer(s.settings, s.db, s.coordinator, s.client, clock=self.clock).drain()
        self.sender.drain()

    def stamp(self) -> None:
        """Rows the inbox stamped with the wall clock arrived now, on the test's clock."""
        with self.services.db.transaction() as session:
            session.execute(
                update(InboundEvent)
                .where(InboundEvent.status == EventStatus.PENDING)
                .values(received_at=self.now, next_attempt_at=self.now)
            )

    def sweep(self) -> None:
        self.sweeper.run(self.now)
        self.sender.drain()

    def say(self, customer: str, text: str) -> None:
        self.sim.kf_customer_says(self.open_kfid, customer, text)
        self.pump()

    def handoffs(self, customer: str) -> list[Handoff]:
        with self.services.db.read() as session:
            stmt = (
                select(Handoff)
                .join(Lead, Lead.id == Handoff.lead_id)
                .where(Lead.external_user_id == customer)
            )
            return list(session.scalars(stmt.order_by(Handoff.id)))

    def lead(self, customer: str) -> Lead:
        with self.services.db.read() as session:
            return session.scalars(select(Lead).where(Lead.external_user_id == customer)).one()

    def bot_texts(self, customer: str) -> list[str]:
        return [m.payload["text"]["content"] for m in self.sim.kf_sent if m.external_userid == customer]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID,
        token=TEST_TOKEN,
        encoding_aes_key=TEST_AES_KEY,
        agent_id=TEST_AGENT_ID,
        users=["lisi", "wangwu", "zhaoliu", "boss"],
    )
    with Simulator(config) as s:
        yield s


@pytest.fixture
def desk(services: Services, sim: Simulator) -> Iterator[Desk]:
    secrets = sim.config.secrets
    settings: Settings = services.settings.replace(
        wecom={
            "api_base_url": sim.base_url,
            "agent_secret": secrets["agent"],
            "contact_secret": secrets["contact"],
            "kf_secret": secrets["kf"],
        },
        handoff={"sla_minutes": 30},
    )
    services.settings = settings
    with services.db.transaction() as session:
        ensure_people(session)
        for key in SCRIPTS:
            script = tomllib.loads((DEFAULTS / f"{key}.toml").read_text(encoding="utf-8"))
            approved(session, key, script["kind"], script["body"].strip())
        session.add(HookCode(code="XHS888", platform="xiaohongshu", members=[], created_at=START))
        months_ago = START - timedelta(days=90)
        add_manager(session, "boss", ManagerFields(name="王总", capacity=0), actor="olivia", now=months_ago)
        add_manager(
            session,
            "lisi",
            ManagerFields(name="李经理", licensed=True, sac_number="S0570516010001", supervisor="boss"),
            actor="olivia",
            now=months_ago,
        )
        add_manager(
            session, "wangwu", ManagerFields(name="王经理", supervisor="boss"), actor="olivia", now=months_ago
        )
        # Serves only Douyin leads: never eligible for this Xiaohongshu audience.
        add_manager(
            session,
            "zhaoliu",
            ManagerFields(name="赵经理", platforms=("douyin",)),
            actor="olivia",
            now=months_ago,
        )
        course = Course(
            key="etf101",
            title="ETF定投入门",
            speaker_name="张老师",
            speaker_sac_no="S0570516010001",
            starts_at=START - timedelta(days=1),
            link="https://work.weixin.qq.com/live/etf",
            created_by="olivia",
            created_at=START - timedelta(days=7),
        )
        session.add(course)
    d = Desk(services, sim)
    try:
        yield d
    finally:
        d.sender.close()


def _attended(desk: Desk, customer: str) -> None:
    with desk.services.db.transaction() as session:
        lead = session.scalars(select(Lead).where(Lead.external_user_id == customer)).one()
        course = session.scalars(select(Course).where(Course.key == "etf101")).one()
        session.add(CourseAttendance(course_id=course.id, lead_id=lead.id, minutes=55))


def test_course_attendee_asking_to_open_an_account_is_handed_to_a_licensed_manager(
    desk: Desk, sim: Simulator
) -> None:
    sim.kf_customer_enters(desk.open_kfid, "wm_alice", scene="s1", scene_param="XHS888", nickname="Alice")
    desk.pump()
    assert desk.lead("wm_alice").platform == "xiaohongshu"
    _attended(desk, "wm_alice")
    desk.say("wm_alice", "我想问下怎么开户？电话13812345678")

    [handoff] = desk.handoffs("wm_alice")
    assert handoff.manager_userid == "lisi" and handoff.reason == "意向「开户」"
    assert desk.lead("wm_alice").stage == "handed_off"
    assert handoff.task_id is not None
    card = sim.card_state("lisi", handoff.task_id)
    assert card is not None and card.replace_name is None
    facts = {item["keyname"]: item["value"] for item in card.card["horizontal_content_list"]}
    assert facts["来源"] == "小红书" and facts["钩子码"] == "XHS888" and "ETF定投入门" in facts["直播课"]
    assert "138****5678" in card.card["sub_title_text"] and "13812345678" not in str(card.card)

    sim.member_clicks_card("lisi", handoff.task_id, f"handoff:accept:{handoff.id}")  # one tap
    desk.now += timedelta(minutes=3)
    desk.pump()
    desk.sweep()

    [accepted] = desk.handoffs("wm_alice")
    assert accepted.status == "accepted" and accepted.channel_action == "kf_transfer"
    assert accepted.channel_status == "done", accepted.channel_detail
    assert desk.lead("wm_alice").stage == "accepted"
    after = sim.card_state("lisi", handoff.task_id)
    assert after is not None and after.replace_name == "已接受"
    state = desk.services.client.post(
        "kf/service_state/get", {"open_kfid": desk.open_kfid, "external_userid": "wm_alice"}, app="kf"
    )
    assert (state["service_state"], state.get("servicer_userid")) == (3, "lisi")

    replies_before = len(desk.bot_texts("wm_alice"))
    desk.say("wm_alice", "你好，还在吗")
    assert len(desk.bot_texts("wm_alice")) == replies_before  # the bot has gone quiet; the manager answers


def test_an_ignored_card_is_reassigned_on_time(desk: Desk, sim: Simulator) -> None:
    sim.kf_customer_enters(desk.open_kfid, "wm_bob", scene="s1", scene_param="XHS888")
    desk.pump()
    desk.say("wm_bob", "佣金多少？")
    [first] = desk.handoffs("wm_bob")
    first_manager = first.manager_userid
    assert first_manager in ("lisi", "wangwu") and first.task_id is not None
    assert sim.card_state(first_manager, first.task_id) is not None

    desk.now = START + timedelta(minutes=29)
    desk.sweep()
    assert [h.status for h in desk.handoffs("wm_bob")] == ["offered"]

    desk.now = START + timedelta(minutes=30)
    desk.sweep()
    ended, second = desk.handoffs("wm_bob")
    assert ended.status == "timed_out" and second.status == "offered"
    assert second.manager_userid == ({"lisi", "wangwu"} - {first_manager}).pop()
    assert second.task_id is not None and sim.card_state(second.manager_userid, second.task_id) is not None
    ignored = sim.card_state(first_manager, first.task_id)  # updated with the code of its send
    assert ignored is not None and ignored.replace_name == "已超时转派"
    with desk.services.db.read() as session:
        sent = session.scalars(
            select(Delivery.status).where(Delivery.purpose_key == f"handoff:{second.id}:card")
        ).one()
    assert sent == "sent"


def test_a_card_held_for_review_is_answered_from_when_it_reaches_the_manager(
    desk: Desk, sim: Simulator
) -> None:
    sim.kf_customer_enters(desk.open_kfid, "wm_carol", scene="s1", scene_param="XHS888")
    desk.pump()
    with desk.services.db.transaction() as session:  # a name from the firm's CRM that the final lint holds
        session.execute(
            update(Lead).where(Lead.external_user_id == "wm_carol").values(display_name="返佣达人")
        )
    desk.say("wm_carol", "怎么开户？")
    [held] = desk.handoffs("wm_carol")
    manager, task_id = held.manager_userid, held.task_id
    assert held.status == "offered" and held.due_at is None and task_id is not None
    assert sim.card_state(manager, task_id) is None  # waiting for compliance: nothing reached the manager

    desk.now = START + timedelta(hours=2)
    desk.sweep()
    assert [(h.status, h.due_at) for h in desk.handoffs("wm_carol")] == [("offered", None)]

    with desk.services.db.transaction() as session:
        card = session.scalars(
            select(Delivery).where(Delivery.purpose_key == f"handoff:{held.id}:card")
        ).one()
        release(session, card.id, "chen")
    desk.now = max(START + timedelta(hours=3), utcnow())  # a release queues the card at the wall clock
    arrived = desk.now
    desk.sweep()
    assert sim.card_state(manager, task_id) is not None
    desk.sweep()
    [offered] = desk.handoffs("wm_carol")
    assert offered.due_at == arrived + timedelta(minutes=30)

    desk.now = arrived + timedelta(minutes=29)
    desk.sweep()
    assert [h.status for h in desk.handoffs("wm_carol")] == ["offered"]
    desk.now = arrived + timedelta(minutes=30)
    desk.sweep()
    assert [h.status for h in desk.handoffs("wm_carol")] == ["timed_out", "offered"]
