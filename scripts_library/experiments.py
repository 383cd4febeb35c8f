"""A/B arms of a script: which approved versions are live side by side, and which one each lead gets.

The pick is a pure function of (experiment, script key, lead) and the arms' weights, so every
replica picks alike; the first pick is stored and stays the lead's arm while that arm is live.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.bulk import conflict_insert
from models.scripts import Approval, Script, ScriptVersion
from models.variants import (
    ExperimentStatus,
    ScriptExperiment,
    ScriptVariant,
    VariantAssignment,
    VariantStatus,
)

DEFAULT_WEIGHT = 50
MAX_WEIGHT = 1000
LOOKUP_CHUNK = 1000  # leads per IN (...) list: far below either database's parameter limit

Sendable = tuple[Script, ScriptVersion, Approval]


@dataclass(frozen=True)
class Arm:
    """A live variant that may be sent now: its approved version and its weight for new leads."""

    variant_id: int
    label: str
    weight: int
    sendable: Sendable


def bucket(experiment_id: int, script_key: str, lead_id: int) -> int:
    """A stable 64-bit number for a lead in an experiment (SHA-256, the same on every replica)."""
    digest = hashlib.sha256(f"{experiment_id}:{script_key}:{lead_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def pick(arms: Sequence[Arm], experiment_id: int, script_key: str, lead_id: int) -> Arm | None:
    """The arm a lead falls into by weight (arms in the order they went live); None if all weigh 0."""
    ordered = sorted(arms, key=lambda arm: arm.variant_id)
    total = sum(arm.weight for arm in ordered)
    if total <= 0:
        return None
    point = bucket(experiment_id, script_key, lead_id) % total
    for arm in ordered:
        if point < arm.weight:
            return arm
        point -= arm.weight
    raise AssertionError("unreachable: point < total")


def running(session: Session, script_id: int) -> ScriptExperiment | None:
    """The script's running experiment, if any."""
    return session.scalars(
        select(ScriptExperiment).where(ScriptExperiment.running_script_id == script_id)
    ).first()


def live_variant(session: Session, version_id: int) -> ScriptVariant | None:
    """The live arm a version is, if it is one."""
    return session.scalars(
        select(ScriptVariant).where(
            ScriptVariant.version_id == version_id, ScriptVariant.status == VariantStatus.LIVE
        )
    ).first()


def next_label(experiment: ScriptExperiment) -> str:
    """A, B, C… for the next arm; past Z, numbered."""
    n = len(experiment.variants)
    return chr(ord("A") + n) if n < 26 else f"V{n + 1}"


def add_arm(
    session: Session, experiment: ScriptExperiment, version_id: int, weight: int, username: str, now: datetime
) -> ScriptVariant:
    """Put a version live in the experiment with its weight."""
    arm = ScriptVariant(
        experiment=experiment,
        version_id=version_id,
        label=next_label(experiment),
        weight=weight,
        status=VariantStatus.LIVE,
        added_at=now,
        added_by=username,
    )
    session.add(arm)
    return arm


def end_arm(arm: ScriptVariant, status: VariantStatus, now: datetime) -> None:
    """Take an arm out of the experiment."""
    arm.status = status
    arm.ended_at = now


def live_arms(experiment: ScriptExperiment) -> list[ScriptVariant]:
    """The experiment's arms still live, in the order they went live."""
    return [arm for arm in experiment.variants if arm.status == VariantStatus.LIVE]


def end(experiment: ScriptExperiment, username: str, now: datetime, outcome: str) -> None:
    """Close the experiment; a last live arm simply stays the approved version."""
    for arm in live_arms(experiment):
        end_arm(arm, VariantStatus.ENDED, now)
    experiment.status = ExperimentStatus.ENDED
    experiment.running_script_id = None
    experiment.ended_at = now
    experiment.ended_by = username
    experiment.outcome = outcome


def stored(session: Session, experiment_id: int, lead_ids: Iterable[int]) -> dict[int, int]:
    """Stored arms (variant ids) of those leads that have one, in one query per thousand leads."""
    wanted = sorted(set(lead_ids))
    found: dict[int, int] = {}
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        rows = session.execute(
            select(VariantAssignment.lead_id, VariantAssignment.variant_id).where(
                VariantAssignment.experiment_id == experiment_id, VariantAssignment.lead_id.in_(chunk)
            )
        )
        found.update((int(lead), int(variant)) for lead, variant in rows)
    return found


def store(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert new assignments in one statement; a replica that stored the same lead first wins.

    Both replicas computed the same arm from the same hash, so skipping the conflict loses nothing.
    """
    if not rows:
        return
    stmt = conflict_insert(session, VariantAssignment).on_conflict_do_nothing(
        index_elements=["experiment_id", "lead_id"]
    )
    session.execute(stmt, list(rows))
