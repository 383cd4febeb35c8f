"""`wecom-bot hookcodes …`, `members …` and `leads …`: attribution set-up and a look at the leads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import requests
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.leads import HookCode, Lead, Member, Platform


@contextmanager
def _session(ctx: click.Context) -> Iterator[tuple[Session, Any]]:
    from bot.leads.hookcodes import HookCodeError
    from bot.wecom.errors import WeComAPIError

    services = ctx.find_root().obj.services()
    try:
        with services.db.transaction() as session:
            yield session, services
    except (HookCodeError, WeComAPIError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def hookcodes() -> None:
    """Hook codes that attribute customers to a platform and campaign."""


@hookcodes.command("create")
@click.argument("code")
@click.option("--platform", required=True, type=click.Choice([p.value for p in Platform]))
@click.option(
    "--member", "members", multiple=True, required=True, help="Member userid the code routes to (repeat)."
)
@click.option("--campaign", default="")
@click.option("--keyword", default=None, help="A word customers can type to claim the code, e.g. XHS888.")
@click.option("--contact-way/--no-contact-way", default=True, help="Create the 「联系我」 QR in WeCom now.")
@click.option(
    "--kf", "open_kfid", default=None, help="Also create a WeChat Customer Service link for this kf account."
)
@click.option("--acquisition-link", is_flag=True, help="Also create a 获客助手 link.")
@click.option("--as", "username", required=True)
@click.pass_context
def create(
    ctx: click.Context,
    code: str,
    platform: str,
    members: tuple[str, ...],
    campaign: str,
    keyword: str | None,
    contact_way: bool,
    open_kfid: str | None,
    acquisition_link: bool,
    username: str,
) -> None:
    """Register CODE and create its WeCom contact way (state = CODE) and optional kf link."""
    from bot.leads.hookcodes import (
        create_code,
        provision_acquisition_link,
        provision_contact_way,
        provision_kf_link,
    )
    from scripts_library.catalogue import actor

    with _session(ctx) as (session, services):
        actor(session, username)
        create_code(session, code, platform, list(members), username, campaign, keyword)
    with _session(ctx) as (_, services):
        if contact_way:
            row = provision_contact_way(services.db, services.client, code)
            click.echo(f"contact way {row.contact_way_config_id}; QR {row.qr_code_url}")
        if open_kfid:
            row = provision_kf_link(services.db, services.client, code, open_kfid)
            click.echo(f"kf link {row.kf_url}")
        if acquisition_link:
            row = provision_acquisition_link(services.db, services.client, code)
            click.echo(f"acquisition link {row.acquisition_url}")
    click.echo(f"hook code {code} ({platform}) ready")


@hookcodes.command("list")
@click.pass_context
def list_codes(ctx: click.Context) -> None:
    """List codes with their leads."""
    with _session(ctx) as (session, _):
        counts = dict(session.execute(select(Lead.hook_code, func.count()).group_by(Lead.hook_code)).all())
        for row in session.scalars(select(HookCode).order_by(HookCode.platform, HookCode.code)):
            state = "active" if row.active else "disabled"
            reach = (
                ", ".join(x for x in ("QR" if row.qr_code_url else "", "kf" if row.kf_url else "") if x)
                or "-"
            )
            click.echo(
                f"{row.code:<16} {row.platform:<24} {state:<9} {reach:<6}"
                f" leads={counts.get(row.code, 0):<6} {row.campaign}"
            )


@hookcodes.command("disable")
@click.argument("code")
@click.option("--as", "username", required=True)
@click.pass_context
def disable(ctx: click.Context, code: str, username: str) -> None:
    """Stop attributing new arrivals to CODE."""
    from bot.leads.hookcodes import disable_code
    from scripts_library.catalogue import actor

    with _session(ctx) as (session, _):
        actor(session, username)
        disable_code(session, code, username)
    click.echo(f"hook code {code} disabled")


@hookcodes.command("qr")
@click.argument("code")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Save the QR image here."
)
@click.pass_context
def qr(ctx: click.Context, code: str, output: Path | None) -> None:
    """Print CODE's QR and kf link; with --output, download the QR image to put on a profile."""
    from bot.leads.hookcodes import get_code

    with _session(ctx) as (session, _):
        row = get_code(session, code)
        url, kf_url, acq_url = row.qr_code_url, row.kf_url, row.acquisition_url
    if not (url or kf_url or acq_url):
        raise click.ClickException(f"{code} has no contact way, kf link or acquisition link yet")
    click.echo(f"QR: {url or '-'}\nkf link: {kf_url or '-'}\nacquisition link: {acq_url or '-'}")
    if output and url:
        response = requests.get(url, timeout=10)
        response.raise_for_status()
        output.write_bytes(response.content)
        click.echo(f"saved {output}")


@click.group()
def members() -> None:
    """Corp members the bot names in messages."""


@members.command("add")
@click.argument("userid")
@click.option("--name", required=True)
@click.pass_context
def members_add(ctx: click.Context, userid: str, name: str) -> None:
    """Add or rename a member."""
    with _session(ctx) as (session, _):
        member = session.get(Member, userid) or Member(userid=userid, name=name)
        member.name, member.active = name, True
        session.add(member)
    click.echo(f"member {userid} = {name}")


@click.group()
def leads() -> None:
    """Look at leads."""


@leads.command("list")
@click.option("--platform", default=None)
@click.option("--code", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_context
def leads_list(ctx: click.Context, platform: str | None, code: str | None, limit: int) -> None:
    """List recent leads with attribution and reachability."""
    with _session(ctx) as (session, _):
        stmt = select(Lead).order_by(Lead.id.desc()).limit(limit)
        if platform:
            stmt = stmt.where(Lead.platform == platform)
        if code:
            stmt = stmt.where(Lead.hook_code == code)
        for lead in session.scalars(stmt):
            flags = " ".join(
                f for f, on in (("opted-out", lead.opted_out), ("unreachable", not lead.reachable)) if on
            )
            source = (
                f"{lead.platform}/{lead.hook_code}"
                if lead.hook_code
                else f"unattributed ({lead.first_state_raw or '-'})"
            )
            click.echo(
                f"{lead.external_user_id:<32} {source:<32} owner={lead.owner_userid or '-':<12}"
                f" {lead.stage} {flags}"
            )


@leads.command("show")
@click.argument("external_user_id")
@click.pass_context
def leads_show(ctx: click.Context, external_user_id: str) -> None:
    """A lead's timeline: inbound messages and events, touches, tags, outbound messages, audit."""
    from bot.leads.timeline import timeline

    services = ctx.find_root().obj.services()
    with services.db.read() as session:
        items = timeline(session, external_user_id)
    if not items:
        raise click.ClickException(f"nothing recorded for {external_user_id}")
    for item in items:
        click.echo(f"{item.at:%Y-%m-%d %H:%M:%S}  {item.kind:<8} {item.summary}")
