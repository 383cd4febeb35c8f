"""Fuzz the callback path: envelope, signature, decryption, XML parsing and event typing.

Every mutated input must end as a typed event or a clean rejection (`CallbackRejected`, and
`XMLError` / `EventError` when the parser is called directly); anything else is a finding.

    python -m fuzz.fuzz_callback --iterations 20000 --seed 7
"""

from __future__ import annotations

import random
import sys
from functools import lru_cache
from urllib.parse import quote

from bot.config import Settings
from bot.coordination import MemoryCoordinator
from bot.db import Database
from bot.ingest import CallbackRejected, Ingestor
from bot.wecom.crypto import CallbackCrypto
from bot.wecom.events import Event, EventError, parse_event
from bot.wecom.simulator import callback_xml
from bot.wecom.xmlparse import XMLError, parse_xml
from fuzz.harness import Target, main, mutate

CORP_ID = "wwfuzzcorp"
TOKEN = "fuzz-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
AGENT_ID = 1000002
NOW = 1_700_000_000
CRYPTO = CallbackCrypto(TOKEN, AES_KEY, CORP_ID)


def seed_corpus() -> list[bytes]:
    """One valid plaintext of every callback shape the bot reads, plus an envelope."""
    plaintexts = [
        callback_xml.text_message(
            "lisi", "你好，想了解开户", agent_id=AGENT_ID, msg_id=1, corp_id=CORP_ID, create_time=NOW
        ),
        callback_xml.external_contact_event(
            "add_external_contact",
            "zhangsan",
            "wmA",
            state="XHS001",
            welcome_code="WC",
            corp_id=CORP_ID,
            create_time=NOW,
        ),
        callback_xml.external_contact_event(
            "del_external_contact",
            "zhangsan",
            "wmA",
            source="DELETE_BY_TRANSFER",
            corp_id=CORP_ID,
            create_time=NOW,
        ),
        callback_xml.external_contact_event(
            "transfer_fail", "lisi", "wmA", fail_reason="customer_refused", corp_id=CORP_ID, create_time=NOW
        ),
        callback_xml.external_tag_event("create", "etTAG", tag_type="tag", corp_id=CORP_ID, create_time=NOW),
        callback_xml.external_tag_event(
            "shuffle", "etGROUP", strategy_id="1", corp_id=CORP_ID, create_time=NOW
        ),
        callback_xml.kf_msg_or_event("wkKF", "TOKEN123", corp_id=CORP_ID, create_time=NOW),
        callback_xml.customer_acquisition_event(
            "friend_request", link_id="cawLINK", state="ch1", corp_id=CORP_ID, create_time=NOW
        ),
        callback_xml.template_card_event(
            "zhangsan",
            "ACCEPT",
            "lead_1",
            "RC",
            agent_id=AGENT_ID,
            selected_items={"q": ["a", "b"]},
            corp_id=CORP_ID,
            create_time=NOW,
        ),
    ]
    envelope = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[AAAA]]></Encrypt></xml>"
    declared = ['<?xml version="1.0" encoding="utf-8"?>' + p for p in plaintexts[:2]]
    return [p.encode() for p in plaintexts + declared] + [envelope.encode()]


@lru_cache(maxsize=1)
def ingestor() -> Ingestor:
    """An Ingestor for the fuzz corp; `decode` never touches its (in-memory) database."""
    settings = Settings().replace(
        wecom={
            "corp_id": CORP_ID,
            "token": TOKEN,
            "encoding_aes_key": AES_KEY,
            "agent_id": AGENT_ID,
            "agent_secret": "fuzz-agent-secret",
            "max_clock_skew_s": 300,
        },
        database={"url": "sqlite://"},
    )
    return Ingestor(settings, Database(settings.database), MemoryCoordinator(), clock=lambda: float(NOW))


def _envelope(encrypt: str) -> bytes:
    to_user = f"<ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
    return f"<xml>{to_user}<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()


def _decode(signature: str, timestamp: str, nonce: str, body: bytes) -> None:
    try:
        event, plaintext = ingestor().decode(signature, timestamp, nonce, body)
    except CallbackRejected as exc:
        assert exc.status in (400, 403, 413), exc.status
        return
    assert isinstance(event, Event) and isinstance(plaintext, str)
    assert len(event.dedupe_key) == 64


def check(data: bytes, rng: random.Random) -> None:
    """Run one input down the path `rng` picks: the parser, a signed plaintext, or a forged envelope."""
    mode = rng.randrange(4)
    text = data.decode("utf-8", "replace")
    if mode == 0:
        try:
            fields = parse_xml(data)
        except XMLError:
            return
        try:
            event = parse_event(fields)
        except EventError:
            return
        assert len(event.dedupe_key) == 64
        return
    nonce, timestamp = "fuzznonce", str(NOW)
    encrypt = CRYPTO.encrypt(text)
    signature = CRYPTO.sign(timestamp, nonce, encrypt)
    if mode == 1:
        # Authentic: WeCom signed whatever the plaintext is.
        _decode(signature, timestamp, nonce, _envelope(encrypt))
    elif mode == 2:
        # The body changed after signing.
        _decode(signature, timestamp, nonce, mutate(_envelope(encrypt), rng, [data]))
    else:
        # The query changed: signature, timestamp or nonce.
        query = [signature, timestamp, nonce]
        i = rng.randrange(3)
        query[i] = mutate(query[i].encode(), rng, [data]).decode("utf-8", "replace")
        _decode(
            quote(query[0], safe="") if rng.random() < 0.2 else query[0],
            query[1],
            query[2],
            _envelope(encrypt),
        )


TARGET = Target("fuzz_callback", seed_corpus(), check)

if __name__ == "__main__":
    sys.exit(main(TARGET))
