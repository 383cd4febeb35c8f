"""Leads, the hook codes that attribute them, every touch, and local tags."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class Platform(enum.StrEnum):
    """Where an audience comes from."""

    DOUYIN = "douyin"
    KUAISHOU = "kuaishou"
    XIAOHONGSHU = "xiaohongshu"
    BILIBILI = "bilibili"
    WEIBO = "weibo"
    ZHIHU = "zhihu"
    WECHAT_OFFICIAL_ACCOUNT = "wechat_official_account"
    CHANNELS = "channels"
    OFFLINE = "offline"
    OTHER = "other"


PLATFORM_NAMES = {
    Platform.DOUYIN: "抖音",
    Platform.KUAISHOU: "快手",
    Platform.XIAOHONGSHU: "小红书",
    Platform.BILIBILI: "哔哩哔哩",
    Platform.WEIBO: "微博",
    Platform.ZHIHU: "知乎",
    Platform.WECHAT_OFFICIAL_ACCOUNT: "微信公众号",
    Platform.CHANNELS: "视频号",
    Platform.OFFLINE: "线下活动",
    Platform.OTHER: "其他渠道",
}


class Member(Base):
    """A corp member the bot routes customers to or speaks for (name shown in messages)."""

    __tablename__ = "members"

    userid: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class HookCode(Base):
    """A short code naming a platform and campaign; it travels as contact-way `state` or kf scene_param."""

    __tablename__ = "hook_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(30), unique=True)
    platform: Mapped[str] = mapped_column(String(32))
    campaign: Mapped[str] = mapped_column(String(128), default="")
    members: Mapped[list[str]] = mapped_column(JSON, default=list)
    keyword: Mapped[str | None] = mapped_column(String(32), unique=True, nullable=True)
    contact_way_config_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    qr_code_url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    acquisition_link_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    acquisition_url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    kf_open_kfid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kf_url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lead(Base):
    """A customer (WeCom external user) and where they came from; first touch is kept."""

    __tablename__ = "leads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    external_user_id: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64), default="")
    platform: Mapped[str | None] = mapped_column(String(32), nullable=True)
    hook_code: Mapped[str | None] = mapped_column(String(30), nullable=True)
    first_state_raw: Mapped[str | None] = mapped_column(String(128), nullable=True)
    owner_userid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stage: Mapped[str] = mapped_column(String(16), default="new")
    subscribed: Mapped[bool] = mapped_column(Boolean, default=False)
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    reachable: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_leads_platform_code", "platform", "hook_code"),)


class LeadTouch(Base):
    """One arrival or re-arrival of a lead through a channel, attributed or not."""

    __tablename__ = "lead_touches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(32))  # contact_way | kf | keyword | acquisition_link
    code: Mapped[str | None] = mapped_column(String(30), nullable=True)
    raw_state: Mapped[str | None] = mapped_column(String(128), nullable=True)
    member: Mapped[str | None] = mapped_column(String(64), nullable=True)
    event_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LeadTag(Base):
    """A tag on a lead (platform:…, code:…); `wecom_synced` once marked in WeCom too."""

    __tablename__ = "lead_tags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    wecom_synced: Mapped[bool] = mapped_column(Boolean, default=False)
    sync_error: Mapped[str | None] = mapped_column(String(256), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("lead_id", "name", name="uq_lead_tags_lead_name"),)


class CorpTag(Base):
    """A WeCom corp tag the bot created for one of its local tags (e.g. `code:XHS888`)."""

    __tablename__ = "corp_tags"

    local_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    group_name: Mapped[str] = mapped_column(String(30))
    tag_name: Mapped[str] = mapped_column(String(30))
    wecom_tag_id: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
