"""WeChat Customer Service end to end against the simulator: pull, attribute, welcome, reply in the window."""

from __future__ import annotations

import threading
import time
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select

from bot.delivery.dispatcher import DeliveryDispatcher
from bot.kf.replies import conversation, send_kf_text
from bot.kf.risk import week_start, weekly_frequency
from bot.kf.syncer import KfSyncer, SyncOutcome
from bot.leads.hookcodes import create_code
from bot.routing import HandlerContext
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from bot.worker import Worker
from handlers import build_dispatcher
from models.audit import AuditEntry
from models.base import utcnow
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.inbox import InboundEvent
from models.kf import InboundRiskHit, IntentSignal, KfConversation, KfCursor
from models.leads import Lead, LeadTouch
from tests.callbacks import envelope, params_of
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import approved, ensure_people

DEFAULTS = Path(__file__).resolve().parents[1] / "scripts_library" / "defaults"
SCRIPTS = [
    "welcome_xiaohongshu",
    "welcome_default",
    "subscribe_confirm",
    "unsubscribe_confirm",
    "keyword_report_claim",
    "fallback",
]
CUSTOMER = "wmKFCUSTOMER01"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan"], kf_sync_empty_pages=1,
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


class Bot:
    """The bot's moving parts, run step by step: callbacks in, events, pulls, sends."""

    def __init__(self, services: Services, sim: Simulator) -> None:
        self.services = services
        self.sim = sim
        self.delivered = 0
        self.open_kfid = str(
            services.client.post("kf/account/add", {"name": "投教客服", "media_id": "MEDIA1"}, app="kf")[
                "open_kfid"
            ]
        )
        services.client.post("kf/add_contact_way", {"open_kfid": self.open_kfid, "scene": "s1"}, app="kf")

    def callbacks(self, replay: bool = False) -> int:
        """Deliver the simulator's new callbacks (or all of them again) through the ingestor."""
        ingestor = self.services.ingestor
        assert ingestor is not None
        emitted = self.sim.emitted_callbacks
        for xml in emitted if replay else emitted[self.delivered :]:
            query, body = envelope(xml)
            p = params_of(query)
            ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body)
        self.delivered = len(emitted)
        return len(emitted)

    def work(self, **kw: Any) -> None:
        s = self.services
        outcomes = Worker(s.settings, s.db, s.coordinator, build_dispatcher(), **kw).drain()
        assert all(o.status in ("done", "ignored") for o in outcomes), outcomes

    def syncer(self, **kw: Any) -> KfSyncer:
        s = self.services
        return KfSyncer(s.settings, s.db, s.coordinator, s.client, **kw)

    def send(self) -> None:
        s = self.services
        DeliveryDispatcher(s.settings, s.db, s.coordinator, s.client).drain()

    def pump(self, **work: Any) -> list[SyncOutcome]:
        """Callbacks → pending pull → sync_msg → handlers → sends."""
        self.callbacks()
        self.work()
        outcomes = self.syncer().drain()
        self.work(**work)
        self.send()
        return outcomes

    def enter(self, scene_param: str = "XHS888", customer: str = CUSTOMER) -> None:
        assert self.sim.kf_customer_enters(self.open_kfid, customer, scene="s1", scene_param=scene_param)

    def say(self, text: str, customer: str = CUSTOMER) -> None:
        self.sim.kf_customer_says(self.open_kfid, customer, text)

    def sent_texts(self) -> list[tuple[str, str]]:
        return [(m.via, m.payload["text"]["content"]) for m in self.sim.kf_sent]


@pytest.fixture
def bot(services: Services, sim: Simulator) -> Bot:
    services.settings = services.settings.replace(
        wecom={"api_base_url": sim.base_url, "kf_secret": sim.config.secrets["kf"]}
    )
    with services.db.transaction() as session:
        ensure_people(session)
        for key in SCRIPTS:
            script = tomllib.loads((DEFAULTS / f"{key}.toml").read_text(encoding="utf-8"))
            approved(session, key, script["kind"], script["body"].strip())
        create_code(session, "XHS888", "xiaohongshu", ["zhangsan"], "olivia", keyword="XHSBOOK")
    return Bot(services, sim)


def rows(bot: Bot, model: Any, *where: Any) -> list[Any]:
    with bot.services.db.transaction() as session:
        # In insertion order: the assertions compare sequences, and PostgreSQL returns any order.
        key = inspect(model).primary_key
        return list(session.scalars(select(model).where(*where).order_by(*key)))


def refusals(bot: Bot) -> list[str]:
    audits = rows(bot, AuditEntry, AuditEntry.action == "kf.reply_refused")
    return [str(a.detail["reason"]).split(":")[0] for a in audits]


def lead(bot: Bot, customer: str = CUSTOMER) -> Lead:
    (found,) = rows(bot, Lead, Lead.external_user_id == customer)
    return found


def test_pull_follows_pages_and_empty_pages_and_keeps_the_cursor(bot: Bot) -> None:
    for text in ("一", "二", "三"):
        bot.say(text)
    bot.callbacks()
    bot.work()
    (cursor,) = rows(bot, KfCursor)
    assert cursor.requested_at is not None and cursor.token  # three callbacks, one pending pull
    outcomes = bot.syncer(page_limit=2).drain()
    # empty page (has_more=1), [一, 二], empty page, [三]
    assert [(o.status, o.pages, o.stored) for o in outcomes] == [("done", 4, 3)]
    assert bot.sim.api_calls("kf/sync_msg") == 4
    (cursor,) = rows(bot, KfCursor)
    assert cursor.cursor and cursor.requested_at is None and cursor.pulled == 3
    assert len(rows(bot, InboundEvent, InboundEvent.kind == "kf_text")) == 3
    bot.say("四")
    assert [(o.stored, o.seen) for o in bot.pump()] == [(1, 1)]  # from the saved cursor on


def test_redelivered_callback_and_repulled_messages_are_processed_once(bot: Bot) -> None:
    bot.enter()
    bot.say("你好")
    bot.pump()
    bot.callbacks(replay=True)  # WeCom retries every callback
    bot.work()
    assert len(rows(bot, InboundEvent, InboundEvent.kind == "kf_msg_or_event")) == 2
    with bot.services.db.transaction() as session:  # lose the cursor: everything is pulled again
        row = session.get(KfCursor, bot.open_kfid)
        assert row is not None
        row.cursor, row.requested_at = "", utcnow()
    assert [(o.stored, o.seen) for o in bot.pump()] == [(0, 2)]
    assert len(rows(bot, InboundEvent)) == 4
    assert len(rows(bot, Delivery)) == 2 and len(bot.sim.kf_sent) == 2  # welcome + one fallback


def test_entry_by_link_is_attributed_and_welcomed_within_20_s(bot: Bot) -> None:
    bot.enter("XHS888")
    bot.pump()
    found = lead(bot)
    assert (found.platform, found.hook_code) == ("xiaohongshu", "XHS888")
    (touch,) = rows(bot, LeadTouch)
    assert (touch.source, touch.code) == ("kf", "XHS888")
    (welcome,) = rows(bot, Delivery)
    (event,) = rows(bot, InboundEvent, InboundEvent.kind == "kf_enter_session")
    assert welcome.channel == Channel.KF_WELCOME and welcome.status == DeliveryStatus.SENT
    # 20 s from WeCom's send_time (whole seconds), never later than 20 s after we stored it.
    assert welcome.priority == 0 and welcome.deadline is not None
    window = timedelta(seconds=20)
    assert event.received_at + window - timedelta(seconds=2) <= welcome.deadline <= event.received_at + window
    (sent,) = bot.sim.kf_sent
    assert (sent.via, sent.code_kind, sent.msgid) == ("send_msg_on_event", "welcome", f"d{welcome.id}")
    assert "小红书" in sent.payload["text"]["content"]


@pytest.mark.parametrize("word", ["TD", "ｔｄ", "t", "退订", "取消订阅！", " Td "])
def test_opt_out_is_immediate_confirmed_logged_and_honoured(bot: Bot, word: str) -> None:
    bot.enter("NOPE")
    bot.say("订阅")
    bot.pump()
    bot.say(word)
    bot.pump()
    found = lead(bot)
    assert found.opted_out and not found.subscribed
    assert [a.detail["text"] for a in rows(bot, AuditEntry, AuditEntry.action == "lead.opt_out")] == [word]
    bot.say("怎么开户")
    bot.enter("XHS888")  # re-entering gives no welcome either
    bot.pump()
    keys = [d.script_key for d in rows(bot, Delivery)]
    assert keys == ["welcome_default", "subscribe_confirm", "unsubscribe_confirm"]
    assert [via for via, _ in bot.sent_texts()] == ["send_msg_on_event", "send_msg", "send_msg"]
    assert "已为您退订" in bot.sent_texts()[-1][1]
    assert refusals(bot) == ["opted_out"]


def test_subscribe_is_consent_and_lifts_an_opt_out(bot: Bot) -> None:
    bot.say("TD")
    bot.pump()
    bot.say("订阅")
    bot.pump()
    found = lead(bot)
    assert found.subscribed and not found.opted_out
    (audit,) = rows(bot, AuditEntry, AuditEntry.action == "lead.subscribe")
    assert audit.detail["was_opted_out"] is True
    assert [d.script_key for d in rows(bot, Delivery)] == ["unsubscribe_confirm", "subscribe_confirm"]
    assert "已为您订阅" in bot.sent_texts()[-1][1]


def test_hook_keyword_attributes_and_claims_the_report(bot: Bot) -> None:
    bot.enter("")
    bot.say("xhsbook")
    bot.pump()
    found = lead(bot)
    assert (found.platform, found.hook_code) == ("xiaohongshu", "XHS888")
    touches = rows(bot, LeadTouch)
    assert [(t.source, t.code) for t in touches] == [("kf", None), ("keyword", "XHS888")]
    assert [d.script_key for d in rows(bot, Delivery)] == ["welcome_default", "keyword_report_claim"]
    assert "投资者教育手册" in bot.sent_texts()[-1][1]


def test_intent_words_are_recorded_and_answered_with_the_fallback(bot: Bot) -> None:
    bot.say("请问怎么开户？佣金多少")
    bot.pump()
    signals = rows(bot, IntentSignal)
    assert [(s.intent, s.keyword) for s in signals] == [("open_account", "开户"), ("commission", "佣金")]
    assert [d.script_key for d in rows(bot, Delivery)] == ["fallback"]
    assert bot.sent_texts()[0][0] == "send_msg"


def test_sixth_reply_after_one_customer_message_is_refused_with_a_reason(bot: Bot) -> None:
    bot.say("你好")
    bot.pump()
    s = bot.services
    with s.db.transaction() as session:
        ctx = HandlerContext(session=session, settings=s.settings, now=utcnow(), event_id=0)
        conv = conversation(ctx, bot.open_kfid, CUSTOMER)
        found = session.scalars(select(Lead)).one()
        vals = {"lead": {"display_name": ""}, "firm": {"name": "示例证券", "opt_out": "回复TD退订"}}
        queued = [
            send_kf_text(ctx, conv, found, purpose_key=f"push:{i}", script_key="fallback", values=vals)
            for i in range(2, 7)
        ]
    assert [d is not None for d in queued] == [True, True, True, True, False]
    assert refusals(bot) == ["reply_limit"]
    bot.send()
    assert len(bot.sim.kf_sent) == 5  # our count matches WeCom's: all five were accepted
    assert {d.status for d in rows(bot, Delivery)} == {DeliveryStatus.SENT}


def test_reply_more_than_48_h_after_the_customer_spoke_is_refused(bot: Bot) -> None:
    bot.say("你好")
    late = utcnow() + timedelta(hours=49)
    bot.pump(clock=lambda: late)
    assert rows(bot, Delivery) == [] and bot.sim.kf_sent == []
    assert refusals(bot) == ["window_closed"]
    (conv,) = rows(bot, KfConversation)
    assert conv.replies_since == 0 and conv.last_customer_msg_at is not None


def test_risk_words_are_counted_never_blocked(bot: Bot) -> None:
    bot.say("这个产品保本吗？听说稳赚")
    bot.pump()
    hits = rows(bot, InboundRiskHit)
    assert [(h.category, h.count, h.external_user_id) for h in hits] == [("C1", 2, CUSTOMER)]
    assert [d.status for d in rows(bot, Delivery)] == [DeliveryStatus.SENT]  # still answered
    with bot.services.db.transaction() as session:
        day = hits[0].day
        assert weekly_frequency(session, day - timedelta(days=7), day) == {(week_start(day), "C1"): 2}


def test_async_send_failure_marks_the_delivery_and_spends_the_budget(bot: Bot) -> None:
    bot.say("你好")
    bot.pump()
    (reply,) = rows(bot, Delivery)
    bot.sim.kf_send_fail(bot.open_kfid, CUSTOMER, f"d{reply.id}", fail_type=6)
    bot.pump()
    (reply,) = rows(bot, Delivery)
    assert reply.status == DeliveryStatus.FAILED and "over the 5-message limit" in (reply.error or "")
    (conv,) = rows(bot, KfConversation)
    assert conv.replies_since == 5


def test_expired_callback_token_is_dropped_and_the_pull_retried(bot: Bot) -> None:
    bot.say("你好")
    bot.callbacks()
    bot.work()
    bot.sim.advance(601)  # the callback Token lives 10 minutes
    outcomes = bot.syncer().drain()
    assert [(o.status, o.stored) for o in outcomes] == [("done", 1)]
    (cursor,) = rows(bot, KfCursor)
    assert cursor.token == "" and cursor.last_error is None


def test_two_syncers_never_pull_one_account_at_once(bot: Bot) -> None:
    bot.say("你好")
    bot.callbacks()
    bot.work()
    first = bot.syncer(worker_id="a").claim()
    assert first is not None and bot.syncer(worker_id="b").claim() is None
    assert bot.syncer(worker_id="a").pull(first).status == "done"
    with bot.services.db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(InboundEvent)) == 2


def test_embedded_runtime_pulls_and_replies_on_its_own(bot: Bot) -> None:
    from bot.runtime import EmbeddedRuntime

    with EmbeddedRuntime(bot.services) as runtime:
        bot.sim.connect_bot(f"{runtime.url}/wecom/callback")
        bot.enter("XHS888")
        bot.say("订阅")
        deadline = time.monotonic() + 10
        while len(bot.sim.kf_sent) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        bot.sim.disconnect_bot()
    assert [(m.via, m.code_kind) for m in bot.sim.kf_sent] == [
        ("send_msg_on_event", "welcome"),
        ("send_msg", None),
    ]
    assert lead(bot).subscribed


def test_two_workers_meeting_a_new_customer_at_once_share_one_conversation(db: Any, settings: Any) -> None:
    # A row lock on a missing row locks nothing: both may find no conversation. Neither may fail.
    if not db.is_postgres:
        pytest.skip("SQLite serializes writing transactions: two workers never meet inside one")
    threads, errors, ids = 4, [], []
    start = threading.Barrier(threads)

    def first_message() -> None:
        try:
            with db.transaction() as session:
                ctx = HandlerContext(session=session, settings=settings, now=utcnow(), event_id=0)
                session.execute(select(func.count()).select_from(KfConversation)).scalar()
                start.wait(timeout=10)
                ids.append(conversation(ctx, "wkNEW", "wm_new_customer").id)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=first_message) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert errors == [] and len(ids) == threads and len(set(ids)) == 1
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(KfConversation)) == 1
