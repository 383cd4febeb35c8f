"""Keeps member–customer relationships in step with `change_external_contact` events."""

from __future__ import annotations

from sqlalchemy import select

from bot.routing import HandlerContext, Router, change_type
from bot.wecom.events import ChangeType, Event, ExternalContactChange
from models.contacts import ContactRelation, RelationStatus

router = Router("relations")

_STATUS_BY_CHANGE = {
    ChangeType.ADD_EXTERNAL_CONTACT: RelationStatus.ACTIVE,
    ChangeType.ADD_HALF_EXTERNAL_CONTACT: RelationStatus.PENDING,
    ChangeType.DEL_FOLLOW_USER: RelationStatus.REMOVED_BY_CUSTOMER,
    ChangeType.DEL_EXTERNAL_CONTACT: RelationStatus.REMOVED_BY_MEMBER,
}


def _relation(ctx: HandlerContext, user_id: str, external_user_id: str) -> ContactRelation | None:
    stmt = select(ContactRelation).where(
        ContactRelation.user_id == user_id, ContactRelation.external_user_id == external_user_id
    )
    return ctx.session.scalars(stmt).first()


@router.on(
    ExternalContactChange,
    change_type(
        ChangeType.ADD_EXTERNAL_CONTACT,
        ChangeType.ADD_HALF_EXTERNAL_CONTACT,
        ChangeType.DEL_FOLLOW_USER,
        ChangeType.DEL_EXTERNAL_CONTACT,
    ),
)
def track_relation(event: Event, ctx: HandlerContext) -> None:
    """Create or update the pair; the first `state` is kept, later ones are recorded as last."""
    assert isinstance(event, ExternalContactChange)
    status = _STATUS_BY_CHANGE[ChangeType(event.change_type)]
    relation = _relation(ctx, event.user_id, event.external_user_id)
    if relation is None:
        relation = ContactRelation(
            user_id=event.user_id,
            external_user_id=event.external_user_id,
            status=status,
            first_state=event.state,
            last_state=event.state,
            added_at=ctx.now,
            updated_at=ctx.now,
        )
        ctx.session.add(relation)
    else:
        if status == RelationStatus.PENDING and relation.status == RelationStatus.ACTIVE:
            return  # a late half-add never downgrades an accepted relationship
        relation.status = status
        relation.updated_at = ctx.now
        if event.state:
            relation.first_state = relation.first_state or event.state
            relation.last_state = event.state
    if status in (RelationStatus.REMOVED_BY_CUSTOMER, RelationStatus.REMOVED_BY_MEMBER):
        relation.removal_source = event.source or event.change_type
    ctx.audit(f"relation.{event.change_type}", f"contact:{event.external_user_id}", member=event.user_id)


@router.on(ExternalContactChange, change_type(ChangeType.TRANSFER_FAIL))
def record_transfer_failure(event: Event, ctx: HandlerContext) -> None:
    """A takeover failed: the customer stays with the member; remember why."""
    assert isinstance(event, ExternalContactChange)
    relation = _relation(ctx, event.user_id, event.external_user_id)
    if relation is None:
        relation = ContactRelation(
            user_id=event.user_id,
            external_user_id=event.external_user_id,
            status=RelationStatus.ACTIVE,
            added_at=ctx.now,
            updated_at=ctx.now,
        )
        ctx.session.add(relation)
    relation.transfer_fail_reason = event.fail_reason
    relation.updated_at = ctx.now
    ctx.audit("relation.transfer_fail", f"contact:{event.external_user_id}", reason=event.fail_reason)
