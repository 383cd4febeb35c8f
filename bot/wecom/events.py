"""Typed WeCom callback events, their parsing from XML fields, and their dedupe keys."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ChangeType(enum.StrEnum):
    """ChangeType values of `change_external_contact`."""

    ADD_EXTERNAL_CONTACT = "add_external_contact"
    EDIT_EXTERNAL_CONTACT = "edit_external_contact"
    ADD_HALF_EXTERNAL_CONTACT = "add_half_external_contact"
    DEL_EXTERNAL_CONTACT = "del_external_contact"
    DEL_FOLLOW_USER = "del_follow_user"
    TRANSFER_FAIL = "transfer_fail"
    MSG_AUDIT_APPROVED = "msg_audit_approved"


class EventError(ValueError):
    """A decrypted callback lacks the fields its type requires."""


def _text(fields: dict[str, Any], name: str, required: bool = False) -> str:
    value = fields.get(name)
    if value is None or isinstance(value, (dict, list)):
        if required:
            raise EventError(f"missing field {name}")
        return ""
    return str(value)


def _int(fields: dict[str, Any], name: str) -> int:
    raw = _text(fields, name)
    try:
        return int(raw) if raw else 0
    except ValueError:
        raise EventError(f"field {name} is not an integer") from None


@dataclass(frozen=True)
class Event:
    """Fields every callback shares; `fields` keeps the whole parsed payload."""

    kind: ClassVar[str] = "unknown"
    to_user: str
    create_time: int
    agent_id: str
    fields: dict[str, Any] = field(repr=False, compare=False)

    def dedupe_source(self) -> str:
        """Return what identifies this callback across WeCom's retries."""
        return repr(sorted((k, repr(v)) for k, v in self.fields.items()))

    @property
    def subject(self) -> str:
        """The customer (external user id) this event is about, or "" (indexed for the lead timeline)."""
        return str(getattr(self, "external_user_id", "") or getattr(self, "external_userid", "") or "")

    @property
    def dedupe_key(self) -> str:
        """A fixed-length key, unique in the inbox, that a retried callback reproduces."""
        return hashlib.sha256(f"{self.kind}|{self.dedupe_source()}".encode()).hexdigest()


@dataclass(frozen=True)
class TextMessage(Event):
    """A member typed text to the app."""

    kind: ClassVar[str] = "text"
    from_user: str = ""
    content: str = ""
    msg_id: str = ""

    def dedupe_source(self) -> str:
        return f"{self.to_user}|{self.msg_id}" if self.msg_id else super().dedupe_source()


@dataclass(frozen=True)
class ExternalContactChange(Event):
    """`change_external_contact`: a customer relationship changed in the WeCom client."""

    kind: ClassVar[str] = "change_external_contact"
    change_type: str = ""
    user_id: str = ""
    external_user_id: str = ""
    state: str | None = None
    welcome_code: str | None = None
    source: str | None = None
    fail_reason: str | None = None

    def dedupe_source(self) -> str:
        # FromUserName is always "sys" and CreateTime has 1 s resolution: key on the pair too.
        return "|".join(
            [
                self.to_user,
                self.change_type,
                self.user_id,
                self.external_user_id,
                str(self.create_time),
                self.welcome_code or "",
                self.state or "",
                self.fail_reason or "",
                self.source or "",
            ]
        )


@dataclass(frozen=True)
class ExternalTagChange(Event):
    """`change_external_tag`: a corp tag or tag group changed in the admin console."""

    kind: ClassVar[str] = "change_external_tag"
    change_type: str = ""
    tag_id: str = ""
    tag_type: str = ""
    strategy_id: str = ""

    def dedupe_source(self) -> str:
        parts = [
            self.to_user,
            self.change_type,
            self.tag_id,
            self.tag_type,
            self.strategy_id,
            str(self.create_time),
        ]
        return "|".join(parts)


@dataclass(frozen=True)
class KfMsgOrEvent(Event):
    """`kf_msg_or_event`: new WeChat Customer Service messages wait to be pulled with sync_msg."""

    kind: ClassVar[str] = "kf_msg_or_event"
    token: str = ""
    open_kfid: str = ""

    def dedupe_source(self) -> str:
        return f"{self.to_user}|{self.open_kfid}|{self.token}|{self.create_time}"


# Marker put in the payload of kf messages pulled with sync_msg (they are JSON, not XML callbacks).
KF_MARKER = "_kf_sync"
KF_ORIGIN_CUSTOMER = 3
KF_ORIGIN_SYSTEM = 4
KF_ORIGIN_SERVICER = 5


@dataclass(frozen=True)
class KfMessage(Event):
    """A message or event pulled with kf/sync_msg; keyed on (open_kfid, msgid) whatever its type."""

    kind: ClassVar[str] = "kf_other"
    open_kfid: str = ""
    external_userid: str = ""
    msgid: str = ""
    origin: int = 0
    msgtype: str = ""
    servicer_userid: str = ""

    def dedupe_source(self) -> str:
        return f"{self.open_kfid}|{self.msgid}"

    @property
    def dedupe_key(self) -> str:
        """The same for every parse of one pulled message, so a re-pulled message is stored once."""
        return hashlib.sha256(f"kf|{self.dedupe_source()}".encode()).hexdigest()


@dataclass(frozen=True)
class KfCustomerMessage(KfMessage):
    """Anything the WeChat customer sent (origin 3) other than text: it still reopens the window."""

    kind: ClassVar[str] = "kf_customer_message"


@dataclass(frozen=True)
class KfCustomerText(KfCustomerMessage):
    """Text the customer typed, or a menu item they clicked (`menu_id`)."""

    kind: ClassVar[str] = "kf_text"
    content: str = ""
    menu_id: str = ""


@dataclass(frozen=True)
class KfServicerMessage(KfMessage):
    """A servicer wrote from the WeCom client (origin 5): recorded, never answered."""

    kind: ClassVar[str] = "kf_servicer_message"


@dataclass(frozen=True)
class KfEnterSession(KfMessage):
    """`enter_session`: the customer opened a kf link; `welcome_code` allows one welcome within 20 s."""

    kind: ClassVar[str] = "kf_enter_session"
    scene: str = ""
    scene_param: str = ""
    welcome_code: str = ""


@dataclass(frozen=True)
class KfMsgSendFail(KfMessage):
    """`msg_send_fail`: a send WeCom had accepted did not reach the customer."""

    kind: ClassVar[str] = "kf_msg_send_fail"
    fail_msgid: str = ""
    fail_type: int = 0


@dataclass(frozen=True)
class KfSessionStatusChange(KfMessage):
    """`session_status_change`: a servicer took, transferred, ended or re-entered the session."""

    kind: ClassVar[str] = "kf_session_status_change"
    change_type: int = 0
    old_servicer_userid: str = ""
    new_servicer_userid: str = ""
    msg_code: str = ""


@dataclass(frozen=True)
class TemplateCardEvent(Event):
    """`template_card_event`: a member clicked a button on an interactive card."""

    kind: ClassVar[str] = "template_card_event"
    from_user: str = ""
    event_key: str = ""
    task_id: str = ""
    card_type: str = ""
    response_code: str = ""
    selected: dict[str, list[str]] = field(default_factory=dict)

    def dedupe_source(self) -> str:
        # Every click carries a fresh single-use ResponseCode.
        return f"{self.to_user}|{self.from_user}|{self.task_id}|{self.event_key}|{self.response_code}"


@dataclass(frozen=True)
class CustomerAcquisitionEvent(Event):
    """`customer_acquisition`: the 获客助手 quota is low or used up (or a link needs verification)."""

    kind: ClassVar[str] = "customer_acquisition"
    change_type: str = ""
    link_id: str = ""

    def dedupe_source(self) -> str:
        return f"{self.to_user}|{self.change_type}|{self.link_id}|{self.create_time}"


@dataclass(frozen=True)
class UnknownEvent(Event):
    """Anything this version does not act on; stored and ignored."""

    kind: ClassVar[str] = "unknown"
    msg_type: str = ""
    event: str = ""


def _selected_items(fields: dict[str, Any]) -> dict[str, list[str]]:
    container = fields.get("SelectedItems")
    if not isinstance(container, dict):
        return {}
    items = container.get("SelectedItem", [])
    items = items if isinstance(items, list) else [items]
    selected: dict[str, list[str]] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        ids = item.get("OptionIds", {})
        options = ids.get("OptionId", []) if isinstance(ids, dict) else []
        selected[str(item.get("QuestionKey", ""))] = [
            str(o) for o in (options if isinstance(options, list) else [options])
        ]
    return selected


def _json_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse_kf_message(fields: dict[str, Any]) -> KfMessage:
    """Type one message from sync_msg's msg_list (marked with KF_MARKER); never raises on odd input."""
    raw_event = fields.get("event")
    event: dict[str, Any] = raw_event if isinstance(raw_event, dict) else {}

    def pick(name: str) -> str:
        value = fields.get(name) or event.get(name) or ""
        return value if isinstance(value, str) else str(value)

    base: dict[str, Any] = {
        "to_user": str(fields.get(KF_MARKER) or ""),
        "create_time": _json_int(fields.get("send_time")),
        "agent_id": "",
        "fields": fields,
        "open_kfid": pick("open_kfid"),
        "external_userid": pick("external_userid"),
        "msgid": str(fields.get("msgid") or ""),
        "origin": _json_int(fields.get("origin")),
        "msgtype": str(fields.get("msgtype") or ""),
        "servicer_userid": pick("servicer_userid"),
    }
    if base["origin"] == KF_ORIGIN_SERVICER:
        return KfServicerMessage(**base)
    if base["origin"] == KF_ORIGIN_CUSTOMER:
        text = fields.get("text")
        if base["msgtype"] == "text" and isinstance(text, dict):
            return KfCustomerText(
                **base, content=str(text.get("content") or ""), menu_id=str(text.get("menu_id") or "")
            )
        return KfCustomerMessage(**base)
    event_type = str(event.get("event_type") or "")
    if base["msgtype"] == "event" and event_type == "enter_session":
        return KfEnterSession(
            **base,
            scene=str(event.get("scene") or ""),
            scene_param=str(event.get("scene_param") or ""),
            welcome_code=str(event.get("welcome_code") or ""),
        )
    if base["msgtype"] == "event" and event_type == "msg_send_fail":
        return KfMsgSendFail(
            **base, fail_msgid=str(event.get("fail_msgid") or ""), fail_type=_json_int(event.get("fail_type"))
        )
    if base["msgtype"] == "event" and event_type == "session_status_change":
        return KfSessionStatusChange(
            **base,
            change_type=_json_int(event.get("change_type")),
            old_servicer_userid=str(event.get("old_servicer_userid") or ""),
            new_servicer_userid=str(event.get("new_servicer_userid") or ""),
            msg_code=str(event.get("msg_code") or ""),
        )
    return KfMessage(**base)


def parse_event(fields: dict[str, Any]) -> Event:
    """Turn the decrypted XML fields into the matching typed event (UnknownEvent if none)."""
    if KF_MARKER in fields:
        return parse_kf_message(fields)
    base: dict[str, Any] = {
        "to_user": _text(fields, "ToUserName"),
        "create_time": _int(fields, "CreateTime"),
        "agent_id": _text(fields, "AgentID"),
        "fields": fields,
    }
    msg_type = _text(fields, "MsgType")
    event = _text(fields, "Event")
    if msg_type == "text":
        return TextMessage(
            **base,
            from_user=_text(fields, "FromUserName", required=True),
            content=_text(fields, "Content"),
            msg_id=_text(fields, "MsgId"),
        )
    if msg_type == "event" and event == "change_external_contact":
        change_type = _text(fields, "ChangeType", required=True)
        if change_type not in ChangeType.__members__.values():
            return UnknownEvent(**base, msg_type=msg_type, event=f"{event}:{change_type}")
        needs_pair = change_type != ChangeType.MSG_AUDIT_APPROVED
        return ExternalContactChange(
            **base,
            change_type=change_type,
            user_id=_text(fields, "UserID", required=needs_pair),
            external_user_id=_text(fields, "ExternalUserID", required=needs_pair),
            state=_text(fields, "State") or None,
            welcome_code=_text(fields, "WelcomeCode") or None,
            source=_text(fields, "Source") or None,
            fail_reason=_text(fields, "FailReason") or None,
        )
    if msg_type == "event" and event == "change_external_tag":
        return ExternalTagChange(
            **base,
            change_type=_text(fields, "ChangeType", required=True),
            tag_id=_text(fields, "Id", required=True),
            tag_type=_text(fields, "TagType"),
            strategy_id=_text(fields, "StrategyId"),
        )
    if msg_type == "event" and event == "customer_acquisition":
        return CustomerAcquisitionEvent(
            **base, change_type=_text(fields, "ChangeType", required=True), link_id=_text(fields, "LinkId")
        )
    if msg_type == "event" and event == "kf_msg_or_event":
        return KfMsgOrEvent(
            **base,
            token=_text(fields, "Token", required=True),
            open_kfid=_text(fields, "OpenKfId", required=True),
        )
    if msg_type == "event" and event == "template_card_event":
        return TemplateCardEvent(
            **base,
            from_user=_text(fields, "FromUserName", required=True),
            event_key=_text(fields, "EventKey"),
            task_id=_text(fields, "TaskId", required=True),
            card_type=_text(fields, "CardType"),
            response_code=_text(fields, "ResponseCode"),
            selected=_selected_items(fields),
        )
    return UnknownEvent(**base, msg_type=msg_type, event=event)
