"""Compliance linter for outbound (and inbound) WeCom messages: see COMPLIANCE.md.

Usage: ``lint("本产品保本保息").verdict == "block"``; ``lint(text, "morning_report", policy)`` adds the
structural checks of that script kind.
"""

from __future__ import annotations

from .engine import Engine, LintError, default_engine, lint, scan_inbound
from .lexicon import Lexicon, LexiconError, RuleSet, load_lexicon, load_rules
from .model import KINDS, Finding, LintPolicy, LintResult, Severity, Verdict
from .normalize import Normalized, canonical, normalize

__all__ = [
    "KINDS",
    "Engine",
    "Finding",
    "Lexicon",
    "LexiconError",
    "LintError",
    "LintPolicy",
    "LintResult",
    "Normalized",
    "RuleSet",
    "Severity",
    "Verdict",
    "canonical",
    "default_engine",
    "lint",
    "load_lexicon",
    "load_rules",
    "normalize",
    "scan_inbound",
]
