"""The send ledger: search entries, verify the hash chain, and export a date range for regulators."""

from __future__ import annotations

import io

from flask import render_template, request
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.wrappers import Response

from bot.console import dashboard as dash
from bot.console.auth import current_user, roles_required, services
from bot.console.blueprint import bp, render_error
from bot.console.presenting import page_number, paginate
from bot.leads.masking import mask
from models.base import utcnow
from models.ledger import LedgerEntry
from models.users import Role
from scripts_library import ledger

SEARCHERS = (Role.ADMIN, Role.COMPLIANCE, Role.OPERATOR)
AUDITORS = (Role.ADMIN, Role.COMPLIANCE)
FULL_VIEW = (Role.ADMIN, Role.COMPLIANCE)
EXPORT_TYPES = {"csv": "text/csv", "jsonl": "application/x-ndjson"}
UTF8_BOM = "\ufeff"  # lets spreadsheet programs read the CSV as UTF-8


def visible(text: str) -> str:
    """`text` as the signed-in role may see it: full for admin and compliance, masked for the others."""
    return text if current_user().role in FULL_VIEW else mask(text)


def _range_error() -> str:
    return _(
        "Dates must be written YYYY-MM-DD, the end may not be before the start,"
        " and a range covers at most %(days)d days.",
        days=dash.MAX_RANGE_DAYS,
    )


@bp.route("/ledger")
@roles_required(*SEARCHERS)
def ledger_search() -> tuple[str, int]:
    """Ledger entries of a date range, by recipient, script key and outcome, newest first."""
    args = {
        name: request.args.get(name, "").strip()
        for name in ("start", "end", "recipient", "script", "outcome")
    }
    error = ""
    try:
        period = dash.parse_range(args["start"] or None, args["end"] or None, utcnow())
    except dash.RangeError:
        period, error = dash.this_month(utcnow()), _range_error()
    stmt = select(LedgerEntry).where(
        LedgerEntry.recorded_at >= period.utc_start, LedgerEntry.recorded_at < period.utc_end
    )
    if args["recipient"]:
        stmt = stmt.where(LedgerEntry.recipient == args["recipient"])
    if args["script"]:
        stmt = stmt.where(LedgerEntry.script_key == args["script"])
    if args["outcome"]:
        stmt = stmt.where(LedgerEntry.outcome == args["outcome"])
    stmt = stmt.order_by(LedgerEntry.seq.desc())
    with services().db.read() as session:
        page = paginate(
            session, stmt, page_number(request.args.get("page")), services().settings.console.page_size
        )
    args["start"], args["end"] = (
        args["start"] or period.start.isoformat(),
        args["end"] or period.end.isoformat(),
    )
    body = render_template(
        "console/ledger.html", page=page, args=args, error=error, visible=visible, report=None
    )
    return body, 400 if error else 200


@bp.route("/ledger/verify")
@roles_required(*AUDITORS)
def ledger_verify() -> str:
    """Walk the whole hash chain and show what is wrong with it, if anything, and the head to anchor."""
    with services().db.read() as session:
        report = ledger.verify(session)
    return render_template(
        "console/ledger.html", page=None, args={}, error="", visible=visible, report=report
    )


@bp.route("/ledger/export")
@roles_required(*AUDITORS)
def ledger_export() -> Response | tuple[str, int]:
    """Every entry recorded in a date range as a CSV or JSON Lines download, hashes included."""
    fmt = request.args.get("format", "csv")
    if fmt not in EXPORT_TYPES:
        return render_error(400, _("Choose CSV or JSON Lines."))
    try:
        period = dash.parse_range(request.args.get("start"), request.args.get("end"), utcnow())
    except dash.RangeError:
        return render_error(400, _range_error())
    out = io.StringIO()
    with services().db.read() as session:
        ledger.export(session, period.utc_start, period.utc_end, "csv" if fmt == "csv" else "jsonl", out)
    text = (UTF8_BOM if fmt == "csv" else "") + out.getvalue()
    filename = f"ledger_{period.start:%Y%m%d}_{period.end:%Y%m%d}.{fmt}"
    return Response(
        text.encode("utf-8"),
        mimetype=EXPORT_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
