"""Properties of the callback path on hostile input: XML, envelopes, crypto, parsing, and storage.

Whatever arrives, the bot answers with a clear rejection or a typed event, never an unexpected
exception and never an expanded XML entity; authentic events survive the round trip exactly.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.config import Settings
from bot.coordination import Coordinator
from bot.db import Database
from bot.ingest import CallbackRejected, Ingestor, envelope_encrypt
from bot.wecom.crypto import CallbackCrypto, CryptoError, signature
from bot.wecom.events import Event, EventError, ExternalContactChange, TemplateCardEvent, parse_event
from bot.wecom.simulator import callback_xml
from bot.wecom.xmlparse import XMLError, parse_xml
from fuzz import fuzz_callback
from fuzz.harness import Target, main, run
from tests.conftest import TEST_AES_KEY, TEST_CORP_ID, TEST_TOKEN

NOW = 1_700_000_000
CRYPTO = CallbackCrypto(TEST_TOKEN, TEST_AES_KEY, TEST_CORP_ID)
PURE = settings(max_examples=100, deadline=None)
# Tests that use the database or the Ingestor share one fixture across examples on purpose.
WITH_FIXTURES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# ---- strategies ---------------------------------------------------------------------------------

# Characters an XML 1.0 document may carry, without CR (parsers turn it into LF).
xml_char = st.characters(
    codec="utf-8",
    exclude_characters="\r\ufffe\uffff",
    min_codepoint=0x9,
).filter(lambda c: c in "\t\n" or c >= " ")
xml_text = st.text(xml_char, max_size=40)
names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,11}\Z")
# WeCom's field names, so generated documents reach the event parser's branches.
field_names = st.sampled_from(
    [
        "ToUserName",
        "FromUserName",
        "CreateTime",
        "MsgType",
        "Event",
        "ChangeType",
        "UserID",
        "ExternalUserID",
        "State",
        "WelcomeCode",
        "TaskId",
        "EventKey",
        "ResponseCode",
        "SelectedItems",
        "SelectedItem",
        "QuestionKey",
        "OptionIds",
        "OptionId",
        "Token",
        "OpenKfId",
        "Id",
        "AgentID",
        "Content",
        "MsgId",
        "Encrypt",
    ]
)
field_values = st.one_of(
    xml_text,
    st.sampled_from(["event", "text", "change_external_contact", "template_card_event", "kf_msg_or_event"]),
    st.sampled_from(["change_external_tag", "customer_acquisition", "add_external_contact", "transfer_fail"]),
    st.integers(-(2**70), 2**70).map(str),
)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _content(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    leaf = st.one_of(
        field_values.map(_escape),
        field_values.map(callback_xml.cdata),
        st.sampled_from(
            ["&amp;", "&lt;", "&#65;", "&#x4E2D;", "&bogus;", "&#0;", "<!-- note -->", "<?pi x?>"]
        ),
    )
    element = st.tuples(st.one_of(field_names, names), st.lists(children, max_size=3)).map(
        lambda pair: f"<{pair[0]}>{''.join(pair[1])}</{pair[0]}>"
    )
    return st.one_of(leaf, element)


fragments = st.recursive(_content(st.just("")), _content, max_leaves=12)
prologues = st.sampled_from(
    [
        "",
        '<?xml version="1.0"?>',
        '<?xml version="1.0" encoding="utf-8"?>',
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
        '<?xml version="1.0" encoding="ascii"?>',
        "<!-- WeCom -->",
    ]
)
documents = st.builds(
    lambda prologue, root, body: f"{prologue}<{root}>{''.join(body)}</{root}>",
    prologues,
    st.sampled_from(["xml", "xml", "xml", "XML", "root"]),
    st.lists(fragments, max_size=6),
)


def _entity_attack(name: str, value: str, depth: int, system: str, parameter: bool) -> str:
    """A document declaring entities: a "billion laughs" chain `depth` deep, maybe external ones."""
    declarations = [f'<!ENTITY {name}0 "{value}">']
    declarations += [f'<!ENTITY {name}{i} "{f"&{name}{i - 1};" * 4}">' for i in range(1, depth + 1)]
    if system:
        declarations.append(f'<!ENTITY ext SYSTEM "{system}">')
    if parameter:
        declarations.append(f'<!ENTITY % pe "{value}"> %pe;')
    body = f"<ToUserName>&{name}{depth};</ToUserName>" + ("<Content>&ext;</Content>" if system else "")
    return f"<!DOCTYPE xml [{''.join(declarations)}]><xml>{body}</xml>"


entity_attacks = st.builds(
    _entity_attack,
    names,
    st.text(st.sampled_from("abcXYZ0123"), min_size=1, max_size=20),
    st.integers(0, 10),
    st.sampled_from(["", "file:///etc/passwd", "http://127.0.0.1:1/x"]),
    st.booleans(),
)

# What WeCom itself puts into plaintext fields: anything but control characters, no CR.
field_text = st.text(xml_char.filter(lambda c: c not in "\t\n"), min_size=1, max_size=40)


# ---- XML --------------------------------------------------------------------------------------------


@PURE
@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_xml_error(body: bytes) -> None:
    try:
        fields = parse_xml(body)
    except XMLError:
        return
    assert isinstance(fields, dict)


@PURE
@given(document=documents, as_bytes=st.booleans())
@example(document="<xml><a>1</a>text<b><![CDATA[x]]]]><![CDATA[>]]></b></xml>", as_bytes=True)
def test_xml_like_documents_parse_to_fields_or_raise_xml_error(document: str, as_bytes: bool) -> None:
    try:
        fields = parse_xml(document.encode() if as_bytes else document)
    except XMLError:
        return
    assert isinstance(fields, dict) and fields


@PURE
@given(attack=entity_attacks)
def test_entities_and_dtds_are_always_refused(attack: str) -> None:
    with pytest.raises(XMLError):
        parse_xml(attack)
    with pytest.raises(XMLError):
        parse_xml(attack.encode())


def test_an_unknown_declared_encoding_is_an_xml_error() -> None:
    with pytest.raises(XMLError):
        parse_xml(b'<?xml version="1.0" encoding="x-no-such-codec"?><xml><A>1</A></xml>')


# ---- events ---------------------------------------------------------------------------------------


@PURE
@given(document=documents)
def test_parsed_fields_become_an_event_or_a_clear_event_error(document: str) -> None:
    try:
        fields = parse_xml(document)
    except XMLError:
        return
    try:
        event = parse_event(fields)
    except EventError:
        return
    assert isinstance(event, Event)
    assert len(event.dedupe_key) == 64 and isinstance(event.subject, str)


@PURE
@given(
    user=field_text,
    key=field_text,
    task=field_text,
    code=field_text,
    selected=st.dictionaries(field_text, st.lists(field_text, min_size=1, max_size=3), max_size=3),
)
def test_template_card_events_round_trip_exactly(
    user: str, key: str, task: str, code: str, selected: dict[str, list[str]]
) -> None:
    xml = callback_xml.template_card_event(
        user,
        key,
        task,
        code,
        corp_id=TEST_CORP_ID,
        agent_id=1000002,
        selected_items=selected,
        create_time=NOW,
    )
    event = parse_event(parse_xml(xml))
    assert isinstance(event, TemplateCardEvent)
    assert (event.from_user, event.event_key, event.task_id, event.response_code) == (user, key, task, code)
    assert event.selected == selected and event.create_time == NOW


@PURE
@given(
    change=st.sampled_from(["add_external_contact", "add_half_external_contact"]),
    user=field_text,
    external=field_text,
    state=field_text,
    welcome=field_text,
)
def test_contact_events_round_trip_exactly(
    change: str, user: str, external: str, state: str, welcome: str
) -> None:
    xml = callback_xml.external_contact_event(
        change, user, external, corp_id=TEST_CORP_ID, state=state, welcome_code=welcome, create_time=NOW
    )
    event = parse_event(parse_xml(xml))
    assert isinstance(event, ExternalContactChange)
    assert (event.change_type, event.user_id, event.external_user_id) == (change, user, external)
    assert (event.state, event.welcome_code, event.subject) == (state, welcome, external)


# ---- crypto ---------------------------------------------------------------------------------------


@PURE
@given(plaintext=st.text(st.characters(codec="utf-8"), max_size=300))
def test_encrypt_then_decrypt_returns_the_plaintext(plaintext: str) -> None:
    assert CRYPTO.decrypt(CRYPTO.encrypt(plaintext)) == plaintext


@PURE
@given(plaintext=st.text(st.characters(codec="utf-8"), max_size=50), other=names)
def test_an_envelope_for_another_corp_is_refused(plaintext: str, other: str) -> None:
    foreign = CallbackCrypto(TEST_TOKEN, TEST_AES_KEY, f"{TEST_CORP_ID}{other}")
    with pytest.raises(CryptoError):
        CRYPTO.decrypt(foreign.encrypt(plaintext))


@PURE
@given(encrypt=st.one_of(st.text(max_size=120), st.from_regex(r"\A[A-Za-z0-9+/]{0,200}={0,2}\Z")))
def test_arbitrary_encrypt_values_decrypt_or_raise_crypto_error(encrypt: str) -> None:
    try:
        plaintext = CRYPTO.decrypt(encrypt)
    except CryptoError:
        return
    assert isinstance(plaintext, str)


@PURE
@given(
    plaintext=field_text,
    timestamp=st.integers(0, 2**31).map(str),
    nonce=st.from_regex(r"\A[A-Za-z0-9]{1,32}\Z"),
    where=st.integers(0, 10_000),
    replacement=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
)
def test_a_tampered_payload_fails_the_signature(
    plaintext: str, timestamp: str, nonce: str, where: int, replacement: str
) -> None:
    encrypt = CRYPTO.encrypt(plaintext)
    good = CRYPTO.sign(timestamp, nonce, encrypt)
    assert CRYPTO.verify(good, timestamp, nonce, encrypt)
    i = where % len(encrypt)
    if encrypt[i] == replacement:
        return
    tampered = encrypt[:i] + replacement + encrypt[i + 1 :]
    assert not CRYPTO.verify(good, timestamp, nonce, tampered)
    assert not CRYPTO.verify(good, str(int(timestamp) + 1), nonce, encrypt)
    assert not CRYPTO.verify(signature("another-token", timestamp, nonce, encrypt), timestamp, nonce, encrypt)


# ---- the ingest pipeline -----------------------------------------------------------------------------


@pytest.fixture
def ingestor(settings: Settings, db: Database, coordinator: Coordinator) -> Iterator[Ingestor]:
    yield Ingestor(settings, db, coordinator, clock=lambda: float(NOW))


def signed(plaintext: str, timestamp: int = NOW) -> tuple[str, str, str, bytes]:
    """(msg_signature, timestamp, nonce, body) for a POST carrying `plaintext`, as WeCom signs it."""
    encrypt = CRYPTO.encrypt(plaintext)
    ts, nonce = str(timestamp), "n0nce"
    body = (
        f"<xml><ToUserName><![CDATA[{TEST_CORP_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    )
    return CRYPTO.sign(ts, nonce, encrypt), ts, nonce, body.encode()


@WITH_FIXTURES
@given(
    msg_signature=st.one_of(st.text(max_size=45), st.from_regex(r"\A[0-9a-f]{40}\Z")),
    timestamp=st.one_of(st.text(max_size=24), st.integers(-(2**40), 2**40).map(str)),
    nonce=st.text(max_size=70),
    body=st.one_of(st.binary(max_size=200), documents.map(str.encode)),
)
def test_forged_requests_are_rejected_cleanly(
    ingestor: Ingestor, msg_signature: str, timestamp: str, nonce: str, body: bytes
) -> None:
    try:
        ingestor.decode(msg_signature, timestamp, nonce, body)
    except CallbackRejected as exc:
        assert exc.status in (400, 403, 413)
    else:
        pytest.fail("an unsigned request was accepted")


@WITH_FIXTURES
@given(document=documents)
def test_authentic_envelopes_of_any_plaintext_give_an_event_or_a_400(
    ingestor: Ingestor, document: str
) -> None:
    try:
        event, plaintext = ingestor.decode(*signed(document))
    except CallbackRejected as exc:
        assert exc.status == 400
        return
    assert plaintext == document and isinstance(event, Event)


@PURE
@given(
    encrypt=st.from_regex(r"\A[A-Za-z0-9+/]{1,64}={0,2}\Z"),
    to_user=st.one_of(st.none(), st.from_regex(r"\A[\w.@-]{0,20}\Z")),
    agent=st.one_of(st.none(), st.integers(0, 10**9).map(str)),
    cdata_agent=st.booleans(),
)
def test_the_envelope_fast_path_reads_what_the_parser_reads(
    encrypt: str, to_user: str | None, agent: str | None, cdata_agent: bool
) -> None:
    body = "<xml>"
    if to_user is not None:
        body += f"<ToUserName><![CDATA[{to_user}]]></ToUserName>"
    body += f"<Encrypt><![CDATA[{encrypt}]]></Encrypt>"
    if agent is not None:
        body += f"<AgentID>{callback_xml.cdata(agent) if cdata_agent else agent}</AgentID>"
    body += "</xml>"
    assert envelope_encrypt(body.encode()) == parse_xml(body)["Encrypt"] == encrypt


@WITH_FIXTURES
@given(user=field_text, external=field_text, state=field_text)
def test_a_retried_callback_is_stored_once(ingestor: Ingestor, user: str, external: str, state: str) -> None:
    xml = callback_xml.external_contact_event(
        "add_external_contact", user, external, corp_id=TEST_CORP_ID, state=state, create_time=NOW
    )
    first = ingestor.ingest(*signed(xml))
    again = ingestor.ingest(*signed(xml))
    assert (
        not again.stored and again.dedupe_key == first.dedupe_key and again.kind == "change_external_contact"
    )


def test_an_absurd_timestamp_is_rejected_cleanly(ingestor: Ingestor) -> None:
    msg_signature, _, nonce, body = signed(
        callback_xml.text_message("lisi", "hi", corp_id=TEST_CORP_ID, agent_id=1)
    )
    with pytest.raises(CallbackRejected):
        ingestor.decode(msg_signature, "9" * 400, nonce, body)


# ---- the fuzz target --------------------------------------------------------------------------------


def test_the_callback_fuzzer_runs_clean_for_a_few_hundred_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert fuzz_callback.main(fuzz_callback.TARGET, ["--iterations", "400", "--seed", "1"]) == 0
    assert "400 inputs, 0 findings" in capsys.readouterr().out


def test_the_callback_fuzzer_finds_nothing_in_a_longer_run() -> None:
    assert run(fuzz_callback.TARGET, iterations=300, seed=5, quiet=True) == 0


def test_the_fuzz_harness_reports_a_crashing_target() -> None:
    def check(data: bytes, rng: random.Random) -> None:
        if b"<" in data:
            raise RuntimeError("boom")

    target = Target("crashing", [b"<xml/>", b"plain"], check)
    assert run(target, iterations=50, seed=0, quiet=True) > 0
    assert main(target, ["--iterations", "50", "--seed", "0", "--quiet"]) == 1
