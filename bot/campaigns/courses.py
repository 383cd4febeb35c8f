"""Live investor-education courses: creation with the speaker's SAC number, registrations, attendance."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.config import ComplianceSettings
from models.audit import AuditEntry
from models.base import utcnow
from models.bulk import conflict_insert
from models.campaigns import Course, CourseAttendance, CourseRegistration
from models.leads import Lead
from models.users import Role, User

AUTHOR_ROLES = frozenset({Role.ADMIN, Role.OPERATOR})
# Course keys leave room for the "-invite" / "-reminder" suffix of their campaigns' keys.
COURSE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{2,48}$")
# SAC registration numbers: one letter (S = 投资顾问/投资咨询, A = 一般证券业务, …) and 13 digits.
SAC_RE = re.compile(r"^[A-Z]\d{13}$")
REGISTRATION_CHANNELS = frozenset({"kf", "console", "import"})
MAX_ATTENDANCE_MINUTES = 24 * 60
_LOOKUP_CHUNK = 500


class CourseError(ValueError):
    """A course, registration or attendance import cannot be done as asked; the message says why.

    `code` names the refusal and `params` the values its message mentions, so the console can say it
    in the reader's language; the English message stays for the CLI and logs.
    """

    def __init__(self, message: str, code: str = "", **params: Any) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


def require_author(session: Session, username: str, error: Callable[..., ValueError] = CourseError) -> User:
    """The active admin or operator account named `username`, or refuse with `error`."""
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or not user.active:
        raise error(f"no active account named {username!r}", "author.unknown", username=username)
    if user.role not in AUTHOR_ROLES:
        raise error(
            f"{username} ({user.role}) may not manage campaigns or courses; admins and operators may",
            "author.role",
            username=username,
            role=user.role,
        )
    return user


def _audit(session: Session, at: datetime, actor: str, action: str, target: str, **detail: object) -> None:
    session.add(AuditEntry(at=at, actor=actor, action=action, target=target, detail=detail))


def link_allowed(url: str, domains: Iterable[str]) -> bool:
    """Whether `url`'s host is one of `domains` or a subdomain of one (the linter's rule)."""
    host = (urlsplit(url).hostname or "").strip(".").lower()
    allowed = [d.lower().strip(".") for d in domains]
    return bool(host) and any(host == d or host.endswith("." + d) for d in allowed if d)


def get_course(session: Session, key: str) -> Course:
    """The course with `key`, or refuse with a clear error."""
    course = session.scalars(select(Course).where(Course.key == key)).first()
    if course is None:
        raise CourseError(f"no course {key!r}", "course.unknown", key=key)
    return course


def create_course(
    session: Session,
    key: str,
    title: str,
    speaker_name: str,
    speaker_sac_no: str,
    starts_at: datetime,
    link: str,
    actor: str,
    compliance: ComplianceSettings,
    now: datetime | None = None,
) -> Course:
    """Register a future course after checking the speaker's SAC number and the link's domain; audit it."""
    now = now or utcnow()
    require_author(session, actor)
    if not COURSE_KEY_RE.match(key):
        raise CourseError("key: 2-48 characters from letters, digits, '_' and '-'", "course.key_format")
    title, speaker_name = title.strip(), speaker_name.strip()
    if not title or len(title) > 128:
        raise CourseError("title: 1-128 characters", "course.title_length")
    if not speaker_name or len(speaker_name) > 64:
        raise CourseError("speaker: 1-64 characters", "course.speaker_length")
    sac = unicodedata.normalize("NFKC", speaker_sac_no).strip().upper()
    if not SAC_RE.match(sac):
        raise CourseError(
            f"SAC registration number {speaker_sac_no!r}: expected one capital letter and 13 digits"
            " (pattern ^[A-Z]\\d{13}$, e.g. S0260612345678 for 投资顾问, A… for 一般证券业务)",
            "course.sac_format",
            value=speaker_sac_no,
        )
    if starts_at.tzinfo is None or starts_at.utcoffset() is None:
        raise CourseError("start time: give a time zone (e.g. +08:00)", "course.starts_zone")
    if starts_at <= now:
        raise CourseError(
            f"start time {starts_at.isoformat()} has passed", "course.starts_passed", starts_at=starts_at
        )
    link = link.strip()
    if len(link) > 512 or urlsplit(link).scheme not in ("http", "https"):
        raise CourseError("link: an http(s) URL of at most 512 characters", "course.link_format")
    if not link_allowed(link, compliance.allowed_link_domains):
        host = urlsplit(link).hostname or "?"
        domains = ", ".join(compliance.allowed_link_domains) or "(none configured)"
        raise CourseError(
            f"link: {host} is not an allowed domain (compliance.allowed_link_domains: {domains})",
            "course.link_domain" if compliance.allowed_link_domains else "course.link_no_domains",
            host=host,
            domains=", ".join(compliance.allowed_link_domains),
        )
    if session.scalars(select(Course.id).where(Course.key == key)).first() is not None:
        raise CourseError(f"course {key!r} exists", "course.exists", key=key)
    course = Course(
        key=key,
        title=title,
        speaker_name=speaker_name,
        speaker_sac_no=sac,
        starts_at=starts_at,
        link=link,
        created_by=actor,
        created_at=now,
    )
    session.add(course)
    session.flush()
    _audit(
        session,
        now,
        actor,
        "course.create",
        f"course:{key}",
        title=title,
        speaker=speaker_name,
        sac=sac,
        starts_at=starts_at.isoformat(),
        link=link,
    )
    return course


def upcoming_course(session: Session, now: datetime) -> Course | None:
    """The next course starting after `now` (what 报名 registers for), or None."""
    stmt = select(Course).where(Course.starts_at > now).order_by(Course.starts_at, Course.id).limit(1)
    return session.scalars(stmt).first()


def register(
    session: Session, course: Course, lead: Lead, channel: str, now: datetime, actor: str = "bot"
) -> bool:
    """Register `lead` for `course` once (the unique key decides); True when the registration is new."""
    if channel not in REGISTRATION_CHANNELS:
        channels = ", ".join(sorted(REGISTRATION_CHANNELS))
        raise CourseError(f"channel: one of {channels}", "course.channel", channels=channels)
    stmt = (
        conflict_insert(session, CourseRegistration)
        .values(course_id=course.id, lead_id=lead.id, channel=channel, registered_at=now)
        .on_conflict_do_nothing(index_elements=["course_id", "lead_id"])
        .returning(CourseRegistration.id)
    )
    new = session.execute(stmt).scalar() is not None
    if new:
        _audit(
            session,
            now,
            actor,
            "course.register",
            f"course:{course.key}",
            lead=lead.external_user_id,
            channel=channel,
        )
    return new


def registration_count(session: Session, course: Course) -> int:
    """How many leads registered for `course`."""
    stmt = (
        select(func.count()).select_from(CourseRegistration).where(CourseRegistration.course_id == course.id)
    )
    return int(session.scalar(stmt) or 0)


def attendance_count(session: Session, course: Course) -> int:
    """How many leads attended `course` (as imported)."""
    stmt = select(func.count()).select_from(CourseAttendance).where(CourseAttendance.course_id == course.id)
    return int(session.scalar(stmt) or 0)


class RowProblem(str):
    """Why an attendance row was not used, in English (as the CLI prints it), with a code and values.

    A str so reports read as before; `code` and `params` let the console word it in the reader's language.
    """

    code: str
    params: dict[str, Any]

    def __new__(cls, message: str, code: str, **params: Any) -> RowProblem:
        problem = super().__new__(cls, message)
        problem.code, problem.params = code, params
        return problem


@dataclass(frozen=True)
class AttendanceReport:
    """What an attendance import did: rows stored, and the rows it could not use with their line numbers."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    unknown: list[tuple[int, str]] = field(default_factory=list)  # (line, external_userid) not a lead
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line, problem)

    @property
    def stored(self) -> int:
        """Rows that matched a lead (new, updated or already current)."""
        return self.created + self.updated + self.unchanged


def _parse_attendance(csv_text: str) -> tuple[dict[str, tuple[int, int]], list[tuple[int, str]]]:
    """{external_userid: (line, minutes)} and the bad rows; a missing header column is fatal."""
    text = csv_text.removeprefix("\ufeff")  # spreadsheet exports often start with a BOM
    reader = csv.reader(io.StringIO(text), strict=True)
    header: list[str] | None = None
    rows: dict[str, tuple[int, int]] = {}
    bad: list[tuple[int, str]] = []
    try:
        for record in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in record]
                if "external_userid" not in header:
                    raise CourseError(
                        f"line {line}: the header must name an external_userid column (minutes is optional)",
                        "attendance.header",
                        line=line,
                    )
                continue
            values = dict(zip(header, (cell.strip() for cell in record), strict=False))
            userid = values.get("external_userid", "")
            if not userid:
                bad.append((line, RowProblem("external_userid is empty", "attendance.userid_empty")))
                continue
            if len(userid) > 64:
                bad.append(
                    (
                        line,
                        RowProblem("external_userid is longer than 64 characters", "attendance.userid_long"),
                    )
                )
                continue
            raw = values.get("minutes", "")
            if raw == "":
                minutes = 0
            elif raw.isascii() and raw.isdigit() and int(raw) <= MAX_ATTENDANCE_MINUTES:
                minutes = int(raw)
            else:
                message = f"minutes {raw!r} is not a whole number from 0 to {MAX_ATTENDANCE_MINUTES}"
                problem = RowProblem(message, "attendance.minutes", value=raw, max=MAX_ATTENDANCE_MINUTES)
                bad.append((line, problem))
                continue
            if userid in rows:
                first = rows[userid][0]
                message = f"{userid} already appears on line {first}; this row is ignored"
                bad.append((line, RowProblem(message, "attendance.duplicate", userid=userid, first=first)))
                continue
            rows[userid] = (line, minutes)
    except csv.Error as exc:
        raise CourseError(
            f"line {reader.line_num}: not valid CSV: {exc}",
            "attendance.csv",
            line=reader.line_num,
            error=str(exc),
        ) from None
    if header is None:
        raise CourseError(
            "the file is empty: expected a header with an external_userid column", "attendance.empty"
        )
    return rows, bad


def import_attendance(
    session: Session, course: Course, csv_text: str, actor: str, now: datetime | None = None
) -> AttendanceReport:
    """Store who attended `course` from a CSV (external_userid[, minutes]); re-importing updates minutes.

    Rows naming no known lead and malformed rows are reported with their line numbers, not fatal;
    a file without an external_userid header changes nothing.
    """
    now = now or utcnow()
    require_author(session, actor)
    if course.starts_at > now:
        raise CourseError(
            f"course {course.key} starts at {course.starts_at.isoformat()}; nothing to import yet",
            "attendance.not_started",
            key=course.key,
            starts_at=course.starts_at,
        )
    rows, bad = _parse_attendance(csv_text)
    userids = list(rows)
    leads: dict[str, int] = {}
    for i in range(0, len(userids), _LOOKUP_CHUNK):
        chunk = userids[i : i + _LOOKUP_CHUNK]
        leads.update(
            session.execute(
                select(Lead.external_user_id, Lead.id).where(Lead.external_user_id.in_(chunk))
            ).all()
        )
    existing: dict[int, int] = dict(
        session.execute(
            select(CourseAttendance.lead_id, CourseAttendance.minutes).where(
                CourseAttendance.course_id == course.id
            )
        ).all()
    )
    unknown: list[tuple[int, str]] = []
    created = updated = unchanged = 0
    for userid, (line, minutes) in rows.items():
        lead_id = leads.get(userid)
        if lead_id is None:
            unknown.append((line, userid))
            continue
        if lead_id in existing and existing[lead_id] == minutes:
            unchanged += 1
            continue
        if lead_id in existing:
            updated += 1
        else:
            created += 1
        stmt = (
            conflict_insert(session, CourseAttendance)
            .values(course_id=course.id, lead_id=lead_id, minutes=minutes, imported_at=now)
            .on_conflict_do_update(
                index_elements=["course_id", "lead_id"], set_={"minutes": minutes, "imported_at": now}
            )
        )
        session.execute(stmt)
    report = AttendanceReport(created, updated, unchanged, sorted(unknown), sorted(bad))
    _audit(
        session,
        now,
        actor,
        "course.attendance_import",
        f"course:{course.key}",
        created=created,
        updated=updated,
        unchanged=unchanged,
        unknown=len(unknown),
        bad=len(bad),
    )
    return report
