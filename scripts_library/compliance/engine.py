"""The compliance engine: normalize, match words, run detectors and structural checks, decide."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

from .detectors import Hit, Negation, TextContext, run_detectors
from .lexicon import Lexicon, RuleSet, load_lexicon, load_rules
from .model import BLOCK, KINDS, WARN, Finding, LintPolicy, LintResult, Verdict
from .normalize import Normalized, normalize
from .structure import check_structure, disclaimer_spans

__all__ = ["Engine", "LintError", "default_engine", "lint", "scan_inbound"]

_DEFAULT_POLICY = LintPolicy()


class LintError(ValueError):
    """The caller asked for something the linter does not know (e.g. an unknown script kind)."""


class Engine:
    """A lexicon plus detector rules, ready to lint many texts (thread-safe, no per-call state)."""

    def __init__(self, lexicon: Lexicon | None = None, rules: RuleSet | None = None) -> None:
        self.lexicon = lexicon or load_lexicon()
        self.rules = rules or load_rules()
        self.version = f"{self.lexicon.version}/rules-{self.rules.version}"

    def lint(self, text: str, kind: str | None = None, policy: LintPolicy | None = None) -> LintResult:
        """Lint one outbound text; `kind=None` is free text (word rules only, no structural checks)."""
        if kind is not None and kind not in KINDS:
            raise LintError(f"unknown script kind {kind!r}; expected one of {', '.join(KINDS)}")
        policy = policy or _DEFAULT_POLICY
        norm = normalize(text)
        ctx = TextContext(norm.text, self.rules)
        hits = self._word_hits(norm) + run_detectors(ctx)
        hits = [self._contextual(h, ctx) for h in hits if not ctx.suppressed(h)]
        findings = [self._finding(h, norm) for h in hits]
        approved = disclaimer_spans(text, policy)
        if approved:
            findings = [f for f in findings if not any(s <= f.start and f.end <= e for s, e in approved)]
        if kind is not None:
            findings += [self._finding(h, norm) for h in check_structure(norm, ctx, kind, policy)]
        findings = _dedupe(findings)
        return LintResult(_verdict(findings), findings, self.version)

    def scan_inbound(self, text: str) -> dict[str, int]:
        """Risk-word statistics for an inbound customer message: category → count (never blocks)."""
        counts = Counter(f.category for f in self.lint(text).findings)
        return dict(sorted(counts.items()))

    def _word_hits(self, norm: Normalized) -> list[Hit]:
        hits = []
        for m in self.lexicon.matches(norm.text):
            if not _latin_bounded(norm, m.start, m.end, m.term):
                continue
            rule = m.rule
            negation: Negation = "full" if rule.negatable else "education"
            hits.append(
                Hit(rule.id, rule.category, rule.severity, m.start, m.end, rule.message, negation, rule.layer)
            )
        return hits

    @staticmethod
    def _contextual(hit: Hit, ctx: TextContext) -> Hit:
        """Forecast wording in a question is held for review rather than blocked."""
        if hit.category == "C2" and hit.severity == BLOCK and ctx.question(hit.start):
            return Hit(
                hit.rule_id, hit.category, WARN, hit.start, hit.end, hit.message + " (question)", hit.negation
            )
        return hit

    def _finding(self, hit: Hit, norm: Normalized) -> Finding:
        if hit.whole_text:
            start, end = 0, len(norm.original)
            layer = hit.layer or "structure"
        elif hit.on_normalized:
            start, end = norm.normalized_to_original(hit.start, hit.end)
            layer = hit.layer or "normalized"
        else:
            start, end = norm.span(hit.start, hit.end)
            layer = hit.layer or norm.layer(hit.start, hit.end)
        return Finding(
            hit.rule_id,
            hit.category,
            hit.severity,
            layer,
            start,
            end,
            norm.original[start:end],
            hit.message,
            self.version,
        )


def _latin_bounded(norm: Normalized, start: int, end: int, term: str) -> bool:
    """Latin terms must start and end on word boundaries of the normalized text (not inside words)."""
    head, tail = term[:1], term[-1:]
    if not (head.isascii() and head.isalpha()) and not (tail.isascii() and tail.isalpha()):
        return True
    n0, n1 = norm.normalized_span(start, end)
    text = norm.normalized
    if head.isascii() and head.isalpha() and n0 > 0 and text[n0 - 1].isascii() and text[n0 - 1].isalnum():
        return False
    if tail.isascii() and tail.isalpha() and n1 < len(text):
        rest = text[n1 : n1 + 2]
        if rest[:1] == "s":
            rest = rest[1:]
        if rest[:1].isascii() and rest[:1].isalpha():
            return False
    return True


_RANK = {BLOCK: 2, WARN: 1}


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per category and overlapping span: the most severe, then the longest."""
    ordered = sorted(findings, key=lambda f: (-_RANK[f.severity], -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for f in ordered:
        overlapping = any(
            k.category == f.category and k.start < f.end and f.start < k.end and k.layer != "structure"
            for k in kept
        )
        if not overlapping or f.layer == "structure":
            kept.append(f)
    return sorted(kept, key=lambda f: (f.start, f.end, f.rule_id))


def _verdict(findings: list[Finding]) -> Verdict:
    if any(f.severity == BLOCK for f in findings):
        return "block"
    if findings:
        return "review"
    return "pass"


@lru_cache(maxsize=1)
def default_engine() -> Engine:
    """The engine built from the shipped lexicon and rules (built once per process)."""
    return Engine()


def lint(text: str, kind: str | None = None, policy: LintPolicy | None = None) -> LintResult:
    """Lint `text` as a message of script `kind` (None = free text) under `policy`."""
    return default_engine().lint(text, kind, policy)


def scan_inbound(text: str) -> dict[str, int]:
    """Count risk categories in an inbound customer message (for statistics; never blocks)."""
    return default_engine().scan_inbound(text)
