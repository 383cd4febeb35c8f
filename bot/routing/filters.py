"""Pure, composable predicates over events: combine with `&`, `|` and `~`."""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.wecom.events import Event


class Filter:
    """A named predicate on an event."""

    def __init__(self, predicate: Callable[[Event], bool], name: str) -> None:
        self._predicate = predicate
        self.name = name

    def __call__(self, event: Event) -> bool:
        return bool(self._predicate(event))

    def __and__(self, other: Filter) -> Filter:
        return Filter(lambda e: self(e) and other(e), f"({self.name} & {other.name})")

    def __or__(self, other: Filter) -> Filter:
        return Filter(lambda e: self(e) or other(e), f"({self.name} | {other.name})")

    def __invert__(self) -> Filter:
        return Filter(lambda e: not self(e), f"~{self.name}")

    def __repr__(self) -> str:
        return f"Filter({self.name})"


def field_in(attr: str, *values: str) -> Filter:
    """Match when the event's attribute `attr` equals one of `values`."""
    allowed = frozenset(values)
    return Filter(lambda e: getattr(e, attr, None) in allowed, f"{attr} in {sorted(allowed)}")


def change_type(*types: str) -> Filter:
    """Match customer-contact or tag changes of the given ChangeType."""
    return field_in("change_type", *types)


def text_equals(*words: str, casefold: bool = True) -> Filter:
    """Match text whose whole content (trimmed) is one of `words`."""
    fold = (lambda s: s.strip().casefold()) if casefold else (lambda s: s.strip())
    allowed = frozenset(fold(w) for w in words)
    return Filter(lambda e: fold(str(getattr(e, "content", ""))) in allowed, f"text in {sorted(allowed)}")


def text_matches(pattern: str) -> Filter:
    """Match text content against a regular expression (search semantics)."""
    compiled = re.compile(pattern)
    return Filter(
        lambda e: compiled.search(str(getattr(e, "content", ""))) is not None, f"text ~ {pattern!r}"
    )


def event_key_startswith(prefix: str) -> Filter:
    """Match template-card clicks whose button key starts with `prefix`."""
    return Filter(lambda e: str(getattr(e, "event_key", "")).startswith(prefix), f"event_key^={prefix!r}")
