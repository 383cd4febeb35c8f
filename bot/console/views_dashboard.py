"""The data-review dashboard: funnels, daily adds, script results, risk words and handoff speed, with CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import abort, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from bot.console import dashboard as dash
from bot.console.auth import roles_required, services
from bot.console.blueprint import bp, render_error
from bot.console.presenting import CATEGORY_LABELS
from models.base import utcnow
from models.leads import PLATFORM_NAMES
from models.users import Role

VIEWERS = (Role.ADMIN, Role.OPERATOR, Role.COMPLIANCE)
UTF8_BOM = "\ufeff"  # lets Excel read the CSV as UTF-8, so Chinese text shows correctly

STEP_LABELS = {
    "added": _l("Added"),
    "engaged": _l("Engaged"),
    "subscribed": _l("Subscribed"),
    "registered": _l("Registered"),
    "qualified": _l("Qualified"),
    "accepted": _l("Accepted"),
    "converted": _l("Converted"),
}


@dataclass(frozen=True)
class Table:
    """One dashboard table: the same header and cells on the page and in its CSV file."""

    name: str
    title: str
    columns: Sequence[str]
    rows: list[list[Any]]


_PLATFORM_NAMES = {str(code): name for code, name in PLATFORM_NAMES.items()}


def _platform(code: str) -> str:
    """The platform's name as staff know it; leads without a hook code are unattributed."""
    return _PLATFORM_NAMES.get(code, code) if code else _("Unattributed")


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _funnel_table(name: str, title: str, rows: list[dash.FunnelRow], by_code: bool) -> Table:
    head = [_("Hook code")] if by_code else []
    columns = [
        *head,
        _("Platform"),
        *(str(STEP_LABELS[s]) for s in dash.FUNNEL_STEPS),
        _("Conversion rate (%)"),
    ]
    cells = [
        [
            *([r.hook_code or _("Unattributed")] if by_code else []),
            _platform(r.platform),
            *(getattr(r, step) for step in dash.FUNNEL_STEPS),
            _percent(r.converted, r.added),
        ]
        for r in rows
    ]
    return Table(name, title, columns, cells)


def _daily_table(rows: list[dash.DailyAdds]) -> Table:
    cells = [[r.day.isoformat(), _platform(r.platform), r.added] for r in rows]
    return Table("adds_per_day", _("Leads added per day"), [_("Day"), _("Platform"), _("Added")], cells)


def _scripts_table(rows: list[dash.ScriptResult]) -> Table:
    columns = [
        _("Script"),
        _("Version"),
        _("A/B variant"),
        _("Sent"),
        _("Delivered"),
        _("Replied within 48 h"),
        _("Registered"),
        _("Qualified"),
    ]
    cells = [
        [r.script_key, r.version, r.variant, r.sent, r.delivered, r.replied, r.registered, r.qualified]
        for r in rows
    ]
    return Table("scripts", _("Script and variant performance"), columns, cells)


def _risk_table(rows: list[dash.WeeklyRisk]) -> Table:
    cells = [
        [r.iso_week, r.week.isoformat(), r.category, str(CATEGORY_LABELS.get(r.category, r.category)), r.hits]
        for r in rows
    ]
    columns = [_("Week"), _("Week starting"), _("Category"), _("Risk"), _("Hits")]
    return Table("risk_words", _("Risk words in customer messages per week"), columns, cells)


def _handoff_table(rows: list[dash.HandoffSpeed]) -> Table:
    columns = [
        _("Platform"),
        _("Offers"),
        _("Accepted"),
        _("Timed out"),
        _("Average minutes to accept"),
        _("Slowest minutes to accept"),
    ]
    cells = [
        [
            _platform(r.platform),
            r.offered,
            r.accepted,
            r.timed_out,
            "" if r.avg_minutes_to_accept is None else r.avg_minutes_to_accept,
            "" if r.max_minutes_to_accept is None else r.max_minutes_to_accept,
        ]
        for r in rows
    ]
    return Table("handoffs", _("Handoff time to accept"), columns, cells)


TABLE_BUILDERS: dict[str, Callable[[Session, dash.DateRange], Table]] = {
    "funnel_platform": lambda s, p: _funnel_table(
        "funnel_platform", _("Funnel by platform"), dash.funnel_by_platform(s, p), by_code=False
    ),
    "funnel_code": lambda s, p: _funnel_table(
        "funnel_code", _("Funnel by hook code"), dash.funnel_by_hook_code(s, p), by_code=True
    ),
    "adds_per_day": lambda s, p: _daily_table(dash.daily_adds(s, p)),
    "scripts": lambda s, p: _scripts_table(dash.script_results(s, p)),
    "risk_words": lambda s, p: _risk_table(dash.weekly_risk(s, p)),
    "handoffs": lambda s, p: _handoff_table(dash.handoff_speed(s, p)),
}


def _chart_funnel(table: Table, steps_from: int, limit: int = 8) -> dict[str, Any]:
    """Steps along the x axis, one bar series per platform or code (the best converting first)."""
    steps = [str(STEP_LABELS[s]) for s in dash.FUNNEL_STEPS]
    series = [
        {
            "label": " · ".join(str(cell) for cell in row[:steps_from]),
            "data": row[steps_from : steps_from + len(steps)],
        }
        for row in table.rows[:limit]
    ]
    return {"type": "bar", "labels": steps, "datasets": series}


def _chart_daily(table: Table, period: dash.DateRange) -> dict[str, Any]:
    """One line per platform over every day of the range (days without adds are zero)."""
    days = [d.isoformat() for d in period.days()]
    per_platform: dict[str, dict[str, int]] = {}
    for day, platform, added in table.rows:
        per_platform.setdefault(platform, {})[day] = added
    series = [{"label": p, "data": [counts.get(d, 0) for d in days]} for p, counts in per_platform.items()]
    return {"type": "line", "labels": days, "datasets": series}


def _chart_columns(labels: list[str], table: Table, columns: Sequence[int]) -> dict[str, Any]:
    """One bar per row, one series per named column (blank cells drawn as zero)."""
    series = [{"label": str(table.columns[c]), "data": [row[c] or 0 for row in table.rows]} for c in columns]
    return {"type": "bar", "labels": labels, "datasets": series}


def _chart_risk(table: Table) -> dict[str, Any]:
    """Hits per week, stacked by category."""
    weeks = sorted({row[0] for row in table.rows})
    per_category: dict[str, dict[str, int]] = {}
    for week, _monday, category, label, hits in table.rows:
        per_category.setdefault(f"{category} {label}", {})[week] = hits
    series = [
        {"label": c, "data": [hits.get(w, 0) for w in weeks]} for c, hits in sorted(per_category.items())
    ]
    return {"type": "bar", "labels": weeks, "datasets": series, "stacked": True}


def _charts(tables: dict[str, Table], period: dash.DateRange) -> dict[str, dict[str, Any]]:
    """What each table's chart draws, as plain data for dashboard.js."""
    scripts = tables["scripts"]
    handoffs = tables["handoffs"]
    return {
        "funnel_platform": _chart_funnel(tables["funnel_platform"], steps_from=1),
        "funnel_code": _chart_funnel(tables["funnel_code"], steps_from=2),
        "adds_per_day": _chart_daily(tables["adds_per_day"], period),
        "scripts": _chart_columns([f"{r[0]} v{r[1]}" for r in scripts.rows], scripts, (3, 4, 5, 6, 7)),
        "risk_words": _chart_risk(tables["risk_words"]),
        "handoffs": _chart_columns([str(r[0]) for r in handoffs.rows], handoffs, (4, 5)),
    }


def _period() -> tuple[dash.DateRange, str]:
    """The requested range, or this month and the reason the request was refused."""
    now = utcnow()
    try:
        return dash.parse_range(request.args.get("start"), request.args.get("end"), now), ""
    except dash.RangeError:
        message = _(
            "Dates must be written YYYY-MM-DD, the end may not be before the start,"
            " and a range covers at most %(days)d days.",
            days=dash.MAX_RANGE_DAYS,
        )
        return dash.this_month(now), message


def _best(table: Table) -> list[Any] | None:
    """The best converting row (funnel rows come sorted best first), or None without leads."""
    return table.rows[0] if table.rows else None


@bp.route("/dashboard")
@roles_required(*VIEWERS)
def dashboard() -> tuple[str, int]:
    """Every table of the range with its chart; a bad range is refused and this month is shown."""
    period, error = _period()
    with services().db.read() as session:
        tables = {name: build(session, period) for name, build in TABLE_BUILDERS.items()}
    page = render_template(
        "console/dashboard.html",
        period=period,
        start=request.args.get("start", period.start.isoformat()) if error else period.start.isoformat(),
        end=request.args.get("end", period.end.isoformat()) if error else period.end.isoformat(),
        error=error,
        tables=tables,
        charts=_charts(tables, period),
        best_platform=_best(tables["funnel_platform"]),
        best_code=_best(tables["funnel_code"]),
    )
    return page, 400 if error else 200


def csv_text(table: Table) -> str:
    """The table as CSV with a byte-order mark, so spreadsheet programs detect UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return UTF8_BOM + out.getvalue()


@bp.route("/dashboard/export/<name>.csv")
@roles_required(*VIEWERS)
def dashboard_export(name: str) -> Response | tuple[str, int]:
    """One dashboard table of the requested range as a CSV download."""
    build = TABLE_BUILDERS.get(name)
    if build is None:
        abort(404)
    period, error = _period()
    if error:
        return render_error(400, error)
    with services().db.read() as session:
        table = build(session, period)
    filename = f"{name}_{period.start:%Y%m%d}_{period.end:%Y%m%d}.csv"
    return Response(
        csv_text(table).encode("utf-8"),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
