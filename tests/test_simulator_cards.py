"""The simulator's template cards: remembered sends, member clicks, and message/update_template_card."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bot.wecom.client import WeComClient
from bot.wecom.errors import WeComAPIError
from bot.wecom.events import TemplateCardEvent
from bot.wecom.simulator import SimulationError, Simulator
from bot.wecom.simulator.cards import RESPONSE_CODE_ERRCODE
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


def lead_card(task_id: str = "lead_0001", **extra: Any) -> dict[str, Any]:
    return {
        "card_type": "button_interaction",
        "main_title": {"title": "新客户待跟进"},
        "task_id": task_id,
        "button_list": [
            {"text": "接单", "style": 1, "key": "ACCEPT"},
            {"text": "转交", "style": 2, "key": "PASS"},
            {"text": "详情", "type": 1, "url": "https://example.com/lead"},
        ],
        **extra,
    }


def send(wecom: WeComClient, card: dict[str, Any], touser: str = "zhangsan|lisi") -> dict[str, Any]:
    return wecom.send_app_message({"touser": touser, "msgtype": "template_card", "template_card": card})


def update(wecom: WeComClient, response_code: str, **body: Any) -> dict[str, Any]:
    payload = {"agentid": wecom.agent_id, "response_code": response_code, **body}
    return wecom.post("message/update_template_card", payload)


def grey(wecom: WeComClient, response_code: str, userids: list[str], name: str = "已接单") -> dict[str, Any]:
    return update(wecom, response_code, userids=userids, button={"replace_name": name})


def errmsg_of(wecom: WeComClient, response_code: str, **body: Any) -> tuple[int, str]:
    """The errcode and errmsg an update fails with ((0, "") when it succeeds)."""
    try:
        update(wecom, response_code, **body)
    except WeComAPIError as exc:
        return exc.errcode, exc.errmsg
    return 0, ""


# ---- message/send remembers cards ----------------------------------------------------------------


def test_sent_card_is_remembered_for_each_member_it_reached(sim: Simulator, wecom: WeComClient) -> None:
    result = send(wecom, lead_card(), touser="zhangsan|lisi|nobody")
    assert result["response_code"] and result["invaliduser"] == "nobody"
    [record] = sim.sent_cards
    assert record.task_id == "lead_0001" and record.msgid == result["msgid"]
    assert record.recipients == ("zhangsan", "lisi")
    assert record.button_keys == ("ACCEPT", "PASS")
    for member in ("zhangsan", "lisi"):
        state = sim.card_state(member, "lead_0001")
        assert state is not None and state.card["task_id"] == "lead_0001"
        assert state.replace_name is None and state.clicked_key is None
    assert sim.card_state("wangwu", "lead_0001") is None


@pytest.mark.parametrize(
    "card",
    [
        {
            "card_type": "vote_interaction",
            "task_id": "vote_1",
            "checkbox": {"question_key": "q", "option_list": [{"id": "a", "text": "A"}]},
            "submit_button": {"text": "提交", "key": "SUBMIT"},
        },
        {
            "card_type": "multiple_interaction",
            "task_id": "multi_1",
            "select_list": [{"question_key": "q", "option_list": [{"id": "a", "text": "A"}]}],
            "submit_button": {"text": "提交", "key": "SUBMIT"},
        },
    ],
)
def test_vote_and_multiple_cards_get_a_response_code(
    sim: Simulator, wecom: WeComClient, card: dict[str, Any]
) -> None:
    code = send(wecom, card)["response_code"]
    record = sim.response_code(code)
    assert record is not None and record.task_id == card["task_id"]
    assert sim.sent_cards[0].button_keys == ("SUBMIT",)


def test_notice_with_a_menu_is_remembered_without_a_response_code(sim: Simulator, wecom: WeComClient) -> None:
    card = {
        "card_type": "text_notice",
        "main_title": {"title": "早盘速递"},
        "task_id": "notice_1",
        "action_menu": {"desc": "更多", "action_list": [{"text": "不再提醒", "key": "MUTE"}]},
        "card_action": {"type": 1, "url": "https://example.com"},
    }
    assert "response_code" not in send(wecom, card)
    assert sim.sent_cards[0].button_keys == ("MUTE",)


def test_a_silently_dropped_copy_is_not_a_received_card(sim: Simulator, wecom: WeComClient) -> None:
    for i in range(sim.config.member_per_minute):
        wecom.send_app_message({"touser": "lisi", "msgtype": "text", "text": {"content": f"m{i}"}})
    send(wecom, lead_card())
    assert sim.sent_cards[0].recipients == ("zhangsan",)
    assert sim.card_state("lisi", "lead_0001") is None
    with pytest.raises(SimulationError, match="never received"):
        sim.member_clicks_card("lisi", "lead_0001", "ACCEPT")


# ---- member clicks ------------------------------------------------------------------------------


def test_click_raises_a_template_card_event_with_a_fresh_single_use_code(
    sim: Simulator, wecom: WeComClient, bot: BotReceiver
) -> None:
    sent_code = send(wecom, lead_card())["response_code"]
    first = sim.member_clicks_card("zhangsan", "lead_0001", "ACCEPT")
    second = sim.member_clicks_card("lisi", "lead_0001", "PASS")
    assert len({sent_code, first, second}) == 3
    events = bot.of(TemplateCardEvent)
    assert [(e.from_user, e.event_key, e.task_id, e.response_code) for e in events] == [
        ("zhangsan", "ACCEPT", "lead_0001", first),
        ("lisi", "PASS", "lead_0001", second),
    ]
    assert {e.card_type for e in events} == {"button_interaction"}
    assert all(e.kind == "template_card_event" for e in events)
    record = sim.response_code(first)
    assert record is not None and not record.used and record.userids == ("zhangsan", "lisi")
    assert sim.card_state("zhangsan", "lead_0001").clicked_key == "ACCEPT"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("userid", "task_id", "key", "message"),
    [
        ("nobody", "lead_0001", "ACCEPT", "not a member"),
        ("wangwu", "lead_0001", "ACCEPT", "never received"),
        ("zhangsan", "lead_9999", "ACCEPT", "never received"),
        ("zhangsan", "lead_0001", "REJECT", "is not a key"),
        ("zhangsan", "lead_0001", "https://example.com/lead", "is not a key"),
    ],
)
def test_impossible_clicks_are_refused_and_raise_nothing(
    sim: Simulator, wecom: WeComClient, userid: str, task_id: str, key: str, message: str
) -> None:
    send(wecom, lead_card())
    callbacks = len(sim.emitted_callbacks)
    with pytest.raises(SimulationError, match=message):
        sim.member_clicks_card(userid, task_id, key)
    assert len(sim.emitted_callbacks) == callbacks


def test_a_card_with_replace_text_greys_out_after_the_first_click(sim: Simulator, wecom: WeComClient) -> None:
    send(wecom, lead_card(replace_text="已处理"))
    sim.member_clicks_card("zhangsan", "lead_0001", "ACCEPT")
    with pytest.raises(SimulationError, match="greyed out"):
        sim.member_clicks_card("zhangsan", "lead_0001", "PASS")
    sim.member_clicks_card("lisi", "lead_0001", "PASS")


def test_menu_click_raises_the_menu_event(sim: Simulator, wecom: WeComClient, bot: BotReceiver) -> None:
    menu = {"desc": "更多", "action_list": [{"text": "不再提醒", "key": "MUTE"}]}
    send(wecom, lead_card(action_menu=menu))
    sim.member_clicks_card("zhangsan", "lead_0001", "MUTE")
    assert "<Event><![CDATA[template_card_menu_event]]></Event>" in sim.emitted_callbacks[-1]


def test_vote_click_carries_the_selected_options(
    sim: Simulator, wecom: WeComClient, bot: BotReceiver
) -> None:
    card = {
        "card_type": "vote_interaction",
        "task_id": "vote_2",
        "checkbox": {
            "question_key": "risk",
            "option_list": [{"id": "low", "text": "稳健"}, {"id": "high", "text": "进取"}],
        },
        "submit_button": {"text": "提交", "key": "SUBMIT"},
    }
    send(wecom, card)
    with pytest.raises(SimulationError, match="no options"):
        sim.member_clicks_card("zhangsan", "vote_2", "SUBMIT", selected_items={"risk": ["medium"]})
    with pytest.raises(SimulationError, match="no question"):
        sim.member_clicks_card("zhangsan", "vote_2", "SUBMIT", selected_items={"age": ["low"]})
    sim.member_clicks_card("zhangsan", "vote_2", "SUBMIT", selected_items={"risk": ["high"]})
    [event] = bot.of(TemplateCardEvent)
    assert event.card_type == "vote_interaction" and event.selected == {"risk": ["high"]}


# ---- message/update_template_card ----------------------------------------------------------------


def test_replace_name_greys_the_button_for_the_named_members(sim: Simulator, wecom: WeComClient) -> None:
    send(wecom, lead_card())
    code = sim.member_clicks_card("zhangsan", "lead_0001", "ACCEPT")
    assert grey(wecom, code, ["zhangsan", "LISI"])["invaliduser"] == []
    for member in ("zhangsan", "lisi"):
        state = sim.card_state(member, "lead_0001")
        assert state is not None and state.replace_name == "已接单" and state.updated_at is not None
    with pytest.raises(SimulationError, match="greyed out"):
        sim.member_clicks_card("lisi", "lead_0001", "PASS")
    [change] = sim.card_updates
    assert change.task_id == "lead_0001" and change.userids == ("zhangsan", "lisi") and change.card is None


def test_the_send_code_can_update_the_card_too(sim: Simulator, wecom: WeComClient) -> None:
    code = send(wecom, lead_card())["response_code"]
    grey(wecom, code, ["lisi"], name="已过期")
    assert sim.card_state("lisi", "lead_0001").replace_name == "已过期"  # type: ignore[union-attr]
    assert sim.card_state("zhangsan", "lead_0001").replace_name is None  # type: ignore[union-attr]


def test_replacing_the_card_keeps_its_task_and_offers_the_new_buttons(
    sim: Simulator, wecom: WeComClient
) -> None:
    send(wecom, lead_card())
    code = sim.member_clicks_card("zhangsan", "lead_0001", "ACCEPT")
    new_card = {
        "card_type": "button_interaction",
        "main_title": {"title": "已由张三接单"},
        "button_list": [{"text": "撤回", "key": "UNDO"}],
    }
    update(wecom, code, atall=1, template_card=new_card)
    for member in ("zhangsan", "lisi"):
        state = sim.card_state(member, "lead_0001")
        assert state is not None and state.card["main_title"]["title"] == "已由张三接单"
        assert state.card["task_id"] == "lead_0001" and state.clicked_key is None
    with pytest.raises(SimulationError, match="is not a key"):
        sim.member_clicks_card("lisi", "lead_0001", "ACCEPT")
    sim.member_clicks_card("lisi", "lead_0001", "UNDO")


def test_a_response_code_works_once(sim: Simulator, wecom: WeComClient) -> None:
    code = send(wecom, lead_card())["response_code"]
    grey(wecom, code, ["zhangsan"])
    assert errmsg_of(wecom, code, userids=["lisi"], button={"replace_name": "x"})[0] == RESPONSE_CODE_ERRCODE
    assert sim.card_state("lisi", "lead_0001").replace_name is None  # type: ignore[union-attr]
    assert "already used" in errmsg_of(wecom, code, userids=["lisi"], button={"replace_name": "x"})[1]


def test_a_response_code_expires_after_24_hours(sim: Simulator, wecom: WeComClient) -> None:
    code = send(wecom, lead_card())["response_code"]
    sim.advance(DAY - 60)
    fresh = sim.member_clicks_card("zhangsan", "lead_0001", "ACCEPT")
    sim.advance(60)
    found, text = errmsg_of(wecom, code, userids=["zhangsan"], button={"replace_name": "x"})
    assert found == RESPONSE_CODE_ERRCODE and "expired" in text
    grey(wecom, fresh, ["zhangsan"])


def test_unknown_response_code_is_refused(wecom: WeComClient) -> None:
    send(wecom, lead_card())
    found, text = errmsg_of(wecom, "not-a-code", userids=["zhangsan"], button={"replace_name": "x"})
    assert found == RESPONSE_CODE_ERRCODE and "invalid" in text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"userids": ["zhangsan"]}, 40058),
        ({"userids": ["zhangsan"], "button": {"replace_name": "x"}, "template_card": {}}, 40058),
        ({"userids": ["zhangsan"], "button": {"replace_name": ""}}, 40058),
        ({"button": {"replace_name": "x"}}, 40058),
        ({"userids": ["zhangsan"], "atall": 2, "button": {"replace_name": "x"}}, 40058),
        ({"userids": [f"u{i}" for i in range(1001)], "button": {"replace_name": "x"}}, 40032),
        ({"userids": ["wangwu", "nobody"], "button": {"replace_name": "x"}}, 81013),
        ({"userids": ["zhangsan"], "template_card": {**lead_card(), "task_id": "other_task"}}, 40058),
        ({"userids": ["zhangsan"], "template_card": {"card_type": "button_interaction"}}, 40058),
    ],
)
def test_bad_updates_are_refused_and_leave_the_code_usable(
    sim: Simulator, wecom: WeComClient, body: dict[str, Any], expected: int
) -> None:
    code = send(wecom, lead_card())["response_code"]
    assert errmsg_of(wecom, code, **body)[0] == expected
    record = sim.response_code(code)
    assert record is not None and not record.used
    assert sim.card_updates == []
    grey(wecom, code, ["zhangsan"])


def test_members_who_never_got_the_card_are_reported_invalid(sim: Simulator, wecom: WeComClient) -> None:
    code = send(wecom, lead_card(), touser="zhangsan")["response_code"]
    assert grey(wecom, code, ["zhangsan", "WangWu", "ghost"])["invaliduser"] == ["wangwu", "ghost"]
    assert sim.card_updates[0].userids == ("zhangsan",)


def test_missing_response_code_and_wrong_app_are_refused(sim: Simulator, wecom: WeComClient) -> None:
    code = send(wecom, lead_card())["response_code"]
    body = {"userids": ["zhangsan"], "button": {"replace_name": "x"}}

    def call(payload: dict[str, Any], app: str = "agent") -> int:
        return errcode(lambda: wecom.post("message/update_template_card", payload, app=app))

    assert call({"agentid": wecom.agent_id, **body}) == 40058
    assert call({"response_code": code, **body}) == 41011
    assert call({"agentid": wecom.agent_id + 1, "response_code": code, **body}) == 40056
    assert call({"agentid": wecom.agent_id, "response_code": code, **body}, app="contact") == 40056
    assert sim.card_updates == []


def test_a_simulator_in_another_process_is_clicked_through_its_control_api(
    sim: Simulator, wecom: WeComClient, bot: BotReceiver
) -> None:
    send(wecom, lead_card("lead_http"), touser="zhangsan")
    http = requests.Session()  # what a test driving a simulator in another process would use
    http.trust_env = False
    clicked = http.post(
        f"{sim.base_url}/_sim/member_clicks_card",
        json={"userid": "zhangsan", "task_id": "lead_http", "button_key": "ACCEPT"},
        timeout=5,
    ).json()
    assert clicked["ok"] is True and clicked["response_code"]
    refused = http.post(
        f"{sim.base_url}/_sim/member_clicks_card",
        json={"userid": "lisi", "task_id": "lead_http", "button_key": "ACCEPT"},
        timeout=5,
    )
    assert refused.status_code == 400
    state = http.get(f"{sim.base_url}/_sim/state", timeout=5).json()
    assert [(c["task_id"], c["recipients"]) for c in state["sent_cards"]] == [("lead_http", ["zhangsan"])]
    assert grey(wecom, clicked["response_code"], ["zhangsan"])["errcode"] == 0
    state = http.get(f"{sim.base_url}/_sim/state", timeout=5).json()
    assert len(state["card_updates"]) == 1 and state["transfers"] == []
    http.close()
