"""Router and filters: order is priority, filters compose, one error hook, registration freezes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bot.config import Settings
from bot.routing import (
    Dispatcher,
    HandlerContext,
    RegistrationClosed,
    Router,
    change_type,
    event_key_startswith,
    text_equals,
    text_matches,
)
from bot.wecom.events import Event, ExternalContactChange, TemplateCardEvent, TextMessage, parse_event
from bot.wecom.xmlparse import parse_xml
from tests.callbacks import contact_event, text_message


def ctx() -> HandlerContext:
    return HandlerContext(session=None, settings=Settings(), now=datetime.now(UTC), event_id=1)  # type: ignore[arg-type]


def text(content: str) -> Event:
    return parse_event(parse_xml(text_message(content)))


def test_first_matching_handler_in_listed_order_wins() -> None:
    calls: list[str] = []
    first, second = Router("first"), Router("second")

    @first.on(TextMessage, text_equals("订阅", "subscribe"))
    def subscribe(event: Event, c: HandlerContext) -> None:
        calls.append("subscribe")

    @second.on(TextMessage)
    def fallback(event: Event, c: HandlerContext) -> None:
        calls.append("fallback")

    dispatcher = Dispatcher([first, second])
    assert dispatcher.dispatch(text(" SUBSCRIBE "), ctx()) == "first.subscribe"
    assert dispatcher.dispatch(text("hello"), ctx()) == "second.fallback"
    assert dispatcher.dispatch(parse_event(parse_xml(contact_event())), ctx()) is None
    assert calls == ["subscribe", "fallback"]


def test_filters_compose_with_and_or_not() -> None:
    add = parse_event(parse_xml(contact_event("add_external_contact")))
    delete = parse_event(parse_xml(contact_event("del_follow_user")))
    is_add = change_type("add_external_contact")
    is_del = change_type("del_follow_user")
    assert is_add(add) and not is_add(delete)
    assert (is_add | is_del)(delete)
    assert not (is_add & is_del)(add)
    assert (~is_del)(add) and not (~is_del)(delete)
    assert text_matches(r"^[A-Z]{2,4}\d{3}$")(text("XHS888"))
    assert not text_matches(r"^[A-Z]{2,4}\d{3}$")(text("hello XHS888"))
    assert "change_type" in repr(is_add | is_del)


def test_card_clicks_route_by_button_key() -> None:
    router = Router("cards")
    seen: list[str] = []

    @router.on(TemplateCardEvent, event_key_startswith("ACCEPT:"))
    def accept(event: Event, c: HandlerContext) -> None:
        assert isinstance(event, TemplateCardEvent)
        seen.append(event.event_key)

    fields: dict[str, Any] = {
        "ToUserName": "ww",
        "FromUserName": "am1",
        "CreateTime": "1",
        "MsgType": "event",
        "Event": "template_card_event",
        "EventKey": "ACCEPT:42",
        "TaskId": "lead_42",
        "ResponseCode": "rc1",
    }
    assert Dispatcher([router]).dispatch(parse_event(fields), ctx()) == "cards.accept"
    assert seen == ["ACCEPT:42"]


def test_error_hook_sees_the_failure_and_the_error_propagates() -> None:
    router = Router("broken")
    hooked: list[str] = []

    @router.on(ExternalContactChange)
    def explode(event: Event, c: HandlerContext) -> None:
        raise ValueError("bad data")

    def hook(event: Event, c: HandlerContext, exc: BaseException) -> None:
        hooked.append(f"{event.kind}: {exc}")
        raise RuntimeError("hooks must not mask the error")

    dispatcher = Dispatcher([router], on_error=hook)
    with pytest.raises(ValueError, match="bad data"):
        dispatcher.dispatch(parse_event(parse_xml(contact_event())), ctx())
    assert hooked == ["change_external_contact: bad data"]


def test_registration_is_closed_once_serving() -> None:
    router = Router("late")
    Dispatcher([router])
    with pytest.raises(RegistrationClosed):

        @router.on(TextMessage)
        def too_late(event: Event, c: HandlerContext) -> None:
            pass


def test_shipped_handlers_build_into_a_dispatcher() -> None:
    from handlers import build_dispatcher

    names = [route.name for route in build_dispatcher().routes]
    assert "contacts.customers_added" in names
    assert len(names) == len(set(names))
