"""Handoff of qualified leads in controlled time: qualifying, assignment, the card, answers, SLA, silence."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.db import Database
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.delivery.outbox import enqueue
from bot.delivery.review import discard, release
from bot.handoff import commands, flow
from bot.handoff.actions import HandoffCalls
from bot.handoff.brief import reason_line
from bot.handoff.flow import Desk, accept, decline, offer, silenced, time_out
from bot.handoff.managers import ManagerFields, add_manager
from bot.handoff.sla import HandoffSweeper
from bot.kf.replies import refusal
from bot.leads.scoring import ScoreItem, evaluate
from bot.leads.timeline import timeline
from bot.wecom.errors import WeComAPIError
from models.alerts import Alert
from models.audit import AuditEntry
from models.campaigns import Course, CourseAttendance, CourseRegistration
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.handoff import AccountManager, Handoff, HandoffStatus
from models.inbox import InboundEvent
from models.kf import IntentSignal, KfConversation
from models.leads import Lead
from scripts_library.catalogue import policy_from_settings
from tests.scripts_fixtures import approved

DEFAULTS = Path(__file__).resolve().parents[1] / "scripts_library" / "defaults"
# Tuesday 24 Nov 2026, 10:00 in Shanghai: inside everyone's default working hours.
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
ADVISER_SAC = "S0570516010001"


@dataclass
class FakeClient:
    """Records the WeCom calls a handoff makes; `fail` maps a call name to the error it raises."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    fail: dict[str, WeComAPIError] = field(default_factory=dict)
    transfer_codes: dict[str, int] = field(default_factory=dict)

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]

    def update_template_card(
        self,
        userids: Sequence[str],
        response_code: str,
        *,
        replace_name: str | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> None:
        self._call("update_template_card", tuple(userids), response_code, replace_name)

    def kf_transfer_session(self, open_kfid: str, external_userid: str, servicer_userid: str) -> str | None:
        self._call("kf_transfer_session", open_kfid, external_userid, servicer_userid)
        return "MSG_CODE"

    def transfer_customer(
        self,
        handover_userid: str,
        takeover_userid: str,
        external_userids: Sequence[str],
        transfer_success_msg: str | None = None,
    ) -> dict[str, int]:
        self._call("transfer_customer", handover_userid, takeover_userid, tuple(external_userids))
        return {ext: self.transfer_codes.get(ext, 0) for ext in external_userids}

    def transfer_result(self, handover_userid: str, takeover_userid: str) -> list[Any]:
        self._call("transfer_result", handover_userid, takeover_userid)
        return []

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for call, args in self.calls if call == name]


def load_default(session: Session, key: str) -> None:
    """Approve one of the shipped default scripts."""
    data = tomllib.loads((DEFAULTS / f"{key}.toml").read_text("utf-8"))
    approved(session, data["key"], data["kind"], data["body"])


@pytest.fixture
def hsettings(settings: Settings) -> Settings:
    return settings.replace(
        handoff={"sla_minutes": 30, "escalate_after_misses": 2}, scoring={"half_life_days": 0}
    )


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    with db.sessions() as s:
        for key in ("handoff_brief", "handoff_note"):
            load_default(s, key)
        s.commit()
        yield s


def desk(session: Session, settings: Settings, now: datetime = NOW) -> Desk:
    policy = policy_from_settings(settings.compliance)

    def queue(**kwargs: Any) -> Delivery:
        return enqueue(session, policy=policy, now=now, **kwargs)

    return Desk(session, settings, now, queue)


def manager(session: Session, userid: str, **kw: Any) -> AccountManager:
    fields = ManagerFields(name=kw.pop("name", userid.capitalize()), **kw)
    return add_manager(session, userid, fields, actor="admin", now=NOW - timedelta(days=30))


def lead(session: Session, ext: str = "wm_lead1", **kw: Any) -> Lead:
    row = Lead(
        external_user_id=ext,
        display_name=kw.pop("display_name", "王先生"),
        platform=kw.pop("platform", "xiaohongshu"),
        hook_code=kw.pop("hook_code", "XHS888"),
        created_at=NOW - timedelta(days=3),
        updated_at=NOW - timedelta(days=3),
        **kw,
    )
    session.add(row)
    session.flush()
    return row


def says(
    session: Session, row: Lead, text: str, at: datetime, n: int, intent: tuple[str, str] | None = None
) -> None:
    """The lead wrote `text` over kf at `at` (with the intent the kf handler would have recorded)."""
    session.add(
        InboundEvent(
            dedupe_key=f"{row.external_user_id}-{n}",
            kind="kf_text",
            subject=row.external_user_id,
            payload={"msgtype": "text", "text": {"content": text}},
            raw_xml="{}",
            received_at=at,
        )
    )
    if intent is not None:
        session.add(
            IntentSignal(
                external_user_id=row.external_user_id, intent=intent[0], keyword=intent[1], source="kf", at=at
            )
        )
    session.flush()


def attended(session: Session, row: Lead, title: str = "ETF定投入门", minutes: int = 50) -> Course:
    course = Course(
        key=f"c{row.id}",
        title=title,
        speaker_name="张老师",
        speaker_sac_no=ADVISER_SAC,
        starts_at=NOW - timedelta(days=1),
        link="https://work.weixin.qq.com/live/x",
        created_by="olivia",
        created_at=NOW - timedelta(days=5),
    )
    session.add(course)
    session.flush()
    session.add(
        CourseRegistration(
            course_id=course.id, lead_id=row.id, channel="kf", registered_at=NOW - timedelta(days=2)
        )
    )
    session.add(CourseAttendance(course_id=course.id, lead_id=row.id, minutes=minutes))
    session.flush()
    return course


def qualify(session: Session, settings: Settings, row: Lead, now: datetime = NOW) -> Handoff | None:
    """What the kf handler does: evaluate, and offer a lead that just qualified."""
    evaluation = evaluate(session, row, now, settings=settings.scoring)
    assert evaluation.change is not None, evaluation
    return offer(desk(session, settings, now), row, evaluation.reason or "")


def card_of(session: Session, handoff: Handoff) -> Delivery:
    return session.scalars(select(Delivery).where(Delivery.purpose_key == f"handoff:{handoff.id}:card")).one()


def delivered(session: Session, handoff: Handoff, at: datetime = NOW) -> None:
    """What the dispatcher records once the handoff's card has reached the manager."""
    card = card_of(session, handoff)
    card.status, card.sent_at = DeliveryStatus.SENT, at
    session.flush()


@dataclass
class FakeWeCom:
    """The WeCom API as the dispatcher sees it: every message is accepted."""

    sent: list[str] = field(default_factory=list)

    def post(self, api: str, payload: Mapping[str, Any], app: str = "agent") -> dict[str, Any]:
        self.sent.append(str(payload["touser"]))
        return {"errcode": 0, "msgid": f"msg{len(self.sent)}"}


def send_cards(db: Database, settings: Settings, at: datetime) -> list[str]:
    """The dispatcher sends everything due at `at`; returns the members who got a message."""
    wecom = FakeWeCom()
    sender = DeliveryDispatcher(settings, db, _coordinator(), wecom, clock=lambda: at)  # type: ignore[arg-type]
    try:
        sender.drain()
    finally:
        sender.close()
    return wecom.sent


# --- qualification and the brief ------------------------------------------------------------------


def test_intent_qualifies_at_once_and_the_card_carries_a_masked_brief(
    session: Session, hsettings: Settings
) -> None:
    manager(session, "lisi", name="李经理", licensed=True, sac_number=ADVISER_SAC)
    row = lead(session)
    attended(session, row)
    says(session, row, "我手机13812345678，身份证110101199003071234", NOW - 10 * MIN, 1)
    says(session, row, "怎么开户？", NOW - MIN, 2, intent=("open_account", "开户"))

    handoff = qualify(session, hsettings, row)

    assert handoff is not None and handoff.manager_userid == "lisi"
    assert row.stage == "handed_off" and handoff.reason == "意向「开户」"
    assert handoff.due_at == NOW + 30 * MIN
    delivery = card_of(session, handoff)
    assert delivery.channel == Channel.APP_MESSAGE and delivery.recipient == "lisi"
    assert delivery.status == DeliveryStatus.QUEUED and delivery.script_key == "handoff_brief"
    card = delivery.params["template_card"]
    assert card["card_type"] == "button_interaction" and card["task_id"] == handoff.task_id
    assert [b["key"] for b in card["button_list"]] == [
        f"handoff:accept:{handoff.id}",
        f"handoff:decline:{handoff.id}",
    ]
    facts = {item["keyname"]: item["value"] for item in card["horizontal_content_list"]}
    assert facts["来源"] == "小红书" and facts["钩子码"] == "XHS888"
    assert facts["评分"].endswith("（意向「开户」）") and "《ETF定投入门》50分钟" in facts["直播课"]
    text = card["sub_title_text"]
    assert text == delivery.text.strip()
    assert "138****5678" in text and "110***1234" in text and "13812345678" not in text
    assert "观看直播课「ETF定投入门」" in text and "怎么开户" in text


def test_threshold_qualifies_without_an_intent(session: Session, hsettings: Settings) -> None:
    manager(session, "lisi")
    row = lead(session, subscribed=True)
    attended(session, row)  # registered 20 + attended 30 + platform 8 + subscribed 5 = 63 ≥ 60
    handoff = qualify(session, hsettings, row)
    assert handoff is not None and handoff.reason == "得分 63 ≥ 60"


def test_risky_customer_words_are_withheld_from_the_brief(session: Session, hsettings: Settings) -> None:
    manager(session, "lisi")
    row = lead(session)
    says(session, row, "你们保证稳赚不赔吗", NOW - 2 * MIN, 1)
    says(session, row, "开户要多久", NOW - MIN, 2, intent=("open_account", "开户"))
    handoff = qualify(session, hsettings, row)
    assert handoff is not None
    delivery = card_of(session, handoff)
    assert delivery.status == DeliveryStatus.QUEUED
    assert "稳赚" not in delivery.text and "含敏感内容" in delivery.text


# --- assignment -------------------------------------------------------------------------------------


def test_owner_keeps_the_lead_when_eligible(session: Session, hsettings: Settings) -> None:
    manager(session, "lisi")
    manager(session, "wangwu")
    row = lead(session, owner_userid="wangwu")
    says(session, row, "开户", NOW, 1, intent=("open_account", "开户"))
    handoff = qualify(session, hsettings, row)
    assert handoff is not None and handoff.manager_userid == "wangwu" and handoff.kept_with_owner


def test_advice_question_goes_only_to_a_licensed_manager(session: Session, hsettings: Settings) -> None:
    manager(session, "lisi", capacity=5)
    manager(session, "adviser", licensed=True, sac_number=ADVISER_SAC, capacity=5)
    row = lead(session, owner_userid="lisi")
    says(session, row, "这只票能不能买", NOW - MIN, 1, intent=("advice", "能不能买"))
    says(session, row, "怎么开户", NOW, 2, intent=("open_account", "开户"))
    handoff = qualify(session, hsettings, row)
    assert handoff is not None and handoff.advice and handoff.manager_userid == "adviser"


def test_balanced_by_load_then_longest_since_last_assignment(session: Session, hsettings: Settings) -> None:
    a = manager(session, "a", capacity=4)
    b = manager(session, "b", capacity=2)
    c = manager(session, "c", capacity=4)
    a.open_count, b.open_count, c.open_count = 1, 1, 1  # loads 25 %, 50 %, 25 %
    a.last_assigned_at, c.last_assigned_at = NOW - 5 * MIN, NOW - 60 * MIN
    session.flush()
    first = qualify(session, hsettings, _intent_lead(session, "wm1"))
    second = qualify(session, hsettings, _intent_lead(session, "wm2"))
    third = qualify(session, hsettings, _intent_lead(session, "wm3"))
    assert [h.manager_userid for h in (first, second, third) if h] == ["c", "a", "b"]  # b: never assigned


def _intent_lead(session: Session, ext: str, platform: str = "xiaohongshu") -> Lead:
    row = lead(session, ext, platform=platform)
    says(session, row, "开户", NOW, 1, intent=("open_account", "开户"))
    return row


def test_full_managers_and_other_platforms_or_hours_are_skipped(
    session: Session, hsettings: Settings
) -> None:
    manager(session, "full", capacity=1).open_count = 1
    manager(session, "douyin_only", platforms=("douyin",))
    manager(session, "night", work_start="20:00", work_end="23:00")
    session.flush()
    row = _intent_lead(session, "wm1")
    assert qualify(session, hsettings, row) is None
    assert row.stage == "qualified"


def test_waiting_lead_is_offered_when_working_hours_begin(
    db: Database, session: Session, hsettings: Settings
) -> None:
    manager(session, "lisi", work_start="09:00", work_end="18:00")
    row = _intent_lead(session, "wm1")
    night = NOW + timedelta(hours=12)  # 22:00 in Shanghai
    assert qualify(session, hsettings, row, now=night) is None
    session.commit()
    sweeper = HandoffSweeper(hsettings, db, _coordinator())
    assert sweeper.run(night + MIN).offered == []
    morning = NOW + timedelta(days=1)  # Wednesday 10:00
    report = sweeper.run(morning)
    assert len(report.offered) == 1
    session.expire_all()
    assert session.get(Handoff, report.offered[0]).reason == "意向「开户」"  # type: ignore[union-attr]


def _coordinator() -> Any:
    from bot.coordination import MemoryCoordinator

    return MemoryCoordinator()


# --- answers -----------------------------------------------------------------------------------------


def test_accept_moves_the_kf_session_updates_the_card_and_silences_the_bot(
    db: Database, session: Session, hsettings: Settings
) -> None:
    manager(session, "lisi")
    row = _intent_lead(session, "wm1")
    conv = KfConversation(
        open_kfid="wkKF", external_user_id="wm1", last_customer_msg_at=NOW, replies_since=0, updated_at=NOW
    )
    session.add(conv)
    handoff = qualify(session, hsettings, row)
    assert handoff is not None and not silenced(row)

    answer = accept(desk(session, hsettings, NOW + 5 * MIN), handoff.id, "lisi", "RC1")
    session.commit()

    assert answer.outcome == "accepted" and row.stage == "accepted" and silenced(row)
    assert (
        refusal(conv, row, NOW + 6 * MIN)
        == "manager_accepted: an account manager has taken this customer over"
    )
    assert (
        refusal(conv, row, NOW + 6 * MIN, allow_opted_out=True) is None
    )  # the opt-out confirmation still goes
    assert handoff.channel_action == "kf_transfer" and handoff.channel_status == "pending"

    client = FakeClient()
    outcomes = HandoffCalls(hsettings, db, client, clock=lambda: NOW + 6 * MIN).run_once()
    assert [(o.card, o.channel) for o in outcomes] == [("updated", "done")]
    assert client.named("update_template_card") == [(("lisi",), "RC1", "已接受")]
    assert client.named("kf_transfer_session") == [("wkKF", "wm1", "lisi")]
    session.expire_all()
    assert session.get(KfConversation, conv.id).servicer_userid == "lisi"  # type: ignore[union-attr]
    assert session.get(Handoff, handoff.id).actions_due_at is None  # type: ignore[union-attr]
    summaries = [i.summary for i in timeline(session, "wm1") if i.kind == "handoff"]
    assert any("accepted by lisi" in s for s in summaries) and any(
        "kf_transfer: done" in s for s in summaries
    )


def test_decline_frees_the_slot_and_offers_the_next_manager(session: Session, hsettings: Settings) -> None:
    manager(session, "a", capacity=1)
    manager(session, "b", capacity=1)
    row = _intent_lead(session, "wm1")
    first = qualify(session, hsettings, row)
    assert first is not None
    answer = decline(
        desk(session, hsettings, NOW + MIN), first.id, first.manager_userid, "RC1", note="在外出差"
    )
    assert answer.outcome == "declined" and answer.following is not None
    assert answer.following.manager_userid != first.manager_userid and answer.following.attempt == 2
    assert first.status == HandoffStatus.DECLINED and first.card_replace_name == "已拒绝"
    assert session.get(AccountManager, first.manager_userid).open_count == 0  # type: ignore[union-attr]
    assert row.stage == "handed_off"


def test_only_the_offered_manager_can_answer(session: Session, hsettings: Settings) -> None:
    manager(session, "a")
    manager(session, "b")
    row = lead(session, owner_userid="a")
    says(session, row, "开户", NOW, 1, intent=("open_account", "开户"))
    handoff = qualify(session, hsettings, row)
    assert handoff is not None and handoff.manager_userid == "a"
    assert accept(desk(session, hsettings), handoff.id, "b").outcome == "not_yours"
    assert handoff.status == HandoffStatus.OFFERED


def test_late_click_after_time_out_shows_the_card_as_expired(session: Session, hsettings: Settings) -> None:
    manager(session, "a")
    row = _intent_lead(session, "wm1")
    handoff = qualify(session, hsettings, row)
    assert handoff is not None
    delivered(session, handoff)
    assert time_out(desk(session, hsettings, NOW + 31 * MIN), handoff.id) is not None
    answer = accept(desk(session, hsettings, NOW + 40 * MIN), handoff.id, "a", "RC9")
    assert answer.outcome == "expired"
    assert handoff.card_response_code == "RC9" and handoff.card_replace_name == "已超时转派"


# --- SLA ----------------------------------------------------------------------------------------------


def test_unanswered_offers_move_on_then_escalate_to_the_supervisor(
    db: Database, session: Session, hsettings: Settings
) -> None:
    manager(session, "boss", name="王总", work_start="06:00", work_end="07:00")  # off duty: only escalations
    manager(session, "a", supervisor="boss")
    manager(session, "b", supervisor="boss")
    manager(session, "c", supervisor="boss")
    session.get(AccountManager, "a").last_assigned_at = NOW - 3 * MIN  # type: ignore[union-attr]
    session.get(AccountManager, "b").last_assigned_at = NOW - 2 * MIN  # type: ignore[union-attr]
    session.get(AccountManager, "c").last_assigned_at = NOW - MIN  # type: ignore[union-attr]
    row = _intent_lead(session, "wm1")
    first = qualify(session, hsettings, row)
    assert first is not None and first.manager_userid == "a"
    session.commit()
    sweeper = HandoffSweeper(hsettings, db, _coordinator())

    assert send_cards(db, hsettings, NOW) == ["a"]
    assert sweeper.run(NOW + 29 * MIN).timed_out == []  # not yet
    assert sweeper.run(NOW + 30 * MIN).timed_out == [first.id]  # on time: to b
    assert send_cards(db, hsettings, NOW + 30 * MIN) == ["b"]
    assert sweeper.run(NOW + 60 * MIN).timed_out != []  # b missed too: 2 misses → the supervisor

    session.expire_all()
    chain = list(session.scalars(select(Handoff).where(Handoff.lead_id == row.id).order_by(Handoff.id)))
    assert [(h.manager_userid, h.status, h.misses, h.escalated) for h in chain] == [
        ("a", "timed_out", 0, False),
        ("b", "timed_out", 1, False),
        ("boss", "offered", 2, True),
    ]
    assert [
        m.open_count for m in session.scalars(select(AccountManager).order_by(AccountManager.userid))
    ] == [
        0,
        0,
        1,
        0,
    ]
    assert chain[2].due_at == NOW + 90 * MIN
    summaries = [i.summary for i in timeline(session, "wm1") if i.kind == "handoff"]
    assert sum("timed out" in s for s in summaries) == 2
    assert any("escalated to supervisor boss" in s for s in summaries)
    delivery = card_of(session, chain[2])
    assert delivery.recipient == "boss"


def _handoffs(session: Session, row: Lead) -> list[tuple[str, str, int]]:
    session.expire_all()
    stmt = select(Handoff).where(Handoff.lead_id == row.id).order_by(Handoff.id)
    return [(h.manager_userid, h.status, h.misses) for h in session.scalars(stmt)]


def test_a_card_held_for_review_starts_its_answer_time_when_it_reaches_the_manager(
    db: Database, session: Session, hsettings: Settings
) -> None:
    manager(session, "a")
    manager(session, "b")
    row = lead(session, "wm1", display_name="返佣达人", owner_userid="a")  # the final-text lint holds it
    says(session, row, "开户", NOW, 1, intent=("open_account", "开户"))
    handoff = qualify(session, hsettings, row)
    assert handoff is not None and handoff.manager_userid == "a"
    card = card_of(session, handoff)
    assert card.status == DeliveryStatus.HELD and handoff.due_at is None
    assert commands.summary(session, "a")[0] == f"您的线索：#{handoff.id} 返佣达人（待接受）"
    session.commit()
    sweeper = HandoffSweeper(hsettings, db, _coordinator())

    report = sweeper.run(NOW + 3 * 60 * MIN)  # compliance has not looked yet: a has seen nothing
    assert (report.timed_out, report.clocks_started) == ([], [])
    release(session, card.id, "chen")
    session.commit()
    assert sweeper.run(NOW + 3 * 60 * MIN).clocks_started == []  # released, not yet sent
    delivered(session, handoff, NOW + 4 * 60 * MIN)
    session.commit()
    assert sweeper.run(NOW + 4 * 60 * MIN + MIN).clocks_started == [handoff.id]
    session.expire_all()
    assert handoff.due_at == NOW + 4 * 60 * MIN + 30 * MIN
    session.commit()  # the sweeper writes in its own transactions
    assert sweeper.run(NOW + 4 * 60 * MIN + 29 * MIN).timed_out == []
    assert sweeper.run(NOW + 4 * 60 * MIN + 30 * MIN).timed_out == [handoff.id]
    assert _handoffs(session, row) == [("a", "timed_out", 0), ("b", "offered", 1)]


def test_an_offer_counts_from_when_its_card_went_out_not_when_it_was_queued(
    db: Database, session: Session, hsettings: Settings
) -> None:
    manager(session, "a")
    early, late = _intent_lead(session, "wm1"), _intent_lead(session, "wm2")
    first, second = qualify(session, hsettings, early), qualify(session, hsettings, late)
    assert first is not None and second is not None and first.due_at == NOW + 30 * MIN
    session.commit()
    sweeper = HandoffSweeper(hsettings, db, _coordinator())
    with db.transaction() as other:  # the first card waits (say, behind the kill switch)
        waiting = other.scalars(select(Delivery).where(Delivery.purpose_key == f"handoff:{first.id}:card"))
        waiting.one().next_attempt_at = NOW + 45 * MIN
    assert send_cards(db, hsettings, NOW + 10 * MIN) == ["a"]  # only the second card, 10 minutes late

    report = sweeper.run(NOW + 30 * MIN)
    assert report.timed_out == []  # neither has been in front of the manager for 30 minutes
    session.expire_all()
    assert (first.due_at, second.due_at) == (None, NOW + 40 * MIN)  # paused; moved to arrival + 30
    session.commit()
    assert send_cards(db, hsettings, NOW + 45 * MIN) == ["a"]
    report = sweeper.run(NOW + 46 * MIN)
    assert (report.clocks_started, report.timed_out) == ([first.id], [second.id])
    assert sweeper.run(NOW + 74 * MIN).timed_out == []
    assert sweeper.run(NOW + 75 * MIN).timed_out == [first.id]


def test_an_offer_whose_card_is_discarded_in_review_goes_on_without_a_miss(
    db: Database, session: Session, hsettings: Settings
) -> None:
    manager(session, "a")
    manager(session, "b")
    row = lead(session, "wm1", display_name="返佣达人", owner_userid="a")
    says(session, row, "开户", NOW, 1, intent=("open_account", "开户"))
    handoff = qualify(session, hsettings, row)
    assert handoff is not None
    discard(session, card_of(session, handoff).id, "chen", "称呼含返佣")
    session.commit()

    report = HandoffSweeper(hsettings, db, _coordinator()).run(NOW + 5 * MIN)

    assert report.withdrawn == [handoff.id] and report.timed_out == []
    assert _handoffs(session, row) == [("a", "cancelled", 0), ("b", "offered", 0)]
    assert handoff.note == "withdrawn: the card was cancelled (discarded in review: 称呼含返佣)"
    assert session.get(AccountManager, "a").open_count == 0  # type: ignore[union-attr]
    assert "handoff.withdrawn" in session.scalars(select(AuditEntry.action)).all()


def test_an_offer_whose_card_was_blocked_is_withdrawn_at_its_answer_time_without_a_miss(
    db: Database, session: Session, hsettings: Settings
) -> None:
    manager(session, "a")
    manager(session, "b")
    row = lead(session, "wm1", display_name="稳赚不赔", owner_userid="a")  # the final-text lint blocks it
    says(session, row, "开户", NOW, 1, intent=("open_account", "开户"))
    handoff = qualify(session, hsettings, row)
    assert handoff is not None and card_of(session, handoff).status == DeliveryStatus.BLOCKED
    assert handoff.due_at == NOW + 30 * MIN  # b's card would be blocked too: no faster than a miss
    session.commit()
    sweeper = HandoffSweeper(hsettings, db, _coordinator())

    assert sweeper.run(NOW + 29 * MIN).withdrawn == []
    report = sweeper.run(NOW + 30 * MIN)
    assert (report.withdrawn, report.timed_out) == ([handoff.id], [])
    assert _handoffs(session, row) == [("a", "cancelled", 0), ("b", "offered", 0)]


def test_nobody_left_puts_the_lead_back_in_the_queue_with_an_alert(
    session: Session, hsettings: Settings
) -> None:
    manager(session, "a")
    row = _intent_lead(session, "wm1")
    handoff = qualify(session, hsettings, row)
    assert handoff is not None
    answer = decline(desk(session, hsettings, NOW + MIN), handoff.id, "a")
    assert answer.following is None and row.stage == "qualified"
    assert session.scalars(select(Alert.kind)).all() == ["handoff.waiting"]


# --- after accept -------------------------------------------------------------------------------------


def test_converted_by_command_closes_the_handoff_and_frees_the_slot(
    session: Session, hsettings: Settings
) -> None:
    manager(session, "a", capacity=1)
    row = _intent_lead(session, "wm1")
    handoff = qualify(session, hsettings, row)
    assert handoff is not None
    d = desk(session, hsettings, NOW + MIN)
    title, _ = commands.run(d, "a", commands.parse("接受 " + str(handoff.id)))  # type: ignore[arg-type]
    assert title == f"线索 #{handoff.id} 已由您接手，会话正在转给您"
    assert "跟进中" in commands.summary(session, "a")[0]
    title, _ = commands.run(d, "a", commands.parse(f"成交#{handoff.id}"))  # type: ignore[arg-type]
    assert title == f"线索 #{handoff.id} 已标记为成交"
    assert (
        row.stage == "converted" and handoff.status == HandoffStatus.CLOSED and handoff.open_lead_id is None
    )
    assert session.get(AccountManager, "a").open_count == 0  # type: ignore[union-attr]


def test_a_typed_answer_updates_the_card_with_the_code_of_its_send_once(
    session: Session, hsettings: Settings
) -> None:
    manager(session, "a", capacity=1)
    handoff = qualify(session, hsettings, _intent_lead(session, "wm1"))
    assert handoff is not None
    card = session.scalars(select(Delivery).where(Delivery.purpose_key == flow.card_key(handoff.id))).one()
    card.params = {**card.params, "response_code": "SENT1"}  # as the dispatcher stores it after the send
    d = desk(session, hsettings, NOW + MIN)
    commands.run(d, "a", commands.parse(f"接受 {handoff.id}"))  # type: ignore[arg-type]
    assert (handoff.card_response_code, handoff.card_replace_name) == ("SENT1", "已接受")
    assert "response_code" not in card.params  # single use: taken by this update
    handoff.card_response_code = None  # the update went out
    commands.run(d, "a", commands.parse(f"接受 {handoff.id}"))  # type: ignore[arg-type]
    assert handoff.card_response_code is None  # nothing left to update it with


def test_commands_parse_only_what_managers_type() -> None:
    assert commands.parse("我的线索") == commands.Command("list")
    assert commands.parse("接受 12") == commands.Command("accept", 12)
    assert commands.parse("拒绝＃7 在休假") == commands.Command("decline", 7, "在休假")
    assert commands.parse("接受") is None and commands.parse("我想开户") is None


def test_intake_contact_is_transferred_at_most_twice_in_90_days(
    db: Database, session: Session, settings: Settings
) -> None:
    hs = settings.replace(handoff={"transfer_customer": True, "intake_members": ["intake1"]})
    manager(session, "a")
    row = lead(session, owner_userid="intake1")
    says(session, row, "开户", NOW, 1, intent=("open_account", "开户"))
    handoff = qualify(session, hs, row)
    assert handoff is not None
    accept(desk(session, hs, NOW + MIN), handoff.id, "a")
    assert handoff.channel_action == "transfer_customer"
    session.commit()
    client = FakeClient()
    HandoffCalls(hs, db, client, clock=lambda: NOW + 2 * MIN).run_once()
    assert client.named("transfer_customer") == [("intake1", "a", ("wm_lead1",))]
    session.expire_all()
    started = session.get(Handoff, handoff.id)
    assert started is not None and started.channel_status == "transferring"
    assert started.actions_due_at is not None and started.actions_due_at >= NOW + timedelta(hours=24)

    # Two transfers already this quarter: the owner is told instead of trying a third.
    started.channel_status = "done"
    other = Handoff(
        lead_id=row.id,
        manager_userid="a",
        status="closed",
        offered_at=NOW - timedelta(days=10),
        responded_at=NOW - timedelta(days=10),
        channel_action="transfer_customer",
        channel_status="done",
    )
    session.add(other)
    row.stage, row.owner_userid = "qualified", "intake1"
    started.open_lead_id, started.status = None, "closed"
    session.flush()
    again = offer(desk(session, hs, NOW + timedelta(days=1)), row, "意向「开户」")
    assert again is not None
    accept(desk(session, hs, NOW + timedelta(days=1)), again.id, "a")
    assert again.channel_action == "notify_owner" and again.channel_status == "done"
    note = session.scalars(select(Delivery).where(Delivery.purpose_key == f"handoff:{again.id}:owner")).one()
    assert note.recipient == "intake1" and "已由A接手" in note.text


def test_failed_kf_transfer_is_retried_then_reported(
    db: Database, session: Session, hsettings: Settings
) -> None:
    manager(session, "a")
    row = _intent_lead(session, "wm1")
    session.add(
        KfConversation(
            open_kfid="wkKF",
            external_user_id="wm1",
            last_customer_msg_at=NOW,
            replies_since=0,
            updated_at=NOW,
        )
    )
    handoff = qualify(session, hsettings, row)
    assert handoff is not None
    accept(desk(session, hsettings, NOW + MIN), handoff.id, "a", "RC1")
    session.commit()
    client = FakeClient(
        fail={"kf_transfer_session": WeComAPIError(95019, "servicer not receiving", "kf/service_state/trans")}
    )
    outcome = HandoffCalls(hsettings, db, client, clock=lambda: NOW + 2 * MIN).run_once()
    assert [(o.card, o.channel) for o in outcome] == [("updated", "failed")]
    session.expire_all()
    assert session.scalars(select(Alert.kind)).all() == ["handoff.channel"]


# --- handlers -----------------------------------------------------------------------------------------


def _ctx(session: Session, settings: Settings, now: datetime, event_id: int = 1) -> Any:
    from bot.routing import HandlerContext

    return HandlerContext(session=session, settings=settings, now=now, event_id=event_id, received_at=now)


def test_refused_transfer_tells_the_owner_instead(session: Session, settings: Settings) -> None:
    from bot.wecom.events import ExternalContactChange
    from handlers.handoff import transfer_failed

    hs = settings.replace(handoff={"transfer_customer": True, "intake_members": ["intake1"]})
    manager(session, "a", name="安经理")
    row = lead(session, owner_userid="intake1")
    says(session, row, "开户", NOW, 1, intent=("open_account", "开户"))
    handoff = qualify(session, hs, row)
    assert handoff is not None
    accept(desk(session, hs, NOW + MIN), handoff.id, "a")
    handoff.channel_status = "transferring"  # WeCom started it (see the call runner)
    event = ExternalContactChange(
        to_user="corp",
        create_time=0,
        agent_id="",
        fields={},
        change_type="transfer_fail",
        user_id="a",
        external_user_id=row.external_user_id,
        fail_reason="customer_refused",
    )
    transfer_failed(event, _ctx(session, hs, NOW + timedelta(hours=5)))
    assert (handoff.channel_action, handoff.channel_status) == ("notify_owner", "done")
    assert handoff.channel_detail == "transfer failed: the customer refused the transfer; owner told instead"
    note = session.scalars(
        select(Delivery).where(Delivery.purpose_key == f"handoff:{handoff.id}:owner")
    ).one()
    assert note.recipient == "intake1" and "已由安经理接手" in note.text
    assert "handoff.channel" in session.scalars(select(Alert.kind)).all()


def test_typed_command_is_answered_by_app_message(session: Session, hsettings: Settings) -> None:
    from bot.wecom.events import TextMessage
    from handlers.handoff import manager_command

    manager(session, "a", name="安经理")
    row = _intent_lead(session, "wm1")
    handoff = qualify(session, hsettings, row)
    assert handoff is not None
    event = TextMessage(
        to_user="corp", create_time=0, agent_id="1", fields={}, from_user="a", content="我的线索"
    )
    manager_command(event, _ctx(session, hsettings, NOW + MIN, event_id=42))
    reply = session.scalars(select(Delivery).where(Delivery.purpose_key == "handoff_command:42")).one()
    assert reply.recipient == "a" and f"#{handoff.id} 王先生（待接受" in reply.text
    stranger = TextMessage(
        to_user="corp", create_time=0, agent_id="1", fields={}, from_user="x", content="接受 1"
    )
    manager_command(stranger, _ctx(session, hsettings, NOW + MIN, event_id=43))
    assert (
        session.scalars(select(Delivery).where(Delivery.purpose_key == "handoff_command:43")).first() is None
    )


def test_the_brief_words_decay_and_caps_for_the_manager_in_chinese() -> None:
    at = NOW - 30 * 24 * 60 * MIN
    fresh = ScoreItem("subscribed", "", NOW, 5, 5, 5, "订阅早报 +5", label="订阅早报", cap=5)
    old = ScoreItem("replied", "", at, 20, 10, 10, "x", label="你好 发来消息", cap=30)
    capped = ScoreItem("registered", "", at, 40, 30, 25, "x", label="报名直播课「ETF」", cap=25)
    assert reason_line(fresh) == "订阅早报 +5"
    assert reason_line(old) == "你好 发来消息 +10（由 20 衰减）"
    assert reason_line(capped) == "报名直播课「ETF」 +25（由 40 衰减；已达上限 25）"
