"""Lead stages: every allowed transition works and is recorded and audited; others change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.db import Database
from bot.leads.stages import ALLOWED, Stage, StageError, allowed, transition
from bot.leads.timeline import timeline
from models.audit import AuditEntry
from models.handoff import AccountManager, Handoff, HandoffStatus
from models.leads import Lead
from models.scoring import StageChange

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)

EXPECTED = {
    ("new", "engaged"),
    ("new", "nurtured"),
    ("new", "qualified"),
    ("engaged", "nurtured"),
    ("engaged", "qualified"),
    ("nurtured", "qualified"),
    ("qualified", "handed_off"),
    ("handed_off", "accepted"),
    ("handed_off", "qualified"),
    ("accepted", "converted"),
    ("lost", "engaged"),
    ("lost", "nurtured"),
    ("opted_out", "engaged"),
}


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    with db.sessions() as s:
        yield s


def _lead(session: Session, stage: str = "new", ext: str = "wm1") -> Lead:
    lead = Lead(external_user_id=ext, stage=stage, created_at=NOW, updated_at=NOW)
    session.add(lead)
    session.flush()
    return lead


def _all_allowed() -> list[tuple[str, str]]:
    return sorted((a.value, b.value) for a, targets in ALLOWED.items() for b in targets)


def test_the_allowed_transitions_are_the_pipeline_plus_lost_and_opted_out_from_anywhere() -> None:
    anywhere = {(a.value, b) for a in Stage for b in ("lost", "opted_out") if a.value != b}
    assert set(_all_allowed()) == EXPECTED | anywhere


@pytest.mark.parametrize(("start", "to"), _all_allowed())
def test_every_allowed_transition_moves_the_lead_and_records_it(
    session: Session, start: str, to: str
) -> None:
    lead = _lead(session, start)
    at = NOW + timedelta(hours=1)
    change = transition(session, lead, to, "olivia", "because", at)
    session.commit()
    assert lead.stage == to
    assert lead.updated_at == at
    row = session.scalars(select(StageChange)).one()
    assert (row.id, row.lead_id, row.from_stage, row.to_stage) == (change.id, lead.id, start, to)
    assert (row.at, row.actor, row.reason) == (at, "olivia", "because")
    audit = session.scalars(select(AuditEntry)).one()
    assert (audit.action, audit.target, audit.actor, audit.at) == ("lead.stage", "lead:wm1", "olivia", at)
    assert audit.detail == {"from": start, "to": to, "reason": "because"}


@pytest.mark.parametrize(
    ("start", "to"),
    [
        ("new", "handed_off"),
        ("new", "accepted"),
        ("new", "converted"),
        ("nurtured", "engaged"),
        ("qualified", "accepted"),
        ("qualified", "nurtured"),
        ("accepted", "handed_off"),
        ("converted", "new"),
        ("lost", "qualified"),
        ("opted_out", "qualified"),
    ],
)
def test_forbidden_transitions_raise_and_change_nothing(session: Session, start: str, to: str) -> None:
    lead = _lead(session, start)
    with pytest.raises(StageError, match=f"cannot move from {start} to {to}"):
        transition(session, lead, to, "olivia", "no", NOW)
    session.flush()
    assert lead.stage == start
    assert session.scalar(select(func.count()).select_from(StageChange)) == 0
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0
    assert not allowed(start, to)


def test_moving_to_the_same_stage_is_refused(session: Session) -> None:
    lead = _lead(session, "engaged")
    with pytest.raises(StageError, match="already engaged"):
        transition(session, lead, "engaged", "olivia", "", NOW)
    assert session.scalar(select(func.count()).select_from(StageChange)) == 0


def test_unknown_stages_are_refused(session: Session) -> None:
    lead = _lead(session)
    with pytest.raises(StageError, match="unknown target stage 'won'"):
        transition(session, lead, "won", "olivia", "", NOW)
    lead.stage = "legacy"
    with pytest.raises(StageError, match="unknown current stage 'legacy'"):
        transition(session, lead, "engaged", "olivia", "", NOW)
    assert not allowed("legacy", "engaged")
    assert session.scalar(select(func.count()).select_from(StageChange)) == 0


def test_a_coded_reason_is_stored_beside_its_english_text_and_a_free_one_alone(session: Session) -> None:
    lead = _lead(session, "qualified")
    coded = transition(
        session,
        lead,
        "handed_off",
        "handoff",
        "offered to 李经理",
        NOW,
        code="offered",
        params={"manager": "李经理"},
    )
    free = transition(session, lead, "lost", "manager:li", "客户不再回复", NOW)
    assert (coded.reason, coded.reason_code, coded.reason_params) == (
        "offered to 李经理",
        "offered",
        {"manager": "李经理"},
    )
    assert (free.reason, free.reason_code, free.reason_params) == ("客户不再回复", None, None)


def test_leaving_for_an_end_stage_ends_the_open_handoff_with_a_coded_note(session: Session) -> None:
    session.add(AccountManager(userid="li", name="李经理", open_count=1))
    lead = _lead(session, "accepted")
    handoff = Handoff(
        lead_id=lead.id, manager_userid="li", status=HandoffStatus.ACCEPTED, open_lead_id=lead.id
    )
    session.add(handoff)
    session.flush()
    transition(session, lead, "converted", "manager:li", "成交", NOW)
    assert handoff.status == HandoffStatus.CLOSED and handoff.note == "lead converted"
    assert (handoff.note_code, handoff.note_params) == ("lead_ended", {"stage": "converted"})


def test_stage_error_is_a_value_error() -> None:
    assert issubclass(StageError, ValueError)


def test_a_lead_walks_the_whole_pipeline_and_the_timeline_shows_each_step(session: Session) -> None:
    lead = _lead(session)
    path = ["engaged", "nurtured", "qualified", "handed_off", "accepted", "converted"]
    for i, stage in enumerate(path):
        transition(session, lead, stage, "bot", f"step {i}", NOW + timedelta(minutes=i))
    session.commit()
    changes = session.scalars(select(StageChange).order_by(StageChange.id)).all()
    assert [(c.from_stage, c.to_stage) for c in changes] == list(zip(["new", *path[:-1]], path, strict=True))
    stages = [i.summary for i in timeline(session, "wm1") if i.kind == "stage"]
    assert stages[0] == "stage new → engaged by bot: step 0"
    assert stages[-1] == "stage accepted → converted by bot: step 5"
    assert len(stages) == len(path)
    assert session.scalar(select(func.count()).select_from(AuditEntry)) == len(path)
