"""Lead scoring: decay and caps in controlled time, once-only facts, explanations, qualification."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.config import ConfigError, ScoringSettings, Settings
from bot.db import Database
from bot.leads.scoring import (
    Score,
    ScoringError,
    collect,
    compute,
    decayed,
    evaluate,
    qualifies,
    record,
    score,
)
from bot.leads.timeline import timeline
from models.audit import AuditEntry
from models.campaigns import Course, CourseAttendance, CourseRegistration
from models.inbox import InboundEvent
from models.kf import IntentSignal
from models.leads import Lead
from models.scoring import ScoreEvent, StageChange

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
DAY = timedelta(days=1)
S = ScoringSettings()
NO_DECAY = Settings().replace(scoring={"half_life_days": 0}).scoring


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    with db.sessions() as s:
        yield s


def _lead(session: Session, ext: str = "wm1", **kw: Any) -> Lead:
    lead = Lead(external_user_id=ext, created_at=NOW, updated_at=NOW, **kw)
    session.add(lead)
    session.flush()
    return lead


def _course(session: Session, key: str, title: str, starts_at: datetime) -> Course:
    course = Course(
        key=key,
        title=title,
        speaker_name="王老师",
        speaker_sac_no="S0000000000001",
        starts_at=starts_at,
        link="https://work.weixin.qq.com/live/x",
        created_by="olivia",
        created_at=NOW,
    )
    session.add(course)
    session.flush()
    return course


def _signal(session: Session, keyword: str, intent: str, at: datetime, ext: str = "wm1") -> None:
    session.add(IntentSignal(external_user_id=ext, intent=intent, keyword=keyword, source="kf", at=at))


def _message(session: Session, n: int, at: datetime, kind: str = "kf_text", ext: str = "wm1") -> None:
    session.add(
        InboundEvent(
            dedupe_key=f"k{n}",
            kind=kind,
            subject=ext,
            payload={"text": {"content": "hi"}},
            raw_xml="{}",
            received_at=at,
        )
    )


def _count(session: Session, model: type[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --- decay ----------------------------------------------------------------------------------------


def test_points_halve_every_half_life() -> None:
    assert decayed(20, NOW, NOW, 14) == 20
    assert decayed(20, NOW, NOW + 14 * DAY, 14) == pytest.approx(10)
    assert decayed(20, NOW, NOW + 28 * DAY, 14) == pytest.approx(5)
    assert decayed(20, NOW, NOW + 365 * DAY, 0) == 20  # 0 = no decay
    assert decayed(20, NOW + DAY, NOW, 14) == 20  # never grows


def test_score_decays_with_time_and_says_so(session: Session) -> None:
    lead = _lead(session)
    record(session, lead, "registered", "course:1", "价值投资入门", NOW, settings=S)
    assert score(session, lead, NOW, settings=S).total == 20
    later = score(session, lead, NOW + 14 * DAY, settings=S)
    assert (later.total, later.engagement, later.fit) == (10, 10, 0)
    assert later.explain() == ["报名直播课「价值投资入门」 +10 (decayed from 20)"]
    assert score(session, lead, NOW + 28 * DAY, settings=S).total == 5
    assert score(session, lead, NOW + 28 * DAY, settings=NO_DECAY).total == 20


def test_facts_after_now_do_not_count(session: Session) -> None:
    lead = _lead(session)
    record(session, lead, "attended", "course:1", "A", NOW, settings=S, at=NOW + DAY)
    assert score(session, lead, NOW, settings=S).total == 0
    assert score(session, lead, NOW + DAY, settings=S).total == 30


# --- caps -----------------------------------------------------------------------------------------


def test_cap_per_kind_keeps_the_newest_facts_and_explains_the_rest(session: Session) -> None:
    lead = _lead(session)
    for i in range(4):
        record(session, lead, "intent", f"open_account:{i}", "开户", NOW, settings=NO_DECAY, at=NOW + i * DAY)
    result = score(session, lead, NOW + 10 * DAY, settings=NO_DECAY)
    assert result.total == 50  # cap_intent
    by_day = {item.at: item for item in result.items}
    assert [by_day[NOW + i * DAY].points for i in range(4)] == [0, 0, 25, 25]
    assert by_day[NOW].why == "询问「开户」 +0 (cap 50 reached)"
    assert by_day[NOW + 3 * DAY].why == "询问「开户」 +25"


def test_cap_applies_after_decay(session: Session) -> None:
    lead = _lead(session)
    record(session, lead, "registered", "course:1", "A", NOW, settings=S, at=NOW)
    record(session, lead, "registered", "course:2", "B", NOW, settings=S, at=NOW + 14 * DAY)
    record(session, lead, "registered", "course:3", "C", NOW, settings=S, at=NOW + 28 * DAY)
    result = score(session, lead, NOW + 28 * DAY, settings=S)
    # Decayed: C 20, B 10, A 5 = 35, under the cap of 40.
    assert result.total == 35
    tight = Settings().replace(scoring={"cap_registered": 25}).scoring
    capped = score(session, lead, NOW + 28 * DAY, settings=tight)
    assert capped.total == 25
    assert "报名直播课「B」 +5 (decayed from 20; cap 25 reached)" in capped.explain()
    assert "报名直播课「A」 +0 (decayed from 20; cap 25 reached)" in capped.explain()
    # The console words each fact from these values instead of the English `why`.
    ranked = capped.ranked()
    assert [item.why for item in ranked] == capped.explain()
    facts = {item.label: (item.was_decayed, item.was_capped, item.cap) for item in ranked}
    assert facts == {
        "报名直播课「C」": (False, False, 25),
        "报名直播课「B」": (True, True, 25),
        "报名直播课「A」": (True, True, 25),
    }


def test_fit_does_not_decay_and_has_its_own_cap(session: Session) -> None:
    lead = _lead(session, platform="xiaohongshu")
    record(session, lead, "fit", "platform", "platform:xiaohongshu", NOW, settings=S)
    record(session, lead, "fit", "experience", "experience:over_3y", NOW, settings=S)
    result = score(session, lead, NOW + 100 * DAY, settings=S)
    assert (result.fit, result.engagement, result.total) == (18, 0, 18)
    assert result.explain() == ["投资经验「over_3y」 +10", "来自小红书 +8"]
    small = Settings().replace(scoring={"cap_fit": 12}).scoring
    assert score(session, lead, NOW, settings=small).fit == 12


# --- recording ------------------------------------------------------------------------------------


def test_the_same_fact_scores_once_with_the_points_awarded_at_the_time(session: Session) -> None:
    lead = _lead(session)
    assert record(session, lead, "registered", "course:1", "A", NOW, settings=S) is True
    richer = Settings().replace(scoring={"points_registered": 35}).scoring
    assert record(session, lead, "registered", "course:1", "A", NOW + DAY, settings=richer) is False
    assert record(session, lead, "attended", "course:1", "A", NOW, settings=S) is True  # another kind
    rows = session.scalars(select(ScoreEvent).order_by(ScoreEvent.id)).all()
    assert [(r.kind, r.points, r.at) for r in rows] == [("registered", 20, NOW), ("attended", 30, NOW)]


def test_bad_events_are_refused_and_store_nothing(session: Session) -> None:
    lead = _lead(session)
    with pytest.raises(ScoringError, match="unknown score event kind 'liked'"):
        record(session, lead, "liked", "x", "", NOW, settings=S)
    with pytest.raises(ScoringError, match="fit detail must be"):
        record(session, lead, "fit", "age", "age:30", NOW, settings=S)
    with pytest.raises(ScoringError, match="source_ref"):
        record(session, lead, "clicked", "", "link", NOW, settings=S)
    assert _count(session, ScoreEvent) == 0


def test_collect_derives_events_from_stored_facts_once(session: Session) -> None:
    lead = _lead(session, platform="douyin", subscribed=True)
    session.add(AuditEntry(at=NOW + DAY, actor="bot", action="lead.subscribe", target="lead:wm1", detail={}))
    course = _course(session, "c1", "价值投资入门", NOW + 2 * DAY)
    other = _course(session, "c2", "两融实务", NOW + 3 * DAY)
    session.add(
        CourseRegistration(course_id=course.id, lead_id=lead.id, channel="kf", registered_at=NOW + DAY)
    )
    session.add(CourseAttendance(course_id=course.id, lead_id=lead.id, minutes=45, imported_at=NOW + 4 * DAY))
    session.add(CourseAttendance(course_id=other.id, lead_id=lead.id, minutes=0, imported_at=NOW + 4 * DAY))
    # Two messages the same Shanghai day, one the next (15:59 UTC is 23:59 in Shanghai).
    _message(session, 1, NOW)
    _message(session, 2, NOW + timedelta(hours=13, minutes=59))
    _message(session, 3, NOW + timedelta(hours=14, minutes=1), kind="kf_customer_message")
    _message(session, 4, NOW, kind="kf_servicer_message")  # not the customer
    _signal(session, "开户", "open_account", NOW + DAY)
    _signal(session, "开个户", "open_account", NOW + DAY + timedelta(hours=1))  # same intent, same day
    _signal(session, "佣金", "commission", NOW + DAY)
    _signal(session, "开户", "open_account", NOW + 2 * DAY)
    _signal(session, "开户", "open_account", NOW + 9 * DAY)  # after "now" below
    _message(session, 5, NOW + 9 * DAY)  # after "now" below
    _lead(session, "wm2")
    _signal(session, "开户", "open_account", NOW, ext="wm2")  # someone else

    at = NOW + 5 * DAY
    assert collect(session, lead, at, settings=S) == 9
    assert collect(session, lead, at, settings=S) == 0
    rows = session.scalars(select(ScoreEvent).order_by(ScoreEvent.kind, ScoreEvent.source_ref)).all()
    assert [(r.kind, r.source_ref, r.detail, r.points, r.at) for r in rows] == [
        ("attended", f"course:{course.id}", "价值投资入门", 30, NOW + 2 * DAY),
        ("fit", "platform", "platform:douyin", 5, NOW),
        ("intent", "commission:2026-11-21", "佣金", 25, NOW + DAY),
        ("intent", "open_account:2026-11-21", "开户", 25, NOW + DAY),
        ("intent", "open_account:2026-11-22", "开户", 25, NOW + 2 * DAY),
        ("registered", f"course:{course.id}", "价值投资入门", 20, NOW + DAY),
        ("replied", "day:2026-11-20", "2026-11-20", 3, NOW),
        ("replied", "day:2026-11-21", "2026-11-21", 3, NOW + timedelta(hours=14, minutes=1)),
        ("subscribed", "subscribed", "", 5, NOW + DAY),
    ]
    assert collect(session, lead, NOW + 10 * DAY, settings=S) == 2  # the later intent and message


def test_score_adds_fit_and_engagement_and_explains_every_item(session: Session) -> None:
    lead = _lead(session, platform="zhihu", subscribed=True)
    course = _course(session, "c1", "价值投资入门", NOW - 7 * DAY)
    session.add(CourseAttendance(course_id=course.id, lead_id=lead.id, minutes=30, imported_at=NOW))
    collect(session, lead, NOW, settings=S)
    result = score(session, lead, NOW, settings=S)
    assert (result.fit, result.engagement, result.total) == (8, 5 + 21, 8 + 26)
    assert result.explain() == [
        "观看直播课「价值投资入门」 +21 (decayed from 30)",
        "来自知乎 +8",
        "订阅早报 +5",
    ]


# --- qualification --------------------------------------------------------------------------------


def _score(total: int, intents: tuple[tuple[str, str], ...] = ()) -> Score:
    return Score(total=total, fit=0, engagement=total, threshold=60, items=(), intents=intents)


def test_qualifies_by_threshold_or_by_an_instant_intent() -> None:
    instant = S.instant_intents()
    assert instant == {"open_account", "margin", "commission"}
    assert qualifies(_score(59), instant) is None
    assert qualifies(_score(60), instant) == "得分 60 ≥ 60"
    assert qualifies(_score(5, (("how_to_buy", "怎么买"),)), instant) is None
    assert (
        qualifies(_score(5, (("how_to_buy", "怎么买"), ("margin", "融资融券"))), instant)
        == "意向「融资融券」"
    )


def test_reaching_the_threshold_qualifies_the_lead(session: Session) -> None:
    lead = _lead(session, platform="offline", subscribed=True, stage="engaged")
    first = _course(session, "c1", "A", NOW - DAY)
    second = _course(session, "c2", "B", NOW - DAY)
    session.add(
        CourseRegistration(course_id=first.id, lead_id=lead.id, channel="kf", registered_at=NOW - DAY)
    )
    session.add(CourseAttendance(course_id=first.id, lead_id=lead.id, minutes=30, imported_at=NOW))
    tight = Settings().replace(scoring={"qualify_threshold": 70}).scoring
    before = evaluate(session, lead, NOW, settings=tight)
    assert before.reason is None and before.change is None and lead.stage == "engaged"
    assert before.score.total == 10 + 5 + 19 + 29  # fit, subscribed, registered, attended (1 day decay)
    session.add(CourseAttendance(course_id=second.id, lead_id=lead.id, minutes=30, imported_at=NOW))
    after = evaluate(session, lead, NOW, settings=tight)
    assert after.reason == f"得分 {after.score.total} ≥ 70"
    assert lead.stage == "qualified"
    change = session.scalars(select(StageChange)).one()
    assert (change.from_stage, change.to_stage, change.actor, change.reason) == (
        "engaged",
        "qualified",
        "scoring",
        after.reason,
    )
    audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "lead.stage")).one()
    assert audit.detail["to"] == "qualified"
    # Evaluating again changes nothing more.
    assert evaluate(session, lead, NOW + DAY, settings=tight).change is None
    assert _count(session, StageChange) == 1


def test_an_instant_intent_qualifies_a_new_lead_at_once(session: Session) -> None:
    lead = _lead(session)
    _signal(session, "怎么买", "how_to_buy", NOW - DAY)
    assert evaluate(session, lead, NOW, settings=S).change is None
    _signal(session, "开户", "open_account", NOW)
    result = evaluate(session, lead, NOW, settings=S)
    assert result.score.total < S.qualify_threshold
    assert result.reason == "意向「开户」"
    assert lead.stage == "qualified"
    assert session.scalars(select(StageChange.reason)).one() == "意向「开户」"


def test_instant_intents_follow_configuration(session: Session) -> None:
    lead = _lead(session)
    _signal(session, "开户", "open_account", NOW)
    only_margin = Settings().replace(scoring={"qualify_intents": "两融"}).scoring
    assert evaluate(session, lead, NOW, settings=only_margin).change is None
    assert lead.stage == "new"


@pytest.mark.parametrize("stage", ["qualified", "handed_off", "accepted", "converted", "lost", "opted_out"])
def test_scoring_only_qualifies_leads_before_qualification(session: Session, stage: str) -> None:
    lead = _lead(session, stage=stage)
    _signal(session, "开户", "open_account", NOW)
    result = evaluate(session, lead, NOW, settings=S)
    assert result.reason == "意向「开户」" and result.change is None
    assert lead.stage == stage
    assert _count(session, StageChange) == 0


def test_an_opted_out_lead_is_never_qualified(session: Session) -> None:
    lead = _lead(session, opted_out=True)
    _signal(session, "开户", "open_account", NOW)
    assert evaluate(session, lead, NOW, settings=S).change is None
    assert lead.stage == "new"


def test_a_lead_that_attended_a_course_and_asks_how_to_open_an_account_is_qualified(session: Session) -> None:
    lead = _lead(session, platform="douyin", hook_code="DY001")
    course = _course(session, "c1", "开户前必看", NOW - 2 * DAY)
    session.add(CourseAttendance(course_id=course.id, lead_id=lead.id, minutes=50, imported_at=NOW - DAY))
    _message(session, 1, NOW)
    _signal(session, "开户", "open_account", NOW)
    session.commit()
    result = evaluate(session, lead, NOW, settings=S)
    session.commit()
    assert lead.stage == "qualified"
    assert result.score.explain() == [
        "观看直播课「开户前必看」 +27 (decayed from 30)",
        "询问「开户」 +25",
        "来自抖音 +5",
        f"{NOW.date().isoformat()} 发来消息 +3",
    ]
    kinds = [(i.kind, i.summary) for i in timeline(session, "wm1") if i.kind in {"score", "stage"}]
    assert ("stage", "stage new → qualified by scoring: 意向「开户」") in kinds
    assert ("score", "+25 询问「开户」 (intent)") in kinds
    assert ("score", "+30 观看直播课「开户前必看」 (attended)") in kinds


# --- pure computation and settings ------------------------------------------------------------------


def test_compute_is_pure_and_deterministic() -> None:
    events = [
        ScoreEvent(id=1, lead_id=1, kind="replied", source_ref="day:a", detail="a", points=3, at=NOW),
        ScoreEvent(id=2, lead_id=1, kind="clicked", source_ref="link:1", detail="早报", points=5, at=NOW),
    ]
    first = compute(events, S, NOW + 14 * DAY)
    assert first == compute(list(reversed(events)), S, NOW + 14 * DAY)
    assert first.total == 2 + 3  # 1.5 rounds to 2, 2.5 rounds to 3
    assert "点击「早报」 +3 (decayed from 5)" in first.explain()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"qualify_intents": "开户,炒股"}, "'炒股' is neither an intent"),
        ({"fit_platform_points": "douyin=5,tiktok=3"}, "unknown platform tiktok"),
        ({"fit_platform_points": "douyin"}, "expected name=points"),
        ({"fit_experience_points": "none=0,none=1"}, "listed twice"),
        ({"points_intent": -1}, "scoring.points_intent/cap_intent"),
        ({"half_life_days": -1}, "half_life_days"),
        ({"qualify_threshold": 0}, "qualify_threshold"),
    ],
)
def test_bad_scoring_settings_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings().replace(scoring=values)


def test_scoring_settings_come_from_the_environment() -> None:
    from bot.config import load_settings

    env = {"BOT_SCORING__QUALIFY_INTENTS": "open_account, 融资融券", "BOT_SCORING__HALF_LIFE_DAYS": "7"}
    scoring = load_settings(environ=env).scoring
    assert scoring.instant_intents() == {"open_account", "margin"}
    assert scoring.half_life_days == 7.0
