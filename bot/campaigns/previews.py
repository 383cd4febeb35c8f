"""Campaign dry runs as background jobs: requested in the console, run by a worker, read by any replica.

A request is a `CampaignPreview` row. A runner claims it (SKIP LOCKED on PostgreSQL; SQLite writes
one transaction at a time), runs the planner's dry run with a sink that stores each batch of
recipients together with the progress and a fresh lease, and at the end stores the counts, tasks
and rendered text. A runner that dies leaves its lease to lapse; the next claim drops the partial
rows and starts over, at most MAX_ATTEMPTS times. Of a campaign's previews only the newest
KEEP_PER_CAMPAIGN are kept: older finished ones are deleted with their recipients.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, or_, select
from sqlalchemy.orm import Session

from bot.campaigns.planner import (
    PLAN_BATCH_SIZE,
    Message,
    PlannedRecipient,
    RunPlan,
    TaskSummary,
    dry_run_campaign,
)
from bot.config import Settings
from bot.coordination import Coordinator
from bot.db import Database
from models.audit import AuditEntry
from models.base import utcnow
from models.bulk import insert_rows
from models.campaigns import Campaign
from models.previews import CampaignPreview, PreviewRecipient, PreviewStatus

log = logging.getLogger("wecom_bot.previews")

PREVIEW_CHANNEL = "previews"  # woken when a preview is requested
KEEP_PER_CAMPAIGN = 5  # newest previews kept per campaign (storage: at most this many audiences)
LEASE_S = 120.0  # renewed with every stored batch; a run silent this long is taken over
MAX_ATTEMPTS = 3  # runs that died before finishing; then the preview fails with the reason
EXPORT_BATCH = 5000  # recipients per read when exporting (one short transaction each)
UNFINISHED = (PreviewStatus.QUEUED, PreviewStatus.RUNNING)
FINISHED = (PreviewStatus.DONE, PreviewStatus.FAILED)


class PreviewError(ValueError):
    """A preview cannot be requested: unknown campaign or a time without a zone."""


class _Released(Exception):
    """This runner no longer holds the preview: another runner took it over."""


class _Stopping(_Released):
    """This process is stopping: the preview goes back to the queue."""


def request_preview(
    session: Session, campaign_key: str, occurrence: datetime, actor: str, now: datetime | None = None
) -> CampaignPreview:
    """Queue a dry run of one occurrence (audited); the same one still queued or running is reused.

    The caller commits, then wakes the runners on PREVIEW_CHANNEL.
    """
    if occurrence.tzinfo is None:
        raise PreviewError("occurrence: pass an aware datetime")
    campaign_id = session.scalar(select(Campaign.id).where(Campaign.key == campaign_key))
    if campaign_id is None:
        raise PreviewError(f"no campaign {campaign_key!r}")
    pending = session.scalars(
        select(CampaignPreview).where(
            CampaignPreview.campaign_id == campaign_id,
            CampaignPreview.occurrence == occurrence,
            CampaignPreview.status.in_(UNFINISHED),
        )
    ).first()
    if pending is not None:
        return pending
    now = now or utcnow()
    row = CampaignPreview(
        campaign_id=campaign_id,
        occurrence=occurrence,
        requested_by=actor,
        requested_at=now,
        status=PreviewStatus.QUEUED,
        progress=0,
        attempts=0,
        counts={},
        tasks=[],
    )
    session.add(row)
    session.flush()
    detail = {"preview": row.id, "occurrence": occurrence.astimezone(UTC).isoformat()}
    session.add(
        AuditEntry(
            at=now, actor=actor, action="campaign.preview", target=f"campaign:{campaign_key}", detail=detail
        )
    )
    return row


# --- reading -------------------------------------------------------------------------------------


def recent_previews(
    session: Session, campaign_id: int, limit: int = KEEP_PER_CAMPAIGN
) -> list[CampaignPreview]:
    """A campaign's newest previews, newest first."""
    stmt = (
        select(CampaignPreview)
        .where(CampaignPreview.campaign_id == campaign_id)
        .order_by(CampaignPreview.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def stored_plan(preview: CampaignPreview, campaign_key: str) -> RunPlan:
    """A finished preview as the plan `dry_run_campaign` returned (recipients are read separately)."""
    stored = dict(preview.message or {})
    variants = [Message(**v) for v in stored.pop("variants", [])]  # the arms of an A/B test, if any
    message = Message(**stored) if stored else None
    return RunPlan(
        campaign_key,
        preview.occurrence,
        None,
        preview.outcome or "",
        preview.reason,
        dry_run=True,
        message=message,
        counts=dict(preview.counts or {}),
        tasks=[TaskSummary(t["sender"], t["recipients"]) for t in preview.tasks or []],
        variants=variants,
        reason_code=preview.reason_code,
        reason_params=preview.reason_params,
    )


def _planned(row: PreviewRecipient) -> PlannedRecipient:
    return PlannedRecipient(
        row.lead_id, row.external_user_id, row.channel, row.skip_reason, row.sender, row.open_kfid
    )


def recipients_page(session: Session, preview_id: int, offset: int, limit: int) -> list[PlannedRecipient]:
    """One page of a preview's recipients in lead order (the primary key's order: an index walk)."""
    stmt = (
        select(PreviewRecipient)
        .where(PreviewRecipient.preview_id == preview_id)
        .order_by(PreviewRecipient.lead_id)
        .offset(offset)
        .limit(limit)
    )
    return [_planned(row) for row in session.scalars(stmt)]


def iter_recipients(db: Database, preview_id: int, batch: int = EXPORT_BATCH) -> Iterator[PlannedRecipient]:
    """Every recipient of a preview in lead order, read in keyset pages of `batch`, one transaction each.

    Memory stays at one page whatever the audience size, and no transaction stays open while the
    caller (a download to a slow client) consumes the rows.
    """
    after = -1
    while True:
        with db.read() as session:
            rows = list(
                session.scalars(
                    select(PreviewRecipient)
                    .where(PreviewRecipient.preview_id == preview_id, PreviewRecipient.lead_id > after)
                    .order_by(PreviewRecipient.lead_id)
                    .limit(batch)
                )
            )
            page = [_planned(row) for row in rows]
        yield from page
        if len(page) < batch:
            return
        after = page[-1].lead_id


# --- running -------------------------------------------------------------------------------------


def _due(now: datetime) -> ColumnElement[bool]:
    t = CampaignPreview
    return or_(
        t.status == PreviewStatus.QUEUED,
        and_(t.status == PreviewStatus.RUNNING, t.lease_until < now),
    )


class PreviewRunner:
    """Claims queued previews one at a time and runs them; several runners never run the same one."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        coordinator: Coordinator | None = None,
        worker_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        lease_s: float = LEASE_S,
        keep: int = KEEP_PER_CAMPAIGN,
        batch_size: int = PLAN_BATCH_SIZE,
        stop: threading.Event | None = None,
    ) -> None:
        """`stop`, once set, makes a running preview hand itself back to the queue at its next batch."""
        self.settings = settings
        self.db = db
        self.coordinator = coordinator
        self.worker_id = worker_id or f"preview:{socket.gethostname()}:{os.getpid()}"
        self.clock = clock
        self.lease = timedelta(seconds=lease_s)
        self.keep = keep
        self.batch_size = batch_size
        self.stop = stop

    def claim(self) -> int | None:
        """Lease the oldest queued preview, or one whose runner's lease lapsed; None if there is none."""
        now = self.clock()
        with self.db.read() as session:  # the idle poll takes no write lock (SQLite's is global)
            if session.scalar(select(CampaignPreview.id).where(_due(now)).limit(1)) is None:
                return None
        with self.db.transaction() as session:
            row = session.scalars(
                select(CampaignPreview)
                .where(_due(now))
                .order_by(CampaignPreview.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                return None
            row.status, row.locked_by = PreviewStatus.RUNNING, self.worker_id
            row.lease_until = now + self.lease
            row.attempts += 1
            row.started_at, row.progress, row.error = now, 0, None
            return row.id

    def _owned(self, session: Session, preview_id: int) -> CampaignPreview | None:
        """The preview, locked, if this runner still holds it."""
        row = session.get(CampaignPreview, preview_id, with_for_update=True)
        if row is None or row.status != PreviewStatus.RUNNING or row.locked_by != self.worker_id:
            return None
        return row

    def _begin(self, preview_id: int) -> tuple[str, datetime, int] | str:
        """Drop what an earlier attempt stored; the campaign to plan, or why there is nothing to run."""
        with self.db.transaction() as session:
            row = self._owned(session, preview_id)
            if row is None:
                return "lost-lease"
            session.execute(delete(PreviewRecipient).where(PreviewRecipient.preview_id == preview_id))
            if row.attempts > MAX_ATTEMPTS:
                self._close(row, PreviewStatus.FAILED)
                row.error = (
                    f"gave up after {MAX_ATTEMPTS} attempts: the runner stopped before finishing each time"
                )
                return PreviewStatus.FAILED
            key = session.scalar(select(Campaign.key).where(Campaign.id == row.campaign_id))
            assert key is not None
            return key, row.occurrence, row.campaign_id

    def _store(self, preview_id: int, batch: list[PlannedRecipient]) -> None:
        """One batch of recipients, the progress and a renewed lease, in one transaction."""
        if self.stop is not None and self.stop.is_set():
            raise _Stopping
        with self.db.transaction() as session:
            row = self._owned(session, preview_id)
            if row is None:
                raise _Released
            insert_rows(
                session,
                PreviewRecipient,
                [
                    {
                        "preview_id": preview_id,
                        "lead_id": r.lead_id,
                        "external_user_id": r.external_user_id,
                        "channel": r.channel,
                        "skip_reason": r.skip_reason,
                        "sender": r.sender,
                        "open_kfid": r.open_kfid,
                    }
                    for r in batch
                ],
            )
            row.progress += len(batch)
            row.lease_until = self.clock() + self.lease

    def _close(self, row: CampaignPreview, status: PreviewStatus) -> None:
        row.status, row.finished_at, row.lease_until, row.locked_by = status, self.clock(), None, None

    def _finish(self, preview_id: int, plan: RunPlan | None, error: str = "") -> bool:
        """Store the plan's verdict, counts, tasks and text (or the error); False if no longer ours."""
        with self.db.transaction() as session:
            row = self._owned(session, preview_id)
            if row is None:
                return False
            if plan is None:
                session.execute(delete(PreviewRecipient).where(PreviewRecipient.preview_id == preview_id))
                self._close(row, PreviewStatus.FAILED)
                row.error, row.progress = error[:2000], 0
                return True
            self._close(row, PreviewStatus.DONE)
            row.outcome, row.reason = plan.status, plan.reason
            row.reason_code, row.reason_params = plan.reason_code, plan.reason_params
            row.counts = plan.counts
            row.tasks = [asdict(t) for t in plan.tasks]
            row.message = (
                {**asdict(plan.message), "variants": [asdict(v) for v in plan.variants]}
                if plan.message is not None
                else None
            )
            return True

    def _release(self, preview_id: int) -> None:
        """Hand a preview back to the queue at once (this process is stopping): no attempt used."""
        with self.db.transaction() as session:
            row = self._owned(session, preview_id)
            if row is not None:
                row.status, row.lease_until, row.locked_by = PreviewStatus.QUEUED, None, None
                row.attempts -= 1

    def run(self, preview_id: int) -> str:
        """Run one claimed preview to its end; "done", "failed", "released" (stopping) or "lost-lease"."""
        begun = self._begin(preview_id)
        if not isinstance(begun, tuple):
            return begun
        key, occurrence, campaign_id = begun
        try:
            plan = dry_run_campaign(
                self.db,
                self.settings,
                key,
                occurrence,
                batch_size=self.batch_size,
                sink=lambda batch: self._store(preview_id, batch),
            )
        except _Stopping:
            self._release(preview_id)
            return "released"
        except _Released:
            log.warning("preview %s was taken over by another runner", preview_id)
            return "lost-lease"
        except Exception as exc:
            log.exception("preview %s failed", preview_id)
            status = PreviewStatus.FAILED
            finished = self._finish(preview_id, None, f"{type(exc).__name__}: {exc}")
        else:
            status = PreviewStatus.DONE
            finished = self._finish(preview_id, plan)
        self.expire(campaign_id)
        return status if finished else "lost-lease"

    def expire(self, campaign_id: int) -> int:
        """Delete the campaign's finished previews older than its newest `keep`; how many went."""
        with self.db.transaction() as session:
            newest = select(CampaignPreview.id).where(CampaignPreview.campaign_id == campaign_id)
            newest = newest.order_by(CampaignPreview.id.desc()).limit(self.keep)
            kept = set(session.scalars(newest))
            old = [
                preview_id
                for preview_id in session.scalars(
                    select(CampaignPreview.id).where(
                        CampaignPreview.campaign_id == campaign_id, CampaignPreview.status.in_(FINISHED)
                    )
                )
                if preview_id not in kept
            ]
            if old:
                session.execute(delete(PreviewRecipient).where(PreviewRecipient.preview_id.in_(old)))
                session.execute(delete(CampaignPreview).where(CampaignPreview.id.in_(old)))
        return len(old)

    def run_once(self) -> int | None:
        """Claim one preview and run it; its id, or None when nothing was due."""
        preview_id = self.claim()
        if preview_id is not None:
            self.run(preview_id)
        return preview_id

    def run_forever(self, stop: threading.Event) -> None:
        """Run previews as they are requested (woken on PREVIEW_CHANNEL), polling as a safety net."""
        self.stop = stop
        log.info("preview runner %s started", self.worker_id)
        try:
            if self.coordinator is not None:
                self.coordinator.wait(PREVIEW_CHANNEL, 0)  # subscribe before the first claim
        except Exception:
            log.exception("preview wake-up channel unavailable; polling")
        while not stop.is_set():
            try:
                if self.run_once() is not None:
                    continue
            except Exception:
                log.exception("preview round failed; retrying shortly")
            self._idle(stop)
        log.info("preview runner %s stopped", self.worker_id)

    def _idle(self, stop: threading.Event) -> None:
        """Wait for a wake-up, at most the worker's idle poll, in half-second slices to notice a stop."""
        waited, poll = 0.0, self.settings.worker.idle_poll_s
        while not stop.is_set() and waited < poll:
            try:
                if self.coordinator is not None and self.coordinator.wait(PREVIEW_CHANNEL, 0.5):
                    return
                if self.coordinator is None:
                    stop.wait(0.5)
            except Exception:
                stop.wait(0.5)
            waited += 0.5


_running: set[int] = set()
_running_lock = threading.Lock()


def start_runner(
    settings: Settings, db: Database, coordinator: Coordinator, stop: threading.Event
) -> threading.Thread | None:
    """Start this process's preview runner until `stop` is set; None if it already runs.

    Every event-worker thread of a process calls this; one runner per process is enough (a preview
    is long, heavy work) and several processes share the queue safely.
    """
    with _running_lock:
        if id(stop) in _running:
            return None
        _running.add(id(stop))

    def _run() -> None:
        try:
            PreviewRunner(settings, db, coordinator).run_forever(stop)
        finally:
            with _running_lock:
                _running.discard(id(stop))

    thread = threading.Thread(target=_run, name="previews", daemon=True)
    thread.start()
    return thread
