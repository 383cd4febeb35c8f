"""Properties of the compliance linter on hostile input: no crashes, honest spans, monotone verdicts."""

from __future__ import annotations

from functools import lru_cache

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fuzz import fuzz_linter
from scripts_library.compliance import KINDS, LintResult, canonical, default_engine, lint

# Lint takes about a millisecond; these budgets keep the whole file to a few seconds.
FAST = settings(max_examples=150, deadline=None)
QUICK = settings(max_examples=60, deadline=None)
_RANK = {"pass": 0, "review": 1, "block": 2}
# Characters that obfuscate a term without changing its meaning (WECOM-side filters ignore them).
SEPARATORS = (" ", "-", "*", "·", "\u200b", "\u3000", "~")


@lru_cache(maxsize=1)
def block_terms() -> tuple[tuple[str, str], ...]:
    """(rule id, term) for every term of every block-severity word rule in the shipped lexicon."""
    rules = default_engine().lexicon.rules.values()
    return tuple(sorted((r.id, t) for r in rules if r.severity == "block" for t in r.terms))


@lru_cache(maxsize=1)
def canonical_terms() -> dict[str, frozenset[str]]:
    """Rule id -> the canonical forms of its terms (what the automaton matches)."""
    terms: dict[str, set[str]] = {}
    for rule in default_engine().lexicon.rules.values():
        terms.setdefault(rule.id, set()).update(canonical(t) for t in rule.terms)
    return {rule_id: frozenset(forms) for rule_id, forms in terms.items()}


def block_term() -> st.SearchStrategy[tuple[str, str]]:
    return st.sampled_from(block_terms())


def check_invariants(text: str, result: LintResult) -> None:
    """What every lint result must satisfy, whatever the text."""
    for finding in result.findings:
        assert 0 <= finding.start <= finding.end <= len(text), finding
        assert finding.matched == text[finding.start : finding.end], finding
        assert finding.severity in ("block", "warn")
    severities = {f.severity for f in result.findings}
    expected = "block" if "block" in severities else "review" if severities else "pass"
    assert result.verdict == expected
    order = [(f.start, f.end, f.rule_id) for f in result.findings]
    assert order == sorted(order)


# Mixes the scripts real messages use with the characters filters are usually fooled by.
hostile_text = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.sampled_from("保本稳赚收益翻倍涨停内幕微信加我不谨防骗局？?。，\n "),
        st.sampled_from(SEPARATORS),
    ),
    max_size=120,
)


@FAST
@given(text=hostile_text, kind=st.sampled_from((None, *KINDS)))
@example(text="保\udfff本", kind=None)
@example(text="\x00" * 3 + "百分之百保本", kind="welcome")
def test_any_text_gets_a_verdict_with_spans_inside_it(text: str, kind: str | None) -> None:
    result = lint(text, kind)
    check_invariants(text, result)
    assert lint(text, kind) == result  # no state carried between calls


@FAST
@given(prefix=hostile_text, suffix=hostile_text, picked=block_term())
def test_a_red_line_term_in_its_own_clause_blocks_and_is_pointed_at(
    prefix: str, suffix: str, picked: tuple[str, str]
) -> None:
    rule_id, term = picked
    text = f"{prefix}\n{term}\n{suffix}"
    start = len(prefix) + 1
    result = lint(text)
    check_invariants(text, result)
    assert result.verdict == "block", (rule_id, text)
    assert any(
        f.severity == "block" and f.start < start + len(term) and f.end > start for f in result.findings
    ), (rule_id, text, result.findings)


@FAST
@given(picked=block_term(), separators=st.lists(st.sampled_from(SEPARATORS), min_size=1, max_size=8))
def test_separators_inside_a_term_do_not_hide_it(picked: tuple[str, str], separators: list[str]) -> None:
    rule_id, term = picked
    if not all("\u4e00" <= c <= "\u9fff" for c in term):
        return  # separators split Latin words and numbers on purpose (600519 100股 stays apart)
    pieces = [term[0]]
    for i, char in enumerate(term[1:]):
        pieces.append(separators[i % len(separators)] + char)
    disguised = "".join(pieces)
    text = f"您好。{disguised}。"
    result = lint(text)
    check_invariants(text, result)
    assert result.verdict == "block", (rule_id, disguised)
    hit = [f for f in result.findings if f.start < 3 + len(disguised) and f.end > 3]
    assert hit, (rule_id, disguised, result.findings)


@FAST
@given(text=hostile_text)
def test_word_findings_point_at_text_that_normalises_to_one_of_the_rule_terms(text: str) -> None:
    result = lint(text)
    forms = canonical_terms()
    for finding in result.findings:
        if finding.rule_id not in forms or finding.layer == "structure":
            continue
        matched = canonical(finding.matched)
        assert any(form in matched for form in forms[finding.rule_id]), (finding, matched)


@FAST
@given(text=hostile_text, picked=block_term(), kind=st.sampled_from((None, *KINDS)))
def test_adding_a_red_line_phrase_never_lowers_the_verdict(
    text: str, picked: tuple[str, str], kind: str | None
) -> None:
    before = lint(text, kind)
    for longer in (f"{text}\n{picked[1]}", f"{picked[1]}\n{text}"):
        after = lint(longer, kind)
        check_invariants(longer, after)
        assert after.verdict == "block", (longer, after.findings)
        assert _RANK[after.verdict] >= _RANK[before.verdict]


@QUICK
@given(text=hostile_text, extra=hostile_text)
def test_a_blocked_text_stays_blocked_whatever_follows_in_a_new_paragraph(text: str, extra: str) -> None:
    if not lint(text).blocked:
        text = f"{text}\n保本稳赚"
    assert lint(f"{text}\n\n{extra}").blocked


def test_the_linter_fuzzer_runs_clean_for_a_few_hundred_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz_linter.main(fuzz_linter.TARGET, ["--iterations", "500", "--seed", "1"]) == 0
    assert "500 inputs, 0 findings" in capsys.readouterr().out
