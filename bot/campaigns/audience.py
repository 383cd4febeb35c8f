"""A campaign's audience: its lead filter, read in keyset-paginated batches so memory stays flat."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, exists, func, select
from sqlalchemy.orm import Session

from bot.db import Database
from models.campaigns import Campaign, CampaignKind, CourseRegistration
from models.leads import Lead, LeadTag

BATCH_SIZE = 500
_LIST_KEYS = ("platforms", "hook_codes", "tags", "stages")
_FLAG_KEYS = ("subscribed_only", "registrants_only")
# Absent flags default by kind: morning reports go to subscribers, reminders to registrants.
_KIND_DEFAULTS: dict[str, dict[str, bool]] = {
    CampaignKind.MORNING_REPORT: {"subscribed_only": True},
    CampaignKind.COURSE_REMINDER: {"registrants_only": True},
}


class AudienceError(ValueError):
    """A campaign's audience filter is malformed or cannot be applied.

    `code` names the problem (the catalogue's audience codes where they agree) and `params` the values
    its message mentions, so the console can say it in the reader's language; the message stays English.
    """

    def __init__(self, message: str, code: str = "", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class AudienceFilter:
    """Which leads a campaign reaches; every non-empty list must match (tags: all of them)."""

    platforms: tuple[str, ...] = ()
    hook_codes: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    subscribed_only: bool = False
    registrants_only: bool = False
    course_id: int | None = None  # the course whose registrants `registrants_only` means

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any] | None, kind: str = "", course_id: int | None = None
    ) -> AudienceFilter:
        """Validate a campaign's audience JSON; absent flags take the campaign kind's default."""
        data = dict(data or {})
        unknown = sorted(set(data) - set(_LIST_KEYS) - set(_FLAG_KEYS))
        if unknown:
            known = ", ".join((*_LIST_KEYS, *_FLAG_KEYS))
            raise AudienceError(
                f"audience: unknown key(s) {', '.join(unknown)} (known: {known})",
                "audience.unknown_keys",
                keys=", ".join(unknown),
            )
        lists: dict[str, tuple[str, ...]] = {}
        for key in _LIST_KEYS:
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise AudienceError(
                    f"audience.{key}: expected a list of non-empty strings, got {value!r}",
                    "audience.not_list",
                    name=key,
                )
            lists[key] = tuple(dict.fromkeys(value))
        flags = dict(_KIND_DEFAULTS.get(kind, {}))
        for key in _FLAG_KEYS:
            if key in data:
                if not isinstance(data[key], bool):
                    raise AudienceError(
                        f"audience.{key}: expected true or false, got {data[key]!r}",
                        "audience.not_flag",
                        name=key,
                    )
                flags[key] = data[key]
        registrants_only = flags.get("registrants_only", False)
        if registrants_only and course_id is None:
            raise AudienceError(
                "audience.registrants_only: the campaign has no course",
                "audience.no_course",
                name="registrants_only",
            )
        return cls(
            **lists,
            subscribed_only=flags.get("subscribed_only", False),
            registrants_only=registrants_only,
            course_id=course_id,
        )

    @classmethod
    def for_campaign(cls, campaign: Campaign) -> AudienceFilter:
        """The filter a campaign row describes."""
        return cls.from_json(campaign.audience, campaign.kind, campaign.course_id)

    def conditions(self) -> list[ColumnElement[bool]]:
        """SQL conditions on `leads`: this filter, and never an opted-out or unreachable lead."""
        where: list[ColumnElement[bool]] = [Lead.opted_out.is_(False), Lead.reachable.is_(True)]
        if self.platforms:
            where.append(Lead.platform.in_(self.platforms))
        if self.hook_codes:
            where.append(Lead.hook_code.in_(self.hook_codes))
        if self.stages:
            where.append(Lead.stage.in_(self.stages))
        if self.subscribed_only:
            where.append(Lead.subscribed.is_(True))
        for tag in self.tags:
            where.append(exists().where(LeadTag.lead_id == Lead.id, LeadTag.name == tag))
        if self.registrants_only:
            where.append(
                exists().where(
                    CourseRegistration.lead_id == Lead.id, CourseRegistration.course_id == self.course_id
                )
            )
        return where


class AudienceMember(NamedTuple):
    """One lead of an audience as plain values (no ORM object outlives its batch)."""

    lead_id: int
    external_user_id: str
    owner_userid: str | None
    platform: str | None
    hook_code: str | None
    stage: str
    opted_out: bool
    reachable: bool


_COLUMNS = (
    Lead.id,
    Lead.external_user_id,
    Lead.owner_userid,
    Lead.platform,
    Lead.hook_code,
    Lead.stage,
    Lead.opted_out,
    Lead.reachable,
)


def batch_query(audience: AudienceFilter, after_id: int, limit: int) -> Select[*tuple[Any, ...]]:
    """The next page of the audience: leads with id > `after_id`, by id, at most `limit`."""
    return select(*_COLUMNS).where(*audience.conditions(), Lead.id > after_id).order_by(Lead.id).limit(limit)


def fetch_batch(
    session: Session, audience: AudienceFilter, after_id: int = 0, limit: int = BATCH_SIZE
) -> list[AudienceMember]:
    """One page of the audience after `after_id`, read in the caller's transaction."""
    if limit < 1:
        raise ValueError("limit: must be at least 1")
    # Core, not the ORM: plain values need none of the ORM's per-row work.
    rows = session.connection().execute(batch_query(audience, after_id, limit)).all()  # one fetch
    return list(map(AudienceMember._make, rows))


def iter_batches(
    db: Database, audience: AudienceFilter, batch_size: int = BATCH_SIZE
) -> Iterator[list[AudienceMember]]:
    """Stream the whole audience page by page, each page in its own short read."""
    after_id = 0
    while True:
        with db.read() as session:
            batch = fetch_batch(session, audience, after_id, batch_size)
        if not batch:
            return
        yield batch
        after_id = batch[-1].lead_id


def stream(db: Database, audience: AudienceFilter, batch_size: int = BATCH_SIZE) -> Iterator[AudienceMember]:
    """Every lead of the audience in id order, holding at most one page in memory."""
    for batch in iter_batches(db, audience, batch_size):
        yield from batch


def count(session: Session, audience: AudienceFilter) -> int:
    """How many leads the audience holds now."""
    return int(session.scalar(select(func.count()).select_from(Lead).where(*audience.conditions())) or 0)
