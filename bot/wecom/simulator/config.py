"""Settings of one simulated WeCom corp: credentials, members, token lifetime and rate limits."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

_AES_KEY_RE = re.compile(r"^[A-Za-z0-9]{43}$")


def _default_secrets() -> dict[str, str]:
    return {"agent": "sim-agent-secret", "contact": "sim-contact-secret", "kf": "sim-kf-secret"}


def _default_users() -> list[str]:
    return ["zhangsan", "lisi", "wangwu"]


def _contact_apps() -> list[str]:
    return ["agent", "contact"]


def _kf_apps() -> list[str]:
    return ["agent", "kf"]


def _tag_admin_apps() -> list[str]:
    return ["contact"]


@dataclass
class SimulatorConfig:
    """What the simulated corp looks like and how strict it is; shrink windows and TTLs in tests."""

    corp_id: str = "wwsimulatedcorp0001"
    agent_id: int = 1000002
    # App name -> secret; each secret is a separate app with its own tokens.
    secrets: dict[str, str] = field(default_factory=_default_secrets)
    token: str = "simtoken"
    encoding_aes_key: str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    users: list[str] = field(default_factory=_default_users)

    token_ttl_s: int = 7200
    # Repeated wrong secrets from one IP ban it ("about 2000 erroneous calls per hour", WECOM.md §10.1).
    ban_threshold: int = 2000
    ban_window_s: float = 3600.0
    ban_duration_s: float = 3600.0

    # Per corp, per API (§10.2); a minute block lasts one minute window, an hour block one hour window.
    api_per_minute: int = 10_000
    api_per_hour: int = 150_000
    minute_s: float = 60.0
    hour_s: float = 3600.0
    # Concurrent calls of one API beyond this answer 45033; 0 turns the cap off.
    api_concurrency: int = 0

    # App messages per app per member (§8.5); the excess is dropped silently.
    member_per_minute: int = 30
    member_per_hour: int = 1000

    # message/send's own page says over-long text is truncated; the error-code page lists 45002.
    oversize_text: Literal["truncate", "reject"] = "truncate"
    response_code_ttl_s: float = 86400.0

    # ---- customer contact (WECOM.md §2-5, §9) ----
    # Department id -> member userids, so contact ways and links can name parties.
    departments: dict[int, list[str]] = field(default_factory=dict)
    # Members who never activated WeCom: contact ways answer 41054, kf servicer checks 95014.
    inactive_users: list[str] = field(default_factory=list)
    # Apps whose tokens may call externalcontact/* (可调用应用); anyone else gets 48002.
    contact_apps: list[str] = field(default_factory=_contact_apps)
    # Apps that may edit or delete corp tags they did not create (the 客户联系 secret); others get 81011.
    tag_admin_apps: list[str] = field(default_factory=_tag_admin_apps)
    # Members whose admin-configured welcome message suppresses WelcomeCode.
    admin_welcome_users: list[str] = field(default_factory=list)
    welcome_code_ttl_s: float = 20.0
    contact_way_member_limit: int = 100
    contact_way_limit: int = 500_000
    temp_contact_way_per_day: int = 100_000
    corp_tag_limit: int = 3000
    # Which adds wait for the member and first raise add_half_external_contact: the ones that need
    # verification (skip_verify false, the default reading) or the skip-verify ones (the doc's wording).
    half_add_when: Literal["verify_required", "skip_verify"] = "verify_required"
    # Whether a re-add after a deletion still carries the contact way's State (it may not).
    readd_keeps_state: bool = True
    acquisition_quota: int = 100
    # The balance at or below which `customer_acquisition/balance_low` fires (threshold undocumented).
    acquisition_low_balance: int = 10
    acquisition_range_limit: int = 500

    # ---- WeChat Customer Service (kf, WECOM.md §7) ----
    kf_apps: list[str] = field(default_factory=_kf_apps)
    kf_token_ttl_s: float = 600.0
    kf_retention_s: float = 3 * 86400.0
    kf_window_s: float = 48 * 3600.0
    kf_sends_per_customer_message: int = 5
    kf_event_code_ttl_s: float = 20.0
    kf_reply_code_ttl_s: float = 48 * 3600.0
    # Empty pages (has_more=1) sync_msg returns before each page of messages, to test the bot's loop.
    kf_sync_empty_pages: int = 0
    # The errcode for a msgid reused within a kf account (undocumented; see WECOM.md §7.3).
    kf_duplicate_msgid_errcode: int = 40058
    # sync_msg calls without a token allowed per minute per kf account (0 = unlimited); beyond: 45009.
    kf_sync_no_token_per_minute: int = 0

    # ---- mass sending to customers (企业群发, WECOM.md §6) ----
    # Per-customer receive cap, counted when a member sends, in China time: "month_days" (as many
    # per natural month as the month has days; the current rule), "week7" (7 per week), "day1" (1 per day).
    groupmsg_quota_mode: Literal["month_days", "week7", "day1"] = "month_days"
    # Members send their unsent tasks on their own this long after creation; None leaves them waiting.
    groupmsg_auto_confirm_after_s: float | None = None
    # The task and result APIs answer 41063 (still dispatching) for this long after creation.
    groupmsg_dispatch_delay_s: float = 0.0
    # remind_groupmsg_send: at most this many per mass message per 24 h (DOC-97610); the errcode
    # beyond the limit is undocumented.
    groupmsg_reminds_per_24h: int = 3
    groupmsg_remind_limit_errcode: int = 45009

    def __post_init__(self) -> None:
        if not _AES_KEY_RE.match(self.encoding_aes_key):
            raise ValueError("encoding_aes_key must be 43 characters from [A-Za-z0-9]")
        if self.oversize_text not in ("truncate", "reject"):
            raise ValueError("oversize_text must be 'truncate' or 'reject'")
        if self.half_add_when not in ("verify_required", "skip_verify"):
            raise ValueError("half_add_when must be 'verify_required' or 'skip_verify'")
        if self.kf_duplicate_msgid_errcode == 0:
            raise ValueError("kf_duplicate_msgid_errcode must be non-zero")
        if self.groupmsg_quota_mode not in ("month_days", "week7", "day1"):
            raise ValueError("groupmsg_quota_mode must be 'month_days', 'week7' or 'day1'")
        if self.groupmsg_auto_confirm_after_s is not None and self.groupmsg_auto_confirm_after_s < 0:
            raise ValueError("groupmsg_auto_confirm_after_s must be at least 0")
        if self.groupmsg_remind_limit_errcode == 0:
            raise ValueError("groupmsg_remind_limit_errcode must be non-zero")
        if not self.secrets:
            raise ValueError("at least one app secret is required")
        if len(set(self.secrets.values())) != len(self.secrets):
            raise ValueError("each app needs its own secret")

    def app_for_secret(self, secret: str) -> str | None:
        """Return the app name a secret belongs to, or None."""
        for app, value in self.secrets.items():
            if value == secret:
                return app
        return None
