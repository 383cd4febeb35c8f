"""A faithful in-memory WeCom simulator served over real HTTP, for tests, demos and manual runs.

`Simulator` serves the WeCom API (gettoken, message/send, customer contact, WeChat Customer
Service) with WeCom's tokens, errcodes, rate limits and silent drops, lets tests inject faults and
skip time, and delivers encrypted callbacks to a bot. Simulated clients (customers scanning a QR
code, members deleting customers, admins editing tags, kf customers and servicers) act through
control methods, and only they raise callbacks. The `callback_xml` builders produce the plaintext
events in WeCom's exact shapes.
"""

from __future__ import annotations

from bot.wecom.simulator.api import SimulationError
from bot.wecom.simulator.callback_xml import (
    customer_acquisition_event,
    external_contact_event,
    external_tag_event,
    kf_msg_or_event,
    template_card_event,
    text_message,
)
from bot.wecom.simulator.callbacks import CallbackAttempt, CallbackResult, VerifyResult
from bot.wecom.simulator.cli import run_simulator
from bot.wecom.simulator.config import SimulatorConfig
from bot.wecom.simulator.contacts import AddResult, Relation, Welcome
from bot.wecom.simulator.corp import ApiCall, ApiError, AppMessage, DroppedMessage, SimulatedCorp
from bot.wecom.simulator.kf import KfDelivery, KfSent, KfSession
from bot.wecom.simulator.server import Simulator

__all__ = [
    "AddResult",
    "ApiCall",
    "ApiError",
    "AppMessage",
    "CallbackAttempt",
    "CallbackResult",
    "DroppedMessage",
    "KfDelivery",
    "KfSent",
    "KfSession",
    "Relation",
    "SimulatedCorp",
    "SimulationError",
    "Simulator",
    "SimulatorConfig",
    "VerifyResult",
    "Welcome",
    "customer_acquisition_event",
    "external_contact_event",
    "external_tag_event",
    "kf_msg_or_event",
    "run_simulator",
    "template_card_event",
    "text_message",
]
