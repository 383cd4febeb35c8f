"""What a customer's kf text asks for: opt-out, subscribe, 报名, or buying intent (pure functions)."""

from __future__ import annotations

import re
import unicodedata

# Whole-message commands, compared after normalize(): full-width folded, case folded, trimmed.
UNSUBSCRIBE_WORDS = frozenset(
    {"td", "t", "退订", "取消订阅", "退订早报", "取消早报", "取消推送", "退订推送", "unsubscribe"}
)
SUBSCRIBE_WORDS = frozenset({"订阅", "订阅早报", "我要订阅", "subscribe"})
# Compared with inner spaces removed too ("我要 报名").
REGISTER_WORDS = frozenset(
    {
        "报名",
        "我要报名",
        "我想报名",
        "报名参加",
        "报名直播",
        "直播报名",
        "报名课程",
        "报名直播课",
        "预约直播",
        "预约直播课",
        "我要预约直播",
        "预约课程",
        "预约提醒",
    }
)

# Intent → words that signal it anywhere in the message (fed to lead scoring later).
INTENTS: dict[str, tuple[str, ...]] = {
    "open_account": ("开户", "开个户", "开账户", "开通账户"),
    "commission": ("佣金", "费率", "手续费", "万一", "万1"),
    "how_to_buy": ("怎么买", "如何买", "怎么购买", "在哪买", "哪里买"),
    "margin": ("两融", "融资融券"),
    "transfer": ("转户", "转托管"),
    # Asking what to buy or where the market goes: only a licensed adviser may answer.
    "advice": (
        "荐股",
        "推荐股票",
        "推荐一只",
        "买哪只",
        "哪只股票",
        "能不能买",
        "该不该买",
        "后市",
        "投资建议",
    ),
}

_EDGE = re.compile(r"^[\s\W_]+|[\s\W_]+$", re.UNICODE)


def normalize(text: str) -> str:
    """Fold full-width forms and case, drop surrounding spaces and punctuation ("ＴＤ！" → "td")."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _EDGE.sub("", folded)


def is_unsubscribe(text: str) -> bool:
    """Whether the whole message is an opt-out command (TD, T, 退订, 取消订阅…)."""
    return normalize(text) in UNSUBSCRIBE_WORDS


def is_subscribe(text: str) -> bool:
    """Whether the whole message asks to subscribe (订阅…)."""
    return normalize(text) in SUBSCRIBE_WORDS


def is_register(text: str) -> bool:
    """Whether the whole message asks to register for the next live course (报名, 预约直播…)."""
    return re.sub(r"\s+", "", normalize(text)) in REGISTER_WORDS


def intents_in(text: str) -> list[tuple[str, str]]:
    """Every (intent, matched word) in the message, one match per intent, in INTENTS order."""
    folded = normalize(text)
    found: list[tuple[str, str]] = []
    for intent, words in INTENTS.items():
        word = next((w for w in words if w in folded), None)
        if word is not None:
            found.append((intent, word))
    return found
