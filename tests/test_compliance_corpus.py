"""The labelled corpus: its size and spread, and the quality targets the engine must meet on it."""

from __future__ import annotations

from collections import Counter

import pytest

from scripts_library.compliance.evaluate import (
    TARGET_BLOCK_RECALL,
    TARGET_FALSE_BLOCK_RATE,
    Case,
    EvalReport,
    evaluate,
    load_corpus,
)

CATEGORIES = [f"C{i}" for i in range(1, 13)]
EVASIONS = {
    "fullwidth",
    "zero_width",
    "traditional",
    "separator",
    "chinese_numeral",
    "circled_digit",
    "emoji",
    "case",
    "homoglyph",
    "pinyin",
    "homophone",
    "injection",
    "english",
    "mixed",
}
TRICKY = {
    "date",
    "phone",
    "postcode",
    "amount",
    "past_fact",
    "time",
    "disclaimer",
    "education",
    "company_name",
    "fund_name",
    "index_name",
    "recommend_reading",
    "sac_number",
    "labelled_id",
}


@pytest.fixture(scope="module")
def corpus() -> list[Case]:
    return load_corpus()


@pytest.fixture(scope="module")
def report(corpus: list[Case]) -> EvalReport:
    return evaluate(corpus)


def test_corpus_is_large_enough(corpus: list[Case]) -> None:
    violations = [c for c in corpus if c.expected != "pass"]
    clean = [c for c in corpus if c.expected == "pass"]
    assert len(corpus) >= 300
    assert len(violations) >= 150
    assert len(clean) >= 150
    assert len({c.id for c in corpus}) == len(corpus)


def test_every_category_has_violations(corpus: list[Case]) -> None:
    per_category = Counter(cat for c in corpus for cat in c.categories)
    for cat in CATEGORIES:
        assert per_category[cat] >= 6, cat


def test_every_evasion_technique_is_covered(corpus: list[Case]) -> None:
    techniques = Counter(c.technique for c in corpus if c.expected != "pass")
    assert set(techniques) >= EVASIONS


def test_tricky_non_violations_cover_the_must_not_block_list(corpus: list[Case]) -> None:
    techniques = Counter(c.technique for c in corpus if c.expected == "pass")
    assert set(techniques) >= TRICKY
    assert sum(techniques[t] for t in TRICKY) >= 150


def test_labels_are_consistent(corpus: list[Case]) -> None:
    for case in corpus:
        assert (case.expected == "pass") == (not case.categories), case.id


def test_block_recall_meets_target(report: EvalReport) -> None:
    assert report.block_recall >= TARGET_BLOCK_RECALL


def test_false_block_rate_meets_target(report: EvalReport) -> None:
    assert report.false_block_rate <= TARGET_FALSE_BLOCK_RATE


def test_every_category_is_recalled_and_precise(report: EvalReport) -> None:
    for cat in CATEGORIES:
        score = report.categories[cat]
        assert score.recall >= 0.9, (cat, score)
        assert score.precision >= 0.9, (cat, score)


def test_evasion_variants_of_blocked_texts_are_blocked(corpus: list[Case], report: EvalReport) -> None:
    wrong = {case.id for case, _ in report.mistakes}
    evasions = [c for c in corpus if c.technique in EVASIONS and c.expected == "block"]
    missed = [c.id for c in evasions if c.id in wrong]
    assert len(missed) <= len(evasions) * 0.03, missed
