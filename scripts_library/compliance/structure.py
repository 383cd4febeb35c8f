"""Structural checks per script kind: what a message must carry, not what it must not say."""

from __future__ import annotations

import re
from functools import lru_cache

from .detectors import Hit, TextContext
from .lexicon import RuleSet
from .model import BLOCK, WARN, LintPolicy
from .normalize import Normalized, canonical

__all__ = ["CHECK_CATEGORIES", "check_structure", "disclaimer_spans"]

CHECK_CATEGORIES = {
    "risk_warning": "S1",
    "not_advice": "S2",
    "source_date": "S3",
    "adviser": "S4",
    "firm_name": "S5",
    "opt_out": "S5",
    "links": "S6",
}


class _Phrases:
    """Canonical presence patterns for one RuleSet."""

    def __init__(self, rules: RuleSet) -> None:
        def alt(name: str) -> re.Pattern[str]:
            return re.compile(rules.alternation(name) or "(?!)")

        self.risk_warning = alt("risk_warnings")
        self.not_advice = alt("not_advice")
        self.source = alt("sources")
        self.as_of = alt("as_of")
        self.advisory = alt("advisory")
        self.adviser = alt("advisers")


@lru_cache(maxsize=8)
def _phrases(rules: RuleSet) -> _Phrases:
    return _Phrases(rules)


@lru_cache(maxsize=32)
def _policy_forms(policy: LintPolicy) -> dict[str, tuple[str, ...]]:
    """Canonical forms of the policy's phrases (computed once per policy)."""

    def forms(values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f for f in (canonical(v) for v in values) if f)

    return {
        "firm": forms((policy.firm_name, *policy.firm_aliases)),
        "opt_out": forms(policy.opt_out_phrases),
        "not_advice": forms(policy.not_advice_phrases),
        "disclaimers": forms(policy.disclaimers),
    }


def disclaimer_spans(original: str, policy: LintPolicy) -> list[tuple[int, int]]:
    """Original-text spans of approved disclaimers, matched by exact content."""
    spans = []
    for text in policy.disclaimers:
        if not text:
            continue
        start = original.find(text)
        while start >= 0:
            spans.append((start, start + len(text)))
            start = original.find(text, start + 1)
    return spans


def _host(url: str) -> str:
    host = re.sub(r"^(?:https?://)", "", url).split("/", 1)[0].split(":", 1)[0].split("?", 1)[0]
    return host.strip(".")


def _allowed(host: str, domains: tuple[str, ...]) -> bool:
    return any(host == d or host.endswith("." + d) for d in (d.lower().strip(".") for d in domains))


def _links(norm: Normalized, rules: RuleSet, policy: LintPolicy) -> list[Hit]:
    hits = []
    for m in rules.pattern("link").finditer(norm.normalized):
        host = _host(m.group(0))
        if host and not _allowed(host, policy.allowed_link_domains):
            hits.append(
                Hit(
                    "S6.link",
                    "S6",
                    BLOCK,
                    m.start(),
                    m.end(),
                    f"{rules.messages.get('links', 'Link not allowed')} ({host})",
                    "none",
                    "structure",
                    on_normalized=True,
                )
            )
    return hits


def check_structure(norm: Normalized, ctx: TextContext, kind: str, policy: LintPolicy) -> list[Hit]:
    """Findings for missing required elements of `kind` (risk warning, source, opt-out, …) and bad links."""
    rules = ctx.rules
    checks = rules.structure.get(kind, {})
    text = norm.text
    phrases = _phrases(rules)
    forms = _policy_forms(policy)
    hits: list[Hit] = []

    def trigger(when: str) -> tuple[int, int] | None:
        """Span that makes a check applicable, (0, 0) for 'always', None when not applicable."""
        if when == "always":
            return (0, 0)
        if when == "benefit":
            m = rules.pattern("benefit").search(text)
        elif when == "market":
            m = rules.pattern("market_content").search(text)
        elif when == "figures":
            m = rules.pattern("market_figure").search(text)
        elif when == "advice":
            # 不构成投资建议 itself contains 建议: look for advice outside the statement.
            plain = phrases.not_advice.sub(lambda x: "#" * len(x.group(0)), text)
            m = phrases.advisory.search(plain)
            if m is not None and not rules.pattern("market_content").search(text):
                m = None
        else:
            return None
        return (m.start(), m.end()) if m else None

    def present(check: str) -> bool:
        if check == "risk_warning":
            return bool(phrases.risk_warning.search(text))
        if check == "not_advice":
            return bool(phrases.not_advice.search(text)) or any(f in text for f in forms["not_advice"])
        if check == "source_date":
            dated = phrases.as_of.search(text) or rules.pattern("date").search(text)
            return bool(phrases.source.search(text) and dated)
        if check == "adviser":
            return bool(phrases.adviser.search(text) and rules.pattern("sac_number").search(text))
        if check == "firm_name":
            return any(f in text for f in forms["firm"])
        if check == "opt_out":
            return bool(rules.pattern("opt_out").search(text)) or any(f in text for f in forms["opt_out"])
        return True

    for check, when in checks.items():
        if check == "links":
            hits += _links(norm, rules, policy)
            continue
        span = trigger(when)
        if span is None or present(check):
            continue
        category = CHECK_CATEGORIES.get(check, "S")
        message = rules.messages.get(check, f"Missing {check}.")
        whole = span == (0, 0)
        hits.append(
            Hit(f"{category}.{check}", category, WARN, *span, message, "none", "structure", whole_text=whole)
        )
    return hits
