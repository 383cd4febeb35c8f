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
from models.previews import CampaignPreview, PreviewRecipient, PreviewStatus
from models.scoring import ScoreEvent, ScoreKind, StageChange
from models.scripts import Approval, Audience, Script, ScriptKind, ScriptVersion, VersionStatus
from models.users import Role, User
from models.variants import (
    ExperimentStatus,
    ScriptExperiment,
    ScriptVariant,
    VariantAssignment,
    VariantStatus,
)

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
    "CampaignPreview",
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
    "ExperimentStatus",
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
    "PreviewRecipient",
    "PreviewStatus",
    "RecipientChannel",
    "RelationStatus",
    "Role",
    "RunRecipient",
    "RunStatus",
    "ScheduleKind",
    "ScoreEvent",
    "ScoreKind",
    "Script",
    "ScriptExperiment",
    "ScriptKind",
    "ScriptVariant",
    "ScriptVersion",
    "StageChange",
    "Switch",
    "User",
    "VariantAssignment",
    "VariantStatus",
    "VersionStatus",
    "utcnow",
]
