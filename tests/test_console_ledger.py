"""Console ledger pages: search by recipient, dates, script and outcome; chain check; exports by role."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

from flask import Flask

from bot.services import Services
from scripts_library.ledger import MessageIdentity, append_message, append_outcome, compute_hash
from tests.test_console_auth import make_app
from tests.test_console_scripts import signed_in
from tests.test_ledger import tamper

NOV = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 Shanghai
PHONE_TEXT = "请致电 13812345678 联系您的客户经理。"
MASKED_TEXT = "请致电 138****5678 联系您的客户经理。"


def _message(services: Services, recipient: str, script: str, at: datetime, text: str = "早上好") -> int:
    with services.db.transaction() as session:
        row = append_message(
            session,
            recipient=recipient,
            sender="zhangsan",
            channel="mass_template",
            script_key=script,
            script_version=1,
            content_hash="c" * 64,
            approval_id=1,
            rendered_text=text,
            lint_verdict="pass",
            lexicon_version="2026.11",
            now=at,
        )
        return row.seq


def _outcome(services: Services, seq: int, recipient: str, outcome: str, at: datetime) -> None:
    with services.db.transaction() as session:
        identity = MessageIdentity(recipient, "zhangsan", "mass_template")
        append_outcome(session, seq, outcome, now=at, message=identity)


def _seeded(services: Services, page_size: int = 25) -> Flask:
    """Messages and outcomes across November and one in October."""
    services.settings = services.settings.replace(console={"page_size": page_size})
    app = make_app(services)
    first = _message(services, "cust_a", "morning_report", NOV, PHONE_TEXT)
    _outcome(services, first, "cust_a", "sent", NOV + timedelta(minutes=1))
    second = _message(services, "cust_b", "course_invite", NOV + timedelta(days=1))
    _outcome(services, second, "cust_b", "failed", NOV + timedelta(days=1, minutes=1))
    _message(services, "cust_a", "course_invite", NOV + timedelta(days=2))
    _message(services, "cust_old", "morning_report", datetime(2026, 10, 5, 2, 0, tzinfo=UTC))
    return app


def _rows(page: str) -> list[str]:
    table = page.split('data-testid="ledger"')[1].split("<tbody>")[1].split("</tbody>")[0]
    return re.findall(r"<tr>(.*?)</tr>", table, re.S)


NOVEMBER = "start=2026-11-01&end=2026-11-30"


def test_search_filters_by_recipient_script_outcome_and_dates(services: Services) -> None:
    app = _seeded(services)
    reviewer = signed_in(app, "chen")
    everything = _rows(reviewer.get(f"/console/ledger?{NOVEMBER}").get_data(as_text=True))
    assert len(everything) == 5 and "cust_old" not in "".join(everything)
    by_recipient = _rows(reviewer.get(f"/console/ledger?{NOVEMBER}&recipient=cust_a").get_data(as_text=True))
    assert len(by_recipient) == 3 and all("cust_a" in row for row in by_recipient)
    by_script = _rows(reviewer.get(f"/console/ledger?{NOVEMBER}&script=course_invite").get_data(as_text=True))
    assert len(by_script) == 2
    failed = _rows(reviewer.get(f"/console/ledger?{NOVEMBER}&outcome=failed").get_data(as_text=True))
    assert len(failed) == 1 and "cust_b" in failed[0]
    october = _rows(reviewer.get("/console/ledger?start=2026-10-01&end=2026-10-31").get_data(as_text=True))
    assert len(october) == 1 and "cust_old" in october[0]
    bad = reviewer.get("/console/ledger?start=2026-11-30&end=2026-11-01")
    assert bad.status_code == 400 and 'role="alert"' in bad.get_data(as_text=True)


def test_search_pages_newest_first_and_masks_for_operators(services: Services) -> None:
    app = _seeded(services, page_size=5)
    for n in range(3):
        _message(services, f"extra{n}", "morning_report", NOV + timedelta(days=3, minutes=n))
    operator = signed_in(app, "olivia")
    first = operator.get(f"/console/ledger?{NOVEMBER}").get_data(as_text=True)
    assert "extra2" in _rows(first)[0] and len(_rows(first)) == 5
    assert 'data-testid="export"' not in first and 'data-testid="verify-link"' not in first
    second = operator.get(f"/console/ledger?{NOVEMBER}&page=2").get_data(as_text=True)
    assert len(_rows(second)) == 3 and MASKED_TEXT in second and PHONE_TEXT not in second
    admin = signed_in(app, "ada").get(f"/console/ledger?{NOVEMBER}&page=2").get_data(as_text=True)
    assert PHONE_TEXT in admin
    assert signed_in(app, "mia").get("/console/ledger").status_code == 403


def test_verify_reports_an_intact_chain_then_the_tampered_entry(services: Services) -> None:
    app = _seeded(services)
    reviewer = signed_in(app, "chen")
    intact = reviewer.get("/console/ledger/verify").get_data(as_text=True)
    head = re.search(r'data-testid="head">(\d+) ([0-9a-f]{64})<', intact)
    assert head is not None and head.group(1) == "6"
    assert "flash-success" in intact.split('data-testid="verify-verdict"')[0][-40:]
    tamper(services.db, "UPDATE send_ledger SET rendered_text = '保本稳赚' WHERE seq = 3")
    broken = reviewer.get("/console/ledger/verify").get_data(as_text=True)
    problems = broken.split('data-testid="problems"')[1]
    assert re.search(r"<td>3</td><td><code>altered</code>", problems)
    assert signed_in(app, "olivia").get("/console/ledger/verify").status_code == 403


def test_export_downloads_the_range_with_hashes_for_admin_and_compliance(services: Services) -> None:
    app = _seeded(services)
    response = signed_in(app, "ada").get(f"/console/ledger/export?{NOVEMBER}&format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "ledger_20261101_20261130.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert [r["seq"] for r in rows] == ["1", "2", "3", "4", "5"] and rows[0]["rendered_text"] == PHONE_TEXT
    lines = (
        signed_in(app, "chen").get(f"/console/ledger/export?{NOVEMBER}&format=jsonl").get_data(as_text=True)
    )
    records = [json.loads(line) for line in lines.splitlines()]
    assert len(records) == 5
    assert all(compute_hash(r["prev_hash"], r) == r["entry_hash"] for r in records)
    operator = signed_in(app, "olivia")
    assert operator.get(f"/console/ledger/export?{NOVEMBER}&format=csv").status_code == 403
    reviewer = signed_in(app, "chen")
    assert reviewer.get(f"/console/ledger/export?{NOVEMBER}&format=xml").status_code == 400
    assert reviewer.get("/console/ledger/export?start=2026-13-01&format=csv").status_code == 400
