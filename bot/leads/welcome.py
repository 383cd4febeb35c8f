"""Which approved welcome a lead gets, and the values it is rendered with (contacts and kf alike)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from bot.routing import HandlerContext
from models.alerts import Alert
from models.deliveries import Delivery
from models.leads import PLATFORM_NAMES, Lead, Platform
from scripts_library.catalogue import NotSendable, live, sendable_for_many

WELCOME_WINDOW = timedelta(seconds=20)  # WeCom's welcome_code lifetime
DEFAULT_WELCOME = "welcome_default"


def welcome_deadline(ctx: HandlerContext, sent_at_epoch: int) -> datetime:
    """When the welcome code dies: 20 s after WeCom issued it, or after we stored it if that is earlier.

    WeCom's clock starts the code's 20 s; under a backlog, counting from our arrival time would
    send codes WeCom already expired (41050) instead of recording them as expired.
    """
    start = ctx.received_at
    if sent_at_epoch > 0:
        start = min(start, datetime.fromtimestamp(sent_at_epoch, UTC))
    return start + WELCOME_WINDOW


def queue_welcome(
    ctx: HandlerContext, lead: Lead, alert_detail: dict[str, Any], **queue: Any
) -> Delivery | None:
    """Queue the platform's approved welcome, else the default; with neither, alert and return None.

    Each attempt goes straight to the outbox, which looks the approval up once; during an A/B test
    of the welcome the lead gets its own arm.
    """
    for key in welcome_keys(lead):
        try:
            return ctx.queue(script_key=key, lead_id=lead.id, **queue)
        except NotSendable:
            continue
    ctx.session.add(
        Alert(
            raised_at=ctx.now,
            kind="welcome.no_script",
            severity="critical",
            audience="both",
            message=f"no approved welcome for {lead.platform or 'unattributed'} leads; welcome not sent",
            detail={"lead": lead.external_user_id, "platform": lead.platform, **alert_detail},
        )
    )
    return None


def welcome_keys(lead: Lead) -> list[str]:
    """The welcome scripts a lead may get, in order of preference."""
    return ([f"welcome_{lead.platform}"] if lead.platform else []) + [DEFAULT_WELCOME]


def assign_welcome_variants(session: Session, leads: Sequence[Lead], at: datetime) -> None:
    """Settle a batch's A/B arms up front: per welcome script one lookup and one insert, not per lead.

    The outbox then finds each lead's arm in the transaction's memo.
    """
    by_key: dict[str, list[int]] = {}
    for lead in leads:
        if lead.id is None:  # not stored yet: the outbox finds it by its WeCom id instead
            continue
        for key in welcome_keys(lead):
            try:
                live(session, key, at)
            except NotSendable:
                continue
            by_key.setdefault(key, []).append(lead.id)
            break
    for key, lead_ids in by_key.items():
        sendable_for_many(session, key, at, lead_ids)


def message_values(ctx: HandlerContext, lead: Lead, manager_name: str = "") -> dict[str, dict[str, Any]]:
    """Values customer messages may use (each kind takes only what it declares)."""
    compliance = ctx.settings.compliance
    platform_name = PLATFORM_NAMES.get(Platform(lead.platform), "") if lead.platform else ""
    return {
        "lead": {"display_name": lead.display_name},
        "manager": {"name": manager_name},
        "hook": {"platform_name": platform_name},
        "firm": {"name": compliance.firm_name, "opt_out": compliance.opt_out_instruction},
    }
