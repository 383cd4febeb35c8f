"""Mass-send tasks against the simulator: created once, reminded within limits, reconciled per customer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from sqlalchemy import select

from bot.campaigns.controls import resume_sending, stop_sending
from bot.campaigns.masssend import (
    CREATE_API,
    MASS_CHANNEL,
    NOT_FRIEND_REASON,
    OVER_QUOTA_REASON,
    TASK_UNKNOWN,
    MassSendOptions,
    MassTaskDispatcher,
)
from bot.delivery.outbox import enqueue
from bot.services import Services
from bot.wecom.errors import ErrorKind, WeComAPIError
from bot.wecom.simulator import SimulationError, Simulator, SimulatorConfig
from models.alerts import Alert
from models.base import utcnow
from models.campaigns import Campaign, CampaignRun, CampaignStatus, MassTask, MassTaskStatus, RunRecipient
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.leads import Lead
from models.ledger import LedgerEntry
from scripts_library import ledger
from scripts_library.files import DEFAULTS_DIR, read_script_file
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import POLICY, approved

REPORT = read_script_file(DEFAULTS_DIR / "morning_report.toml").body
REMINDER = read_script_file(DEFAULTS_DIR / "mass_task_reminder.toml").body
REPORT_VALUES = {
    "firm": {"name": "示例证券", "opt_out": "回复TD退订"},
    "report": {"date": "2026-03-02", "weekday": "星期一"},
}
HOUR = timedelta(hours=1)


class Clock:
    """A controlled clock the dispatcher reads."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan", "lisi"],
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


@pytest.fixture
def wired(services: Services, sim: Simulator) -> Services:
    services.settings = services.settings.replace(
        wecom={"api_base_url": sim.base_url, "agent_secret": sim.config.secrets["agent"]}
    )
    with services.db.transaction() as session:
        approved(session, "morning_report", "morning_report", REPORT)
        approved(session, "mass_task_reminder", "staff_reminder", REMINDER)
    return services


@pytest.fixture
def clock() -> Clock:
    return Clock()


def befriend(services: Services, sim: Simulator, userid: str, *external_userids: str) -> None:
    """Customers scan the member's 「联系我」 code: live relations in WeCom, leads in our database."""
    way = services.client.post(
        "externalcontact/add_contact_way", {"type": 1, "scene": 2, "user": [userid]}, app="contact"
    )
    for ext in external_userids:
        sim.customer_scans(way["config_id"], ext)
    with services.db.transaction() as session:
        session.add_all(
            Lead(external_user_id=ext, owner_userid=userid, subscribed=True) for ext in external_userids
        )


def plan(
    services: Services, clock: Clock, recipients: list[str], sender: str = "zhangsan", **delivery: Any
) -> int:
    """What the planner writes: a campaign run, one mass task and a queued delivery per recipient."""
    now = clock()
    with services.db.transaction() as session:
        campaign = session.scalars(select(Campaign)).first()
        if campaign is None:
            campaign = Campaign(
                key="morning", name="早报", kind="morning_report", script_key="morning_report",
                schedule_kind="trading_days", time_of_day="08:30", created_by="olivia",
            )  # fmt: skip
            session.add(campaign)
            session.flush()
        runs = len(session.scalars(select(CampaignRun.id)).all())
        occurrence = now + timedelta(minutes=runs)
        run = CampaignRun(campaign_id=campaign.id, occurrence=occurrence, created_by="test", status="planned")
        session.add(run)
        session.flush()
        task = MassTask(
            run_id=run.id, sender=sender, text="", script_key="morning_report", script_version=0,
            approval_id=0, recipients=len(recipients), created_at=now, next_check_at=now,
        )  # fmt: skip
        session.add(task)
        session.flush()
        for ext in recipients:
            row = enqueue(
                session, purpose_key=f"run:{run.id}:{ext}", channel=Channel.MASS_TEMPLATE, recipient=ext,
                sender=sender, script_key="morning_report", values=REPORT_VALUES, policy=POLICY,
                params={"mass_task_id": task.id}, now=now, **delivery,
            )  # fmt: skip
            task.text, task.script_version, task.approval_id = row.text, row.script_version, row.approval_id
            lead = session.scalars(select(Lead).where(Lead.external_user_id == ext)).first()
            if lead is None:
                lead = Lead(external_user_id=ext, subscribed=True)
                session.add(lead)
            session.flush()
            session.add(
                RunRecipient(
                    run_id=run.id, lead_id=lead.id, channel="mass", delivery_id=row.id, mass_task_id=task.id
                )
            )
        return task.id


def mass(services: Services, clock: Clock, **kw: Any) -> MassTaskDispatcher:
    return MassTaskDispatcher(
        services.settings, services.db, services.coordinator, services.client, clock=clock, **kw
    )


def task_row(services: Services, task_id: int) -> MassTask:
    with services.db.transaction() as session:
        found = session.get(MassTask, task_id)
        assert found is not None
        return found


def recipients(services: Services) -> dict[str, Delivery]:
    with services.db.transaction() as session:
        rows = session.scalars(select(Delivery).where(Delivery.channel == Channel.MASS_TEMPLATE))
        return {row.recipient: row for row in rows}


def outcomes(services: Services) -> dict[str, list[str]]:
    """Each mass recipient's ledger outcomes, oldest first (the message itself is "queued")."""
    with services.db.transaction() as session:
        found: dict[str, list[str]] = {}
        for row in recipients(services).values():
            entries = session.scalars(
                select(LedgerEntry.outcome)
                .where((LedgerEntry.seq == row.ledger_seq) | (LedgerEntry.ref_seq == row.ledger_seq))
                .order_by(LedgerEntry.seq)
            )
            found[row.recipient] = list(entries)
        assert ledger.verify(session).ok
        return found


def alerts(services: Services) -> list[str]:
    with services.db.transaction() as session:
        return list(session.scalars(select(Alert.kind).order_by(Alert.id)))


def statuses(services: Services) -> dict[str, str]:
    return {ext: row.status for ext, row in recipients(services).items()}


# ---- creating ---------------------------------------------------------------------------------------


def test_task_is_created_once_and_its_member_is_asked_to_confirm(
    wired: Services, sim: Simulator, clock: Clock
) -> None:
    befriend(wired, sim, "zhangsan", "wmA", "wmB")
    task_id = plan(wired, clock, ["wmA", "wmB", "wmStranger"])
    done = mass(wired, clock).drain()
    assert [(o.action, o.status) for o in done] == [("create", "created")]
    [msg] = sim.groupmsgs
    assert msg.sender == "zhangsan" and msg.fail_list == ["wmStranger"]
    assert msg.tasks["zhangsan"].external_userids == ["wmA", "wmB"]
    task = task_row(wired, task_id)
    assert task.status == MassTaskStatus.CREATED and task.msgid == msg.msgid
    assert task.fail_list == ["wmStranger"] and msg.text == task.text
    rows = recipients(wired)
    assert {ext: (r.status, r.wecom_id) for ext, r in rows.items()} == {
        "wmA": ("sending", msg.msgid),
        "wmB": ("sending", msg.msgid),
        "wmStranger": ("failed", msg.msgid),
    }
    assert "fail_list" in (rows["wmStranger"].error or "")
    assert outcomes(wired) == {"wmA": ["queued"], "wmB": ["queued"], "wmStranger": ["queued", "failed"]}
    with wired.db.transaction() as session:
        [reminder] = session.scalars(select(Delivery).where(Delivery.channel == Channel.APP_MESSAGE)).all()
    assert reminder.recipient == "zhangsan" and reminder.status == DeliveryStatus.QUEUED
    assert reminder.script_key == "mass_task_reminder" and "早报（2 位客户）" in reminder.text
    clock.advance(timedelta(seconds=30))
    assert mass(wired, clock).drain() == []  # nothing due before the first check
    clock.advance(timedelta(minutes=5))
    assert [(o.action, o.status) for o in mass(wired, clock).drain()] == [("check", "created")]
    assert sim.api_calls(CREATE_API) == 1


def test_nobody_sendable_fails_the_task_and_every_recipient(
    wired: Services, sim: Simulator, clock: Clock
) -> None:
    sim.config.groupmsg_quota_mode = "day1"
    befriend(wired, sim, "zhangsan", "wmA", "wmB")
    sim.member_sends_personal_mass("zhangsan", ["wmA", "wmB"])  # today's one message each
    task_id = plan(wired, clock, ["wmA", "wmB"])
    assert [o.status for o in mass(wired, clock).drain()] == ["failed"]
    task = task_row(wired, task_id)
    assert task.status == MassTaskStatus.FAILED and task.msgid is None and "41048" in (task.error or "")
    rows = recipients(wired)
    assert {(r.status, r.errcode) for r in rows.values()} == {("failed", 41048)}
    assert outcomes(wired) == {"wmA": ["queued", "failed"], "wmB": ["queued", "failed"]}
    assert alerts(wired) == ["mass.failed"]
    clock.advance(HOUR)
    assert mass(wired, clock).drain() == [] and sim.api_calls(CREATE_API) == 1


def test_transient_create_error_is_retried_later_and_creates_one_task(
    wired: Services, sim: Simulator, clock: Clock
) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    sim.inject_fault(CREATE_API, -1)  # WeCom answered "system busy": nothing was created
    assert [o.status for o in mass(wired, clock).drain()] == ["retry"]
    assert task_row(wired, task_id).status == MassTaskStatus.QUEUED
    assert statuses(wired) == {"wmA": "queued"} and sim.groupmsgs == []
    clock.advance(timedelta(seconds=wired.settings.worker.backoff_max_s))
    assert [o.status for o in mass(wired, clock).drain()] == ["created"]
    assert len(sim.groupmsgs) == 1 and sim.api_calls(CREATE_API) == 2


def test_opted_out_and_late_recipients_are_left_out_of_the_task(
    wired: Services, sim: Simulator, clock: Clock
) -> None:
    befriend(wired, sim, "zhangsan", "wmA", "wmOut", "wmLate")
    task_id = plan(wired, clock, ["wmA", "wmOut"])
    with wired.db.transaction() as session:
        lead = session.scalars(select(Lead).where(Lead.external_user_id == "wmOut")).one()
        lead.opted_out = True
    late = plan(wired, clock, ["wmLate"], deadline=clock.now + timedelta(seconds=30))
    clock.advance(timedelta(minutes=1))
    assert [o.status for o in mass(wired, clock).drain()] == ["created", "cancelled"]
    assert statuses(wired) == {"wmA": "sending", "wmOut": "cancelled", "wmLate": "expired"}
    [msg] = sim.groupmsgs
    assert msg.tasks["zhangsan"].external_userids == ["wmA"] and task_row(wired, task_id).msgid == msg.msgid
    assert task_row(wired, late).status == MassTaskStatus.CANCELLED
    assert outcomes(wired)["wmOut"] == ["queued", "cancelled"]


def test_kill_switch_and_paused_campaign_hold_creation(wired: Services, sim: Simulator, clock: Clock) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    with wired.db.transaction() as session:
        stop_sending(session, "olivia", "wrong report")
    assert mass(wired, clock).drain() == []
    with wired.db.transaction() as session:
        resume_sending(session, "olivia")
        session.scalars(select(Campaign)).one().status = CampaignStatus.PAUSED
    assert [(o.status, o.detail) for o in mass(wired, clock).drain()] == [("held", "campaign paused")]
    assert sim.api_calls(CREATE_API) == 0 and statuses(wired) == {"wmA": "queued"}
    with wired.db.transaction() as session:
        session.scalars(select(Campaign)).one().status = CampaignStatus.ACTIVE
    clock.advance(timedelta(minutes=2))
    assert [o.status for o in mass(wired, clock).drain()] == ["created"]
    assert task_row(wired, task_id).status == MassTaskStatus.CREATED


# ---- exactly once -------------------------------------------------------------------------------------


def lose_answer(
    wired: Services, monkeypatch: pytest.MonkeyPatch, raise_: BaseException | None = None
) -> None:
    """WeCom creates the task, but its answer never arrives (a read timeout, or the process dies)."""
    real = wired.client.add_msg_template

    def create(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        if raise_ is not None:
            raise raise_
        try:
            raise requests.ReadTimeout("read timed out")
        except requests.ReadTimeout as exc:
            raise WeComAPIError(-1, f"network error: {exc}", CREATE_API, kind=ErrorKind.TRANSIENT) from exc

    monkeypatch.setattr(wired.client, "add_msg_template", create)


def test_create_whose_answer_was_lost_is_flagged_unknown_and_never_repeated(
    wired: Services, sim: Simulator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    befriend(wired, sim, "zhangsan", "wmA", "wmB")
    task_id = plan(wired, clock, ["wmA", "wmB"])
    lose_answer(wired, monkeypatch)
    assert [o.status for o in mass(wired, clock).drain()] == [TASK_UNKNOWN]
    assert task_row(wired, task_id).status == TASK_UNKNOWN
    assert statuses(wired) == {"wmA": "unknown", "wmB": "unknown"}
    assert outcomes(wired) == {"wmA": ["queued", "unknown"], "wmB": ["queued", "unknown"]}
    assert alerts(wired) == ["mass.unknown"]
    clock.advance(timedelta(days=1))
    assert mass(wired, clock).drain() == [] and sim.api_calls(CREATE_API) == 1
    # A person finds the mass message in WeCom and records it; reconciliation takes over.
    [msg] = sim.groupmsgs
    monkeypatch.undo()
    resolved = mass(wired, clock).resolve_unknown(task_id, msg.msgid, actor="olivia")
    assert resolved.status == MassTaskStatus.CREATED
    sim.member_confirms_groupmsg(msg.msgid, "zhangsan")
    clock.advance(HOUR)
    assert [o.status for o in mass(wired, clock).drain()] == ["sent"]
    assert outcomes(wired) == {"wmA": ["queued", "unknown", "sent"], "wmB": ["queued", "unknown", "sent"]}
    assert sim.api_calls(CREATE_API) == 1


def test_unknown_task_resolved_as_never_created_is_created_once(
    wired: Services, sim: Simulator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    monkeypatch.setattr(
        wired.client,
        "add_msg_template",
        lambda *a, **k: (_ for _ in ()).throw(
            WeComAPIError(-1, "non-JSON response", CREATE_API, kind=ErrorKind.TRANSIENT)
        ),
    )
    assert [o.status for o in mass(wired, clock).drain()] == [TASK_UNKNOWN]
    monkeypatch.undo()
    with pytest.raises(ValueError, match="not unknown"):
        mass(wired, clock).resolve_unknown(task_id + 1, None, actor="olivia")
    mass(wired, clock).resolve_unknown(task_id, None, actor="olivia")
    assert statuses(wired) == {"wmA": "queued"}
    assert [o.status for o in mass(wired, clock).drain()] == ["created"]
    assert len(sim.groupmsgs) == 1
    assert outcomes(wired) == {"wmA": ["queued", "unknown", "queued"]}


class Died(BaseException):
    """The process stops abruptly (no handler runs)."""


def test_process_that_died_during_the_create_call_leaves_the_task_unknown(
    wired: Services, sim: Simulator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    lose_answer(wired, monkeypatch, Died())
    dead = mass(wired, clock, worker_id="dead")
    [(claimed, _)] = dead.claim()
    with pytest.raises(Died):
        dead.create(claimed)
    monkeypatch.undo()
    assert mass(wired, clock).drain() == []  # the lease still holds: nobody touches it
    clock.advance(timedelta(seconds=MassSendOptions().lease_s + 1))
    assert mass(wired, clock).drain() == []
    assert task_row(wired, task_id).status == TASK_UNKNOWN and statuses(wired) == {"wmA": "unknown"}
    assert sim.api_calls(CREATE_API) == 1 and alerts(wired) == ["mass.unknown"]


def test_lease_lapsed_before_anything_was_handed_to_wecom_is_simply_retried(
    wired: Services, sim: Simulator, clock: Clock
) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    assert mass(wired, clock, worker_id="dead").claim() == [(task_id, "create")]
    clock.advance(timedelta(seconds=MassSendOptions().lease_s + 1))
    assert [o.status for o in mass(wired, clock).drain()] == ["created"]
    assert len(sim.groupmsgs) == 1 and alerts(wired) == []


def test_answer_arriving_after_the_lease_lapsed_is_adopted(
    wired: Services, sim: Simulator, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    slow = mass(wired, clock, worker_id="slow")
    real = wired.client.add_msg_template
    later = Clock()
    later.now = clock.now + timedelta(seconds=MassSendOptions().lease_s + 1)

    def create(*args: Any, **kwargs: Any) -> Any:
        assert mass(wired, later).claim() == []  # meanwhile another worker flags the lapsed task
        assert task_row(wired, task_id).status == TASK_UNKNOWN
        return real(*args, **kwargs)

    monkeypatch.setattr(wired.client, "add_msg_template", create)
    [(claimed, _)] = slow.claim()
    assert slow.create(claimed).status == MassTaskStatus.CREATED
    task = task_row(wired, task_id)
    assert task.status == MassTaskStatus.CREATED and task.msgid == sim.groupmsgs[0].msgid
    assert statuses(wired) == {"wmA": "sending"} and alerts(wired) == ["mass.unknown", "mass.resolved"]


# ---- reconciling --------------------------------------------------------------------------------------


def test_member_send_is_reconciled_per_customer_with_ledger_outcomes(
    wired: Services, sim: Simulator, clock: Clock
) -> None:
    sim.config.groupmsg_quota_mode = "day1"
    befriend(wired, sim, "zhangsan", "wmSent", "wmGone", "wmFull")
    sim.member_sends_personal_mass("zhangsan", ["wmFull"])  # wmFull has had today's message
    task_id = plan(wired, clock, ["wmSent", "wmGone", "wmFull"])
    dispatcher = mass(wired, clock)
    assert [o.status for o in dispatcher.drain()] == ["created"]
    clock.advance(timedelta(seconds=30))
    assert dispatcher.drain() == []  # first check after a minute
    clock.advance(timedelta(seconds=30))
    assert [(o.status, o.detail) for o in dispatcher.drain()] == [("created", "3 awaiting the member")]
    msgid = task_row(wired, task_id).msgid
    assert msgid is not None
    sim.customer_deletes_member("zhangsan", "wmGone")
    sent = sim.member_confirms_groupmsg(msgid, "zhangsan")
    clock.advance(timedelta(minutes=2))
    assert [o.status for o in dispatcher.drain()] == ["sent"]
    rows = recipients(wired)
    assert {ext: (r.status, r.error) for ext, r in rows.items()} == {
        "wmSent": ("sent", None),
        "wmGone": ("failed", NOT_FRIEND_REASON),
        "wmFull": ("failed", OVER_QUOTA_REASON),
    }
    assert rows["wmSent"].sent_at == datetime.fromtimestamp(sent.send_time, UTC)
    assert outcomes(wired) == {
        "wmSent": ["queued", "sent"],
        "wmGone": ["queued", "failed"],
        "wmFull": ["queued", "failed"],
    }
    task = task_row(wired, task_id)
    assert task.status == MassTaskStatus.SENT and task.finished_at == clock.now
    with wired.db.transaction() as session:
        sent_entry = session.scalars(
            select(LedgerEntry).where(LedgerEntry.ref_seq == rows["wmSent"].ledger_seq)
        ).one()
        assert sent_entry.wecom_id == msgid
    clock.advance(timedelta(days=5))
    assert dispatcher.drain() == [] and sim.api_calls("externalcontact/remind_groupmsg_send") == 0


def test_still_dispatching_results_are_read_again_later(
    wired: Services, sim: Simulator, clock: Clock
) -> None:
    sim.config.groupmsg_dispatch_delay_s = 600
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    dispatcher = mass(wired, clock)
    dispatcher.drain()
    clock.advance(timedelta(minutes=1))
    [retry] = dispatcher.drain()
    assert (retry.status, retry.detail.split(":")[0]) == ("retry", "41063")
    task = task_row(wired, task_id)
    assert task.status == MassTaskStatus.CREATED and task.next_check_at == clock.now + timedelta(minutes=1)
    sim.advance(601)
    assert task.msgid is not None
    sim.member_confirms_groupmsg(task.msgid, "zhangsan")
    clock.advance(timedelta(minutes=1))
    assert [o.status for o in dispatcher.drain()] == ["sent"]
    assert statuses(wired) == {"wmA": "sent"}


def test_reminders_never_exceed_the_limit(wired: Services, sim: Simulator, clock: Clock) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    dispatcher = mass(wired, clock)
    dispatcher.drain()
    created = clock.now
    reminded_at = []
    while clock.now < created + timedelta(days=2, hours=23):  # follow the dispatcher's own schedule
        clock.now = task_row(wired, task_id).next_check_at
        before = len(sim.groupmsg_reminders)
        dispatcher.drain()
        if len(sim.groupmsg_reminders) > before:
            reminded_at.append(clock.now - created)
    assert reminded_at == [HOUR, 9 * HOUR, 17 * HOUR]
    assert task_row(wired, task_id).reminders == 3
    assert sim.api_calls("externalcontact/remind_groupmsg_send") == 3
    assert all(r.userids == ("zhangsan",) for r in sim.groupmsg_reminders)
    assert task_row(wired, task_id).status == MassTaskStatus.CREATED


def test_refused_reminder_stops_reminding(wired: Services, sim: Simulator, clock: Clock) -> None:
    sim.config.groupmsg_reminds_per_24h = 1  # someone else already used most of WeCom's allowance
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    dispatcher = mass(wired, clock)
    dispatcher.drain()
    for hours in (1, 9, 17, 30):
        clock.now = task_row(wired, task_id).created_at + timedelta(hours=hours)
        dispatcher.drain()
    assert sim.api_calls("externalcontact/remind_groupmsg_send") == 2
    assert len(sim.groupmsg_reminders) == 1 and task_row(wired, task_id).reminders == 3


def test_kill_switch_stops_reminders(wired: Services, sim: Simulator, clock: Clock) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    task_id = plan(wired, clock, ["wmA"])
    mass(wired, clock).drain()
    with wired.db.transaction() as session:
        stop_sending(session, "olivia", "wrong report")
    clock.advance(2 * HOUR)
    assert [o.status for o in mass(wired, clock).drain()] == ["created"]
    assert sim.api_calls("externalcontact/remind_groupmsg_send") == 0
    assert task_row(wired, task_id).reminders == 0


def test_unconfirmed_task_expires_after_the_horizon(wired: Services, sim: Simulator, clock: Clock) -> None:
    befriend(wired, sim, "zhangsan", "wmA", "wmB")
    task_id = plan(wired, clock, ["wmA", "wmB"])
    dispatcher = mass(wired, clock)
    dispatcher.drain()
    clock.advance(timedelta(days=3) - timedelta(minutes=1))
    assert [o.status for o in dispatcher.drain()] == ["created"]
    clock.advance(timedelta(minutes=2))
    assert [o.status for o in dispatcher.drain()] == ["cancelled"]
    task = task_row(wired, task_id)
    assert task.status == MassTaskStatus.CANCELLED and (task.error or "").startswith("expired")
    assert task.msgid is not None
    msg = sim.groupmsg(task.msgid)
    assert msg is not None and msg.cancelled
    with pytest.raises(SimulationError):
        sim.member_confirms_groupmsg(task.msgid, "zhangsan")
    assert statuses(wired) == {"wmA": "expired", "wmB": "expired"}
    assert outcomes(wired) == {"wmA": ["queued", "expired"], "wmB": ["queued", "expired"]}
    assert alerts(wired) == ["mass.expired"]


# ---- running ----------------------------------------------------------------------------------------


def test_run_forever_creates_a_task_when_woken(wired: Services, sim: Simulator) -> None:
    befriend(wired, sim, "zhangsan", "wmA")
    stop = threading.Event()
    dispatcher = MassTaskDispatcher(wired.settings, wired.db, wired.coordinator, wired.client)
    thread = threading.Thread(target=dispatcher.run_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        task_id = plan(wired, Clock(), ["wmA"])
        wired.coordinator.wake(MASS_CHANNEL)
        deadline = time.monotonic() + 10
        while task_row(wired, task_id).status != MassTaskStatus.CREATED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert task_row(wired, task_id).status == MassTaskStatus.CREATED
    finally:
        stop.set()
        wired.coordinator.wake(MASS_CHANNEL)
        thread.join(timeout=10)
    assert not thread.is_alive() and len(sim.groupmsgs) == 1
