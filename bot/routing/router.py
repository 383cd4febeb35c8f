"""Framework-independent routing: routers hold handlers, a dispatcher runs the first match."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bot.routing.context import HandlerContext
from bot.routing.filters import Filter
from bot.wecom.events import Event

HandlerFn = Callable[[Event, HandlerContext], None]
# A batch handler takes several events of its route at once, each with its own context over one
# shared session, so it can load and write for all of them with a few statements.
BatchHandlerFn = Callable[[Sequence[tuple[Event, HandlerContext]]], None]
ErrorHook = Callable[[Event, HandlerContext, BaseException], None]

log = logging.getLogger("wecom_bot.router")


class RegistrationClosed(RuntimeError):
    """Handlers were registered after the dispatcher started serving."""


@dataclass(frozen=True)
class Route:
    """One handler: the event type it takes, the filter it needs, and its qualified name."""

    event_type: type[Event]
    filter: Filter | None
    handler: HandlerFn | None
    name: str
    batch_handler: BatchHandlerFn | None = None

    @property
    def batched(self) -> bool:
        """Whether the route takes its events in batches."""
        return self.batch_handler is not None

    def run(self, event: Event, ctx: HandlerContext) -> None:
        """Run the handler for one event (a batch handler gets a batch of one)."""
        if self.batch_handler is not None:
            self.batch_handler([(event, ctx)])
        else:
            assert self.handler is not None
            self.handler(event, ctx)

    def matches(self, event: Event) -> bool:
        """Whether this route takes the event."""
        return isinstance(event, self.event_type) and (self.filter is None or self.filter(event))


class Router:
    """A feature's handlers, in the order they are tried."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.routes: list[Route] = []
        self._frozen = False

    def on(self, event_type: type[Event], flt: Filter | None = None) -> Callable[[HandlerFn], HandlerFn]:
        """Register the decorated function for events of `event_type` that pass `flt`."""

        def register(fn: HandlerFn) -> HandlerFn:
            self._add(Route(event_type, flt, fn, f"{self.name}.{fn.__name__}"))
            return fn

        return register

    def on_batch(
        self, event_type: type[Event], flt: Filter | None = None
    ) -> Callable[[BatchHandlerFn], BatchHandlerFn]:
        """Register the decorated function for batches of matching events (hot paths under bursts)."""

        def register(fn: BatchHandlerFn) -> BatchHandlerFn:
            self._add(Route(event_type, flt, None, f"{self.name}.{fn.__name__}", batch_handler=fn))
            return fn

        return register

    def _add(self, route: Route) -> None:
        if self._frozen:
            raise RegistrationClosed(f"router {self.name!r} is serving; register handlers before start")
        self.routes.append(route)

    def freeze(self) -> None:
        """Refuse further registrations."""
        self._frozen = True


class Dispatcher:
    """Tries routers in the listed order and runs the first matching handler."""

    def __init__(self, routers: Sequence[Router], on_error: ErrorHook | None = None) -> None:
        for router in routers:
            router.freeze()
        self.routers = tuple(routers)
        self.routes = tuple(route for router in self.routers for route in router.routes)
        self.on_error = on_error

    def match(self, event: Event) -> Route | None:
        """Return the first route that takes the event, if any."""
        return next((route for route in self.routes if route.matches(event)), None)

    def dispatch(self, event: Event, ctx: HandlerContext) -> str | None:
        """Run the matching handler; return its name, or None when nothing matched."""
        route = self.match(event)
        if route is None:
            return None
        try:
            route.run(event, ctx)
        except Exception as exc:
            if self.on_error is not None:
                try:
                    self.on_error(event, ctx, exc)
                except Exception:  # the hook must never mask the handler's error
                    log.exception("error hook failed")
            raise
        return route.name

    def dispatch_batch(self, route: Route, items: Sequence[tuple[Event, HandlerContext]]) -> str:
        """Run a batch route's handler on events it matched; errors propagate (the caller retries singly)."""
        assert route.batch_handler is not None
        route.batch_handler(items)
        return route.name
