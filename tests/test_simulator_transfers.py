"""The simulator's 在职继承: transfer_customer, the 24 h takeover, refusals, limits, transfer_result."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bot.wecom.client import TransferStatus, WeComClient
from bot.wecom.events import ExternalContactChange
from bot.wecom.simulator import SimulationError, Simulator
from bot.wecom.simulator.contacts import ACTIVE, GONE
from bot.wecom.simulator.transfers import (
    ADD_WAY_ADMIN_ASSIGN,
    DEFAULT_SUCCESS_MSG,
    LIMIT_EXCEEDED,
    REFUSED,
    TAKEN_OVER,
    WAITING,
)
from tests.test_simulator_contacts import BotReceiver, client_for, errcode, make_config, receiver_for

DAY = 86400.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(make_config(inactive_users=["wangwu"])) as simulator:
        yield simulator


@pytest.fixture
def bot(sim: Simulator) -> Iterator[BotReceiver]:
    receiver = receiver_for(sim)
    yield receiver
    receiver.close()


@pytest.fixture
def wecom(sim: Simulator) -> Iterator[WeComClient]:
    client = client_for(sim)
    yield client
    client.close()


def befriend(sim: Simulator, wecom: WeComClient, userid: str, *external_userids: str) -> list[str]:
    """Customers scan the member's skip-verify 「联系我」 QR code: active relations."""
    body = {"type": 1, "scene": 2, "user": [userid]}
    config_id = wecom.post("externalcontact/add_contact_way", body, app="contact")["config_id"]
    return [sim.customer_scans(config_id, ext).external_userid for ext in external_userids]


def transfer(wecom: WeComClient, customers: list[str], **body: Any) -> dict[str, Any]:
    payload = {"handover_userid": "zhangsan", "takeover_userid": "lisi", "external_userid": customers, **body}
    return wecom.post("externalcontact/transfer_customer", payload, app="contact")


def errcodes(wecom: WeComClient, customers: list[str], **body: Any) -> dict[str, int]:
    return {r["external_userid"]: r["errcode"] for r in transfer(wecom, customers, **body)["customer"]}


def statuses(wecom: WeComClient, handover: str = "zhangsan", takeover: str = "lisi") -> dict[str, int]:
    return {s.external_userid: s.status for s in wecom.transfer_result(handover, takeover)}


def changes(bot: BotReceiver) -> list[tuple[str, str, str, str | None, str | None]]:
    return [
        (e.change_type, e.user_id, e.external_user_id, e.source, e.fail_reason)
        for e in bot.of(ExternalContactChange)
    ]


# ---- the takeover -------------------------------------------------------------------------------


def test_transfer_waits_24_hours_then_the_customer_changes_owner(
    sim: Simulator, wecom: WeComClient, bot: BotReceiver
) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmA")
    bot.events.clear()
    assert errcodes(wecom, [ext]) == {ext: 0}
    [waiting] = wecom.transfer_result("zhangsan", "lisi")
    started = sim.transfers[0].started_at
    assert waiting == TransferStatus(ext, WAITING, int(started + DAY))
    sim.advance(DAY - 1)
    assert statuses(wecom) == {ext: WAITING}
    assert sim.relation("lisi", ext) is None and bot.events == []
    sim.advance(1)
    assert wecom.transfer_result("zhangsan", "lisi") == [TransferStatus(ext, TAKEN_OVER, int(started + DAY))]
    old, new = sim.relation("zhangsan", ext), sim.relation("lisi", ext)
    assert old is not None and old.status == GONE
    assert new is not None and new.status == ACTIVE and new.add_way == ADD_WAY_ADMIN_ASSIGN
    assert changes(bot) == [
        ("del_external_contact", "zhangsan", ext, "DELETE_BY_TRANSFER", None),
        ("add_external_contact", "lisi", ext, None, None),
    ]
    assert sim.transfers[0].success_msg == DEFAULT_SUCCESS_MSG


def test_a_takeover_member_who_is_already_a_friend_gets_no_add_event(
    sim: Simulator, wecom: WeComClient, bot: BotReceiver
) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmB")
    befriend(sim, wecom, "lisi", ext)
    bot.events.clear()
    errcodes(wecom, [ext], transfer_success_msg="您好，后续由李四为您服务")
    sim.advance(DAY)
    assert changes(bot) == [("del_external_contact", "zhangsan", ext, "DELETE_BY_TRANSFER", None)]
    assert sim.transfers[0].success_msg == "您好，后续由李四为您服务"


def test_the_takeover_is_noticed_by_transfer_result_as_real_time_passes(
    sim: Simulator, wecom: WeComClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmC")
    errcodes(wecom, [ext])
    wall_time = sim.wall_time
    # A day passes on the wall clock without `advance`, which would settle the transfer itself.
    monkeypatch.setattr(sim, "wall_time", lambda: wall_time() + DAY)
    assert statuses(wecom) == {ext: TAKEN_OVER}
    rel = sim.relation("lisi", ext)
    assert rel is not None and rel.status == ACTIVE


def test_a_refusal_keeps_the_customer_and_raises_transfer_fail(
    sim: Simulator, wecom: WeComClient, bot: BotReceiver
) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmD")
    bot.events.clear()
    errcodes(wecom, [ext])
    refused = sim.customer_refuses_transfer(ext)
    assert refused.status == REFUSED
    assert wecom.transfer_result("zhangsan", "lisi") == [TransferStatus(ext, REFUSED, None)]
    assert changes(bot) == [("transfer_fail", "lisi", ext, None, "customer_refused")]
    sim.advance(DAY)
    rel = sim.relation("zhangsan", ext)
    assert rel is not None and rel.status == ACTIVE and sim.relation("lisi", ext) is None
    with pytest.raises(SimulationError, match="no transfer waiting"):
        sim.customer_refuses_transfer(ext)


def test_a_customer_cannot_refuse_after_the_takeover(sim: Simulator, wecom: WeComClient) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmE")
    errcodes(wecom, [ext])
    sim.advance(DAY)
    with pytest.raises(SimulationError, match="no transfer waiting"):
        sim.customer_refuses_transfer(ext)


def test_a_takeover_member_at_the_customer_limit_fails_with_status_4(
    sim: Simulator, wecom: WeComClient, bot: BotReceiver
) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmF")
    bot.events.clear()
    sim.set_customer_limit_reached("lisi")
    errcodes(wecom, [ext])
    sim.advance(DAY)
    assert statuses(wecom) == {ext: LIMIT_EXCEEDED}
    assert changes(bot) == [("transfer_fail", "lisi", ext, None, "customer_limit_exceed")]
    rel = sim.relation("zhangsan", ext)
    assert rel is not None and rel.status == ACTIVE


# ---- per-customer errcodes ----------------------------------------------------------------------


def test_per_customer_errcodes(sim: Simulator, wecom: WeComClient) -> None:
    ok, pending = befriend(sim, wecom, "zhangsan", "wmOK", "wmPENDING")
    [not_mine] = befriend(sim, wecom, "lisi", "wmLISI")
    errcodes(wecom, [pending])
    assert errcodes(wecom, [ok, pending, not_mine, "wmUNKNOWN"]) == {
        ok: 0,
        pending: 40129,
        not_mine: 40131,
        "wmUNKNOWN": 40096,
    }
    assert {t.external_userid for t in sim.transfers} == {ok, pending}


def test_a_customer_deleted_by_the_handover_is_not_theirs_to_transfer(
    sim: Simulator, wecom: WeComClient
) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmGONE")
    sim.member_deletes_customer("zhangsan", ext)
    assert errcodes(wecom, [ext]) == {ext: 40131}


def test_a_customer_is_transferred_at_most_twice_in_90_natural_days(
    sim: Simulator, wecom: WeComClient
) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmTWICE")
    assert errcodes(wecom, [ext]) == {ext: 0}
    sim.customer_refuses_transfer(ext)
    assert errcodes(wecom, [ext]) == {ext: 0}
    sim.advance(DAY)
    back = {"handover_userid": "lisi", "takeover_userid": "zhangsan"}
    assert errcodes(wecom, [ext], **back) == {ext: 40128}
    sim.advance(89 * DAY)
    assert errcodes(wecom, [ext], **back) == {ext: 0}


# ---- request errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"handover_userid": ""}, 41009),
        ({"takeover_userid": "ghost"}, 40003),
        ({"takeover_userid": "zhangsan"}, 40130),
        ({"takeover_userid": "wangwu"}, 41054),
        ({"external_userid": []}, 40058),
        ({"external_userid": [f"wm{i:04d}" for i in range(101)]}, 40058),
        ({"transfer_success_msg": "您" * 201}, 40058),
    ],
)
def test_bad_requests_are_refused_and_start_nothing(
    sim: Simulator, wecom: WeComClient, body: dict[str, Any], expected: int
) -> None:
    customers = befriend(sim, wecom, "zhangsan", "wmREQ")
    assert errcode(lambda: transfer(wecom, customers, **body)) == expected
    assert sim.transfers == []


def test_transfer_apis_need_a_customer_contact_app(sim: Simulator, wecom: WeComClient) -> None:
    customers = befriend(sim, wecom, "zhangsan", "wmAPP")
    payload = {"handover_userid": "zhangsan", "takeover_userid": "lisi", "external_userid": customers}
    assert errcode(lambda: wecom.post("externalcontact/transfer_customer", payload, app="kf")) == 48002
    result = {"handover_userid": "zhangsan", "takeover_userid": "lisi"}
    assert errcode(lambda: wecom.post("externalcontact/transfer_result", result, app="kf")) == 48002
    assert (
        wecom.post("externalcontact/transfer_customer", payload, app="agent")["customer"][0]["errcode"] == 0
    )


def test_transfer_result_pages_by_cursor(sim: Simulator, wecom: WeComClient) -> None:
    customers = befriend(sim, wecom, "zhangsan", *(f"wmPAGE{i:04d}" for i in range(1001)))
    for start in range(0, len(customers), 100):
        assert set(errcodes(wecom, customers[start : start + 100]).values()) == {0}
    body = {"handover_userid": "zhangsan", "takeover_userid": "lisi"}
    first = wecom.post("externalcontact/transfer_result", body, app="contact")
    assert len(first["customer"]) == 1000 and first["next_cursor"]
    second = wecom.post(
        "externalcontact/transfer_result", {**body, "cursor": first["next_cursor"]}, app="contact"
    )
    assert [r["external_userid"] for r in second["customer"]] == [
        customers[-1]
    ] and "next_cursor" not in second
    assert (
        errcode(lambda: wecom.post("externalcontact/transfer_result", {**body, "cursor": "bogus"})) == 50100
    )
    assert len(wecom.transfer_result("zhangsan", "lisi")) == 1001


def test_transfer_result_lists_only_the_pair_asked_about(sim: Simulator, wecom: WeComClient) -> None:
    [ext] = befriend(sim, wecom, "zhangsan", "wmPAIR")
    errcodes(wecom, [ext])
    assert wecom.transfer_result("lisi", "zhangsan") == []
    assert errcode(lambda: wecom.transfer_result("zhangsan", "ghost")) == 40003
