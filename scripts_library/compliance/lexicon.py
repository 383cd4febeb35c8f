"""The versioned red-line lexicon and detector rules: loading, validation and the cached automaton."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import ahocorasick

from .model import Severity
from .normalize import canonical

__all__ = [
    "DATA_DIR",
    "Lexicon",
    "LexiconError",
    "Rule",
    "RuleSet",
    "TermMatch",
    "load_lexicon",
    "load_rules",
]

DATA_DIR = Path(__file__).parent / "data"
_PLACEHOLDER = re.compile(r"<<(\w+)>>")


class LexiconError(ValueError):
    """A lexicon or rules file is malformed."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A word rule: a list of terms that all mean the same red line."""

    id: str
    category: str
    severity: Severity
    message: str
    terms: tuple[str, ...]
    negatable: bool = True
    layer: str | None = None


@dataclass(frozen=True, slots=True)
class TermMatch:
    """A lexicon term found on the digit layer at [start, end)."""

    start: int
    end: int
    rule: Rule
    term: str


def _severity(value: object, where: str) -> Severity:
    if value == "block":
        return "block"
    if value == "warn":
        return "warn"
    raise LexiconError(f"{where}: severity must be 'block' or 'warn', not {value!r}")


class Lexicon:
    """Word rules compiled into one Aho–Corasick automaton over canonical (normalized) terms."""

    def __init__(self, version: str, categories: Mapping[str, str], rules: Sequence[Rule]) -> None:
        self.version = version
        self.categories = dict(categories)
        self.rules = {r.id: r for r in rules}
        self._automaton = ahocorasick.Automaton()
        self._exclusions = ahocorasick.Automaton()
        entries: dict[str, list[tuple[Rule, str]]] = {}
        for rule in rules:
            if rule.category not in self.categories:
                raise LexiconError(f"rule {rule.id}: unknown category {rule.category}")
            for term in rule.terms:
                key = canonical(term)
                if key:
                    entries.setdefault(key, []).append((rule, term))
        for key, payload in entries.items():
            self._automaton.add_word(key, (len(key), tuple(payload)))
        self.term_count = sum(len(r.terms) for r in rules)
        self._automaton.make_automaton()
        self._has_exclusions = False

    def set_exclusions(self, exclusions: Mapping[str, Sequence[str]]) -> None:
        """Register superstrings that neutralise a rule's match inside them (确保本人 for 保本)."""
        grouped: dict[str, set[str]] = {}
        for rule_id, phrases in exclusions.items():
            for phrase in phrases:
                key = canonical(phrase)
                if key:
                    grouped.setdefault(key, set()).add(rule_id)
        for key, ids in grouped.items():
            self._exclusions.add_word(key, (len(key), frozenset(ids)))
        if grouped:
            self._exclusions.make_automaton()
            self._has_exclusions = True

    def matches(self, text: str) -> Iterator[TermMatch]:
        """All rule terms in `text` (the digit layer), minus those inside an exclusion phrase."""
        if not text:
            return
        excluded: list[tuple[int, int, frozenset[str]]] = []
        if self._has_exclusions:
            excluded = [(end + 1 - n, end + 1, ids) for end, (n, ids) in self._exclusions.iter(text)]
        for end, (n, payload) in self._automaton.iter(text):
            start, stop = end + 1 - n, end + 1
            for rule, term in payload:
                if any(s <= start and stop <= e and ("*" in ids or rule.id in ids) for s, e, ids in excluded):
                    continue
                yield TermMatch(start, stop, rule, term)

    def extended(self, extra: Mapping[str, Sequence[str]]) -> Lexicon:
        """A copy with extra terms appended to existing rules (used by the benchmark)."""
        rules = [
            Rule(
                r.id,
                r.category,
                r.severity,
                r.message,
                r.terms + tuple(extra.get(r.id, ())),
                r.negatable,
                r.layer,
            )
            for r in self.rules.values()
        ]
        clone = Lexicon(self.version, self.categories, rules)
        clone._exclusions = self._exclusions
        clone._has_exclusions = self._has_exclusions
        return clone


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise LexiconError(f"{path}: {exc}") from exc


def _parse_lexicon(data: Mapping[str, Any], where: str) -> Lexicon:
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise LexiconError(f"{where}: missing version")
    categories = {cid: str(c.get("name", cid)) for cid, c in data.get("categories", {}).items()}
    rules = []
    exclusions: dict[str, list[str]] = {"*": list(data.get("exclude", []))}
    for i, raw in enumerate(data.get("rules", [])):
        rid = raw.get("id") or f"{where}#{i}"
        terms = raw.get("terms")
        if not isinstance(terms, list) or not terms:
            raise LexiconError(f"{where}: rule {rid} has no terms")
        rules.append(
            Rule(
                id=rid,
                category=str(raw.get("category", "")),
                severity=_severity(raw.get("severity"), f"{where}: rule {rid}"),
                message=str(raw.get("message", "")),
                terms=tuple(str(t) for t in terms),
                negatable=bool(raw.get("negatable", True)),
                layer=raw.get("layer"),
            )
        )
        if raw.get("exclude"):
            exclusions[rid] = [str(x) for x in raw["exclude"]]
    lexicon = Lexicon(version, categories, rules)
    lexicon.set_exclusions(exclusions)
    return lexicon


@lru_cache(maxsize=8)
def load_lexicon(path: str | None = None) -> Lexicon:
    """Load and compile the lexicon once per path (the default is the shipped data file)."""
    target = Path(path) if path else DATA_DIR / "lexicon.toml"
    return _parse_lexicon(_read_toml(target), str(target))


class RuleSet:
    """Detector configuration from rules.toml: named regexes, word lists and per-kind structure."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        version = data.get("version")
        if not isinstance(version, str) or not version:
            raise LexiconError(f"{where}: missing version")
        self.version = version
        self.lists: dict[str, tuple[str, ...]] = {
            k: tuple(str(x) for x in v) for k, v in data.get("lists", {}).items()
        }
        self.regex: dict[str, re.Pattern[str]] = {}
        for name, pattern in data.get("regex", {}).items():
            try:
                self.regex[name] = re.compile(_PLACEHOLDER.sub(self._expand, pattern))
            except (re.error, LexiconError) as exc:
                raise LexiconError(f"{where}: regex {name}: {exc}") from exc
        self.structure: dict[str, dict[str, str]] = {
            kind: {str(k): str(v) for k, v in checks.items()}
            for kind, checks in data.get("structure", {}).items()
        }
        self.messages: dict[str, str] = {str(k): str(v) for k, v in data.get("messages", {}).items()}

    def _expand(self, m: re.Match[str]) -> str:
        if m.group(1) not in self.lists:
            raise LexiconError(f"unknown list <<{m.group(1)}>>")
        return self.alternation(m.group(1))

    def pattern(self, name: str) -> re.Pattern[str]:
        """A named regex; a missing one is a data error, reported by name."""
        try:
            return self.regex[name]
        except KeyError:
            raise LexiconError(f"rules: no regex named {name!r}") from None

    def alternation(self, name: str) -> str:
        """A word list as a regex alternation of its canonical forms (longest first)."""
        words = sorted({canonical(w) for w in self.lists.get(name, ())}, key=len, reverse=True)
        return "|".join(re.escape(w) for w in words if w)


@lru_cache(maxsize=8)
def load_rules(path: str | None = None) -> RuleSet:
    """Load the detector rules once per path (the default is the shipped data file)."""
    target = Path(path) if path else DATA_DIR / "rules.toml"
    return RuleSet(_read_toml(target), str(target))
