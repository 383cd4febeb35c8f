"""Campaign dry runs as background jobs: stored as planned, claimed once, resumed, expired, shown."""

from __future__ import annotations

import csv
import io
import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from bot.campaigns import previews
from bot.campaigns.planner import PlannedRecipient, RunPlan, dry_run_campaign
from bot.campaigns.previews import PreviewRunner, request_preview
from bot.config import Settings
from bot.console import views_previews
from bot.db import Database
from bot.services import Services
from bot.worker import Worker
from handlers import build_dispatcher
from models.audit import AuditEntry
from models.previews import CampaignPreview, PreviewRecipient
from models.variants import VariantAssignment
from scripts_library import catalogue as cat
from tests.scripts_fixtures import POLICY, approved
from tests.test_console_auth import make_app
from tests.test_console_scripts import signed_in
from tests.test_planner import TUESDAY, body, campaign, lead, mixed_audience, relate

T0 = TUESDAY - timedelta(hours=7)  # when the previews are requested and leased


def _seed(db: Database, extra: int = 5) -> None:
    """An approved morning report, its campaign and leads of every channel and skip reason."""
    with db.transaction() as session:
        approved(session, "morning_report", "morning_report", body("morning_report"))
        mixed_audience(session)
        for i in range(extra):
            lead(session, f"extra{i}", owner="zhangsan")
            relate(session, "zhangsan", f"extra{i}")
        campaign(session)


def _queue(db: Database, key: str = "morning", at: datetime = TUESDAY, actor: str = "olivia") -> int:
    with db.transaction() as session:
        return request_preview(session, key, at, actor, now=T0).id


def _stored(db: Database, preview_id: int) -> tuple[CampaignPreview, RunPlan]:
    """The preview row and its plan with every stored recipient, as the console reads them."""
    with db.read() as session:
        row = session.get(CampaignPreview, preview_id)
        assert row is not None
        plan = previews.stored_plan(row, "morning")
        plan.recipients = previews.recipients_page(session, preview_id, 0, 10_000)
    return row, plan


class Clock:
    """A settable clock for leases."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_stored_preview_equals_the_planners_in_memory_dry_run(db: Database, settings: Settings) -> None:
    settings = settings.replace(campaigns={"mass_task_max": 2})
    _seed(db)
    preview_id = _queue(db)
    runner = PreviewRunner(settings, db, batch_size=3)
    assert runner.run_once() == preview_id
    assert runner.run_once() is None  # nothing else is due
    row, stored = _stored(db, preview_id)
    expected = dry_run_campaign(db, settings, "morning", TUESDAY, batch_size=3)
    assert stored == expected  # text, counts, tasks and every recipient, in lead order
    assert len(stored.recipients) == 13 and stored.tasks and stored.message is not None
    assert (row.status, row.progress, row.attempts, row.locked_by) == ("done", 13, 1, None)
    assert row.finished_at is not None and row.error is None


def test_a_preview_keeps_only_one_batch_of_recipients_in_memory(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(db)
    preview_id = _queue(db)
    stored_before: list[int] = []
    returned: list[RunPlan] = []
    real = previews.dry_run_campaign

    def spy(*args: Any, sink: Callable[[list[PlannedRecipient]], None], **kw: Any) -> RunPlan:
        def counting_sink(batch: list[PlannedRecipient]) -> None:
            assert 0 < len(batch) <= 4
            with db.read() as session:  # earlier batches are already committed, not held back
                stored_before.append(session.scalar(select(func.count()).select_from(PreviewRecipient)) or 0)
            sink(batch)

        plan = real(*args, sink=counting_sink, **kw)
        returned.append(plan)
        return plan

    monkeypatch.setattr(previews, "dry_run_campaign", spy)
    PreviewRunner(settings, db, batch_size=4).run_once()
    assert stored_before == [0, 4, 8, 12]  # 13 leads in batches of 4, each stored before the next
    assert returned[0].recipients == []  # the planner handed every recipient over, kept none
    assert _stored(db, preview_id)[0].progress == 13


def test_two_runners_claim_each_preview_once(db: Database, settings: Settings) -> None:
    _seed(db, extra=0)
    with db.transaction() as session:
        campaign(session, key="evening", audience={"tags": []})
    ids = [_queue(db, key, TUESDAY + timedelta(days=d)) for d in range(3) for key in ("morning", "evening")]
    runners = [PreviewRunner(settings, db, worker_id=f"runner-{n}") for n in range(2)]
    ran: dict[str, list[int]] = {r.worker_id: [] for r in runners}
    start = threading.Barrier(2)

    def work(runner: PreviewRunner) -> None:
        start.wait()
        while (preview_id := runner.run_once()) is not None:
            ran[runner.worker_id].append(preview_id)

    threads = [threading.Thread(target=work, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(ran["runner-0"] + ran["runner-1"]) == sorted(ids)  # every one run, none twice
    with db.read() as session:
        rows = session.scalars(select(CampaignPreview)).all()
    assert {(r.status, r.attempts) for r in rows} == {("done", 1)}


def test_a_claim_skips_a_preview_another_runner_holds_locked(db: Database, settings: Settings) -> None:
    if not db.is_postgres:
        pytest.skip("row locks with SKIP LOCKED are PostgreSQL's; SQLite writes one transaction at a time")
    _seed(db, extra=0)
    first, second = _queue(db), _queue(db, at=TUESDAY + timedelta(days=1))
    with db.transaction() as holder:  # another runner in the middle of claiming the first
        holder.scalars(select(CampaignPreview).where(CampaignPreview.id == first).with_for_update()).one()
        started = time.monotonic()
        assert PreviewRunner(settings, db).claim() == second  # not waiting for the lock
        assert time.monotonic() - started < 2


def test_a_crashed_run_is_claimed_again_after_its_lease_and_the_late_runner_writes_nothing(
    db: Database, settings: Settings
) -> None:
    _seed(db)
    preview_id = _queue(db)
    clock = Clock(T0)
    crashed = PreviewRunner(settings, db, worker_id="crashed", clock=clock, lease_s=60, batch_size=3)
    assert crashed.claim() == preview_id
    begun = crashed._begin(preview_id)
    assert begun is not None
    partial = dry_run_campaign(db, settings, "morning", TUESDAY).recipients[:3]
    crashed._store(preview_id, partial)  # one batch stored, then the process died
    taker = PreviewRunner(settings, db, worker_id="taker", clock=clock, lease_s=60, batch_size=3)
    clock.now = T0 + timedelta(seconds=59)
    assert taker.claim() is None  # the lease still holds
    clock.now = T0 + timedelta(seconds=61)
    assert taker.claim() == preview_id
    with pytest.raises(previews._Released):  # the first runner wakes up: nothing more of it is kept
        crashed._store(preview_id, partial)
    assert taker.run(preview_id) == "done"
    row, stored = _stored(db, preview_id)
    assert stored.recipients == dry_run_campaign(db, settings, "morning", TUESDAY).recipients  # no duplicates
    assert (row.attempts, row.progress) == (2, 13)
    assert not crashed._finish(preview_id, stored)  # a late finish changes nothing


def test_a_preview_that_keeps_crashing_fails_with_the_reason(db: Database, settings: Settings) -> None:
    _seed(db)
    preview_id = _queue(db)
    clock = Clock(T0)
    for attempt in range(previews.MAX_ATTEMPTS + 1):
        clock.now = T0 + timedelta(minutes=10 * attempt)
        assert PreviewRunner(settings, db, worker_id=f"r{attempt}", clock=clock).claim() == preview_id
    last = PreviewRunner(settings, db, worker_id=f"r{previews.MAX_ATTEMPTS}", clock=clock)
    assert last.run(preview_id) == "failed"
    row, _plan = _stored(db, preview_id)
    assert row.error is not None and "gave up after 3 attempts" in row.error


def test_a_stopping_runner_hands_the_preview_back_at_once(db: Database, settings: Settings) -> None:
    _seed(db)
    preview_id = _queue(db)
    stop = threading.Event()
    stop.set()
    assert PreviewRunner(settings, db, stop=stop).run_once() == preview_id
    row, _plan = _stored(db, preview_id)
    assert (row.status, row.attempts, row.locked_by, row.lease_until) == ("queued", 0, None, None)
    assert PreviewRunner(settings, db).run_once() == preview_id  # claimed at once, not after a lease
    assert _stored(db, preview_id)[0].status == "done"


def test_a_preview_that_raises_fails_with_the_error_and_keeps_no_recipients(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(db)
    preview_id = _queue(db)
    real = previews.dry_run_campaign

    def broken(*args: Any, sink: Callable[[list[PlannedRecipient]], None], **kw: Any) -> RunPlan:
        real(*args, sink=sink, **kw)
        raise RuntimeError("audience index missing")

    monkeypatch.setattr(previews, "dry_run_campaign", broken)
    runner = PreviewRunner(settings, db)
    assert runner.claim() == preview_id
    assert runner.run(preview_id) == "failed"
    row, stored = _stored(db, preview_id)
    assert (
        row.error == "RuntimeError: audience index missing" and stored.recipients == [] and row.progress == 0
    )


def test_finished_previews_beyond_the_newest_per_campaign_expire_with_their_recipients(
    db: Database, settings: Settings
) -> None:
    _seed(db, extra=0)
    with db.transaction() as session:
        campaign(session, key="evening", audience={"tags": []})
    waiting = _queue(db, at=TUESDAY - timedelta(days=1))  # oldest, but still queued: never deleted
    runner = PreviewRunner(settings, db, keep=2)
    runner.claim()  # takes `waiting`; left running with a live lease
    done = []
    for d in range(4):
        done.append(_queue(db, at=TUESDAY + timedelta(days=d)))
        runner.run(runner.claim() or 0)
    other = _queue(db, "evening")
    runner.run(runner.claim() or 0)
    with db.read() as session:
        kept = set(session.scalars(select(CampaignPreview.id)))
        recipient_owners = set(session.scalars(select(PreviewRecipient.preview_id).distinct()))
    assert kept == {waiting, done[2], done[3], other}
    assert recipient_owners == {done[2], done[3], other}


def test_requesting_a_preview_is_audited_and_reuses_an_unfinished_one(db: Database) -> None:
    _seed(db, extra=0)
    first = _queue(db)
    assert _queue(db, actor="chen") == first  # the same occurrence still queued: not queued twice
    later = _queue(db, at=TUESDAY + timedelta(days=1))
    assert later != first
    with db.read() as session:
        audits = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.target, AuditEntry.detail)
            .where(AuditEntry.action == "campaign.preview")
            .order_by(AuditEntry.id)
        ).all()
    assert [(a, b, c, d["preview"]) for a, b, c, d in audits] == [
        ("olivia", "campaign.preview", "campaign:morning", first),
        ("olivia", "campaign.preview", "campaign:morning", later),
    ]
    with db.transaction() as session, pytest.raises(previews.PreviewError, match="no campaign 'nope'"):
        request_preview(session, "nope", TUESDAY, "olivia")
    with db.transaction() as session, pytest.raises(previews.PreviewError, match="aware"):
        request_preview(session, "morning", TUESDAY.replace(tzinfo=None), "olivia")


def test_the_worker_runs_queued_previews_with_one_runner_per_process(services: Services) -> None:
    _seed(services.db, extra=0)
    preview_id = _queue(services.db)
    stop = threading.Event()
    workers = [
        Worker(services.settings, services.db, services.coordinator, build_dispatcher(), worker_id=f"w{n}")
        for n in range(2)
    ]
    threads = [threading.Thread(target=w.run_forever, args=(stop,)) for w in workers]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 20
        while _stored(services.db, preview_id)[0].status != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored(services.db, preview_id)[0].status == "done"
        names = [t.name for t in threading.enumerate()]
        assert names.count("previews") == 1
        assert previews.start_runner(services.settings, services.db, services.coordinator, stop) is None
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    deadline = time.monotonic() + 5
    while "previews" in [t.name for t in threading.enumerate()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "previews" not in [t.name for t in threading.enumerate()]


# --- the console -------------------------------------------------------------------------------------

PHONE_ID = "wm13812345678"
MASKED_ID = "wm138****5678"


def _console(services: Services, page_size: int = 5) -> Flask:
    services.settings = services.settings.replace(console={"page_size": page_size})
    app = make_app(services)
    _seed(services.db)
    with services.db.transaction() as session:
        lead(session, PHONE_ID, owner="zhangsan")
        relate(session, "zhangsan", PHONE_ID)
    return app


def _text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def test_an_operator_requests_a_preview_watches_it_run_and_reads_the_result(services: Services) -> None:
    app = _console(services)
    operator = signed_in(app, "olivia")
    operator.get("/console/campaigns/morning")
    response = operator.post("/console/campaigns/morning/previews", {"at": "2026-11-24T08:30"})
    assert response.status_code == 302
    page_url = response.location
    waiting = operator.get(page_url)
    assert waiting.headers["Refresh"] == str(views_previews.REFRESH_S)  # reloads itself, no script needed
    assert 'data-testid="preview-status">排队中' in _text(waiting)
    assert (
        "/previews/" in _text(operator.get("/console/campaigns/morning")).split('data-testid="previews"')[1]
    )

    PreviewRunner(services.settings, services.db).run_once()
    done = operator.get(page_url)
    assert "Refresh" not in done.headers
    page = _text(done)
    text = re.search(r'data-testid="preview-text">([^<]*)<', page)
    assert text is not None and "市场有风险" in text.group(1)
    assert "<strong>14</strong>" in page and 'data-testid="preview-tasks"' in page
    first = page.split('data-testid="preview-recipients"')[1]
    assert "kf_open" in first and "extra0" not in first and "下一页" in first  # five per page
    pages = [_text(operator.get(f"{page_url}?rpage={n}")) for n in range(2, 4)]
    shown = "".join(p.split('data-testid="preview-recipients"')[1] for p in pages)
    assert MASKED_ID in shown and PHONE_ID not in shown  # operators see customers masked
    admin = _text(signed_in(app, "ada").get(f"{page_url}?rpage=3"))
    assert PHONE_ID in admin.split('data-testid="preview-recipients"')[1]


def test_a_preview_exports_every_recipient_as_csv_streamed_from_the_database(services: Services) -> None:
    app = _console(services)
    preview_id = _queue(services.db)
    compliance = signed_in(app, "chen")
    url = f"/console/campaigns/morning/previews/{preview_id}/recipients.csv"
    assert compliance.get(url).status_code == 409  # not finished yet
    PreviewRunner(services.settings, services.db).run_once()
    response = compliance.get(url)
    assert response.status_code == 200 and "Content-Length" not in response.headers  # streamed
    assert response.headers["Content-Type"].startswith("text/csv")
    assert f'filename="preview_morning_{preview_id}.csv"' in response.headers["Content-Disposition"]
    assert response.data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(response.data.decode("utf-8-sig"))))
    expected = dry_run_campaign(services.db, services.settings, "morning", TUESDAY).recipients
    assert [PlannedRecipient(int(r.pop("lead_id")), **r) for r in rows] == [
        PlannedRecipient(r.lead_id, r.external_user_id, r.channel, r.skip_reason or "", r.sender, r.open_kfid)
        for r in expected
    ]
    operator_rows = _text(signed_in(app, "olivia").get(url))
    assert MASKED_ID in operator_rows and PHONE_ID not in operator_rows


def test_bad_input_queues_nothing_and_roles_are_enforced(services: Services) -> None:
    app = _console(services)
    operator = signed_in(app, "olivia")
    operator.get("/console/campaigns/morning")
    bad = operator.post("/console/campaigns/morning/previews", {"at": "tomorrow"})
    assert bad.status_code == 302 and "/console/campaigns/morning" in bad.location
    assert "YYYY-MM-DDTHH:MM" in _text(operator.get(bad.location))
    assert operator.post("/console/campaigns/nope/previews", {"at": "2026-11-24T08:30"}).status_code == 404
    no_token = operator.client.post("/console/campaigns/morning/previews", data={"at": "2026-11-24T08:30"})
    assert no_token.status_code == 400
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(CampaignPreview)) == 0
    preview_id = _queue(services.db)
    manager = signed_in(app, "mia")
    assert manager.get("/console/campaigns/morning").status_code == 403  # its page carries a CSRF token
    assert manager.post("/console/campaigns/morning/previews", {"at": "2026-11-24T08:30"}).status_code == 403
    page = f"/console/campaigns/morning/previews/{preview_id}"
    assert manager.get(page).status_code == 403 and manager.get(f"{page}/recipients.csv").status_code == 403
    compliance = signed_in(app, "chen")
    compliance.get("/console/campaigns/morning")
    assert (
        compliance.post("/console/campaigns/morning/previews", {"at": "2026-11-25T08:30"}).status_code == 302
    )
    with services.db.transaction() as session:
        campaign(session, key="evening")
    assert compliance.get(f"/console/campaigns/evening/previews/{preview_id}").status_code == 404


def test_a_failed_preview_shows_why(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _console(services)
    preview_id = _queue(services.db)

    def broken(*args: Any, **kw: Any) -> RunPlan:
        raise RuntimeError("database went away")

    monkeypatch.setattr(previews, "dry_run_campaign", broken)
    PreviewRunner(services.settings, services.db).run_once()
    page = _text(signed_in(app, "olivia").get(f"/console/campaigns/morning/previews/{preview_id}"))
    assert "预览失败：RuntimeError: database went away" in page


def test_expired_previews_are_gone_from_the_console(services: Services) -> None:
    app = _console(services)
    ids = [_queue(services.db, at=TUESDAY + timedelta(days=d)) for d in range(3)]
    runner = PreviewRunner(services.settings, services.db, keep=2)
    while runner.run_once() is not None:
        pass
    operator = signed_in(app, "olivia")
    assert operator.get(f"/console/campaigns/morning/previews/{ids[0]}").status_code == 404
    assert operator.get(f"/console/campaigns/morning/previews/{ids[2]}").status_code == 200


def test_a_preview_of_a_report_under_ab_test_shows_every_variant_and_assigns_nobody(
    services: Services,
) -> None:
    app = _console(services)
    with services.db.transaction() as session:
        b_body = body("morning_report").replace("隔夜要闻", "海外要闻")
        saved = cat.save_draft(session, "morning_report", b_body, "olivia", POLICY)
        cat.submit(session, "morning_report", saved.version.number, "olivia", POLICY)
        cat.approve(session, "morning_report", saved.version.number, "chen", POLICY, as_variant=True)
    operator = signed_in(app, "olivia")
    operator.get("/console/campaigns/morning")
    requested = operator.post("/console/campaigns/morning/previews", {"at": "2026-11-24T08:30"})
    assert requested.status_code == 302 and requested.location
    page_url = requested.location
    PreviewRunner(services.settings, services.db).run_once()
    page = _text(operator.get(page_url))
    texts = re.findall(r'data-testid="preview-text">([^<]*)<', page)
    assert len(texts) == 2 and "隔夜要闻" in texts[0] and "海外要闻" in texts[1]
    assert 'data-testid="preview-variants">该话术正在进行 A/B 测试' in page
    with services.db.read() as session:
        assert session.scalar(select(func.count()).select_from(VariantAssignment)) == 0
