"""Member–customer relationships kept in step with `change_external_contact` events."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from bot.routing import HandlerContext
from bot.wecom.events import ChangeType, ExternalContactChange
from models.contacts import ContactRelation, RelationStatus

STATUS_BY_CHANGE = {
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


def track_relation(event: ExternalContactChange, ctx: HandlerContext) -> ContactRelation:
    """Create or update the pair; the first `state` is kept, later ones are recorded as last."""
    return track_relations([(event, ctx)])[0]


def track_relations(items: Sequence[tuple[ExternalContactChange, HandlerContext]]) -> list[ContactRelation]:
    """`track_relation` for several events in one session, loading their pairs with one query."""
    session = items[0][1].session
    ext_ids = {event.external_user_id for event, _ctx in items}
    stmt = select(ContactRelation).where(ContactRelation.external_user_id.in_(ext_ids))
    pairs = {(r.user_id, r.external_user_id): r for r in session.scalars(stmt)}
    relations = []
    for event, ctx in items:
        status = STATUS_BY_CHANGE[ChangeType(event.change_type)]
        relation = pairs.get((event.user_id, event.external_user_id))
        if relation is None:
            relation = pairs[(event.user_id, event.external_user_id)] = ContactRelation(
                user_id=event.user_id,
                external_user_id=event.external_user_id,
                status=status,
                first_state=event.state,
                last_state=event.state,
                added_at=ctx.now,
                updated_at=ctx.now,
            )
            session.add(relation)
        elif not (status == RelationStatus.PENDING and relation.status == RelationStatus.ACTIVE):
            # (a late half-add never downgrades an accepted relationship)
            relation.status = status
            relation.updated_at = ctx.now
            if event.state:
                relation.first_state = relation.first_state or event.state
                relation.last_state = event.state
        if status in (RelationStatus.REMOVED_BY_CUSTOMER, RelationStatus.REMOVED_BY_MEMBER):
            relation.removal_source = event.source or event.change_type
        ctx.audit(f"relation.{event.change_type}", f"contact:{event.external_user_id}", member=event.user_id)
        relations.append(relation)
    return relations


def record_transfer_failure(event: ExternalContactChange, ctx: HandlerContext) -> None:
    """A takeover failed: the customer stays with the member; remember why."""
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


def has_active_relation(ctx: HandlerContext, external_user_id: str) -> bool:
    """Whether any member is still connected to the customer."""
    stmt = select(ContactRelation.id).where(
        ContactRelation.external_user_id == external_user_id, ContactRelation.status == RelationStatus.ACTIVE
    )
    return ctx.session.scalars(stmt).first() is not None
