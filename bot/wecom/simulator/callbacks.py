"""Deliver encrypted callbacks to a bot the way WeCom does: sign, POST, retry; and the URL check."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode
from xml.etree.ElementTree import ParseError

import urllib3
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from bot.wecom.crypto import CallbackCrypto, CryptoError, random_nonce
from bot.wecom.simulator.callback_xml import cdata

URL_CHECK_DEADLINE_S = 1.0
_XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


@dataclass(frozen=True)
class CallbackAttempt:
    """One HTTP attempt: its status (None on timeout or connection error), body and duration."""

    delivery: int
    status: int | None
    body: str
    elapsed_s: float
    error: str | None = None


@dataclass
class CallbackResult:
    """Everything that happened delivering one callback, retries and duplicates included."""

    plaintext: str
    attempts: list[CallbackAttempt] = field(default_factory=list)
    reply_plaintext: str | None = None
    reply_error: str | None = None

    @property
    def delivered(self) -> bool:
        """True when some attempt got HTTP 200."""
        return any(a.status == 200 for a in self.attempts)

    @property
    def status_codes(self) -> list[int | None]:
        """The HTTP status of every attempt in order (None = timeout or connection error)."""
        return [a.status for a in self.attempts]

    @property
    def reply_body(self) -> str | None:
        """The body of the last HTTP 200 answer, or None."""
        for attempt in reversed(self.attempts):
            if attempt.status == 200:
                return attempt.body
        return None


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of the GET URL check: the bot must echo the plaintext exactly within 1 s."""

    ok: bool
    expected: str
    status: int | None
    body: str
    elapsed_s: float
    error: str | None = None


def envelope(corp_id: str, encrypt: str, agent_id: int | None) -> str:
    """The POST body WeCom sends: ToUserName, AgentID (app callbacks only) and Encrypt."""
    agent = f"<AgentID>{cdata(str(agent_id))}</AgentID>" if agent_id is not None else ""
    return f"<xml><ToUserName>{cdata(corp_id)}</ToUserName>{agent}<Encrypt>{cdata(encrypt)}</Encrypt></xml>"


def _signed_params(crypto: CallbackCrypto, encrypt: str) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), random_nonce()
    return {"msg_signature": crypto.sign(timestamp, nonce, encrypt), "timestamp": timestamp, "nonce": nonce}


def _decrypt_reply(crypto: CallbackCrypto, body: str) -> tuple[str | None, str | None]:
    """Decrypt a passive reply: (plaintext, None), (None, error), or (None, None) for an empty ack."""
    text = body.strip()
    if not text or text == "success":
        return None, None
    try:
        root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException) as exc:
        return None, f"reply is neither empty nor XML: {type(exc).__name__}"
    fields = {child.tag: (child.text or "") for child in root}
    encrypt = fields.get("Encrypt", "")
    if not encrypt:
        return None, "reply XML has no Encrypt"
    if not crypto.verify(
        fields.get("MsgSignature", ""), fields.get("TimeStamp", ""), fields.get("Nonce", ""), encrypt
    ):
        return None, "reply MsgSignature does not verify"
    try:
        return crypto.decrypt(encrypt), None
    except CryptoError as exc:
        return None, f"reply does not decrypt: {exc}"


class CallbackSender:
    """Sends callbacks for one corp to bot URLs and keeps a log of the results."""

    def __init__(self, crypto: CallbackCrypto, corp_id: str, stop: threading.Event | None = None) -> None:
        self.crypto = crypto
        self.corp_id = corp_id
        self._stop = stop or threading.Event()
        # Kept-open connections to the bot (no proxies from the environment: it is on this host).
        self._http = urllib3.PoolManager(num_pools=4, maxsize=64)
        self._log: list[CallbackResult] = []
        self._lock = threading.Lock()

    @property
    def log(self) -> list[CallbackResult]:
        """Every callback delivered so far, oldest first."""
        with self._lock:
            return list(self._log)

    def send(
        self,
        bot_url: str,
        xml_plaintext: str,
        *,
        agent_id: int | None,
        retries: int = 3,
        timeout_s: float = 5.0,
        retry_interval_s: float = 0.5,
        duplicate: bool = False,
    ) -> CallbackResult:
        """Encrypt, sign and POST a callback, retrying on timeout or non-200 up to `retries` times."""
        result = CallbackResult(plaintext=xml_plaintext)
        for delivery in range(1, 3 if duplicate else 2):
            # A duplicate is a fresh envelope of the same message, as WeCom's own re-sends are.
            encrypt = self.crypto.encrypt(xml_plaintext)
            params = _signed_params(self.crypto, encrypt)
            body = envelope(self.corp_id, encrypt, agent_id).encode()
            for attempt in range(retries + 1):
                if attempt and self._stop.wait(retry_interval_s):
                    break
                outcome = self._post(bot_url, params, body, timeout_s, delivery)
                result.attempts.append(outcome)
                if outcome.status == 200:
                    break
        reply = result.reply_body
        if reply is not None:
            result.reply_plaintext, result.reply_error = _decrypt_reply(self.crypto, reply)
        with self._lock:
            self._log.append(result)
        return result

    def _post(
        self, url: str, params: dict[str, str], body: bytes, timeout_s: float, delivery: int
    ) -> CallbackAttempt:
        started = time.monotonic()
        try:
            res = self._request("POST", url, params, body, timeout_s)
        except urllib3.exceptions.HTTPError as exc:
            return CallbackAttempt(
                delivery, None, "", time.monotonic() - started, f"{type(exc).__name__}: {exc}"
            )
        return CallbackAttempt(delivery, res.status, _text(res), time.monotonic() - started)

    def _request(
        self, method: str, url: str, params: dict[str, str], body: bytes | None, timeout_s: float
    ) -> urllib3.BaseHTTPResponse:
        """One HTTP request, not retried (a retry is a new attempt, recorded as such)."""
        return self._http.request(
            method,
            f"{url}{'&' if '?' in url else '?'}{urlencode(params)}",
            body=body,
            headers=_XML_HEADERS if body is not None else None,
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            retries=False,
            redirect=False,
        )

    def verify_url(self, bot_url: str) -> VerifyResult:
        """Do the GET echostr check WeCom runs when the callback URL is saved."""
        expected = str(secrets.randbelow(10**19))
        echostr = self.crypto.encrypt(expected)
        params = {**_signed_params(self.crypto, echostr), "echostr": echostr}
        started = time.monotonic()
        try:
            res = self._request("GET", bot_url, params, None, URL_CHECK_DEADLINE_S)
        except urllib3.exceptions.HTTPError as exc:
            elapsed = time.monotonic() - started
            return VerifyResult(False, expected, None, "", elapsed, f"{type(exc).__name__}: {exc}")
        elapsed = time.monotonic() - started
        ok = res.status == 200 and res.data == expected.encode() and elapsed <= URL_CHECK_DEADLINE_S
        return VerifyResult(ok, expected, res.status, _text(res), elapsed)

    def close(self) -> None:
        """Close the kept-open connections."""
        self._http.clear()


def _text(res: urllib3.BaseHTTPResponse) -> str:
    """The body as text, in the charset the answer names (UTF-8 when it names none)."""
    content_type = res.headers.get("Content-Type", "")
    charset = content_type.partition("charset=")[2].split(";")[0].strip() or "utf-8"
    try:
        return res.data.decode(charset, "replace")
    except LookupError:
        return res.data.decode("utf-8", "replace")
