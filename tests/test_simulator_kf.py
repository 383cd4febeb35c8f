"""The simulator's WeChat Customer Service (kf) surface: links, sessions, sync_msg, send_msg, states."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import Any
from urllib.parse import quote

import pytest
import requests

from bot.wecom.client import WeComClient
from bot.wecom.events import KfMsgOrEvent
from bot.wecom.simulator import Simulator
from tests.test_simulator_contacts import BotReceiver, client_for, errcode, make_config, receiver_for

DAY = 86400.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(make_config()) as simulator:
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


def kf(wecom: WeComClient, api: str, **body: Any) -> dict[str, Any]:
    return wecom.post(f"kf/{api}", body, app="kf")


@pytest.fixture
def kfid(wecom: WeComClient) -> str:
    open_kfid: str = kf(wecom, "account/add", name="开户咨询", media_id="MEDIA")["open_kfid"]
    kf(wecom, "servicer/add", open_kfid=open_kfid, userid_list=["zhangsan", "lisi"])
    return open_kfid


def sync_all(
    wecom: WeComClient, open_kfid: str, cursor: str = "", **extra: Any
) -> tuple[list[dict[str, Any]], str, int]:
    """Loop sync_msg while has_more, as the bot must (empty pages too); return messages, cursor, calls."""
    messages: list[dict[str, Any]] = []
    calls = 0
    while True:
        page = kf(wecom, "sync_msg", open_kfid=open_kfid, cursor=cursor, **extra)
        calls += 1
        messages += page["msg_list"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return messages, cursor, calls


def text(content: str = "您好") -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": content}}


def send(wecom: WeComClient, open_kfid: str, touser: str, **body: Any) -> dict[str, Any]:
    return kf(wecom, "send_msg", open_kfid=open_kfid, touser=touser, **(body or text()))


# ---- accounts and links --------------------------------------------------------------------------------


def test_accounts_and_links(wecom: WeComClient, kfid: str) -> None:
    [account] = kf(wecom, "account/list", offset=0, limit=100)["account_list"]
    assert account["open_kfid"] == kfid and account["name"] == "开户咨询" and kfid.startswith("wk")
    assert errcode(lambda: kf(wecom, "account/add", name="名" * 17, media_id="M")) == 95006
    assert errcode(lambda: kf(wecom, "account/add", name="ok")) == 41006
    url = kf(wecom, "add_contact_way", open_kfid=kfid, scene="XHS_01")["url"]
    assert url.startswith("https://work.weixin.qq.com/kf/") and "enc_scene=" in url
    assert errcode(lambda: kf(wecom, "add_contact_way", open_kfid=kfid, scene="s" * 33)) == 40058
    assert errcode(lambda: kf(wecom, "add_contact_way", open_kfid=kfid, scene="bad scene!")) == 40058
    assert errcode(lambda: kf(wecom, "add_contact_way", open_kfid="wknope", scene="a")) == 95004
    assert errcode(lambda: kf(wecom, "add_contact_way", scene="a")) == 95000
    servicers = wecom.get("kf/servicer/list", {"open_kfid": kfid}, app="kf")["servicer_list"]
    assert servicers == [{"userid": "zhangsan", "status": 0}, {"userid": "lisi", "status": 0}]


# ---- entering a session and the welcome ------------------------------------------------------------------


def test_entering_through_a_link_raises_kf_msg_or_event_and_sync_returns_enter_session(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient, kfid: str
) -> None:
    url = kf(wecom, "add_contact_way", open_kfid=kfid, scene="XHS_01")["url"]
    entered = sim.kf_customer_enters(f"{url}&scene_param={quote('lead=张三&src=xhs')}", nickname="张三")
    assert entered is not None and entered.welcome_code
    [notice] = bot.of(KfMsgOrEvent)
    assert notice.open_kfid == kfid and notice.token == entered.token and "FromUserName" not in notice.fields
    assert "AgentID" not in bot.envelopes[0]
    page = kf(wecom, "sync_msg", open_kfid=kfid, token=notice.token, cursor="", limit=1000)
    [message] = page["msg_list"]
    assert message["origin"] == 4 and message["msgtype"] == "event" and "open_kfid" not in message
    assert message["event"] == {
        "event_type": "enter_session",
        "open_kfid": kfid,
        "external_userid": entered.external_userid,
        "scene": "XHS_01",
        "scene_param": "lead=张三&src=xhs",
        "welcome_code": entered.welcome_code,
    }
    assert page["has_more"] == 0 and page["next_cursor"]


def test_tampered_or_over_long_links_raise_nothing(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient, kfid: str
) -> None:
    url = kf(wecom, "add_contact_way", open_kfid=kfid, scene="A1")["url"]
    assert sim.kf_customer_enters(url.replace("enc_scene=ENC", "enc_scene=ENCX")) is None
    assert sim.kf_customer_enters(f"{url}&scene_param={'x' * 129}") is None
    assert sim.kf_customer_enters(kfid, scene="never_created") is None
    assert sim.kf_customer_enters(f"{url}&scene_param={'x' * 128}") is not None
    assert len(bot.events) == 1


def test_welcome_on_event_is_single_use_valid_20_s_and_text_or_menu_only(
    sim: Simulator, wecom: WeComClient, kfid: str
) -> None:
    first = sim.kf_customer_enters(kfid)
    late = sim.kf_customer_enters(kfid)
    assert first is not None and late is not None and first.welcome_code and late.welcome_code
    image = {"msgtype": "image", "image": {"media_id": "M"}}
    assert errcode(lambda: kf(wecom, "send_msg_on_event", code=first.welcome_code, **image)) == 40008
    sent = kf(wecom, "send_msg_on_event", code=first.welcome_code, msgid="welcome_1", **text("欢迎"))
    assert sent["msgid"] == "welcome_1"
    assert errcode(lambda: kf(wecom, "send_msg_on_event", code=first.welcome_code, **text())) == 40058
    sim.advance(21)
    assert errcode(lambda: kf(wecom, "send_msg_on_event", code=late.welcome_code, **text())) == 40058
    [record] = sim.kf_sent
    assert (record.via, record.code_kind, record.external_userid) == (
        "send_msg_on_event",
        "welcome",
        first.external_userid,
    )


def test_no_welcome_code_within_48_h_of_a_welcome_or_a_customer_message(
    sim: Simulator, wecom: WeComClient, kfid: str
) -> None:
    entered = sim.kf_customer_enters(kfid)
    assert entered is not None and entered.welcome_code
    kf(wecom, "send_msg_on_event", code=entered.welcome_code, **text("欢迎"))
    again = sim.kf_customer_enters(kfid, entered.external_userid)
    assert again is not None and again.welcome_code is None
    sim.advance(2 * DAY + 1)
    talker = sim.kf_customer_says(kfid, entered.external_userid, "在吗")
    after = sim.kf_customer_enters(kfid, talker.external_userid)
    assert after is not None and after.welcome_code is None
    sim.advance(2 * DAY + 1)
    last = sim.kf_customer_enters(kfid, entered.external_userid)
    assert last is not None and last.welcome_code


# ---- sync_msg ----------------------------------------------------------------------------------------------


def test_sync_msg_pages_with_cursor_and_omits_api_sent_messages(
    sim: Simulator, wecom: WeComClient, kfid: str
) -> None:
    customer = sim.kf_customer_says(kfid, None, "问题1").external_userid
    sim.kf_customer_says(kfid, customer, "问题2", menu_id="101")
    send(wecom, kfid, customer)
    sim.kf_customer_says(kfid, customer, "问题3")
    first = kf(wecom, "sync_msg", open_kfid=kfid, limit=2)
    assert [m["text"]["content"] for m in first["msg_list"]] == ["问题1", "问题2"] and first["has_more"] == 1
    assert first["msg_list"][1]["text"]["menu_id"] == "101"
    assert first["msg_list"][0]["origin"] == 3 and first["msg_list"][0]["external_userid"] == customer
    second = kf(wecom, "sync_msg", open_kfid=kfid, cursor=first["next_cursor"], limit=2)
    assert [m["text"]["content"] for m in second["msg_list"]] == ["问题3"] and second["has_more"] == 0
    nothing = kf(wecom, "sync_msg", open_kfid=kfid, cursor=second["next_cursor"])
    assert nothing["msg_list"] == [] and nothing["has_more"] == 0
    assert len(sim.kf_sent) == 1


def test_empty_pages_with_has_more_exercise_the_sync_loop() -> None:
    with Simulator(make_config(kf_sync_empty_pages=2)) as sim, closing(client_for(sim)) as wecom:
        kfid = kf(wecom, "account/add", name="客服", media_id="M")["open_kfid"]
        customer = sim.kf_customer_says(kfid, "wmLOOP", "a").external_userid
        sim.kf_customer_says(kfid, customer, "b")
        first = kf(wecom, "sync_msg", open_kfid=kfid)
        assert first["msg_list"] == [] and first["has_more"] == 1
        messages, cursor, calls = sync_all(wecom, kfid, limit=1)
        assert [m["text"]["content"] for m in messages] == ["a", "b"] and calls == 6
        assert sync_all(wecom, kfid, cursor)[0] == []


def test_sync_msg_tokens_cursors_limits_and_retention(sim: Simulator, wecom: WeComClient, kfid: str) -> None:
    other = kf(wecom, "account/add", name="其他", media_id="M")["open_kfid"]
    said = sim.kf_customer_says(kfid, "wmOLD", "三天前")
    assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=other, token=said.token)) == 95007
    assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid, token="ENCforged")) == 95007
    assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid, cursor="c" * 65)) == 40058
    assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid, cursor="unknown")) == 50100
    assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid, limit=1001)) == 40058
    other_cursor = kf(wecom, "sync_msg", open_kfid=other)["next_cursor"]
    assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid, cursor=other_cursor)) == 50100
    sim.advance(599)
    assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid, token=said.token)) == 0
    sim.advance(2)
    assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid, token=said.token)) == 95007
    sim.advance(3 * DAY)
    fresh = sim.kf_customer_says(kfid, "wmNEW", "今天")
    messages, _, _ = sync_all(wecom, kfid, token=fresh.token)
    assert [m["text"]["content"] for m in messages] == ["今天"]


def test_sync_without_token_can_be_strictly_limited() -> None:
    with Simulator(make_config(kf_sync_no_token_per_minute=2)) as sim, closing(client_for(sim)) as wecom:
        kfid = kf(wecom, "account/add", name="客服", media_id="M")["open_kfid"]
        said = sim.kf_customer_says(kfid, "wmX", "hi")
        assert [errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid)) for _ in range(3)] == [0, 0, 45009]
        assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid, token=said.token)) == 0
        sim.advance(60)
        assert errcode(lambda: kf(wecom, "sync_msg", open_kfid=kfid)) == 0


# ---- send_msg ----------------------------------------------------------------------------------------------


def test_five_sends_per_customer_message_within_48_h(sim: Simulator, wecom: WeComClient, kfid: str) -> None:
    customer = sim.kf_customer_says(kfid, "wmBUDGET", "开户流程？").external_userid
    assert [errcode(lambda: send(wecom, kfid, customer)) for _ in range(6)] == [0, 0, 0, 0, 0, 95001]
    sim.kf_customer_says(kfid, customer, "还有问题")
    assert errcode(lambda: send(wecom, kfid, customer)) == 0
    sim.advance(2 * DAY)
    assert errcode(lambda: send(wecom, kfid, customer)) == 95002
    assert len(sim.kf_sent) == 6 and {m.via for m in sim.kf_sent} == {"send_msg"}


def test_api_send_moves_a_new_session_to_the_assistant(sim: Simulator, wecom: WeComClient, kfid: str) -> None:
    customer = sim.kf_customer_says(kfid, "wmSTATE", "hi").external_userid
    state = kf(wecom, "service_state/get", open_kfid=kfid, external_userid=customer)
    assert state["service_state"] == 0 and "servicer_userid" not in state
    send(wecom, kfid, customer)
    assert kf(wecom, "service_state/get", open_kfid=kfid, external_userid=customer)["service_state"] == 1


def test_msgid_is_unique_per_kf_account(sim: Simulator, wecom: WeComClient, kfid: str) -> None:
    customer = sim.kf_customer_says(kfid, "wmMSGID", "hi").external_userid
    assert send(wecom, kfid, customer, msgid="lead_42", **text())["msgid"] == "lead_42"
    assert errcode(lambda: send(wecom, kfid, customer, msgid="lead_42", **text())) == 40058
    assert errcode(lambda: send(wecom, kfid, customer, msgid="bad id!", **text())) == 40058
    assert errcode(lambda: send(wecom, kfid, customer, msgid="x" * 33, **text())) == 40058
    generated = send(wecom, kfid, customer)["msgid"]
    assert generated and generated != "lead_42" and len(sim.kf_sent) == 2


def test_the_duplicate_msgid_errcode_is_configurable() -> None:
    with Simulator(make_config(kf_duplicate_msgid_errcode=95099)) as sim, closing(client_for(sim)) as wecom:
        kfid = kf(wecom, "account/add", name="客服", media_id="M")["open_kfid"]
        customer = sim.kf_customer_says(kfid, "wmDUP", "hi").external_userid
        send(wecom, kfid, customer, msgid="m1", **text())
        assert errcode(lambda: send(wecom, kfid, customer, msgid="m1", **text())) == 95099


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (text("字" * 683), 45002),
        ({"msgtype": "text", "text": {"content": ""}}, 44004),
        ({"msgtype": "image", "image": {}}, 41006),
        ({"msgtype": "news", "news": {}}, 40008),
        (
            {
                "msgtype": "msgmenu",
                "msgmenu": {"list": [{"type": "click", "click": {"id": "1", "content": "a"}}] * 11},
            },
            95008,
        ),
        ({"msgtype": "msgmenu", "msgmenu": {"list": [{"type": "button", "button": {}}]}}, 95009),
        (
            {
                "msgtype": "msgmenu",
                "msgmenu": {"list": [{"type": "click", "click": {"id": "", "content": "a"}}]},
            },
            40058,
        ),
        ({"msgtype": "link", "link": {"title": "t", "url": "u"}}, 41006),
    ],
)
def test_send_msg_content_checks(
    sim: Simulator, wecom: WeComClient, kfid: str, body: dict[str, Any], code: int
) -> None:
    customer = sim.kf_customer_says(kfid, "wmCHECK", "hi").external_userid
    assert errcode(lambda: send(wecom, kfid, customer, **body)) == code
    menu = {
        "msgtype": "msgmenu",
        "msgmenu": {
            "head_content": "满意吗",
            "list": [{"type": "click", "click": {"id": "101", "content": "满意"}}] * 10,
        },
    }
    assert errcode(lambda: send(wecom, kfid, customer, **menu)) == 0
    assert errcode(lambda: send(wecom, kfid, customer, **text("字" * 682))) == 0


def test_send_msg_needs_a_known_customer(wecom: WeComClient, kfid: str) -> None:
    assert errcode(lambda: send(wecom, kfid, "wmstranger")) == 40096
    assert errcode(lambda: kf(wecom, "send_msg", open_kfid=kfid, **text())) == 41035


# ---- session state --------------------------------------------------------------------------------------


def at_state(sim: Simulator, wecom: WeComClient, kfid: str, state: int, customer: str) -> str:
    """Drive a fresh customer's session to `state` the way a bot and servicers would."""
    if state == 4:
        sim.kf_customer_enters(kfid, customer)
        return customer
    sim.kf_customer_says(kfid, customer, "hi")
    if state == 1:
        send(wecom, kfid, customer)
    elif state == 2:
        kf(wecom, "service_state/trans", open_kfid=kfid, external_userid=customer, service_state=2)
    elif state == 3:
        kf(
            wecom,
            "service_state/trans",
            open_kfid=kfid,
            external_userid=customer,
            service_state=3,
            servicer_userid="zhangsan",
        )
    return customer


@pytest.mark.parametrize("source", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("target", [0, 1, 2, 3, 4])
def test_service_state_transition_table(
    sim: Simulator, wecom: WeComClient, kfid: str, source: int, target: int
) -> None:
    allowed = {0: {1, 2, 3}, 1: {2, 3}, 2: {3}, 3: {3, 4}, 4: set()}
    customer = at_state(sim, wecom, kfid, source, f"wmT{source}{target}")
    assert kf(wecom, "service_state/get", open_kfid=kfid, external_userid=customer)["service_state"] == source
    body = {
        "open_kfid": kfid,
        "external_userid": customer,
        "service_state": target,
        "servicer_userid": "lisi",
    }
    expected = 0 if target in allowed[source] else 95016
    assert errcode(lambda: wecom.post("kf/service_state/trans", body, app="kf")) == expected
    if expected == 0:
        state = kf(wecom, "service_state/get", open_kfid=kfid, external_userid=customer)
        assert state["service_state"] == target
        assert state.get("servicer_userid") == ("lisi" if target == 3 else None)
    send_code = errcode(lambda: send(wecom, kfid, customer))
    final = target if expected == 0 else source
    assert send_code == (0 if final in (0, 1) else 95018)


def test_trans_to_a_servicer_checks_servicers_and_returns_msg_codes(
    sim: Simulator, wecom: WeComClient, kfid: str
) -> None:
    customer = sim.kf_customer_says(kfid, "wmQUEUE", "人工").external_userid
    trans = {"open_kfid": kfid, "external_userid": customer}
    queued = kf(wecom, "service_state/trans", **trans, service_state=2)
    assert queued["msg_code"]
    assert errcode(lambda: kf(wecom, "service_state/trans", **trans, service_state=3)) == 40058
    assert (
        errcode(lambda: kf(wecom, "service_state/trans", **trans, service_state=3, servicer_userid="wangwu"))
        == 95014
    )
    sim.kf_servicer_status(kfid, "lisi", receiving=False, stop_type=1)
    assert (
        errcode(lambda: kf(wecom, "service_state/trans", **trans, service_state=3, servicer_userid="lisi"))
        == 95019
    )
    taken = kf(wecom, "service_state/trans", **trans, service_state=3, servicer_userid="zhangsan")
    assert "msg_code" not in taken  # only the first time the session reaches 2 or 3
    # The queue notice code may only be used while the session is still queued.
    assert errcode(lambda: kf(wecom, "send_msg_on_event", code=queued["msg_code"], **text("排队中"))) == 95018
    ended = kf(wecom, "service_state/trans", **trans, service_state=4)
    menu = {
        "msgtype": "msgmenu",
        "msgmenu": {
            "head_content": "评价",
            "list": [{"type": "click", "click": {"id": "5", "content": "满意"}}],
        },
    }
    assert kf(wecom, "send_msg_on_event", code=ended["msg_code"], **menu)["msgid"]
    assert sim.kf_sent[-1].code_kind == "end"


def test_servicer_actions_in_the_client_raise_events(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient, kfid: str
) -> None:
    customer = sim.kf_customer_says(kfid, "wmHUMAN", "找人工").external_userid
    kf(wecom, "service_state/trans", open_kfid=kfid, external_userid=customer, service_state=2)
    taken = sim.kf_session_change(kfid, customer, 1, "zhangsan")
    assert taken.msg_code
    sim.kf_servicer_says(kfid, customer, "zhangsan", "我是张三")
    sim.kf_session_change(kfid, customer, 2, "lisi")
    ended = sim.kf_session_change(kfid, customer, 3)
    sim.kf_servicer_says(kfid, customer, "lisi", "回访一下")  # re-enters the ended session
    messages, _, _ = sync_all(wecom, kfid)
    events = [m["event"] for m in messages if m["msgtype"] == "event"]
    assert [
        (e["change_type"], e.get("old_servicer_userid"), e.get("new_servicer_userid")) for e in events
    ] == [
        (1, None, "zhangsan"),
        (2, "zhangsan", "lisi"),
        (3, "lisi", None),
        (4, "lisi", "lisi"),
    ]
    assert events[0]["msg_code"] == taken.msg_code and events[2]["msg_code"] == ended.msg_code
    replies = [m for m in messages if m["origin"] == 5]
    assert [(m["servicer_userid"], m["text"]["content"]) for m in replies] == [
        ("zhangsan", "我是张三"),
        ("lisi", "回访一下"),
    ]
    assert kf(wecom, "service_state/get", open_kfid=kfid, external_userid=customer) == {
        "errcode": 0,
        "errmsg": "ok",
        "service_state": 3,
        "servicer_userid": "lisi",
    }
    assert len(bot.of(KfMsgOrEvent)) == 1 + 1 + 1 + 1 + 1 + 2


def test_async_send_failure_and_servicer_status_events(sim: Simulator, wecom: WeComClient, kfid: str) -> None:
    customer = sim.kf_customer_says(kfid, "wmFAIL", "hi").external_userid
    msgid = send(wecom, kfid, customer)["msgid"]
    sim.kf_send_fail(kfid, customer, msgid, fail_type=6)
    sim.kf_servicer_status(kfid, "lisi", receiving=False)
    messages, _, _ = sync_all(wecom, kfid)
    fail, status = messages[-2]["event"], messages[-1]["event"]
    assert fail == {
        "event_type": "msg_send_fail",
        "open_kfid": kfid,
        "external_userid": customer,
        "fail_msgid": msgid,
        "fail_type": 6,
    }
    assert (
        status["event_type"] == "servicer_status_change"
        and status["status"] == 2
        and status["servicer_userid"] == "lisi"
    )
    assert wecom.get("kf/servicer/list", {"open_kfid": kfid}, app="kf")["servicer_list"][1] == {
        "userid": "lisi",
        "status": 1,
    }


# ---- customers, permissions, metering, controls ------------------------------------------------------------


def test_customer_batchget_returns_the_enter_session_context(
    sim: Simulator, wecom: WeComClient, kfid: str
) -> None:
    url = kf(wecom, "add_contact_way", open_kfid=kfid, scene="DY")["url"]
    entered = sim.kf_customer_enters(f"{url}&scene_param=lead42", nickname="王女士")
    assert entered is not None
    body = {"external_userid_list": [entered.external_userid, "wmunknown"], "need_enter_session_context": 1}
    result = wecom.post("kf/customer/batchget", body, app="kf")
    [customer] = result["customer_list"]
    assert customer["nickname"] == "王女士" and customer["enter_session_context"] == {
        "scene": "DY",
        "scene_param": "lead42",
    }
    assert result["invalid_external_userid"] == ["wmunknown"]
    too_many = {"external_userid_list": [f"wm{i}" for i in range(101)]}
    assert errcode(lambda: wecom.post("kf/customer/batchget", too_many, app="kf")) == 40058


def test_kf_permissions_and_metering() -> None:
    with Simulator(make_config(api_per_minute=2)) as sim, closing(client_for(sim)) as wecom:
        assert errcode(lambda: kf(wecom, "account/list")) == 0
        assert errcode(lambda: wecom.post("kf/account/list", {}, app="contact")) == 48002
        assert errcode(lambda: kf(wecom, "account/list")) == 45009
        sim.advance(60)
        assert errcode(lambda: kf(wecom, "account/list")) == 0


def test_kf_http_controls(sim: Simulator, wecom: WeComClient, kfid: str) -> None:
    receiver = BotReceiver(sim.crypto)
    http = requests.Session()
    http.trust_env = False
    try:
        http.post(f"{sim.base_url}/_sim/connect_bot", json={"url": receiver.url}, timeout=5)
        said = http.post(
            f"{sim.base_url}/_sim/kf_customer_says",
            json={"open_kfid": kfid, "external_userid": "wmHTTP", "text": "你好"},
            timeout=5,
        ).json()
        assert said["ok"] and said["external_userid"] == "wmHTTP"
        [notice] = receiver.of(KfMsgOrEvent)
        assert notice.token == said["token"]
        send(wecom, kfid, "wmHTTP")
        assert (
            http.get(f"{sim.base_url}/_sim/state", timeout=5).json()["kf_sent"][0]["external_userid"]
            == "wmHTTP"
        )
        bad = http.post(
            f"{sim.base_url}/_sim/kf_customer_says",
            json={"open_kfid": "wknope", "external_userid": "x", "text": "t"},
            timeout=5,
        )
        assert bad.status_code == 400
    finally:
        http.close()
        receiver.close()
