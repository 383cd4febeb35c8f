"""The callback endpoint: URL check, persist-then-ack, dedupe, and refusal of every kind of bad input."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from bot.app import create_app
from bot.ingest import CallbackRejected
from bot.services import Services
from bot.wecom.crypto import CallbackCrypto
from models.inbox import EventStatus, InboundEvent
from tests.callbacks import CRYPTO, contact_event, envelope, text_message
from tests.conftest import TEST_AES_KEY, TEST_TOKEN


@pytest.fixture
def client(services: Services) -> FlaskClient:
    return create_app(services=services).test_client()


def stored(services: Services) -> int:
    with services.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(InboundEvent)) or 0)


def test_url_verification_returns_decrypted_echostr(client: FlaskClient) -> None:
    ts, nonce = str(int(time.time())), "12345"
    echostr = CRYPTO.encrypt("5927782489442352469")
    query = urlencode(
        {
            "msg_signature": CRYPTO.sign(ts, nonce, echostr),
            "timestamp": ts,
            "nonce": nonce,
            "echostr": echostr,
        }
    )
    resp = client.get(f"/wecom/callback?{query}")
    assert resp.status_code == 200
    assert resp.get_data(as_text=True) == "5927782489442352469"


def test_url_verification_with_bad_signature_is_refused(client: FlaskClient) -> None:
    ts = str(int(time.time()))
    echostr = CRYPTO.encrypt("42")
    query = urlencode({"msg_signature": "0" * 40, "timestamp": ts, "nonce": "1", "echostr": echostr})
    resp = client.get(f"/wecom/callback?{query}")
    assert resp.status_code == 403
    assert "signature" in resp.get_data(as_text=True)


def test_callback_is_persisted_then_acknowledged(client: FlaskClient, services: Services) -> None:
    query, body = envelope(contact_event())
    resp = client.post(f"/wecom/callback?{query}", data=body, content_type="text/xml")
    assert resp.status_code == 200
    assert resp.get_data(as_text=True) == "success"
    with services.db.transaction() as session:
        row = session.scalars(select(InboundEvent)).one()
    assert row.kind == "change_external_contact"
    assert row.status == EventStatus.PENDING
    assert row.payload["ExternalUserID"] == "wmEXT0001"
    assert row.payload["State"] == "XHS888"
    assert "<ChangeType>" in row.raw_xml


def test_retried_callback_is_stored_once(client: FlaskClient, services: Services) -> None:
    plaintext = contact_event()
    for _ in range(4):  # WeCom re-encrypts each retry with a fresh random prefix and nonce
        query, body = envelope(plaintext)
        assert client.post(f"/wecom/callback?{query}", data=body).status_code == 200
    assert stored(services) == 1


def test_retry_after_fast_path_cache_loss_is_still_stored_once(
    client: FlaskClient, services: Services
) -> None:
    plaintext = text_message(msg_id="777")
    query, body = envelope(plaintext)
    client.post(f"/wecom/callback?{query}", data=body)
    services.coordinator.close()  # the database constraint, not the cache, is the guarantee
    from bot.coordination import MemoryCoordinator

    services.coordinator = MemoryCoordinator()
    services.__dict__.pop("ingestor", None)
    query, body = envelope(plaintext)
    assert client.post(f"/wecom/callback?{query}", data=body).status_code == 200
    assert stored(services) == 1


def test_same_second_events_for_different_customers_are_both_kept(
    client: FlaskClient, services: Services
) -> None:
    for external in ("wmA", "wmB"):
        query, body = envelope(contact_event(external_user_id=external, create_time=1700000000))
        client.post(f"/wecom/callback?{query}", data=body)
    assert stored(services) == 2


def _bad_requests() -> list[tuple[str, str, bytes, int]]:
    good_query, good_body = envelope(text_message())
    ts = str(int(time.time()))
    encrypt = CRYPTO.encrypt(text_message())

    def q(sig: str, timestamp: str = ts, nonce: str = "n1") -> str:
        return urlencode({"msg_signature": sig, "timestamp": timestamp, "nonce": nonce})

    def body_for(enc: str) -> bytes:
        return f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>".encode()

    other_corp = CallbackCrypto(TEST_TOKEN, TEST_AES_KEY, "ww_other_corp")
    other_enc = other_corp.encrypt(text_message())
    stale = str(int(time.time()) - 3600)
    garbage = "!!!not-base64!!!"
    short = "QUJD"  # valid base64, wrong length
    billion_laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
        b"<xml><Encrypt>&lol2;</Encrypt></xml>"
    )
    xxe = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Encrypt>&e;</Encrypt></xml>'
    wrong_inner = CRYPTO.encrypt("<notxml")
    return [
        ("missing-query", "", good_body, 400),
        ("wrong-signature", q("f" * 40), body_for(encrypt), 403),
        ("signature-for-other-body", good_query, body_for(encrypt), 403),
        ("stale-timestamp", q(CRYPTO.sign(stale, "n1", encrypt), stale), body_for(encrypt), 403),
        ("non-numeric-timestamp", q("a" * 40, "yesterday"), body_for(encrypt), 400),
        ("wrong-receive-id", q(CRYPTO.sign(ts, "n1", other_enc)), body_for(other_enc), 403),
        ("broken-base64", q(CRYPTO.sign(ts, "n1", garbage)), body_for(garbage), 400),
        ("bad-length", q(CRYPTO.sign(ts, "n1", short)), body_for(short), 400),
        ("broken-xml", good_query, b"<xml><Encrypt>", 400),
        ("not-xml-root", good_query, b"<html><Encrypt>x</Encrypt></html>", 400),
        ("no-encrypt", good_query, b"<xml><ToUserName>x</ToUserName></xml>", 400),
        ("entity-expansion", good_query, billion_laughs, 400),
        ("external-entity", good_query, xxe, 400),
        ("decrypts-to-garbage", q(CRYPTO.sign(ts, "n1", wrong_inner)), body_for(wrong_inner), 400),
        ("oversized-body", good_query, b"<xml>" + b"a" * 70000 + b"</xml>", 413),
    ]


@pytest.mark.parametrize(
    ("name", "query", "body", "status"),
    _bad_requests(),
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",
)
def test_bad_input_is_refused_and_nothing_is_stored(
    client: FlaskClient, services: Services, name: str, query: str, body: bytes, status: int
) -> None:
    resp = client.post(f"/wecom/callback?{query}", data=body)
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.get_data(as_text=True)  # a short reason
    assert stored(services) == 0


def test_clock_skew_check_can_be_disabled(services: Services) -> None:
    services.settings = services.settings.replace(wecom={"max_clock_skew_s": 0})
    client = create_app(services=services).test_client()
    query, body = envelope(text_message(), timestamp=1411525903)
    assert client.post(f"/wecom/callback?{query}", data=body).status_code == 200
    assert stored(services) == 1


def test_unknown_events_are_stored_for_the_record(client: FlaskClient, services: Services) -> None:
    plaintext = (
        "<xml><ToUserName>ww_test_corp</ToUserName><FromUserName>sys</FromUserName><CreateTime>1</CreateTime>"
        "<MsgType>event</MsgType><Event>change_external_chat</Event><ChatId>wr1</ChatId></xml>"
    )
    query, body = envelope(plaintext)
    assert client.post(f"/wecom/callback?{query}", data=body).status_code == 200
    with services.db.transaction() as session:
        assert session.scalars(select(InboundEvent.kind)).one() == "unknown"


def test_callback_answers_503_when_not_configured(services: Services) -> None:
    services.settings = services.settings.replace(wecom={"token": ""})
    client = create_app(services=services).test_client()
    query, body = envelope(text_message())
    assert client.post(f"/wecom/callback?{query}", data=body).status_code == 503


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    resp = client.get("/readyz")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["checks"] == {"database": "ok", "coordination": "ok", "callback": "ok"}


def test_envelope_fast_path_reads_only_wecoms_exact_shape() -> None:
    from bot.ingest import _ENVELOPE, envelope_encrypt

    enc = CRYPTO.encrypt(text_message())
    shapes = [
        f"<xml><ToUserName><![CDATA[ww_test_corp]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>",
        f"<xml>\n<ToUserName><![CDATA[ww1]]></ToUserName>\n<Encrypt><![CDATA[{enc}]]></Encrypt>\n"
        "<AgentID><![CDATA[1000002]]></AgentID>\n</xml>",
        f"<xml><Encrypt><![CDATA[{enc}]]></Encrypt><AgentID>1</AgentID></xml>",
    ]
    for body in shapes:
        assert _ENVELOPE.match(body.encode()) and envelope_encrypt(body.encode()) == enc
    hostile = f'<!DOCTYPE x [<!ENTITY a "b">]><xml><Encrypt><![CDATA[{enc}]]></Encrypt></xml>'.encode()
    assert _ENVELOPE.match(hostile) is None  # not the usual shape: the hardened parser decides
    with pytest.raises(CallbackRejected) as refused:
        envelope_encrypt(hostile)
    assert refused.value.status == 400
    reordered = f"<xml><Encrypt>{enc}</Encrypt><ToUserName>ww1</ToUserName></xml>".encode()
    assert _ENVELOPE.match(reordered) is None and envelope_encrypt(reordered) == enc  # parsed instead
