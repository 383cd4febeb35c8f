"""`wecom-bot demo --once` runs the whole journey on the embedded default and reports it."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from bot.cli import main


def test_demo_journey_welcomes_every_customer_and_refuses_the_forgery(tmp_path: Path) -> None:
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
    assert figure("send-ledger entries (hash chain intact)") == 2 * customers  # queued + outcome, per welcome
    leads = sum(
        int(n) for n in re.findall(r"^  (?:DY2024|XHS888|BILI01|WB666|ZH100)\s+(\d+)$", result.output, re.M)
    )
    assert leads == customers
