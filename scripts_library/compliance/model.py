"""Value types shared by the compliance modules: findings, verdicts and the lint policy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "BLOCK",
    "DEFAULT_DISCLAIMERS",
    "KINDS",
    "WARN",
    "Finding",
    "LintPolicy",
    "LintResult",
    "Severity",
    "Verdict",
]

Severity = Literal["block", "warn"]
Verdict = Literal["pass", "review", "block"]
BLOCK: Severity = "block"
WARN: Severity = "warn"

KINDS = (
    "welcome",
    "morning_report",
    "course_invite",
    "course_reminder",
    "subscribe_confirm",
    "unsubscribe_confirm",
    "keyword_reply",
    "fallback",
    "handoff_brief",
    "staff_reminder",
)

DEFAULT_DISCLAIMERS = (
    "投资有风险，入市需谨慎。",
    "市场有风险，投资需谨慎。",
    "以上内容仅供参考，不构成投资建议。",
    "本资料仅供参考，不构成投资建议。",
    "过往业绩不代表未来表现。",
    "本产品不保本，不保证最低收益，过往业绩不代表未来表现。",
    "基金有风险，投资需谨慎。基金管理人不保证基金一定盈利，也不保证最低收益。",
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule hit: which rule, how severe, on which layer, and where in the original text."""

    rule_id: str
    category: str
    severity: Severity
    layer: str
    start: int
    end: int
    matched: str
    message: str
    lexicon_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LintResult:
    """The verdict on one text with the findings that justify it."""

    verdict: Verdict
    findings: list[Finding]
    lexicon_version: str

    @property
    def blocked(self) -> bool:
        """True when the text must not be sent."""
        return self.verdict == "block"

    @property
    def categories(self) -> set[str]:
        """Categories of all findings."""
        return {f.category for f in self.findings}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: verdict, findings and the lexicon version they were produced with."""
        return {
            "verdict": self.verdict,
            "findings": [f.to_dict() for f in self.findings],
            "lexicon_version": self.lexicon_version,
        }


@dataclass(frozen=True, slots=True)
class LintPolicy:
    """Firm-specific inputs of the structural checks (filled from configuration by the app)."""

    firm_name: str = "示例证券"
    firm_aliases: tuple[str, ...] = ()
    allowed_link_domains: tuple[str, ...] = (
        "weixin.qq.com",
        "work.weixin.qq.com",
        "csrc.gov.cn",
        "sse.com.cn",
        "szse.cn",
        "bse.cn",
        "cninfo.com.cn",
        "sac.net.cn",
    )
    disclaimers: tuple[str, ...] = DEFAULT_DISCLAIMERS
    opt_out_phrases: tuple[str, ...] = ("回复TD退订", "回复T退订", "回复退订", "退订回T", "退订回TD")
    not_advice_phrases: tuple[str, ...] = ("仅供参考，不构成投资建议",)

    def __post_init__(self) -> None:
        # Accept lists from configuration but keep the policy hashable (its phrases are cached).
        for name in _PHRASE_FIELDS:
            object.__setattr__(self, name, tuple(getattr(self, name)))


_PHRASE_FIELDS = (
    "firm_aliases",
    "allowed_link_domains",
    "disclaimers",
    "opt_out_phrases",
    "not_advice_phrases",
)
