"""Which approved welcome a lead gets, and the values it is rendered with (contacts and kf alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.routing import HandlerContext
from models.alerts import Alert
from models.deliveries import Delivery
from models.leads import PLATFORM_NAMES, Lead, Platform
from scripts_library.catalogue import NotSendable

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

    Each attempt goes straight to the outbox, which looks the approval up once.
    """
    candidates = ([f"welcome_{lead.platform}"] if lead.platform else []) + [DEFAULT_WELCOME]
    for key in candidates:
        try:
            return ctx.queue(script_key=key, **queue)
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
