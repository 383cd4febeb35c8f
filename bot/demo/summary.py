"""The demo's closing summary table and the console logins."""

from __future__ import annotations

import click

from bot.demo.arrival import DemoReport
from bot.demo.journey import JourneyReport


def _table(title: str, rows: list[tuple[str, object]]) -> None:
    click.secho(title, bold=True)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        click.echo(f"  {label.ljust(width)}  {value!s:>6}")


def print_report(report: DemoReport, journey: JourneyReport, seconds: float) -> None:
    """Show what happened as small tables, stage by stage."""
    click.echo("")
    arrival: list[tuple[str, object]] = [
        ("customers who scanned a hook-code QR", report.customers),
        ("callback events stored (each exactly once)", report.stored),
        ("forged callbacks refused", report.refused),
        ("approved welcomes delivered to WeCom", report.welcomes),
        ("welcome latency p50 ms (WeCom event → sent)", round(report.welcome_p50_ms)),
        ("welcome latency max ms (WeCom allows 20000)", round(report.welcome_max_ms)),
        ("lead tags marked in WeCom", report.tags_in_wecom),
        ("customers who removed their member", report.removed),
    ]
    arrival += [(f"events {status}", count) for status, count in sorted(report.by_status.items())]
    arrival += [(f"welcomes {outcome}", count) for outcome, count in sorted(report.welcome_failures.items())]
    _table("Arrival", arrival)
    by_code = sorted(report.by_code.items(), key=lambda kv: -kv[1])
    _table("Leads by hook code", [(code, count) for code, count in by_code])
    conversion: list[tuple[str, object]] = [
        ("customers who opened the kf link", journey.kf_customers),
        ("subscribed to the morning report", journey.subscribed),
        ("opted out (TD)", journey.opted_out),
    ]
    conversion += [
        (f"morning report recipients by {channel}", count)
        for channel, count in sorted(journey.report_by_channel.items())
    ]
    conversion += [
        ("mass tasks confirmed by members", journey.mass_tasks_sent),
        ("course registrations", journey.registrations),
        ("course attendance imported", journey.attendance),
        ("qualified leads", journey.qualified),
        ("lead cards offered to managers", journey.handed_off),
        ("accepted by a manager", journey.accepted),
        ("reassigned after the answer time", journey.reassigned),
        (
            "send-ledger entries (hash chain intact)"
            if journey.ledger_intact
            else "send-ledger entries (BROKEN)",
            journey.ledger_entries,
        ),
    ]
    _table("Conversion", conversion)
    click.echo(f"  (all settled in {seconds:.1f} s)")


def print_logins(console_url: str, logins: dict[str, str]) -> None:
    """The console's address and the demo accounts' generated passwords."""
    click.echo("")
    click.secho(f"Console: {console_url}", bold=True)
    for username, password in logins.items():
        click.echo(f"  {username} / {password}")
