"""Campaign dry runs in the console: request one, watch it run in the background, read and export it.

The web request only queues the preview; a worker plans it and stores every recipient, so any web
replica can page and export the result without holding the audience in memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from bot.campaigns import previews
from bot.campaigns.planner import CSV_FIELDS
from bot.console.auth import current_user, roles_required, services
from bot.console.blueprint import SHANGHAI, bp, render_error
from bot.console.presenting import Page, page_number
from bot.console.views_campaigns import CHANNEL_LABELS, FULL_VIEW, PREVIEW_FORMAT, VIEWERS, visible
from bot.db import Database
from bot.leads.masking import mask
from models.campaigns import Campaign
from models.previews import CampaignPreview, PreviewStatus

PREVIEW_STATUS_LABELS = {
    PreviewStatus.QUEUED: _l("Queued"),
    PreviewStatus.RUNNING: _l("Running"),
    PreviewStatus.DONE: _l("Done"),
    PreviewStatus.FAILED: _l("Failed"),
}
REFRESH_S = 3  # how often the page of an unfinished preview reloads itself (HTTP Refresh header)
UTF8_BOM = "\ufeff"  # lets spreadsheet programs read the CSV as UTF-8, so Chinese text shows correctly
CSV_CHUNK_ROWS = 1000  # rows per piece of the streamed download


class PreviewForm(FlaskForm):
    """Request a dry run (the occurrence comes from the page's datetime-local field `at`)."""


def parse_occurrence(raw: str) -> datetime | None:
    """The occurrence from the form (Shanghai wall-clock, YYYY-MM-DDTHH:MM), or None if unusable."""
    try:
        return datetime.strptime(raw.strip(), PREVIEW_FORMAT).replace(tzinfo=SHANGHAI)
    except ValueError:
        return None


def preview_panel(session: Session, campaign: Campaign) -> dict[str, Any]:
    """What the campaign page shows of its previews: the request form and the newest ones."""
    return {
        "previews": previews.recent_previews(session, campaign.id),
        "preview_form": PreviewForm(),
        "preview_statuses": PREVIEW_STATUS_LABELS,
    }


@bp.route("/campaigns/<key>/previews", methods=["POST"])
@roles_required(*VIEWERS)
def preview_request(key: str) -> Response:
    """Queue a dry run of the occurrence in the form and show its page; bad input queues nothing."""
    form = PreviewForm()
    raw = request.form.get("at", "")
    occurrence = parse_occurrence(raw) if form.validate_on_submit() else None
    if occurrence is None:
        flash(_("Write the time as YYYY-MM-DDTHH:MM (Shanghai time)."), "error")
        return redirect(url_for("console.campaign_detail", key=key, at=raw.strip()[:32], _anchor="preview"))
    try:
        with services().db.transaction() as session:
            preview_id = previews.request_preview(session, key, occurrence, current_user().username).id
    except previews.PreviewError:
        abort(404)
    services().coordinator.wake(previews.PREVIEW_CHANNEL)
    return redirect(url_for("console.preview_detail", key=key, preview_id=preview_id))


def _preview_or_404(session: Session, key: str, preview_id: int) -> CampaignPreview:
    """The preview `preview_id` of campaign `key` (a preview of another campaign is not found)."""
    found = session.execute(
        select(CampaignPreview)
        .join(Campaign, Campaign.id == CampaignPreview.campaign_id)
        .where(CampaignPreview.id == preview_id, Campaign.key == key)
    ).scalar_one_or_none()
    if found is None:
        abort(404)
    return found


@bp.route("/campaigns/<key>/previews/<int:preview_id>")
@roles_required(*VIEWERS)
def preview_detail(key: str, preview_id: int) -> tuple[str, int, dict[str, str]]:
    """A preview's status and progress; once done, its counts, tasks, exact text and recipients."""
    size = services().settings.console.page_size
    number = page_number(request.args.get("rpage"))
    with services().db.read() as session:
        preview = _preview_or_404(session, key, preview_id)
        campaign = session.get(Campaign, preview.campaign_id)
        plan = previews.stored_plan(preview, key) if preview.status == PreviewStatus.DONE else None
        recipients = None
        if plan is not None and not plan.reason:
            items = previews.recipients_page(session, preview_id, (number - 1) * size, size)
            recipients = Page(items, number, size, preview.progress)
    unfinished = preview.status in previews.UNFINISHED
    page = render_template(
        "console/campaign_preview.html",
        campaign=campaign,
        preview=preview,
        plan=plan,
        recipients=recipients,
        unfinished=unfinished,
        refresh_s=REFRESH_S,
        statuses=PREVIEW_STATUS_LABELS,
        channel_labels=CHANNEL_LABELS,
        visible=visible,
    )
    return page, 200, {"Refresh": str(REFRESH_S)} if unfinished else {}


def _csv_chunks(db: Database, preview_id: int, masked: bool) -> Iterator[str]:
    """The preview's recipients as CSV pieces, read from the database page by page."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_FIELDS)
    for n, r in enumerate(previews.iter_recipients(db, preview_id), 1):
        customer = mask(r.external_user_id) if masked else r.external_user_id
        writer.writerow([r.lead_id, customer, r.channel, r.skip_reason or "", r.sender, r.open_kfid])
        if n % CSV_CHUNK_ROWS == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


@bp.route("/campaigns/<key>/previews/<int:preview_id>/recipients.csv")
@roles_required(*VIEWERS)
def preview_export(key: str, preview_id: int) -> Response | tuple[str, int]:
    """Every recipient of a finished preview as a streamed CSV download (customers masked as on the page)."""
    db = services().db
    with db.read() as session:
        preview = _preview_or_404(session, key, preview_id)
    if preview.status != PreviewStatus.DONE:
        return render_error(409, _("This preview has not finished: its recipients are not ready yet."))
    masked = current_user().role not in FULL_VIEW

    def body() -> Iterator[str]:
        yield UTF8_BOM
        yield from _csv_chunks(db, preview_id, masked)

    return Response(
        body(),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="preview_{key}_{preview_id}.csv"'},
    )
