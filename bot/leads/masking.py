"""Masks phone numbers and long identifiers in text shown to staff (briefs, timelines, logs)."""

from __future__ import annotations

import re

_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_LONG_ID = re.compile(r"(?<![0-9A-Za-z])(\d{3})\d{8,}(\d{4}|\d{3}[0-9Xx])(?![0-9A-Za-z])")


def mask(text: str) -> str:
    """138****8000 for mobile numbers; 110***1234 for ID-card and bank-card-like digit runs."""
    text = _LONG_ID.sub(lambda m: f"{m.group(1)}***{m.group(2)}", text)
    return _PHONE.sub(lambda m: f"{m.group(1)}****{m.group(2)}", text)
