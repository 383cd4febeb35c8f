"""`wecom-bot api-tokens …`: issue, list and revoke the bearer tokens integrations use on /api/v1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.orm import Session

from models.api_tokens import ApiScope
from models.users import Role


@contextmanager
def _session(ctx: click.Context) -> Iterator[Session]:
    from bot.api.tokens import ApiTokenError
    from scripts_library.catalogue import WorkflowError

    services: Any = ctx.find_root().obj.services()
    try:
        with services.db.transaction() as session:
            yield session
    except (ApiTokenError, WorkflowError) as exc:
        raise click.ClickException(str(exc)) from None


def _admin(session: Session, username: str) -> str:
    """The acting administrator's name; only admins manage API tokens."""
    from scripts_library.catalogue import actor

    user = actor(session, username)
    if user.role != Role.ADMIN:
        raise click.ClickException(f"{username} is not an administrator; only admins manage API tokens")
    return user.username


@click.group("api-tokens")
def api_tokens() -> None:
    """Bearer tokens for integrations reading /api/v1."""


@api_tokens.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice([s.value for s in ApiScope]),
    help="Repeat.",
)
@click.option("--as", "username", required=True)
@click.pass_context
def create(ctx: click.Context, name: str, scopes: tuple[str, ...], username: str) -> None:
    """Issue a token NAME with the given scopes; it is printed once and cannot be shown again."""
    from bot.api.tokens import issue_token

    with _session(ctx) as session:
        row, plain = issue_token(session, name, scopes, _admin(session, username))
        chosen = ", ".join(row.scopes)
    click.echo(f"API token {name} ({chosen}) created. Store it now; it is not shown again:")
    click.echo(plain)


@api_tokens.command("list")
@click.pass_context
def list_command(ctx: click.Context) -> None:
    """Tokens with their scopes, creator and last use (never the token itself)."""
    from bot.api.tokens import list_tokens

    with _session(ctx) as session:
        for row in list_tokens(session):
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
            click.echo(
                f"{row.name:<24} {','.join(row.scopes):<24} by={row.created_by:<12}"
                f" created={row.created_at:%Y-%m-%d} last_used={used} {state}"
            )


@api_tokens.command("revoke")
@click.argument("name")
@click.option("--as", "username", required=True)
@click.pass_context
def revoke(ctx: click.Context, name: str, username: str) -> None:
    """Stop token NAME working at once."""
    from bot.api.tokens import revoke_token

    with _session(ctx) as session:
        revoke_token(session, name, _admin(session, username))
    click.echo(f"API token {name} revoked")
