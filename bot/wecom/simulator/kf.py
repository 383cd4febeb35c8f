"""WeChat Customer Service (微信客服, kf) on the simulated corp: accounts, links, sessions, messages.

Customers and servicers act through control methods. Each action appends to the kf account's
message log (what sync_msg returns) and raises a `kf_msg_or_event` callback carrying a fresh
Token. Messages the bot sends through the API go to `kf_sent`, never to the log (WECOM.md §7).
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections import deque
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote, urlsplit

from bot.wecom.simulator.api import (
    JSON,
    ApiCall,
    ApiError,
    SimulationError,
    opt_int,
    opt_list,
    opt_str,
    str_list,
    utf8_len,
)
from bot.wecom.simulator.callback_xml import kf_msg_or_event
from bot.wecom.simulator.parts import CorpParts, new_id

KF_NAME_MAX_CHARS = 16
SCENE_RE = re.compile(r"^[0-9a-zA-Z_-]{0,32}$")
SCENE_PARAM_MAX_BYTES = 128
MSGID_RE = re.compile(r"^[0-9a-zA-Z_-]{0,32}$")
CURSOR_MAX_BYTES = 64
TOKEN_MAX_BYTES = 128
SYNC_MAX_LIMIT = 1000
TEXT_MAX_BYTES = 2048
MENU_MAX_ITEMS = 10
BATCHGET_MAX = 100
ACCOUNT_LIST_MAX = 100
SERVICER_ADD_MAX = 100

ORIGIN_CUSTOMER = 3
ORIGIN_SYSTEM = 4
ORIGIN_SERVICER = 5

# Session states (WECOM.md §7.5).
NEW, ASSISTANT, QUEUED, HUMAN, ENDED = 0, 1, 2, 3, 4
# What service_state/trans may do; anything else answers 95016.
API_TRANSITIONS: dict[int, frozenset[int]] = {
    NEW: frozenset({ASSISTANT, QUEUED, HUMAN}),
    ASSISTANT: frozenset({QUEUED, HUMAN}),
    QUEUED: frozenset({HUMAN}),
    HUMAN: frozenset({HUMAN, ENDED}),
    ENDED: frozenset(),
}
# kf/servicer/list status: 0 = receiving, 1 = stopped. The servicer_status_change event uses 1/2.
SERVICER_RECEIVING, SERVICER_STOPPED = 0, 1

_MEDIA_TYPES = frozenset({"image", "voice", "video", "file"})
SEND_TYPES = _MEDIA_TYPES | {"text", "link", "miniprogram", "msgmenu", "location", "ca_link"}
_MENU_ITEM_TYPES = frozenset({"click", "view", "miniprogram", "text"})
# Which message types each send_msg_on_event code allows (WECOM.md §7.4).
_CODE_TYPES = {
    "welcome": frozenset({"text", "msgmenu"}),
    "queue": frozenset({"text"}),
    "taken": frozenset({"text"}),
    "end": frozenset({"text", "msgmenu"}),
}


@dataclass
class _KfMessage:
    seq: int
    at: float
    body: JSON


@dataclass
class KfAccount:
    """One kf account, its servicers, its message log and the msgids already used on it."""

    open_kfid: str
    name: str
    media_id: str
    avatar: str
    servicers: dict[str, int] = field(default_factory=dict)
    msgids: set[str] = field(default_factory=set)
    log: list[_KfMessage] = field(default_factory=list)
    deleted: bool = False


@dataclass
class KfSession:
    """The session between a kf account and one WeChat customer."""

    open_kfid: str
    external_userid: str
    state: int = ENDED
    servicer: str | None = None
    last_customer_msg_at: float | None = None
    sends: int = 0
    last_welcome_at: float | None = None
    reply_code_issued: bool = False


@dataclass
class _KfCode:
    code: str
    kind: str
    open_kfid: str
    external_userid: str
    state: int | None
    expires_at: float
    used: bool = False


@dataclass
class _KfToken:
    open_kfid: str
    expires_at: float


@dataclass(frozen=True)
class KfSent:
    """A message the bot sent through kf/send_msg or kf/send_msg_on_event (errcode 0)."""

    msgid: str
    open_kfid: str
    external_userid: str
    msgtype: str
    payload: JSON
    at: float
    via: str
    code_kind: str | None = None


@dataclass(frozen=True)
class KfDelivery:
    """What a simulated kf action produced: the logged message, its callback Token, and any codes."""

    open_kfid: str
    external_userid: str
    msgid: str
    token: str
    welcome_code: str | None = None
    msg_code: str | None = None


def _check_msgmenu(body: JSON) -> None:
    opt_str(body, "head_content", max_bytes=1024)
    opt_str(body, "tail_content", max_bytes=1024)
    items = opt_list(body, "list")
    if len(items) > MENU_MAX_ITEMS:
        raise ApiError(95008)
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in _MENU_ITEM_TYPES:
            raise ApiError(95009)
        part = item.get(kind)
        if not isinstance(part, dict):
            raise ApiError(40058, f"menu item {kind} needs its {kind} object")
        if kind == "click":
            if not 1 <= utf8_len(opt_str(part, "id")) <= 64:
                raise ApiError(40058, "click.id must be 1 to 64 bytes")
            if not 1 <= utf8_len(opt_str(part, "content")) <= 128:
                raise ApiError(40058, "click.content must be 1 to 128 bytes")
        elif kind == "view":
            if not opt_str(part, "url", max_bytes=2048) or not opt_str(part, "content", max_bytes=1024):
                raise ApiError(40058, "view needs url and content")
        elif kind == "miniprogram":
            appid = opt_str(part, "appid", max_bytes=32)
            pagepath = opt_str(part, "pagepath", max_bytes=1024)
            if not appid or not pagepath or not opt_str(part, "content", max_bytes=1024):
                raise ApiError(40058, "miniprogram needs appid, pagepath and content")
        elif not opt_str(part, "content"):
            raise ApiError(40058, "text needs content")


def check_kf_message(data: JSON, allowed: frozenset[str]) -> tuple[str, JSON]:
    """Validate a kf message body as send_msg does; return (msgtype, the message as stored)."""
    msgtype = data.get("msgtype")
    if not isinstance(msgtype, str) or msgtype not in allowed:
        raise ApiError(40008, f"msgtype {msgtype!r} is not allowed here")
    body = data.get(msgtype)
    if not isinstance(body, dict):
        raise ApiError(44004 if msgtype == "text" else 40058, f"{msgtype} object is required")
    if msgtype == "text":
        content = opt_str(body, "content")
        if not content:
            raise ApiError(44004)
        if utf8_len(content) > TEXT_MAX_BYTES:
            raise ApiError(45002, f"text.content exceeds {TEXT_MAX_BYTES} bytes")
    elif msgtype in _MEDIA_TYPES:
        if not opt_str(body, "media_id"):
            raise ApiError(41006)
    elif msgtype == "link":
        if not opt_str(body, "title", max_bytes=128):
            raise ApiError(41016)
        opt_str(body, "desc", max_bytes=512)
        if not opt_str(body, "url", max_bytes=2048):
            raise ApiError(41010)
        if not opt_str(body, "thumb_media_id"):
            raise ApiError(41006)
    elif msgtype == "miniprogram":
        opt_str(body, "title", max_bytes=64)
        if not opt_str(body, "thumb_media_id"):
            raise ApiError(41006)
        if not opt_str(body, "appid") or not opt_str(body, "pagepath"):
            raise ApiError(40058, "miniprogram needs appid and pagepath")
    elif msgtype == "msgmenu":
        _check_msgmenu(body)
    elif msgtype == "location":
        for key in ("latitude", "longitude"):
            value = body.get(key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ApiError(40058, f"location.{key} must be a number")
    elif msgtype == "ca_link" and not opt_str(body, "link_url"):
        raise ApiError(40058, "ca_link.link_url is required")
    return msgtype, {"msgtype": msgtype, msgtype: dict(body)}


class KfMixin(CorpParts):
    """kf endpoints, sessions and message logs, and the customer/servicer actions that raise callbacks."""

    def _init_kf(self) -> None:
        self._kf_accounts: dict[str, KfAccount] = {}
        self._kf_links: dict[str, tuple[str, str]] = {}
        self._kf_sessions: dict[tuple[str, str], KfSession] = {}
        self._kf_codes: dict[str, _KfCode] = {}
        self._kf_tokens: dict[str, _KfToken] = {}
        self._kf_sent: list[KfSent] = []
        self._kf_customers: dict[str, JSON] = {}
        self._kf_no_token: dict[str, deque[float]] = {}
        self._kf_msg_seq = itertools.count(4622416642169452483)
        for api, handler in (
            ("kf/account/add", self._kf_account_add),
            ("kf/account/del", self._kf_account_del),
            ("kf/account/list", self._kf_account_list),
            ("kf/add_contact_way", self._kf_add_contact_way),
            ("kf/servicer/add", self._kf_servicer_add),
            ("kf/servicer/del", self._kf_servicer_del),
            ("kf/sync_msg", self._kf_sync_msg),
            ("kf/send_msg", self._kf_send_msg),
            ("kf/send_msg_on_event", self._kf_send_msg_on_event),
            ("kf/service_state/get", self._kf_service_state_get),
            ("kf/service_state/trans", self._kf_service_state_trans),
            ("kf/customer/batchget", self._kf_customer_batchget),
        ):
            self.register(api, handler)
        self.register("kf/servicer/list", self._kf_servicer_list, methods=("GET",))

    # ==== simulated client-side actions ===========================================================

    def kf_customer_enters(
        self,
        open_kfid: str,
        external_userid: str | None = None,
        scene: str = "",
        scene_param: str = "",
        *,
        nickname: str | None = None,
    ) -> KfDelivery | None:
        """A WeChat user opens a kf link (open_kfid + scene, or the URL); None if WeCom rejects the link."""
        with self._lock:
            entered = self._kf_enter(open_kfid, external_userid, scene, scene_param, nickname)
        self._flush()
        return entered

    def kf_customer_says(
        self, open_kfid: str, external_userid: str | None, text: str, menu_id: str | None = None
    ) -> KfDelivery:
        """The customer sends text (or clicks a menu item, with its menu_id): a new session if ended."""
        with self._lock:
            account = self._kf_account_or_fail(open_kfid)
            customer = self._customer(external_userid)
            self._kf_customers.setdefault(customer.external_userid, {})
            session = self._kf_session(account.open_kfid, customer.external_userid)
            if session.state == ENDED:
                session.state, session.servicer, session.reply_code_issued = NEW, None, False
            session.last_customer_msg_at = self.now()
            session.sends = 0
            content: JSON = {"content": text}
            if menu_id is not None:
                content["menu_id"] = menu_id
            message: JSON = {
                "open_kfid": account.open_kfid,
                "external_userid": customer.external_userid,
                "origin": ORIGIN_CUSTOMER,
                "msgtype": "text",
                "text": content,
            }
            delivery = self._kf_log(account, message, customer.external_userid)
        self._flush()
        return delivery

    def kf_servicer_says(self, open_kfid: str, external_userid: str, servicer: str, text: str) -> KfDelivery:
        """A servicer replies from the WeCom client (origin 5); an ended session is re-entered first."""
        with self._lock:
            account = self._kf_account_or_fail(open_kfid)
            userid = self._kf_servicer_or_fail(account, servicer)
            session = self._kf_session_or_fail(account.open_kfid, external_userid)
            if session.state == ENDED:
                self._kf_change(account, session, 4, userid)
            elif session.state != HUMAN or session.servicer != userid:
                raise SimulationError(f"{userid} is not serving this session (state {session.state})")
            message: JSON = {
                "open_kfid": account.open_kfid,
                "external_userid": external_userid,
                "origin": ORIGIN_SERVICER,
                "servicer_userid": userid,
                "msgtype": "text",
                "text": {"content": text},
            }
            delivery = self._kf_log(account, message, external_userid)
        self._flush()
        return delivery

    def kf_session_change(
        self, open_kfid: str, external_userid: str, change_type: int, servicer: str | None = None
    ) -> KfDelivery:
        """A servicer acts in the client: 1 takes from the queue, 2 transfers, 3 ends, 4 re-enters."""
        with self._lock:
            account = self._kf_account_or_fail(open_kfid)
            session = self._kf_session_or_fail(account.open_kfid, external_userid)
            userid = self._kf_servicer_or_fail(account, servicer) if servicer is not None else None
            delivery = self._kf_change(account, session, change_type, userid)
        self._flush()
        return delivery

    def kf_servicer_status(
        self, open_kfid: str, servicer: str, receiving: bool, *, stop_type: int = 0
    ) -> KfDelivery:
        """A servicer starts or stops receiving in the client: servicer_status_change (status 1/2)."""
        with self._lock:
            account = self._kf_account_or_fail(open_kfid)
            userid = self._kf_servicer_or_fail(account, servicer)
            account.servicers[userid] = SERVICER_RECEIVING if receiving else SERVICER_STOPPED
            event: JSON = {
                "event_type": "servicer_status_change",
                "servicer_userid": userid,
                "status": 1 if receiving else 2,
                "open_kfid": account.open_kfid,
            }
            if not receiving:
                event["stop_type"] = stop_type
            delivery = self._kf_log_event(account, event, "")
        self._flush()
        return delivery

    def kf_send_fail(
        self, open_kfid: str, external_userid: str, fail_msgid: str, fail_type: int = 0
    ) -> KfDelivery:
        """WeCom reports, later, that an accepted send failed: msg_send_fail (e.g. 4 expired, 6 over 5)."""
        with self._lock:
            account = self._kf_account_or_fail(open_kfid)
            if fail_msgid not in account.msgids:
                raise SimulationError(f"no message {fail_msgid!r} was sent on {open_kfid}")
            event: JSON = {
                "event_type": "msg_send_fail",
                "open_kfid": account.open_kfid,
                "external_userid": external_userid,
                "fail_msgid": fail_msgid,
                "fail_type": fail_type,
            }
            delivery = self._kf_log_event(account, event, external_userid)
        self._flush()
        return delivery

    # ---- observations -------------------------------------------------------------------------

    @property
    def kf_sent(self) -> list[KfSent]:
        """Every kf message the bot sent through the API (accepted), oldest first."""
        with self._lock:
            return list(self._kf_sent)

    def kf_session(self, open_kfid: str, external_userid: str) -> KfSession | None:
        """A copy of the session between a kf account and a customer, or None."""
        with self._lock:
            session = self._kf_sessions.get((open_kfid, external_userid))
            return None if session is None else replace(session)

    def kf_messages(self, open_kfid: str) -> list[JSON]:
        """The account's message log as sync_msg would return it (retention aside)."""
        with self._lock:
            account = self._kf_accounts.get(open_kfid)
            return [] if account is None else [m.body for m in account.log]

    # ==== internals for the actions ===============================================================

    def _kf_account_or_fail(self, open_kfid: str) -> KfAccount:
        account = self._kf_accounts.get(open_kfid)
        if account is None or account.deleted:
            raise SimulationError(f"no kf account {open_kfid!r}")
        return account

    def _kf_servicer_or_fail(self, account: KfAccount, servicer: str | None) -> str:
        userid = self._member(servicer or "")
        if userid is None or userid not in account.servicers:
            raise SimulationError(f"{servicer!r} is not a servicer of {account.open_kfid}")
        return userid

    def _kf_session(self, open_kfid: str, external_userid: str) -> KfSession:
        key = (open_kfid, external_userid)
        session = self._kf_sessions.get(key)
        if session is None:
            session = self._kf_sessions[key] = KfSession(open_kfid, external_userid)
        return session

    def _kf_session_or_fail(self, open_kfid: str, external_userid: str) -> KfSession:
        session = self._kf_sessions.get((open_kfid, external_userid))
        if session is None:
            raise SimulationError(f"{external_userid} never contacted {open_kfid}")
        return session

    def _kf_issue_code(self, session: KfSession, kind: str, state: int | None) -> str:
        ttl = (
            self.config.kf_reply_code_ttl_s if kind in ("queue", "taken") else self.config.kf_event_code_ttl_s
        )
        code = secrets.token_urlsafe(32)
        self._kf_codes[code] = _KfCode(
            code, kind, session.open_kfid, session.external_userid, state, self.now() + ttl
        )
        return code

    def _kf_log(
        self,
        account: KfAccount,
        message: JSON,
        external_userid: str,
        *,
        welcome: str | None = None,
        code: str | None = None,
    ) -> KfDelivery:
        # Append to the account's log in sync_msg's field order, then notify the bot with a new Token.
        msgid = f"from_msgid_{next(self._kf_msg_seq)}"
        body: JSON = {"msgid": msgid}
        for key in ("open_kfid", "external_userid"):
            if key in message:
                body[key] = message[key]
        body["send_time"] = int(self.wall_time())
        body.update((k, v) for k, v in message.items() if k not in body)
        account.log.append(_KfMessage(len(account.log), self.now(), body))
        token = "ENC" + secrets.token_urlsafe(33)
        self._kf_tokens[token] = _KfToken(account.open_kfid, self.now() + self.config.kf_token_ttl_s)
        xml = kf_msg_or_event(
            account.open_kfid, token, corp_id=self.config.corp_id, create_time=int(self.wall_time())
        )
        self._emit(xml, with_agent_id=False)
        return KfDelivery(account.open_kfid, external_userid, msgid, token, welcome, code)

    def _kf_log_event(
        self,
        account: KfAccount,
        event: JSON,
        external_userid: str,
        *,
        welcome: str | None = None,
        code: str | None = None,
    ) -> KfDelivery:
        # Events carry open_kfid/external_userid inside `event`, not at the top level.
        message: JSON = {"origin": ORIGIN_SYSTEM, "msgtype": "event", "event": event}
        return self._kf_log(account, message, external_userid, welcome=welcome, code=code)

    def _kf_enter(
        self,
        target: str,
        external_userid: str | None,
        scene: str,
        scene_param: str,
        nickname: str | None,
    ) -> KfDelivery | None:
        if target.startswith(("http://", "https://")):
            # The customer opened a link; scene_param was appended (URL-encoded) by whoever shared it.
            parts = urlsplit(target)
            raw = {key: value for key, _, value in (p.partition("=") for p in parts.query.split("&") if p)}
            raw_param = raw.pop("scene_param", "")
            scene_param = unquote(raw_param)
            base = f"{parts.scheme}://{parts.netloc}{parts.path}"
            if "enc_scene" in raw:
                base += f"?enc_scene={raw['enc_scene']}"
            link = self._kf_links.get(base)
            if link is None:
                return None
            open_kfid, scene = link
        else:
            open_kfid, raw_param = target, quote(scene_param, safe="")
            if scene and (open_kfid, scene) not in set(self._kf_links.values()):
                return None
        account = self._kf_account_or_fail(open_kfid)
        if scene_param and (not scene or utf8_len(raw_param) > SCENE_PARAM_MAX_BYTES):
            return None
        customer = self._customer(external_userid, name=nickname)
        session = self._kf_session(account.open_kfid, customer.external_userid)
        now, window = self.now(), self.config.kf_window_s
        recent_welcome = session.last_welcome_at is not None and now - session.last_welcome_at < window
        recent_message = (
            session.last_customer_msg_at is not None and now - session.last_customer_msg_at < window
        )
        welcome = None if recent_welcome or recent_message else self._kf_issue_code(session, "welcome", None)
        context: JSON = {"scene": scene, "scene_param": scene_param}
        self._kf_customers[customer.external_userid] = context
        event: JSON = {
            "event_type": "enter_session",
            "open_kfid": account.open_kfid,
            "external_userid": customer.external_userid,
        }
        if scene:
            event["scene"] = scene
        if scene_param:
            event["scene_param"] = scene_param
        if welcome is not None:
            event["welcome_code"] = welcome
        return self._kf_log_event(account, event, customer.external_userid, welcome=welcome)

    def _kf_change(
        self, account: KfAccount, session: KfSession, change_type: int, servicer: str | None
    ) -> KfDelivery:
        old = session.servicer
        event: JSON = {
            "event_type": "session_status_change",
            "open_kfid": account.open_kfid,
            "external_userid": session.external_userid,
            "change_type": change_type,
        }
        code: str | None = None
        if change_type in (1, 2, 4):
            if servicer is None:
                raise SimulationError(f"change_type {change_type} needs the servicer who takes over")
            allowed = {1: (NEW, ASSISTANT, QUEUED), 2: (HUMAN,), 4: (ENDED,)}[change_type]
            if session.state not in allowed or (change_type == 2 and servicer == old):
                raise SimulationError(f"change_type {change_type} is impossible in state {session.state}")
            session.state, session.servicer = HUMAN, servicer
            if change_type in (2, 4) and old:
                event["old_servicer_userid"] = old
            event["new_servicer_userid"] = servicer
            if change_type == 1:
                code = self._kf_issue_code(session, "taken", HUMAN)
                event["msg_code"] = code
        elif change_type == 3:
            if session.state != HUMAN:
                raise SimulationError(f"only a session with a servicer can end (state {session.state})")
            session.state = ENDED
            event["old_servicer_userid"] = old or ""
            code = self._kf_issue_code(session, "end", ENDED)
            event["msg_code"] = code
        else:
            raise SimulationError("change_type must be 1, 2, 3 or 4")
        return self._kf_log_event(account, event, session.external_userid, code=code)

    # ==== accounts, links, servicers ===============================================================

    def _kf_account_of(self, data: JSON) -> KfAccount:
        open_kfid = opt_str(data, "open_kfid")
        if not open_kfid:
            raise ApiError(95000)
        account = self._kf_accounts.get(open_kfid)
        if account is None or account.deleted:
            raise ApiError(95004)
        return account

    def _kf_account_add(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        name = opt_str(data, "name")
        if not name or len(name) > KF_NAME_MAX_CHARS:
            raise ApiError(95006, f"name must be 1 to {KF_NAME_MAX_CHARS} characters")
        media_id = opt_str(data, "media_id")
        if not media_id:
            raise ApiError(41006)
        account = KfAccount(
            new_id("wk"), name, media_id, f"https://wework.qpic.cn/wwhead/{secrets.token_hex(16)}/0"
        )
        self._kf_accounts[account.open_kfid] = account
        return {"open_kfid": account.open_kfid}

    def _kf_account_del(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        self._kf_account_of(call.json()).deleted = True
        return {}

    def _kf_account_list(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json() if call.body else {}
        offset = opt_int(data, "offset", 0) or 0
        limit = opt_int(data, "limit", ACCOUNT_LIST_MAX) or ACCOUNT_LIST_MAX
        if offset < 0 or not 0 < limit <= ACCOUNT_LIST_MAX:
            raise ApiError(40058, f"offset must be >= 0 and limit 1 to {ACCOUNT_LIST_MAX}")
        accounts = [a for a in self._kf_accounts.values() if not a.deleted][offset : offset + limit]
        return {
            "account_list": [
                {"open_kfid": a.open_kfid, "name": a.name, "avatar": a.avatar, "manage_privilege": True}
                for a in accounts
            ]
        }

    def _kf_add_contact_way(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        account = self._kf_account_of(data)
        scene = opt_str(data, "scene")
        if not SCENE_RE.match(scene):
            raise ApiError(40058, "scene must be at most 32 bytes of [0-9a-zA-Z_-]")
        url = f"https://work.weixin.qq.com/kf/kfc{secrets.token_hex(9)}"
        if scene:
            url += f"?enc_scene=ENC{secrets.token_urlsafe(12).replace('-', 'x').replace('_', 'y')}"
        self._kf_links[url] = (account.open_kfid, scene)
        return {"url": url}

    def _kf_servicer_change(self, call: ApiCall, add: bool) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        account = self._kf_account_of(data)
        userids = str_list(data, "userid_list")
        if not 0 < len(userids) <= SERVICER_ADD_MAX:
            raise ApiError(40058, f"userid_list needs 1 to {SERVICER_ADD_MAX} userids")
        results: list[JSON] = []
        for userid in userids:
            member = self._member(userid)
            if member is None:
                results.append({"userid": userid, "errcode": 60111, "errmsg": "userid not found"})
                continue
            if add:
                account.servicers.setdefault(member, SERVICER_RECEIVING)
            else:
                account.servicers.pop(member, None)
            results.append({"userid": member, "errcode": 0, "errmsg": "success"})
        return {"result_list": results}

    def _kf_servicer_add(self, call: ApiCall) -> JSON:
        return self._kf_servicer_change(call, add=True)

    def _kf_servicer_del(self, call: ApiCall) -> JSON:
        return self._kf_servicer_change(call, add=False)

    def _kf_servicer_list(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        account = self._kf_account_of(dict(call.query))
        return {"servicer_list": [{"userid": u, "status": s} for u, s in account.servicers.items()]}

    # ==== messages ===================================================================================

    def _kf_sync_msg(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        account = self._kf_account_of(data)
        cursor = opt_str(data, "cursor", max_bytes=CURSOR_MAX_BYTES)
        token = opt_str(data, "token", max_bytes=TOKEN_MAX_BYTES)
        limit = opt_int(data, "limit", SYNC_MAX_LIMIT)
        if limit is None or not 0 < limit <= SYNC_MAX_LIMIT:
            raise ApiError(40058, f"limit must be 1 to {SYNC_MAX_LIMIT}")
        if opt_int(data, "voice_format", 0) not in (0, 1):
            raise ApiError(40058, "voice_format must be 0 or 1")
        now = self.now()
        if token:
            record = self._kf_tokens.get(token)
            if record is None or record.open_kfid != account.open_kfid or now >= record.expires_at:
                raise ApiError(95007)
        else:
            self._kf_meter_tokenless(account.open_kfid, now)
        position, empties = 0, 0
        if cursor:
            open_kfid, position, empties = self._read_cursor("kf_sync", cursor)
            if open_kfid != account.open_kfid:
                raise ApiError(50100, "cursor belongs to another kf account")
        retention = self.config.kf_retention_s
        pending = [m for m in account.log[position:] if now - m.at < retention]
        if pending and empties < self.config.kf_sync_empty_pages:
            return {
                "next_cursor": self._new_cursor("kf_sync", (account.open_kfid, position, empties + 1)),
                "has_more": 1,
                "msg_list": [],
            }
        page = pending[:limit]
        next_position = page[-1].seq + 1 if page else position
        return {
            "next_cursor": self._new_cursor("kf_sync", (account.open_kfid, next_position, 0)),
            "has_more": 1 if len(pending) > len(page) else 0,
            "msg_list": [m.body for m in page],
        }

    def _kf_meter_tokenless(self, open_kfid: str, now: float) -> None:
        limit = self.config.kf_sync_no_token_per_minute
        if not limit:
            return
        calls = self._kf_no_token.setdefault(open_kfid, deque())
        while calls and now - calls[0] >= self.config.minute_s:
            calls.popleft()
        if len(calls) >= limit:
            raise ApiError(45009, "sync_msg without a token is strictly rate limited")
        calls.append(now)

    def _kf_msgid(self, account: KfAccount, data: JSON) -> str:
        msgid = opt_str(data, "msgid")
        if not MSGID_RE.match(msgid):
            raise ApiError(40058, "msgid must be at most 32 bytes of [0-9a-zA-Z_-]")
        if msgid and msgid in account.msgids:
            raise ApiError(
                self.config.kf_duplicate_msgid_errcode, f"msgid {msgid!r} was already used on this kf account"
            )
        return msgid or secrets.token_urlsafe(24).replace("-", "x").replace("_", "y")[:32]

    def _kf_send_msg(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        account = self._kf_account_of(data)
        touser = opt_str(data, "touser")
        if not touser:
            raise ApiError(41035)
        if touser not in self._customers:
            raise ApiError(40096)
        msgtype, payload = check_kf_message(data, SEND_TYPES)
        msgid = self._kf_msgid(account, data)
        session = self._kf_sessions.get((account.open_kfid, touser))
        if session is None or session.state not in (NEW, ASSISTANT):
            raise ApiError(
                95018, f"session state {session.state if session else ENDED} does not allow API send"
            )
        now = self.now()
        if (
            session.last_customer_msg_at is None
            or now - session.last_customer_msg_at >= self.config.kf_window_s
        ):
            raise ApiError(95002)
        if session.sends >= self.config.kf_sends_per_customer_message:
            raise ApiError(95001)
        session.sends += 1
        session.state = ASSISTANT
        account.msgids.add(msgid)
        self._kf_sent.append(
            KfSent(msgid, account.open_kfid, touser, msgtype, payload, self.wall_time(), "send_msg")
        )
        return {"msgid": msgid}

    def _kf_send_msg_on_event(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        code = opt_str(data, "code")
        if not code:
            raise ApiError(40058, "code is required")
        record = self._kf_codes.get(code)
        now = self.now()
        if record is None or now >= record.expires_at:
            raise ApiError(40058, "code is invalid or expired")
        if record.used:
            raise ApiError(40058, "code was already used")
        account = self._kf_accounts.get(record.open_kfid)
        if account is None or account.deleted:
            raise ApiError(95004)
        msgtype, payload = check_kf_message(data, _CODE_TYPES[record.kind])
        msgid = self._kf_msgid(account, data)
        session = self._kf_session(record.open_kfid, record.external_userid)
        if record.kind != "welcome" and session.state != record.state:
            raise ApiError(95018, "the session left the state this code was issued for")
        record.used = True
        if record.kind == "welcome":
            session.last_welcome_at = now
        account.msgids.add(msgid)
        self._kf_sent.append(
            KfSent(
                msgid,
                record.open_kfid,
                record.external_userid,
                msgtype,
                payload,
                self.wall_time(),
                "send_msg_on_event",
                record.kind,
            )
        )
        return {"msgid": msgid}

    # ==== session state ==============================================================================

    def _kf_customer_of(self, data: JSON) -> str:
        external_userid = opt_str(data, "external_userid")
        if not external_userid:
            raise ApiError(41035)
        if external_userid not in self._customers:
            raise ApiError(40096)
        return external_userid

    def _kf_service_state_get(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        account = self._kf_account_of(data)
        session = self._kf_sessions.get((account.open_kfid, self._kf_customer_of(data)))
        state = session.state if session else ENDED
        body: JSON = {"service_state": state}
        if session is not None and state == HUMAN and session.servicer:
            body["servicer_userid"] = session.servicer
        return body

    def _kf_service_state_trans(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        account = self._kf_account_of(data)
        external_userid = self._kf_customer_of(data)
        target = opt_int(data, "service_state")
        if target is None:
            raise ApiError(40058, "service_state is required")
        session = self._kf_session(account.open_kfid, external_userid)
        if target not in API_TRANSITIONS.get(session.state, frozenset()):
            raise ApiError(95016, f"state {session.state} cannot become {target} through the API")
        servicer: str | None = None
        if target == HUMAN:
            userid = opt_str(data, "servicer_userid")
            if not userid:
                raise ApiError(40058, "servicer_userid is required for state 3")
            servicer = self._member(userid)
            if servicer is None or servicer not in account.servicers or self._inactive(servicer):
                raise ApiError(95014)
            if account.servicers[servicer] != SERVICER_RECEIVING:
                raise ApiError(95019)
        code: str | None = None
        if target in (QUEUED, HUMAN) and not session.reply_code_issued:
            code = self._kf_issue_code(session, "queue" if target == QUEUED else "taken", target)
            session.reply_code_issued = True
        elif target == ENDED:
            code = self._kf_issue_code(session, "end", ENDED)
        session.state = target
        if target == HUMAN:
            session.servicer = servicer
        elif target in (ASSISTANT, QUEUED):
            session.servicer = None
        return {"msg_code": code} if code else {}

    def _kf_customer_batchget(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.kf_apps)
        data = call.json()
        ids = str_list(data, "external_userid_list")
        if not 0 < len(ids) <= BATCHGET_MAX:
            raise ApiError(40058, f"external_userid_list needs 1 to {BATCHGET_MAX} ids")
        with_context = bool(opt_int(data, "need_enter_session_context", 0))
        found: list[JSON] = []
        invalid: list[str] = []
        for external_userid in ids:
            customer = self._customers.get(external_userid)
            if customer is None or external_userid not in self._kf_customers:
                invalid.append(external_userid)
                continue
            entry: JSON = {
                "external_userid": external_userid,
                "nickname": customer.name,
                "avatar": customer.avatar,
                "gender": customer.gender,
                "unionid": customer.unionid,
            }
            context = self._kf_customers[external_userid]
            if with_context and context:
                entry["enter_session_context"] = dict(context)
            found.append(entry)
        return {"customer_list": found, "invalid_external_userid": invalid}
