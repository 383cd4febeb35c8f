"""WeComClient against the real simulator over HTTP: token caching, refresh-once, error classes."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bot.coordination import MemoryCoordinator
from bot.wecom.client import SentCard, TransferStatus, WeComClient, token_cache_ttl
from bot.wecom.errors import ErrorKind, WeComAPIError, classify
from bot.wecom.simulator import ApiCall, Simulator, SimulatorConfig

CORP = "wwclienttest"
AGENT = 1000002
# The first 10 characters are shared on purpose: wechatpy's default cache key would collide.
SECRETS = {"agent": "sharedpfx-agent-secret", "contact": "sharedpfx-contact-secret", "kf": "kf-secret-xyz"}


def text(to: str = "zhangsan", content: str = "hello") -> dict[str, Any]:
    return {"touser": to, "msgtype": "text", "text": {"content": content}}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(corp_id=CORP, agent_id=AGENT, secrets=dict(SECRETS), users=["zhangsan", "lisi"])
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
def coordinator() -> MemoryCoordinator:
    return MemoryCoordinator()


def make_client(
    sim: Simulator,
    coordinator: MemoryCoordinator,
    secrets: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> WeComClient:
    return WeComClient(
        corp_id=CORP,
        secrets=SECRETS if secrets is None else secrets,
        agent_id=AGENT,
        coordinator=coordinator,
        api_base_url=sim.base_url,
        timeout=timeout,
    )


@pytest.fixture
def client(sim: Simulator, coordinator: MemoryCoordinator) -> Iterator[WeComClient]:
    wecom = make_client(sim, coordinator)
    yield wecom
    wecom.close()


def test_token_is_fetched_from_the_configured_base_url_and_reused(
    client: WeComClient, sim: Simulator
) -> None:
    assert sim.gettoken_calls == 0
    for _ in range(3):
        assert client.send_app_message(text())["errcode"] == 0
    assert sim.gettoken_calls == 1
    assert len(sim.messages_to("zhangsan")) == 3


def test_send_app_message_fills_agentid_without_touching_the_payload(
    client: WeComClient, sim: Simulator
) -> None:
    payload = text()
    client.send_app_message(payload)
    assert "agentid" not in payload
    assert sim.sent_app_messages[0].agentid == AGENT


def test_processes_sharing_a_coordinator_share_one_token(
    sim: Simulator, coordinator: MemoryCoordinator
) -> None:
    first, second = make_client(sim, coordinator), make_client(sim, coordinator)
    first.send_app_message(text())
    second.send_app_message(text())
    assert sim.gettoken_calls == 1
    first.close()
    second.close()


def test_concurrent_first_calls_fetch_the_token_once(sim: Simulator, coordinator: MemoryCoordinator) -> None:
    sim.set_latency("gettoken", 0.2)
    clients = [make_client(sim, coordinator) for _ in range(6)]
    errors: list[BaseException] = []

    def send(c: WeComClient) -> None:
        try:
            c.send_app_message(text())
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sim.gettoken_calls == 1
    assert len(sim.messages_to("zhangsan")) == 6
    for c in clients:
        c.close()


def test_each_secret_gets_its_own_token_even_with_a_shared_prefix(
    client: WeComClient, sim: Simulator
) -> None:
    seen: list[str | None] = []

    def handler(call: ApiCall) -> dict[str, Any]:
        seen.append(call.app)
        return {}

    sim.register("externalcontact/get_follow_user_list", handler, methods=("GET",))
    client.get("externalcontact/get_follow_user_list", app="contact")
    client.send_app_message(text())
    assert seen == ["contact"]
    assert sim.gettoken_calls == 2
    assert len(sim.sent_app_messages) == 1


def test_token_is_cached_for_less_than_expires_in(sim: Simulator) -> None:
    recorded: list[tuple[str, int]] = []

    class RecordingCoordinator(MemoryCoordinator):
        def cache_set(self, key: str, value: str, ttl_s: int) -> None:
            recorded.append((key, ttl_s))
            super().cache_set(key, value, ttl_s)

    wecom = make_client(sim, RecordingCoordinator())
    wecom.send_app_message(text())
    [(key, ttl)] = recorded
    assert ttl == token_cache_ttl(7200) < 7200
    assert SECRETS["agent"] not in key and CORP in key
    wecom.close()


def test_token_cache_ttl_keeps_a_margin() -> None:
    assert token_cache_ttl(7200) == 6900
    assert token_cache_ttl(100) == 90
    assert token_cache_ttl(1) == 1


def test_invalidated_token_is_refetched_once_and_the_call_succeeds(
    client: WeComClient, sim: Simulator
) -> None:
    client.send_app_message(text())
    sim.invalidate_tokens()
    assert client.send_app_message(text())["errcode"] == 0
    assert sim.gettoken_calls == 2
    assert sim.api_calls("message/send") == 3
    assert len(sim.sent_app_messages) == 2


def test_expired_token_is_refetched_once(client: WeComClient, sim: Simulator) -> None:
    client.send_app_message(text())
    sim.advance(7200)
    assert client.send_app_message(text())["errcode"] == 0
    assert sim.gettoken_calls == 2


def test_persistent_40014_is_raised_after_one_refetch_not_looped(client: WeComClient, sim: Simulator) -> None:
    sim.inject_fault("message/send", 40014, times=10)
    with pytest.raises(WeComAPIError) as info:
        client.send_app_message(text())
    assert info.value.errcode == 40014 and info.value.kind is ErrorKind.TOKEN
    assert not info.value.retryable
    assert sim.gettoken_calls == 2
    assert sim.api_calls("message/send") == 2


def test_wrong_secret_raises_without_retrying_gettoken(
    sim: Simulator, coordinator: MemoryCoordinator
) -> None:
    wecom = make_client(sim, coordinator, secrets={"agent": "not-the-secret"})
    with pytest.raises(WeComAPIError) as info:
        wecom.send_app_message(text())
    assert info.value.errcode == 40001 and info.value.api == "gettoken"
    assert sim.gettoken_calls == 1
    wecom.close()


@pytest.mark.parametrize(
    ("errcode", "kind", "retryable"),
    [
        (45009, ErrorKind.RATE_LIMITED, True),
        (45033, ErrorKind.RATE_LIMITED, True),
        (-1, ErrorKind.TRANSIENT, True),
        (84061, ErrorKind.PERMANENT, False),
        (95001, ErrorKind.PERMANENT, False),
        (41051, ErrorKind.PERMANENT, False),
    ],
)
def test_api_errors_are_classified(
    client: WeComClient, sim: Simulator, errcode: int, kind: ErrorKind, retryable: bool
) -> None:
    sim.inject_fault("message/send", errcode)
    with pytest.raises(WeComAPIError) as info:
        client.send_app_message(text())
    error = info.value
    assert (error.errcode, error.kind, error.retryable, error.api) == (
        errcode,
        kind,
        retryable,
        "message/send",
    )
    assert str(errcode) in str(error)
    if kind is ErrorKind.RATE_LIMITED:
        assert error.retry_after_s is not None and error.retry_after_s > 0
    assert sim.api_calls("message/send") == 1


def test_all_invalid_recipients_is_a_permanent_81013(client: WeComClient) -> None:
    with pytest.raises(WeComAPIError) as info:
        client.send_app_message(text("ghost"))
    assert info.value.errcode == 81013 and info.value.kind is ErrorKind.PERMANENT


def test_http_5xx_is_transient(client: WeComClient, sim: Simulator) -> None:
    client.send_app_message(text())
    sim.inject_fault("message/send", -1, http_status=502)
    with pytest.raises(WeComAPIError) as info:
        client.send_app_message(text())
    assert info.value.kind is ErrorKind.TRANSIENT and "502" in info.value.errmsg


def test_http_404_is_permanent(client: WeComClient) -> None:
    with pytest.raises(WeComAPIError) as info:
        client.post("no/such/api", {})
    assert info.value.kind is ErrorKind.PERMANENT


def test_timeout_is_transient(sim: Simulator, coordinator: MemoryCoordinator) -> None:
    wecom = make_client(sim, coordinator, timeout=0.2)
    wecom.send_app_message(text())
    sim.set_latency("message/send", 0.5)
    with pytest.raises(WeComAPIError) as info:
        wecom.send_app_message(text())
    assert info.value.kind is ErrorKind.TRANSIENT and info.value.retryable
    wecom.close()


def test_unreachable_host_is_transient(coordinator: MemoryCoordinator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    wecom = WeComClient(CORP, SECRETS, AGENT, coordinator, api_base_url=f"http://127.0.0.1:{port}", timeout=1)
    with pytest.raises(WeComAPIError) as info:
        wecom.send_app_message(text())
    assert info.value.kind is ErrorKind.TRANSIENT and info.value.api == "gettoken"
    wecom.close()


def test_generic_post_sends_exact_json_with_the_kf_token(client: WeComClient, sim: Simulator) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []

    def send_msg(call: ApiCall) -> dict[str, Any]:
        received.append((call.app, call.json()))
        return {"msgid": "m1"}

    sim.register("kf/send_msg", send_msg)
    payload = {
        "touser": "wmEXT",
        "open_kfid": "wkKF",
        "msgtype": "link",
        "link": {"title": "早盘速递", "desc": "d", "url": "https://example.com", "thumb_media_id": "M"},
    }
    assert client.post("/cgi-bin/kf/send_msg", payload, app="kf") == {
        "errcode": 0,
        "errmsg": "ok",
        "msgid": "m1",
    }
    assert received == [("kf", payload)]


def test_generic_get_passes_query_params(client: WeComClient, sim: Simulator) -> None:
    def servicers(call: ApiCall) -> dict[str, Any]:
        return {"open_kfid": call.query.get("open_kfid"), "app": call.app}

    sim.register("kf/servicer/list", servicers, methods=("GET",))
    result = client.get("kf/servicer/list", {"open_kfid": "wkKF"}, app="kf")
    assert result["open_kfid"] == "wkKF" and result["app"] == "kf"


def test_app_without_its_own_secret_uses_the_agent_app(
    sim: Simulator, coordinator: MemoryCoordinator
) -> None:
    apps: list[str | None] = []

    def account_list(call: ApiCall) -> dict[str, Any]:
        apps.append(call.app)
        return {}

    sim.register("kf/account/list", account_list)
    wecom = make_client(sim, coordinator, secrets={"agent": SECRETS["agent"], "kf": ""})
    wecom.post("kf/account/list", {}, app="kf")
    assert apps == ["agent"]
    wecom.close()


def test_no_secret_at_all_is_a_permanent_error(sim: Simulator, coordinator: MemoryCoordinator) -> None:
    wecom = make_client(sim, coordinator, secrets={"contact": SECRETS["contact"]})
    with pytest.raises(WeComAPIError) as info:
        wecom.post("kf/account/list", {}, app="kf")
    assert info.value.kind is ErrorKind.PERMANENT
    assert sim.gettoken_calls == 0
    wecom.close()


def test_31st_app_message_in_a_minute_is_dropped_silently(client: WeComClient, sim: Simulator) -> None:
    results = [client.send_app_message(text()) for _ in range(31)]
    assert all(r["errcode"] == 0 for r in results)
    assert len(sim.messages_to("zhangsan")) == 30
    [dropped] = sim.dropped_app_messages
    assert dropped.userid == "zhangsan" and dropped.msgid == results[-1]["msgid"]


def test_classify_maps_codes_to_kinds() -> None:
    assert classify(40014) is ErrorKind.TOKEN and classify(42001) is ErrorKind.TOKEN
    assert classify(45009) is ErrorKind.RATE_LIMITED
    assert classify(-1) is ErrorKind.TRANSIENT
    assert classify(95018) is ErrorKind.PERMANENT and classify(123456) is ErrorKind.PERMANENT
    with pytest.raises(ValueError):
        classify(0)


def test_unknown_app_name_is_rejected(sim: Simulator, coordinator: MemoryCoordinator) -> None:
    with pytest.raises(ValueError):
        make_client(sim, coordinator, secrets={"chat": "x"})


# ---- template cards, kf handoff and transfers -------------------------------------------------------


@pytest.fixture
def strict_sim() -> Iterator[Simulator]:
    """Each API answers only its own app, so a call made with the wrong secret fails with 48002."""
    config = SimulatorConfig(
        corp_id=CORP,
        agent_id=AGENT,
        secrets=dict(SECRETS),
        users=["zhangsan", "lisi"],
        contact_apps=["contact"],
        kf_apps=["kf"],
    )
    with Simulator(config) as simulator:
        yield simulator


@pytest.fixture
def strict_client(strict_sim: Simulator, coordinator: MemoryCoordinator) -> Iterator[WeComClient]:
    wecom = make_client(strict_sim, coordinator)
    yield wecom
    wecom.close()


def lead_card(task_id: str = "lead_client_1") -> dict[str, Any]:
    return {
        "card_type": "button_interaction",
        "main_title": {"title": "新客户待跟进"},
        "task_id": task_id,
        "button_list": [{"text": "接单", "key": "ACCEPT"}, {"text": "转交", "key": "PASS"}],
    }


def test_send_template_card_returns_the_msgid_and_response_code(client: WeComClient, sim: Simulator) -> None:
    sent = client.send_template_card("zhangsan|lisi", lead_card())
    assert sent == SentCard(sim.sent_app_messages[0].msgid, sim.sent_app_messages[0].response_code)
    assert sent.response_code is not None
    notice = {
        "card_type": "text_notice",
        "main_title": {"title": "早盘速递"},
        "card_action": {"type": 1, "url": "u"},
    }
    assert client.send_template_card("zhangsan", notice).response_code is None


def test_send_template_card_raises_when_a_member_is_invalid(client: WeComClient, sim: Simulator) -> None:
    with pytest.raises(WeComAPIError) as partly:
        client.send_template_card("zhangsan|ghost", lead_card("lead_client_2"))
    assert partly.value.errcode == 40003 and "ghost" in partly.value.errmsg
    with pytest.raises(WeComAPIError) as nobody:
        client.send_template_card("ghost", lead_card("lead_client_3"))
    assert nobody.value.errcode == 81013


def test_update_template_card_greys_or_replaces_the_card(client: WeComClient, sim: Simulator) -> None:
    sent = client.send_template_card("zhangsan|lisi", lead_card())
    assert sent.response_code is not None
    client.update_template_card(["zhangsan"], sent.response_code, replace_name="已接单")
    assert sim.card_state("zhangsan", "lead_client_1").replace_name == "已接单"  # type: ignore[union-attr]
    code = sim.member_clicks_card("lisi", "lead_client_1", "PASS")
    replacement = {**lead_card(), "main_title": {"title": "已转交"}}
    client.update_template_card(["lisi"], code, card=replacement)
    state = sim.card_state("lisi", "lead_client_1")
    assert state is not None and state.card["main_title"]["title"] == "已转交"
    with pytest.raises(WeComAPIError) as reused:
        client.update_template_card(["lisi"], code, replace_name="x")
    assert reused.value.errcode == 40058


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"replace_name": "已处理", "card": lead_card()}, {"userids": [], "replace_name": "已处理"}],
)
def test_update_template_card_checks_its_arguments_before_calling(
    client: WeComClient, sim: Simulator, kwargs: dict[str, Any]
) -> None:
    arguments: dict[str, Any] = {"userids": ["zhangsan"], **kwargs}
    with pytest.raises(ValueError):
        client.update_template_card(arguments.pop("userids"), "code", **arguments)
    assert sim.api_calls("message/update_template_card") == 0


def test_kf_transfer_session_hands_the_customer_to_a_servicer(
    strict_client: WeComClient, strict_sim: Simulator
) -> None:
    open_kfid = strict_client.post("kf/account/add", {"name": "开户咨询", "media_id": "M"}, app="kf")[
        "open_kfid"
    ]
    strict_client.post("kf/servicer/add", {"open_kfid": open_kfid, "userid_list": ["lisi"]}, app="kf")
    customer = strict_sim.kf_customer_says(open_kfid, None, "我要找人工").external_userid
    code = strict_client.kf_transfer_session(open_kfid, customer, "lisi")
    assert code is not None
    session = strict_sim.kf_session(open_kfid, customer)
    assert session is not None and session.state == 3 and session.servicer == "lisi"
    assert strict_client.kf_transfer_session(open_kfid, customer, "lisi") is None
    with pytest.raises(WeComAPIError) as not_servicer:
        strict_client.kf_transfer_session(open_kfid, customer, "zhangsan")
    assert not_servicer.value.errcode == 95014


def test_transfer_customer_and_result_use_the_contact_app(
    strict_client: WeComClient, strict_sim: Simulator
) -> None:
    way = {"type": 1, "scene": 2, "user": ["zhangsan"]}
    config_id = strict_client.post("externalcontact/add_contact_way", way, app="contact")["config_id"]
    ext = strict_sim.customer_scans(config_id, "wmCLIENT").external_userid
    result = strict_client.transfer_customer(
        "zhangsan", "lisi", [ext, ext, "wmNOBODY"], "您好，后续由李四为您服务"
    )
    assert result == {ext: 0, "wmNOBODY": 40096}
    assert strict_sim.transfers[0].success_msg == "您好，后续由李四为您服务"
    [waiting] = strict_client.transfer_result("zhangsan", "lisi")
    assert waiting.status == 2 and waiting.takeover_time is not None
    strict_sim.advance(86400)
    assert strict_client.transfer_result("zhangsan", "lisi") == [
        TransferStatus(ext, 1, waiting.takeover_time)
    ]


@pytest.mark.parametrize("count", [0, 101])
def test_transfer_customer_refuses_an_empty_or_oversized_batch(
    client: WeComClient, sim: Simulator, count: int
) -> None:
    with pytest.raises(ValueError):
        client.transfer_customer("zhangsan", "lisi", [f"wm{i:04d}" for i in range(count)])
    assert sim.api_calls("externalcontact/transfer_customer") == 0


def test_calls_share_one_kept_open_connection(client: WeComClient, sim: Simulator) -> None:
    for _ in range(5):
        client.send_app_message(text())
    assert sim.connections_accepted == 1  # gettoken and the five sends


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_proxy_from_the_environment_is_used_unless_no_proxy_names_the_host(
    sim: Simulator, coordinator: MemoryCoordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", sim.base_url)  # the simulator serves absolute-URI requests too
    unreachable = f"http://127.0.0.1:{_closed_port()}"
    via_proxy = WeComClient(CORP, SECRETS, AGENT, coordinator, api_base_url=unreachable, timeout=2)
    assert via_proxy.send_app_message(text())["errcode"] == 0
    via_proxy.close()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = WeComClient(CORP, SECRETS, AGENT, MemoryCoordinator(), api_base_url=unreachable, timeout=2)
    with pytest.raises(WeComAPIError) as info:
        direct.send_app_message(text())
    assert info.value.kind is ErrorKind.TRANSIENT and "refused" in info.value.errmsg
    direct.close()


def test_failures_keep_the_causes_that_tell_whether_a_call_may_have_reached_wecom(
    client: WeComClient, sim: Simulator, coordinator: MemoryCoordinator
) -> None:
    from bot.campaigns.masssend import _not_created

    client.access_token("contact")  # cached in the shared coordinator: the next client skips gettoken
    refused = WeComClient(
        CORP, SECRETS, AGENT, coordinator, api_base_url=f"http://127.0.0.1:{_closed_port()}", timeout=2
    )
    with pytest.raises(WeComAPIError) as info:
        refused.add_msg_template(["wmA"], sender="zhangsan", text="hi")
    # No byte left: the mass sender may create the task again.
    assert isinstance(info.value.__cause__, requests.ConnectionError) and _not_created(info.value)
    assert "access_token=***" in info.value.errmsg  # the token is redacted from urllib3's message
    refused.close()
    sim.inject_fault("externalcontact/add_msg_template", -1, http_status=502)
    with pytest.raises(WeComAPIError) as info:
        client.add_msg_template(["wmA"], sender="zhangsan", text="hi")
    # An HTTP error may hide an answer WeCom acted on: never "certainly not created".
    assert info.value.kind is ErrorKind.TRANSIENT and not _not_created(info.value)
