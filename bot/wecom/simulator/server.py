"""The simulator as a real HTTP server on 127.0.0.1, plus callback delivery to the bot under test."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from types import TracebackType
from typing import Any

from werkzeug.wrappers import Request, Response

from bot.wecom.crypto import CallbackCrypto
from bot.wecom.simulator import controls
from bot.wecom.simulator.callbacks import CallbackResult, CallbackSender, VerifyResult
from bot.wecom.simulator.config import SimulatorConfig
from bot.wecom.simulator.corp import ApiCall, SimulatedCorp, errmsg
from bot.wecom.simulator.keepalive import KeepAliveRequestHandler, KeepAliveServer
from bot.wecom.simulator.parts import Outgoing

log = logging.getLogger(__name__)

_API_PREFIX = "/cgi-bin/"
_CONTROL_PREFIX = "/_sim/"
_MAX_BODY = KeepAliveRequestHandler.max_body


def _json_response(status: int, body: Any) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json")


class Simulator(SimulatedCorp):
    """A WeCom simulator served over HTTP; `start()` returns its base URL (use it as api_base_url)."""

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(config)
        self.host = host
        self.port = port
        self.crypto = CallbackCrypto(self.config.token, self.config.encoding_aes_key, self.config.corp_id)
        self._stopping = threading.Event()
        self._callbacks = CallbackSender(self.crypto, self.config.corp_id, self._stopping)
        self._server: KeepAliveServer | None = None
        self._thread: threading.Thread | None = None
        self._bot_url: str | None = None
        self._bot_options: dict[str, Any] = {}

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Serve in a background thread; return the base URL (port 0 picks a free port)."""
        if self._server is not None:
            return self.base_url
        self._stopping.clear()
        # Keep-alive, as WeCom's API servers do: a pooled client reuses its connections.
        server = KeepAliveServer(self.host, self.port, self.wsgi_app)
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="wecom-simulator", daemon=True
        )
        self._thread.start()
        log.info("WeCom simulator listening on %s", self.base_url)
        return self.base_url

    def stop(self) -> None:
        """Stop serving and release the port and HTTP sessions."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._callbacks.close()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted so far (a pooled client reuses one for many calls)."""
        return self._server.accepted if self._server is not None else 0

    @property
    def base_url(self) -> str:
        """`http://host:port` of the running server (what the bot's `api_base_url` should be)."""
        return f"http://{self.host}:{self.port}"

    # ---- callbacks to the bot -----------------------------------------------------------------

    def send_callback(
        self,
        bot_url: str,
        xml_plaintext: str,
        *,
        retries: int = 3,
        timeout_s: float = 5.0,
        retry_interval_s: float = 0.5,
        duplicate: bool = False,
        with_agent_id: bool = True,
    ) -> CallbackResult:
        """Encrypt, sign and POST a callback to the bot; retry on timeout or non-200 like WeCom."""
        return self._callbacks.send(
            bot_url,
            xml_plaintext,
            agent_id=self.config.agent_id if with_agent_id else None,
            retries=retries,
            timeout_s=timeout_s,
            retry_interval_s=retry_interval_s,
            duplicate=duplicate,
        )

    def connect_bot(
        self,
        url: str,
        *,
        retries: int = 3,
        timeout_s: float = 5.0,
        retry_interval_s: float = 0.5,
        duplicate: bool = False,
    ) -> None:
        """Deliver every callback simulated clients cause (adds, deletes, kf messages...) to `url`."""
        with self._lock:
            self._bot_url = url
            self._bot_options = {
                "retries": retries,
                "timeout_s": timeout_s,
                "retry_interval_s": retry_interval_s,
                "duplicate": duplicate,
            }

    def disconnect_bot(self) -> None:
        """Stop delivering callbacks; they are still recorded in `emitted_callbacks`."""
        with self._lock:
            self._bot_url = None

    def _deliver(self, item: Outgoing) -> None:
        with self._lock:
            url, options = self._bot_url, dict(self._bot_options)
        if url is not None and not self._stopping.is_set():
            self.send_callback(url, item.xml, with_agent_id=item.with_agent_id, **options)

    def verify_url(self, bot_url: str) -> VerifyResult:
        """Run the GET echostr URL check against the bot (echo required within 1 s)."""
        return self._callbacks.verify_url(bot_url)

    @property
    def callbacks_sent(self) -> list[CallbackResult]:
        """Every callback delivered so far, oldest first."""
        return self._callbacks.log

    # ---- HTTP ---------------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Any) -> Any:
        """The WSGI entry point: WeCom API under /cgi-bin/, test controls under /_sim/."""
        request = Request(environ)
        request.max_content_length = _MAX_BODY
        path = request.path
        if path.startswith(_API_PREFIX):
            response = self._api(request, path.removeprefix(_API_PREFIX).strip("/"))
        elif path.startswith(_CONTROL_PREFIX):
            response = self._control(request, path.removeprefix(_CONTROL_PREFIX).strip("/"))
        else:
            response = Response("not found", status=404, mimetype="text/plain")
        return response(environ, start_response)

    def _api(self, request: Request, api: str) -> Response:
        if not self.knows(api):
            return Response(
                f"the simulator does not implement /cgi-bin/{api}", status=404, mimetype="text/plain"
            )
        call = ApiCall(
            api=api,
            method=request.method,
            query=request.args.to_dict(),
            body=request.get_data(cache=False),
            remote_addr=request.remote_addr or "",
        )
        with self.in_flight(api) as allowed:
            if not allowed:
                return _json_response(200, {"errcode": 45033, "errmsg": errmsg(45033)})
            delay = self.latency_for(api)
            if delay and self._stopping.wait(delay):
                return Response("simulator stopping", status=503, mimetype="text/plain")
            status, body = self.handle(call)
        return _json_response(status, body)

    def _control(self, request: Request, action: str) -> Response:
        # A small surface for driving a simulator that runs as its own process.
        if action == "state" and request.method == "GET":
            return _json_response(
                200,
                {
                    "gettoken_calls": self.gettoken_calls,
                    "sent_app_messages": [asdict(m) for m in self.sent_app_messages],
                    "dropped_app_messages": [asdict(d) for d in self.dropped_app_messages],
                    **controls.state(self),
                },
            )
        if request.method != "POST":
            return Response("method not allowed", status=405, mimetype="text/plain")
        try:
            data = json.loads(request.get_data(cache=False) or b"{}")
        except ValueError:
            return _json_response(400, {"error": "body must be JSON"})
        if not isinstance(data, dict):
            return _json_response(400, {"error": "body must be a JSON object"})
        try:
            if action == "invalidate_tokens":
                self.invalidate_tokens(data.get("app"))
            elif action == "fault":
                self.inject_fault(str(data["api"]), int(data["errcode"]), times=int(data.get("times", 1)))
            elif action == "latency":
                self.set_latency(str(data["api"]), float(data["seconds"]))
            elif action == "clear_faults":
                self.clear_faults()
            elif action == "advance":
                self.advance(float(data["seconds"]))
            elif action == "callback":
                result = self.send_callback(str(data["url"]), str(data["xml"]))
                return _json_response(
                    200, {"delivered": result.delivered, "status_codes": result.status_codes}
                )
            elif action == "connect_bot":
                options = {
                    k: data[k] for k in ("retries", "timeout_s", "retry_interval_s", "duplicate") if k in data
                }
                self.connect_bot(str(data["url"]), **options)
            elif action == "disconnect_bot":
                self.disconnect_bot()
            elif action in controls.CONTROLS:
                return _json_response(200, controls.CONTROLS[action](self, data))
            else:
                return _json_response(404, {"error": f"unknown control {action!r}"})
        except (KeyError, TypeError, ValueError) as exc:
            return _json_response(400, {"error": f"bad arguments: {exc}"})
        return _json_response(200, {"ok": True})
