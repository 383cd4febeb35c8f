"""The simulated corp's server side: tokens, rate limits, faults and the API endpoints, in memory.

`SimulatedCorp.handle()` answers one API call the way WeCom does (HTTP 200 with an errcode);
the HTTP server in `server.py` is a thin adapter around it. Everything is guarded by one lock.
Template cards live in `cards.py`, customer contact in `contacts.py`, transfers between members
in `transfers.py`, mass sending in `groupmsg.py` and WeChat Customer Service in `kf.py`, as mixins.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from bot.wecom.simulator.api import JSON, ApiCall, ApiError, Handler, errmsg
from bot.wecom.simulator.cards import CardsMixin, ResponseCode
from bot.wecom.simulator.config import SimulatorConfig
from bot.wecom.simulator.contacts import ContactsMixin
from bot.wecom.simulator.groupmsg import GroupMsgMixin
from bot.wecom.simulator.kf import KfMixin
from bot.wecom.simulator.transfers import TransfersMixin

TEXT_MAX_BYTES = 2048
MAX_USERS = 1000
MAX_PARTIES = 100
MAX_TAGS = 100
_MEDIA_TYPES = frozenset({"image", "voice", "video", "file"})
# Message sending is not counted toward the per-API frequency limit (DOC-90454).
_UNMETERED_APIS = frozenset({"message/send"})


@dataclass(frozen=True)
class _Endpoint:
    handler: Handler
    methods: tuple[str, ...]
    needs_token: bool
    metered: bool


@dataclass
class _Token:
    app: str
    expires_at: float
    revoked: bool = False


@dataclass
class _Fault:
    errcode: int
    errmsg: str
    remaining: int
    http_status: int


@dataclass
class _Window:
    start: float
    count: int = 0


@dataclass(frozen=True)
class AppMessage:
    """An app message WeCom accepted (errcode 0), as the transcript records it."""

    msgid: str
    agentid: int
    msgtype: str
    payload: JSON
    delivered_to: tuple[str, ...]
    dropped_for: tuple[str, ...]
    invaliduser: tuple[str, ...]
    response_code: str | None
    task_id: str | None
    truncated: tuple[str, ...]
    sent_at: float


@dataclass(frozen=True)
class DroppedMessage:
    """One recipient of an accepted app message who never got it (per-member limit, silent)."""

    msgid: str
    userid: str
    reason: str


@dataclass
class _Stats:
    api_calls: Counter[str] = field(default_factory=Counter)
    gettoken_calls: int = 0


__all__ = [
    "JSON",
    "ApiCall",
    "ApiError",
    "AppMessage",
    "DroppedMessage",
    "ResponseCode",
    "SimulatedCorp",
    "errmsg",
]


class SimulatedCorp(CardsMixin, ContactsMixin, TransfersMixin, GroupMsgMixin, KfMixin):
    """WeCom's server side for one corp, in memory and thread-safe."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self._lock = threading.RLock()
        self._offset = 0.0
        self._tokens: dict[str, _Token] = {}
        self._bad_secrets: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}
        self._api_windows: dict[tuple[str, str], _Window] = {}
        self._api_blocked_until: dict[str, float] = {}
        self._member_windows: dict[tuple[int, str, str], _Window] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._latency: dict[str, float] = {}
        self._in_flight: Counter[str] = Counter()
        self._task_ids: dict[int, set[str]] = {}
        self._response_codes: dict[str, ResponseCode] = {}
        self._sent: list[AppMessage] = []
        self._dropped: list[DroppedMessage] = []
        self._stats = _Stats()
        self._endpoints: dict[str, _Endpoint] = {}
        self._users = {u.lower(): u for u in self.config.users}
        self.register("gettoken", self._gettoken, methods=("GET",), needs_token=False)
        self.register("message/send", self._message_send)
        self._init_parts()
        self._init_cards()
        self._init_contacts()
        self._init_transfers()
        self._init_groupmsg()
        self._init_kf()

    # ---- time -------------------------------------------------------------------------------

    def now(self) -> float:
        """The simulator's monotonic clock, including time skipped with `advance`."""
        return time.monotonic() + self._offset

    def wall_time(self) -> float:
        """Unix time as the simulated corp sees it, including time skipped with `advance`."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward: expire tokens, lift bans, complete due transfers."""
        with self._lock:
            self._offset += seconds
            self._settle_transfers()
        self._flush()

    # ---- registration and dispatch ------------------------------------------------------------

    def register(
        self,
        api: str,
        handler: Handler,
        *,
        methods: tuple[str, ...] = ("POST",),
        needs_token: bool = True,
        metered: bool = True,
    ) -> None:
        """Add an endpoint at `/cgi-bin/<api>`; the handler returns the JSON body or raises ApiError."""
        self._endpoints[api] = _Endpoint(
            handler, methods, needs_token, metered and api not in _UNMETERED_APIS
        )

    def knows(self, api: str) -> bool:
        """True when `api` is an implemented endpoint."""
        return api in self._endpoints

    def handle(self, call: ApiCall) -> tuple[int, JSON]:
        """Answer one API call: (HTTP status, JSON body). WeCom uses HTTP 200 for its errors too."""
        endpoint = self._endpoints[call.api]
        try:
            with self._lock:
                return self._answer(endpoint, call)
        finally:
            # Time-driven changes a call noticed (a transfer completing) may have raised callbacks.
            self._flush()

    def _answer(self, endpoint: _Endpoint, call: ApiCall) -> tuple[int, JSON]:
        self._stats.api_calls[call.api] += 1
        if call.api == "gettoken":
            self._stats.gettoken_calls += 1
        try:
            now = self.now()
            if self._banned_until.get(call.remote_addr, 0.0) > now:
                raise ApiError(45009, "IP banned after repeated wrong secrets")
            fault = self._take_fault(call.api)
            if fault is not None:
                return fault.http_status, {"errcode": fault.errcode, "errmsg": fault.errmsg}
            if endpoint.metered:
                self._meter(call.api, now)
            if call.method not in endpoint.methods:
                raise ApiError(40058, f"{call.api} requires {'/'.join(endpoint.methods)}")
            if endpoint.needs_token:
                call = replace(call, app=self._app_of(call))
            body = endpoint.handler(call)
        except ApiError as exc:
            return 200, {"errcode": exc.errcode, "errmsg": errmsg(exc.errcode, exc.detail), **exc.extra}
        return 200, {"errcode": 0, "errmsg": "ok", **body}

    @contextmanager
    def in_flight(self, api: str) -> Iterator[bool]:
        """Track a call in progress; yields False when it exceeds the concurrency cap (45033)."""
        with self._lock:
            self._in_flight[api] += 1
            allowed = not self.config.api_concurrency or self._in_flight[api] <= self.config.api_concurrency
        try:
            yield allowed
        finally:
            with self._lock:
                self._in_flight[api] -= 1

    def latency_for(self, api: str) -> float:
        """The injected delay for `api` (or for every API), in seconds."""
        with self._lock:
            return self._latency.get(api, self._latency.get("*", 0.0))

    # ---- controls -----------------------------------------------------------------------------

    def invalidate_tokens(self, app: str | None = None) -> None:
        """Kill issued tokens early (all, or one app's): later calls with them answer 40014."""
        with self._lock:
            for token in self._tokens.values():
                if app is None or token.app == app:
                    token.revoked = True

    def inject_fault(
        self,
        api: str,
        errcode: int,
        *,
        times: int = 1,
        errmsg_text: str | None = None,
        http_status: int = 200,
    ) -> None:
        """Make the next `times` calls of `api` ("*" = any API) answer `errcode` (and `http_status`)."""
        with self._lock:
            text = errmsg_text if errmsg_text is not None else errmsg(errcode)
            self._faults.setdefault(api, deque()).append(_Fault(errcode, text, times, http_status))

    def set_latency(self, api: str, seconds: float) -> None:
        """Delay every answer of `api` ("*" = any API) by `seconds`; 0 removes the delay."""
        with self._lock:
            if seconds > 0:
                self._latency[api] = seconds
            else:
                self._latency.pop(api, None)

    def clear_faults(self) -> None:
        """Remove injected faults and latency."""
        with self._lock:
            self._faults.clear()
            self._latency.clear()

    # ---- observations -------------------------------------------------------------------------

    @property
    def gettoken_calls(self) -> int:
        """How many times gettoken was called (any outcome)."""
        with self._lock:
            return self._stats.gettoken_calls

    def api_calls(self, api: str) -> int:
        """How many times `api` was called (any outcome)."""
        with self._lock:
            return self._stats.api_calls[api]

    @property
    def sent_app_messages(self) -> list[AppMessage]:
        """Every app message accepted with errcode 0, oldest first."""
        with self._lock:
            return list(self._sent)

    @property
    def dropped_app_messages(self) -> list[DroppedMessage]:
        """Recipients whose copy was dropped silently by the per-member limit."""
        with self._lock:
            return list(self._dropped)

    def messages_to(self, userid: str) -> list[AppMessage]:
        """App messages actually delivered to `userid`."""
        key = userid.lower()
        return [m for m in self.sent_app_messages if key in (u.lower() for u in m.delivered_to)]

    def response_code(self, code: str) -> ResponseCode | None:
        """The record of an issued template-card response_code, or None."""
        with self._lock:
            return self._response_codes.get(code)

    # ---- internals ----------------------------------------------------------------------------

    def _take_fault(self, api: str) -> _Fault | None:
        for key in (api, "*"):
            queue = self._faults.get(key)
            while queue:
                fault = queue[0]
                if fault.remaining <= 0:
                    queue.popleft()
                    continue
                fault.remaining -= 1
                return fault
        return None

    def _meter(self, api: str, now: float) -> None:
        if self._api_blocked_until.get(api, 0.0) > now:
            raise ApiError(45009, f"{api} is blocked by the frequency limit")
        cfg = self.config
        limits = (("minute", cfg.minute_s, cfg.api_per_minute), ("hour", cfg.hour_s, cfg.api_per_hour))
        for name, length, limit in limits:
            window = self._window(self._api_windows, (api, name), now, length)
            if window.count >= limit:
                # A block lasts as long as the limit's window (a minute limit blocks 60 s).
                self._api_blocked_until[api] = now + length
                raise ApiError(45009, f"{api} exceeded {limit} calls per {name}")
        for name, length, _limit in limits:
            self._window(self._api_windows, (api, name), now, length).count += 1

    @staticmethod
    def _window(windows: dict[Any, _Window], key: Any, now: float, length: float) -> _Window:
        window = windows.get(key)
        if window is None or now - window.start >= length:
            window = windows[key] = _Window(now)
        return window

    def _app_of(self, call: ApiCall) -> str:
        value = call.query.get("access_token", "")
        if not value:
            raise ApiError(41001)
        token = self._tokens.get(value)
        if token is None or token.revoked:
            raise ApiError(40014)
        if token.expires_at <= self.now():
            raise ApiError(42001)
        return token.app

    def _gettoken(self, call: ApiCall) -> JSON:
        corpid = call.query.get("corpid", "")
        secret = call.query.get("corpsecret", "")
        if not corpid:
            raise ApiError(41002)
        if not secret:
            raise ApiError(41004)
        if corpid != self.config.corp_id:
            raise ApiError(40013)
        app = self.config.app_for_secret(secret)
        now = self.now()
        if app is None:
            self._note_bad_secret(call.remote_addr, now)
            raise ApiError(40001)
        self._forget_old_tokens(now)
        token = secrets.token_urlsafe(48)
        self._tokens[token] = _Token(app, now + self.config.token_ttl_s)
        return {"access_token": token, "expires_in": self.config.token_ttl_s}

    def _note_bad_secret(self, ip: str, now: float) -> None:
        seen = self._bad_secrets.setdefault(ip, deque())
        seen.append(now)
        while seen and seen[0] <= now - self.config.ban_window_s:
            seen.popleft()
        if len(seen) >= self.config.ban_threshold:
            self._banned_until[ip] = now + self.config.ban_duration_s
            seen.clear()

    def _forget_old_tokens(self, now: float) -> None:
        # Keep expired tokens a while so they answer 42001 rather than 40014.
        horizon = now - self.config.token_ttl_s
        for value in [v for v, t in self._tokens.items() if t.expires_at < horizon]:
            del self._tokens[value]

    # ---- message/send -------------------------------------------------------------------------

    def _message_send(self, call: ApiCall) -> JSON:
        data = call.json()
        agentid = self._check_agent(call, data)
        msgtype = data.get("msgtype")
        if not isinstance(msgtype, str) or not msgtype:
            raise ApiError(40008, "msgtype missing")
        payload = json.loads(json.dumps(data))
        truncated: list[str] = []
        task_id: str | None = None
        if msgtype in ("text", "markdown"):
            self._check_text(payload, msgtype, truncated)
        elif msgtype == "textcard":
            self._check_textcard(payload, truncated)
        elif msgtype == "template_card":
            task_id = self._check_template_card(payload, agentid)
        elif msgtype in _MEDIA_TYPES:
            if not isinstance(payload.get(msgtype), dict) or not payload[msgtype].get("media_id"):
                raise ApiError(41006)
        elif msgtype in ("news", "mpnews"):
            articles = (payload.get(msgtype) or {}).get("articles")
            if not isinstance(articles, list) or not 1 <= len(articles) <= 8:
                raise ApiError(45008)
        else:
            raise ApiError(40008, f"msgtype {msgtype!r} is not supported")

        valid, invalid_users, invalid_parties, invalid_tags = self._recipients(data)
        extra: JSON = {}
        if invalid_users:
            extra["invaliduser"] = "|".join(invalid_users)
        if invalid_parties:
            extra["invalidparty"] = "|".join(invalid_parties)
        if invalid_tags:
            extra["invalidtag"] = "|".join(invalid_tags)
        if not valid:
            raise ApiError(81013, **extra)

        now = self.now()
        msgid = secrets.token_urlsafe(24)
        delivered: list[str] = []
        for userid in valid:
            reason = self._member_quota(agentid, userid, now)
            if reason is None:
                delivered.append(userid)
            else:
                self._dropped.append(DroppedMessage(msgid, userid, reason))
        response_code: str | None = None
        if task_id is not None:
            response_code = self._remember_card(agentid, task_id, msgid, payload["template_card"], delivered)
        if response_code is not None:
            extra["response_code"] = response_code
        self._sent.append(
            AppMessage(
                msgid=msgid,
                agentid=agentid,
                msgtype=msgtype,
                payload=payload,
                delivered_to=tuple(delivered),
                dropped_for=tuple(u for u in valid if u not in delivered),
                invaliduser=tuple(invalid_users),
                response_code=response_code,
                task_id=task_id,
                truncated=tuple(truncated),
                sent_at=time.time(),
            )
        )
        return {**extra, "msgid": msgid}

    def _check_agent(self, call: ApiCall, data: JSON) -> int:
        raw = data.get("agentid")
        if raw is None or raw == "":
            raise ApiError(41011)
        try:
            agentid = int(raw)
        except (TypeError, ValueError):
            raise ApiError(40056) from None
        if call.app != "agent" or agentid != self.config.agent_id:
            raise ApiError(40056, f"agentid {agentid} does not belong to this access_token's app")
        return agentid

    def _limit(self, owner: JSON, key: str, max_bytes: int, where: str, truncated: list[str]) -> None:
        value = owner.get(key)
        if not isinstance(value, str):
            return
        raw = value.encode("utf-8")
        if len(raw) <= max_bytes:
            return
        if self.config.oversize_text == "reject":
            raise ApiError(45002, f"{where} exceeds {max_bytes} bytes")
        owner[key] = raw[:max_bytes].decode("utf-8", "ignore")
        truncated.append(where)

    def _check_text(self, payload: JSON, msgtype: str, truncated: list[str]) -> None:
        body = payload.get(msgtype)
        if not isinstance(body, dict) or not isinstance(body.get("content"), str) or not body["content"]:
            raise ApiError(44004)
        self._limit(body, "content", TEXT_MAX_BYTES, f"{msgtype}.content", truncated)

    def _check_textcard(self, payload: JSON, truncated: list[str]) -> None:
        card = payload.get("textcard")
        if not isinstance(card, dict) or not card.get("title"):
            raise ApiError(41016)
        if not card.get("description"):
            raise ApiError(40058, "textcard.description is required")
        if not card.get("url"):
            raise ApiError(41010)
        self._limit(card, "title", 128, "textcard.title", truncated)
        self._limit(card, "description", 512, "textcard.description", truncated)
        btntxt = card.get("btntxt")
        if isinstance(btntxt, str) and len(btntxt) > 4:
            card["btntxt"] = btntxt[:4]
            truncated.append("textcard.btntxt")

    def _recipients(self, data: JSON) -> tuple[list[str], list[str], list[str], list[str]]:
        def split(key: str) -> list[str]:
            value = data.get(key, "")
            if value in (None, ""):
                return []
            if not isinstance(value, str | int):
                raise ApiError(40058, f"{key} must be a '|'-joined string")
            return [part.strip() for part in str(value).split("|") if part.strip()]

        users, parties, tags = split("touser"), split("toparty"), split("totag")
        if not (users or parties or tags):
            raise ApiError(82001)
        if users == ["@all"]:
            return list(self.config.users), [], [], []
        if len(users) > MAX_USERS:
            raise ApiError(40032)
        if len(parties) > MAX_PARTIES:
            raise ApiError(82002)
        if len(tags) > MAX_TAGS:
            raise ApiError(82003)
        valid: list[str] = []
        invalid: list[str] = []
        for user in users:
            known = self._users.get(user.lower())
            if known is None:
                invalid.append(user.lower())
            elif known not in valid:
                valid.append(known)
        # The simulator has no departments or tags: every party and tag id is invalid.
        return valid, invalid, parties, tags

    def _member_quota(self, agentid: int, userid: str, now: float) -> str | None:
        cfg = self.config
        limits = (("minute", cfg.minute_s, cfg.member_per_minute), ("hour", cfg.hour_s, cfg.member_per_hour))
        windows = [
            (name, limit, self._window(self._member_windows, (agentid, userid, name), now, length))
            for name, length, limit in limits
        ]
        for name, limit, window in windows:
            if window.count >= limit:
                return f"more than {limit} app messages per {name} to this member"
        for _name, _limit, window in windows:
            window.count += 1
        return None
