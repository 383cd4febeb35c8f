"""The handoff template card (button_interaction, WECOM.md §8.2): layout, button keys and outcome labels."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from bot.handoff.brief import Brief

ACCEPT = "accept"
DECLINE = "decline"
KEY_PREFIX = "handoff"
_KEY_RE = re.compile(rf"^{KEY_PREFIX}:({ACCEPT}|{DECLINE}):(\d+)$")
MAX_TITLE = 36
MAX_VALUE = 30
MAX_SUB_TITLE = 1000

# What the card's button turns into once the handoff has an outcome.
ACCEPTED_LABEL = "已接受"
DECLINED_LABEL = "已拒绝"
EXPIRED_LABEL = "已超时转派"
TAKEN_LABEL = "已由他人处理"


@dataclass(frozen=True)
class ButtonKey:
    """A click on a handoff card: which answer, to which handoff."""

    action: str
    handoff_id: int


def button_key(action: str, handoff_id: int) -> str:
    """The callback key of a handoff card button (unique per card)."""
    return f"{KEY_PREFIX}:{action}:{handoff_id}"


def parse_key(key: str) -> ButtonKey | None:
    """The answer a card click carries, or None when the key is not a handoff button."""
    match = _KEY_RE.match(key.strip())
    return ButtonKey(match.group(1), int(match.group(2))) if match else None


def new_task_id(handoff_id: int) -> str:
    """A task_id unique per app ([0-9A-Za-z_-@], ≤128): the handoff id plus a random part."""
    return f"handoff_{handoff_id}_{secrets.token_hex(4)}"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def card(
    handoff_id: int, task_id: str, brief: Brief, text: str, sla_minutes: int, firm: str
) -> dict[str, Any]:
    """The button_interaction card: the approved brief text, key facts and Accept / Decline."""
    facts = [
        ("来源", brief.platform),
        ("钩子码", brief.hook_code),
        ("评分", f"{brief.score}（{brief.qualified_because}）"),
        ("直播课", "、".join(brief.courses) or "未观看"),
    ]
    return {
        "card_type": "button_interaction",
        "source": {"desc": _short(firm, 13) or "线索分配", "desc_color": 1},
        "main_title": {
            "title": _short(f"新线索待跟进：{brief.display_name}", MAX_TITLE),
            "desc": f"编号 {handoff_id} · 请在 {sla_minutes} 分钟内处理",
        },
        "sub_title_text": _short(text.strip(), MAX_SUB_TITLE),
        "horizontal_content_list": [
            {"keyname": name, "value": _short(value, MAX_VALUE)} for name, value in facts
        ],
        "task_id": task_id,
        "button_list": [
            {"text": "接受", "style": 1, "key": button_key(ACCEPT, handoff_id)},
            {"text": "拒绝", "style": 2, "key": button_key(DECLINE, handoff_id)},
        ],
    }
