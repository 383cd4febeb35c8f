"""Turns lint findings, diffs and long lists into plain data the templates render (always escaped)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from models.scripts import VersionStatus
from scripts_library.compliance import Finding

T = TypeVar("T")
SHANGHAI = ZoneInfo("Asia/Shanghai")

CATEGORY_LABELS = {
    "C1": _l("Promised returns or principal"),
    "C2": _l("Market or price forecast"),
    "C3": _l("Security recommendation or trading instruction"),
    "C4": _l("Discretionary trading or profit sharing"),
    "C5": _l("Inside information or manipulation"),
    "C6": _l("Off-channel diversion or private payment"),
    "C7": _l("Absolute claim or unsupported track record"),
    "C8": _l("Regulator endorsement"),
    "C9": _l("Rebates, gifts or lotteries"),
    "C10": _l("Pressure or suitability bypass"),
    "C11": _l("Out-of-licence product"),
    "C12": _l("Personal data"),
}
STRUCTURE_LABEL = _l("Required content missing or misplaced")

STATUS_LABELS = {
    VersionStatus.DRAFT: _l("Draft"),
    VersionStatus.SUBMITTED: _l("Awaiting review"),
    VersionStatus.APPROVED: _l("Approved"),
    VersionStatus.REJECTED: _l("Rejected"),
    VersionStatus.SUPERSEDED: _l("Superseded"),
    VersionStatus.RETIRED: _l("Retired"),
}

_SEVERITY_RANK = {"warn": 1, "block": 2}


def localtime(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC time shown in Shanghai time."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(SHANGHAI).strftime(fmt)


def category_label(category: str) -> str:
    """A reviewer-facing name of a red-line category (structural checks share one name)."""
    label = CATEGORY_LABELS.get(category)
    return str(label if label is not None else STRUCTURE_LABEL)


@dataclass(frozen=True)
class Segment:
    """A run of text with the strongest severity of the findings covering it (None = clean)."""

    text: str
    severity: str | None = None
    rules: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the live editor."""
        return {"text": self.text, "severity": self.severity, "rules": list(self.rules)}


def highlight(text: str, findings: Sequence[Finding]) -> list[Segment]:
    """Split `text` at every finding boundary so overlapping findings each stay visible.

    Findings about the message as a whole (a missing disclaimer spans all of it) stay in the findings
    table only: marking every character would hide the words that matter.
    """
    whole = (0, len(text))
    spans = [f for f in findings if 0 <= f.start < f.end <= len(text) and (f.start, f.end) != whole]
    cuts = sorted({0, len(text), *(f.start for f in spans), *(f.end for f in spans)})
    segments: list[Segment] = []
    for start, end in pairwise(cuts):
        covering = [f for f in spans if f.start <= start and end <= f.end]
        severity = max((f.severity for f in covering), key=_SEVERITY_RANK.__getitem__, default=None)
        segments.append(Segment(text[start:end], severity, tuple(sorted({f.rule_id for f in covering}))))
    return segments


def finding_view(finding: Finding) -> dict[str, Any]:
    """One finding as the findings table and the live editor show it."""
    return {
        "rule_id": finding.rule_id,
        "category": finding.category,
        "category_label": category_label(finding.category),
        "severity": finding.severity,
        "matched": finding.matched,
        "message": finding.message,
        "start": finding.start,
        "end": finding.end,
    }


@dataclass(frozen=True)
class DiffRow:
    """One line of a side-by-side diff; `old`/`new` are segments marked changed or not."""

    tag: str  # equal | replace | delete | insert
    old: tuple[Segment, ...]
    new: tuple[Segment, ...]


def _char_diff(old: str, new: str) -> tuple[tuple[Segment, ...], tuple[Segment, ...]]:
    left: list[Segment] = []
    right: list[Segment] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            left.append(Segment(old[i1:i2]))
            right.append(Segment(new[j1:j2]))
            continue
        if i2 > i1:
            left.append(Segment(old[i1:i2], "deleted"))
        if j2 > j1:
            right.append(Segment(new[j1:j2], "inserted"))
    return tuple(left), tuple(right)


def diff_rows(old: str, new: str) -> list[DiffRow]:
    """Line diff of two bodies; changed line pairs are compared character by character (Chinese text)."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows.extend(DiffRow("equal", (Segment(line),), (Segment(line),)) for line in old_lines[i1:i2])
        elif tag == "replace":
            olds, news = old_lines[i1:i2], new_lines[j1:j2]
            for k in range(max(len(olds), len(news))):
                if k < len(olds) and k < len(news):
                    left, right = _char_diff(olds[k], news[k])
                    rows.append(DiffRow("replace", left, right))
                elif k < len(olds):
                    rows.append(DiffRow("delete", (Segment(olds[k], "deleted"),), ()))
                else:
                    rows.append(DiffRow("insert", (), (Segment(news[k], "inserted"),)))
        elif tag == "delete":
            rows.extend(DiffRow("delete", (Segment(line, "deleted"),), ()) for line in old_lines[i1:i2])
        else:
            rows.extend(DiffRow("insert", (), (Segment(line, "inserted"),)) for line in new_lines[j1:j2])
    return rows


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list, with what the pager needs."""

    items: list[T]
    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        """How many pages there are (at least one)."""
        return max(1, math.ceil(self.total / self.size))

    @property
    def has_prev(self) -> bool:
        """Whether a previous page exists."""
        return self.number > 1

    @property
    def has_next(self) -> bool:
        """Whether a next page exists."""
        return self.number < self.pages


def page_number(raw: str | None) -> int:
    """A page number from the query string; anything unusable means page 1."""
    try:
        return max(1, int(raw or "1"))
    except ValueError:
        return 1


def paginate(session: Session, stmt: Select[Any], number: int, size: int) -> Page[Any]:
    """Run `stmt` for one page and count all its rows."""
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    items = list(session.scalars(stmt.limit(size).offset((number - 1) * size)))
    return Page(items, number, size, total)


def slice_page(items: Sequence[T], number: int, size: int) -> Page[T]:
    """One page of a list already in memory."""
    start = (number - 1) * size
    return Page(list(items[start : start + size]), number, size, len(items))
