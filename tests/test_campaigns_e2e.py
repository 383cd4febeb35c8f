"""Campaigns end to end against the simulator: the scheduler, planner and senders left running on a clock.

Every part reads one controlled clock (the scheduler, planner, worker, kf syncer, delivery and
mass-send dispatchers), so a fortnight passes in a few seconds. The simulator keeps real time:
WeCom's own windows are judged there in seconds, ours on the controlled clock. Rows that the inbox
stamps with the database's wall clock (callbacks and pulled kf messages) are re-stamped with the
controlled time as they arrive, as if they had arrived then.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from bot.campaigns.catalog import (
    Schedule,
    course_campaigns,
    create_campaign,
    pause_campaign,
    resume_campaign,
)
from bot.campaigns.courses import create_course
from bot.campaigns.masssend import CREATE_API, MassTaskDispatcher
from bot.campaigns.planner import plan_run
from bot.config import Settings
from bot.coordination import Coordinator, MemoryCoordinator
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.kf.syncer import KfSyncer
from bot.leads.hookcodes import create_code, provision_contact_way
from bot.scheduler import SchedulerService
from bot.services import Services
from bot.trading_calendar import SHANGHAI
from bot.wecom.simulator import Simulator, SimulatorConfig
from bot.worker import Worker
from handlers import build_dispatcher
from models.campaigns import (
    Campaign,
    CampaignRun,
    CourseRegistration,
    MassTask,
    MassTaskStatus,
    RunRecipient,
    RunStatus,
)
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.inbox import EventStatus, InboundEvent
from models.leads import HookCode, Lead, Member
from scripts_library import ledger
from tests.callbacks import envelope, params_of
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import approved, ensure_people

DEFAULTS = Path(__file__).resolve().parents[1] / "scripts_library" / "defaults"
SCRIPTS = [
    "welcome_xiaohongshu",
    "welcome_default",
    "subscribe_confirm",
    "unsubscribe_confirm",
    "fallback",
    "morning_report",
    "mass_task_reminder",
    "course_invite",
    "course_reminder",
    "course_registered",
    "course_none",
]
SPEAKER, SAC = "张老师", "S0570516010001"
LINK = "https://work.weixin.qq.com/live/etf"


def sh(text: str) -> datetime:
    """An Asia/Shanghai wall-clock time as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).astimezone(UTC)


class Clock:
    """The one controlled clock every part reads."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def run_due(service: SchedulerService, now: datetime) -> list[str]:
    """Run the jobs due at `now` in this thread, earliest first, as APScheduler would; return their ids."""
    scheduler = service.scheduler
    assert scheduler is not None
    ran: list[str] = []
    for _ in range(50):
        due = sorted(
            (job for job in scheduler.get_jobs() if job.next_run_time <= now),
            key=lambda j: (j.next_run_time, j.id),
        )
        if not due:
            return ran
        job = due[0]
        scheduler.remove_job(job.id)  # a date job leaves the store when it fires
        job.func(*job.args)
        ran.append(job.id)
    raise AssertionError(f"jobs keep coming due: {ran}")


class World:
    """The bot wired to the simulator, every part on one clock, stepped by the test."""

    def __init__(self, services: Services, sim: Simulator, clock: Clock) -> None:
        self.services, self.sim, self.clock = services, sim, clock
        s = services
        self.sender = DeliveryDispatcher(s.settings, s.db, s.coordinator, s.client, clock=clock)
        self.mass = MassTaskDispatcher(s.settings, s.db, s.coordinator, s.client, clock=clock)
        self.schedulers: list[SchedulerService] = []
        self.coordinators: list[Coordinator] = []
        self.planned: list[int] = []
        self.delivered = 0
        self.confirmed: set[str] = set()
        self.open_kfid = str(
            s.client.post("kf/account/add", {"name": "投教客服", "media_id": "MEDIA1"}, app="kf")["open_kfid"]
        )
        s.client.post("kf/add_contact_way", {"open_kfid": self.open_kfid, "scene": "s1"}, app="kf")
        with s.db.read() as session:
            way = session.scalars(
                select(HookCode.contact_way_config_id).where(HookCode.code == "XHS888")
            ).one()
        assert way
        self.contact_way = way

    def close(self) -> None:
        for service in self.schedulers:
            service.shutdown()
        for coordinator in self.coordinators:
            coordinator.close()
        self.sender.close()

    # ---- time ----------------------------------------------------------------------------------

    def to(self, when: datetime) -> None:
        """Move the clock forward to `when`."""
        assert when >= self.clock.now, (when, self.clock.now)
        self.clock.now = when

    # ---- customers and the bot's event path ---------------------------------------------------

    def stamp(self) -> None:
        """Rows the inbox stamped with the database's wall clock arrived now, on the test's clock."""
        with self.services.db.transaction() as session:
            session.execute(
                update(InboundEvent)
                .where(InboundEvent.status == EventStatus.PENDING, InboundEvent.received_at > self.clock.now)
                .values(received_at=self.clock.now, next_attempt_at=self.clock.now)
            )

    def callbacks(self) -> None:
        """Store the simulator's new callbacks as the webhook does."""
        ingestor = self.services.ingestor
        assert ingestor is not None
        emitted = self.sim.emitted_callbacks
        for xml in emitted[self.delivered :]:
            query, body = envelope(xml)
            p = params_of(query)
            ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body)
        self.delivered = len(emitted)
        self.stamp()

    def work(self) -> None:
        s = self.services
        outcomes = Worker(s.settings, s.db, s.coordinator, build_dispatcher(), clock=self.clock).drain()
        assert all(o.status in ("done", "ignored") for o in outcomes), outcomes

    def pump(self) -> None:
        """Callbacks → events → kf pulls → handlers → sends, all at the clock's time."""
        s = self.services
        self.callbacks()
        self.work()
        KfSyncer(s.settings, s.db, s.coordinator, s.client, clock=self.clock).drain()
        self.stamp()
        self.work()
        self.sender.drain()

    def scan(self, *customers: str) -> None:
        """Customers scan the hook code's 「联系我」 QR and are welcomed."""
        for ext in customers:
            self.sim.customer_scans(self.contact_way, ext)
        self.pump()

    def say(self, customer: str, text: str) -> None:
        """A customer writes to the kf account (the bot pulls and answers)."""
        self.sim.kf_customer_says(self.open_kfid, customer, text)
        self.pump()

    # ---- the scheduler and the senders ----------------------------------------------------------

    def scheduler(self, name: str, coordinator: Coordinator | None = None) -> SchedulerService:
        s = self.services

        def plan(run_id: int) -> None:
            self.planned.append(run_id)
            plan_run(s.db, s.settings, run_id, now=self.clock(), coordinator=s.coordinator)

        service = SchedulerService(
            s.settings, s.db, coordinator or s.coordinator, plan, instance_id=name, clock=self.clock,
            run_jobs=False,
        )  # fmt: skip
        self.schedulers.append(service)
        return service

    def deliver(self) -> None:
        """What the worker's senders do after a run is planned: kf sends, mass tasks, their outcome."""
        self.sender.drain()  # kf messages go out at once
        self.mass.drain()  # each sender's mass task is created in WeCom
        self.sender.drain()  # the members' reminders to confirm
        for msg in self.sim.groupmsgs:
            if msg.msgid not in self.confirmed:
                for userid in msg.tasks:
                    self.sim.member_confirms_groupmsg(msg.msgid, userid)
                self.confirmed.add(msg.msgid)
        for _ in range(6):  # the task is checked a minute after creation, then less often
            with self.services.db.read() as session:
                open_ = session.scalars(
                    select(MassTask.id).where(
                        MassTask.status.in_([MassTaskStatus.QUEUED, MassTaskStatus.CREATED])
                    )
                ).all()
            if not open_:
                return
            self.to(self.clock.now + timedelta(minutes=5))
            self.mass.drain()
        raise AssertionError(f"mass tasks still open: {open_}")

    def drive(self, service: SchedulerService, until: datetime) -> None:
        """Let the scheduler lead until `until`: fire each due occurrence when it comes, then send."""
        while True:
            assert service.tick()
            due = min(service.jobs().values(), default=None)
            if due is None or due > until:
                break
            self.to(max(self.clock.now, due + timedelta(seconds=1)))
            run_due(service, self.clock.now)
            self.deliver()
        self.to(until)

    # ---- what happened ---------------------------------------------------------------------------

    def runs(self) -> list[CampaignRun]:
        with self.services.db.read() as session:
            return list(session.scalars(select(CampaignRun).order_by(CampaignRun.occurrence)))

    def recipients(self, run_id: int) -> dict[str, str]:
        """The run's recipients: customer → channel (kf, mass or none)."""
        with self.services.db.read() as session:
            rows = session.execute(
                select(Lead.external_user_id, RunRecipient.channel)
                .join(Lead, Lead.id == RunRecipient.lead_id)
                .where(RunRecipient.run_id == run_id)
            )
            return {ext: channel for ext, channel in rows}

    def run_deliveries(self, run_id: int) -> dict[str, Delivery]:
        with self.services.db.read() as session:
            rows = session.scalars(select(Delivery).where(Delivery.purpose_key.like(f"run:{run_id}:%")))
            return {row.recipient: row for row in rows}

    def campaign_deliveries(self) -> list[Delivery]:
        with self.services.db.read() as session:
            return list(session.scalars(select(Delivery).where(Delivery.purpose_key.like("run:%"))))

    def kf_texts(self, customer: str) -> list[str]:
        return [m.payload["text"]["content"] for m in self.sim.kf_sent if m.external_userid == customer]

    def mass_received(self) -> Counter[tuple[str, str]]:
        """(customer, text) pairs WeCom delivered through mass messages the member sent."""
        got: Counter[tuple[str, str]] = Counter()
        for msg in self.sim.groupmsgs:
            for task in msg.tasks.values():
                for ext, status in task.results.items():
                    if status == 1:
                        got[(ext, msg.text or "")] += 1
        return got

    def assert_ledger_ok(self) -> None:
        with self.services.db.read() as session:
            assert ledger.verify(session).ok


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan", "lisi"],
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


def world_at(services: Services, sim: Simulator, start: datetime) -> Iterator[World]:
    secrets = sim.config.secrets
    settings: Settings = services.settings.replace(
        wecom={
            "api_base_url": sim.base_url,
            "agent_secret": secrets["agent"],
            "contact_secret": secrets["contact"],
            "kf_secret": secrets["kf"],
        },
        # Leadership outlasts the test's real seconds; takeovers below are by release or separate locks.
        scheduler={
            "lock_ttl_s": 120,
            "renew_s": 10,
            "reconcile_s": 30,
            "misfire_grace_s": 600,
            "lookback_h": 24,
        },
    )
    services.settings = settings
    with services.db.transaction() as session:
        ensure_people(session)
        for key in SCRIPTS:
            script = tomllib.loads((DEFAULTS / f"{key}.toml").read_text(encoding="utf-8"))
            approved(session, key, script["kind"], script["body"].strip())
        session.add(Member(userid="zhangsan", name="张经理"))
        create_code(session, "XHS888", "xiaohongshu", ["zhangsan"], "olivia")
    provision_contact_way(services.db, services.client, "XHS888")
    world = World(services, sim, Clock(start))
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def morning(services: Services, sim: Simulator) -> Iterator[World]:
    yield from world_at(services, sim, sh("2026-09-26 10:00"))  # a Saturday before National Day


@pytest.fixture
def courses(services: Services, sim: Simulator) -> Iterator[World]:
    yield from world_at(services, sim, sh("2026-10-09 10:00"))


def test_morning_report_reaches_each_subscriber_once_per_trading_day_and_skips_the_holiday(
    morning: World,
) -> None:
    w = morning
    # Leads arrive through the hook code; consent and opt-out are given in kf.
    w.scan("wmA", "wmB", "wmOut", "wmGone", "wmNever")
    for ext in ("wmB", "wmOut", "wmGone"):
        w.say(ext, "订阅")
    w.to(sh("2026-09-26 10:10"))
    w.say("wmOut", "TD")
    w.to(sh("2026-09-27 11:00"))
    w.sim.customer_deletes_member("zhangsan", "wmGone")
    w.pump()
    w.to(sh("2026-09-29 20:00"))
    w.say("wmA", "订阅")  # its kf window is open at the next 08:30 (48 h)
    with w.services.db.read() as session:
        leads = {lead.external_user_id: lead for lead in session.scalars(select(Lead))}
    assert {ext for ext, lead in leads.items() if lead.subscribed} == {"wmA", "wmB", "wmGone"}
    assert leads["wmOut"].opted_out and not leads["wmGone"].reachable
    assert {lead.hook_code for lead in leads.values()} == {"XHS888"}

    with w.services.db.transaction() as session:
        campaign_id = create_campaign(
            session, "morning", "早报", "morning_report", "morning_report", Schedule.trading_days("08:30"),
            "olivia", now=w.clock(),
        ).id  # fmt: skip

    # Two schedulers share the lock: one leads, the other stands by.
    leader, standby = w.scheduler("sched-a"), w.scheduler("sched-b")
    assert leader.tick() and not standby.tick()
    assert standby.jobs() == {}
    w.drive(leader, sh("2026-09-30 12:00"))
    assert standby.run_occurrence(campaign_id, sh("2026-09-30 08:30")) is None  # not the leader
    again = standby.fire(campaign_id, sh("2026-09-30 08:30"))  # even past the lock, the run key holds
    assert again is not None and not again.created

    # The leader stops in the holiday; the standby takes over and waits for the next trading day.
    w.to(sh("2026-10-03 09:00"))
    leader.shutdown()
    assert standby.tick()
    assert standby.jobs() == {f"campaign:{campaign_id}": sh("2026-10-08 08:30")}
    w.drive(standby, sh("2026-10-08 12:00"))

    # A restarted scheduler with a lock of its own (a replica misconfigured with separate
    # coordination) schedules the next occurrence only, and both firing it make one run.
    own_lock = MemoryCoordinator()
    w.coordinators.append(own_lock)
    restarted = w.scheduler("sched-c", coordinator=own_lock)
    assert restarted.tick()
    assert restarted.jobs() == {f"campaign:{campaign_id}": sh("2026-10-09 08:30")}
    w.to(sh("2026-10-09 08:30:01"))
    assert standby.tick()
    ran = run_due(standby, w.clock.now) + run_due(restarted, w.clock.now)
    assert ran[0] == f"campaign:{campaign_id}" and ran.count(f"campaign:{campaign_id}") == 2
    w.deliver()
    w.drive(restarted, sh("2026-10-11 12:00"))  # the weekend: nothing more

    runs = w.runs()
    occurrences = [r.occurrence for r in runs]
    assert occurrences == [sh("2026-09-30 08:30"), sh("2026-10-08 08:30"), sh("2026-10-09 08:30")]
    assert [r.status for r in runs] == [RunStatus.PLANNED] * 3
    assert sorted(w.planned) == [r.id for r in runs]  # each run handed to the planner once
    first, second, third = (r.id for r in runs)
    assert w.recipients(first) == {"wmA": "kf", "wmB": "mass"}
    assert w.recipients(second) == {"wmA": "mass", "wmB": "mass"}  # wmA's window has closed
    assert w.recipients(third) == {"wmA": "mass", "wmB": "mass"}

    # Each subscriber got the day's approved text exactly once; nobody else got anything.
    days = {first: "2026年9月30日 星期三", second: "2026年10月8日 星期四", third: "2026年10月9日 星期五"}
    texts: dict[int, str] = {}
    for run_id, day in days.items():
        rows = w.run_deliveries(run_id)
        assert set(rows) == {"wmA", "wmB"}
        assert {r.status for r in rows.values()} == {DeliveryStatus.SENT}
        assert {r.text for r in rows.values()} == {rows["wmB"].text}
        assert day in rows["wmB"].text and "不构成投资建议" in rows["wmB"].text
        assert {r.script_key for r in rows.values()} == {"morning_report"}
        texts[run_id] = rows["wmB"].text
    assert [t for t in w.kf_texts("wmA") if "早报】" in t] == [texts[first]]
    assert w.mass_received() == Counter(
        {("wmB", texts[first]): 1, ("wmA", texts[second]): 1, ("wmB", texts[second]): 1,
         ("wmA", texts[third]): 1, ("wmB", texts[third]): 1}
    )  # fmt: skip
    per_day = Counter((d.recipient, d.params["run_id"]) for d in w.campaign_deliveries())
    assert per_day == Counter({(ext, run_id): 1 for ext in ("wmA", "wmB") for run_id in days})
    for ext in ("wmOut", "wmGone", "wmNever"):
        assert not any("早报】" in t for t in w.kf_texts(ext))

    # One mass task per run and member, created once in WeCom, confirmed and reconciled.
    with w.services.db.read() as session:
        tasks = list(session.scalars(select(MassTask).order_by(MassTask.id)))
        reminders = session.scalars(
            select(Delivery.recipient).where(Delivery.channel == Channel.APP_MESSAGE)
        ).all()
    assert [(t.run_id, t.sender, t.recipients, t.status) for t in tasks] == [
        (first, "zhangsan", 1, MassTaskStatus.SENT),
        (second, "zhangsan", 2, MassTaskStatus.SENT),
        (third, "zhangsan", 2, MassTaskStatus.SENT),
    ]
    assert w.sim.api_calls(CREATE_API) == 3 and len(w.sim.groupmsgs) == 3
    assert sorted(t.msgid or "" for t in tasks) == sorted(m.msgid for m in w.sim.groupmsgs)
    assert reminders == ["zhangsan"] * 3
    w.assert_ledger_ok()


def test_course_invite_goes_to_subscribers_and_the_reminder_only_to_registrants(courses: World) -> None:
    w = courses
    starts = sh("2026-10-15 19:30")
    with w.services.db.transaction() as session:
        course = create_course(
            session, "etf-live", "ETF定投入门", SPEAKER, SAC, starts, LINK, "olivia",
            w.services.settings.compliance, now=w.clock(),
        )  # fmt: skip
        invite, reminder = course_campaigns(
            session, course, "olivia", invite_lead_minutes=3 * 24 * 60, reminder_minutes=30, now=w.clock()
        )
        invite_id, reminder_id = invite.id, reminder.id
    w.scan("wmA", "wmB", "wmC")
    w.to(sh("2026-10-09 10:05"))
    w.say("wmB", "订阅")  # its window closes long before the invite: mass
    scheduler = w.scheduler("sched-a")
    w.drive(scheduler, sh("2026-10-11 20:00"))
    w.say("wmA", "订阅")  # its window is open at the invite: kf
    w.drive(scheduler, sh("2026-10-13 10:00"))
    w.say("wmC", "报名")  # never subscribed, registers; its window closes before the reminder
    w.to(sh("2026-10-13 20:00"))
    w.say("wmA", "我要报名")
    w.drive(scheduler, sh("2026-10-16 09:00"))

    with w.services.db.read() as session:
        registered = session.scalars(
            select(Lead.external_user_id)
            .join(CourseRegistration, CourseRegistration.lead_id == Lead.id)
            .where(CourseRegistration.channel == "kf")
            .order_by(Lead.external_user_id)
        ).all()
        kinds = {cid: kind for cid, kind in session.execute(select(Campaign.id, Campaign.kind))}
    assert registered == ["wmA", "wmC"]
    runs = w.runs()
    assert [(kinds[r.campaign_id], r.occurrence, r.status) for r in runs] == [
        ("course_invite", sh("2026-10-12 19:30"), RunStatus.PLANNED),
        ("course_reminder", sh("2026-10-15 19:00"), RunStatus.PLANNED),
    ]
    assert [r.campaign_id for r in runs] == [invite_id, reminder_id]
    invite_run, reminder_run = runs[0].id, runs[1].id
    assert w.recipients(invite_run) == {"wmA": "kf", "wmB": "mass"}
    assert w.recipients(reminder_run) == {"wmA": "kf", "wmC": "mass"}
    sent: dict[int, str] = {}
    for run_id in (invite_run, reminder_run):
        rows = w.run_deliveries(run_id)
        assert {r.status for r in rows.values()} == {DeliveryStatus.SENT}
        [text] = {r.text for r in rows.values()}
        assert SPEAKER in text and SAC in text and LINK in text and "10月15日 周四 19:30" in text
        sent[run_id] = text
    assert "回复“报名”" in sent[invite_run] and "您预约的投教直播" in sent[reminder_run]
    assert [t for t in w.kf_texts("wmA") if "投教直播" in t] == [sent[invite_run], sent[reminder_run]]
    assert w.mass_received() == Counter({("wmB", sent[invite_run]): 1, ("wmC", sent[reminder_run]): 1})
    assert w.sim.api_calls(CREATE_API) == 2
    w.assert_ledger_ok()


def test_a_campaign_paused_after_planning_holds_its_messages_until_resumed(morning: World) -> None:
    w = morning
    w.scan("wmA", "wmB")
    w.say("wmB", "订阅")
    w.to(sh("2026-09-29 20:00"))
    w.say("wmA", "订阅")  # wmA's kf window is open at 08:30; wmB's has closed (mass)
    with w.services.db.transaction() as session:
        create_campaign(
            session, "morning", "早报", "morning_report", "morning_report", Schedule.trading_days("08:30"),
            "olivia", now=w.clock(),
        )  # fmt: skip
    leader = w.scheduler("sched-a")
    assert leader.tick()
    w.to(sh("2026-09-30 08:30:01"))
    run_due(leader, w.clock.now)
    (run,) = w.runs()
    assert run.status == RunStatus.PLANNED and w.recipients(run.id) == {"wmA": "kf", "wmB": "mass"}

    with w.services.db.transaction() as session:
        pause_campaign(session, "morning", "olivia", "wrong chart in today's report", now=w.clock())
    w.sender.drain()
    w.mass.drain()
    held = w.run_deliveries(run.id)
    assert held["wmA"].status == DeliveryStatus.QUEUED and held["wmA"].error == "held: campaign paused"
    assert held["wmA"].attempts == 0 and held["wmA"].next_attempt_at > w.clock.now
    assert not any("早报】" in t for t in w.kf_texts("wmA"))
    assert w.sim.api_calls(CREATE_API) == 0

    w.to(w.clock.now + timedelta(minutes=5))
    w.sender.drain()  # still paused: still held
    assert not any("早报】" in t for t in w.kf_texts("wmA"))
    with w.services.db.transaction() as session:
        resume_campaign(session, "morning", "olivia", "report corrected", now=w.clock())
    w.to(w.clock.now + timedelta(minutes=2))
    w.deliver()
    sent = w.run_deliveries(run.id)
    assert {ext: row.status for ext, row in sent.items()} == {"wmA": DeliveryStatus.SENT, "wmB": "sent"}
    assert [t for t in w.kf_texts("wmA") if "早报】" in t] == [sent["wmA"].text]
    assert w.mass_received() == Counter({("wmB", sent["wmB"].text): 1})
    w.assert_ledger_ok()
