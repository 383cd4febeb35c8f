"""WeCom server API client over wechatpy: one app per secret, shared token cache, classified errors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import certifi
import requests
import urllib3
from wechatpy.enterprise import WeChatClient
from wechatpy.exceptions import WeChatClientException
from wechatpy.session import SessionStorage

from bot import metrics
from bot.coordination.base import Coordinator
from bot.logs import redact
from bot.wecom.errors import ErrorKind, WeComAPIError

if TYPE_CHECKING:
    from bot.config import WeComSettings

log = logging.getLogger(__name__)

DEFAULT_API_BASE_URL = "https://qyapi.weixin.qq.com"
APPS = ("agent", "contact", "kf")
TRANSFER_MAX_CUSTOMERS = 100  # externalcontact/transfer_customer takes at most 100 per call (WECOM.md §9.2)
KF_STATE_HUMAN = 3  # kf service_state "由人工接待" (WECOM.md §7.5)
_DEFAULT_TOKEN_TTL_S = 7200
_LOCK_POLL_S = 0.05


def token_cache_ttl(expires_in: int) -> int:
    """Return how long to cache a token WeCom said lives `expires_in` seconds (a margin before expiry)."""
    return max(1, expires_in - min(300, expires_in // 10))


class CoordinatorSessionStorage(SessionStorage):
    """wechatpy session storage over the shared Coordinator cache, so all processes share one token."""

    def __init__(self, coordinator: Coordinator, prefix: str = "wecom:") -> None:
        self._coordinator = coordinator
        self._prefix = prefix

    def get(self, key: str, default: Any = None) -> Any:
        """Return the cached value for `key`, or `default`."""
        value = self._coordinator.cache_get(self._prefix + key)
        return default if value is None else value

    def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        """Cache `value` under `key` for `ttl` seconds (a token's default lifetime when not given)."""
        ttl_s = int(ttl) if ttl else token_cache_ttl(_DEFAULT_TOKEN_TTL_S)
        self._coordinator.cache_set(self._prefix + key, str(value), ttl_s)

    def delete(self, key: str) -> None:
        """Drop `key` from the cache."""
        self._coordinator.cache_delete(self._prefix + key)


def _transport_error(api: str, failure: requests.RequestException) -> WeComAPIError:
    # urllib3 names the URL in its message, and with it the access_token (or corpsecret).
    return WeComAPIError(
        -1,
        f"network error: {failure.__class__.__name__}: {redact(str(failure))}",
        api,
        kind=ErrorKind.TRANSIENT,
    )


def _as_requests_error(exc: urllib3.exceptions.HTTPError) -> requests.RequestException:
    """The exception requests raises for this urllib3 failure, as the cause callers inspect.

    The mass sender tells "no byte of the request left" (a refused connection, a connect timeout)
    from "WeCom may have acted" by these types, as it did when calls went through requests.
    """
    reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
    errors = requests.exceptions
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
        reason, urllib3.exceptions.NewConnectionError
    ):
        return errors.ConnectTimeout(exc)
    if isinstance(reason, urllib3.exceptions.ProxyError):
        return errors.ProxyError(exc)
    if isinstance(reason, urllib3.exceptions.SSLError):
        return errors.SSLError(exc)
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return errors.ReadTimeout(exc)
    return errors.ConnectionError(exc)


def _http_status_error(api: str, status: int) -> WeComAPIError:
    # WeCom answers HTTP 200 even for errors; anything else came from a proxy or an outage.
    kind = ErrorKind.TRANSIENT if status >= 500 or status in (408, 429) else ErrorKind.PERMANENT
    return WeComAPIError(-1, f"HTTP {status}", api, kind=kind)


HTTP_POOL_SIZE = 64
LOCAL_TOKEN_S = 10.0  # how long a process reuses the shared token without asking the cache again
# As requests does: no retry of a call that may have reached WeCom, no redirects followed.
_NO_RETRIES = urllib3.Retry(total=0, read=False, redirect=False)
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def _pool_manager(base_url: str) -> urllib3.PoolManager:
    """A connection pool for `base_url`, through the proxy the environment names for it (as for requests).

    Proxy and CA settings are read once here, not on every call; REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE
    replace the bundled CA certificates, as they do for requests.
    """
    ca = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where()
    tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED"}
    tls["ca_cert_dir" if os.path.isdir(ca) else "ca_certs"] = ca
    proxies = requests.utils.get_environ_proxies(base_url)
    proxy = proxies.get(base_url.split(":", 1)[0].lower()) or proxies.get("all")
    # Several senders share the pool; keep a connection for each instead of reconnecting.
    options: dict[str, Any] = {"num_pools": 4, "maxsize": HTTP_POOL_SIZE, "block": False, **tls}
    if not proxy:
        return urllib3.PoolManager(**options)
    if proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager

        return SOCKSProxyManager(proxy, **options)
    return urllib3.ProxyManager(proxy, **options)


class _AppClient(WeChatClient):
    """wechatpy's enterprise client for one secret, bound to a base URL and the shared token cache."""

    def __init__(
        self,
        corp_id: str,
        secret: str,
        api_base_url: str,
        coordinator: Coordinator,
        timeout: float,
    ) -> None:
        # wechatpy's own retry on token errors recurses without a bound; the owner retries once instead.
        super().__init__(
            corp_id, secret, session=CoordinatorSessionStorage(coordinator), timeout=timeout, auto_retry=False
        )
        self.API_BASE_URL = api_base_url.rstrip("/") + "/cgi-bin/"
        self._coordinator = coordinator
        # urllib3 directly instead of wechatpy's requests session: the same pooling, proxies and
        # certificates at a fraction of the CPU per call; wechatpy still judges every answer.
        self._pool = _pool_manager(self.API_BASE_URL)
        self._timeout = urllib3.Timeout(connect=float(timeout), read=float(timeout))
        # wechatpy keys on the first 10 characters of the secret; two secrets may share them.
        self._token_key = f"token:{corp_id}:{hashlib.sha256(secret.encode()).hexdigest()}"
        self._local_token: tuple[str, float] | None = None

    @property
    def access_token_key(self) -> str:
        """The cache key of this secret's token."""
        return self._token_key

    @property
    def access_token(self) -> str:
        """A valid token: from the shared cache, else fetched once by whichever process gets the lock.

        The shared answer is also kept in this process for a few seconds, so a burst of calls does
        not ask the cache every time; a token error drops it (see `invalidate`).
        """
        local = self._local_token
        if local is not None and time.monotonic() < local[1]:
            return local[0]
        try:
            cached = self.session.get(self._token_key)
            token = str(cached) if cached else self._refresh_single_flight()
        except WeComAPIError:
            raise
        except Exception as exc:  # the shared cache (Redis) is unreachable: no API call was made
            raise WeComAPIError(
                -1, f"token cache unavailable: {exc}", "gettoken", kind=ErrorKind.TRANSIENT
            ) from exc
        self._local_token = (token, time.monotonic() + LOCAL_TOKEN_S)
        return token

    def _refresh_single_flight(self) -> str:
        lock_ttl = float(self.timeout) + 5.0
        lock = self._coordinator.lock(f"wecom-token:{self._token_key}", lock_ttl)
        deadline = time.monotonic() + lock_ttl + 1.0
        while True:
            if lock.acquire():
                try:
                    cached = self.session.get(self._token_key)
                    if cached:
                        return str(cached)
                    result = self.fetch_access_token()
                    return str(result["access_token"])
                finally:
                    lock.release()
            cached = self.session.get(self._token_key)
            if cached:
                return str(cached)
            if time.monotonic() > deadline:
                raise WeComAPIError(
                    -1,
                    "timed out waiting for another process to fetch the token",
                    "gettoken",
                    kind=ErrorKind.TRANSIENT,
                )
            time.sleep(_LOCK_POLL_S)

    def fetch_access_token(self) -> dict[str, Any]:
        """Call gettoken on the configured base URL (wechatpy hard-codes the production host) and cache it."""
        log.info("fetching WeCom access token for corp %s from %s", self.corp_id, self.API_BASE_URL)
        answer = self.send("GET", "gettoken", {"corpid": self.corp_id, "corpsecret": self.secret}, None)
        result = self._decode_result(answer)
        if not isinstance(result, dict):
            raise WeComAPIError(-1, "gettoken answered non-JSON", "gettoken", kind=ErrorKind.TRANSIENT)
        errcode = int(result.get("errcode", 0))
        if errcode != 0:
            raise WeComAPIError(errcode, str(result.get("errmsg", "")), "gettoken")
        token = result.get("access_token")
        if not token:
            raise WeComAPIError(
                -1, "gettoken answered without access_token", "gettoken", kind=ErrorKind.TRANSIENT
            )
        expires_in = int(result.get("expires_in", _DEFAULT_TOKEN_TTL_S))
        self.session.set(self._token_key, token, token_cache_ttl(expires_in))
        self.expires_at = int(time.time()) + expires_in
        return dict(result)

    def send(
        self, method: str, path: str, params: Mapping[str, Any], payload: Mapping[str, Any] | None
    ) -> HTTPAnswer:
        """One HTTP call to `/cgi-bin/<path>`; raises WeComAPIError for a transport failure or a status
        other than 200 (WeCom answers 200 even for errors; anything else came from a proxy or an outage).
        """
        url = f"{self.API_BASE_URL}{path}?{urlencode(params)}"
        # As wechatpy encodes a body: UTF-8 JSON with the Chinese text as is.
        body = None if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        try:
            res = self._pool.request(
                method,
                url,
                body=body,
                headers=None if body is None else _JSON_HEADERS,
                timeout=self._timeout,
                retries=_NO_RETRIES,
                redirect=False,
            )
        except urllib3.exceptions.HTTPError as exc:
            failure = _as_requests_error(exc)
            raise _transport_error(path, failure) from failure
        answer = HTTPAnswer(res.status, res.data)
        if res.status != 200:
            # Caused by an errcode-less WeChatClientException, as wechatpy reports an HTTP error:
            # WeCom may have acted on the call.
            http_error = WeChatClientException(None, None, client=self, request=None, response=answer)
            raise _http_status_error(path, res.status) from http_error
        return answer

    def call(
        self, method: str, path: str, params: Mapping[str, Any], payload: Mapping[str, Any] | None
    ) -> Any:
        """Call an API and let wechatpy judge the answer: the decoded JSON, or WeChatClientException
        for a non-zero errcode (the answer itself when it is not JSON)."""
        return self._handle_result(self.send(method, path, params, payload))

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.clear()
        self._http.close()

    def invalidate(self, token: str) -> None:
        """Drop the cached token if it is still `token` (another process may have refreshed it already)."""
        self._local_token = None
        if self.session.get(self._token_key) == token:
            self.session.delete(self._token_key)


class WeComClient:
    """Calls the WeCom server API for the corp's apps; raises WeComAPIError classified by kind."""

    def __init__(
        self,
        corp_id: str,
        secrets: Mapping[str, str],
        agent_id: int,
        coordinator: Coordinator,
        api_base_url: str = DEFAULT_API_BASE_URL,
        timeout: float = 10.0,
    ) -> None:
        unknown = set(secrets) - set(APPS)
        if unknown:
            raise ValueError(f"unknown WeCom app names {sorted(unknown)}; expected some of {APPS}")
        self.corp_id = corp_id
        self.agent_id = agent_id
        self.api_base_url = api_base_url.rstrip("/")
        self._secrets = {app: secret for app, secret in secrets.items() if secret}
        self._coordinator = coordinator
        self._timeout = timeout
        self._clients: dict[str, _AppClient] = {}
        self._clients_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: WeComSettings, coordinator: Coordinator) -> WeComClient:
        """Build the client from the `[wecom]` settings section."""
        return cls(
            corp_id=settings.corp_id,
            secrets={
                "agent": settings.agent_secret,
                "contact": settings.contact_secret,
                "kf": settings.kf_secret,
            },
            agent_id=settings.agent_id,
            coordinator=coordinator,
            api_base_url=settings.api_base_url,
            timeout=settings.request_timeout_s,
        )

    def _app_client(self, app: str, api: str) -> _AppClient:
        if app not in APPS:
            raise ValueError(f"unknown WeCom app {app!r}; expected one of {APPS}")
        # The customer-contact and kf APIs are often granted to the agent app itself (可调用应用).
        secret = self._secrets.get(app) or self._secrets.get("agent")
        if not secret:
            raise WeComAPIError(41004, f"no secret configured for app {app!r}", api, kind=ErrorKind.PERMANENT)
        with self._clients_lock:
            client = self._clients.get(secret)
            if client is None:
                client = self._clients[secret] = _AppClient(
                    self.corp_id, secret, self.api_base_url, self._coordinator, self._timeout
                )
        return client

    def access_token(self, app: str = "agent") -> str:
        """Return a valid token for `app` (fetching one if needed); used by `doctor` to test secrets."""
        return self._app_client(app, "gettoken").access_token

    def send_app_message(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Send an app message to members (message/send); `agentid` is filled from the config."""
        body = dict(payload)
        body.setdefault("agentid", self.agent_id)
        return self.post("message/send", body, app="agent")

    def send_template_card(self, touser: str, card: Mapping[str, Any]) -> SentCard:
        """Send a template card to members ("|"-joined userids); raises if any of them is invalid.

        Interactive cards come back with a single-use `response_code` for update_template_card.
        """
        result = self.send_app_message(
            {"touser": touser, "msgtype": "template_card", "template_card": dict(card)}
        )
        invalid = str(result.get("invaliduser") or "")
        if invalid:
            raise WeComAPIError(
                40003, f"invaliduser {invalid}: the card reached only the other members", "message/send"
            )
        code = result.get("response_code")
        return SentCard(str(result.get("msgid", "")), str(code) if code else None)

    def update_template_card(
        self,
        userids: Sequence[str],
        response_code: str,
        *,
        replace_name: str | None = None,
        card: Mapping[str, Any] | None = None,
    ) -> None:
        """Grey out a card's button with `replace_name`, or replace the whole card, for `userids`.

        The response_code comes from the send or from a click and works once, within 24 h.
        """
        if (replace_name is None) == (card is None):
            raise ValueError("give exactly one of replace_name and card")
        if not userids:
            raise ValueError("userids must name at least one member")
        body: dict[str, Any] = {
            "userids": list(userids),
            "agentid": self.agent_id,
            "response_code": response_code,
        }
        if replace_name is not None:
            body["button"] = {"replace_name": replace_name}
        else:
            body["template_card"] = dict(card or {})
        result = self.post("message/update_template_card", body, app="agent")
        invalid = result.get("invaliduser") or []
        if invalid:
            # The code is spent either way; the valid members' cards were updated.
            log.warning("update_template_card skipped members who never got the card: %s", invalid)

    def kf_transfer_session(self, open_kfid: str, external_userid: str, servicer_userid: str) -> str | None:
        """Hand a kf session to a human servicer (service_state 3); returns the msg_code, if any."""
        result = self.post(
            "kf/service_state/trans",
            {
                "open_kfid": open_kfid,
                "external_userid": external_userid,
                "service_state": KF_STATE_HUMAN,
                "servicer_userid": servicer_userid,
            },
            app="kf",
        )
        code = result.get("msg_code")
        return str(code) if code else None

    def post(self, api_path: str, payload: Mapping[str, Any], app: str = "agent") -> dict[str, Any]:
        """POST JSON to `/cgi-bin/<api_path>` with `app`'s token; the generic call for any endpoint."""
        return self._call(app, "post", api_path, params=None, payload=dict(payload))

    def get(
        self, api_path: str, params: Mapping[str, Any] | None = None, app: str = "agent"
    ) -> dict[str, Any]:
        """GET `/cgi-bin/<api_path>` with query `params` and `app`'s token."""
        return self._call(app, "get", api_path, params=params, payload=None)

    def _call(
        self,
        app: str,
        method: str,
        api_path: str,
        params: Mapping[str, Any] | None,
        payload: dict[str, Any] | None,
    ) -> dict[str, Any]:
        path = api_path.strip("/").removeprefix("cgi-bin/")
        with metrics.wecom_api_call(path):
            client = self._app_client(app, path)
            token = client.access_token
            try:
                return self._request_once(client, method, path, params, payload, token)
            except WeComAPIError as exc:
                if exc.kind is not ErrorKind.TOKEN:
                    raise
                metrics.wecom_api_error(path, exc.errcode)
                log.warning("WeCom %s: %s; refetching the token and retrying once", path, exc.errmsg)
            client.invalidate(token)
            # A token error on the retry (or from gettoken itself) propagates: never loop on it.
            return self._request_once(client, method, path, params, payload, client.access_token)

    def _request_once(
        self,
        client: _AppClient,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        payload: dict[str, Any] | None,
        token: str,
    ) -> dict[str, Any]:
        query = {**(params or {}), "access_token": token}
        try:
            result = client.call(method.upper(), path, query, payload)
        except WeChatClientException as exc:
            raise WeComAPIError(int(exc.errcode), str(exc.errmsg), path) from exc
        if not isinstance(result, dict):
            raise WeComAPIError(-1, "non-JSON response", path, kind=ErrorKind.TRANSIENT)
        return result

    def close(self) -> None:
        """Close the HTTP connections of every app client."""
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    # ---- mass sending to customers (企业群发, WECOM.md §6) ----------------------------------------

    def add_msg_template(
        self,
        external_userids: Sequence[str] = (),
        *,
        sender: str | None = None,
        text: str | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
        tag_filter: Mapping[str, Any] | None = None,
        allow_select: bool | None = None,
    ) -> MsgTemplateResult:
        """Create a mass-message task for customers; it is sent only once each member confirms it."""
        body: dict[str, Any] = {"chat_type": "single"}
        if external_userids:
            body["external_userid"] = list(external_userids)
        if sender:
            body["sender"] = sender
        if text is not None:
            body["text"] = {"content": text}
        if attachments:
            body["attachments"] = [dict(a) for a in attachments]
        if tag_filter is not None:
            body["tag_filter"] = dict(tag_filter)
        if allow_select is not None:
            body["allow_select"] = allow_select
        result = self.post("externalcontact/add_msg_template", body, app="contact")
        return MsgTemplateResult(str(result["msgid"]), tuple(str(e) for e in result.get("fail_list") or ()))

    def get_groupmsg_task(self, msgid: str, *, page_size: int = 1000) -> list[GroupMsgTaskStatus]:
        """Every member's task of a mass message (0 = unsent, 2 = sent), following next_cursor."""
        rows = self._all_pages("externalcontact/get_groupmsg_task", {"msgid": msgid}, "task_list", page_size)
        return [
            GroupMsgTaskStatus(str(r["userid"]), int(r["status"]), _opt_int(r.get("send_time"))) for r in rows
        ]

    def get_groupmsg_send_result(
        self, msgid: str, userid: str, *, page_size: int = 1000
    ) -> list[GroupMsgSendResult]:
        """Per-customer results of one member's task (0 unsent, 1 sent, 2 not a friend, 3 over quota)."""
        rows = self._all_pages(
            "externalcontact/get_groupmsg_send_result",
            {"msgid": msgid, "userid": userid},
            "send_list",
            page_size,
        )
        return [
            GroupMsgSendResult(
                str(r.get("external_userid", "")),
                str(r["userid"]),
                int(r["status"]),
                _opt_int(r.get("send_time")),
            )
            for r in rows
        ]

    def remind_groupmsg_send(self, msgid: str) -> None:
        """Notify the members who have not yet sent a mass message again (WeCom allows 3 per 24 h)."""
        self.post("externalcontact/remind_groupmsg_send", {"msgid": msgid}, app="contact")

    def cancel_groupmsg_send(self, msgid: str) -> None:
        """Stop a mass message: members who have not sent it yet can no longer send it."""
        self.post("externalcontact/cancel_groupmsg_send", {"msgid": msgid}, app="contact")

    # ---- transfers between members (在职继承, WECOM.md §9.2) -----------------------------------------

    def transfer_customer(
        self,
        handover_userid: str,
        takeover_userid: str,
        external_userids: Sequence[str],
        transfer_success_msg: str | None = None,
    ) -> dict[str, int]:
        """Start moving customers to another member; returns each customer's errcode (0 = started).

        The takeover completes on its own 24 h later unless the customer refuses; check it with
        `transfer_result`. A customer can be transferred at most twice in 90 days (40128).
        """
        customers = list(dict.fromkeys(external_userids))
        if not customers:
            raise ValueError("external_userids must name at least one customer")
        if len(customers) > TRANSFER_MAX_CUSTOMERS:
            raise ValueError(
                f"transfer at most {TRANSFER_MAX_CUSTOMERS} customers per call, got {len(customers)}"
            )
        body: dict[str, Any] = {
            "handover_userid": handover_userid,
            "takeover_userid": takeover_userid,
            "external_userid": customers,
        }
        if transfer_success_msg is not None:
            body["transfer_success_msg"] = transfer_success_msg
        result = self.post("externalcontact/transfer_customer", body, app="contact")
        return {str(r["external_userid"]): int(r["errcode"]) for r in result.get("customer") or []}

    def transfer_result(self, handover_userid: str, takeover_userid: str) -> list[TransferStatus]:
        """Each transferred customer's status (1 taken over, 2 waiting, 3 refused, 4 limit, 5 no record)."""
        rows = self._all_pages(
            "externalcontact/transfer_result",
            {"handover_userid": handover_userid, "takeover_userid": takeover_userid},
            "customer",
            None,
        )
        return [
            TransferStatus(str(r["external_userid"]), int(r["status"]), _opt_int(r.get("takeover_time")))
            for r in rows
        ]

    def _all_pages(
        self, api: str, body: Mapping[str, Any], key: str, page_size: int | None
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = ""
        seen: set[str] = set()
        limit = {} if page_size is None else {"limit": page_size}
        while True:
            page = self.post(api, {**body, **limit, "cursor": cursor}, app="contact")
            rows += page.get(key) or []
            cursor = str(page.get("next_cursor") or "")
            if not cursor:
                return rows
            if cursor in seen:
                raise WeComAPIError(
                    -1, f"{api} repeated next_cursor {cursor!r}", api, kind=ErrorKind.TRANSIENT
                )
            seen.add(cursor)


def _opt_int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


@dataclass(frozen=True)
class HTTPAnswer:
    """An HTTP answer in the shape wechatpy's result handling reads (`content`, `request`)."""

    status_code: int
    content: bytes
    request: None = None


@dataclass(frozen=True)
class SentCard:
    """What message/send answered for a template card: its msgid and, for interactive cards, the code."""

    msgid: str
    response_code: str | None


@dataclass(frozen=True)
class TransferStatus:
    """One customer's transfer: status 1 taken over, 2 waiting, 3 refused, 4 limit, 5 no record.

    `takeover_time` is the (future) automatic takeover while waiting, or when it happened.
    """

    external_userid: str
    status: int
    takeover_time: int | None


@dataclass(frozen=True)
class MsgTemplateResult:
    """What add_msg_template answered: the mass message's id and the customers it could not target."""

    msgid: str
    fail_list: tuple[str, ...]


@dataclass(frozen=True)
class GroupMsgTaskStatus:
    """One member's task of a mass message: status 0 = unsent, 2 = sent (with its send_time)."""

    userid: str
    status: int
    send_time: int | None


@dataclass(frozen=True)
class GroupMsgSendResult:
    """One customer's outcome: 0 unsent, 1 sent (with send_time), 2 not a friend, 3 over quota."""

    external_userid: str
    userid: str
    status: int
    send_time: int | None
