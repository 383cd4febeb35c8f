"""The JSON API for integrations under /api/v1: leads, handoffs and the send ledger, by bearer token."""

from __future__ import annotations

# Importing the view modules attaches their routes to the blueprint.
import bot.api.openapi
import bot.api.views  # noqa: F401
from bot.api.blueprint import bp

__all__ = ["bp"]
