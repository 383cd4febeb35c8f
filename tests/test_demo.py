"""`wecom-bot demo --once` runs the whole journey on the embedded default and reports it."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from bot.cli import main


def test_demo_journey_welcomes_converts_and_hands_off_with_consistent_figures(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["demo", "--once", "--customers", "40", "--port", "0", "--data-dir", str(tmp_path / "demo")],
        env={"BOT_CONFIG": ""},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "URL verification (GET echostr): passed" in result.output

    def figure(label: str) -> int:
        match = re.search(rf"{re.escape(label)}\s+(\d+)", result.output)
        assert match, label
        return int(match.group(1))

    customers = figure("customers who scanned a hook-code QR")
    removed = figure("customers who removed their member")
    assert (customers, removed) == (40, 2)
    assert figure("callback events stored (each exactly once)") == customers + removed
    assert figure("events done") == customers + removed
    assert figure("forged callbacks refused") == 1
    # A customer who leaves before their welcome goes out is not welcomed: nothing else may be missing.
    not_sent = {m[0]: int(m[1]) for m in re.findall(r"^  welcomes (\S+)\s+(\d+)$", result.output, re.M)}
    assert set(not_sent) <= {"cancelled"}
    assert figure("approved welcomes delivered to WeCom") + sum(not_sent.values()) == customers
    assert figure("welcome latency max ms (WeCom allows 20000)") < 20000
    assert figure("lead tags marked in WeCom") >= 2 * (customers - removed)
    leads = sum(
        int(n) for n in re.findall(r"^  (?:DY2024|XHS888|BILI01|WB666|ZH100)\s+(\d+)$", result.output, re.M)
    )
    assert leads == customers

    # kf link: who subscribed or opted out; the morning report twice, by kf while the window is open,
    # then by mass tasks the members confirm.
    talked = figure("customers who opened the kf link")
    subscribed, opted_out = figure("subscribed to the morning report"), figure("opted out (TD)")
    assert 0 < talked <= customers - removed
    assert subscribed > 0 and opted_out > 0 and subscribed + opted_out <= talked
    assert figure("morning report recipients by kf") == subscribed
    assert figure("morning report recipients by mass") == subscribed
    assert figure("mass tasks confirmed by members") > 0
    registrations = figure("course registrations")
    assert 0 < figure("course attendance imported") < registrations <= talked
    # Qualified leads are offered to managers: all but one accept, the ignored card is reassigned.
    qualified = figure("qualified leads")
    assert qualified >= 2
    assert figure("accepted by a manager") == qualified - 1
    assert figure("reassigned after the answer time") == 1
    assert figure("lead cards offered to managers") == qualified + 1
    ledger_entries = figure("send-ledger entries (hash chain intact)")
    assert ledger_entries > 2 * customers  # welcomes plus kf replies, reports and cards
    assert "BROKEN" not in result.output

    # The console's address and a generated password per demo account.
    assert re.search(r"^Console: http://127\.0\.0\.1:\d+/console$", result.output, re.M)
    logins = dict(re.findall(r"^  (demo_\w+) / (\S+)$", result.output, re.M))
    assert set(logins) == {"demo_operator", "demo_compliance"}
    assert all(len(password) >= 12 for password in logins.values())
