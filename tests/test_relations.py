"""The relations handler keeps member–customer pairs in step with change_external_contact."""

from __future__ import annotations

from sqlalchemy import select

from bot.services import Services
from bot.worker import Worker
from handlers import build_dispatcher
from models.audit import AuditEntry
from models.contacts import ContactRelation, RelationStatus
from tests.callbacks import contact_event, envelope, params_of


def deliver(services: Services, xml: str) -> None:
    ingestor = services.ingestor
    assert ingestor is not None
    query, body = envelope(xml)
    p = params_of(query)
    ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body)
    Worker(services.settings, services.db, services.coordinator, build_dispatcher()).drain()


def relation(services: Services, external: str = "wmEXT0001") -> ContactRelation:
    with services.db.transaction() as session:
        return session.scalars(
            select(ContactRelation).where(ContactRelation.external_user_id == external)
        ).one()


def test_add_keeps_first_state_and_records_later_ones(services: Services) -> None:
    deliver(services, contact_event(state="XHS888", create_time=1))
    deliver(services, contact_event("del_follow_user", state=None, create_time=2))
    assert relation(services).status == RelationStatus.REMOVED_BY_CUSTOMER
    deliver(services, contact_event(state="DY001", create_time=3))
    r = relation(services)
    assert (r.status, r.first_state, r.last_state) == (RelationStatus.ACTIVE, "XHS888", "DY001")


def test_re_add_without_state_keeps_attribution(services: Services) -> None:
    deliver(services, contact_event(state="BILI01", create_time=1))
    deliver(services, contact_event(state=None, create_time=2))
    r = relation(services)
    assert (r.first_state, r.last_state) == ("BILI01", "BILI01")


def test_half_add_then_add_then_late_half_add(services: Services) -> None:
    deliver(services, contact_event("add_half_external_contact", create_time=1))
    assert relation(services).status == RelationStatus.PENDING
    deliver(services, contact_event("add_external_contact", create_time=2))
    deliver(services, contact_event("add_half_external_contact", create_time=3, welcome_code="W2"))
    assert relation(services).status == RelationStatus.ACTIVE


def test_member_deletion_records_the_source(services: Services) -> None:
    deliver(services, contact_event(create_time=1))
    xml = contact_event("del_external_contact", state=None, welcome_code=None, create_time=2).replace(
        "</xml>", "<Source><![CDATA[DELETE_BY_TRANSFER]]></Source></xml>"
    )
    deliver(services, xml)
    r = relation(services)
    assert (r.status, r.removal_source) == (RelationStatus.REMOVED_BY_MEMBER, "DELETE_BY_TRANSFER")


def test_transfer_failure_is_recorded_and_audited(services: Services) -> None:
    deliver(services, contact_event(create_time=1))
    xml = contact_event("transfer_fail", state=None, welcome_code=None, create_time=2).replace(
        "</xml>", "<FailReason><![CDATA[customer_refused]]></FailReason></xml>"
    )
    deliver(services, xml)
    assert relation(services).transfer_fail_reason == "customer_refused"
    with services.db.transaction() as session:
        stmt = select(AuditEntry.action).where(AuditEntry.action.like("relation.%")).order_by(AuditEntry.id)
        actions = list(session.scalars(stmt))
    assert actions == ["relation.add_external_contact", "relation.transfer_fail"]
