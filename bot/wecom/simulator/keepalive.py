"""The simulator's HTTP server: werkzeug's threaded server, but with HTTP/1.1 keep-alive.

WeCom's API servers keep connections open, and a bot's pooled client expects to reuse them.
werkzeug's development server closes every connection (it cannot drain an unread request body
before the next request line), so each API call would cost a TCP connect and a server thread.
Here a request whose body length is known (Content-Length, no chunking, no `Expect`) is read in
full before the app runs, and answered with an exact Content-Length on the same connection;
anything else goes through werkzeug's own handling and closes, as before.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

log = logging.getLogger("bot.wecom.simulator.server")

IDLE_TIMEOUT_S = 15.0  # an idle kept-open connection is closed after this
_HOP_BY_HOP = {"connection", "content-length", "keep-alive", "transfer-encoding"}


class KeepAliveRequestHandler(WSGIRequestHandler):
    """Serves several requests per connection when their bodies are delimited by Content-Length."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    # An answer goes out as one segment, at once: on a kept-open connection a second small segment
    # would wait for the client's delayed ACK (Nagle), about 40 ms per call.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024
    max_body = 2 * 1024 * 1024

    def setup(self) -> None:
        """Register the connection so the server can close it on shutdown."""
        super().setup()
        server = self.server
        if isinstance(server, KeepAliveServer):
            server.track(self.connection)

    def finish(self) -> None:
        """Forget the connection."""
        server = self.server
        if isinstance(server, KeepAliveServer):
            server.untrack(self.connection)
        super().finish()

    def log(self, type: str, message: str, *args: Any) -> None:
        """Log a request line at DEBUG and server errors at WARNING."""
        log.log(logging.WARNING if type == "error" else logging.DEBUG, message, *args)

    def _body_length(self) -> int | None:
        """The request body's length when the connection can stay open after it, else None."""
        if self.close_connection or self.request_version != "HTTP/1.1" or self.command == "HEAD":
            return None
        if "Transfer-Encoding" in self.headers or "Expect" in self.headers:
            return None
        raw = self.headers.get("Content-Length", "0").strip()
        if not raw.isdigit() or int(raw) > self.max_body:
            return None
        return int(raw)

    def run_wsgi(self) -> None:
        """Run the app on a fully read request; answer with an exact length and keep the connection."""
        length = self._body_length()
        if length is None:
            super().run_wsgi()  # werkzeug's path: answers with "Connection: close"
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return
        environ = self.make_environ()
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(length)
        try:
            status, headers, data = _call(self.server.app, environ)
        except Exception:
            log.exception("simulator error on %s %s", self.command, self.path)
            status, headers, data = "500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")], b"error"
            self.close_connection = True
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


def _call(
    app: Callable[..., Iterable[bytes]], environ: dict[str, Any]
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI app to completion; return its status line, headers and whole body."""
    started: list[Any] = []
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started[:] = [status, headers]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the app did not call start_response")
    return started[0], started[1], b"".join(chunks)


class KeepAliveServer(ThreadedWSGIServer):
    """A threaded WSGI server whose open connections are closed when it shuts down."""

    def __init__(self, host: str, port: int, app: Any) -> None:
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self.accepted = 0  # connections accepted so far
        super().__init__(host, port, app, handler=KeepAliveRequestHandler)

    def track(self, conn: socket.socket) -> None:
        """Remember an accepted connection."""
        with self._connections_lock:
            self._connections.add(conn)
            self.accepted += 1

    def untrack(self, conn: socket.socket) -> None:
        """Forget a finished connection."""
        with self._connections_lock:
            self._connections.discard(conn)

    def close_connections(self) -> None:
        """Shut down every open connection, so clients see the server gone instead of an idle socket."""
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
