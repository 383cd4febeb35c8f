"""Console forms: every one carries a CSRF token; labels and messages are translated."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import DateTimeLocalField, PasswordField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from bot.accounts import MIN_PASSWORD_LENGTH
from models.scripts import ScriptKind
from models.users import Role

KIND_LABELS = {
    ScriptKind.WELCOME: _l("Welcome"),
    ScriptKind.MORNING_REPORT: _l("Morning report"),
    ScriptKind.COURSE_INVITE: _l("Course invitation"),
    ScriptKind.COURSE_REMINDER: _l("Course reminder"),
    ScriptKind.SUBSCRIBE_CONFIRM: _l("Subscription confirmation"),
    ScriptKind.UNSUBSCRIBE_CONFIRM: _l("Opt-out confirmation"),
    ScriptKind.KEYWORD_REPLY: _l("Keyword reply"),
    ScriptKind.FALLBACK: _l("Fallback reply"),
    ScriptKind.HANDOFF_BRIEF: _l("Handoff brief (staff)"),
    ScriptKind.STAFF_REMINDER: _l("Staff reminder"),
}

ROLE_LABELS = {
    Role.ADMIN: _l("Administrator"),
    Role.OPERATOR: _l("Operator"),
    Role.COMPLIANCE: _l("Compliance reviewer"),
    Role.MANAGER: _l("Account manager"),
}

_REQUIRED = _l("This field is required.")


def _choices(labels: Mapping[Any, Any]) -> list[SelectChoice]:
    return [SelectChoice(str(value), label) for value, label in labels.items()]


class LoginForm(FlaskForm):
    """Sign in with a username and password."""

    username = StringField(_l("Username"), validators=[DataRequired(_REQUIRED), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_REQUIRED), Length(max=256)])


class LogoutForm(FlaskForm):
    """Sign out (a POST, so another site cannot sign the user out)."""


class ActionForm(FlaskForm):
    """A button that changes something and needs nothing but the CSRF token."""


class NewScriptForm(FlaskForm):
    """Register a script key of a kind."""

    key = StringField(
        _l("Key"),
        validators=[
            DataRequired(_REQUIRED),
            Length(max=64),
            Regexp(r"^[A-Za-z0-9_-]+$", message=_l("Use ASCII letters, digits, '_' or '-'.")),
        ],
    )
    kind = SelectField(_l("Kind"), choices=_choices(KIND_LABELS), validators=[DataRequired(_REQUIRED)])
    description = StringField(_l("Description"), validators=[Optional(), Length(max=256)])


class DraftForm(FlaskForm):
    """The body of a draft version."""

    body = TextAreaField(
        _l("Script text"), validators=[DataRequired(_REQUIRED), Length(max=4000)], render_kw={"rows": 12}
    )


class ApproveForm(FlaskForm):
    """Approve a submitted version, optionally only for a window of time (Shanghai time)."""

    valid_from = DateTimeLocalField(_l("Valid from"), validators=[Optional()], format="%Y-%m-%dT%H:%M")
    valid_until = DateTimeLocalField(_l("Valid until"), validators=[Optional()], format="%Y-%m-%dT%H:%M")
    reason = StringField(_l("Note"), validators=[Optional(), Length(max=500)])


class ReasonForm(FlaskForm):
    """A decision that must say why (rejecting a version, discarding a held message)."""

    reason = TextAreaField(
        _l("Reason"), validators=[DataRequired(_REQUIRED), Length(max=500)], render_kw={"rows": 2}
    )


class NewUserForm(FlaskForm):
    """Create a console account."""

    username = StringField(_l("Username"), validators=[DataRequired(_REQUIRED), Length(max=64)])
    role = SelectField(
        _l("Role"),
        choices=_choices(ROLE_LABELS),
        default=Role.OPERATOR.value,
        validators=[DataRequired(_REQUIRED)],
    )
    password = PasswordField(
        _l("Initial password"),
        validators=[
            DataRequired(_REQUIRED),
            Length(
                min=MIN_PASSWORD_LENGTH,
                max=256,
                message=_l("At least %(n)d characters.", n=MIN_PASSWORD_LENGTH),
            ),
        ],
    )
