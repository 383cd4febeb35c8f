"""Parsing callbacks into typed events, dedupe keys, and hardened XML."""

from __future__ import annotations

import pytest

from bot.wecom.events import (
    ChangeType,
    ExternalContactChange,
    ExternalTagChange,
    KfMsgOrEvent,
    TemplateCardEvent,
    TextMessage,
    UnknownEvent,
    parse_event,
)
from bot.wecom.simulator import callback_xml
from bot.wecom.xmlparse import XMLError, parse_xml
from tests.callbacks import contact_event, text_message


@pytest.mark.parametrize("change", list(ChangeType))
def test_every_contact_change_type_parses(change: ChangeType) -> None:
    xml = contact_event(change.value, state=None, welcome_code=None)
    event = parse_event(parse_xml(xml))
    assert isinstance(event, ExternalContactChange)
    assert event.change_type == change.value
    assert event.user_id == "zhangsan" and event.external_user_id == "wmEXT0001"


def test_add_contact_carries_state_and_welcome_code() -> None:
    event = parse_event(parse_xml(contact_event(state="DY001", welcome_code="WC")))
    assert isinstance(event, ExternalContactChange)
    assert (event.state, event.welcome_code, event.create_time) == ("DY001", "WC", 1700000000)


def test_missing_state_is_tolerated() -> None:
    event = parse_event(parse_xml(contact_event(state=None)))
    assert isinstance(event, ExternalContactChange) and event.state is None


def test_simulator_built_callbacks_parse_to_their_types() -> None:
    corp = "ww1"
    cases = [
        (callback_xml.text_message("lisi", "你好", corp_id=corp, agent_id=1), TextMessage),
        (
            callback_xml.external_contact_event(
                "transfer_fail", "zhangsan", "wm1", corp_id=corp, fail_reason="customer_refused"
            ),
            ExternalContactChange,
        ),
        (callback_xml.external_tag_event("create", "et1", corp_id=corp, tag_type="tag"), ExternalTagChange),
        (callback_xml.kf_msg_or_event("wk1", "ENCTOKEN", corp_id=corp), KfMsgOrEvent),
        (
            callback_xml.template_card_event(
                "am1", "ACCEPT", "task1", "rc1", corp_id=corp, agent_id=1, selected_items={"q1": ["a", "b"]}
            ),
            TemplateCardEvent,
        ),
    ]
    for xml, kind in cases:
        event = parse_event(parse_xml(xml))
        assert isinstance(event, kind), xml
    card = parse_event(parse_xml(cases[-1][0]))
    assert isinstance(card, TemplateCardEvent) and card.selected == {"q1": ["a", "b"]}
    failed = parse_event(parse_xml(cases[1][0]))
    assert isinstance(failed, ExternalContactChange) and failed.fail_reason == "customer_refused"


def test_unknown_event_types_parse_as_unknown() -> None:
    event = parse_event(parse_xml("<xml><MsgType>event</MsgType><Event>enter_agent</Event></xml>"))
    assert isinstance(event, UnknownEvent) and event.event == "enter_agent"


def test_dedupe_key_is_stable_across_retries_and_distinguishes_pairs() -> None:
    a1 = parse_event(parse_xml(contact_event(external_user_id="wmA")))
    a2 = parse_event(parse_xml(contact_event(external_user_id="wmA")))
    b = parse_event(parse_xml(contact_event(external_user_id="wmB")))
    assert a1.dedupe_key == a2.dedupe_key != b.dedupe_key
    assert len(a1.dedupe_key) == 64
    m1 = parse_event(parse_xml(text_message("x", msg_id="1")))
    m2 = parse_event(parse_xml(text_message("x", msg_id="2")))
    assert m1.dedupe_key != m2.dedupe_key


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<xml><a></xml>",
        b'<!DOCTYPE x [<!ENTITY a "b">]><xml><a>&a;</a></xml>',
        b'<!DOCTYPE x SYSTEM "http://127.0.0.1/x.dtd"><xml/>',
        b"<root><a>1</a></root>",
    ],
)
def test_hostile_or_malformed_xml_is_refused(body: bytes) -> None:
    with pytest.raises(XMLError):
        parse_xml(body)


def test_cdata_content_is_kept_verbatim() -> None:
    fields = parse_xml("<xml><Content><![CDATA[  <b>保本</b> & 稳赚  ]]></Content></xml>")
    assert fields["Content"] == "  <b>保本</b> & 稳赚  "
