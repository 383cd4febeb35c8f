"""The simulator's mass sending (企业群发): tasks, member confirmation, quotas, results, reminders."""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from bot.wecom.client import GroupMsgSendResult, GroupMsgTaskStatus, MsgTemplateResult, WeComClient
from bot.wecom.errors import ErrorKind, WeComAPIError
from bot.wecom.simulator import SimulationError, Simulator
from bot.wecom.simulator.groupmsg import CHINA_TZ, quota_period
from tests.test_simulator_contacts import client_for, errcode, make_config

DAY = 86400.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(make_config()) as simulator:
        yield simulator


@pytest.fixture
def wecom(sim: Simulator) -> Iterator[WeComClient]:
    client = client_for(sim)
    yield client
    client.close()


def post(wecom: WeComClient, api: str, **body: Any) -> dict[str, Any]:
    return wecom.post(f"externalcontact/{api}", body, app="contact")


def befriend(sim: Simulator, wecom: WeComClient, userid: str, *external_userids: str) -> list[str]:
    """Customers scan the member's skip-verify 「联系我」 QR code: active relations."""
    config_id = post(wecom, "add_contact_way", type=1, scene=2, user=[userid])["config_id"]
    return [sim.customer_scans(config_id, ext).external_userid for ext in external_userids]


def template(wecom: WeComClient, external_userid: list[str] | None = None, **body: Any) -> dict[str, Any]:
    body.setdefault("text", {"content": "本周策略会直播，点击预约"})
    if external_userid is not None:
        body["external_userid"] = external_userid
    return post(wecom, "add_msg_template", chat_type="single", **body)


def tasks(wecom: WeComClient, msgid: str, **body: Any) -> dict[str, Any]:
    return post(wecom, "get_groupmsg_task", msgid=msgid, **body)


def results(wecom: WeComClient, msgid: str, userid: str, **body: Any) -> dict[str, Any]:
    return post(wecom, "get_groupmsg_send_result", msgid=msgid, userid=userid, **body)


def statuses(wecom: WeComClient, msgid: str, userid: str) -> dict[str, int]:
    return {r["external_userid"]: r["status"] for r in results(wecom, msgid, userid)["send_list"]}


def move_to(sim: Simulator, when: datetime) -> None:
    """Skip the simulator's clock forward to `when` (it only moves forward)."""
    seconds = when.timestamp() - sim.wall_time()
    assert seconds > 0
    sim.advance(seconds)


def china_now(sim: Simulator) -> datetime:
    return datetime.fromtimestamp(sim.wall_time(), CHINA_TZ)


def month_start(year: int, month: int) -> datetime:
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return datetime(year, month, 1, tzinfo=CHINA_TZ)


# ---- add_msg_template ------------------------------------------------------------------------------


def test_a_task_per_owning_member_and_unknown_or_lost_customers_in_fail_list(
    sim: Simulator, wecom: WeComClient
) -> None:
    a, b = befriend(sim, wecom, "zhangsan", "wmA", "wmB")
    [d] = befriend(sim, wecom, "lisi", "wmD")
    [gone] = befriend(sim, wecom, "wangwu", "wmGone")
    sim.member_deletes_customer("wangwu", gone)
    created = template(wecom, [a, b, d, gone, "wmUnknown", a])
    assert created["msgid"].startswith("msg") and created["fail_list"] == [gone, "wmUnknown"]
    listed = tasks(wecom, created["msgid"])
    assert listed == {
        "errcode": 0,
        "errmsg": "ok",
        "next_cursor": "",
        "task_list": [{"userid": "zhangsan", "status": 0}, {"userid": "lisi", "status": 0}],
    }
    assert results(wecom, created["msgid"], "zhangsan")["send_list"] == [
        {"external_userid": a, "userid": "zhangsan", "status": 0},
        {"external_userid": b, "userid": "zhangsan", "status": 0},
    ]
    assert results(wecom, created["msgid"], "wangwu")["send_list"] == []
    msg = sim.groupmsg(created["msgid"])
    assert msg is not None and msg.text == "本周策略会直播，点击预约" and msg.app == "contact"


def test_a_customer_of_several_members_goes_to_the_one_who_chatted_else_the_newest(
    sim: Simulator, wecom: WeComClient
) -> None:
    befriend(sim, wecom, "zhangsan", "wmChatted", "wmQuiet")
    befriend(sim, wecom, "lisi", "wmChatted", "wmQuiet")
    sim.start_chat("zhangsan", "wmChatted")
    msgid = template(wecom, ["wmChatted", "wmQuiet"])["msgid"]
    assert statuses(wecom, msgid, "zhangsan") == {"wmChatted": 0}
    assert statuses(wecom, msgid, "lisi") == {"wmQuiet": 0}


def test_sender_limits_the_task_to_that_members_customers(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmShared", "wmZhang")
    befriend(sim, wecom, "lisi", "wmShared", "wmLi")
    created = template(wecom, ["wmShared", "wmLi"], sender="zhangsan")
    assert created["fail_list"] == ["wmLi"]
    assert [t["userid"] for t in tasks(wecom, created["msgid"])["task_list"]] == ["zhangsan"]
    everyone = template(wecom, sender="lisi")
    assert everyone["fail_list"] == []
    assert statuses(wecom, everyone["msgid"], "lisi") == {"wmShared": 0, "wmLi": 0}


def test_tag_filter_keeps_only_matching_customers_without_failing_the_others(
    sim: Simulator, wecom: WeComClient
) -> None:
    befriend(sim, wecom, "zhangsan", "wmVip", "wmPlain")
    group = post(wecom, "add_corp_tag", group_name="客户等级", tag=[{"name": "VIP"}])["tag_group"]
    vip = group["tag"][0]["id"]
    post(wecom, "mark_tag", userid="zhangsan", external_userid="wmVip", add_tag=[vip])
    created = template(wecom, ["wmVip", "wmPlain"], tag_filter={"group_list": [{"tag_list": [vip]}]})
    assert created["fail_list"] == []
    assert statuses(wecom, created["msgid"], "zhangsan") == {"wmVip": 0}


BAD_REQUESTS: list[tuple[dict[str, Any], int]] = [
    ({"chat_type": "group", "sender": "zhangsan", "chat_id_list": ["wr1"]}, 40058),
    ({"chat_type": "broadcast"}, 40058),
    ({"external_userid": []}, 40058),
    ({"external_userid": [f"wm{i}" for i in range(10_001)]}, 40058),
    ({"sender": "nobody"}, 40003),
    ({"text": {"content": "字" * 1334}}, 45002),
    ({"text": {"content": ""}}, 40058),
    ({"attachments": [{"msgtype": "image", "image": {"media_id": "M"}}] * 10}, 41064),
    ({"attachments": [{"msgtype": "voice", "voice": {"media_id": "M"}}]}, 41065),
    ({"attachments": [{"msgtype": "image", "link": {"media_id": "M"}}]}, 40058),
    ({"attachments": [{"msgtype": "image", "image": {}}]}, 41006),
    ({"attachments": [{"msgtype": "file", "file": {}}]}, 41006),
    ({"attachments": [{"msgtype": "link", "link": {"title": "t"}}]}, 41010),
    ({"attachments": [{"msgtype": "link", "link": {"title": "t", "url": "http://x/" + "a" * 2040}}]}, 40058),
    ({"attachments": [{"msgtype": "link", "link": {"title": "t" * 129, "url": "http://x"}}]}, 40058),
    ({"attachments": [{"msgtype": "miniprogram", "miniprogram": {"title": "t", "appid": "wx1"}}]}, 40058),
]


@pytest.mark.parametrize(("body", "code"), BAD_REQUESTS)
def test_add_msg_template_rejects_bad_requests_with_wecoms_errcodes(
    sim: Simulator, wecom: WeComClient, body: dict[str, Any], code: int
) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    request: dict[str, Any] = {"chat_type": "single", "external_userid": ["wmA"], "text": {"content": "hi"}}
    request.update(body)
    assert errcode(lambda: wecom.post("externalcontact/add_msg_template", request, app="contact")) == code
    assert sim.groupmsgs == []


def test_text_of_4000_bytes_and_nine_attachments_are_accepted(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    attachments = [{"msgtype": "image", "image": {"pic_url": "http://p.qpic.cn/x"}}] * 8 + [
        {"msgtype": "link", "link": {"title": "t", "url": "http://x", "picurl": "http://p"}}
    ]
    created = template(wecom, ["wmA"], text={"content": "字" * 1333 + "a"}, attachments=attachments)
    msg = sim.groupmsg(created["msgid"])
    assert msg is not None and len(msg.attachments) == 9
    only_attachment = template(wecom, ["wmA"], text=None, attachments=attachments[:1])
    assert only_attachment["msgid"] != created["msgid"]


def test_nobody_sendable_answers_41048(sim: Simulator, wecom: WeComClient) -> None:
    [half] = befriend(sim, wecom, "zhangsan", "wmA")
    sim.member_deletes_customer("zhangsan", half)
    assert errcode(lambda: template(wecom, ["wmUnknown", half])) == 41048
    assert errcode(lambda: template(wecom, sender="lisi")) == 41048
    assert sim.groupmsgs == []


def test_only_customer_contact_apps_may_mass_send(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    body = {"external_userid": ["wmA"], "text": {"content": "hi"}}
    assert errcode(lambda: wecom.post("externalcontact/add_msg_template", body, app="kf")) == 48002
    msgid = template(wecom, ["wmA"])["msgid"]
    for api in ("get_groupmsg_task", "remind_groupmsg_send", "cancel_groupmsg_send"):
        assert (
            errcode(lambda api=api: wecom.post(f"externalcontact/{api}", {"msgid": msgid}, app="kf")) == 48002
        )


# ---- member confirmation and send results ---------------------------------------------------------------


def test_confirming_sends_to_friends_and_marks_lost_relations_not_friend(
    sim: Simulator, wecom: WeComClient
) -> None:
    a, b, c = befriend(sim, wecom, "zhangsan", "wmA", "wmB", "wmC")
    [d] = befriend(sim, wecom, "lisi", "wmD")
    msgid = template(wecom, [a, b, c, d])["msgid"]
    sim.member_deletes_customer("zhangsan", b)
    sim.customer_deletes_member("zhangsan", c)
    sent = sim.member_confirms_groupmsg(msgid, "zhangsan")
    assert (sent.sent, sent.not_friend, sent.over_quota) == ((a,), (b, c), ())
    now = int(sim.wall_time())
    [zhang, li] = tasks(wecom, msgid)["task_list"]
    assert zhang["status"] == 2 and abs(zhang["send_time"] - now) <= 1
    assert li == {"userid": "lisi", "status": 0}
    rows = results(wecom, msgid, "zhangsan")["send_list"]
    assert [(r["external_userid"], r["status"]) for r in rows] == [(a, 1), (b, 2), (c, 2)]
    assert rows[0]["send_time"] == zhang["send_time"] and "send_time" not in rows[1]
    assert statuses(wecom, msgid, "lisi") == {d: 0}
    assert sim.mass_quota_left(a) == sim.mass_quota_left(d) - 1


def test_a_member_confirms_only_their_own_task_once(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    msgid = template(wecom, ["wmA"])["msgid"]
    with pytest.raises(SimulationError, match="no task"):
        sim.member_confirms_groupmsg(msgid, "lisi")
    with pytest.raises(SimulationError, match="no mass message"):
        sim.member_confirms_groupmsg("msgNope", "zhangsan")
    sim.member_confirms_groupmsg(msgid, "zhangsan")
    with pytest.raises(SimulationError, match="already sent"):
        sim.member_confirms_groupmsg(msgid, "zhangsan")


def test_tasks_stay_unsent_until_confirmed_and_auto_confirm_sends_when_due() -> None:
    with Simulator(make_config(groupmsg_auto_confirm_after_s=60)) as sim:
        wecom = client_for(sim)
        try:
            befriend(sim, wecom, "zhangsan", "wmA")
            created = template(wecom, ["wmA"])
            sim.advance(59)
            assert tasks(wecom, created["msgid"])["task_list"] == [{"userid": "zhangsan", "status": 0}]
            sim.advance(3600)
            [task] = tasks(wecom, created["msgid"])["task_list"]
            msg = sim.groupmsg(created["msgid"])
            assert msg is not None and task["status"] == 2
            # Sent when it was due, not when someone looked.
            assert abs(task["send_time"] - (msg.create_time + 60)) <= 1
            assert statuses(wecom, created["msgid"], "zhangsan") == {"wmA": 1}
        finally:
            wecom.close()


def test_auto_confirm_zero_sends_at_creation_and_the_default_never_sends(
    sim: Simulator, wecom: WeComClient
) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    waiting = template(wecom, ["wmA"])["msgid"]
    sim.advance(30 * DAY)
    assert tasks(wecom, waiting)["task_list"] == [{"userid": "zhangsan", "status": 0}]
    with Simulator(make_config(groupmsg_auto_confirm_after_s=0)) as other:
        client = client_for(other)
        try:
            befriend(other, client, "zhangsan", "wmA")
            msgid = template(client, ["wmA"])["msgid"]
            assert statuses(client, msgid, "zhangsan") == {"wmA": 1}
        finally:
            client.close()


# ---- quota ------------------------------------------------------------------------------------------------


def test_quota_periods_follow_china_time_and_days_in_month() -> None:
    def at(*args: int) -> float:
        return datetime(*args, tzinfo=CHINA_TZ).timestamp()  # type: ignore[misc]

    assert quota_period("month_days", at(2024, 2, 10))[1] == 29
    assert quota_period("month_days", at(2025, 2, 10))[1] == 28
    assert quota_period("month_days", at(2025, 1, 31, 23, 59))[1] == 31
    # 16:30 UTC on 31 January is already 1 February in China.
    utc_evening = datetime(2025, 1, 31, 16, 30, tzinfo=UTC).timestamp()
    assert quota_period("month_days", utc_evening) == ((2, 2025, 2), 28)
    assert quota_period("week7", at(2025, 3, 9, 23, 59))[0] != quota_period("week7", at(2025, 3, 10))[0]
    assert quota_period("week7", at(2025, 3, 10))[0] == quota_period("week7", at(2025, 3, 16, 23))[0]
    assert quota_period("day1", at(2025, 3, 10, 23, 59)) != quota_period("day1", at(2025, 3, 11))
    with pytest.raises(ValueError, match="unknown quota mode"):
        quota_period("month4", at(2025, 3, 10))


def test_month_days_quota_counts_at_send_time_and_resets_with_the_month(
    sim: Simulator, wecom: WeComClient
) -> None:
    now = china_now(sim)
    boundary = month_start(now.year, now.month + 2)
    last_month = boundary - timedelta(days=1)
    cap = calendar.monthrange(last_month.year, last_month.month)[1]
    move_to(sim, boundary - timedelta(hours=2))
    a, b = befriend(sim, wecom, "zhangsan", "wmA", "wmB")
    assert sim.mass_quota_left(a) == cap
    for _ in range(cap - 1):
        assert sim.member_sends_personal_mass("zhangsan", [a]).sent == (a,)
    assert sim.mass_quota_left(a) == 1
    # Creating tasks reserves nothing: both are created while one message is left for A.
    first = template(wecom, [a, b])["msgid"]
    second = template(wecom, [a])["msgid"]
    assert sim.member_confirms_groupmsg(first, "zhangsan").sent == (a, b)
    assert sim.member_confirms_groupmsg(second, "zhangsan").over_quota == (a,)
    assert statuses(wecom, second, "zhangsan") == {a: 3}
    assert "send_time" not in results(wecom, second, "zhangsan")["send_list"][0]
    assert errcode(lambda: template(wecom, [a])) == 41048
    move_to(sim, boundary + timedelta(minutes=1))
    next_cap = calendar.monthrange(boundary.year, boundary.month)[1]
    assert sim.mass_quota_left(a) == next_cap
    third = template(wecom, [a])["msgid"]
    assert sim.member_confirms_groupmsg(third, "zhangsan").sent == (a,)
    assert sim.mass_quota_left(a) == next_cap - 1


def test_week7_quota_allows_seven_per_natural_week() -> None:
    with Simulator(make_config(groupmsg_quota_mode="week7")) as sim:
        wecom = client_for(sim)
        try:
            now = china_now(sim)
            monday = datetime(now.year, now.month, now.day, tzinfo=CHINA_TZ) + timedelta(
                days=14 - now.weekday()
            )
            move_to(sim, monday - timedelta(hours=1))
            [a] = befriend(sim, wecom, "zhangsan", "wmA")
            outcomes = [sim.member_sends_personal_mass("zhangsan", [a]) for _ in range(8)]
            assert [o.sent for o in outcomes].count((a,)) == 7 and outcomes[-1].over_quota == (a,)
            assert errcode(lambda: template(wecom, [a])) == 41048
            move_to(sim, monday + timedelta(minutes=1))
            assert sim.mass_quota_left(a) == 7
            msgid = template(wecom, [a])["msgid"]
            assert sim.member_confirms_groupmsg(msgid, "zhangsan").sent == (a,)
        finally:
            wecom.close()


def test_day1_quota_allows_one_per_day_whoever_created_it() -> None:
    with Simulator(make_config(groupmsg_quota_mode="day1")) as sim:
        wecom = client_for(sim)
        try:
            now = china_now(sim)
            midnight = datetime(now.year, now.month, now.day, tzinfo=CHINA_TZ) + timedelta(days=2)
            move_to(sim, midnight - timedelta(hours=1))
            a, b = befriend(sim, wecom, "zhangsan", "wmA", "wmB")
            # A member-created message uses A's quota for the day.
            assert sim.member_sends_personal_mass("zhangsan", [a]).sent == (a,)
            msgid = template(wecom, [a, b])["msgid"]
            sent = sim.member_confirms_groupmsg(msgid, "zhangsan")
            assert (sent.sent, sent.over_quota) == ((b,), (a,))
            assert errcode(lambda: template(wecom, [a, b])) == 41048
            move_to(sim, midnight + timedelta(seconds=1))
            assert template(wecom, [a, b])["fail_list"] == []
        finally:
            wecom.close()


def test_quota_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="groupmsg_quota_mode"):
        make_config(groupmsg_quota_mode="month4")
    with pytest.raises(ValueError, match="auto_confirm"):
        make_config(groupmsg_auto_confirm_after_s=-1)


# ---- task and result APIs -----------------------------------------------------------------------------


def test_task_and_result_lists_page_with_opaque_cursors(sim: Simulator, wecom: WeComClient) -> None:
    customers = befriend(sim, wecom, "zhangsan", *(f"wm{i}" for i in range(5)))
    befriend(sim, wecom, "lisi", "wmLi")
    befriend(sim, wecom, "wangwu", "wmWang")
    msgid = template(wecom, [*customers, "wmLi", "wmWang"])["msgid"]
    seen: list[str] = []
    cursor = ""
    for _ in range(3):
        page = tasks(wecom, msgid, limit=1, cursor=cursor)
        seen += [t["userid"] for t in page["task_list"]]
        cursor = page["next_cursor"]
    assert seen == ["zhangsan", "lisi", "wangwu"] and cursor == ""
    first = results(wecom, msgid, "zhangsan", limit=2)
    second = results(wecom, msgid, "zhangsan", limit=2, cursor=first["next_cursor"])
    third = results(wecom, msgid, "zhangsan", limit=2, cursor=second["next_cursor"])
    rows = first["send_list"] + second["send_list"] + third["send_list"]
    assert [r["external_userid"] for r in rows] == customers and third["next_cursor"] == ""
    other = template(wecom, customers)["msgid"]
    assert errcode(lambda: results(wecom, other, "zhangsan", cursor=first["next_cursor"])) == 50100
    assert errcode(lambda: tasks(wecom, msgid, cursor=first["next_cursor"])) == 50100
    assert errcode(lambda: tasks(wecom, msgid, limit=1001)) == 40058
    assert len(results(wecom, msgid, "zhangsan", limit=1000)["send_list"]) == 5


def test_task_and_result_apis_check_msgid_and_userid(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    msgid = template(wecom, ["wmA"])["msgid"]
    assert errcode(lambda: post(wecom, "get_groupmsg_task")) == 41046
    assert errcode(lambda: tasks(wecom, "msgNope")) == 41047
    assert errcode(lambda: post(wecom, "get_groupmsg_send_result", msgid=msgid)) == 41009
    assert errcode(lambda: results(wecom, msgid, "nobody")) == 40003
    assert errcode(lambda: results(wecom, "msgNope", "zhangsan")) == 41047


def test_querying_right_after_creation_answers_41063_while_dispatching() -> None:
    with Simulator(make_config(groupmsg_dispatch_delay_s=5)) as sim:
        wecom = client_for(sim)
        try:
            befriend(sim, wecom, "zhangsan", "wmA")
            msgid = template(wecom, ["wmA"])["msgid"]
            assert errcode(lambda: tasks(wecom, msgid)) == 41063
            with pytest.raises(WeComAPIError) as caught:
                wecom.get_groupmsg_send_result(msgid, "zhangsan")
            assert caught.value.errcode == 41063 and caught.value.kind is ErrorKind.TRANSIENT
            assert caught.value.retryable
            with pytest.raises(SimulationError, match="dispatching"):
                sim.member_confirms_groupmsg(msgid, "zhangsan")
            sim.advance(5)
            assert tasks(wecom, msgid)["task_list"] == [{"userid": "zhangsan", "status": 0}]
            assert sim.member_confirms_groupmsg(msgid, "zhangsan").sent == ("wmA",)
        finally:
            wecom.close()


# ---- remind and cancel -----------------------------------------------------------------------------------


def test_remind_is_limited_to_three_per_message_per_24_hours(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    befriend(sim, wecom, "lisi", "wmB")
    msgid = template(wecom, ["wmA", "wmB"])["msgid"]
    other = template(wecom, ["wmA"])["msgid"]
    post(wecom, "remind_groupmsg_send", msgid=msgid)
    sim.member_confirms_groupmsg(msgid, "zhangsan")
    post(wecom, "remind_groupmsg_send", msgid=msgid)
    post(wecom, "remind_groupmsg_send", msgid=msgid)
    assert errcode(lambda: post(wecom, "remind_groupmsg_send", msgid=msgid)) == 45009
    # The limit is per mass message.
    assert errcode(lambda: post(wecom, "remind_groupmsg_send", msgid=other)) == 0
    reminded = [r.userids for r in sim.groupmsg_reminders if r.msgid == msgid]
    assert reminded == [("zhangsan", "lisi"), ("lisi",), ("lisi",)]
    sim.advance(DAY - 1)
    assert errcode(lambda: post(wecom, "remind_groupmsg_send", msgid=msgid)) == 45009
    sim.advance(1)
    assert errcode(lambda: post(wecom, "remind_groupmsg_send", msgid=msgid)) == 0
    assert errcode(lambda: post(wecom, "remind_groupmsg_send")) == 41046
    assert errcode(lambda: post(wecom, "remind_groupmsg_send", msgid="msgNope")) == 41047


def test_the_remind_limit_and_its_errcode_are_configurable() -> None:
    config = make_config(groupmsg_reminds_per_24h=1, groupmsg_remind_limit_errcode=40058)
    with Simulator(config) as sim:
        wecom = client_for(sim)
        try:
            befriend(sim, wecom, "zhangsan", "wmA")
            msgid = template(wecom, ["wmA"])["msgid"]
            wecom.remind_groupmsg_send(msgid)
            assert errcode(lambda: wecom.remind_groupmsg_send(msgid)) == 40058
        finally:
            wecom.close()


def test_cancel_stops_unsent_tasks(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    befriend(sim, wecom, "lisi", "wmB")
    msgid = template(wecom, ["wmA", "wmB"])["msgid"]
    sim.member_confirms_groupmsg(msgid, "zhangsan")
    post(wecom, "cancel_groupmsg_send", msgid=msgid)
    with pytest.raises(SimulationError, match="cancelled"):
        sim.member_confirms_groupmsg(msgid, "lisi")
    assert [t["status"] for t in tasks(wecom, msgid)["task_list"]] == [2, 0]
    assert statuses(wecom, msgid, "lisi") == {"wmB": 0}
    post(wecom, "remind_groupmsg_send", msgid=msgid)
    assert sim.groupmsg_reminders[-1].userids == ()
    assert errcode(lambda: post(wecom, "cancel_groupmsg_send")) == 41046
    assert errcode(lambda: post(wecom, "cancel_groupmsg_send", msgid="msgNope")) == 41047


def test_mass_sending_raises_no_callbacks(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmA")
    before = len(sim.emitted_callbacks)
    msgid = template(wecom, ["wmA"])["msgid"]
    post(wecom, "remind_groupmsg_send", msgid=msgid)
    sim.member_confirms_groupmsg(msgid, "zhangsan")
    post(wecom, "cancel_groupmsg_send", msgid=msgid)
    assert len(sim.emitted_callbacks) == before


# ---- HTTP controls and the client ------------------------------------------------------------------------


def test_http_controls_confirm_and_send_personal_mass(sim: Simulator, wecom: WeComClient) -> None:
    befriend(sim, wecom, "zhangsan", "wmA", "wmB")
    msgid = template(wecom, ["wmA"])["msgid"]
    http = requests.Session()
    http.trust_env = False
    try:
        confirmed = http.post(
            f"{sim.base_url}/_sim/member_confirms_groupmsg",
            json={"msgid": msgid, "userid": "zhangsan"},
            timeout=5,
        ).json()
        assert confirmed["ok"] and confirmed["sent"] == ["wmA"] and confirmed["over_quota"] == []
        again = http.post(
            f"{sim.base_url}/_sim/member_confirms_groupmsg",
            json={"msgid": msgid, "userid": "zhangsan"},
            timeout=5,
        )
        assert again.status_code == 400
        personal = http.post(
            f"{sim.base_url}/_sim/member_sends_personal_mass",
            json={"userid": "zhangsan", "external_userids": ["wmB", "wmX"]},
            timeout=5,
        ).json()
        assert personal["sent"] == ["wmB"] and personal["not_friend"] == ["wmX"]
        state = http.get(f"{sim.base_url}/_sim/state", timeout=5).json()
        [msg] = state["groupmsgs"]
        assert msg["msgid"] == msgid and msg["tasks"]["zhangsan"]["results"] == {"wmA": 1}
    finally:
        http.close()


def test_client_wrappers_create_follow_cursors_remind_and_cancel(sim: Simulator, wecom: WeComClient) -> None:
    customers = befriend(sim, wecom, "zhangsan", "wmA", "wmB", "wmC")
    befriend(sim, wecom, "lisi", "wmD")
    befriend(sim, wecom, "wangwu", "wmE")
    link = {"msgtype": "link", "link": {"title": "策略会", "url": "https://example.com/live"}}
    created = wecom.add_msg_template(
        [*customers, "wmD", "wmE", "wmNope"], text="直播预约", attachments=[link]
    )
    assert isinstance(created, MsgTemplateResult) and created.fail_list == ("wmNope",)
    msg = sim.groupmsg(created.msgid)
    assert msg is not None and msg.text == "直播预约" and msg.attachments == [link]
    sim.member_deletes_customer("zhangsan", "wmB")
    sent = sim.member_confirms_groupmsg(created.msgid, "zhangsan")
    task_list = wecom.get_groupmsg_task(created.msgid, page_size=1)
    assert task_list == [
        GroupMsgTaskStatus("zhangsan", 2, sent.send_time),
        GroupMsgTaskStatus("lisi", 0, None),
        GroupMsgTaskStatus("wangwu", 0, None),
    ]
    assert wecom.get_groupmsg_send_result(created.msgid, "zhangsan", page_size=2) == [
        GroupMsgSendResult("wmA", "zhangsan", 1, sent.send_time),
        GroupMsgSendResult("wmB", "zhangsan", 2, None),
        GroupMsgSendResult("wmC", "zhangsan", 1, sent.send_time),
    ]
    wecom.remind_groupmsg_send(created.msgid)
    assert sim.groupmsg_reminders[-1].userids == ("lisi", "wangwu")
    wecom.cancel_groupmsg_send(created.msgid)
    current = sim.groupmsg(created.msgid)
    assert current is not None and current.cancelled
    by_sender = wecom.add_msg_template(sender="lisi", text="hi")
    assert wecom.get_groupmsg_send_result(by_sender.msgid, "lisi")[0].external_userid == "wmD"


def test_client_errors_say_whether_to_retry(sim: Simulator, wecom: WeComClient) -> None:
    with pytest.raises(WeComAPIError) as nobody:
        wecom.add_msg_template(["wmNope"], text="hi")
    assert nobody.value.errcode == 41048 and nobody.value.kind is ErrorKind.PERMANENT
    assert not nobody.value.retryable
    with pytest.raises(WeComAPIError) as missing:
        wecom.cancel_groupmsg_send("msgNope")
    assert missing.value.errcode == 41047 and not missing.value.retryable
