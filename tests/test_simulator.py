"""The WeCom simulator behaves like WeCom: tokens, errcodes, limits, silent drops, faults, callbacks."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any
from xml.etree.ElementTree import Element, fromstring

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from bot.wecom.crypto import CallbackCrypto
from bot.wecom.simulator import (
    Simulator,
    SimulatorConfig,
    external_contact_event,
    external_tag_event,
    kf_msg_or_event,
    template_card_event,
    text_message,
)
from bot.wecom.simulator import callbacks as callbacks_module
from bot.wecom.simulator.callback_xml import EXTERNAL_CONTACT_CHANGE_TYPES
from bot.wecom.simulator.cli import describe_config

CORP = "wwtestcorp"
AGENT = 1000002
SECRETS = {"agent": "agent-secret-1", "contact": "contact-secret-1", "kf": "kf-secret-1"}


def make_config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {
        "corp_id": CORP,
        "agent_id": AGENT,
        "secrets": dict(SECRETS),
        "users": ["zhangsan", "LiSi", "wangwu"],
    }
    values.update(overrides)
    return SimulatorConfig(**values)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(make_config()) as simulator:
        yield simulator


class Api:
    """Raw HTTP access to a simulator, as any WeCom client would use it."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.http = requests.Session()
        self.http.trust_env = False

    def gettoken(self, corpid: str | None = CORP, secret: str | None = SECRETS["agent"]) -> dict[str, Any]:
        params = {k: v for k, v in (("corpid", corpid), ("corpsecret", secret)) if v is not None}
        res = self.http.get(f"{self.sim.base_url}/cgi-bin/gettoken", params=params, timeout=5)
        assert res.status_code == 200
        result: dict[str, Any] = res.json()
        return result

    def token(self, app: str = "agent") -> str:
        return str(self.gettoken(secret=SECRETS[app])["access_token"])

    def send(self, payload: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        body = {"agentid": AGENT, **payload}
        res = self.http.post(
            f"{self.sim.base_url}/cgi-bin/message/send",
            params={"access_token": token or self.token()},
            json=body,
            timeout=5,
        )
        assert res.status_code == 200
        result: dict[str, Any] = res.json()
        return result


@pytest.fixture
def api(sim: Simulator) -> Iterator[Api]:
    client = Api(sim)
    yield client
    client.http.close()


def text(to: str, content: str = "hello") -> dict[str, Any]:
    return {"touser": to, "msgtype": "text", "text": {"content": content}}


def button_card(task_id: str, buttons: int = 2, title: str | None = "新客户待跟进") -> dict[str, Any]:
    card: dict[str, Any] = {
        "card_type": "button_interaction",
        "task_id": task_id,
        "button_list": [{"text": f"b{i}", "style": 1, "key": f"K{i}"} for i in range(buttons)],
    }
    if title is not None:
        card["main_title"] = {"title": title}
    return {"touser": "zhangsan", "msgtype": "template_card", "template_card": card}


# ---- gettoken -------------------------------------------------------------------------------------


def test_gettoken_issues_a_token_with_the_configured_lifetime(api: Api, sim: Simulator) -> None:
    result = api.gettoken()
    assert result["errcode"] == 0
    assert len(result["access_token"]) >= 32
    assert result["expires_in"] == 7200
    assert sim.gettoken_calls == 1


@pytest.mark.parametrize(
    ("corpid", "secret", "errcode"),
    [
        (None, SECRETS["agent"], 41002),
        (CORP, None, 41004),
        ("wwother", SECRETS["agent"], 40013),
        (CORP, "nope", 40001),
    ],
)
def test_gettoken_answers_wecom_errcodes(
    api: Api, corpid: str | None, secret: str | None, errcode: int
) -> None:
    result = api.gettoken(corpid, secret)
    assert result["errcode"] == errcode
    assert "access_token" not in result


def test_repeated_wrong_secrets_ban_the_ip_until_the_ban_expires() -> None:
    with Simulator(make_config(ban_threshold=3, ban_duration_s=3600)) as sim:
        api = Api(sim)
        for _ in range(3):
            assert api.gettoken(secret="wrong")["errcode"] == 40001
        assert api.gettoken()["errcode"] == 45009
        sim.advance(3601)
        assert api.gettoken()["errcode"] == 0
        api.http.close()


def test_tokens_expire_and_can_be_invalidated_early(api: Api, sim: Simulator) -> None:
    token = api.token()
    assert api.send(text("zhangsan"), token)["errcode"] == 0
    sim.advance(7200)
    assert api.send(text("zhangsan"), token)["errcode"] == 42001
    fresh = api.token()
    sim.invalidate_tokens()
    assert api.send(text("zhangsan"), fresh)["errcode"] == 40014
    assert api.send(text("zhangsan"), "made-up-token")["errcode"] == 40014


def test_missing_access_token_answers_41001(api: Api, sim: Simulator) -> None:
    res = api.http.post(f"{sim.base_url}/cgi-bin/message/send", json={"agentid": AGENT}, timeout=5)
    assert res.status_code == 200
    assert res.json()["errcode"] == 41001


def test_invalidating_one_app_keeps_other_apps_tokens(api: Api, sim: Simulator) -> None:
    agent_token = api.token("agent")
    sim.invalidate_tokens("contact")
    assert api.send(text("zhangsan"), agent_token)["errcode"] == 0


# ---- message/send ---------------------------------------------------------------------------------


def test_accepted_message_is_recorded_with_msgid(api: Api, sim: Simulator) -> None:
    result = api.send(text("zhangsan", "早盘速递"))
    assert result["errcode"] == 0 and result["msgid"]
    [message] = sim.sent_app_messages
    assert message.msgid == result["msgid"]
    assert message.delivered_to == ("zhangsan",)
    assert message.payload["text"]["content"] == "早盘速递"


def test_unknown_users_are_listed_lower_cased_and_known_ones_match_case_insensitively(
    api: Api, sim: Simulator
) -> None:
    result = api.send(text("ZhangSan|lisi|Ghost|NOBODY"))
    assert result["errcode"] == 0
    assert result["invaliduser"] == "ghost|nobody"
    assert sim.sent_app_messages[-1].delivered_to == ("zhangsan", "LiSi")


def test_all_recipients_invalid_answers_81013(api: Api, sim: Simulator) -> None:
    result = api.send(text("ghost|Nobody"))
    assert result["errcode"] == 81013
    assert result["invaliduser"] == "ghost|nobody"
    assert sim.sent_app_messages == []


def test_parties_and_tags_are_unknown_to_the_simulator(api: Api) -> None:
    result = api.send({"touser": "zhangsan", "toparty": "2|3", "totag": "7", **text("zhangsan")})
    assert result["errcode"] == 0
    assert result["invalidparty"] == "2|3"
    assert result["invalidtag"] == "7"


def test_at_all_reaches_every_member(api: Api, sim: Simulator) -> None:
    assert api.send(text("@all"))["errcode"] == 0
    assert set(sim.sent_app_messages[-1].delivered_to) == {"zhangsan", "LiSi", "wangwu"}


@pytest.mark.parametrize(
    ("payload", "errcode"),
    [
        ({"msgtype": "text", "text": {"content": "x"}}, 82001),
        (text("|".join(f"u{i}" for i in range(1001))), 40032),
        ({"touser": "zhangsan", "text": {"content": "x"}}, 40008),
        ({"touser": "zhangsan", "msgtype": "telegram"}, 40008),
        ({"touser": "zhangsan", "msgtype": "text", "text": {"content": ""}}, 44004),
        ({"touser": "zhangsan", "msgtype": "markdown", "markdown": {}}, 44004),
        ({"touser": "zhangsan", "msgtype": "textcard", "textcard": {"description": "d", "url": "u"}}, 41016),
        (
            {"touser": "zhangsan", "msgtype": "textcard", "textcard": {"title": "t", "description": "d"}},
            41010,
        ),
        ({"touser": "zhangsan", "msgtype": "image", "image": {}}, 41006),
    ],
)
def test_message_field_checks_answer_wecom_errcodes(
    api: Api, sim: Simulator, payload: dict[str, Any], errcode: int
) -> None:
    assert api.send(payload)["errcode"] == errcode
    assert sim.sent_app_messages == []


def test_agentid_is_required_and_must_match_the_tokens_app(api: Api, sim: Simulator) -> None:
    url = f"{sim.base_url}/cgi-bin/message/send"
    no_agent = api.http.post(url, params={"access_token": api.token()}, json=text("zhangsan"), timeout=5)
    assert no_agent.json()["errcode"] == 41011
    assert api.send({**text("zhangsan"), "agentid": 42})["errcode"] == 40056
    assert api.send(text("zhangsan"), api.token("contact"))["errcode"] == 40056


def test_malformed_json_answers_40058_with_http_200(api: Api, sim: Simulator) -> None:
    res = api.http.post(
        f"{sim.base_url}/cgi-bin/message/send",
        params={"access_token": api.token()},
        data=b"{not json",
        timeout=5,
    )
    assert res.status_code == 200
    assert res.json()["errcode"] == 40058


def test_wrong_http_method_answers_40058(api: Api, sim: Simulator) -> None:
    res = api.http.get(
        f"{sim.base_url}/cgi-bin/message/send", params={"access_token": api.token()}, timeout=5
    )
    assert res.json()["errcode"] == 40058


def test_over_long_text_is_truncated_at_2048_bytes_and_flagged(api: Api, sim: Simulator) -> None:
    content = "中" * 700  # 2100 bytes in UTF-8
    assert api.send(text("zhangsan", content))["errcode"] == 0
    message = sim.sent_app_messages[-1]
    assert message.truncated == ("text.content",)
    delivered = message.payload["text"]["content"]
    assert len(delivered.encode()) <= 2048 and delivered == "中" * 682


def test_over_long_text_is_rejected_with_45002_when_configured() -> None:
    with Simulator(make_config(oversize_text="reject")) as sim:
        api = Api(sim)
        assert api.send(text("zhangsan", "x" * 2049))["errcode"] == 45002
        assert api.send(text("zhangsan", "x" * 2048))["errcode"] == 0
        api.http.close()


def test_interactive_card_gets_a_response_code_and_its_task_id(api: Api, sim: Simulator) -> None:
    result = api.send(button_card("lead_0001"))
    assert result["errcode"] == 0
    assert result["response_code"]
    message = sim.sent_app_messages[-1]
    assert message.task_id == "lead_0001"
    record = sim.response_code(result["response_code"])
    assert record is not None and record.task_id == "lead_0001" and not record.used


def test_task_id_is_unique_per_app(api: Api, sim: Simulator) -> None:
    assert api.send(button_card("lead_0002"))["errcode"] == 0
    again = api.send(button_card("lead_0002"))
    assert again["errcode"] == 40058
    assert "task_id" in again["errmsg"]
    assert len(sim.sent_app_messages) == 1


@pytest.mark.parametrize(
    "card",
    [
        button_card("t1", buttons=7),
        button_card("t2", buttons=0),
        button_card("t3", title=None),
        button_card("bad task id!"),
        {
            "touser": "zhangsan",
            "msgtype": "template_card",
            "template_card": {"card_type": "button_interaction"},
        },
        {"touser": "zhangsan", "msgtype": "template_card", "template_card": {"card_type": "fancy"}},
    ],
)
def test_invalid_template_cards_are_rejected(api: Api, sim: Simulator, card: dict[str, Any]) -> None:
    assert api.send(card)["errcode"] == 40058
    assert sim.sent_app_messages == []


def test_duplicate_button_keys_are_rejected(api: Api) -> None:
    card = button_card("t4")
    card["template_card"]["button_list"] = [{"text": "a", "key": "K"}, {"text": "b", "key": "K"}]
    assert api.send(card)["errcode"] == 40058


def test_text_notice_card_needs_no_task_id_and_gets_no_response_code(api: Api) -> None:
    card = {
        "card_type": "text_notice",
        "main_title": {"title": "早盘速递"},
        "card_action": {"type": 1, "url": "u"},
    }
    result = api.send({"touser": "zhangsan", "msgtype": "template_card", "template_card": card})
    assert result["errcode"] == 0
    assert "response_code" not in result


def test_31st_message_in_a_minute_to_a_member_is_dropped_silently(api: Api, sim: Simulator) -> None:
    token = api.token()
    results = [api.send(text("zhangsan|wangwu" if i == 30 else "zhangsan"), token) for i in range(31)]
    assert all(r["errcode"] == 0 for r in results)
    [dropped] = sim.dropped_app_messages
    assert dropped.userid == "zhangsan" and dropped.msgid == results[30]["msgid"]
    assert len(sim.messages_to("zhangsan")) == 30
    last = sim.sent_app_messages[-1]
    assert last.delivered_to == ("wangwu",) and last.dropped_for == ("zhangsan",)
    sim.advance(60)
    api.send(text("zhangsan"), token)
    assert len(sim.messages_to("zhangsan")) == 31


def test_hourly_member_limit_drops_silently_across_minutes() -> None:
    with Simulator(make_config(member_per_minute=3, member_per_hour=5)) as sim:
        api = Api(sim)
        token = api.token()
        for _ in range(3):
            api.send(text("zhangsan"), token)
        sim.advance(60)
        results = [api.send(text("zhangsan"), token) for _ in range(3)]
        assert all(r["errcode"] == 0 for r in results)
        assert len(sim.messages_to("zhangsan")) == 5
        assert "hour" in sim.dropped_app_messages[-1].reason
        api.http.close()


def test_per_api_rate_limit_answers_45009_and_blocks_for_the_window() -> None:
    with Simulator(make_config(api_per_minute=3)) as sim:
        api = Api(sim)
        assert [api.gettoken()["errcode"] for _ in range(4)] == [0, 0, 0, 45009]
        sim.advance(30)
        assert api.gettoken()["errcode"] == 45009
        sim.advance(31)
        assert api.gettoken()["errcode"] == 0
        api.http.close()


def test_message_send_is_not_counted_toward_the_per_api_limit() -> None:
    with Simulator(make_config(api_per_minute=2)) as sim:
        api = Api(sim)
        token = api.token()
        assert all(
            api.send(text(u), token)["errcode"] == 0 for u in ("zhangsan", "lisi", "wangwu", "zhangsan")
        )
        api.http.close()


# ---- faults -----------------------------------------------------------------------------------------


def test_injected_fault_answers_the_errcode_for_the_next_n_calls(api: Api, sim: Simulator) -> None:
    token = api.token()
    sim.inject_fault("message/send", -1, times=2)
    assert [api.send(text("zhangsan"), token)["errcode"] for _ in range(3)] == [-1, -1, 0]
    assert len(sim.sent_app_messages) == 1
    assert sim.api_calls("message/send") == 3


def test_injected_http_status_fault(api: Api, sim: Simulator) -> None:
    token = api.token()
    sim.inject_fault("*", -1, http_status=502)
    res = api.http.post(
        f"{sim.base_url}/cgi-bin/message/send",
        params={"access_token": token},
        json=text("zhangsan"),
        timeout=5,
    )
    assert res.status_code == 502


def test_concurrency_cap_answers_45033() -> None:
    with Simulator(make_config(api_concurrency=1)) as sim:
        api = Api(sim)
        token = api.token()
        sim.set_latency("message/send", 0.3)
        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(api.send(text("zhangsan"), token)["errcode"]))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [0, 45033]
        api.http.close()


def test_unknown_api_is_404(api: Api, sim: Simulator) -> None:
    res = api.http.post(f"{sim.base_url}/cgi-bin/no/such/api", json={}, timeout=5)
    assert res.status_code == 404


def test_control_endpoints_drive_a_simulator_in_another_process(api: Api, sim: Simulator) -> None:
    token = api.token()
    api.send(text("zhangsan"), token)
    assert api.http.post(f"{sim.base_url}/_sim/invalidate_tokens", json={}, timeout=5).json() == {"ok": True}
    assert api.send(text("zhangsan"), token)["errcode"] == 40014
    api.http.post(f"{sim.base_url}/_sim/fault", json={"api": "gettoken", "errcode": -1}, timeout=5)
    assert api.gettoken()["errcode"] == -1
    state = api.http.get(f"{sim.base_url}/_sim/state", timeout=5).json()
    assert state["gettoken_calls"] == 2
    assert [m["delivered_to"] for m in state["sent_app_messages"]] == [["zhangsan"]]


# ---- callbacks --------------------------------------------------------------------------------------


class FakeBot:
    """A bot endpoint under test control: decrypts callbacks, can fail, stall, reply or echo badly."""

    def __init__(self, crypto: CallbackCrypto) -> None:
        self.crypto = crypto
        self.received: list[str] = []
        self.envelopes: list[Element] = []
        self.fail_first = 0
        self.stall_first = 0
        self.stall_s = 0.0
        self.reply: Callable[[str, str, str], str] | None = None
        self.echo_suffix = ""
        self._calls = 0
        self._stop = threading.Event()
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/wecom/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        args = request.args
        if request.method == "GET":
            echostr = args["echostr"]
            assert self.crypto.verify(args["msg_signature"], args["timestamp"], args["nonce"], echostr)
            return Response(self.crypto.decrypt(echostr) + self.echo_suffix)(environ, start_response)
        self._calls += 1
        call = self._calls
        if call <= self.stall_first:
            self._stop.wait(self.stall_s)
        if call <= self.fail_first:
            return Response("boom", status=500)(environ, start_response)
        envelope = fromstring(request.get_data())
        encrypt = envelope.findtext("Encrypt") or ""
        assert self.crypto.verify(args["msg_signature"], args["timestamp"], args["nonce"], encrypt)
        plaintext = self.crypto.decrypt(encrypt)
        self.envelopes.append(envelope)
        self.received.append(plaintext)
        body = self.reply(plaintext, args["timestamp"], args["nonce"]) if self.reply else ""
        return Response(body)(environ, start_response)

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def bot(sim: Simulator) -> Iterator[FakeBot]:
    fake = FakeBot(CallbackCrypto(sim.config.token, sim.config.encoding_aes_key, sim.config.corp_id))
    yield fake
    fake.close()


def test_callback_is_encrypted_signed_and_enveloped(sim: Simulator, bot: FakeBot) -> None:
    xml = text_message("zhangsan", "订阅", corp_id=CORP, agent_id=AGENT, msg_id=123, create_time=1700000000)
    result = sim.send_callback(bot.url, xml)
    assert result.delivered and result.status_codes == [200]
    assert bot.received == [xml]
    envelope = bot.envelopes[0]
    assert [child.tag for child in envelope] == ["ToUserName", "AgentID", "Encrypt"]
    assert envelope.findtext("ToUserName") == CORP and envelope.findtext("AgentID") == str(AGENT)
    assert sim.callbacks_sent == [result]


def test_callback_without_agent_id_omits_the_element(sim: Simulator, bot: FakeBot) -> None:
    sim.send_callback(bot.url, kf_msg_or_event("wkabc", "ENCtoken", corp_id=CORP), with_agent_id=False)
    assert [child.tag for child in bot.envelopes[0]] == ["ToUserName", "Encrypt"]


def test_callback_is_retried_after_non_200(sim: Simulator, bot: FakeBot) -> None:
    bot.fail_first = 2
    result = sim.send_callback(
        bot.url, text_message("zhangsan", "hi", corp_id=CORP, agent_id=AGENT), retry_interval_s=0
    )
    assert result.status_codes == [500, 500, 200]
    assert result.delivered and len(bot.received) == 1


def test_callback_gives_up_after_the_retries(sim: Simulator, bot: FakeBot) -> None:
    bot.fail_first = 100
    result = sim.send_callback(bot.url, "<xml/>", retries=3, retry_interval_s=0)
    assert result.status_codes == [500, 500, 500, 500]
    assert not result.delivered


def test_callback_is_retried_after_a_timeout(sim: Simulator, bot: FakeBot) -> None:
    bot.stall_first, bot.stall_s = 1, 0.5
    result = sim.send_callback(bot.url, "<xml/>", timeout_s=0.1, retry_interval_s=0)
    assert result.status_codes[0] is None and result.attempts[0].error
    assert result.status_codes[-1] == 200


def test_duplicate_delivery_sends_the_same_message_twice(sim: Simulator, bot: FakeBot) -> None:
    xml = external_contact_event("add_external_contact", "zhangsan", "wmEXT", corp_id=CORP, state="XHS888")
    result = sim.send_callback(bot.url, xml, duplicate=True)
    assert bot.received == [xml, xml]
    assert [a.delivery for a in result.attempts] == [1, 2]


def test_encrypted_passive_reply_is_decrypted(sim: Simulator, bot: FakeBot) -> None:
    reply_xml = (
        "<xml><MsgType>update_button</MsgType><Button><ReplaceName>已处理</ReplaceName></Button></xml>"
    )
    bot.reply = lambda _plain, ts, nonce: bot.crypto.encrypt_reply(reply_xml, ts, nonce)
    event = template_card_event("zhangsan", "ACCEPT", "lead_1", "RC1", corp_id=CORP, agent_id=AGENT)
    result = sim.send_callback(bot.url, event)
    assert result.reply_plaintext == reply_xml and result.reply_error is None


def test_unsigned_passive_reply_is_reported(sim: Simulator, bot: FakeBot) -> None:
    bot.reply = lambda _plain, _ts, _nonce: "<xml><Encrypt>abc</Encrypt><MsgSignature>x</MsgSignature></xml>"
    result = sim.send_callback(bot.url, "<xml/>")
    assert result.reply_plaintext is None and result.reply_error is not None


def test_url_check_passes_when_the_bot_echoes_exactly(sim: Simulator, bot: FakeBot) -> None:
    result = sim.verify_url(bot.url)
    assert result.ok and result.body == result.expected


def test_url_check_fails_on_a_trailing_newline(sim: Simulator, bot: FakeBot) -> None:
    bot.echo_suffix = "\n"
    assert not sim.verify_url(bot.url).ok


def test_url_check_fails_when_the_bot_is_too_slow(
    sim: Simulator, bot: FakeBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(callbacks_module, "URL_CHECK_DEADLINE_S", 0.1)
    original = bot.app

    def slow(environ: dict[str, Any], start_response: Any) -> Any:
        bot._stop.wait(0.3)
        return original(environ, start_response)

    bot.app = slow  # type: ignore[method-assign]
    bot._server.app = slow
    result = sim.verify_url(bot.url)
    assert not result.ok and result.status is None


# ---- callback XML builders -------------------------------------------------------------------------


def fields(xml: str) -> list[tuple[str, str]]:
    return [(child.tag, child.text or "") for child in fromstring(xml)]


def test_add_external_contact_matches_the_documented_shape() -> None:
    xml = external_contact_event(
        "add_external_contact",
        "zhangsan",
        "woAJ2G",
        corp_id=CORP,
        state="teststate",
        welcome_code="WC",
        create_time=1,
    )
    assert fields(xml) == [
        ("ToUserName", CORP),
        ("FromUserName", "sys"),
        ("CreateTime", "1"),
        ("MsgType", "event"),
        ("Event", "change_external_contact"),
        ("ChangeType", "add_external_contact"),
        ("UserID", "zhangsan"),
        ("ExternalUserID", "woAJ2G"),
        ("State", "teststate"),
        ("WelcomeCode", "WC"),
    ]
    assert "<State><![CDATA[teststate]]></State>" in xml and "<CreateTime>1</CreateTime>" in xml


@pytest.mark.parametrize("change_type", EXTERNAL_CONTACT_CHANGE_TYPES)
def test_every_change_type_builds(change_type: str) -> None:
    reason = "customer_refused" if change_type == "transfer_fail" else None
    tags = [
        tag
        for tag, _ in fields(external_contact_event(change_type, "u", "wm", corp_id=CORP, fail_reason=reason))
    ]
    assert tags[5] == "ChangeType" and tags[-2:] == ["UserID", "ExternalUserID"]
    if change_type == "transfer_fail":
        assert tags[6] == "FailReason"


def test_change_type_refuses_fields_it_never_carries() -> None:
    with pytest.raises(ValueError):
        external_contact_event("del_follow_user", "u", "wm", corp_id=CORP, state="s")
    with pytest.raises(ValueError):
        external_contact_event("transfer_fail", "u", "wm", corp_id=CORP)
    with pytest.raises(ValueError):
        external_contact_event("made_up", "u", "wm", corp_id=CORP)


def test_del_external_contact_carries_source() -> None:
    xml = external_contact_event("del_external_contact", "u", "wm", corp_id=CORP, source="DELETE_BY_TRANSFER")
    assert fields(xml)[-1] == ("Source", "DELETE_BY_TRANSFER")


def test_tag_events_match_the_documented_shapes() -> None:
    created = fields(external_tag_event("create", "et1", corp_id=CORP, tag_type="tag_group", create_time=5))
    assert [t for t, _ in created][4:] == ["Event", "Id", "TagType", "ChangeType"]
    shuffled = dict(fields(external_tag_event("shuffle", "et1", corp_id=CORP, strategy_id="9")))
    assert shuffled["StrategyId"] == "9" and "TagType" not in shuffled


def test_kf_event_has_no_from_user() -> None:
    assert [t for t, _ in fields(kf_msg_or_event("wk1", "ENC", corp_id=CORP))] == [
        "ToUserName",
        "CreateTime",
        "MsgType",
        "Event",
        "Token",
        "OpenKfId",
    ]


def test_template_card_event_carries_selected_items() -> None:
    xml = template_card_event(
        "zhangsan", "ACCEPT", "lead_1", "RC", corp_id=CORP, agent_id=AGENT, selected_items={"q1": ["a", "b"]}
    )
    root = fromstring(xml)
    assert root.findtext("FromUserName") == "zhangsan" and root.findtext("AgentID") == str(AGENT)
    assert root.findtext("EventKey") == "ACCEPT" and root.findtext("ResponseCode") == "RC"
    item = root.find("SelectedItems/SelectedItem")
    assert item is not None and item.findtext("QuestionKey") == "q1"
    assert [o.text for o in item.findall("OptionIds/OptionId")] == ["a", "b"]


def test_cdata_terminator_in_content_survives() -> None:
    content = "a]]>b<c>&d"
    assert fromstring(text_message("u", content, corp_id=CORP, agent_id=AGENT)).findtext("Content") == content


def test_describe_config_prints_what_the_bot_needs(sim: Simulator) -> None:
    out = describe_config(sim.base_url, sim.config)
    assert f'api_base_url = "{sim.base_url}"' in out
    assert f'corp_id = "{CORP}"' in out and f"agent_id = {AGENT}" in out
    assert 'kf_secret = "kf-secret-1"' in out


def _raw(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> Any:
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response, response.read()


def test_api_connections_are_kept_open_and_closed_when_the_simulator_stops() -> None:
    simulator = Simulator(make_config())
    simulator.start()
    conn = http.client.HTTPConnection("127.0.0.1", simulator.port, timeout=5)
    try:
        res, raw = _raw(conn, "GET", f"/cgi-bin/gettoken?corpid={CORP}&corpsecret={SECRETS['agent']}")
        token = json.loads(raw)["access_token"]
        assert res.status == 200 and not res.will_close
        body = json.dumps({"agentid": AGENT, **text("zhangsan")}).encode()
        res, raw = _raw(conn, "POST", f"/cgi-bin/message/send?access_token={token}", body)
        assert res.status == 200 and json.loads(raw)["errcode"] == 0 and not res.will_close
        assert simulator.connections_accepted == 1  # both calls on one connection
        simulator.stop()
        with pytest.raises((http.client.HTTPException, OSError)):
            _raw(conn, "POST", f"/cgi-bin/message/send?access_token={token}", body)
    finally:
        conn.close()
        simulator.stop()


def test_request_of_unknown_length_is_answered_then_its_connection_closed(sim: Simulator) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        # A chunked body: the server cannot tell where the next request would start.
        conn.request("POST", "/cgi-bin/message/send?access_token=nope", body=iter([b"{", b"}"]))
        res = conn.getresponse()
        assert res.status == 200 and json.loads(res.read())["errcode"] == 40014 and res.will_close
    finally:
        conn.close()
    assert len(sim.sent_app_messages) == 0
