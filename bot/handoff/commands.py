"""What managers type to the app: 我的线索, 接受 <编号>, 拒绝 <编号> [原因], 成交 <编号>, 结束 <编号>."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.handoff.brief import brief_name
from bot.handoff.flow import Answer, Desk, HandoffError, accept, decline
from bot.handoff.managers import FIRM_TZ
from bot.leads.stages import Stage, StageError, transition
from models.handoff import OPEN_STATUSES, Handoff, HandoffStatus
from models.leads import Lead

LIST = "list"
ACCEPT = "accept"
DECLINE = "decline"
CONVERTED = "converted"
LOST = "lost"
LIST_WORDS = frozenset({"我的线索", "线索", "我的客户", "待办"})
_VERBS = {"接受": ACCEPT, "拒绝": DECLINE, "成交": CONVERTED, "结束": LOST}
_WITH_ID = re.compile(r"^(接受|拒绝|成交|结束)\s*[#＃]?(\d{1,9})(?:\s+(.*))?$", re.S)
MAX_LISTED = 8


@dataclass(frozen=True)
class Command:
    """A manager's typed command: what to do, to which handoff, and an optional note."""

    action: str
    handoff_id: int | None = None
    note: str = ""


def parse(text: str) -> Command | None:
    """The command in a member's message, or None when it is not one (full-width forms are folded)."""
    folded = unicodedata.normalize("NFKC", text).strip()
    if folded in LIST_WORDS:
        return Command(LIST)
    match = _WITH_ID.match(folded)
    if match is None:
        return None
    return Command(_VERBS[match.group(1)], int(match.group(2)), (match.group(3) or "").strip())


def _clock(at: datetime) -> str:
    local = at.astimezone(FIRM_TZ)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def my_leads(session: Session, userid: str) -> list[tuple[Handoff, Lead]]:
    """The manager's open handoffs (awaiting an answer first, then accepted), newest first within each."""
    rows = session.execute(
        select(Handoff, Lead)
        .join(Lead, Lead.id == Handoff.lead_id)
        .where(Handoff.manager_userid == userid, Handoff.status.in_(OPEN_STATUSES))
        .order_by(Handoff.status.desc(), Handoff.offered_at.desc())
    )
    return [(h, lead) for h, lead in rows]


def summary(session: Session, userid: str) -> tuple[str, str]:
    """(what the manager has open, by when the first answer is due) for the reply to 我的线索."""
    rows = my_leads(session, userid)
    if not rows:
        return "您目前没有待处理的线索", "下一条线索到来"
    items = []
    for handoff, lead in rows[:MAX_LISTED]:
        if handoff.status != HandoffStatus.OFFERED:
            state = "跟进中"
        else:  # an offer whose card has not reached the manager yet has no answer time
            state = f"待接受，{_clock(handoff.due_at)}前" if handoff.due_at else "待接受"
        items.append(f"#{handoff.id} {brief_name(lead)}（{state}）")
    more = f" 等 {len(rows)} 条" if len(rows) > MAX_LISTED else ""
    due = min((h.due_at for h, _ in rows if h.due_at is not None), default=None)
    return f"您的线索：{'；'.join(items)}{more}", _clock(due) if due else "方便时"


_ANSWER_TEXT = {
    "accepted": "线索 #{id} 已由您接手，会话正在转给您",
    "declined": "线索 #{id} 已拒绝，将转给其他客户经理",
    "already": "线索 #{id} 您已接受过",
    "expired": "线索 #{id} 已超时或已转派，无法再处理",
    "not_yours": "线索 #{id} 不在您名下",
}


def _answer_text(answer: Answer) -> str:
    return _ANSWER_TEXT[answer.outcome].format(id=answer.handoff.id)


def _finish(desk: Desk, userid: str, handoff_id: int, to: Stage) -> str:
    handoff = desk.session.get(Handoff, handoff_id)
    if handoff is None or handoff.manager_userid != userid:
        return f"线索 #{handoff_id} 不在您名下"
    if handoff.status != HandoffStatus.ACCEPTED or handoff.open_lead_id is None:
        return f"线索 #{handoff_id} 不是您正在跟进的线索"
    lead = desk.session.get(Lead, handoff.lead_id)
    assert lead is not None
    word = "成交" if to == Stage.CONVERTED else "结束跟进"
    try:
        transition(desk.session, lead, to, f"manager:{userid}", f"{word} (#{handoff_id})", desk.now)
    except StageError as exc:
        return f"线索 #{handoff_id} 无法标记为{word}：{exc}"
    return f"线索 #{handoff_id} 已标记为{word}"


def run(desk: Desk, userid: str, command: Command) -> tuple[str, str]:
    """Carry out the command for `userid`; returns (reply title, due) for the confirmation to the manager."""
    if command.action == LIST:
        return summary(desk.session, userid)
    assert command.handoff_id is not None
    try:
        if command.action == ACCEPT:
            return _answer_text(accept(desk, command.handoff_id, userid)), "尽快"
        if command.action == DECLINE:
            return _answer_text(decline(desk, command.handoff_id, userid, note=command.note)), "方便时"
    except HandoffError:
        return f"没有编号为 {command.handoff_id} 的线索", "方便时"
    to = Stage.CONVERTED if command.action == CONVERTED else Stage.LOST
    return _finish(desk, userid, command.handoff_id, to), "方便时"
