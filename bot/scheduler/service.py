"""The campaign scheduler: the leader turns campaign rows into APScheduler jobs and due occurrences into runs.

Exactly one process leads (see leader.py); only the leader runs a BackgroundScheduler. Every
`reconcile_s` it reconciles the jobs with the database: one job `campaign:{id}` per active or paused
campaign, a DateTrigger at the campaign's next occurrence still to run (added, replaced or removed
so the jobs match the rows exactly, with replace_existing=True). When a job fires the leader creates
the CampaignRun row for that occurrence and hands its id to the planner; then it schedules the next
occurrence. The unique key (campaign, occurrence) is what makes this exactly-once: a restart, a
former leader that has not noticed it lost the lock, or a second scheduler with its own in-process
lock all hit the same row, and an IntegrityError there means "already created".

Decisions, each tested:

- Paused campaigns keep their jobs; their occurrences get a run row with status skipped and reason
  "campaign paused", so operators see what was not sent, and nothing is planned.
- Misfires are handled here, not by APScheduler (its own grace check is off, so no occurrence is
  ever dropped silently): an occurrence found at most `misfire_grace_s` late runs late; later than
  that its run row is created as skipped ("missed: scheduler was not running at …") with an Alert.
- Catch-up: the next occurrence a campaign's job is set to is the first one after the campaign's
  last run that is no older than `lookback_h` and not before the campaign was created or last
  changed (a change takes effect from then on, so editing or un-archiving a campaign never
  produces "missed" runs for times it did not yet describe). A leader that has just started or taken
  over therefore works through the occurrences it missed one by one, each judged by the grace rule.
- Pending runs without a planner result (the process died between creating and planning a run)
  are handed to the planner again on each reconcile, once older than one lock TTL and no older
  than the look-back, with a back-off per run; the planner is idempotent by run id.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.coordination.base import Coordinator
from bot.db import Database
from bot.handoff.sla import default_handoff_sweep
from bot.scheduler.leader import Leadership
from bot.scheduler.occurrences import Schedule, ScheduleError, is_occurrence, next_occurrence
from bot.trading_calendar import SHANGHAI, TradingCalendar
from models.alerts import Alert
from models.base import utcnow
from models.campaigns import Campaign, CampaignRun, CampaignStatus, Course, RunStatus, ScheduleKind

log = logging.getLogger("wecom_bot.scheduler")

CAMPAIGN_JOB_PREFIX = "campaign:"
PLAN_JOB_PREFIX = "plan:"
PAUSED_REASON = "campaign paused"
MISSED_ALERT_KIND = "campaign_run_missed"
MAX_PLAN_BACKOFF = timedelta(hours=1)
_SCHEDULED = (CampaignStatus.ACTIVE, CampaignStatus.PAUSED)


class NotLeader(RuntimeError):
    """Only the leading scheduler keeps jobs; this one is standing by."""


def campaign_job_id(campaign_id: int) -> str:
    """The job id of a campaign's next occurrence (one job per campaign)."""
    return f"{CAMPAIGN_JOB_PREFIX}{campaign_id}"


def plan_job_id(run_id: int) -> str:
    """The job id that hands one run to the planner."""
    return f"{PLAN_JOB_PREFIX}{run_id}"


def missed_reason(occurrence: datetime) -> str:
    """The reason recorded on a run whose occurrence was found too late to send."""
    return (
        f"missed: scheduler was not running at {occurrence.astimezone(SHANGHAI):%Y-%m-%d %H:%M} Asia/Shanghai"
    )


def default_instance_id() -> str:
    """A name for this scheduler process, recorded as created_by on the runs it creates."""
    return f"scheduler@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:4]}"[:128]


def default_planner(
    db: Database, settings: Settings, coordinator: Coordinator | None = None
) -> Callable[[int], None]:
    """Hand each run to the run planner, which wakes the senders once the run is planned."""
    from bot.campaigns.planner import plan_run

    def plan(run_id: int) -> None:
        plan_run(db, settings, run_id, coordinator=coordinator)

    return plan


@dataclass(frozen=True)
class FireResult:
    """The run of one fired occurrence; created is False when it already existed."""

    run_id: int
    status: str
    created: bool


@dataclass
class ReconcileReport:
    """What one reconciliation changed, and the campaign jobs it left (job id → occurrence)."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    jobs: dict[str, datetime] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether any job was added, replaced or removed."""
        return bool(self.added or self.replaced or self.removed)


class SchedulerService:
    """Leader election plus, while leading, an APScheduler kept in step with the campaign rows."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        coordinator: Coordinator,
        plan: Callable[[int], None],
        *,
        instance_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        run_jobs: bool = True,
        handoff_sweep: Callable[[datetime], object] | None = None,
    ) -> None:
        self.config = settings.scheduler
        self.db = db
        self.plan = plan
        self.instance_id = instance_id or default_instance_id()
        self.leadership = Leadership(coordinator, self.config.lock_ttl_s)
        self._clock = clock
        # False: jobs are reconciled into a paused scheduler and never fire by themselves
        # (the caller runs them), for driving the scheduler on a controlled clock.
        self._run_jobs = run_jobs
        self._lock = threading.RLock()
        self._scheduler: BackgroundScheduler | None = None
        self._planning: set[int] = set()
        self._handoffs: dict[int, tuple[int, datetime]] = {}  # run id → (hand-offs, not before)
        self._next_reconcile = 0.0
        self._warned: set[tuple[int, str]] = set()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # Handoff SLA: time-outs, waiting leads, WeCom calls; run by the leader on every tick.
        self._handoff_sweep = handoff_sweep or default_handoff_sweep(settings, db, coordinator)

    # --- leadership ---------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """Whether this scheduler leads (and so keeps jobs) right now."""
        return self.leadership.is_leader

    @property
    def scheduler(self) -> BackgroundScheduler | None:
        """The APScheduler instance while leading, else None."""
        return self._scheduler

    @property
    def tick_s(self) -> float:
        """How often the control loop renews or tries the lock and checks whether to reconcile."""
        return min(self.config.renew_s, self.config.reconcile_s)

    def tick(self) -> bool:
        """One control step: keep or try for leadership, start or stop jobs to match, reconcile when due."""
        leading = self._scheduler is not None
        ok = self.leadership.renew() if leading else self.leadership.try_lead()
        if ok and not leading:
            log.info("scheduler %s: now the leader; scheduling campaigns", self.instance_id)
            self._start_scheduling()
        elif leading and not ok:
            log.warning("scheduler %s: lost leadership; stopped scheduling", self.instance_id)
            self._stop_scheduling()
        if ok and time.monotonic() >= self._next_reconcile:
            try:
                self.reconcile()
                self.sweep_pending()
            except Exception:
                log.exception("scheduler %s: reconciliation failed; retrying next round", self.instance_id)
            self._next_reconcile = time.monotonic() + self.config.reconcile_s
        if ok:
            self.sweep_handoffs()
        return ok

    def sweep_handoffs(self, now: datetime | None = None) -> None:
        """Time out unanswered handoff offers, offer waiting leads and make due WeCom calls; never raises."""
        try:
            self._handoff_sweep(now or self._clock())
        except Exception:
            log.exception("scheduler %s: handoff sweep failed; retrying next tick", self.instance_id)

    def run_forever(self, stop: threading.Event) -> None:
        """Stand by or lead until `stop` is set, then stop scheduling and release leadership."""
        log.info("scheduler %s: started; standing by for leadership", self.instance_id)
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:
                    log.exception("scheduler %s: control step failed", self.instance_id)
                stop.wait(self.tick_s)
        finally:
            self.shutdown()

    def start(self) -> SchedulerService:
        """Run the control loop in a background thread (stop() ends it)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever, args=(self._stop,), name=f"scheduler-{self.instance_id}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the background control loop started by start(); leadership is released."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def shutdown(self) -> None:
        """Stop scheduling and give leadership up so a standby takes over at once."""
        was_leading = self._scheduler is not None
        self._stop_scheduling()
        self.leadership.release()
        if was_leading:
            log.info("scheduler %s: released leadership", self.instance_id)

    def _start_scheduling(self) -> None:
        with self._lock:
            if self._scheduler is not None:
                return
            scheduler = BackgroundScheduler(
                timezone=UTC,
                executors={"default": ThreadPoolExecutor(4), "planner": ThreadPoolExecutor(1)},
                # Lateness is judged in fire(); APScheduler must never drop a late job itself.
                job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            )
            scheduler.start(paused=not self._run_jobs)
            self._scheduler = scheduler
            self._next_reconcile = 0.0

    def _stop_scheduling(self) -> None:
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
            if scheduler is None:
                return
            for job in scheduler.get_jobs():
                if job.id.startswith(PLAN_JOB_PREFIX):  # never to run here; the next leader sweeps it
                    self._planning.discard(job.args[0])
            scheduler.shutdown(wait=False)  # a plan already under way finishes

    def _require_scheduler(self) -> BackgroundScheduler:
        scheduler = self._scheduler
        if scheduler is None:
            raise NotLeader(f"scheduler {self.instance_id} is not the leader")
        return scheduler

    # --- reconciliation -----------------------------------------------------------------------

    def jobs(self) -> dict[str, datetime]:
        """The jobs held now, job id → run time (empty when not leading)."""
        scheduler = self._scheduler
        if scheduler is None:
            return {}
        return {job.id: job.next_run_time for job in scheduler.get_jobs()}

    def next_occurrences(self, now: datetime | None = None) -> dict[int, datetime]:
        """Each scheduled campaign's next occurrence still to run (possibly already due), by campaign id."""
        now = now or self._clock()
        lookback = timedelta(hours=self.config.lookback_h)
        with self.db.read() as session:
            campaigns = list(session.scalars(select(Campaign).where(Campaign.status.in_(_SCHEDULED))))
            if not campaigns:
                return {}
            ids = [c.id for c in campaigns]
            courses = self._courses(session, campaigns)
            last_runs: dict[int, datetime] = {
                campaign_id: last
                for campaign_id, last in session.execute(
                    select(CampaignRun.campaign_id, func.max(CampaignRun.occurrence))
                    .where(CampaignRun.campaign_id.in_(ids))
                    .group_by(CampaignRun.campaign_id)
                )
            }
            calendar = self._calendar_if_needed(session, campaigns)
        found: dict[int, datetime] = {}
        for campaign in campaigns:
            schedule = self._schedule(campaign, courses.get(campaign.course_id or 0))
            if schedule is None:
                continue
            start = max(now - lookback, campaign.created_at, campaign.updated_at)
            last = last_runs.get(campaign.id)
            if last is not None:
                start = max(start, last + timedelta(microseconds=1))
            occurrence = next_occurrence(schedule, start, calendar)
            if occurrence is not None:
                found[campaign.id] = occurrence
        return found

    def reconcile(self, now: datetime | None = None) -> ReconcileReport:
        """Add, replace and remove campaign jobs so they match the campaign rows exactly."""
        now = now or self._clock()
        report = ReconcileReport()
        with self._lock:
            scheduler = self._require_scheduler()
            desired = {campaign_job_id(cid): (cid, at) for cid, at in self.next_occurrences(now).items()}
            existing = {job.id: job for job in scheduler.get_jobs() if job.id.startswith(CAMPAIGN_JOB_PREFIX)}
            for job_id, (campaign_id, occurrence) in sorted(desired.items()):
                current = existing.get(job_id)
                if current is not None and tuple(current.args) == (campaign_id, occurrence):
                    continue
                self._add_campaign_job(scheduler, campaign_id, occurrence)
                (report.added if current is None else report.replaced).append(job_id)
            for job_id in sorted(existing.keys() - desired.keys()):
                scheduler.remove_job(job_id)
                report.removed.append(job_id)
            report.jobs = {job_id: at for job_id, (_, at) in desired.items()}
        if report.changed:
            log.info(
                "scheduler %s: jobs reconciled: added %s, replaced %s, removed %s",
                self.instance_id,
                report.added or "-",
                report.replaced or "-",
                report.removed or "-",
            )
        return report

    def _add_campaign_job(self, scheduler: BackgroundScheduler, campaign_id: int, at: datetime) -> None:
        scheduler.add_job(
            self.run_occurrence,
            trigger=DateTrigger(run_date=at, timezone=UTC),
            args=(campaign_id, at),
            id=campaign_job_id(campaign_id),
            name=f"campaign {campaign_id} at {at.astimezone(SHANGHAI):%Y-%m-%d %H:%M} Asia/Shanghai",
            replace_existing=True,
        )

    def _courses(self, session: Session, campaigns: list[Campaign]) -> dict[int, Course]:
        course_ids = {c.course_id for c in campaigns if c.course_id is not None}
        if not course_ids:
            return {}
        return {c.id: c for c in session.scalars(select(Course).where(Course.id.in_(course_ids)))}

    def _calendar_if_needed(self, session: Session, campaigns: list[Campaign]) -> TradingCalendar | None:
        # The exchange data takes about a second to load the first time; only trading-day schedules need it.
        if any(c.schedule_kind == ScheduleKind.TRADING_DAYS for c in campaigns):
            return TradingCalendar.load(session)
        return None

    def _schedule(self, campaign: Campaign, course: Course | None) -> Schedule | None:
        try:
            return Schedule.of(campaign, course)
        except ScheduleError as exc:
            key = (campaign.id, str(exc))
            if key not in self._warned:  # once per problem, not every reconciliation
                self._warned.add(key)
                log.warning("campaign %s (%s) not scheduled: %s", campaign.id, campaign.key, exc)
            return None

    # --- firing -------------------------------------------------------------------------------

    def run_occurrence(self, campaign_id: int, occurrence: datetime) -> FireResult | None:
        """The job body: create the occurrence's run, schedule the campaign's next one, hand the run over."""
        if not self.leadership.is_leader:
            log.warning(
                "scheduler %s: not the leader; campaign %s at %s left to the leader",
                self.instance_id,
                campaign_id,
                occurrence.isoformat(),
            )
            return None
        with self._lock:
            result = self.fire(campaign_id, occurrence)
            if self._scheduler is not None:
                self.reconcile()
        if result is not None and result.created and result.status == RunStatus.PENDING:
            self.hand_to_planner(result.run_id)
        return result

    def fire(self, campaign_id: int, occurrence: datetime, now: datetime | None = None) -> FireResult | None:
        """Create the run of one occurrence (pending, or skipped when paused or missed); None if not one."""
        now = now or self._clock()
        grace = timedelta(seconds=self.config.misfire_grace_s)
        try:
            with self.db.transaction() as session:
                campaign = session.get(Campaign, campaign_id)
                if campaign is None or campaign.status not in _SCHEDULED:
                    log.info("campaign %s is no longer scheduled; occurrence dropped", campaign_id)
                    return None
                course = session.get(Course, campaign.course_id) if campaign.course_id is not None else None
                schedule = self._schedule(campaign, course)
                if schedule is None:
                    return None
                calendar = self._calendar_if_needed(session, [campaign])
                if not is_occurrence(schedule, occurrence, calendar):
                    log.info(
                        "campaign %s: %s is no longer one of its occurrences (schedule or calendar changed)",
                        campaign.key,
                        occurrence.isoformat(),
                    )
                    return None
                late = now - occurrence
                status, reason, missed = RunStatus.PENDING, None, False
                code: str | None = None
                if campaign.status == CampaignStatus.PAUSED:
                    status, reason = RunStatus.SKIPPED, PAUSED_REASON
                    code = "campaign_paused"
                elif late > grace:
                    status, reason, missed = RunStatus.SKIPPED, missed_reason(occurrence), True
                    code = "missed"
                run = CampaignRun(
                    campaign_id=campaign.id,
                    occurrence=occurrence,
                    status=status,
                    reason=reason,
                    reason_code=code,
                    reason_params={"at": occurrence.isoformat()} if missed else None,
                    created_by=self.instance_id,
                    created_at=now,
                )
                session.add(run)
                session.flush()  # the unique key decides here
                if missed:
                    session.add(self._missed_alert(campaign, run, late, now))
                result = FireResult(run.id, status, created=True)
        except IntegrityError:
            with self.db.read() as session:
                existing = session.scalars(
                    select(CampaignRun).where(
                        CampaignRun.campaign_id == campaign_id, CampaignRun.occurrence == occurrence
                    )
                ).first()
            if existing is None:
                raise
            log.info(
                "campaign %s at %s: run %s already created by %s",
                campaign_id,
                occurrence.isoformat(),
                existing.id,
                existing.created_by,
            )
            return FireResult(existing.id, existing.status, created=False)
        if status == RunStatus.PENDING:
            log.info("campaign %s at %s: run %s created", campaign_id, occurrence.isoformat(), result.run_id)
        else:
            log.warning(
                "campaign %s at %s: run %s skipped: %s",
                campaign_id,
                occurrence.isoformat(),
                result.run_id,
                reason,
            )
        return result

    def _missed_alert(self, campaign: Campaign, run: CampaignRun, late: timedelta, now: datetime) -> Alert:
        at = run.occurrence.astimezone(SHANGHAI)
        return Alert(
            raised_at=now,
            kind=MISSED_ALERT_KIND,
            severity="warning",
            audience="operator",
            message=(
                f"Campaign {campaign.key!r} ({campaign.name}) did not send at {at:%Y-%m-%d %H:%M}"
                f" Asia/Shanghai: no scheduler was running then, and the occurrence was found"
                f" {int(late.total_seconds() // 60)} min late, past the {self.config.misfire_grace_s} s"
                " grace. Nothing was sent for it."
            ),
            detail={
                "campaign_id": campaign.id,
                "campaign_key": campaign.key,
                "run_id": run.id,
                "occurrence": run.occurrence.isoformat(),
                "late_s": int(late.total_seconds()),
                "scheduler": self.instance_id,
            },
        )

    # --- planning -----------------------------------------------------------------------------

    def hand_to_planner(self, run_id: int, now: datetime | None = None) -> bool:
        """Queue a pending run for the planner (one at a time, never twice at once); False if not queued."""
        now = now or self._clock()
        with self._lock:
            scheduler = self._scheduler
            if scheduler is None or run_id in self._planning:
                return False
            attempts = self._handoffs.get(run_id, (0, now))[0] + 1
            backoff = min(
                MAX_PLAN_BACKOFF,
                timedelta(seconds=max(self.config.reconcile_s, self.config.lock_ttl_s) * 2 ** (attempts - 1)),
            )
            self._handoffs[run_id] = (attempts, now + backoff)
            self._planning.add(run_id)
            scheduler.add_job(
                self.plan_now,
                trigger=DateTrigger(run_date=now, timezone=UTC),
                args=(run_id,),
                id=plan_job_id(run_id),
                name=f"plan run {run_id}",
                executor="planner",
                replace_existing=True,
            )
        return True

    def plan_now(self, run_id: int) -> None:
        """Hand one run to the planner; a failure leaves the run pending for a later sweep."""
        try:
            if not self.leadership.is_leader:
                log.warning(
                    "scheduler %s: not the leader; run %s left to the leader", self.instance_id, run_id
                )
                return
            self.plan(run_id)
        except Exception:
            log.exception("planning run %s failed; it stays pending and is handed over again later", run_id)
        finally:
            with self._lock:
                self._planning.discard(run_id)

    def sweep_pending(self, now: datetime | None = None) -> list[int]:
        """Hand due pending runs (created but never planned) to the planner again; return their ids."""
        now = now or self._clock()
        settled_before = now - timedelta(seconds=self.config.lock_ttl_s)
        oldest = now - timedelta(hours=self.config.lookback_h)
        with self.db.read() as session:
            rows = session.execute(
                select(CampaignRun.id, CampaignRun.created_at)
                .where(
                    CampaignRun.status == RunStatus.PENDING,
                    CampaignRun.occurrence <= now,
                    CampaignRun.occurrence >= oldest,
                )
                .order_by(CampaignRun.occurrence, CampaignRun.id)
            ).all()
        handed = []
        with self._lock:
            pending = {run_id for run_id, _ in rows}
            for run_id in list(self._handoffs):
                if run_id not in pending and run_id not in self._planning:
                    del self._handoffs[run_id]
            for run_id, created_at in rows:
                if created_at > settled_before:
                    continue  # its creator may be planning it right now
                not_before = self._handoffs.get(run_id, (0, now))[1]
                if now < not_before:
                    continue
                if self.hand_to_planner(run_id, now):
                    handed.append(run_id)
        if handed:
            log.info("scheduler %s: pending runs handed to the planner again: %s", self.instance_id, handed)
        return handed
