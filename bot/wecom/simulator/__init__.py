"""A faithful in-memory WeCom simulator served over real HTTP, for tests, demos and manual runs.

`Simulator` serves the WeCom API (gettoken, message/send) with WeCom's tokens, errcodes, rate
limits and silent drops, lets tests inject faults and skip time, and delivers encrypted callbacks
to a bot. The `callback_xml` builders produce the plaintext events in WeCom's exact shapes.
"""

from __future__ import annotations

from bot.wecom.simulator.callback_xml import (
    external_contact_event,
    external_tag_event,
    kf_msg_or_event,
    template_card_event,
    text_message,
)
from bot.wecom.simulator.callbacks import CallbackAttempt, CallbackResult, VerifyResult
from bot.wecom.simulator.cli import run_simulator
from bot.wecom.simulator.config import SimulatorConfig
from bot.wecom.simulator.corp import ApiCall, ApiError, AppMessage, DroppedMessage, SimulatedCorp
from bot.wecom.simulator.server import Simulator

__all__ = [
    "ApiCall",
    "ApiError",
    "AppMessage",
    "CallbackAttempt",
    "CallbackResult",
    "DroppedMessage",
    "SimulatedCorp",
    "Simulator",
    "SimulatorConfig",
    "VerifyResult",
    "external_contact_event",
    "external_tag_event",
    "kf_msg_or_event",
    "run_simulator",
    "template_card_event",
    "text_message",
]
