"""SQLAlchemy 2 typed models, one module per aggregate; importing this registers them all."""

from models.audit import AuditEntry
from models.base import Base, utcnow
from models.contacts import ContactRelation, RelationStatus
from models.inbox import EventStatus, InboundEvent
from models.users import Role, User

__all__ = [
    "AuditEntry",
    "Base",
    "ContactRelation",
    "EventStatus",
    "InboundEvent",
    "RelationStatus",
    "Role",
    "User",
    "utcnow",
]
