"""What every simulated endpoint shares: the parsed call, WeCom-style errors, and JSON field checks."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.wecom.errors import describe

JSON = dict[str, Any]


class ApiError(Exception):
    """Raised by an endpoint handler to answer with a non-zero errcode."""

    def __init__(self, errcode: int, detail: str = "", **extra: Any) -> None:
        super().__init__(errcode, detail)
        self.errcode = errcode
        self.detail = detail
        self.extra = extra


class SimulationError(ValueError):
    """A simulated client-side action that cannot happen (unknown QR code, no such customer, ...)."""


def errmsg(errcode: int, detail: str = "") -> str:
    """Return an errmsg in WeCom's style: the meaning, a hint, and the diagnosis link."""
    text = detail or describe(errcode)
    return f"{text}, hint: [sim-{secrets.token_hex(4)}], more info at https://open.work.weixin.qq.com/devtool/query?e={errcode}"


@dataclass(frozen=True)
class ApiCall:
    """One parsed request as an endpoint handler sees it."""

    api: str
    method: str
    query: dict[str, str]
    body: bytes
    remote_addr: str
    app: str | None = None

    def json(self) -> JSON:
        """The request body as a JSON object; 40058 when it is not one."""
        try:
            data = json.loads(self.body.decode("utf-8")) if self.body else None
        except (UnicodeDecodeError, ValueError):
            raise ApiError(40058, "request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(40058, "request body must be a JSON object")
        return data


Handler = Callable[[ApiCall], JSON]


# ---- field checks (WeCom answers 40058 for a wrong type or an over-long value) ----------------------


def opt_str(data: JSON, key: str, *, max_chars: int | None = None, max_bytes: int | None = None) -> str:
    """A string field ("" when absent); 40058 when it is not a string or is too long."""
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(40058, f"{key} must be a string")
    if max_chars is not None and len(value) > max_chars:
        raise ApiError(40058, f"{key} exceeds {max_chars} characters")
    if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
        raise ApiError(40058, f"{key} exceeds {max_bytes} bytes")
    return value


def opt_int(data: JSON, key: str, default: int | None = None) -> int | None:
    """An integer field (`default` when absent); 40058 for anything else (booleans included)."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(40058, f"{key} must be an integer")
    return value


def opt_bool(data: JSON, key: str, default: bool) -> bool:
    """A boolean field (`default` when absent); 40058 for anything else."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(40058, f"{key} must be true or false")
    return value


def opt_list(data: JSON, key: str) -> list[Any]:
    """A list field ([] when absent); 40058 when it is not a list."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(40058, f"{key} must be a list")
    return value


def str_list(data: JSON, key: str) -> list[str]:
    """A list of strings ([] when absent), duplicates removed in order; 40058 otherwise."""
    values = opt_list(data, key)
    if not all(isinstance(v, str) for v in values):
        raise ApiError(40058, f"{key} must be a list of strings")
    return list(dict.fromkeys(values))


def utf8_len(value: str) -> int:
    """Length of `value` in UTF-8 bytes, the unit most WeCom limits use."""
    return len(value.encode("utf-8"))
