"""A faithful in-memory WeCom simulator served over real HTTP, for tests, demos and manual runs.

`Simulator` serves the WeCom API (gettoken, app messages and template cards, customer contact,
transfers between members, WeChat Customer Service) with WeCom's tokens, errcodes, rate limits and
silent drops, lets tests inject faults and skip time, and delivers encrypted callbacks to a bot.
Simulated clients (customers scanning a QR code, members deleting customers or clicking cards,
customers refusing a transfer, admins editing tags, kf customers and servicers) act through control
methods, and only they raise callbacks. The `callback_xml` builders produce the plaintext events in
WeCom's exact shapes.
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
from bot.wecom.simulator.cards import CardState, CardUpdate, ResponseCode, SentTemplateCard
from bot.wecom.simulator.cli import run_simulator
from bot.wecom.simulator.config import SimulatorConfig
from bot.wecom.simulator.contacts import AddResult, Relation, Welcome
from bot.wecom.simulator.corp import ApiCall, ApiError, AppMessage, DroppedMessage, SimulatedCorp
from bot.wecom.simulator.kf import KfDelivery, KfSent, KfSession
from bot.wecom.simulator.server import Simulator
from bot.wecom.simulator.transfers import Transfer

__all__ = [
    "AddResult",
    "ApiCall",
    "ApiError",
    "AppMessage",
    "CallbackAttempt",
    "CallbackResult",
    "CardState",
    "CardUpdate",
    "DroppedMessage",
    "KfDelivery",
    "KfSent",
    "KfSession",
    "Relation",
    "ResponseCode",
    "SentTemplateCard",
    "SimulatedCorp",
    "SimulationError",
    "Simulator",
    "SimulatorConfig",
    "Transfer",
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
