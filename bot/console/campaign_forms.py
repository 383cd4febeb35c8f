"""Console forms for campaigns and courses, and the placing of the services' refusals next to the fields."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    Field,
    IntegerField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from bot.campaigns import catalog
from bot.console.blueprint import SHANGHAI
from bot.console.forms import KIND_LABELS
from bot.console.texts import CAMPAIGN_KIND_LABELS, SCHEDULE_LABELS, STAGE_LABELS, refusal
from models.campaigns import Campaign, Course, ScheduleKind
from models.leads import PLATFORM_NAMES
from models.scripts import Script, ScriptVersion, VersionStatus

LOCAL_FORMAT = "%Y-%m-%dT%H:%M"
_REQUIRED = _l("This field is required.")


class CheckboxesField(SelectMultipleField):
    """A multiple choice shown as a list of checkboxes."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def _choices(labels: Mapping[Any, Any]) -> list[SelectChoice]:
    return [SelectChoice(str(value), label) for value, label in labels.items()]


def _comma_list(raw: str | None) -> list[str]:
    """Items typed as a comma (or 、/，) separated list, blanks dropped."""
    text = (raw or "").replace("，", ",").replace("、", ",")
    return [item.strip() for item in text.split(",") if item.strip()]


class CampaignForm(FlaskForm):
    """A campaign's key, name, kind, script, schedule and audience (key and kind are fixed once created)."""

    key = StringField(_l("Key"), validators=[DataRequired(_REQUIRED), Length(max=64)])
    name = StringField(_l("Name"), validators=[DataRequired(_REQUIRED), Length(max=128)])
    kind = SelectField(_l("Kind"), choices=_choices(CAMPAIGN_KIND_LABELS))
    script_key = SelectField(_l("Script"), validate_choice=False, validators=[DataRequired(_REQUIRED)])
    schedule_kind = SelectField(_l("Schedule"), choices=_choices(SCHEDULE_LABELS))
    time_of_day = StringField(_l("Time of day (HH:MM)"), validators=[Optional(), Length(max=5)])
    run_at = DateTimeLocalField(_l("Send at"), validators=[Optional()], format=LOCAL_FORMAT)
    course_key = SelectField(_l("Course"), validate_choice=False)
    offset_minutes = IntegerField(
        _l("Minutes from the course start (negative = before)"),
        validators=[Optional(), NumberRange(-catalog.MAX_OFFSET_MINUTES, catalog.MAX_OFFSET_MINUTES)],
    )
    platforms = CheckboxesField(_l("Platforms"), choices=_choices(PLATFORM_NAMES))
    hook_codes = StringField(_l("Hook codes (comma separated)"), validators=[Optional(), Length(max=1000)])
    tags = StringField(_l("Tags (comma separated)"), validators=[Optional(), Length(max=1000)])
    stages = CheckboxesField(_l("Stages"), choices=_choices(STAGE_LABELS))
    registrants_only = BooleanField(_l("Only leads registered for the course (course sends)"))

    def fill_choices(self, session: Session, now: datetime, current: Campaign | None = None) -> None:
        """Approved scripts grouped by kind, and the courses a schedule may still refer to."""
        self.script_key.choices = approved_script_choices(session)
        stmt = select(Course).where(Course.starts_at > now)
        if current is not None and current.course_id is not None:
            stmt = select(Course).where((Course.starts_at > now) | (Course.id == current.course_id))
        found = session.scalars(stmt.order_by(Course.starts_at, Course.id))
        self.course_key.choices = [SelectChoice("", "—")]
        self.course_key.choices += [SelectChoice(c.key, f"{c.key} · {c.title}") for c in found]

    def schedule(self) -> catalog.Schedule:
        """The schedule the form describes: only the inputs of the chosen kind count."""
        kind = self.schedule_kind.data or ""
        if kind in (ScheduleKind.TRADING_DAYS, ScheduleKind.DAILY):
            return catalog.Schedule(kind, time_of_day=(self.time_of_day.data or "").strip() or None)
        if kind == ScheduleKind.ONCE:
            at = self.run_at.data
            return catalog.Schedule(kind, run_at=at.replace(tzinfo=SHANGHAI) if at else None)
        if kind == ScheduleKind.COURSE:
            return catalog.Schedule(
                kind, course_key=self.course_key.data or None, offset_minutes=self.offset_minutes.data
            )
        return catalog.Schedule(kind)

    def audience(self) -> dict[str, Any]:
        """The audience filter; consent (subscribers only, or registrants) is left to the catalogue."""
        audience: dict[str, Any] = {}
        lists = {
            "platforms": self.platforms.data or [],
            "hook_codes": _comma_list(self.hook_codes.data),
            "tags": _comma_list(self.tags.data),
            "stages": self.stages.data or [],
        }
        audience.update({name: values for name, values in lists.items() if values})
        if self.registrants_only.data:
            audience["registrants_only"] = True
        return audience

    def load(self, campaign: Campaign, course_key: str) -> None:
        """Show a stored campaign in the form."""
        self.key.data, self.name.data, self.kind.data = campaign.key, campaign.name, campaign.kind
        self.script_key.data, self.schedule_kind.data = campaign.script_key, campaign.schedule_kind
        self.time_of_day.data = campaign.time_of_day
        self.run_at.data = (
            campaign.run_at.astimezone(SHANGHAI).replace(tzinfo=None) if campaign.run_at else None
        )
        self.course_key.data, self.offset_minutes.data = course_key, campaign.offset_minutes
        audience = campaign.audience or {}
        self.platforms.data = list(audience.get("platforms", []))
        self.hook_codes.data = ", ".join(audience.get("hook_codes", []))
        self.tags.data = ", ".join(audience.get("tags", []))
        self.stages.data = list(audience.get("stages", []))
        self.registrants_only.data = bool(audience.get("registrants_only"))

    def place(self, error: Exception) -> str | None:
        """Put a catalogue refusal next to the field its code names; returns its text when no field fits."""
        code: str = getattr(error, "code", "")
        params: Mapping[str, Any] = getattr(error, "params", {})
        head = code.split(".", 1)[0]
        in_course = self.offset_minutes if code.startswith("schedule.offset") else self.course_key
        schedule_fields: dict[str, Field] = {
            ScheduleKind.TRADING_DAYS: self.time_of_day,
            ScheduleKind.DAILY: self.time_of_day,
            ScheduleKind.ONCE: self.run_at,
            ScheduleKind.COURSE: in_course,
        }
        schedule_field = schedule_fields.get(self.schedule_kind.data or "")
        audience_fields: dict[str, Field] = {
            "platforms": self.platforms,
            "hook_codes": self.hook_codes,
            "tags": self.tags,
            "stages": self.stages,
        }
        by_head: dict[str, Field | None] = {
            "key": self.key,
            "name": self.name,
            "kind": self.kind,
            "script": self.script_key,
            "schedule": schedule_field or self.schedule_kind,
            "audience": audience_fields.get(str(params.get("name", "")), self.registrants_only),
        }
        return _add_error(by_head.get(head), refusal(error))


class CourseForm(FlaskForm):
    """A new course, optionally with its invite and reminder campaigns."""

    key = StringField(_l("Key"), validators=[DataRequired(_REQUIRED), Length(max=48)])
    title = StringField(_l("Title"), validators=[DataRequired(_REQUIRED), Length(max=128)])
    speaker_name = StringField(_l("Speaker"), validators=[DataRequired(_REQUIRED), Length(max=64)])
    speaker_sac_no = StringField(
        _l("Speaker's SAC registration number"), validators=[DataRequired(_REQUIRED), Length(max=32)]
    )
    starts_at = DateTimeLocalField(_l("Starts at"), validators=[DataRequired(_REQUIRED)], format=LOCAL_FORMAT)
    link = StringField(_l("Live link"), validators=[DataRequired(_REQUIRED), Length(max=512)])
    with_campaigns = BooleanField(_l("Also create its invite and reminder campaigns"))
    invite_lead_minutes = IntegerField(
        _l("Invite: minutes before the start"),
        default=catalog.DEFAULT_INVITE_LEAD_MINUTES,
        validators=[Optional(), NumberRange(1, catalog.MAX_OFFSET_MINUTES)],
    )
    reminder_minutes = IntegerField(
        _l("Reminder: minutes before the start"),
        default=catalog.DEFAULT_REMINDER_MINUTES,
        validators=[Optional(), NumberRange(1, catalog.MAX_OFFSET_MINUTES)],
    )

    def place(self, error: Exception) -> str | None:
        """Put a course or campaign refusal next to the field it is about; returns it when no field fits."""
        code: str = getattr(error, "code", "")
        by_code: dict[str, Field | None] = {
            "course.key_format": self.key,
            "course.exists": self.key,
            "course.title_length": self.title,
            "course.speaker_length": self.speaker_name,
            "course.sac_format": self.speaker_sac_no,
            "course.starts_zone": self.starts_at,
            "course.starts_passed": self.starts_at,
            "course.link_format": self.link,
            "course.link_domain": self.link,
            "course.link_no_domains": self.link,
            "course.invite_minutes": self.invite_lead_minutes,
            "course.invite_after_reminder": self.invite_lead_minutes,
            "course.reminder_minutes": self.reminder_minutes,
            "author.unknown": None,
            "author.role": None,
        }
        # Anything else is the catalogue refusing one of the course's campaigns.
        target = by_code.get(code, self.with_campaigns) if code else None
        return _add_error(target, refusal(error))


class AttendanceForm(FlaskForm):
    """A CSV of who attended a course: a header naming external_userid, optionally minutes."""

    file = FileField(_l("Attendance CSV"), validators=[FileRequired(_REQUIRED)])


def _add_error(target: Field | None, message: str) -> str | None:
    if target is None:
        return message
    target.errors = [*target.errors, message]
    return None


def approved_script_choices(session: Session) -> list[SelectChoice]:
    """Scripts with an approved version, grouped under their kind's label (campaigns send only these)."""
    rows = session.execute(
        select(Script.key, Script.kind)
        .join(ScriptVersion, ScriptVersion.script_id == Script.id)
        .where(ScriptVersion.status == VersionStatus.APPROVED)
        .distinct()
        .order_by(Script.kind, Script.key)
    ).all()
    sent = set(catalog.SCRIPT_KIND.values())
    labels = {str(k): v for k, v in KIND_LABELS.items()}
    return [
        SelectChoice(key, key, optgroup=str(labels.get(kind, kind))) for key, kind in rows if kind in sent
    ]
