"""Helpers to build signed, encrypted callback requests as WeCom would send them."""

from __future__ import annotations

import time
from urllib.parse import unquote, urlencode

from bot.wecom.crypto import CallbackCrypto, random_nonce
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_TOKEN

CRYPTO = CallbackCrypto(TEST_TOKEN, TEST_AES_KEY, TEST_CORP_ID)


def envelope(
    plaintext: str, timestamp: int | None = None, crypto: CallbackCrypto = CRYPTO
) -> tuple[str, bytes]:
    """Return (query string, body) for a POST callback carrying `plaintext`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = random_nonce()
    encrypt = crypto.encrypt(plaintext)
    query = urlencode({"msg_signature": crypto.sign(ts, nonce, encrypt), "timestamp": ts, "nonce": nonce})
    body = (
        f"<xml><ToUserName><![CDATA[{TEST_CORP_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
    return query, body.encode()


def contact_event(
    change_type: str = "add_external_contact",
    user_id: str = "zhangsan",
    external_user_id: str = "wmEXT0001",
    create_time: int = 1700000000,
    state: str | None = "XHS888",
    welcome_code: str | None = "WELCOME1",
) -> str:
    """A change_external_contact plaintext as WeCom documents it."""
    extra = ""
    if state is not None:
        extra += f"<State><![CDATA[{state}]]></State>"
    if welcome_code is not None:
        extra += f"<WelcomeCode><![CDATA[{welcome_code}]]></WelcomeCode>"
    return (
        f"<xml><ToUserName><![CDATA[{TEST_CORP_ID}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        f"<CreateTime>{create_time}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_external_contact]]></Event>"
        f"<ChangeType><![CDATA[{change_type}]]></ChangeType><UserID><![CDATA[{user_id}]]></UserID>"
        f"<ExternalUserID><![CDATA[{external_user_id}]]></ExternalUserID>{extra}</xml>"
    )


def text_message(content: str = "hello", msg_id: str = "1234567890", from_user: str = "lisi") -> str:
    """An app text message plaintext."""
    return (
        f"<xml><ToUserName><![CDATA[{TEST_CORP_ID}]]></ToUserName><FromUserName><![CDATA[{from_user}]]></FromUserName>"
        f"<CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId><AgentID>1000002</AgentID></xml>"
    )


def params_of(query: str) -> dict[str, str]:
    """Split a callback query string into its parameters."""
    return {k: unquote(v) for k, v in (p.split("=", 1) for p in query.split("&"))}
