"""Messages held by the final-text lint wait for a compliance reviewer to release or discard them."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.accounts import create_user
from bot.delivery.outbox import enqueue
from bot.delivery.review import discard, held, release
from bot.services import Services
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.ledger import LedgerEntry
from scripts_library.catalogue import PermissionDenied, WorkflowError
from tests.scripts_fixtures import POLICY, approved

REMINDER = "{{ manager.name }}，您有一项待处理任务：{{ task.title }}，请在 {{ task.due }} 前完成。"


def queue_held(services: Services, purpose: str) -> int:
    with services.db.transaction() as session:
        d = enqueue(
            session, purpose_key=purpose, channel=Channel.APP_MESSAGE, recipient="zhangsan",
            script_key="staff_reminder", policy=POLICY,
            values={"manager": {"name": "张三"}, "task": {"title": "确认全市场最佳的方案", "due": "9点"}},
        )  # fmt: skip
        assert d.status == DeliveryStatus.HELD and d.lint_verdict == "review" and d.ledger_seq is None
        return d.id


@pytest.fixture
def reviewed(services: Services) -> Services:
    with services.db.transaction() as session:
        approved(session, "staff_reminder", "staff_reminder", REMINDER)
        create_user(session, "mia", "manager", "manager-password")
    return services


def test_release_queues_and_ledgers_the_held_message(reviewed: Services) -> None:
    delivery_id = queue_held(reviewed, "r1")
    with reviewed.db.transaction() as session:
        assert [d.id for d in held(session)] == [delivery_id]
        with pytest.raises(PermissionDenied):
            release(session, delivery_id, "olivia")
    with reviewed.db.transaction() as session:
        row = release(session, delivery_id, "chen")
        assert row.status == DeliveryStatus.QUEUED and row.ledger_seq is not None
    with reviewed.db.transaction() as session:
        assert session.scalars(select(LedgerEntry.rendered_text)).one().startswith("张三")
        with pytest.raises(WorkflowError, match="not held"):
            release(session, delivery_id, "chen")


def test_discard_needs_a_reason_and_never_sends(reviewed: Services) -> None:
    delivery_id = queue_held(reviewed, "r2")
    with reviewed.db.transaction() as session:
        with pytest.raises(WorkflowError, match="reason"):
            discard(session, delivery_id, "chen", "")
        discard(session, delivery_id, "chen", "绝对化用语")
    with reviewed.db.transaction() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None and row.status == DeliveryStatus.CANCELLED
        assert session.scalars(select(LedgerEntry)).all() == []
