"""Mirrors local lead tags into WeCom corp tags (`mark_tag`), outside handler transactions."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select

from bot.coordination import Coordinator
from bot.db import Database
from bot.wecom.client import WeComClient
from bot.wecom.errors import ErrorKind, WeComAPIError
from models.leads import PLATFORM_NAMES, CorpTag, Lead, LeadTag, Platform

log = logging.getLogger("wecom_bot.tagsync")
TAGS_CHANNEL = "tags"
GROUP_NAMES = {"platform": "来源平台", "code": "钩子码"}
# The pair is gone or invalid: marking can never succeed, so stop trying.
GONE_ERRCODES = {84061, 40096, 40003}


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

    def _tag_id(self, local_name: str) -> str:
        with self.db.read() as session:
            known = session.get(CorpTag, local_name)
            if known is not None:
                return known.wecom_tag_id
        group, name = wecom_names(local_name)
        # add_corp_tag reuses an existing group of that name and collapses duplicate tag names.
        result = self.client.post(
            "externalcontact/add_corp_tag", {"group_name": group, "tag": [{"name": name}]}, app="contact"
        )
        tag_id = next(str(t["id"]) for t in result["tag_group"]["tag"] if t["name"] == name)
        with self.db.transaction() as session:
            if session.get(CorpTag, local_name) is None:
                session.add(
                    CorpTag(local_name=local_name, group_name=group, tag_name=name, wecom_tag_id=tag_id)
                )
        return tag_id

    def sync(self, limit: int = 200) -> SyncReport:
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
        pairs: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
        for tag_row_id, name, owner, external in rows:
            pairs[(str(owner), str(external))].append((tag_row_id, str(name)))
        marked = given_up = retry = 0
        for (owner, external), tags in pairs.items():
            ids = [tag_row_id for tag_row_id, _ in tags]
            try:
                wecom_ids = [self._tag_id(name) for _, name in tags]
                self.client.post(
                    "externalcontact/mark_tag",
                    {"userid": owner, "external_userid": external, "add_tag": wecom_ids},
                    app="contact",
                )
            except WeComAPIError as exc:
                if exc.kind in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED, ErrorKind.TOKEN):
                    retry += len(ids)
                    continue
                if exc.errcode in GONE_ERRCODES or exc.kind == ErrorKind.PERMANENT:
                    self._record(ids, synced=False, error=f"{exc.errcode}: {exc.errmsg}"[:256])
                    given_up += len(ids)
                continue
            self._record(ids, synced=True, error=None)
            marked += len(ids)
        return SyncReport(marked, given_up, retry)

    def _record(self, ids: list[int], synced: bool, error: str | None) -> None:
        with self.db.transaction() as session:
            for row in session.scalars(select(LeadTag).where(LeadTag.id.in_(ids))):
                row.wecom_synced, row.sync_error = synced, error

    def forget(self, wecom_tag_id: str) -> None:
        """An admin deleted one of our corp tags: forget it so a later mark re-creates it."""
        with self.db.transaction() as session:
            known = session.scalars(select(CorpTag).where(CorpTag.wecom_tag_id == wecom_tag_id)).first()
            if known is not None:
                session.delete(known)

    def run_forever(self, stop: threading.Event) -> None:
        """Sync when woken after new tags, and every 30 s as a safety net (failed calls retry then)."""
        while not stop.is_set():
            try:
                self.sync()
            except Exception:
                log.exception("tag sync round failed")
            deadline = 30.0
            while deadline > 0 and not stop.is_set():
                if self.coordinator.wait(TAGS_CHANNEL, 0.5):
                    break
                deadline -= 0.5
