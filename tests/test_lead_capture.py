"""Lead capture: hook-code attribution, first touch kept, tags, the welcome queued inside the window."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.leads.hookcodes import HookCodeError, create_code
from bot.services import Services
from bot.worker import Worker
from handlers import build_dispatcher
from models.alerts import Alert
from models.deliveries import Channel, Delivery, DeliveryStatus
from models.inbox import InboundEvent
from models.leads import Lead, LeadTag, LeadTouch, Member
from tests.callbacks import contact_event, envelope, params_of
from tests.scripts_fixtures import approved, ensure_people

WELCOME = (
    "{{ lead.display_name }}您好，欢迎从{{ hook.platform_name }}来到{{ firm.name }}，我是{{ manager.name }}。"
    "市场有风险，投资需谨慎。{{ firm.opt_out }}"
)
DEFAULT_WELCOME = (
    "您好，欢迎来到{{ firm.name }}，我是{{ manager.name }}。市场有风险，投资需谨慎。{{ firm.opt_out }}"
)


@pytest.fixture
def ready(services: Services) -> Services:
    """Approved welcomes, a member with a name, and two hook codes."""
    with services.db.transaction() as session:
        ensure_people(session)
        approved(session, "welcome_xiaohongshu", "welcome", WELCOME)
        approved(session, "welcome_default", "welcome", DEFAULT_WELCOME)
        session.add(Member(userid="zhangsan", name="张经理"))
        create_code(session, "XHS888", "xiaohongshu", ["zhangsan"], "olivia", campaign="双十一投教")
        create_code(session, "DY001", "douyin", ["zhangsan", "lisi"], "olivia")
    return services


def deliver(services: Services, xml: str) -> None:
    ingestor = services.ingestor
    assert ingestor is not None
    query, body = envelope(xml)
    p = params_of(query)
    ingestor.ingest(p["msg_signature"], p["timestamp"], p["nonce"], body)
    outcomes = Worker(services.settings, services.db, services.coordinator, build_dispatcher()).drain()
    assert all(o.status == "done" for o in outcomes), outcomes


def lead_of(session: Session, external: str = "wmEXT0001") -> Lead:
    return session.scalars(select(Lead).where(Lead.external_user_id == external)).one()


def test_code_rules_follow_wecom_limits(services: Services) -> None:
    with services.db.transaction() as session:
        ensure_people(session)
        for code, platform, members, message in [
            ("X" * 31, "douyin", ["u"], "2-30 characters"),
            ("含中文", "douyin", ["u"], "2-30 characters"),
            ("OK01", "myspace", ["u"], "platform"),
            ("OK01", "douyin", [], "members"),
            ("OK01", "douyin", [f"u{i}" for i in range(101)], "members"),
        ]:
            with pytest.raises(HookCodeError, match=message):
                create_code(session, code, platform, members, "olivia")
        create_code(session, "OK01", "douyin", ["u"], "olivia", keyword="DY666")
        with pytest.raises(HookCodeError, match="exists"):
            create_code(session, "OK01", "douyin", ["u"], "olivia")
        with pytest.raises(HookCodeError, match="keyword"):
            create_code(session, "OK02", "douyin", ["u"], "olivia", keyword="DY666")


def test_attributed_arrival_is_tagged_and_welcomed_with_the_platform_script(ready: Services) -> None:
    import time

    sent_at = int(time.time()) - 3  # WeCom issued the code 3 s before we stored the callback
    deliver(ready, contact_event(state="XHS888", welcome_code="WC1", create_time=sent_at))
    with ready.db.transaction() as session:
        lead = lead_of(session)
        assert (lead.platform, lead.hook_code, lead.owner_userid) == ("xiaohongshu", "XHS888", "zhangsan")
        tags = set(session.scalars(select(LeadTag.name).where(LeadTag.lead_id == lead.id)))
        assert tags == {"platform:xiaohongshu", "code:XHS888"}
        welcome = session.scalars(select(Delivery)).one()
        event = session.scalars(select(InboundEvent)).one()
    assert welcome.channel == Channel.CONTACT_WELCOME and welcome.status == DeliveryStatus.QUEUED
    assert welcome.script_key == "welcome_xiaohongshu" and welcome.params == {"welcome_code": "WC1"}
    assert "欢迎从小红书来到示例证券，我是张经理" in welcome.text
    assert welcome.priority == 0 and welcome.ledger_seq is not None
    # The code's 20 s run from when WeCom issued it, not from when we stored the callback.
    from datetime import UTC, datetime

    assert welcome.deadline == datetime.fromtimestamp(sent_at, UTC) + timedelta(seconds=20)
    assert welcome.deadline < event.received_at + timedelta(seconds=20)


@pytest.mark.parametrize("state", ["NOPE42", None])
def test_unknown_or_missing_state_still_creates_an_unattributed_lead(
    ready: Services, state: str | None
) -> None:
    deliver(ready, contact_event(state=state, welcome_code="WC2"))
    with ready.db.transaction() as session:
        lead = lead_of(session)
        assert (lead.platform, lead.hook_code, lead.first_state_raw) == (None, None, state)
        touch = session.scalars(select(LeadTouch)).one()
        assert touch.raw_state == state and touch.code is None
        assert touch.detail == ({"unknown_code": state} if state else {})
        assert session.scalars(select(Delivery.script_key)).one() == "welcome_default"


def test_first_touch_is_kept_and_later_touches_are_appended(ready: Services) -> None:
    deliver(ready, contact_event(state="XHS888", create_time=1, welcome_code=None))
    deliver(ready, contact_event("del_follow_user", state=None, welcome_code=None, create_time=2))
    deliver(ready, contact_event(user_id="lisi", state="DY001", create_time=3, welcome_code="WC3"))
    with ready.db.transaction() as session:
        lead = lead_of(session)
        assert (lead.hook_code, lead.owner_userid, lead.reachable) == ("XHS888", "lisi", True)
        assert [t.code for t in session.scalars(select(LeadTouch).order_by(LeadTouch.id))] == [
            "XHS888",
            "DY001",
        ]
        assert len(session.scalars(select(Delivery)).all()) == 1  # only the add with a welcome code


def test_no_approved_welcome_alerts_but_keeps_the_lead(services: Services) -> None:
    deliver(services, contact_event(state=None, welcome_code="WC4"))
    with services.db.transaction() as session:
        assert lead_of(session).external_user_id == "wmEXT0001"
        assert session.scalars(select(Delivery)).all() == []
        assert session.scalars(select(Alert.kind)).all() == ["welcome.no_script"]


def test_customer_who_leaves_is_unreachable_and_pending_sends_are_cancelled(ready: Services) -> None:
    deliver(ready, contact_event(state="XHS888", welcome_code="WC5", create_time=1))
    deliver(ready, contact_event("del_follow_user", state=None, welcome_code=None, create_time=2))
    with ready.db.transaction() as session:
        assert lead_of(session).reachable is False
        welcome = session.scalars(select(Delivery)).one()
        assert welcome.status == DeliveryStatus.CANCELLED and "unreachable" in (welcome.error or "")
        from models.ledger import LedgerEntry
        from scripts_library import ledger

        outcomes = [
            (e.entry_type, e.outcome) for e in session.scalars(select(LedgerEntry).order_by(LedgerEntry.seq))
        ]
        assert outcomes == [("message", "queued"), ("outcome", "cancelled")]
        assert ledger.verify(session).ok


def test_retried_add_creates_one_lead_one_touch_one_welcome(ready: Services) -> None:
    for _ in range(3):
        deliver(ready, contact_event(state="XHS888", welcome_code="WC6"))
    with ready.db.transaction() as session:
        assert len(session.scalars(select(Lead)).all()) == 1
        assert len(session.scalars(select(LeadTouch)).all()) == 1
        assert len(session.scalars(select(Delivery)).all()) == 1


def test_timeline_shows_everything_in_order_with_numbers_masked(ready: Services, env: dict[str, str]) -> None:
    from click.testing import CliRunner

    from bot.cli import main
    from bot.leads.masking import mask
    from bot.leads.timeline import timeline

    deliver(ready, contact_event(state="XHS888", welcome_code="WC7", create_time=1))
    deliver(ready, contact_event("del_follow_user", state=None, welcome_code=None, create_time=2))
    with ready.db.read() as session:
        items = timeline(session, "wmEXT0001")
    kinds = [i.kind for i in items]
    assert kinds.count("inbound") == 2 and kinds.count("touch") == 1 and kinds.count("tag") == 2
    outbound = [i.summary for i in items if i.kind == "outbound"]
    assert len(outbound) == 1 and "welcome_xiaohongshu v1 [cancelled]" in outbound[0]
    assert [i.at for i in items] == sorted(i.at for i in items)
    result = CliRunner().invoke(main, ["leads", "show", "wmEXT0001"], env=env)
    assert result.exit_code == 0 and "arrived via contact_way code XHS888" in result.output
    assert (
        mask("电话13800138000 卡号6222021234567890123 日期20250301")
        == "电话138****8000 卡号622***0123 日期20250301"
    )
