"""Mirrors local lead tags into WeCom corp tags (`mark_tag`), outside handler transactions."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.coordination import Coordinator
from bot.db import Database
from bot.wecom.client import WeComClient
from bot.wecom.errors import ErrorKind, WeComAPIError
from models.inbox import EventStatus, InboundEvent
from models.leads import PLATFORM_NAMES, CorpTag, Lead, LeadTag, Platform

log = logging.getLogger("wecom_bot.tagsync")
TAGS_CHANNEL = "tags"
GROUP_NAMES = {"platform": "来源平台", "code": "钩子码"}
# The pair is gone or invalid: marking can never succeed, so stop trying.
GONE_ERRCODES = {84061, 40096, 40003}
MAX_DEFER_S = 15.0
ROUND_SIZE = 50  # small rounds, so a burst of adds arriving meanwhile is noticed soon
DEFER_STEP_S = 0.25


@dataclass(frozen=True)
class SyncReport:
    """How many tags were marked, given up on, or left for a retry."""

    marked: int = 0
    given_up: int = 0
    retry_later: int = 0


def wecom_names(local_name: str) -> tuple[str, str]:
    """The (group, tag) a local tag becomes in WeCom, e.g. platform:xiaohongshu → (来源平台, 小红书)."""
    prefix, _, value = local_name.partition(":")
    group = GROUP_NAMES.get(prefix, "其他")
    if prefix == "platform" and value in Platform.__members__.values():
        value = PLATFORM_NAMES[Platform(value)]
    return group, value[:30]


class TagSyncer:
    """Creates missing corp tags and marks them on each (owner, customer) pair."""

    def __init__(self, db: Database, coordinator: Coordinator, client: WeComClient) -> None:
        self.db = db
        self.coordinator = coordinator
        self.client = client

    def _tag_id(self, local_name: str, known: dict[str, str]) -> str:
        if local_name in known:
            return known[local_name]
        group, name = wecom_names(local_name)
        # add_corp_tag reuses an existing group of that name and collapses duplicate tag names.
        result = self.client.post(
            "externalcontact/add_corp_tag", {"group_name": group, "tag": [{"name": name}]}, app="contact"
        )
        tag_id = next(str(t["id"]) for t in result["tag_group"]["tag"] if t["name"] == name)
        try:
            with self.db.transaction() as session:
                if session.get(CorpTag, local_name) is None:
                    session.add(
                        CorpTag(local_name=local_name, group_name=group, tag_name=name, wecom_tag_id=tag_id)
                    )
        except IntegrityError:
            pass  # another process recorded it at the same moment (WeCom answered both with this id)
        known[local_name] = tag_id
        return tag_id

    def sync(self, limit: int = ROUND_SIZE) -> SyncReport:
        """Mark every unsynced tag of reachable, owned leads; one mark_tag call per pair."""
        with self.db.read() as session:
            rows = session.execute(
                select(LeadTag.id, LeadTag.name, Lead.owner_userid, Lead.external_user_id)
                .join(Lead, Lead.id == LeadTag.lead_id)
                .where(
                    LeadTag.wecom_synced.is_(False),
                    LeadTag.sync_error.is_(None),
                    Lead.owner_userid.is_not(None),
                )
                .where(Lead.reachable.is_(True))
                .order_by(LeadTag.id)
                .limit(limit)
            ).all()
            names = {str(name) for _id, name, _owner, _external in rows}
            known = {
                tag.local_name: tag.wecom_tag_id
                for tag in session.scalars(select(CorpTag).where(CorpTag.local_name.in_(names)))
            }
        pairs: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        for tag_row_id, name, owner, external in rows:
            pairs[(str(owner), str(external))].append((tag_row_id, str(name)))
        done: list[int] = []
        failed: dict[str, list[int]] = defaultdict(list)
        retry = 0
        for (owner, external), tags in pairs.items():
            ids = [tag_row_id for tag_row_id, _ in tags]
            try:
                wecom_ids = [self._tag_id(name, known) for _, name in tags]
                self.client.post(
                    "externalcontact/mark_tag",
                    {"userid": owner, "external_userid": external, "add_tag": wecom_ids},
                    app="contact",
                )
            except WeComAPIError as exc:
                if exc.kind in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED, ErrorKind.TOKEN):
                    retry += len(ids)
                elif exc.errcode in GONE_ERRCODES or exc.kind == ErrorKind.PERMANENT:
                    failed[f"{exc.errcode}: {exc.errmsg}"[:256]] += ids
                continue
            done += ids
        self._record(done, failed)
        return SyncReport(len(done), sum(len(ids) for ids in failed.values()), retry)

    def _record(self, done: list[int], failed: dict[str, list[int]]) -> None:
        """Write a round's outcomes in one transaction: synced, or given up with the reason."""
        if not done and not failed:
            return
        with self.db.transaction() as session:
            if done:
                session.execute(update(LeadTag).where(LeadTag.id.in_(done)).values(wecom_synced=True))
            for error, ids in failed.items():
                session.execute(update(LeadTag).where(LeadTag.id.in_(ids)).values(sync_error=error))

    def forget(self, wecom_tag_id: str) -> None:
        """An admin deleted one of our corp tags: forget it so a later mark re-creates it."""
        with self.db.transaction() as session:
            known = session.scalars(select(CorpTag).where(CorpTag.wecom_tag_id == wecom_tag_id)).first()
            if known is not None:
                session.delete(known)

    def run_forever(self, stop: threading.Event) -> None:
        """Sync when woken after new tags, and every 30 s as a safety net (failed calls retry then).

        Tags are not urgent: while events wait in the inbox (a burst of adds, each with a welcome
        due within 20 s) a round is put off, for at most `MAX_DEFER_S`.
        """
        while not stop.is_set():
            self._defer_while_events_wait(stop)
            try:
                report = self.sync()
            except Exception:
                log.exception("tag sync round failed")
                report = SyncReport()
            if report.marked + report.given_up >= ROUND_SIZE:
                continue  # more may be waiting
            deadline = 30.0
            while deadline > 0 and not stop.is_set():
                if self.coordinator.wait(TAGS_CHANNEL, 0.5):
                    break
                deadline -= 0.5

    def _defer_while_events_wait(self, stop: threading.Event) -> None:
        waited = 0.0
        while waited < MAX_DEFER_S and not stop.is_set() and self._events_waiting():
            stop.wait(DEFER_STEP_S)
            waited += DEFER_STEP_S

    def _events_waiting(self) -> bool:
        try:
            with self.db.read() as session:
                stmt = select(InboundEvent.id).where(InboundEvent.status == EventStatus.PENDING).limit(1)
                return session.scalars(stmt).first() is not None
        except SQLAlchemyError:
            log.warning("could not tell whether events are waiting; syncing tags now", exc_info=True)
            return False
