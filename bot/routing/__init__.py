"""Event routing: filters, routers, the dispatcher and the handler context."""

from bot.routing.context import HandlerContext
from bot.routing.filters import Filter, change_type, event_key_startswith, field_in, text_equals, text_matches
from bot.routing.router import Dispatcher, RegistrationClosed, Route, Router

__all__ = [
    "Dispatcher",
    "Filter",
    "HandlerContext",
    "RegistrationClosed",
    "Route",
    "Router",
    "change_type",
    "event_key_startswith",
    "field_in",
    "text_equals",
    "text_matches",
]
