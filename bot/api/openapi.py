"""The OpenAPI 3.1 description of `/api/v1`, written by hand and served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from werkzeug.wrappers import Response

from bot.api.blueprint import bp, open_endpoint
from bot.api.views import DEFAULT_PAGE, MAX_LEDGER_PAGE, MAX_PAGE
from bot.leads.stages import Stage
from models.api_tokens import ApiScope
from models.handoff import HandoffStatus
from models.leads import Platform
from scripts_library.ledger import EXPORT_FIELDS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_LIMIT = _query(
    "limit",
    "Items per page.",
    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
)
_CURSOR = _query(
    "cursor",
    "The `next_cursor` of the previous page; omit for the first page.",
    {"type": "integer", "minimum": 0},
)
_ERRORS = {
    "400": {
        "description": "A query parameter is not valid.",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
    "401": {
        "description": "No token, or an unknown or revoked one.",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
    "403": {
        "description": "The token lacks this endpoint's scope.",
        "content": {"application/json": {"schema": _ref("Error")}},
    },
}


def _page_of(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": _ref(item)},
            "next_cursor": {
                "type": ["integer", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    }


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}},
        **_ERRORS,
    }


_LEAD = {
    "type": "object",
    "properties": {
        "external_user_id": {"type": "string", "description": "The WeCom external userid, never masked."},
        "display_name": {"type": "string", "description": "Masked: phone and ID-card numbers are starred."},
        "platform": {"type": ["string", "null"], "enum": [*(p.value for p in Platform), None]},
        "hook_code": {"type": ["string", "null"]},
        "owner_userid": {"type": ["string", "null"]},
        "stage": {"type": "string", "enum": [s.value for s in Stage]},
        "subscribed": {"type": "boolean"},
        "opted_out": {"type": "boolean"},
        "reachable": {"type": "boolean"},
        "created_at": _TIME,
        "updated_at": _TIME,
    },
}

_LEAD_DETAIL = {
    "allOf": [
        _ref("Lead"),
        {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "touches": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "at": _TIME,
                            "source": {"type": "string"},
                            "code": {"type": ["string", "null"]},
                            "member": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        },
    ]
}

_HANDOFF = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "external_user_id": {"type": "string"},
        "manager_userid": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in HandoffStatus]},
        "attempt": {"type": "integer"},
        "escalated": {"type": "boolean"},
        "advice": {
            "type": "boolean",
            "description": "The customer asked for advice: licensed managers only.",
        },
        "reason": {"type": "string", "description": "Why the lead qualified (masked)."},
        "note": {"type": "string", "description": "Why the handoff ended (masked)."},
        "offered_at": _TIME,
        "due_at": _NULLABLE_TIME,
        "responded_at": _NULLABLE_TIME,
        "closed_at": _NULLABLE_TIME,
    },
}

_LEDGER_TYPES: dict[str, Any] = {
    "seq": {"type": "integer"},
    "recorded_at": {"type": "string", "description": "UTC, the ledger's fixed hashing format."},
    "ref_seq": {"type": ["integer", "null"]},
    "script_version": {"type": ["integer", "null"]},
    "approval_id": {"type": ["integer", "null"]},
}
_LEDGER_ENTRY = {
    "type": "object",
    "description": "The fields of the ledger export; `entry_hash` covers the others and `prev_hash`.",
    "properties": {name: _LEDGER_TYPES.get(name, {"type": "string"}) for name in EXPORT_FIELDS},
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "wecom-bot API",
        "version": "1",
        "description": (
            "Read access for integrations. Every call sends `Authorization: Bearer <token>`;"
            " tokens are issued by an administrator with `wecom-bot api-tokens create`"
            " and carry the scopes they may read."
            " External user ids and member userids are returned in full so a CRM can match customers;"
            " free text is masked."
        ),
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": {
        "/leads": {
            "get": {
                "summary": "Leads in id order (scope: leads)",
                "parameters": [
                    _query("updated_since", "Only leads updated at or after this time.", _TIME),
                    _query(
                        "platform",
                        "Only leads from this platform.",
                        {"type": "string", "enum": [p.value for p in Platform]},
                    ),
                    _query(
                        "stage",
                        "Only leads at this stage.",
                        {"type": "string", "enum": [s.value for s in Stage]},
                    ),
                    _CURSOR,
                    _LIMIT,
                ],
                "responses": _ok(_page_of("Lead"), "A page of leads."),
            }
        },
        "/leads/{external_user_id}": {
            "get": {
                "summary": "One lead with its tags and arrivals (scope: leads)",
                "parameters": [
                    {"name": "external_user_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    **_ok(_ref("LeadDetail"), "The lead."),
                    "404": {
                        "description": "No such lead.",
                        "content": {"application/json": {"schema": _ref("Error")}},
                    },
                },
            }
        },
        "/handoffs": {
            "get": {
                "summary": "Handoffs to account managers in id order (scope: handoffs)",
                "parameters": [
                    _query(
                        "since", "Only handoffs offered, answered or closed at or after this time.", _TIME
                    ),
                    _query(
                        "status",
                        "Only handoffs in this status.",
                        {"type": "string", "enum": [s.value for s in HandoffStatus]},
                    ),
                    _CURSOR,
                    _LIMIT,
                ],
                "responses": _ok(_page_of("Handoff"), "A page of handoffs."),
            }
        },
        "/ledger": {
            "get": {
                "summary": "Send-ledger entries in seq order (scope: ledger)",
                "parameters": [
                    _query(
                        "since_seq",
                        "Entries with a seq above this one.",
                        {"type": "integer", "minimum": 0, "default": 0},
                    ),
                    _query(
                        "limit",
                        "Entries per page.",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LEDGER_PAGE,
                            "default": MAX_LEDGER_PAGE,
                        },
                    ),
                ],
                "responses": _ok(
                    {
                        "type": "object",
                        "required": ["data", "next_since_seq"],
                        "properties": {
                            "data": {"type": "array", "items": _ref("LedgerEntry")},
                            "next_since_seq": {
                                "type": ["integer", "null"],
                                "description": "Pass as `since_seq` for the next page; null once caught up.",
                            },
                        },
                    },
                    "A page of ledger entries.",
                ),
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description (no token needed)",
                "security": [],
                "responses": {
                    "200": {"description": "The OpenAPI document.", "content": {"application/json": {}}}
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": f"Scopes: {', '.join(s.value for s in ApiScope)}.",
            }
        },
        "schemas": {
            "Lead": _LEAD,
            "LeadDetail": _LEAD_DETAIL,
            "Handoff": _HANDOFF,
            "LedgerEntry": _LEDGER_ENTRY,
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
                    }
                },
            },
        },
    },
}


@bp.get("/openapi.json")
@open_endpoint
def openapi() -> Response:
    """The API description, readable without a token."""
    return jsonify(SPEC)
