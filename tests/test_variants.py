"""A/B variants of approved scripts: maker–checker, sticky weighted arms, promote and retire, numbers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.accounts import create_user
from bot.leads.timeline import timeline
from bot.services import Services
from bot.wecom.simulator import Simulator
from models.audit import AuditEntry
from models.campaigns import CourseRegistration
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.inbox import InboundEvent
from models.leads import Lead
from models.ledger import LedgerEntry
from models.scoring import StageChange
from models.scripts import VersionStatus
from models.variants import ExperimentStatus, VariantAssignment, VariantStatus
from scripts_library import catalogue as cat
from scripts_library import experiments, variants
from scripts_library.experiments import Arm
from scripts_library.performance import ScriptPerformance, script_performance
from tests.scripts_fixtures import POLICY
from tests.test_welcome_fast_path import WELCOME, scans, worker
from tests.test_welcome_fast_path import ready as ready
from tests.test_welcome_fast_path import sim as sim

BODY = (
    "{{ lead.display_name }}您好，欢迎关注{{ firm.name }}投资者教育服务号，我是{{ manager.name }}。"
    "回复“订阅”接收交易日早报。市场有风险，投资需谨慎。{{ firm.opt_out }}"
)
B_BODY = BODY.replace("服务号", "公众号")
C_BODY = BODY.replace("服务号", "视频号")
VALUES = {
    "lead": {"display_name": "陈女士"},
    "manager": {"name": "李经理"},
    "firm": {"name": "示例证券", "opt_out": "回复TD退订"},
    "hook": {"platform_name": "小红书"},
}
KEY = "welcome_xhs"


@pytest.fixture
def session(services: Services) -> Iterator[Session]:
    with services.db.sessions() as s:
        create_user(s, "olivia", "operator", "operator-password")
        create_user(s, "omar", "operator", "operator-password")
        create_user(s, "chen", "compliance", "compliance-password")
        create_user(s, "mia", "manager", "manager-password")
        cat.create_script(s, KEY, "welcome", "olivia")
        _version(s, BODY)
        cat.approve(s, KEY, 1, "chen", POLICY)
        s.commit()
        yield s


def _version(session: Session, body: str, author: str = "olivia") -> int:
    saved = cat.save_draft(session, KEY, body, author, POLICY)
    cat.submit(session, KEY, saved.version.number, author, POLICY)
    return saved.version.number


def _variant(session: Session, body: str, weight: int = 50, author: str = "omar") -> int:
    number = _version(session, body, author)
    cat.approve(session, KEY, number, "chen", POLICY, as_variant=True, weight=weight)
    return number


def _leads(session: Session, count: int, prefix: str = "wm") -> list[int]:
    rows = [Lead(external_user_id=f"{prefix}{i:05d}") for i in range(count)]
    session.add_all(rows)
    session.flush()
    return [lead.id for lead in rows]


def _pairs(rows: Any) -> dict[Any, Any]:
    return {a: b for a, b in rows}


def _numbers(picked: dict[int, Any]) -> Counter[int]:
    return Counter(version.number for _script, version, _approval in picked.values())


def test_variant_needs_compliance_approval_by_someone_other_than_its_author(session: Session) -> None:
    number = _version(session, B_BODY, author="omar")
    with pytest.raises(cat.PermissionDenied, match="not a compliance reviewer"):
        cat.approve(session, KEY, number, "olivia", POLICY, as_variant=True)
    create_user(session, "carl", "compliance", "compliance-password")
    saved = cat.save_draft(session, KEY, C_BODY, "olivia", POLICY)
    carls = cat.actor(session, "carl")
    carls.role = "operator"
    own = cat.save_draft(session, KEY, C_BODY + "\n", "carl", POLICY)
    cat.submit(session, KEY, own.version.number, "carl", POLICY)
    carls.role = "compliance"
    with pytest.raises(cat.PermissionDenied, match="may not review"):
        cat.approve(session, KEY, own.version.number, "carl", POLICY, as_variant=True)
    with pytest.raises(cat.WorkflowError, match="only submitted"):
        cat.approve(session, KEY, saved.version.number, "chen", POLICY, as_variant=True)
    with pytest.raises(cat.WorkflowError, match="weight"):
        cat.approve(session, KEY, number, "chen", POLICY, as_variant=True, weight=0)
    assert experiments.running(session, cat.get_script(session, KEY).id) is None
    cat.approve(session, KEY, number, "chen", POLICY, as_variant=True)
    assert cat.get_version(session, KEY, 1).status == VersionStatus.APPROVED  # not superseded
    assert cat.get_version(session, KEY, number).status == VersionStatus.APPROVED


def test_blocked_text_cannot_become_a_variant(session: Session) -> None:
    number = _version(session, BODY.replace("回复“订阅”接收交易日早报。", "跟着老师操作保本稳赚！"))
    with pytest.raises(cat.WorkflowError, match="cannot be approved"):
        cat.approve(session, KEY, number, "chen", POLICY, as_variant=True)
    assert experiments.running(session, cat.get_script(session, KEY).id) is None


def test_a_variant_needs_a_live_version_to_be_tested_against(session: Session) -> None:
    cat.retire(session, KEY, 1, "chen")
    number = _version(session, B_BODY)
    with pytest.raises(cat.WorkflowError, match="no approved version live now"):
        cat.approve(session, KEY, number, "chen", POLICY, as_variant=True)


def test_assignment_is_deterministic_sticky_and_stored_once_per_lead(session: Session) -> None:
    b = _variant(session, B_BODY)
    leads = _leads(session, 40)
    now = datetime.now(UTC)
    first = {lead: cat.sendable_for(session, KEY, now, lead)[1].number for lead in leads}
    assert set(first.values()) == {1, b}
    session.commit()
    stored = {
        lead: arm
        for lead, arm in session.execute(select(VariantAssignment.lead_id, VariantAssignment.variant_id))
    }
    assert sorted(stored) == leads
    # A new transaction (no memo), later, through compose and the bulk form: always the same arm.
    later = now + timedelta(hours=3)
    again = {lead: cat.sendable_for(session, KEY, later, lead)[1].number for lead in leads}
    bulk = {lead: v.number for lead, (_s, v, _a) in cat.sendable_for_many(session, KEY, later, leads).items()}
    assert again == first == bulk
    assert session.scalar(select(func.count(VariantAssignment.id))) == 40
    # The arm follows from the hash alone: a replica with no stored row picks the same.
    experiment_id = session.scalars(select(VariantAssignment.experiment_id)).first()
    assert experiment_id is not None
    current = cat.live(session, KEY, later)
    for lead in leads:
        arm = experiments.pick(current.arms, experiment_id, KEY, lead)
        assert arm is not None and arm.sendable[1].number == first[lead]
    # Changing weights moves no assigned lead.
    variants.set_weight(session, KEY, b, 1, "olivia")
    assert {lead: cat.sendable_for(session, KEY, later, lead)[1].number for lead in leads} == first


def test_weights_are_respected_over_many_leads(session: Session) -> None:
    """4 000 leads at 50/50, then a second test at 20/80 (a fixed hash, bounds at 5 sd: no flakes)."""
    b = _variant(session, B_BODY)
    now = datetime.now(UTC)
    leads = _leads(session, 4_000)
    counts = _numbers(cat.sendable_for_many(session, KEY, now, leads))
    # Binomial(4 000, 0.5): sd 31.6.
    assert abs(counts[1] - 2_000) < 160 and counts[1] + counts[b] == 4_000, counts
    variants.promote(session, KEY, b, "chen")
    c = _variant(session, C_BODY, weight=80, author="olivia")
    variants.set_weight(session, KEY, b, 20, "omar")
    counts = _numbers(cat.sendable_for_many(session, KEY, now, leads))
    # Binomial(4 000, 0.2): sd 25.3.
    assert abs(counts[b] - 800) < 127 and counts[b] + counts[c] == 4_000, counts


def test_pick_follows_cumulative_weights_and_skips_zero_weights() -> None:
    def arm(variant_id: int, weight: int) -> Arm:
        return Arm(variant_id, "A", weight, (None, None, None))  # type: ignore[arg-type]

    arms = [arm(2, 0), arm(1, 3)]
    assert all(experiments.pick(arms, 7, KEY, lead).variant_id == 1 for lead in range(50))  # type: ignore[union-attr]
    assert experiments.pick([arm(1, 0)], 7, KEY, 1) is None
    assert experiments.bucket(1, KEY, 5) == experiments.bucket(1, KEY, 5) != experiments.bucket(2, KEY, 5)


def test_bulk_assignment_takes_one_lookup_and_one_insert(services: Services, session: Session) -> None:
    _variant(session, B_BODY)
    leads = _leads(session, 300)
    now = datetime.now(UTC)
    cat.live(session, KEY, now)
    session.flush()
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(services.db.engine, "before_cursor_execute", record)
    try:
        cat.sendable_for_many(session, KEY, now, leads)
        for lead in leads:  # what the outbox does next for each lead: answered from memory
            cat.sendable_for(session, KEY, now, lead)
    finally:
        sa.event.remove(services.db.engine, "before_cursor_execute", record)
    assert len(statements) == 2, statements
    assert statements[0].lstrip().startswith("SELECT") and statements[1].lstrip().startswith("INSERT")


def test_compose_finds_the_lead_by_recipient_and_the_ledger_names_the_version(session: Session) -> None:
    from bot.delivery.outbox import enqueue

    b = _variant(session, B_BODY)
    leads = _leads(session, 20)
    now = datetime.now(UTC)
    arms = {lead: cat.sendable_for(session, KEY, now, lead)[1] for lead in leads}
    for i, lead in enumerate(leads):
        row = enqueue(
            session,
            purpose_key=f"t:{i}",
            channel=Channel.KF_TEXT,
            recipient=f"wm{i:05d}",
            script_key=KEY,
            values=VALUES,
            policy=POLICY,
            now=now,
        )
        version = arms[lead]
        assert (row.script_version, row.content_hash) == (version.number, version.content_hash)
        assert ("公众号" in row.text) == (version.number == b)
        entry = session.scalars(select(LedgerEntry).where(LedgerEntry.seq == row.ledger_seq)).one()
        assert (entry.script_version, entry.content_hash) == (version.number, version.content_hash)
    # Not a lead (a member, or a campaign): the control.
    assert cat.compose(session, KEY, VALUES, POLICY, at=now, recipient="zhangsan").version.number == 1
    assert cat.sendable(session, KEY, now)[1].number == 1


def test_promote_ends_the_test_and_supersedes_the_others(session: Session) -> None:
    b = _variant(session, B_BODY)
    c = _variant(session, C_BODY, author="olivia")
    leads = _leads(session, 30)
    now = datetime.now(UTC)
    cat.sendable_for_many(session, KEY, now, leads)
    with pytest.raises(cat.PermissionDenied, match="may not end"):
        variants.promote(session, KEY, b, "mia")
    submitted = _version(session, BODY + "\n")
    with pytest.raises(cat.WorkflowError, match="not a live variant"):
        variants.promote(session, KEY, submitted, "olivia")
    experiment = variants.promote(session, KEY, c, "olivia")
    assert experiment.status == ExperimentStatus.ENDED and experiment.outcome == f"v{c} promoted"
    assert [cat.get_version(session, KEY, n).status for n in (1, b, c)] == [
        VersionStatus.SUPERSEDED,
        VersionStatus.SUPERSEDED,
        VersionStatus.APPROVED,
    ]
    assert [arm.status for arm in experiment.variants] == [
        VariantStatus.SUPERSEDED,
        VariantStatus.SUPERSEDED,
        VariantStatus.PROMOTED,
    ]
    later = now + timedelta(seconds=1)
    assert set(_numbers(cat.sendable_for_many(session, KEY, later, leads))) == {c}
    actions = set(session.scalars(select(AuditEntry.action)))
    assert {"script.experiment_start", "script.variant_live", "script.variant_promote"} <= actions
    assert "script.experiment_end" in actions


def test_retiring_a_variant_reassigns_its_leads_and_the_last_arm_stays(session: Session) -> None:
    b = _variant(session, B_BODY)
    c = _variant(session, C_BODY, author="olivia")
    leads = _leads(session, 60)
    now = datetime.now(UTC)
    first = {lead: v.number for lead, (_s, v, _a) in cat.sendable_for_many(session, KEY, now, leads).items()}
    assert set(first.values()) == {1, b, c}
    variants.retire_variant(session, KEY, c, "chen")
    after = {lead: v.number for lead, (_s, v, _a) in cat.sendable_for_many(session, KEY, now, leads).items()}
    assert {lead: n for lead, n in after.items() if first[lead] != c} == {
        lead: n for lead, n in first.items() if n != c
    }
    assert set(after.values()) == {1, b}
    # Retiring the control too leaves one arm: the test ends and that version simply stays approved.
    cat.retire(session, KEY, 1, "olivia")
    experiment = experiments.running(session, cat.get_script(session, KEY).id)
    assert experiment is None
    assert set(_numbers(cat.sendable_for_many(session, KEY, now, leads))) == {b}
    assert cat.get_version(session, KEY, b).status == VersionStatus.APPROVED
    with pytest.raises(cat.WorkflowError, match="not a live variant"):
        variants.retire_variant(session, KEY, b, "chen")


def test_a_plain_approval_ends_the_test(session: Session) -> None:
    b = _variant(session, B_BODY)
    number = _version(session, C_BODY, author="olivia")
    cat.approve(session, KEY, number, "chen", POLICY)
    assert [cat.get_version(session, KEY, n).status for n in (1, b)] == [VersionStatus.SUPERSEDED] * 2
    assert experiments.running(session, cat.get_script(session, KEY).id) is None
    assert cat.sendable_for(session, KEY, datetime.now(UTC), _leads(session, 1)[0])[1].number == number


def test_weights_are_checked(session: Session) -> None:
    b = _variant(session, B_BODY)
    with pytest.raises(cat.WorkflowError, match="0-1000"):
        variants.set_weight(session, KEY, b, 1001, "olivia")
    variants.set_weight(session, KEY, 1, 0, "olivia")
    with pytest.raises(cat.WorkflowError, match="above 0"):
        variants.set_weight(session, KEY, b, 0, "olivia")
    with pytest.raises(cat.PermissionDenied):
        variants.set_weight(session, KEY, b, 10, "mia")
    leads = _leads(session, 50)
    assert set(_numbers(cat.sendable_for_many(session, KEY, datetime.now(UTC), leads))) == {b}


def test_assignment_shows_on_the_lead_timeline(session: Session) -> None:
    b = _variant(session, B_BODY)
    lead = _leads(session, 1)[0]
    number = cat.sendable_for(session, KEY, datetime.now(UTC), lead)[1].number
    label = "A" if number == 1 else "B"
    items = [i for i in timeline(session, "wm00000") if i.kind == "variant"]
    assert len(items) == 1 and f"assigned variant {label} (v{number})" in items[0].summary
    assert number in (1, b)


def test_welcome_batch_sends_each_lead_its_arm_with_a_few_statements(
    ready: Services,
    sim: Simulator,
) -> None:
    with ready.db.transaction() as s:
        saved = cat.save_draft(s, "welcome_xiaohongshu", WELCOME.replace("来到", "走进"), "olivia", POLICY)
        cat.submit(s, "welcome_xiaohongshu", saved.version.number, "olivia", POLICY)
        cat.approve(s, "welcome_xiaohongshu", saved.version.number, "chen", POLICY, as_variant=True)
    ids = scans(ready, sim, 20, prefix="wmAB")
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(ready.db.engine, "before_cursor_execute", record)
    try:
        outcomes = worker(ready).run_once()
    finally:
        sa.event.remove(ready.db.engine, "before_cursor_execute", record)
    assert [o.status for o in outcomes] == ["done"] * 20
    # The fast path's bound plus the one lookup of stored arms; the arms go in with the other INSERTs.
    reads_and_updates = [s for s in statements if not s.lstrip().startswith("INSERT")]
    assert len(reads_and_updates) <= 17, reads_and_updates
    with ready.db.read() as s:
        assigned = _pairs(
            s.execute(
                select(Lead.external_user_id, cat.ScriptVersion.number)
                .join(VariantAssignment, VariantAssignment.lead_id == Lead.id)
                .join(variants.ScriptVariant, variants.ScriptVariant.id == VariantAssignment.variant_id)
                .join(cat.ScriptVersion, cat.ScriptVersion.id == variants.ScriptVariant.version_id)
            )
        )
        sent = _pairs(s.execute(select(Delivery.recipient, Delivery.script_version)))
        texts = _pairs(s.execute(select(Delivery.recipient, Delivery.text)))
    assert sorted(assigned) == ids and sent == assigned
    assert set(sent.values()) == {1, 2}
    assert all(("走进" in texts[ext]) == (sent[ext] == 2) for ext in ids)


def _send(session: Session, n: int, version: int, recipient: str, at: datetime, status: str = "sent") -> None:
    session.add(
        Delivery(
            purpose_key=f"perf:{n}",
            channel=Channel.KF_TEXT,
            recipient=recipient,
            script_key=KEY,
            script_version=version,
            approval_id=1,
            content_hash="x" * 64,
            text="您好",
            lint_verdict="pass",
            status=status,
            created_at=at,
            sent_at=at if status == DeliveryStatus.SENT else None,
        )
    )


def test_performance_counts_sent_delivered_replied_registered_and_qualified(session: Session) -> None:
    from models.campaigns import Course

    t0 = datetime(2026, 11, 10, tzinfo=UTC)
    leads = {ext: Lead(external_user_id=ext) for ext in ("wa", "wb", "wc", "wd")}
    session.add_all(leads.values())
    course = Course(
        key="c", title="t", speaker_name="s", speaker_sac_no="S1", starts_at=t0, link="", created_by="x"
    )
    session.add(course)
    session.flush()
    _send(session, 1, 1, "wa", t0)
    _send(session, 2, 1, "wb", t0, status=DeliveryStatus.FAILED)
    _send(session, 3, 1, "wc", t0, status=DeliveryStatus.BLOCKED)
    _send(session, 4, 2, "wd", t0)
    _send(session, 5, 2, "wc", t0 + timedelta(hours=1), status=DeliveryStatus.QUEUED)
    _send(session, 6, 2, "wa", t0 - timedelta(days=1))  # before the period
    session.add_all(
        [
            InboundEvent(
                dedupe_key="r1",
                kind="kf_text",
                subject="wa",
                payload={},
                raw_xml="",
                received_at=t0 + timedelta(hours=2),
            ),
            InboundEvent(
                dedupe_key="r2",
                kind="kf_text",
                subject="wd",
                payload={},
                raw_xml="",
                received_at=t0 + timedelta(hours=49),
            ),
            CourseRegistration(
                course_id=course.id,
                lead_id=leads["wd"].id,
                channel="kf",
                registered_at=t0 + timedelta(days=1),
            ),
            CourseRegistration(
                course_id=course.id,
                lead_id=leads["wa"].id,
                channel="kf",
                registered_at=t0 - timedelta(hours=1),
            ),
            StageChange(
                lead_id=leads["wa"].id,
                from_stage="new",
                to_stage="qualified",
                at=t0 + timedelta(days=2),
                actor="t",
            ),
            StageChange(
                lead_id=leads["wd"].id,
                from_stage="new",
                to_stage="qualified",
                at=t0 + timedelta(days=30),
                actor="t",
            ),
        ]
    )
    session.flush()
    rows = script_performance(session, t0, t0 + timedelta(days=7), script_key=KEY)
    assert rows == [
        ScriptPerformance(KEY, 1, sent=2, delivered=1, replied=1, registered=0, qualified=1),
        ScriptPerformance(KEY, 2, sent=2, delivered=1, replied=0, registered=1, qualified=0),
    ]
    assert rows[0].rate(rows[0].replied) == 100.0 and ScriptPerformance.empty(KEY, 3).rate(0) == 0.0


def test_experiment_report_counts_leads_and_sends_while_each_arm_was_live(session: Session) -> None:
    before = datetime.now(UTC) - timedelta(days=1)
    _send(session, 1, 1, "wx", before)  # the control's send before the test is not compared
    b = _variant(session, B_BODY)
    leads = _leads(session, 10)
    now = datetime.now(UTC)
    picked = cat.sendable_for_many(session, KEY, now, leads)
    for i, (lead, (_s, version, _a)) in enumerate(picked.items()):
        _send(session, 10 + i, version.number, f"wm{leads.index(lead):05d}", now)
    session.flush()
    [report] = variants.report(session, KEY, now + timedelta(seconds=1))
    arms = {arm.version.number: arm for arm in report.arms}
    counts = _numbers(picked)
    assert {n: (a.assigned, a.numbers.sent, a.numbers.delivered, a.share) for n, a in arms.items()} == {
        1: (counts[1], counts[1], counts[1], 50.0),
        b: (counts[b], counts[b], counts[b], 50.0),
    }
    assert [a.variant.label for a in report.arms] == ["A", "B"]


def test_variants_from_the_command_line(runner: Any, env: dict[str, str], tmp_path: Any) -> None:
    from bot.cli import main

    def invoke(*args: str) -> str:
        result = runner.invoke(main, list(args), env=env)
        assert result.exit_code == 0, result.output
        return str(result.output)

    invoke("users", "add", "olivia", "--role", "operator", "--password", "operator-password")
    invoke("users", "add", "chen", "--role", "compliance", "--password", "compliance-password")
    invoke("scripts", "create", KEY, "--kind", "welcome", "--as", "olivia")
    body = tmp_path / "welcome.txt"
    for n, text in ((1, BODY), (2, B_BODY)):
        body.write_text(text, encoding="utf-8")
        invoke("scripts", "draft", KEY, str(body), "--as", "olivia")
        invoke("scripts", "submit", KEY, str(n), "--as", "olivia")
    invoke("scripts", "approve", KEY, "1", "--as", "chen")
    refused = runner.invoke(main, ["scripts", "approve", KEY, "2", "--as-variant", "--as", "olivia"], env=env)
    assert refused.exit_code == 1 and "not a compliance reviewer" in refused.output
    out = invoke("scripts", "approve", KEY, "2", "--as-variant", "--weight", "30", "--as", "chen")
    assert "approved as an A/B variant with weight 30" in out
    assert "weight 70" in invoke("scripts", "weight", KEY, "1", "70", "--as", "olivia")
    listing = invoke("scripts", "variants", KEY)
    assert "test #1 [running]" in listing
    rows = [line.split() for line in listing.splitlines() if line.strip().startswith(("A ", "B "))]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("A", "v1", "live", "70", "70.0"),
        ("B", "v2", "live", "30", "30.0"),
    ]
    bad = runner.invoke(main, ["scripts", "weight", KEY, "2", "1001", "--as", "olivia"], env=env)
    assert bad.exit_code == 1 and "0-1000" in bad.output
    assert "test #1 ended" in invoke("scripts", "promote", KEY, "2", "--as", "olivia")
    assert "v2 promoted" in invoke("scripts", "variants", KEY)
    assert "v1:superseded v2:approved" in invoke("scripts", "list")


def test_a_campaign_composes_one_text_per_arm_for_its_recipients(session: Session) -> None:
    b = _variant(session, B_BODY)
    leads = _leads(session, 50)
    now = datetime.now(UTC)
    picked = cat.sendable_for_many(session, KEY, now, leads)
    groups: dict[int, list[int]] = {}
    for lead, (_s, version, _a) in picked.items():
        groups.setdefault(version.number, []).append(lead)
    texts = {
        number: cat.compose_sendable(session, picked[members[0]], VALUES, POLICY, now, "campaign:c1")
        for number, members in groups.items()
    }
    assert set(texts) == {1, b}
    assert "公众号" in texts[b].text and "服务号" in texts[1].text
    assert texts[b].approval.version_id == texts[b].version.id and texts[b].script.key == KEY
