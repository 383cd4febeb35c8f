"""WeCom API errors, classified by what the caller should do about them."""

from __future__ import annotations

import enum


class ErrorKind(enum.StrEnum):
    """What a failed WeCom call means for the caller: refresh, back off, retry, or give up."""

    TOKEN = "token"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


# Short meanings from WECOM.md §11 and the global error-code page (DOC-90313), for messages and logs.
KNOWN_ERRORS: dict[int, str] = {
    -1: "system busy",
    40001: "invalid secret (corpid/secret mismatch, rotated, or app disabled)",
    40003: "invalid UserID",
    40008: "invalid msgtype",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40032: "too many userids (at most 1000)",
    40056: "invalid agentid",
    40058: "invalid parameter",
    40068: "invalid tag or tag-group id",
    40091: "secret belongs to another corp",
    40096: "invalid external_userid",
    40097: "member has not resigned",
    40098: "member not real-name verified",
    40099: "external-contact count limit reached",
    40100: "customer already in a transfer flow",
    40126: "corp tag limit (3000) reached",
    40128: "customer transferred too often (2 per 90 days)",
    40129: "customer transfer in progress",
    40130: "handover and takeover are the same member",
    40131: "handover member is not a follower",
    40143: "takeover member is banned",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "secret missing",
    41006: "media_id missing",
    41009: "userid missing",
    41010: "url missing",
    41011: "agentid missing",
    41016: "title missing",
    41041: "contact way member limit (100) reached",
    41045: "API contact way count limit reached",
    41046: "mass message msgid missing",
    41047: "invalid mass message msgid",
    41048: "no sendable customers",
    41049: "welcome_code missing",
    41050: "welcome_code invalid or expired (20 s)",
    41051: "customer already chatting, or welcome_code already used",
    41053: "customer has not agreed to chat archiving",
    41054: "member not activated",
    41063: "mass message still dispatching",
    41064: "too many attachments",
    41065: "invalid attachment type",
    42001: "access_token expired",
    44004: "text content empty",
    45002: "message content too long",
    45008: "too many news articles",
    45009: "API frequency limit exceeded",
    45033: "API concurrency limit exceeded",
    48002: "API not authorised for this app",
    50100: "invalid paging cursor",
    60011: "no privilege (outside the app's visible range)",
    60020: "IP not in the app's trusted IPs",
    60111: "UserID not found",
    81013: "all recipients invalid",
    82001: "no recipients given",
    82002: "too many party ids (at most 100)",
    82003: "too many tag ids (at most 100)",
    84061: "no external-contact relationship",
    84074: "no external-contact permission",
    90206: "mini-program not linked to the corp",
    90207: "invalid mini-program appid",
    95000: "invalid open_kfid",
    95001: "kf send count limit (5 per customer message)",
    95002: "kf send window closed (48 h)",
    95004: "open_kfid not found",
    95007: "invalid or expired kf msg token",
    95011: "kf account mode mismatch",
    95012: "kf account mode mismatch",
    95013: "kf session already ended",
    95014: "user is not an active servicer",
    95016: "kf session state change not allowed",
    95017: "kf API switch is off",
    95018: "kf session state does not allow API send",
    95019: "servicer stopped or suspended",
}

TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
RATE_LIMIT_ERRCODES = frozenset({45009, 45033})
# 41063 asks the caller to retry later; -1 is WeCom's own "system busy, retry".
TRANSIENT_ERRCODES = frozenset({-1, 41063})

# 45009 blocks for the limit's window: a minute-level block lifts after 60 s (§10.2).
_RETRY_AFTER_S: dict[int, float] = {45009: 60.0, 45033: 5.0}


def classify(errcode: int) -> ErrorKind:
    """Map a non-zero WeCom errcode to what the caller should do with it."""
    if errcode == 0:
        raise ValueError("errcode 0 is success, not an error")
    if errcode in TOKEN_ERRCODES:
        return ErrorKind.TOKEN
    if errcode in RATE_LIMIT_ERRCODES:
        return ErrorKind.RATE_LIMITED
    if errcode in TRANSIENT_ERRCODES:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


def describe(errcode: int) -> str:
    """Return a short meaning of an errcode for messages, or "unknown error"."""
    return KNOWN_ERRORS.get(errcode, "unknown error")


class WeComAPIError(RuntimeError):
    """A WeCom API call failed; `kind` tells the caller whether and how to retry."""

    def __init__(
        self,
        errcode: int,
        errmsg: str,
        api: str,
        *,
        kind: ErrorKind | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.api = api
        self.kind = kind if kind is not None else classify(errcode)
        if retry_after_s is None and self.kind is ErrorKind.RATE_LIMITED:
            retry_after_s = _RETRY_AFTER_S.get(errcode, 60.0)
        self.retry_after_s = retry_after_s
        super().__init__(
            f"WeCom {api} failed: errcode {errcode} ({describe(errcode)}): {errmsg} [{self.kind}]"
        )

    @property
    def retryable(self) -> bool:
        """True when trying again later can succeed (rate limits and transient faults)."""
        return self.kind in (ErrorKind.RATE_LIMITED, ErrorKind.TRANSIENT)
