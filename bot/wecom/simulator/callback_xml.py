"""Plaintext callback XML in WeCom's exact shapes (WECOM.md §2, §7.1, §8.3, 获客助手), before encryption."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence

Field = tuple[str, str | int]

EXTERNAL_CONTACT_CHANGE_TYPES = (
    "add_external_contact",
    "edit_external_contact",
    "add_half_external_contact",
    "del_external_contact",
    "del_follow_user",
    "transfer_fail",
    "msg_audit_approved",
)
EXTERNAL_TAG_CHANGE_TYPES = ("create", "update", "delete", "shuffle")
# Event=customer_acquisition (获客助手, DOC-97299 per ZSM callbacks) and the fields each ChangeType adds.
CUSTOMER_ACQUISITION_FIELDS: dict[str, tuple[str, ...]] = {
    "balance_low": (),
    "balance_exhausted": (),
    "link_unavailable": ("LinkId",),
    "delete_link": ("LinkId",),
    "friend_request": ("LinkId", "State"),
    "customer_start_chat": ("UserID", "ExternalUserID"),
}
TRANSFER_FAIL_REASONS = ("customer_refused", "customer_limit_exceed")

# Which optional fields each ChangeType may carry (§2.1).
_CONTACT_OPTIONAL: dict[str, frozenset[str]] = {
    "add_external_contact": frozenset({"state", "welcome_code"}),
    "edit_external_contact": frozenset(),
    "add_half_external_contact": frozenset({"state", "welcome_code"}),
    "del_external_contact": frozenset({"source"}),
    "del_follow_user": frozenset(),
    "transfer_fail": frozenset({"fail_reason"}),
    "msg_audit_approved": frozenset({"welcome_code"}),
}


def cdata(value: str) -> str:
    """Wrap text in CDATA, splitting any "]]>" so the section cannot be closed early."""
    return "<![CDATA[" + value.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def render(fields: Sequence[Field], inner: str = "") -> str:
    """Render `<xml>` with text fields as CDATA and integers bare, as WeCom sends them."""
    parts = ["<xml>"]
    for name, value in fields:
        body = str(value) if isinstance(value, int) else cdata(value)
        parts.append(f"<{name}>{body}</{name}>")
    parts.append(inner)
    parts.append("</xml>")
    return "".join(parts)


def _now(create_time: int | None) -> int:
    return int(time.time()) if create_time is None else create_time


def text_message(
    from_user: str,
    content: str,
    *,
    corp_id: str,
    agent_id: int,
    msg_id: int | None = None,
    create_time: int | None = None,
) -> str:
    """A member typed text to the app."""
    return render(
        [
            ("ToUserName", corp_id),
            ("FromUserName", from_user),
            ("CreateTime", _now(create_time)),
            ("MsgType", "text"),
            ("Content", content),
            ("MsgId", msg_id if msg_id is not None else secrets.randbelow(10**19)),
            ("AgentID", agent_id),
        ]
    )


def external_contact_event(
    change_type: str,
    user_id: str,
    external_user_id: str,
    *,
    corp_id: str,
    state: str | None = None,
    welcome_code: str | None = None,
    source: str | None = None,
    fail_reason: str | None = None,
    create_time: int | None = None,
) -> str:
    """A `change_external_contact` event; refuses fields its ChangeType never carries."""
    if change_type not in _CONTACT_OPTIONAL:
        raise ValueError(
            f"unknown ChangeType {change_type!r}; expected one of {EXTERNAL_CONTACT_CHANGE_TYPES}"
        )
    given = {
        name
        for name, value in (
            ("state", state),
            ("welcome_code", welcome_code),
            ("source", source),
            ("fail_reason", fail_reason),
        )
        if value is not None
    }
    extra = given - _CONTACT_OPTIONAL[change_type]
    if extra:
        raise ValueError(f"{change_type} does not carry {sorted(extra)}")
    if change_type == "transfer_fail" and fail_reason not in TRANSFER_FAIL_REASONS:
        raise ValueError(f"transfer_fail needs fail_reason in {TRANSFER_FAIL_REASONS}")
    fields: list[Field] = [
        ("ToUserName", corp_id),
        ("FromUserName", "sys"),
        ("CreateTime", _now(create_time)),
        ("MsgType", "event"),
        ("Event", "change_external_contact"),
        ("ChangeType", change_type),
    ]
    if fail_reason is not None:
        fields.append(("FailReason", fail_reason))
    fields += [("UserID", user_id), ("ExternalUserID", external_user_id)]
    if state is not None:
        fields.append(("State", state))
    if welcome_code is not None:
        fields.append(("WelcomeCode", welcome_code))
    if source is not None:
        fields.append(("Source", source))
    return render(fields)


def external_tag_event(
    change_type: str,
    tag_id: str,
    *,
    corp_id: str,
    tag_type: str = "tag",
    strategy_id: str | None = None,
    create_time: int | None = None,
) -> str:
    """A `change_external_tag` event; `shuffle` carries StrategyId instead of TagType."""
    if change_type not in EXTERNAL_TAG_CHANGE_TYPES:
        raise ValueError(f"unknown ChangeType {change_type!r}; expected one of {EXTERNAL_TAG_CHANGE_TYPES}")
    if tag_type not in ("tag", "tag_group"):
        raise ValueError("tag_type must be 'tag' or 'tag_group'")
    fields: list[Field] = [
        ("ToUserName", corp_id),
        ("FromUserName", "sys"),
        ("CreateTime", _now(create_time)),
        ("MsgType", "event"),
        ("Event", "change_external_tag"),
        ("Id", tag_id),
    ]
    if change_type == "shuffle":
        if strategy_id is not None:
            fields.append(("StrategyId", strategy_id))
    else:
        fields.append(("TagType", tag_type))
    fields.append(("ChangeType", change_type))
    return render(fields)


def kf_msg_or_event(open_kfid: str, token: str, *, corp_id: str, create_time: int | None = None) -> str:
    """A `kf_msg_or_event` notice (no FromUserName): new kf messages wait for sync_msg with `token`."""
    return render(
        [
            ("ToUserName", corp_id),
            ("CreateTime", _now(create_time)),
            ("MsgType", "event"),
            ("Event", "kf_msg_or_event"),
            ("Token", token),
            ("OpenKfId", open_kfid),
        ]
    )


def customer_acquisition_event(
    change_type: str,
    *,
    corp_id: str,
    link_id: str | None = None,
    state: str | None = None,
    user_id: str | None = None,
    external_user_id: str | None = None,
    create_time: int | None = None,
) -> str:
    """A `customer_acquisition` (获客助手) event; only the fields its ChangeType carries are rendered."""
    allowed = CUSTOMER_ACQUISITION_FIELDS.get(change_type)
    if allowed is None:
        raise ValueError(
            f"unknown ChangeType {change_type!r}; expected one of {list(CUSTOMER_ACQUISITION_FIELDS)}"
        )
    given = {"LinkId": link_id, "State": state, "UserID": user_id, "ExternalUserID": external_user_id}
    extra = sorted(name for name, value in given.items() if value is not None and name not in allowed)
    if extra:
        raise ValueError(f"{change_type} does not carry {extra}")
    fields: list[Field] = [
        ("ToUserName", corp_id),
        ("FromUserName", "sys"),
        ("CreateTime", _now(create_time)),
        ("MsgType", "event"),
        ("Event", "customer_acquisition"),
        ("ChangeType", change_type),
    ]
    fields += [(name, value) for name in allowed if (value := given[name]) is not None]
    return render(fields)


def template_card_event(
    user_id: str,
    event_key: str,
    task_id: str,
    response_code: str,
    *,
    corp_id: str,
    agent_id: int,
    card_type: str = "button_interaction",
    selected_items: Mapping[str, Sequence[str]] | None = None,
    event: str = "template_card_event",
    create_time: int | None = None,
) -> str:
    """A member clicked a template card (or its menu, with event="template_card_menu_event")."""
    if event not in ("template_card_event", "template_card_menu_event"):
        raise ValueError("event must be template_card_event or template_card_menu_event")
    inner = ""
    if selected_items:
        items = "".join(
            "<SelectedItem>"
            f"<QuestionKey>{cdata(key)}</QuestionKey>"
            "<OptionIds>" + "".join(f"<OptionId>{cdata(o)}</OptionId>" for o in options) + "</OptionIds>"
            "</SelectedItem>"
            for key, options in selected_items.items()
        )
        inner = f"<SelectedItems>{items}</SelectedItems>"
    return render(
        [
            ("ToUserName", corp_id),
            ("FromUserName", user_id),
            ("CreateTime", _now(create_time)),
            ("MsgType", "event"),
            ("Event", event),
            ("EventKey", event_key),
            ("TaskId", task_id),
            ("CardType", card_type),
            ("ResponseCode", response_code),
            ("AgentID", agent_id),
        ],
        inner,
    )
