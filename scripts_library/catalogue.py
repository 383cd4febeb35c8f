"""The script catalogue and its maker–checker workflow; the final gate before anything is sent."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, SessionTransaction

from bot import metrics
from bot.config import ComplianceSettings
from models.alerts import Alert
from models.audit import AuditEntry
from models.base import utcnow
from models.leads import Lead
from models.scripts import Approval, Audience, Script, ScriptKind, ScriptVersion, VersionStatus
from models.users import Role, User
from models.variants import ScriptExperiment, ScriptVariant, VariantStatus
from scripts_library import experiments
from scripts_library.compliance import LintPolicy, LintResult, lint
from scripts_library.experiments import DEFAULT_WEIGHT, MAX_WEIGHT, Arm
from scripts_library.rendering import check_template, render, sample_render

AUTHOR_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})
STAFF_KINDS = frozenset({ScriptKind.HANDOFF_BRIEF, ScriptKind.STAFF_REMINDER})


class WorkflowError(ValueError):
    """A catalogue action is not allowed as asked; the message says why."""


class PermissionDenied(WorkflowError):
    """The actor's role or relation to the version does not allow the action."""


class NotSendable(WorkflowError):
    """No approved, valid version exists for the script at the time of sending."""


class MessageBlocked(WorkflowError):
    """The final rendered text failed the compliance lint; it is not sent and an alert is raised."""

    def __init__(
        self, message: str, result: LintResult, text: str, version: ScriptVersion, approval: Approval
    ) -> None:
        super().__init__(message)
        self.result = result
        self.text = text
        self.version = version
        self.approval = approval


@dataclass(frozen=True)
class SavedVersion:
    """A saved draft with the lint the author sees and the preview it was run on."""

    version: ScriptVersion
    preview: str
    lint: LintResult


@dataclass(frozen=True)
class Composed:
    """A rendered outbound text, tied to the approval that allows it; `held` means human review."""

    text: str
    script: Script
    version: ScriptVersion
    approval: Approval
    lint: LintResult

    @property
    def held(self) -> bool:
        """Whether a reviewer must release this message before it goes out."""
        return self.lint.verdict == "review"


def content_hash(body: str) -> str:
    """SHA-256 of a script body: what an approval is bound to."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def policy_from_settings(settings: ComplianceSettings) -> LintPolicy:
    """The linter's firm-specific policy from the `[compliance]` settings."""
    base = LintPolicy()
    return LintPolicy(
        firm_name=settings.firm_name,
        allowed_link_domains=settings.allowed_link_domains,
        opt_out_phrases=(settings.opt_out_instruction, *base.opt_out_phrases),
        not_advice_phrases=(settings.not_advice_phrase, *base.not_advice_phrases),
    )


def _audit(session: Session, actor: str, action: str, target: str, **detail: Any) -> None:
    session.add(AuditEntry(at=utcnow(), actor=actor, action=action, target=target, detail=detail))


def actor(session: Session, username: str) -> User:
    """Resolve an active account by name, or refuse."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        raise PermissionDenied(f"no active account named {username!r}")
    return user


def get_script(session: Session, key: str) -> Script:
    """Return the script with `key`, or refuse with a clear error."""
    script = session.scalars(select(Script).where(Script.key == key)).first()
    if script is None:
        raise WorkflowError(f"no script {key!r}")
    return script


def get_version(session: Session, key: str, number: int) -> ScriptVersion:
    """Return version `number` of script `key`."""
    script = get_script(session, key)
    version = session.scalars(
        select(ScriptVersion).where(ScriptVersion.script_id == script.id, ScriptVersion.number == number)
    ).first()
    if version is None:
        raise WorkflowError(f"script {key!r} has no version {number}")
    return version


def create_script(session: Session, key: str, kind: str, username: str, description: str = "") -> Script:
    """Register a new script key of a kind; authors only."""
    forget_sendable(session)
    user = actor(session, username)
    if user.role not in AUTHOR_ROLES:
        raise PermissionDenied(f"{username} ({user.role}) may not create scripts")
    if kind not in ScriptKind.__members__.values():
        raise WorkflowError(f"unknown kind {kind!r}; kinds: {', '.join(ScriptKind)}")
    if not key or len(key) > 64 or not key.replace("_", "").replace("-", "").isalnum() or not key.isascii():
        raise WorkflowError("key: 1-64 ASCII letters, digits, '_' or '-'")
    if session.scalars(select(Script.id).where(Script.key == key)).first() is not None:
        raise WorkflowError(f"script {key!r} exists")
    audience = Audience.STAFF if kind in STAFF_KINDS else Audience.CUSTOMER
    script = Script(key=key, kind=kind, audience=audience, description=description)
    session.add(script)
    session.flush()
    _audit(session, username, "script.create", f"script:{key}", kind=kind)
    return script


def preview_and_lint(body: str, kind: str, policy: LintPolicy) -> tuple[str, LintResult]:
    """Check the template, render it with sample values and lint the result."""
    check_template(body, kind)
    preview = sample_render(body, kind)
    return preview, lint(preview, kind=kind, policy=policy)


def save_draft(session: Session, key: str, body: str, username: str, policy: LintPolicy) -> SavedVersion:
    """Save the author's draft (a new version, or their open draft edited); show the lint."""
    forget_sendable(session)
    user = actor(session, username)
    if user.role not in AUTHOR_ROLES:
        raise PermissionDenied(f"{username} ({user.role}) may not edit scripts")
    script = get_script(session, key)
    if not body.strip():
        raise WorkflowError("body is empty")
    preview, result = preview_and_lint(body, script.kind, policy)
    draft = session.scalars(
        select(ScriptVersion).where(
            ScriptVersion.script_id == script.id,
            ScriptVersion.status == VersionStatus.DRAFT,
            ScriptVersion.author == username,
        )
    ).first()
    if draft is None:
        number = (
            session.scalar(select(func.max(ScriptVersion.number)).where(ScriptVersion.script_id == script.id))
            or 0
        ) + 1
        draft = ScriptVersion(script_id=script.id, number=number, author=username, status=VersionStatus.DRAFT)
        session.add(draft)
    draft.body = body
    draft.content_hash = content_hash(body)
    draft.lint_verdict = result.verdict
    draft.lint_findings = [f.to_dict() for f in result.findings]
    draft.lexicon_version = result.lexicon_version
    session.flush()
    _audit(session, username, "script.save_draft", f"script:{key}:v{draft.number}", verdict=result.verdict)
    return SavedVersion(draft, preview, result)


def submit(session: Session, key: str, number: int, username: str, policy: LintPolicy) -> ScriptVersion:
    """Freeze a draft and send it to compliance; only its author may."""
    forget_sendable(session)
    version = get_version(session, key, number)
    if version.status != VersionStatus.DRAFT:
        raise WorkflowError(f"{key} v{number} is {version.status}; only drafts can be submitted")
    if version.author != username:
        raise PermissionDenied(f"only the author ({version.author}) may submit {key} v{number}")
    _, result = preview_and_lint(version.body, version.script.kind, policy)
    version.status = VersionStatus.SUBMITTED
    version.submitted_at = utcnow()
    version.lint_verdict = result.verdict
    version.lint_findings = [f.to_dict() for f in result.findings]
    version.lexicon_version = result.lexicon_version
    _audit(session, username, "script.submit", f"script:{key}:v{number}", verdict=result.verdict)
    return version


def _reviewer(session: Session, version: ScriptVersion, username: str, key: str) -> User:
    user = actor(session, username)
    if user.role != Role.COMPLIANCE:
        raise PermissionDenied(f"{username} ({user.role}) is not a compliance reviewer")
    if version.author == username:
        raise PermissionDenied(f"{username} wrote {key} v{version.number} and may not review it")
    if version.status != VersionStatus.SUBMITTED:
        raise WorkflowError(
            f"{key} v{version.number} is {version.status}; only submitted versions can be reviewed"
        )
    if version.content_hash != content_hash(version.body):
        raise WorkflowError(f"{key} v{version.number} changed after submission; refusing to review it")
    return user


def _overlaps(a: Approval, start: datetime | None, end: datetime | None) -> bool:
    a_start, a_end = a.valid_from, a.valid_until
    return (end is None or a_start is None or a_start < end) and (
        start is None or a_end is None or start < a_end
    )


def approve(
    session: Session,
    key: str,
    number: int,
    username: str,
    policy: LintPolicy,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    reason: str = "",
    as_variant: bool = False,
    weight: int = DEFAULT_WEIGHT,
) -> Approval:
    """Approve a submitted version (compliance, never the author, never over a block).

    A plain approval supersedes the approved versions whose validity overlaps (ending an A/B test
    they were in). `as_variant` instead puts the version live next to the current one, with
    `weight`, in the script's running experiment (started here if none runs).
    """
    forget_sendable(session)
    version = get_version(session, key, number)
    _reviewer(session, version, username, key)
    if valid_from and valid_until and valid_until <= valid_from:
        raise WorkflowError("valid_until must be after valid_from")
    if as_variant and not 1 <= weight <= MAX_WEIGHT:
        raise WorkflowError(f"a new variant's weight is 1-{MAX_WEIGHT}")
    _, result = preview_and_lint(version.body, version.script.kind, policy)
    if result.blocked:
        rules = ", ".join(
            sorted({f"{f.rule_id} ({f.matched})" for f in result.findings if f.severity == "block"})
        )
        raise WorkflowError(f"{key} v{number} fails the compliance lint and cannot be approved: {rules}")
    now = utcnow()
    if as_variant:
        experiment = _experiment_for_variant(session, version, username, now)
    else:
        _supersede_overlapping(session, version, username, valid_from, valid_until, now)
    approval = Approval(
        version_id=version.id,
        decision="approved",
        reviewer=username,
        decided_at=now,
        content_hash=version.content_hash,
        reason=reason,
        valid_from=valid_from,
        valid_until=valid_until,
    )
    session.add(approval)
    version.status = VersionStatus.APPROVED
    version.lint_verdict = result.verdict
    version.lexicon_version = result.lexicon_version
    session.flush()
    _audit(
        session,
        username,
        "script.approve",
        f"script:{key}:v{number}",
        approval=approval.id,
        hash=version.content_hash,
        **({"variant_of_experiment": experiment.id, "weight": weight} if as_variant else {}),
    )
    if as_variant:
        arm = experiments.add_arm(session, experiment, version.id, weight, username, now)
        session.flush()
        _audit(
            session,
            username,
            "script.variant_live",
            f"script:{key}:v{number}",
            experiment=experiment.id,
            label=arm.label,
            weight=weight,
        )
    return approval


def _supersede_overlapping(
    session: Session,
    version: ScriptVersion,
    username: str,
    valid_from: datetime | None,
    valid_until: datetime | None,
    now: datetime,
) -> None:
    """A plain approval replaces the approved versions it overlaps, and ends an A/B test they were in."""
    key = version.script.key
    previous = session.execute(
        select(ScriptVersion, Approval)
        .join(Approval, Approval.version_id == ScriptVersion.id)
        .where(
            ScriptVersion.script_id == version.script_id,
            ScriptVersion.status == VersionStatus.APPROVED,
            Approval.decision == "approved",
        )
    ).all()
    experiment = experiments.running(session, version.script_id)
    for old_version, old_approval in previous:
        if _overlaps(old_approval, valid_from, valid_until):
            old_version.status = VersionStatus.SUPERSEDED
            _audit(
                session,
                username,
                "script.supersede",
                f"script:{key}:v{old_version.number}",
                by=version.number,
            )
            arm = experiments.live_variant(session, old_version.id)
            if arm is not None:
                experiments.end_arm(arm, VariantStatus.SUPERSEDED, now)
    if experiment is not None:
        settle_experiment(session, experiment, username, now, f"superseded by v{version.number}")


def _experiment_for_variant(
    session: Session, version: ScriptVersion, username: str, now: datetime
) -> ScriptExperiment:
    """The running experiment a new variant joins; the first variant starts one with the live version."""
    experiment = experiments.running(session, version.script_id)
    if experiment is not None:
        return experiment
    key = version.script.key
    live = _find_sendable(session, key, now)
    if isinstance(live, str):
        raise WorkflowError(
            f"{key} has no approved version live now to test against; approve v{version.number} plainly"
        )
    control = live.base[1]
    experiment = ScriptExperiment(
        script_id=version.script_id, running_script_id=version.script_id, started_at=now, started_by=username
    )
    session.add(experiment)
    experiments.add_arm(session, experiment, control.id, DEFAULT_WEIGHT, username, now)
    session.flush()
    _audit(
        session,
        username,
        "script.experiment_start",
        f"script:{key}",
        experiment=experiment.id,
        control=control.number,
        variant=version.number,
    )
    return experiment


def settle_experiment(
    session: Session, experiment: ScriptExperiment, username: str, now: datetime, outcome: str
) -> None:
    """End an experiment that has fewer than two live arms left (nothing is compared any more)."""
    session.flush()
    if len(experiments.live_arms(experiment)) >= 2:
        return
    experiments.end(experiment, username, now, outcome)
    script = session.get(Script, experiment.script_id)
    target = f"script:{script.key}" if script is not None else f"script#{experiment.script_id}"
    _audit(session, username, "script.experiment_end", target, experiment=experiment.id, outcome=outcome)


def reject(session: Session, key: str, number: int, username: str, reason: str) -> Approval:
    """Reject a submitted version with a reason the author will read."""
    forget_sendable(session)
    version = get_version(session, key, number)
    _reviewer(session, version, username, key)
    if not reason.strip():
        raise WorkflowError("a rejection needs a reason")
    decision = Approval(
        version_id=version.id,
        decision="rejected",
        reviewer=username,
        content_hash=version.content_hash,
        reason=reason,
    )
    session.add(decision)
    version.status = VersionStatus.REJECTED
    session.flush()
    _audit(session, username, "script.reject", f"script:{key}:v{number}", reason=reason)
    return decision


def retire(session: Session, key: str, number: int, username: str) -> ScriptVersion:
    """Withdraw an approved version from use (authors or compliance)."""
    forget_sendable(session)
    user = actor(session, username)
    if user.role not in AUTHOR_ROLES | {Role.COMPLIANCE}:
        raise PermissionDenied(f"{username} ({user.role}) may not retire scripts")
    version = get_version(session, key, number)
    if version.status not in (VersionStatus.APPROVED, VersionStatus.SUBMITTED):
        raise WorkflowError(f"{key} v{number} is {version.status}; nothing to retire")
    version.status = VersionStatus.RETIRED
    _audit(session, username, "script.retire", f"script:{key}:v{number}")
    arm = experiments.live_variant(session, version.id)
    if arm is not None:
        now = utcnow()
        experiments.end_arm(arm, VariantStatus.RETIRED, now)
        experiment = arm.experiment
        settle_experiment(session, experiment, username, now, f"v{number} retired")
    return version


_SENDABLE = "catalogue.sendable"  # session.info key: per-transaction memo of sendable()
_ASSIGNED = "catalogue.assigned"  # session.info key: (experiment id, lead id) -> stored variant id


@dataclass(frozen=True)
class Live:
    """What a script may send at one time: its version for everyone and, in an A/B test, the arms."""

    base: tuple[Script, ScriptVersion, Approval]
    experiment_id: int | None
    arms: tuple[Arm, ...]

    @property
    def testing(self) -> bool:
        """Whether leads are split between two or more arms now."""
        return self.experiment_id is not None and len(self.arms) >= 2


def forget_sendable(session: Session) -> None:
    """Drop what `sendable` remembered in this transaction (the catalogue is about to change)."""
    session.info.pop(_SENDABLE, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_sendable(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None or transaction.nested:  # not flush()'s inner transactions
        session.info.pop(_SENDABLE, None)
        session.info.pop(_ASSIGNED, None)


def live(session: Session, key: str, at: datetime) -> Live:
    """The script's sendable version at `at` and its live A/B arms; refuse when nothing is sendable.

    Answers are remembered for the rest of the transaction, so a batch of messages looks the
    approval up once; the catalogue's own changes (draft, submit, approve, reject, retire) forget them.
    """
    memo: dict[tuple[str, datetime], Live | str]
    memo = session.info.setdefault(_SENDABLE, {})
    found = memo.get((key, at))
    if found is None:
        found = memo[(key, at)] = _find_sendable(session, key, at)
    if isinstance(found, str):
        raise NotSendable(found)
    return found


def sendable(session: Session, key: str, at: datetime) -> tuple[Script, ScriptVersion, Approval]:
    """The newest approved version whose validity window contains `at`; refuse when there is none.

    During an A/B test this is the control (the arm live longest): what a recipient who is not a
    lead gets. Use `sendable_for` when the recipient is a lead.
    """
    return live(session, key, at).base


def sendable_for(
    session: Session, key: str, at: datetime, lead_id: int | None
) -> tuple[Script, ScriptVersion, Approval]:
    """The version this lead is sent: its sticky A/B arm during a test, else the sendable version.

    The first time, the lead is assigned an arm by a stable hash of experiment, script and lead
    weighted by the arms' weights, and the assignment is stored.
    """
    current = live(session, key, at)
    if lead_id is None or not current.testing:
        return current.base
    return _assign(session, key, current, [lead_id], at)[lead_id]


def sendable_for_many(
    session: Session, key: str, at: datetime, lead_ids: Iterable[int], *, store: bool = True
) -> dict[int, tuple[Script, ScriptVersion, Approval]]:
    """`sendable_for` for many leads: one query for stored arms, one insert for the new ones.

    Later `sendable_for` / `compose(lead_id=…)` calls in the same transaction reuse the answers.
    With `store=False` (a dry run) new leads get the arm they would get, and nothing is written.
    """
    current = live(session, key, at)
    wanted = list(dict.fromkeys(lead_ids))
    if not current.testing:
        return dict.fromkeys(wanted, current.base)
    return _assign(session, key, current, wanted, at, store=store)


def _assign(
    session: Session, key: str, current: Live, lead_ids: list[int], at: datetime, *, store: bool = True
) -> dict[int, tuple[Script, ScriptVersion, Approval]]:
    assert current.experiment_id is not None
    experiment = current.experiment_id
    known: dict[tuple[int, int], int] = session.info.setdefault(_ASSIGNED, {})
    memo = known if store else dict(known)  # a dry run's picks are not remembered as stored
    unknown = [lead for lead in lead_ids if (experiment, lead) not in memo]
    if unknown:
        for lead, variant in experiments.stored(session, experiment, unknown).items():
            memo[(experiment, lead)] = variant
        new_rows = []
        for lead in unknown:
            if (experiment, lead) in memo:
                continue
            arm = experiments.pick(current.arms, experiment, key, lead)
            if arm is None:  # every arm weighs 0: nobody new joins the test
                continue
            memo[(experiment, lead)] = arm.variant_id
            new_rows.append(
                {
                    "experiment_id": experiment,
                    "lead_id": lead,
                    "variant_id": arm.variant_id,
                    "assigned_at": at,
                }
            )
        if store:
            experiments.store(session, new_rows)
    arms = {arm.variant_id: arm for arm in current.arms}
    chosen: dict[int, tuple[Script, ScriptVersion, Approval]] = {}
    for lead in lead_ids:
        arm = arms.get(memo.get((experiment, lead), -1))
        if arm is None:  # its arm is not live now: the same hash picks among those that are
            arm = experiments.pick(current.arms, experiment, key, lead)
        chosen[lead] = arm.sendable if arm is not None else current.base
    return chosen


def _find_sendable(session: Session, key: str, at: datetime) -> Live | str:
    rows = session.execute(
        select(Script, ScriptVersion, Approval, ScriptVariant)
        .outerjoin(
            ScriptVersion,
            (ScriptVersion.script_id == Script.id) & (ScriptVersion.status == VersionStatus.APPROVED),
        )
        .outerjoin(Approval, (Approval.version_id == ScriptVersion.id) & (Approval.decision == "approved"))
        .outerjoin(
            ScriptVariant,
            (ScriptVariant.version_id == ScriptVersion.id) & (ScriptVariant.status == VariantStatus.LIVE),
        )
        .where(Script.key == key)
        .order_by(Approval.decided_at.desc(), Approval.id.desc())
    ).all()
    if not rows:
        return f"no script {key!r}: nothing can be sent under that key"
    valid = [
        (script, version, approval, arm)
        for script, version, approval, arm in rows
        if version is not None
        and approval is not None
        and not (approval.valid_from and at < approval.valid_from)
        and not (approval.valid_until and at >= approval.valid_until)
    ]
    if not valid:
        return f"no approved version of {key!r} is valid at {at.isoformat()}"
    first_arm = valid[0][3]
    # The newest valid approval decides; when it is an A/B arm, every valid arm of its test is live.
    chosen = (
        valid[:1]
        if first_arm is None
        else [row for row in valid if row[3] is not None and row[3].experiment_id == first_arm.experiment_id]
    )
    for _script, version, approval, _arm in chosen:
        if approval.content_hash != version.content_hash or version.content_hash != content_hash(
            version.body
        ):
            return f"{key} v{version.number} does not match its approval; refusing to send"
    if first_arm is None:
        script, version, approval, _ = valid[0]
        return Live((script, version, approval), None, ())
    arms = tuple(
        sorted(
            (
                Arm(arm.id, arm.label, arm.weight, (script, version, approval))
                for script, version, approval, arm in chosen
            ),
            key=lambda a: a.variant_id,
        )
    )
    return Live(arms[0].sendable, first_arm.experiment_id, arms)


def compose(
    session: Session,
    key: str,
    values: Mapping[str, Mapping[str, Any]],
    policy: LintPolicy,
    at: datetime | None = None,
    recipient: str = "",
    lead_id: int | None = None,
) -> Composed:
    """Render the sendable version with real values and lint the final text; a block raises and alerts.

    During an A/B test a lead (`lead_id`, or the lead whose WeCom id is `recipient`) gets its arm.
    """
    at = at or utcnow()
    current = live(session, key, at)
    if current.testing and lead_id is None and recipient:
        lead_id = session.scalar(select(Lead.id).where(Lead.external_user_id == recipient))
    return compose_sendable(session, sendable_for(session, key, at, lead_id), values, policy, at, recipient)


def compose_sendable(
    session: Session,
    chosen: tuple[Script, ScriptVersion, Approval],
    values: Mapping[str, Mapping[str, Any]],
    policy: LintPolicy,
    at: datetime,
    recipient: str = "",
) -> Composed:
    """`compose` for a version already resolved by `sendable` / `sendable_for(_many)`.

    For one text per A/B arm, e.g. a campaign that groups its recipients by the version they get.
    """
    script, version, approval = chosen
    key = script.key
    text = render(version.body, script.kind, values)
    result = lint(text, kind=script.kind, policy=policy)
    metrics.lint_verdict(result.verdict)
    if result.blocked:
        rules = sorted({f.rule_id for f in result.findings if f.severity == "block"})
        session.add(
            Alert(
                raised_at=at,
                kind="send.blocked",
                severity="critical",
                audience="both",
                message=f"{key} v{version.number} to {recipient or '(unknown)'} blocked: {', '.join(rules)}",
                detail={
                    "script": key,
                    "version": version.number,
                    "recipient": recipient,
                    "lint": result.to_dict(),
                },
            )
        )
        message = f"final text of {key} v{version.number} blocked by {', '.join(rules)}"
        raise MessageBlocked(message, result, text, version, approval)
    return Composed(text, script, version, approval, result)
