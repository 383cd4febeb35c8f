"""`wecom-bot demo --once` runs the whole journey on the embedded default and reports it."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from bot.cli import main


def test_demo_journey_stores_each_event_once_and_refuses_the_forgery(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["demo", "--once", "--customers", "40", "--port", "0", "--data-dir", str(tmp_path / "demo")],
        env={"BOT_CONFIG": ""},
    )
    assert result.exit_code == 0, result.output
    assert "URL verification (GET echostr): passed" in result.output

    def figure(label: str) -> int:
        match = re.search(rf"{re.escape(label)}\s+(\d+)", result.output)
        assert match, label
        return int(match.group(1))

    sent = figure("callbacks sent by the simulated corp")
    assert figure("events stored (each exactly once)") == sent
    assert figure("HTTP deliveries (including WeCom-style duplicates)") >= sent
    assert figure("forged callbacks refused") == 1
    assert figure("events done") + figure("events ignored") == sent
    assert figure("customers who removed their member") == 2
