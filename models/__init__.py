"""SQLAlchemy 2 typed models, one module per aggregate; importing this registers them all."""

from models.alerts import Alert
from models.api_tokens import ApiScope, ApiToken
from models.audit import AuditEntry
from models.base import Base, utcnow
from models.calendar import CalendarOverride, OverrideKind
from models.campaigns import (
    Campaign,
    CampaignKind,
    CampaignRun,
    CampaignStatus,
    Course,
    CourseAttendance,
    CourseRegistration,
    MassTask,
    MassTaskStatus,
    RecipientChannel,
    RunRecipient,
    RunStatus,
    ScheduleKind,
    Switch,
)
from models.contacts import ContactRelation, RelationStatus
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.handoff import AccountManager, Handoff, HandoffStatus
from models.inbox import EventStatus, InboundEvent
from models.kf import InboundRiskHit, IntentSignal, KfConversation, KfCursor
from models.leads import PLATFORM_NAMES, CorpTag, HookCode, Lead, LeadTag, LeadTouch, Member, Platform
from models.ledger import LedgerEntry
from models.scoring import ScoreEvent, ScoreKind, StageChange
from models.scripts import Approval, Audience, Script, ScriptKind, ScriptVersion, VersionStatus
from models.users import Role, User

__all__ = [
    "PLATFORM_NAMES",
    "AccountManager",
    "Alert",
    "ApiScope",
    "ApiToken",
    "Approval",
    "Audience",
    "AuditEntry",
    "Base",
    "CalendarOverride",
    "Campaign",
    "CampaignKind",
    "CampaignRun",
    "CampaignStatus",
    "Channel",
    "ContactRelation",
    "CorpTag",
    "Course",
    "CourseAttendance",
    "CourseRegistration",
    "Delivery",
    "DeliveryStatus",
    "EventStatus",
    "Handoff",
    "HandoffStatus",
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
    "MassTask",
    "MassTaskStatus",
    "Member",
    "OverrideKind",
    "Platform",
    "RecipientChannel",
    "RelationStatus",
    "Role",
    "RunRecipient",
    "RunStatus",
    "ScheduleKind",
    "ScoreEvent",
    "ScoreKind",
    "Script",
    "ScriptKind",
    "ScriptVersion",
    "StageChange",
    "Switch",
    "User",
    "VersionStatus",
    "utcnow",
]
