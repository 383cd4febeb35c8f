"""Forms for A/B variants: approving a version as a variant, and changing a live variant's weight."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import IntegerField
from wtforms.validators import InputRequired, NumberRange

from bot.console.forms import ApproveForm
from scripts_library.experiments import DEFAULT_WEIGHT, MAX_WEIGHT

_WEIGHT_HINT = _l("A whole number from %(low)d to %(high)d.", low=0, high=MAX_WEIGHT)


class VariantApproveForm(ApproveForm):
    """Approve a submitted version as a live A/B variant next to the version in use."""

    weight = IntegerField(
        _l("Weight"),
        default=DEFAULT_WEIGHT,
        validators=[
            InputRequired(_l("Give the variant a weight.")),
            NumberRange(1, MAX_WEIGHT, _l("A new variant's weight is 1 to %(n)d.", n=MAX_WEIGHT)),
        ],
    )


class WeightForm(FlaskForm):
    """A live variant's share of new leads, relative to the other live variants."""

    weight = IntegerField(
        _l("Weight"),
        validators=[InputRequired(_WEIGHT_HINT), NumberRange(0, MAX_WEIGHT, _WEIGHT_HINT)],
    )
