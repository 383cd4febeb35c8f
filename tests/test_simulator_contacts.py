"""The simulator's customer-contact surface: contact ways, links, adds, welcomes, tags, relations."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any, TypeVar

import pytest
import requests
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from bot.coordination import MemoryCoordinator
from bot.wecom.client import WeComClient
from bot.wecom.crypto import CallbackCrypto
from bot.wecom.errors import WeComAPIError
from bot.wecom.events import (
    CustomerAcquisitionEvent,
    Event,
    ExternalContactChange,
    ExternalTagChange,
    parse_event,
)
from bot.wecom.simulator import SimulationError, Simulator, SimulatorConfig
from bot.wecom.xmlparse import parse_xml

CORP = "wwleadcorp"
AGENT = 1000002
SECRETS = {"agent": "agent-secret-lead", "contact": "contact-secret-lead", "kf": "kf-secret-lead"}
E = TypeVar("E", bound=Event)


def make_config(**overrides: Any) -> SimulatorConfig:
    values: dict[str, Any] = {
        "corp_id": CORP,
        "agent_id": AGENT,
        "secrets": dict(SECRETS),
        "users": ["zhangsan", "lisi", "wangwu"],
    }
    values.update(overrides)
    return SimulatorConfig(**values)


class BotReceiver:
    """A tiny bot endpoint: checks the signature, decrypts, and parses each callback into an Event."""

    def __init__(self, crypto: CallbackCrypto) -> None:
        self.crypto = crypto
        self.events: list[Event] = []
        self.envelopes: list[dict[str, Any]] = []
        self.on_event: Callable[[Event], None] | None = None
        self._lock = threading.Lock()
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/wecom/callback"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        args = request.args
        envelope = parse_xml(request.get_data())
        encrypt = str(envelope["Encrypt"])
        if not self.crypto.verify(args["msg_signature"], args["timestamp"], args["nonce"], encrypt):
            return Response("bad signature", status=403)(environ, start_response)
        event = parse_event(parse_xml(self.crypto.decrypt(encrypt)))
        with self._lock:
            self.events.append(event)
            self.envelopes.append(envelope)
        if self.on_event is not None:
            self.on_event(event)
        return Response("")(environ, start_response)

    def of(self, kind: type[E]) -> list[E]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]

    def contact_changes(self) -> list[str]:
        return [e.change_type for e in self.of(ExternalContactChange)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def receiver_for(sim: Simulator) -> BotReceiver:
    """A receiver wired to `sim`: it shares the callback crypto and gets every callback."""
    receiver = BotReceiver(CallbackCrypto(sim.config.token, sim.config.encoding_aes_key, sim.config.corp_id))
    sim.connect_bot(receiver.url, retry_interval_s=0)
    return receiver


def client_for(sim: Simulator) -> WeComClient:
    """The bot's own WeCom client, pointed at the simulator."""
    return WeComClient(
        corp_id=sim.config.corp_id,
        secrets=dict(sim.config.secrets),
        agent_id=sim.config.agent_id,
        coordinator=MemoryCoordinator(),
        api_base_url=sim.base_url,
        timeout=5,
    )


def errcode(call: Callable[[], object]) -> int:
    """Run a client call and return the errcode it failed with (0 when it succeeded)."""
    try:
        call()
    except WeComAPIError as exc:
        return exc.errcode
    return 0


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


def add_way(wecom: WeComClient, **fields: Any) -> dict[str, Any]:
    body = {"type": 1, "scene": 2, "user": ["zhangsan"], "state": "XHS001", **fields}
    return wecom.post("externalcontact/add_contact_way", body, app="contact")


def get_contact(wecom: WeComClient, external_userid: str) -> dict[str, Any]:
    return wecom.get("externalcontact/get", {"external_userid": external_userid}, app="contact")


def welcome(wecom: WeComClient, code: str | None, text: str = "您好，欢迎咨询") -> dict[str, Any]:
    body: dict[str, Any] = {"text": {"content": text}}
    if code is not None:
        body["welcome_code"] = code
    return wecom.post("externalcontact/send_welcome_msg", body, app="contact")


# ---- 「联系我」 contact ways -----------------------------------------------------------------------


def test_add_contact_way_returns_config_id_and_a_qr_code_only_for_scene_2(wecom: WeComClient) -> None:
    qr = add_way(wecom)
    assert len(qr["config_id"]) == 32 and qr["qr_code"].startswith("http")
    button = add_way(wecom, scene=1, style=2)
    assert "qr_code" not in button
    way = wecom.post("externalcontact/get_contact_way", {"config_id": qr["config_id"]}, app="contact")
    contact_way = way["contact_way"]
    assert contact_way["skip_verify"] is True and contact_way["state"] == "XHS001"
    assert contact_way["user"] == ["zhangsan"] and contact_way["qr_code"] == qr["qr_code"]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"type": None}, 41037),
        ({"scene": None}, 41038),
        ({"type": 3}, 41039),
        ({"scene": 5}, 41040),
        ({"style": "big"}, 41042),
        ({"state": "s" * 31}, 40058),
        ({"remark": "r" * 31}, 40058),
        ({"user": ["ghost"]}, 40003),
        ({"user": ["zhangsan", "lisi"]}, 40058),
        ({"type": 2, "user": [], "party": [9]}, 60123),
        ({"user": ["wangwu"]}, 41054),
    ],
)
def test_add_contact_way_errcodes(
    sim: Simulator, wecom: WeComClient, fields: dict[str, Any], code: int
) -> None:
    sim.config.inactive_users.append("wangwu")
    body = {k: v for k, v in {"type": 1, "scene": 2, "user": ["zhangsan"], **fields}.items() if v is not None}
    assert errcode(lambda: wecom.post("externalcontact/add_contact_way", body, app="contact")) == code


def test_a_contact_way_holds_at_most_100_members_after_expanding_departments() -> None:
    users = [f"u{i:03d}" for i in range(101)]
    config = make_config(users=users, departments={7: users[50:]})
    with Simulator(config) as sim, closing(client_for(sim)) as wecom:
        assert errcode(lambda: add_way(wecom, type=2, user=users)) == 41041
        assert errcode(lambda: add_way(wecom, type=2, user=users[:100])) == 0
        assert errcode(lambda: add_way(wecom, type=2, user=users[:50], party=[7])) == 41041
        assert errcode(lambda: add_way(wecom, type=2, user=users[:49], party=[7])) == 0


def test_update_overwrites_members_and_delete_invalidates_the_config(wecom: WeComClient) -> None:
    config_id = add_way(wecom, type=2, user=["zhangsan", "lisi"])["config_id"]
    update = {"config_id": config_id, "user": ["wangwu"], "state": "DY002"}
    wecom.post("externalcontact/update_contact_way", update, app="contact")
    way = wecom.post("externalcontact/get_contact_way", {"config_id": config_id}, app="contact")[
        "contact_way"
    ]
    assert way["user"] == ["wangwu"] and way["state"] == "DY002"
    wecom.post("externalcontact/del_contact_way", {"config_id": config_id}, app="contact")
    assert (
        errcode(
            lambda: wecom.post("externalcontact/get_contact_way", {"config_id": config_id}, app="contact")
        )
        == 41044
    )
    assert errcode(lambda: wecom.post("externalcontact/get_contact_way", {}, app="contact")) == 41043


def test_list_contact_way_pages_with_an_opaque_cursor_and_skips_temp_and_deleted(wecom: WeComClient) -> None:
    ids = [add_way(wecom)["config_id"] for _ in range(3)]
    add_way(wecom, is_temp=True)
    gone = add_way(wecom)["config_id"]
    wecom.post("externalcontact/del_contact_way", {"config_id": gone}, app="contact")
    first = wecom.post("externalcontact/list_contact_way", {"limit": 2}, app="contact")
    assert [w["config_id"] for w in first["contact_way"]] == ids[:2] and first["next_cursor"]
    second = wecom.post("externalcontact/list_contact_way", {"cursor": first["next_cursor"]}, app="contact")
    assert [w["config_id"] for w in second["contact_way"]] == ids[2:] and second["next_cursor"] == ""
    assert (
        errcode(lambda: wecom.post("externalcontact/list_contact_way", {"cursor": "nope"}, app="contact"))
        == 50100
    )
    assert (
        errcode(lambda: wecom.post("externalcontact/list_contact_way", {"limit": 1001}, app="contact"))
        == 40058
    )


def test_a_temporary_contact_way_works_once_and_expires(sim: Simulator, wecom: WeComClient) -> None:
    once = add_way(wecom, is_temp=True)["config_id"]
    sim.customer_scans(once)
    with pytest.raises(SimulationError):
        sim.customer_scans(once)
    later = add_way(wecom, is_temp=True, expires_in=60)["config_id"]
    sim.advance(61)
    with pytest.raises(SimulationError):
        sim.customer_scans(later)
    assert errcode(lambda: add_way(wecom, is_temp=True, type=2, user=["zhangsan", "lisi"])) == 40058


# ---- adds, State and WelcomeCode ----------------------------------------------------------------


def test_scanning_a_skip_verify_qr_raises_add_external_contact_with_state_and_welcome_code(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    qr_code = add_way(wecom)["qr_code"]
    added = sim.customer_scans(qr_code, name="李先生")
    [event] = bot.of(ExternalContactChange)
    assert event.change_type == "add_external_contact"
    assert (event.user_id, event.external_user_id) == ("zhangsan", added.external_userid)
    assert event.state == "XHS001" and event.welcome_code == added.welcome_code is not None
    assert event.fields["FromUserName"] == "sys" and event.to_user == CORP
    assert bot.envelopes[0]["AgentID"] == str(AGENT)
    contact = get_contact(wecom, added.external_userid)
    assert contact["external_contact"]["name"] == "李先生"
    [follow] = contact["follow_user"]
    assert (
        follow["state"] == "XHS001"
        and follow["add_way"] == 1
        and follow["oper_userid"] == added.external_userid
    )


def test_multi_member_ways_rotate_members_and_can_be_steered(sim: Simulator, wecom: WeComClient) -> None:
    config_id = add_way(wecom, type=2, user=["zhangsan", "lisi"])["config_id"]
    assert [sim.customer_scans(config_id).userid for _ in range(3)] == ["zhangsan", "lisi", "zhangsan"]
    assert sim.customer_scans(config_id, member="LiSi").userid == "lisi"
    with pytest.raises(SimulationError):
        sim.customer_scans(config_id, member="wangwu")


def test_a_verification_add_is_half_until_the_member_accepts(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    config_id = add_way(wecom, skip_verify=False)["config_id"]
    half = sim.customer_scans(config_id)
    assert half.status == "half" and bot.contact_changes() == ["add_half_external_contact"]
    [event] = bot.of(ExternalContactChange)
    assert event.state == "XHS001" and event.welcome_code == half.welcome_code
    assert errcode(lambda: get_contact(wecom, half.external_userid)) == 84061
    welcome(wecom, half.welcome_code)
    accepted = sim.member_accepts("zhangsan", half.external_userid)
    assert bot.contact_changes() == ["add_half_external_contact", "add_external_contact"]
    last = bot.of(ExternalContactChange)[-1]
    # A welcome already sent with the half code means the add carries no WelcomeCode.
    assert last.state == "XHS001" and last.welcome_code is None and accepted.welcome_code is None
    assert get_contact(wecom, half.external_userid)["follow_user"][0]["userid"] == "zhangsan"


def test_the_docs_reading_makes_skip_verify_adds_half_instead() -> None:
    with Simulator(make_config(half_add_when="skip_verify")) as sim, closing(client_for(sim)) as wecom:
        receiver = receiver_for(sim)
        try:
            skip = sim.customer_scans(add_way(wecom)["config_id"])
            verify = sim.customer_scans(add_way(wecom, skip_verify=False)["config_id"])
            assert (skip.status, verify.status) == ("half", "pending")
            assert receiver.contact_changes() == ["add_half_external_contact"]
            sim.member_accepts("zhangsan", verify.external_userid)
            assert receiver.contact_changes()[-1] == "add_external_contact"
        finally:
            receiver.close()


def test_no_welcome_code_with_an_admin_welcome_after_a_chat_or_for_wecom_users(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    config_id = add_way(wecom)["config_id"]
    sim.set_admin_welcome("zhangsan")
    assert sim.customer_scans(config_id).welcome_code is None
    sim.set_admin_welcome("zhangsan", enabled=False)
    assert sim.customer_scans(config_id, customer_type=2).welcome_code is None
    added = sim.customer_scans(config_id)
    assert added.welcome_code is not None
    sim.start_chat("zhangsan", added.external_userid)
    assert errcode(lambda: welcome(wecom, added.welcome_code)) == 41051
    assert all(e.welcome_code is None for e in bot.of(ExternalContactChange)[:2])


def test_rescanning_while_already_friends_raises_nothing(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    config_id = add_way(wecom)["config_id"]
    added = sim.customer_scans(config_id)
    again = sim.customer_scans(config_id, added.external_userid)
    assert again.change_types == () and len(bot.events) == 1


# ---- send_welcome_msg ---------------------------------------------------------------------------------


def test_welcome_is_single_use_first_caller_wins_and_recorded(sim: Simulator, wecom: WeComClient) -> None:
    added = sim.customer_scans(add_way(wecom)["config_id"])
    assert welcome(wecom, added.welcome_code, "欢迎！") == {"errcode": 0, "errmsg": "ok"}
    assert errcode(lambda: welcome(wecom, added.welcome_code)) == 41051
    [sent] = sim.welcomes
    assert (sent.external_userid, sent.userid, sent.text, sent.app) == (
        added.external_userid,
        "zhangsan",
        "欢迎！",
        "contact",
    )
    assert sent.at == pytest.approx(sim.wall_time(), abs=5)


def test_welcome_code_expires_after_20_virtual_seconds(sim: Simulator, wecom: WeComClient) -> None:
    config_id = add_way(wecom)["config_id"]
    early, late = sim.customer_scans(config_id), sim.customer_scans(config_id)
    sim.advance(19)
    assert errcode(lambda: welcome(wecom, early.welcome_code)) == 0
    sim.advance(2)
    assert errcode(lambda: welcome(wecom, late.welcome_code)) == 41050
    assert errcode(lambda: welcome(wecom, "bogus")) == 41050
    assert errcode(lambda: welcome(wecom, None)) == 41049


def test_welcome_content_limits(sim: Simulator, wecom: WeComClient) -> None:
    code = sim.customer_scans(add_way(wecom)["config_id"]).welcome_code
    image = {"msgtype": "image", "image": {"media_id": "M"}}
    cases: list[tuple[dict[str, Any], int]] = [
        ({"text": {"content": "字" * 1334}}, 45002),
        ({"attachments": [image] * 10}, 41064),
        ({"attachments": [{"msgtype": "voice", "voice": {"media_id": "M"}}]}, 41065),
        ({"attachments": [{"msgtype": "link", "link": {"title": "t" * 129, "url": "u"}}]}, 40058),
        ({}, 40058),
    ]

    def send(body: dict[str, Any]) -> int:
        payload = {"welcome_code": code, **body}
        return errcode(lambda: wecom.post("externalcontact/send_welcome_msg", payload, app="contact"))

    assert [send(body) for body, _ in cases] == [expected for _, expected in cases]
    # A rejected body does not use up the code.
    ok = {"welcome_code": code, "text": {"content": "字" * 1333}, "attachments": [image] * 9}
    assert errcode(lambda: wecom.post("externalcontact/send_welcome_msg", ok, app="contact")) == 0
    assert len(sim.welcomes[0].attachments) == 9


def test_the_bot_can_welcome_from_inside_the_callback(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    outcomes: list[int] = []

    def fast_path(event: Event) -> None:
        if isinstance(event, ExternalContactChange) and event.welcome_code:
            outcomes.append(errcode(lambda: welcome(wecom, event.welcome_code)))

    bot.on_event = fast_path
    sim.customer_scans(add_way(wecom)["config_id"])
    assert outcomes == [0] and len(sim.welcomes) == 1


# ---- deletes and re-adds ----------------------------------------------------------------------------


def test_deletes_raise_their_events_and_decide_what_the_api_still_answers(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    config_id = add_way(wecom)["config_id"]
    one_way = sim.customer_scans(config_id)
    sim.customer_deletes_member("zhangsan", one_way.external_userid)
    assert bot.contact_changes()[-1] == "del_follow_user"
    assert get_contact(wecom, one_way.external_userid)["follow_user"][0]["userid"] == "zhangsan"
    gone = sim.customer_scans(config_id)
    sim.member_deletes_customer("zhangsan", gone.external_userid)
    assert bot.contact_changes()[-1] == "del_external_contact"
    assert errcode(lambda: get_contact(wecom, gone.external_userid)) == 84061
    tag_id = wecom.post(
        "externalcontact/add_corp_tag", {"group_name": "意向", "tag": [{"name": "高"}]}, app="contact"
    )["tag_group"]["tag"][0]["id"]
    mark = {"userid": "zhangsan", "external_userid": gone.external_userid, "add_tag": [tag_id]}
    assert errcode(lambda: wecom.post("externalcontact/mark_tag", mark, app="contact")) == 84061
    assert errcode(lambda: get_contact(wecom, "wmnobody")) == 40096


@pytest.mark.parametrize("keeps_state", [True, False])
def test_a_readd_after_delete_may_lose_state(keeps_state: bool) -> None:
    with Simulator(make_config(readd_keeps_state=keeps_state)) as sim, closing(client_for(sim)) as wecom:
        receiver = receiver_for(sim)
        try:
            config_id = add_way(wecom)["config_id"]
            first = sim.customer_scans(config_id)
            welcome(wecom, first.welcome_code)
            sim.member_deletes_customer("zhangsan", first.external_userid)
            again = sim.customer_scans(config_id, first.external_userid)
            last = receiver.of(ExternalContactChange)[-1]
            assert last.change_type == "add_external_contact"
            assert last.state == ("XHS001" if keeps_state else None) == again.state
            # They chatted before (the welcome): the re-add carries no WelcomeCode.
            assert last.welcome_code is None
        finally:
            receiver.close()


# ---- tags ---------------------------------------------------------------------------------------------


def add_tags(wecom: WeComClient, app: str = "contact", **body: Any) -> dict[str, Any]:
    return wecom.post("externalcontact/add_corp_tag", body, app=app)["tag_group"]


def test_add_corp_tag_reuses_groups_by_name_and_collapses_duplicates(wecom: WeComClient) -> None:
    first = add_tags(wecom, group_name="来源", order=5, tag=[{"name": "小红书"}, {"name": "小红书"}])
    assert [t["name"] for t in first["tag"]] == ["小红书"]
    second = add_tags(wecom, group_name="来源", tag=[{"name": "抖音", "order": 9}, {"name": "小红书"}])
    assert second["group_id"] == first["group_id"]
    assert second["tag"][1]["id"] == first["tag"][0]["id"]
    listing = wecom.post("externalcontact/get_corp_tag_list", {}, app="contact")["tag_group"]
    assert [t["name"] for t in listing[0]["tag"]] == ["抖音", "小红书"]  # larger order first
    assert "deleted" not in listing[0]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"group_name": "g", "tag": []}, 40058),
        ({"group_name": "g", "tag": [{"name": "n" * 31}]}, 40058),
        ({"group_name": "g" * 31, "tag": [{"name": "n"}]}, 40058),
        ({"tag": [{"name": "n"}]}, 40058),
        ({"group_id": "etmissing", "tag": [{"name": "n"}]}, 40068),
    ],
)
def test_add_corp_tag_errcodes(wecom: WeComClient, body: dict[str, Any], code: int) -> None:
    assert errcode(lambda: wecom.post("externalcontact/add_corp_tag", body, app="contact")) == code


def test_the_corp_tag_cap_answers_40126() -> None:
    with Simulator(make_config(corp_tag_limit=3)) as sim, closing(client_for(sim)) as wecom:
        add_tags(wecom, group_name="a", tag=[{"name": "1"}, {"name": "2"}])
        assert errcode(lambda: add_tags(wecom, group_name="b", tag=[{"name": "3"}, {"name": "4"}])) == 40126
        assert errcode(lambda: add_tags(wecom, group_name="a", tag=[{"name": "1"}, {"name": "3"}])) == 0


def test_edit_and_delete_respect_names_and_ownership(sim: Simulator, wecom: WeComClient) -> None:
    group = add_tags(wecom, app="agent", group_name="阶段", tag=[{"name": "新"}, {"name": "老"}])
    new_id, old_id = (t["id"] for t in group["tag"])
    rename = {"id": new_id, "name": "老"}
    assert errcode(lambda: wecom.post("externalcontact/edit_corp_tag", rename, app="agent")) == 40071
    assert (
        errcode(lambda: wecom.post("externalcontact/edit_corp_tag", {"id": "etx", "name": "z"}, app="agent"))
        == 40068
    )
    wecom.post("externalcontact/edit_corp_tag", {"id": new_id, "name": "首次"}, app="agent")
    [console_tag] = sim.admin_creates_tags("控制台", ["VIP"])
    assert (
        errcode(
            lambda: wecom.post("externalcontact/edit_corp_tag", {"id": console_tag, "order": 3}, app="agent")
        )
        == 81011
    )
    assert (
        errcode(
            lambda: wecom.post(
                "externalcontact/edit_corp_tag", {"id": console_tag, "order": 3}, app="contact"
            )
        )
        == 0
    )
    assert errcode(lambda: wecom.post("externalcontact/del_corp_tag", {}, app="agent")) == 40068
    wecom.post("externalcontact/del_corp_tag", {"tag_id": [new_id, old_id]}, app="agent")
    by_id = wecom.post("externalcontact/get_corp_tag_list", {"group_id": [group["group_id"]]}, app="contact")
    [deleted_group] = by_id["tag_group"]
    assert deleted_group["deleted"] is True and all(t["deleted"] for t in deleted_group["tag"])
    assert [
        g["group_name"]
        for g in wecom.post("externalcontact/get_corp_tag_list", {}, app="contact")["tag_group"]
    ] == ["控制台"]


def test_mark_tag_is_per_pair_and_shows_in_follow_user_tags(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    config_id = add_way(wecom, type=2, user=["zhangsan", "lisi"])["config_id"]
    customer = sim.customer_scans(config_id, member="zhangsan").external_userid
    sim.customer_scans(config_id, customer, member="lisi")
    tags = add_tags(wecom, group_name="意向", tag=[{"name": "高"}, {"name": "中"}])["tag"]
    high, mid = tags[0]["id"], tags[1]["id"]
    seen = len(sim.emitted_callbacks)
    mark = {"userid": "zhangsan", "external_userid": customer, "add_tag": [high, mid], "remove_tag": []}
    wecom.post("externalcontact/mark_tag", mark, app="contact")
    wecom.post("externalcontact/mark_tag", {**mark, "add_tag": [], "remove_tag": [mid]}, app="contact")
    follow = {f["userid"]: f for f in get_contact(wecom, customer)["follow_user"]}
    assert follow["zhangsan"]["tags"] == [{"group_name": "意向", "tag_name": "高", "tag_id": high, "type": 1}]
    assert follow["lisi"]["tags"] == []
    # API-side changes never produce callbacks.
    assert len(sim.emitted_callbacks) == seen and len(bot.events) == seen
    assert (
        errcode(lambda: wecom.post("externalcontact/mark_tag", {**mark, "add_tag": ["etbad"]}, app="contact"))
        == 40068
    )
    assert (
        errcode(lambda: wecom.post("externalcontact/mark_tag", {**mark, "add_tag": []}, app="contact"))
        == 40058
    )
    other = {**mark, "external_userid": "wmstranger"}
    assert errcode(lambda: wecom.post("externalcontact/mark_tag", other, app="contact")) == 40096
    assert (
        errcode(lambda: wecom.post("externalcontact/mark_tag", {**mark, "userid": "wangwu"}, app="contact"))
        == 84061
    )


def test_console_and_client_tag_changes_raise_callbacks(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    tag_ids = sim.admin_creates_tags("渠道", ["线下", "线上"])
    group_id = wecom.post("externalcontact/get_corp_tag_list", {"tag_id": tag_ids[:1]}, app="contact")[
        "tag_group"
    ][0]["group_id"]
    sim.admin_edits_tag(tag_ids[0], name="门店")
    sim.admin_shuffles_tags(group_id)
    sim.admin_deletes_tag(tag_ids[1])
    changes = [(e.change_type, e.tag_id, e.tag_type) for e in bot.of(ExternalTagChange)]
    assert changes == [
        ("create", group_id, "tag_group"),
        ("create", tag_ids[0], "tag"),
        ("create", tag_ids[1], "tag"),
        ("update", tag_ids[0], "tag"),
        ("shuffle", group_id, ""),
        ("delete", tag_ids[1], "tag"),
    ]
    customer = sim.customer_scans(add_way(wecom)["config_id"]).external_userid
    sim.member_edits_customer_tags("zhangsan", customer, add=[tag_ids[0]])
    assert bot.contact_changes()[-1] == "edit_external_contact"
    assert get_contact(wecom, customer)["follow_user"][0]["tags"][0]["tag_name"] == "门店"


# ---- acquisition links (获客助手) ------------------------------------------------------------------------


def create_link(wecom: WeComClient, **fields: Any) -> dict[str, Any]:
    body = {"link_name": "抖音投放", "range": {"user_list": ["zhangsan"]}, **fields}
    link: dict[str, Any] = wecom.post(
        "externalcontact/customer_acquisition/create_link", body, app="contact"
    )["link"]
    return link


def test_a_link_with_customer_channel_attributes_the_add(
    sim: Simulator, bot: BotReceiver, wecom: WeComClient
) -> None:
    link = create_link(wecom)
    assert set(link) == {"link_id", "link_name", "url", "create_time"} and link["url"].startswith("https://")
    added = sim.customer_scans(f"{link['url']}?customer_channel=DY_0427")
    [event] = bot.of(ExternalContactChange)
    assert event.change_type == "add_external_contact" and event.state == "DY_0427" == added.state
    follow = get_contact(wecom, added.external_userid)["follow_user"][0]
    assert follow["state"] == "DY_0427" and follow["add_way"] == 16
    quota = wecom.get("externalcontact/customer_acquisition_quota", app="contact")
    assert quota["total"] == 100 and quota["balance"] == 99


def test_link_errors_and_a_verification_link(sim: Simulator, bot: BotReceiver, wecom: WeComClient) -> None:
    assert errcode(lambda: create_link(wecom, link_name="")) == 40058
    assert errcode(lambda: create_link(wecom, range={"user_list": []})) == 40058
    assert errcode(lambda: create_link(wecom, range={"user_list": ["ghost"]})) == 40003
    link = create_link(wecom, skip_verify=False)
    sim.customer_scans(link["link_id"], customer_channel="WX9")
    [request] = bot.of(CustomerAcquisitionEvent)
    assert request.change_type == "friend_request" and request.fields["ChangeType"] == "friend_request"
    assert request.fields["LinkId"] == link["link_id"] and request.fields["State"] == "WX9"
    assert bot.contact_changes() == ["add_half_external_contact"]
    wecom.post(
        "externalcontact/customer_acquisition/delete_link", {"link_id": link["link_id"]}, app="contact"
    )
    with pytest.raises(SimulationError):
        sim.customer_scans(link["url"])


def test_quota_balance_events_and_exhaustion(sim: Simulator, bot: BotReceiver, wecom: WeComClient) -> None:
    link = create_link(wecom)
    sim.set_acquisition_balance(11)
    assert bot.events == []
    sim.customer_scans(link["url"])  # 11 -> 10: at the low threshold
    sim.lower_acquisition_balance(9)
    sim.customer_scans(link["url"])  # 1 -> 0
    acquisition = [e.change_type for e in bot.of(CustomerAcquisitionEvent)]
    assert acquisition == ["balance_low", "balance_exhausted"]
    with pytest.raises(SimulationError):
        sim.customer_scans(link["url"])
    assert wecom.get("externalcontact/customer_acquisition_quota", app="contact")["balance"] == 0


# ---- permissions, metering, tokens, HTTP controls ------------------------------------------------------


def test_only_customer_contact_apps_may_call_and_tokens_are_checked(
    sim: Simulator, wecom: WeComClient
) -> None:
    assert errcode(lambda: wecom.post("externalcontact/get_corp_tag_list", {}, app="kf")) == 48002
    res = requests.post(
        f"{sim.base_url}/cgi-bin/externalcontact/get_corp_tag_list",
        params={"access_token": "forged"},
        json={},
        timeout=5,
    )
    assert res.status_code == 200 and res.json()["errcode"] == 40014


def test_new_endpoints_are_metered_per_api() -> None:
    with Simulator(make_config(api_per_minute=3)) as sim, closing(client_for(sim)) as wecom:
        # gettoken is its own API: these three calls use add_contact_way's budget only.
        assert [errcode(lambda: add_way(wecom)) for _ in range(4)] == [0, 0, 0, 45009]
        assert errcode(lambda: wecom.post("externalcontact/get_corp_tag_list", {}, app="contact")) == 0


def test_http_controls_drive_a_simulator_in_another_process(sim: Simulator, wecom: WeComClient) -> None:
    receiver = BotReceiver(CallbackCrypto(sim.config.token, sim.config.encoding_aes_key, sim.config.corp_id))
    try:
        http = requests.Session()
        http.trust_env = False
        assert http.post(
            f"{sim.base_url}/_sim/connect_bot", json={"url": receiver.url, "retry_interval_s": 0}, timeout=5
        ).json() == {"ok": True}
        config_id = add_way(wecom)["config_id"]
        added = http.post(f"{sim.base_url}/_sim/customer_scans", json={"target": config_id}, timeout=5).json()
        assert added["change_types"] == ["add_external_contact"] and added["welcome_code"]
        welcome(wecom, added["welcome_code"])
        state = http.get(f"{sim.base_url}/_sim/state", timeout=5).json()
        assert state["welcomes"][0]["external_userid"] == added["external_userid"]
        assert (
            http.post(f"{sim.base_url}/_sim/customer_scans", json={"target": "nope"}, timeout=5).status_code
            == 400
        )
        assert receiver.contact_changes() == ["add_external_contact"]
        http.close()
    finally:
        receiver.close()
