"""Evaluation on the labelled corpus: per-category precision/recall, block recall, false-block rate."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Engine, default_engine
from .lexicon import DATA_DIR
from .model import LintResult, Verdict

__all__ = [
    "TARGET_BLOCK_RECALL",
    "TARGET_FALSE_BLOCK_RATE",
    "Case",
    "CategoryScore",
    "EvalReport",
    "evaluate",
    "format_report",
    "load_corpus",
]

TARGET_BLOCK_RECALL = 0.97
TARGET_FALSE_BLOCK_RATE = 0.02
_VERDICTS = ("pass", "review", "block")


@dataclass(frozen=True, slots=True)
class Case:
    """One labelled text: what the engine should decide and which categories it should name."""

    id: str
    text: str
    kind: str | None
    expected: Verdict
    categories: tuple[str, ...]
    technique: str
    note: str = ""


@dataclass(slots=True)
class CategoryScore:
    """Counts for one category across the corpus."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        """Share of cases flagged with the category that were labelled with it."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """Share of cases labelled with the category that were flagged with it."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass(slots=True)
class EvalReport:
    """Corpus-level figures and the cases that went wrong."""

    total: int = 0
    violations: int = 0
    non_violations: int = 0
    expected_block: int = 0
    blocked_of_expected: int = 0
    not_block_expected: int = 0
    wrongly_blocked: int = 0
    verdict_matches: int = 0
    categories: dict[str, CategoryScore] = field(default_factory=lambda: defaultdict(CategoryScore))
    techniques: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    mistakes: list[tuple[Case, LintResult]] = field(default_factory=list)

    @property
    def block_recall(self) -> float:
        """Share of must-block cases that were blocked."""
        return self.blocked_of_expected / self.expected_block if self.expected_block else 1.0

    @property
    def false_block_rate(self) -> float:
        """Share of cases that must not be blocked but were."""
        return self.wrongly_blocked / self.not_block_expected if self.not_block_expected else 0.0

    @property
    def verdict_accuracy(self) -> float:
        """Share of cases whose verdict equals the label exactly."""
        return self.verdict_matches / self.total if self.total else 1.0

    @property
    def meets_targets(self) -> bool:
        """Block recall ≥ 0.97 and false-block rate ≤ 2 %."""
        return self.block_recall >= TARGET_BLOCK_RECALL and self.false_block_rate <= TARGET_FALSE_BLOCK_RATE


def load_corpus(path: str | Path | None = None) -> list[Case]:
    """Read the JSONL corpus (default: the shipped one)."""
    target = Path(path) if path else DATA_DIR / "corpus.jsonl"
    cases = []
    with target.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            raw = json.loads(line)
            if raw["expected"] not in _VERDICTS:
                raise ValueError(f"{target}:{lineno}: expected must be one of {_VERDICTS}")
            cases.append(
                Case(
                    id=str(raw.get("id", f"line{lineno}")),
                    text=raw["text"],
                    kind=raw.get("kind"),
                    expected=raw["expected"],
                    categories=tuple(raw.get("categories", ())),
                    technique=str(raw.get("technique", "")),
                    note=str(raw.get("note", "")),
                )
            )
    return cases


def evaluate(cases: list[Case] | None = None, engine: Engine | None = None) -> EvalReport:
    """Lint every case and score verdicts and categories against the labels."""
    engine = engine or default_engine()
    report = EvalReport()
    for case in cases if cases is not None else load_corpus():
        result = engine.lint(case.text, case.kind)
        report.total += 1
        if case.expected == "pass":
            report.non_violations += 1
        else:
            report.violations += 1
        if case.expected == "block":
            report.expected_block += 1
            report.blocked_of_expected += result.verdict == "block"
        else:
            report.not_block_expected += 1
            report.wrongly_blocked += result.verdict == "block"
        report.verdict_matches += result.verdict == case.expected
        report.techniques[case.technique]["ok" if result.verdict == case.expected else "wrong"] += 1
        found, wanted = result.categories, set(case.categories)
        for cat in found | wanted:
            score = report.categories[cat]
            if cat in found and cat in wanted:
                score.tp += 1
            elif cat in found:
                score.fp += 1
            else:
                score.fn += 1
        if result.verdict != case.expected or found != wanted:
            report.mistakes.append((case, result))
    return report


def _cat_key(cat: str) -> tuple[str, int]:
    digits = "".join(ch for ch in cat if ch.isdigit())
    return (cat.rstrip("0123456789"), int(digits or 0))


def format_report(report: EvalReport, show_mistakes: bool = False) -> str:
    """A plain-text table of the evaluation, suitable for a terminal."""
    lines = [
        f"corpus: {report.total} cases ({report.violations} violations,"
        f" {report.non_violations} non-violations)",
        "",
        f"{'category':<9}{'precision':>10}{'recall':>8}{'tp':>5}{'fp':>5}{'fn':>5}",
    ]
    for cat in sorted(report.categories, key=_cat_key):
        s = report.categories[cat]
        lines.append(f"{cat:<9}{s.precision:>10.3f}{s.recall:>8.3f}{s.tp:>5}{s.fp:>5}{s.fn:>5}")
    lines += [
        "",
        f"block recall      {report.block_recall:.3f}  ({report.blocked_of_expected}/{report.expected_block};"
        f" target ≥ {TARGET_BLOCK_RECALL})",
        f"false-block rate  {report.false_block_rate:.3f}"
        f"  ({report.wrongly_blocked}/{report.not_block_expected}; target ≤ {TARGET_FALSE_BLOCK_RATE})",
        f"verdict accuracy  {report.verdict_accuracy:.3f}",
        f"targets           {'met' if report.meets_targets else 'MISSED'}",
    ]
    if show_mistakes and report.mistakes:
        lines += ["", "cases that differ from their label:"]
        for case, result in report.mistakes:
            cats = ",".join(sorted(result.categories)) or "-"
            lines.append(
                f"  {case.id} [{case.technique}] expected {case.expected}/{','.join(case.categories) or '-'}"
                f" got {result.verdict}/{cats}: {case.text[:60]}"
            )
    return "\n".join(lines)
