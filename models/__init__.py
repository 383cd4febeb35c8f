"""SQLAlchemy 2 typed models, one module per aggregate; importing this registers them all."""

from models.alerts import Alert
from models.audit import AuditEntry
from models.base import Base, utcnow
from models.calendar import CalendarOverride, OverrideKind
from models.contacts import ContactRelation, RelationStatus
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.inbox import EventStatus, InboundEvent
from models.kf import InboundRiskHit, IntentSignal, KfConversation, KfCursor
from models.leads import PLATFORM_NAMES, CorpTag, HookCode, Lead, LeadTag, LeadTouch, Member, Platform
from models.ledger import LedgerEntry
from models.scripts import Approval, Audience, Script, ScriptKind, ScriptVersion, VersionStatus
from models.users import Role, User

__all__ = [
    "PLATFORM_NAMES",
    "Alert",
    "Approval",
    "Audience",
    "AuditEntry",
    "Base",
    "CalendarOverride",
    "Channel",
    "ContactRelation",
    "CorpTag",
    "Delivery",
    "DeliveryStatus",
    "EventStatus",
    "HookCode",
    "InboundEvent",
    "InboundRiskHit",
    "IntentSignal",
    "KfConversation",
    "KfCursor",
    "Lead",
    "LeadTag",
    "LeadTouch",
    "LedgerEntry",
    "Member",
    "OverrideKind",
    "Platform",
    "RelationStatus",
    "Role",
    "Script",
    "ScriptKind",
    "ScriptVersion",
    "User",
    "VersionStatus",
    "utcnow",
]
