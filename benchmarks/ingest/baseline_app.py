"""The bare baseline: Flask + wechatpy decrypt + one INSERT + "success", nothing else.

Configured by environment variables (set by bench_ingest.py):
BASELINE_DATABASE_URL (a SQLAlchemy URL), BASELINE_TOKEN, BASELINE_AES_KEY, BASELINE_CORP_ID.
The table `baseline_events` must exist (bench_ingest.py creates it). Its unique `dedupe_key` is the
SHA-256 of the decrypted XML, so the same count check (no loss, no duplicates) applies to both sides.
"""

from __future__ import annotations

import hashlib
import os

from flask import Flask, Response, request
from sqlalchemy import Column, MetaData, String, Table, Text, create_engine
from sqlalchemy.dialects.postgresql import insert
from wechatpy.enterprise.crypto import WeChatCrypto

metadata = MetaData()
baseline_events = Table(
    "baseline_events",
    metadata,
    Column("dedupe_key", String(64), primary_key=True),
    Column("raw_xml", Text, nullable=False),
)


def create_app() -> Flask:
    """Build the baseline WSGI app from the BASELINE_* environment variables."""
    url = os.environ["BASELINE_DATABASE_URL"]
    engine = create_engine(url, pool_size=10, max_overflow=10)
    crypto = WeChatCrypto(
        os.environ["BASELINE_TOKEN"], os.environ["BASELINE_AES_KEY"], os.environ["BASELINE_CORP_ID"]
    )
    app = Flask("baseline")

    @app.get("/healthz")
    def healthz() -> Response:
        """The process is up."""
        return Response("ok", mimetype="text/plain")

    @app.post("/wecom/callback")
    def receive() -> Response:
        """Decrypt with wechatpy, INSERT once (ignoring a repeated key), acknowledge."""
        a = request.args
        try:
            plaintext = crypto.decrypt_message(
                request.get_data(), a.get("msg_signature", ""), a.get("timestamp", ""), a.get("nonce", "")
            )
        except Exception:
            return Response("bad callback", status=400, mimetype="text/plain")
        key = hashlib.sha256(plaintext.encode()).hexdigest()
        stmt = insert(baseline_events).values(dedupe_key=key, raw_xml=plaintext).on_conflict_do_nothing()
        with engine.begin() as conn:
            conn.execute(stmt)
        return Response("success", mimetype="text/plain")

    return app
