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

    def __post_init__(self) -> None:
        if not _AES_KEY_RE.match(self.encoding_aes_key):
            raise ValueError("encoding_aes_key must be 43 characters from [A-Za-z0-9]")
        if self.oversize_text not in ("truncate", "reject"):
            raise ValueError("oversize_text must be 'truncate' or 'reject'")
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
