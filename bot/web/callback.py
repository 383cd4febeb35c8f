"""The WeCom callback URL: a thin Flask adapter over the framework-independent Ingestor."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request

from bot import metrics
from bot.ingest import CallbackRejected, Ingestor

bp = Blueprint("callback", __name__)
log = logging.getLogger("wecom_bot.callback")


def _ingestor() -> Ingestor | None:
    ingestor: Ingestor | None = current_app.extensions["wecom_bot"].ingestor
    return ingestor


def _reject(exc: CallbackRejected) -> Response:
    log.warning("callback rejected: %s (%s)", exc.reason, request.remote_addr)
    metrics.callback_rejected(exc.code)
    return Response(exc.reason, status=exc.status, mimetype="text/plain")


@bp.get("/wecom/callback")
def verify_url() -> Response:
    """Answer WeCom's URL check with the decrypted echostr, nothing else."""
    ingestor = _ingestor()
    if ingestor is None:
        return Response("callback not configured", status=503, mimetype="text/plain")
    a = request.args
    try:
        echo = ingestor.verify_url(
            a.get("msg_signature", ""), a.get("timestamp", ""), a.get("nonce", ""), a.get("echostr", "")
        )
    except CallbackRejected as exc:
        return _reject(exc)
    metrics.callback_received("url_verification", "verified")
    return Response(echo, mimetype="text/plain")


@bp.post("/wecom/callback")
def receive() -> Response:
    """Persist the callback, then acknowledge; handlers run later in a worker."""
    ingestor = _ingestor()
    if ingestor is None:
        metrics.callback_rejected("not_configured")
        return Response("callback not configured", status=503, mimetype="text/plain")
    length = request.content_length
    if length is not None and length > ingestor.settings.web.max_body_bytes:
        metrics.callback_rejected("too_large")
        return Response("body too large", status=413, mimetype="text/plain")
    a = request.args
    try:
        ingestor.ingest(
            a.get("msg_signature", ""),
            a.get("timestamp", ""),
            a.get("nonce", ""),
            request.get_data(cache=False),
        )
    except CallbackRejected as exc:
        return _reject(exc)
    return Response("success", mimetype="text/plain")
