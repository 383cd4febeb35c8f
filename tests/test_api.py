"""The /api/v1 JSON API: bearer tokens and scopes, leads, handoffs, the ledger, and its OpenAPI document."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from bot.accounts import create_user
from bot.api.openapi import SPEC
from bot.api.tokens import issue_token
from bot.app import create_app
from bot.cli import main
from bot.services import Services
from models.api_tokens import ApiToken
from models.audit import AuditEntry
from models.handoff import AccountManager, Handoff, HandoffStatus
from models.leads import Lead, LeadTag, LeadTouch
from scripts_library.ledger import EXPORT_FIELDS, append_message, append_outcome, verify


def utc(day: int, hour: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def _app(services: Services) -> Flask:
    app = create_app(services=services)
    app.config["TESTING"] = True
    return app


def _token(services: Services, *scopes: str, name: str = "crm") -> str:
    with services.db.transaction() as session:
        _, plain = issue_token(session, name, scopes, "ada")
    return plain


def _get(client: FlaskClient, path: str, token: str) -> tuple[int, Any]:
    response = client.get(path, headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.get_json()


def _leads(services: Services) -> None:
    with services.db.transaction() as session:
        for n, (platform, stage, updated) in enumerate(
            [
                ("xiaohongshu", "new", utc(1)),
                ("douyin", "qualified", utc(5)),
                ("xiaohongshu", "qualified", utc(10)),
                ("bilibili", "converted", utc(12)),
            ],
            start=1,
        ):
            session.add(
                Lead(
                    external_user_id=f"wmEXT{n:04d}",
                    display_name=f"客户{n} 13812345678",
                    platform=platform,
                    hook_code=f"{platform[:3].upper()}{n}",
                    stage=stage,
                    created_at=utc(1),
                    updated_at=updated,
                )
            )


def test_cli_issues_a_token_once_lists_without_it_and_revokes_with_audit(
    services: Services, runner: CliRunner, env: dict[str, str]
) -> None:
    with services.db.transaction() as session:
        create_user(session, "ada", "admin", "admin-password-1")
        create_user(session, "olivia", "operator", "operator-password")
    args = ["api-tokens", "create", "crm", "--scope", "leads", "--scope", "ledger"]
    refused = runner.invoke(main, [*args, "--as", "olivia"], env=env)
    assert refused.exit_code == 1 and "not an administrator" in refused.output
    created = runner.invoke(main, [*args, "--as", "ada"], env=env)
    assert created.exit_code == 0, created.output
    plain = created.output.strip().splitlines()[-1]
    assert plain.startswith("wbt_") and len(plain) > 40
    with services.db.read() as session:
        row = session.scalars(select(ApiToken)).one()
        assert row.scopes == ["leads", "ledger"] and row.created_by == "ada"
        assert plain not in row.token_sha256 and len(row.token_sha256) == 64

    again = runner.invoke(main, [*args, "--as", "ada"], env=env)
    assert again.exit_code == 1 and "exists" in again.output
    listing = runner.invoke(main, ["api-tokens", "list"], env=env)
    assert "crm" in listing.output and "leads,ledger" in listing.output and "active" in listing.output
    assert plain not in listing.output

    client = _app(services).test_client()
    assert _get(client, "/api/v1/leads", plain)[0] == 200
    revoked = runner.invoke(main, ["api-tokens", "revoke", "crm", "--as", "ada"], env=env)
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert _get(client, "/api/v1/leads", plain)[0] == 401
    twice = runner.invoke(main, ["api-tokens", "revoke", "crm", "--as", "ada"], env=env)
    assert twice.exit_code == 1 and "already revoked" in twice.output
    with services.db.read() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.target == "api_token:crm").order_by(AuditEntry.id)
        ).all()
    assert actions == ["api_token.create", "api_token.revoke"]


def test_bad_scope_or_name_is_refused_and_creates_nothing(
    services: Services, runner: CliRunner, env: dict[str, str]
) -> None:
    with services.db.transaction() as session:
        create_user(session, "ada", "admin", "admin-password-1")
    bad_scope = runner.invoke(
        main, ["api-tokens", "create", "crm", "--scope", "users", "--as", "ada"], env=env
    )
    bad_name = runner.invoke(
        main, ["api-tokens", "create", "a b", "--scope", "leads", "--as", "ada"], env=env
    )
    assert bad_scope.exit_code == 2 and bad_name.exit_code == 1 and "name:" in bad_name.output
    with services.db.read() as session:
        assert session.scalars(select(ApiToken)).all() == []
        assert session.scalars(select(AuditEntry).where(AuditEntry.action.like("api_token.%"))).all() == []


def test_missing_unknown_or_wrong_scope_tokens_are_refused(services: Services) -> None:
    client = _app(services).test_client()
    ledger_only = _token(services, "ledger")
    missing = client.get("/api/v1/leads")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Bearer" in missing.get_json()["error"]["message"]
    assert _get(client, "/api/v1/leads", "wbt_not-a-real-token")[0] == 401
    assert _get(client, "/api/v1/leads", ledger_only[:-1])[0] == 401
    status, body = _get(client, "/api/v1/leads", ledger_only)
    assert status == 403 and "'leads' scope" in body["error"]["message"]
    assert _get(client, "/api/v1/handoffs", ledger_only)[0] == 403
    assert _get(client, "/api/v1/ledger", ledger_only)[0] == 200
    # The console session does not open the API: only the bearer token does.
    assert client.get("/api/v1/ledger", headers={"Authorization": f"Basic {ledger_only}"}).status_code == 401


def test_last_used_is_recorded_at_most_once_a_minute(services: Services) -> None:
    client = _app(services).test_client()
    plain = _token(services, "leads")

    def last_used() -> datetime | None:
        with services.db.read() as session:
            return session.scalars(select(ApiToken.last_used_at)).one()

    assert last_used() is None
    _get(client, "/api/v1/leads", plain)
    first = last_used()
    assert first is not None
    _get(client, "/api/v1/leads", plain)
    assert last_used() == first
    earlier = first - timedelta(seconds=61)
    with services.db.transaction() as session:
        session.execute(update(ApiToken).values(last_used_at=earlier))
    _get(client, "/api/v1/leads", plain)
    latest = last_used()
    assert latest is not None and latest > earlier + timedelta(seconds=60)


def test_leads_filter_page_by_cursor_and_keep_external_ids_full(services: Services) -> None:
    _leads(services)
    client = _app(services).test_client()
    plain = _token(services, "leads")

    status, page = _get(client, "/api/v1/leads?limit=3", plain)
    assert status == 200 and [x["external_user_id"] for x in page["data"]] == [
        "wmEXT0001",
        "wmEXT0002",
        "wmEXT0003",
    ]
    first = page["data"][0]
    assert first["display_name"] == "客户1 138****5678" and first["platform"] == "xiaohongshu"
    assert first["updated_at"] == "2026-11-01T00:00:00Z" and first["hook_code"] == "XIA1"
    status, rest = _get(client, f"/api/v1/leads?limit=3&cursor={page['next_cursor']}", plain)
    assert [x["external_user_id"] for x in rest["data"]] == ["wmEXT0004"] and rest["next_cursor"] is None

    _, xhs = _get(client, "/api/v1/leads?platform=xiaohongshu&stage=qualified", plain)
    assert [x["external_user_id"] for x in xhs["data"]] == ["wmEXT0003"]
    _, recent = _get(client, "/api/v1/leads?updated_since=2026-11-05T00:00:00Z", plain)
    assert [x["external_user_id"] for x in recent["data"]] == ["wmEXT0002", "wmEXT0003", "wmEXT0004"]

    for query, message in [
        ("platform=myspace", "platform: one of"),
        ("stage=happy", "stage: one of"),
        ("updated_since=yesterday", "updated_since: an ISO 8601 time"),
        ("limit=501", "limit: between 1 and 500"),
        ("cursor=abc", "cursor: a whole number"),
    ]:
        status, body = _get(client, f"/api/v1/leads?{query}", plain)
        assert status == 400 and body["error"]["message"].startswith(message), query


def test_one_lead_with_tags_and_touches(services: Services) -> None:
    _leads(services)
    with services.db.transaction() as session:
        lead = session.scalars(select(Lead).where(Lead.external_user_id == "wmEXT0002")).one()
        session.add(LeadTag(lead_id=lead.id, name="platform:douyin"))
        session.add(
            LeadTouch(lead_id=lead.id, at=utc(2, 9), source="contact_way", code="DOU2", member="zhangsan")
        )
    client = _app(services).test_client()
    plain = _token(services, "leads")
    status, body = _get(client, "/api/v1/leads/wmEXT0002", plain)
    assert status == 200 and body["stage"] == "qualified" and body["tags"] == ["platform:douyin"]
    assert body["touches"] == [
        {"at": "2026-11-02T09:00:00Z", "source": "contact_way", "code": "DOU2", "member": "zhangsan"}
    ]
    status, missing = _get(client, "/api/v1/leads/wmNOBODY", plain)
    assert status == 404 and missing["error"]["message"] == "no lead with this external_user_id"


def test_handoffs_since_and_status(services: Services) -> None:
    _leads(services)
    with services.db.transaction() as session:
        session.add(AccountManager(userid="wang", name="王经理"))
        ids = {lead.external_user_id: lead.id for lead in session.scalars(select(Lead))}
        session.add_all(
            [
                Handoff(
                    lead_id=ids["wmEXT0002"],
                    manager_userid="wang",
                    status=HandoffStatus.TIMED_OUT,
                    reason="问开户，电话13812345678",
                    offered_at=utc(3),
                    closed_at=utc(3, 1),
                ),
                Handoff(
                    lead_id=ids["wmEXT0003"],
                    manager_userid="wang",
                    status=HandoffStatus.ACCEPTED,
                    offered_at=utc(4),
                    responded_at=utc(10),
                ),
            ]
        )
    client = _app(services).test_client()
    plain = _token(services, "handoffs")
    status, page = _get(client, "/api/v1/handoffs", plain)
    assert status == 200 and [(h["external_user_id"], h["status"]) for h in page["data"]] == [
        ("wmEXT0002", "timed_out"),
        ("wmEXT0003", "accepted"),
    ]
    assert (
        page["data"][0]["reason"] == "问开户，电话138****5678" and page["data"][0]["manager_userid"] == "wang"
    )
    _, since = _get(client, "/api/v1/handoffs?since=2026-11-05T00:00:00%2B08:00", plain)
    assert [h["external_user_id"] for h in since["data"]] == ["wmEXT0003"]
    _, accepted = _get(client, "/api/v1/handoffs?status=timed_out", plain)
    assert [h["external_user_id"] for h in accepted["data"]] == ["wmEXT0002"]
    assert _get(client, "/api/v1/handoffs?status=lost", plain)[0] == 400


def test_ledger_pages_by_seq_with_the_export_fields(services: Services) -> None:
    with services.db.transaction() as session:
        for n in range(3):
            message = append_message(
                session,
                recipient=f"wmEXT000{n}",
                sender="bot",
                channel="contact_welcome",
                script_key="welcome",
                script_version=1,
                content_hash="a" * 64,
                approval_id=1,
                rendered_text=f"您好 {n}",
                lint_verdict="pass",
                lexicon_version="2026.11",
                now=utc(2, n),
            )
            append_outcome(session, ref_seq=message.seq, outcome="sent", now=utc(2, n))
    client = _app(services).test_client()
    plain = _token(services, "ledger")
    status, page = _get(client, "/api/v1/ledger?limit=4", plain)
    assert status == 200 and [e["seq"] for e in page["data"]] == [1, 2, 3, 4] and page["next_since_seq"] == 4
    assert sorted(page["data"][0]) == sorted(EXPORT_FIELDS)
    assert page["data"][0]["recorded_at"].startswith("2026-11-02T00:00:00")
    assert page["data"][1]["entry_type"] == "outcome" and page["data"][1]["ref_seq"] == 1
    _, rest = _get(client, "/api/v1/ledger?since_seq=4", plain)
    assert [e["seq"] for e in rest["data"]] == [5, 6] and rest["next_since_seq"] is None
    with services.db.read() as session:
        assert verify(session).ok
    # The chain can be followed in the API's data alone: each prev_hash is the entry before's hash.
    chain = page["data"] + rest["data"]
    assert all(b["prev_hash"] == a["entry_hash"] for a, b in itertools.pairwise(chain))
    assert _get(client, "/api/v1/ledger?limit=1001", plain)[0] == 400


def test_openapi_document_describes_every_route(services: Services) -> None:
    app = _app(services)
    response = app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.get_json() == SPEC
    assert SPEC["openapi"] == "3.1.0"
    routes = {
        rule.rule.removeprefix("/api/v1").replace("<", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
    }
    assert routes == set(SPEC["paths"])
    for path, operations in SPEC["paths"].items():
        for operation in operations.values():
            for ref in _refs(operation):
                assert ref.removeprefix("#/components/schemas/") in SPEC["components"]["schemas"], (path, ref)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
