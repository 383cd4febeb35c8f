"""Running an A/B test of a script: weights, promoting the winner, and each arm's numbers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.base import utcnow
from models.scripts import ScriptVersion, VersionStatus
from models.users import Role
from models.variants import ScriptExperiment, ScriptVariant, VariantAssignment, VariantStatus
from scripts_library import catalogue as cat
from scripts_library import experiments
from scripts_library.experiments import MAX_WEIGHT
from scripts_library.performance import ScriptPerformance, script_performance

MANAGERS = cat.AUTHOR_ROLES | {Role.COMPLIANCE}


@dataclass(frozen=True)
class ArmReport:
    """One arm of an experiment: its version, weight, status, leads assigned and what its sends led to."""

    variant: ScriptVariant
    version: ScriptVersion
    assigned: int
    share: float  # of the live arms' total weight, in percent (0 for arms no longer live)
    numbers: ScriptPerformance


@dataclass(frozen=True)
class ExperimentReport:
    """An experiment with every arm it had."""

    experiment: ScriptExperiment
    arms: list[ArmReport]


def _manager(session: Session, username: str, what: str) -> None:
    user = cat.actor(session, username)
    if user.role not in MANAGERS:
        raise cat.PermissionDenied(f"{username} ({user.role}) may not {what}")


def _live_arm(session: Session, key: str, number: int) -> tuple[ScriptVersion, ScriptVariant]:
    version = cat.get_version(session, key, number)
    arm = experiments.live_variant(session, version.id)
    if arm is None:
        raise cat.WorkflowError(f"{key} v{number} is not a live variant of a running A/B test")
    return version, arm


def set_weight(session: Session, key: str, number: int, weight: int, username: str) -> ScriptVariant:
    """Change a live variant's share of new leads (leads already assigned keep their arm)."""
    _manager(session, username, "change A/B weights")
    if not 0 <= weight <= MAX_WEIGHT:
        raise cat.WorkflowError(f"a weight is 0-{MAX_WEIGHT}")
    cat.forget_sendable(session)
    _version, arm = _live_arm(session, key, number)
    others = sum(a.weight for a in experiments.live_arms(arm.experiment) if a.id != arm.id)
    if others + weight <= 0:
        raise cat.WorkflowError("at least one live variant needs a weight above 0")
    old, arm.weight = arm.weight, weight
    cat._audit(
        session,
        username,
        "script.variant_weight",
        f"script:{key}:v{number}",
        experiment=arm.experiment_id,
        old=old,
        new=weight,
    )
    return arm


def promote(session: Session, key: str, number: int, username: str) -> ScriptExperiment:
    """End the test with this variant as the script's only approved version; the others are superseded."""
    _manager(session, username, "end A/B tests")
    cat.forget_sendable(session)
    version, arm = _live_arm(session, key, number)
    experiment = arm.experiment
    now = utcnow()
    for other in experiments.live_arms(experiment):
        if other.id == arm.id:
            continue
        experiments.end_arm(other, VariantStatus.SUPERSEDED, now)
        loser = session.get(ScriptVersion, other.version_id)
        assert loser is not None
        if loser.status == VersionStatus.APPROVED:
            loser.status = VersionStatus.SUPERSEDED
        cat._audit(session, username, "script.supersede", f"script:{key}:v{loser.number}", by=number)
    experiments.end_arm(arm, VariantStatus.PROMOTED, now)
    cat._audit(
        session, username, "script.variant_promote", f"script:{key}:v{number}", experiment=experiment.id
    )
    cat.settle_experiment(session, experiment, username, now, f"v{version.number} promoted")
    return experiment


def retire_variant(session: Session, key: str, number: int, username: str) -> ScriptVersion:
    """Withdraw one live variant; with one arm left the test ends and that arm stays approved."""
    _live_arm(session, key, number)
    return cat.retire(session, key, number, username)


def report(session: Session, key: str, now: datetime | None = None) -> list[ExperimentReport]:
    """Every A/B test of a script, newest first, with each arm's assigned leads and numbers.

    An arm's numbers count the messages of its version sent while it was live (the control's sends
    before the test are not compared).
    """
    now = now or utcnow()
    script = cat.get_script(session, key)
    found = list(
        session.scalars(
            select(ScriptExperiment)
            .where(ScriptExperiment.script_id == script.id)
            .order_by(ScriptExperiment.id.desc())
        )
    )
    if not found:
        return []
    assigned: dict[int, int] = {
        variant: count
        for variant, count in session.execute(
            select(VariantAssignment.variant_id, func.count(VariantAssignment.id))
            .where(VariantAssignment.experiment_id.in_([e.id for e in found]))
            .group_by(VariantAssignment.variant_id)
        )
    }
    versions = {
        v.id: v for v in session.scalars(select(ScriptVersion).where(ScriptVersion.script_id == script.id))
    }
    reports = []
    for experiment in found:
        live_total = sum(a.weight for a in experiments.live_arms(experiment))
        arms = []
        for arm in experiment.variants:
            version = versions[arm.version_id]
            until = arm.ended_at or now
            numbers = script_performance(session, arm.added_at, until, script_key=key, version=version.number)
            share = (
                100.0 * arm.weight / live_total if arm.status == VariantStatus.LIVE and live_total else 0.0
            )
            arms.append(
                ArmReport(
                    arm,
                    version,
                    int(assigned.get(arm.id, 0)),
                    round(share, 1),
                    numbers[0] if numbers else ScriptPerformance.empty(key, version.number),
                )
            )
        reports.append(ExperimentReport(experiment, arms))
    return reports


def live_variant_ids(session: Session) -> dict[int, ScriptVariant]:
    """Live arms by version id (for marking versions in lists)."""
    rows = session.scalars(select(ScriptVariant).where(ScriptVariant.status == VariantStatus.LIVE))
    return {arm.version_id: arm for arm in rows}
