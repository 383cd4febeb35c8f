"""Hook codes: create them, put them on WeCom contact ways and kf links, list and disable them."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.db import Database
from bot.wecom.client import WeComClient
from models.audit import AuditEntry
from models.base import utcnow
from models.leads import HookCode, Platform

# Fits contact-way `state` (≤ 30 characters) and kf `scene_param` (≤ 128 bytes URL-encoded).
CODE_RE = re.compile(r"^[A-Za-z0-9_-]{2,30}$")
MAX_CONTACT_WAY_MEMBERS = 100
KF_SCENE = "hook"


class HookCodeError(ValueError):
    """A hook code cannot be created or changed as asked.

    `code` names the refusal and `params` the values its message mentions, so the console can say it
    in the reader's language; the English message stays for the CLI and logs.
    """

    def __init__(self, message: str, code: str = "", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


def get_code(session: Session, code: str) -> HookCode:
    """Return a hook code or refuse with a clear error."""
    row = session.scalars(select(HookCode).where(HookCode.code == code)).first()
    if row is None:
        raise HookCodeError(f"no hook code {code!r}", "hookcode.unknown", hook=code)
    return row


def create_code(
    session: Session,
    code: str,
    platform: str,
    members: list[str],
    actor: str,
    campaign: str = "",
    keyword: str | None = None,
) -> HookCode:
    """Register a code after checking WeCom's limits; nothing is created in WeCom yet."""
    if not CODE_RE.match(code):
        raise HookCodeError(
            "code: 2-30 characters from letters, digits, '_' and '-' (WeCom state limit)", "hookcode.format"
        )
    if platform not in Platform.__members__.values():
        platforms = ", ".join(Platform)
        raise HookCodeError(f"platform: one of {platforms}", "hookcode.platform", platforms=platforms)
    if not members or len(members) > MAX_CONTACT_WAY_MEMBERS:
        raise HookCodeError(
            f"members: 1-{MAX_CONTACT_WAY_MEMBERS} member userids",
            "hookcode.members",
            limit=MAX_CONTACT_WAY_MEMBERS,
        )
    if session.scalars(select(HookCode.id).where(HookCode.code == code)).first() is not None:
        raise HookCodeError(f"hook code {code!r} exists", "hookcode.exists", hook=code)
    if keyword is not None:
        keyword = keyword.strip()
        if not 2 <= len(keyword) <= 32:
            raise HookCodeError("keyword: 2-32 characters", "hookcode.keyword_length")
        if session.scalars(select(HookCode.id).where(HookCode.keyword == keyword)).first() is not None:
            raise HookCodeError(
                f"keyword {keyword!r} already names another code", "hookcode.keyword_taken", keyword=keyword
            )
    row = HookCode(
        code=code, platform=platform, campaign=campaign, members=members, keyword=keyword, created_by=actor
    )
    session.add(row)
    session.add(
        AuditEntry(at=utcnow(), actor=actor, action="hookcode.create", target=f"hookcode:{code}", detail={})
    )
    session.flush()
    return row


def provision_contact_way(db: Database, client: WeComClient, code: str) -> HookCode:
    """Create the 「联系我」 QR for a code (state = the code); the API call runs outside transactions."""
    with db.transaction() as session:
        row = get_code(session, code)
        if row.contact_way_config_id:
            return row
        members = list(row.members)
        remark = (row.campaign or row.code)[:30]
    result = client.post(
        "externalcontact/add_contact_way",
        {
            "type": 1 if len(members) == 1 else 2,
            "scene": 2,
            "state": code,
            "user": members,
            "skip_verify": True,
            "remark": remark,
        },
        app="contact",
    )
    with db.transaction() as session:
        row = get_code(session, code)
        row.contact_way_config_id = str(result["config_id"])
        row.qr_code_url = str(result.get("qr_code") or "")
        session.add(
            AuditEntry(
                at=utcnow(),
                actor="bot",
                action="hookcode.contact_way",
                target=f"hookcode:{code}",
                detail={"config_id": row.contact_way_config_id},
            )
        )
        return row


def provision_kf_link(db: Database, client: WeComClient, code: str, open_kfid: str) -> HookCode:
    """Create a WeChat Customer Service link whose scene_param carries the code."""
    result = client.post("kf/add_contact_way", {"open_kfid": open_kfid, "scene": KF_SCENE}, app="kf")
    url = f"{result['url']}&scene_param={quote(code)}"
    with db.transaction() as session:
        row = get_code(session, code)
        row.kf_open_kfid, row.kf_url = open_kfid, url
        session.add(
            AuditEntry(
                at=utcnow(), actor="bot", action="hookcode.kf_link", target=f"hookcode:{code}", detail={}
            )
        )
        return row


def provision_acquisition_link(db: Database, client: WeComClient, code: str) -> HookCode:
    """Create a 获客助手 link; `customer_channel=<code>` comes back as the add event's `state`."""
    with db.transaction() as session:
        row = get_code(session, code)
        members = list(row.members)
    result = client.post(
        "externalcontact/customer_acquisition/create_link",
        {"link_name": code, "range": {"user_list": members}, "skip_verify": True},
        app="contact",
    )
    link = result["link"]
    with db.transaction() as session:
        row = get_code(session, code)
        row.acquisition_link_id = str(link["link_id"])
        row.acquisition_url = f"{link['url']}?customer_channel={quote(code)}"
        session.add(
            AuditEntry(
                at=utcnow(),
                actor="bot",
                action="hookcode.acquisition_link",
                target=f"hookcode:{code}",
                detail={},
            )
        )
        return row


def disable_code(session: Session, code: str, actor: str) -> HookCode:
    """Stop attributing to a code (its QR may stay in circulation; arrivals keep the raw state)."""
    row = get_code(session, code)
    row.active = False
    session.add(
        AuditEntry(at=utcnow(), actor=actor, action="hookcode.disable", target=f"hookcode:{code}", detail={})
    )
    return row
