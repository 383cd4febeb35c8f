"""After arrival: customers talk in kf, get a morning report, attend a course and are handed to managers.

The bot's event path keeps running on real time in the embedded runtime. The parts that wait for a
later moment (the report's 08:30 occurrence, the course's end, the handoff answer time) run here on a
demo clock that jumps forward, as the campaign and handoff end-to-end tests do.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta

import click
from sqlalchemy import Select, func, select

from bot.campaigns.catalog import Schedule, create_campaign
from bot.campaigns.courses import create_course, import_attendance
from bot.campaigns.masssend import MassTaskDispatcher
from bot.campaigns.planner import plan_run
from bot.delivery.dispatcher import DeliveryDispatcher
from bot.handoff.managers import ManagerFields, add_manager
from bot.handoff.sla import HandoffSweeper
from bot.runtime import EmbeddedRuntime
from bot.services import Services
from bot.trading_calendar import SHANGHAI, TradingCalendar, shanghai_today
from bot.wecom.simulator import Simulator
from bot.wecom.simulator.groupmsg import TASK_UNSENT
from models.base import utcnow
from models.campaigns import (
    Course,
    CourseAttendance,
    CourseRegistration,
    MassTask,
    MassTaskStatus,
    RunRecipient,
)
from models.handoff import Handoff, HandoffStatus
from models.leads import Lead
from scripts_library import ledger

OPERATOR = "demo_operator"
KF_SCENE = "demo"
# Licensed managers with round-the-clock hours, so the demo qualifies leads whenever it runs.
MANAGERS = {"lisi": ("李经理", "S0570516010001"), "wangwu": ("王经理", "S0570516010002")}
COURSE_LINK = "https://work.weixin.qq.com/live/etf"
# What customers who open the kf link type, with how many of them type it.
KF_LINES = (("订阅", 0.45), ("TD", 0.10), ("报名", 0.25), ("怎么开户", 0.06))
# The first customers type these, so even a small demo shows every stage, a reassignment among them.
FIRST_LINES = ("订阅", "TD", "报名", "怎么开户", "报名", "怎么开户")


class DemoClock:
    """The controlled clock of the parts that wait for a later moment; it only moves forward."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def to(self, when: datetime) -> None:
        """Jump forward to `when` (never back)."""
        self.now = max(self.now, when)


@dataclass
class JourneyReport:
    """What the kf, morning report, course and handoff stages did."""

    kf_customers: int
    subscribed: int
    opted_out: int
    report_by_channel: dict[str, int]
    mass_tasks_sent: int
    registrations: int
    attendance: int
    qualified: int
    handed_off: int
    accepted: int
    reassigned: int
    ledger_entries: int
    ledger_intact: bool


@dataclass(frozen=True)
class Customer:
    """A customer who stayed after scanning: the member they added and the hook code they came through."""

    member: str
    external_userid: str
    code: str


def open_kf_account(services: Services, managers: list[str]) -> str:
    """Create the kf account behind the kf link, its link scene, and the managers as its servicers."""
    client = services.client
    open_kfid = str(
        client.post("kf/account/add", {"name": "投教客服", "media_id": "MEDIA1"}, app="kf")["open_kfid"]
    )
    client.post("kf/add_contact_way", {"open_kfid": open_kfid, "scene": KF_SCENE}, app="kf")
    client.post("kf/servicer/add", {"open_kfid": open_kfid, "userid_list": managers}, app="kf")
    return open_kfid


def register_managers(services: Services, now: datetime) -> None:
    """Register the simulated account managers, working every day around the clock."""
    with services.db.transaction() as session:
        for userid, (name, sac) in MANAGERS.items():
            fields = ManagerFields(
                name=name,
                licensed=True,
                sac_number=sac,
                work_days="1234567",
                work_start="00:00",
                work_end="23:59",
            )
            add_manager(session, userid, fields, actor=OPERATOR, now=now)


def report_days(services: Services, now: datetime) -> tuple[datetime, datetime]:
    """08:30 Shanghai on the next trading day, and on the first trading day after the kf window closes.

    Customers talk in kf today, so their 48 h window is open at the first occurrence (kf) and closed
    at the second (a mass task each member confirms).
    """
    with services.db.read() as session:
        calendar = TradingCalendar.load(session)
    today = shanghai_today(now)
    first = calendar.next_trading_day(today).day
    later = calendar.next_trading_day(today + timedelta(days=2)).day
    return (
        datetime.combine(first, time(8, 30), tzinfo=SHANGHAI),
        datetime.combine(later, time(8, 30), tzinfo=SHANGHAI),
    )


def create_morning_report(services: Services, now: datetime) -> int:
    """The morning report campaign: every trading day at 08:30 to subscribers."""
    with services.db.transaction() as session:
        return create_campaign(
            session, "morning", "早报", "morning_report", "morning_report", Schedule.trading_days("08:30"),
            OPERATOR, now=now,
        ).id  # fmt: skip


def create_demo_course(services: Services, starts_at: datetime, now: datetime) -> int:
    """The investor-education live course customers register for with 报名."""
    with services.db.transaction() as session:
        course = create_course(
            session, "etf-live", "ETF定投入门", "张老师", "S0570516010001", starts_at, COURSE_LINK, OPERATOR,
            services.settings.compliance, now=now,
        )  # fmt: skip
        return course.id


def talk_in_kf(
    sim: Simulator, open_kfid: str, customers: list[Customer], rng: random.Random, settle: Callable[[], None]
) -> dict[str, list[Customer]]:
    """Customers open the kf link (scene_param = their hook code) and type; returns who typed what."""
    said: dict[str, list[Customer]] = {line: [] for line, _ in KF_LINES}
    talking = rng.sample(customers, k=max(len(FIRST_LINES), len(customers) * 3 // 5))
    with click.progressbar(talking, label="customers opening the kf link and typing") as bar:
        for i, customer in enumerate(bar):
            ext = customer.external_userid
            sim.kf_customer_enters(open_kfid, ext, scene=KF_SCENE, scene_param=customer.code)
            line = FIRST_LINES[i] if i < len(FIRST_LINES) else _pick(rng)
            if line == "TD":  # opting out only means something after subscribing
                sim.kf_customer_says(open_kfid, ext, "订阅")
            sim.kf_customer_says(open_kfid, ext, line)
            said[line].append(customer)
    settle()
    return said


def _pick(rng: random.Random) -> str:
    return rng.choices([line for line, _ in KF_LINES], weights=[w for _, w in KF_LINES])[0]


def hand_off(
    services: Services,
    sim: Simulator,
    clock: DemoClock,
    settle: Callable[[], None],
    sender: DeliveryDispatcher,
) -> None:
    """Managers accept every card but one with a tap; the SLA sweep reassigns the ignored one."""
    with services.db.read() as session:
        offered = list(
            session.execute(
                select(Handoff.id, Handoff.manager_userid, Handoff.task_id)
                .where(Handoff.status == HandoffStatus.OFFERED)
                .order_by(Handoff.id)
            ).all()
        )
    ignored = offered[-1:] if len(offered) > 1 else []
    for handoff_id, manager, task_id in offered[: len(offered) - len(ignored)]:
        if task_id:
            sim.member_clicks_card(manager, task_id, f"handoff:accept:{handoff_id}")
    settle()
    if ignored:
        clock.to(utcnow() + timedelta(minutes=services.settings.handoff.sla_minutes + 1))
        HandoffSweeper(
            services.settings, services.db, services.coordinator, lambda: services.client, clock=clock
        ).run(clock.now)
        sender.drain()


def send_morning_report(
    services: Services,
    sim: Simulator,
    runtime: EmbeddedRuntime,
    clock: DemoClock,
    sender: DeliveryDispatcher,
    campaign_id: int,
    occurrence: datetime,
) -> int:
    """Fire one occurrence of the report, plan it, send by kf and by mass tasks the members confirm."""
    click.echo(f"morning report of {occurrence.astimezone(SHANGHAI):%Y-%m-%d %H:%M} (Shanghai)")
    clock.to(occurrence + timedelta(seconds=1))
    fired = runtime.scheduler.fire(campaign_id, occurrence, now=clock.now)
    if fired is None:
        raise click.ClickException("the morning report's occurrence was not fired")
    plan_run(services.db, services.settings, fired.run_id, now=clock.now, coordinator=services.coordinator)
    mass = MassTaskDispatcher(
        services.settings, services.db, services.coordinator, services.client, clock=clock
    )
    sender.drain()  # kf messages go out at once
    mass.drain()  # each member's mass task is created in WeCom
    sender.drain()  # the members' reminders to confirm
    for msg in sim.groupmsgs:
        for userid, task in msg.tasks.items():
            if task.status == TASK_UNSENT:
                sim.member_confirms_groupmsg(msg.msgid, userid)
    for _ in range(6):  # the task is checked a minute after creation, then less often
        clock.to(clock.now + timedelta(minutes=5))
        mass.drain()
        with services.db.read() as session:
            open_tasks = session.scalar(
                select(func.count())
                .select_from(MassTask)
                .where(MassTask.status.in_([MassTaskStatus.QUEUED, MassTaskStatus.CREATED]))
            )
        if not open_tasks:
            break
    return fired.run_id


def import_course_attendance(
    services: Services, course_id: int, attendees: list[Customer], clock: DemoClock
) -> None:
    """After the course, the live platform's attendance export is imported."""
    rows = "".join(f"{c.external_userid},{40 + i % 20}\n" for i, c in enumerate(attendees))
    with services.db.transaction() as session:
        course = session.get_one(Course, course_id)
        click.echo(f"course {course.title}: attendance of {len(attendees)} imported after the live session")
        clock.to(course.starts_at + timedelta(hours=2))
        import_attendance(session, course, "external_userid,minutes\n" + rows, OPERATOR, now=clock.now)


def run_stages(
    services: Services,
    sim: Simulator,
    runtime: EmbeddedRuntime,
    customers: list[Customer],
    settle: Callable[[], None],
    seed: int = 11,
) -> JourneyReport:
    """kf conversations, handoffs, the morning report and the course, in the order they happen."""
    rng = random.Random(seed)
    clock = DemoClock(utcnow())
    register_managers(services, clock.now - timedelta(days=90))
    open_kfid = open_kf_account(services, list(MANAGERS))
    first_report, later_report = report_days(services, clock.now)
    campaign_id = create_morning_report(services, clock.now)
    course_starts = datetime.combine(first_report.date(), time(19, 30), tzinfo=SHANGHAI)
    course_id = create_demo_course(services, course_starts, clock.now)
    said = talk_in_kf(sim, open_kfid, customers, rng, settle)
    sender = DeliveryDispatcher(
        services.settings, services.db, services.coordinator, services.client, clock=clock
    )
    try:
        click.echo("managers tapping Accept on lead cards; one card left unanswered")
        hand_off(services, sim, clock, settle, sender)
        runs = [send_morning_report(services, sim, runtime, clock, sender, campaign_id, first_report)]
        registered = said["报名"]
        import_course_attendance(services, course_id, registered[: max(1, len(registered) * 2 // 3)], clock)
        runs.append(send_morning_report(services, sim, runtime, clock, sender, campaign_id, later_report))
    finally:
        sender.close()
    settle()
    return _journey_report(services, runs, sum(len(who) for who in said.values()))


def _journey_report(services: Services, runs: list[int], kf_customers: int) -> JourneyReport:
    with services.db.read() as session:

        def count(stmt: Select[int]) -> int:
            return int(session.scalar(stmt) or 0)

        check = ledger.verify(session)
        statuses = Counter(session.scalars(select(Handoff.status)))
        by_channel = {
            str(channel): int(n)
            for channel, n in session.execute(
                select(RunRecipient.channel, func.count())
                .where(RunRecipient.run_id.in_(runs))
                .group_by(RunRecipient.channel)
            )
        }
        return JourneyReport(
            kf_customers=kf_customers,
            subscribed=count(select(func.count()).select_from(Lead).where(Lead.subscribed.is_(True))),
            opted_out=count(select(func.count()).select_from(Lead).where(Lead.opted_out.is_(True))),
            report_by_channel=by_channel,
            mass_tasks_sent=count(
                select(func.count()).select_from(MassTask).where(MassTask.status == MassTaskStatus.SENT)
            ),
            registrations=count(select(func.count()).select_from(CourseRegistration)),
            attendance=count(select(func.count()).select_from(CourseAttendance)),
            qualified=count(select(func.count(func.distinct(Handoff.lead_id)))),
            handed_off=sum(statuses.values()),
            accepted=statuses.get(HandoffStatus.ACCEPTED, 0),
            reassigned=statuses.get(HandoffStatus.TIMED_OUT, 0),
            ledger_entries=check.count,
            ledger_intact=check.ok,
        )
