"""`/_sim/<action>` controls for the simulated clients (customers, members, admins, servicers).

They let tests and demos drive a simulator that runs in another process; each maps a JSON body
onto the control method of the same name and answers the method's result as JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bot.wecom.simulator.api import JSON
from bot.wecom.simulator.corp import SimulatedCorp

Control = Callable[[SimulatedCorp, JSON], JSON]


def _req(data: JSON, key: str) -> str:
    value = data[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _opt(data: JSON, key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _strs(data: JSON, key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{key} must be a list of strings")
    return value


def _result(value: Any) -> JSON:
    if value is None:
        return {"ok": True, "delivered": False}
    return {"ok": True, **asdict(value)}


def _pair(data: JSON) -> tuple[str, str]:
    return _req(data, "userid"), _req(data, "external_userid")


def _customer_scans(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(
        sim.customer_scans(
            _req(data, "target"),
            _opt(data, "external_userid"),
            member=_opt(data, "member"),
            customer_channel=_opt(data, "customer_channel"),
            name=_opt(data, "name"),
            customer_type=int(data.get("customer_type", 1)),
            gender=int(data.get("gender", 0)),
            unionid=_opt(data, "unionid") or "",
        )
    )


def _member_accepts(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(sim.member_accepts(*_pair(data)))


def _customer_deletes_member(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.customer_deletes_member(*_pair(data))
    return {"ok": True}


def _member_deletes_customer(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.member_deletes_customer(*_pair(data), source=_opt(data, "source"))
    return {"ok": True}


def _start_chat(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.start_chat(*_pair(data))
    return {"ok": True}


def _set_admin_welcome(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.set_admin_welcome(_req(data, "userid"), bool(data.get("enabled", True)))
    return {"ok": True}


def _member_edits_customer_tags(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.member_edits_customer_tags(*_pair(data), add=_strs(data, "add"), remove=_strs(data, "remove"))
    return {"ok": True}


def _admin_creates_tags(sim: SimulatedCorp, data: JSON) -> JSON:
    ids = sim.admin_creates_tags(
        _req(data, "group_name"), _strs(data, "tag_names"), order=int(data.get("order", 0))
    )
    return {"ok": True, "tag_ids": ids}


def _admin_edits_tag(sim: SimulatedCorp, data: JSON) -> JSON:
    order = data.get("order")
    sim.admin_edits_tag(
        _req(data, "id"), name=_opt(data, "name"), order=None if order is None else int(order)
    )
    return {"ok": True}


def _admin_deletes_tag(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.admin_deletes_tag(_req(data, "id"))
    return {"ok": True}


def _admin_shuffles_tags(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.admin_shuffles_tags(_req(data, "group_id"), _opt(data, "strategy_id"))
    return {"ok": True}


def _set_acquisition_balance(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.set_acquisition_balance(int(data["balance"]))
    return {"ok": True, "balance": sim.acquisition_balance}


def _lower_acquisition_balance(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.lower_acquisition_balance(int(data.get("by", 1)))
    return {"ok": True, "balance": sim.acquisition_balance}


def _kf_customer_enters(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(
        sim.kf_customer_enters(
            _req(data, "open_kfid"),
            _opt(data, "external_userid"),
            _opt(data, "scene") or "",
            _opt(data, "scene_param") or "",
            nickname=_opt(data, "nickname"),
        )
    )


def _kf_customer_says(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(
        sim.kf_customer_says(
            _req(data, "open_kfid"), _req(data, "external_userid"), _req(data, "text"), _opt(data, "menu_id")
        )
    )


def _kf_servicer_says(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(
        sim.kf_servicer_says(
            _req(data, "open_kfid"), _req(data, "external_userid"), _req(data, "servicer"), _req(data, "text")
        )
    )


def _kf_session_change(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(
        sim.kf_session_change(
            _req(data, "open_kfid"),
            _req(data, "external_userid"),
            int(data["change_type"]),
            _opt(data, "servicer"),
        )
    )


def _kf_servicer_status(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(
        sim.kf_servicer_status(
            _req(data, "open_kfid"),
            _req(data, "servicer"),
            bool(data["receiving"]),
            stop_type=int(data.get("stop_type", 0)),
        )
    )


def _kf_send_fail(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(
        sim.kf_send_fail(
            _req(data, "open_kfid"),
            _req(data, "external_userid"),
            _req(data, "fail_msgid"),
            int(data.get("fail_type", 0)),
        )
    )


def _member_confirms_groupmsg(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(sim.member_confirms_groupmsg(_req(data, "msgid"), _req(data, "userid")))


def _member_sends_personal_mass(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(sim.member_sends_personal_mass(_req(data, "userid"), _strs(data, "external_userids")))


def _member_clicks_card(sim: SimulatedCorp, data: JSON) -> JSON:
    code = sim.member_clicks_card(
        _req(data, "userid"),
        _req(data, "task_id"),
        _req(data, "button_key"),
        selected_items=data.get("selected_items"),
    )
    return {"ok": True, "response_code": code}


def _customer_refuses_transfer(sim: SimulatedCorp, data: JSON) -> JSON:
    return _result(sim.customer_refuses_transfer(_req(data, "external_userid")))


def _set_customer_limit_reached(sim: SimulatedCorp, data: JSON) -> JSON:
    sim.set_customer_limit_reached(_req(data, "userid"), bool(data.get("reached", True)))
    return {"ok": True}


CONTROLS: dict[str, Control] = {
    "customer_scans": _customer_scans,
    "member_accepts": _member_accepts,
    "customer_deletes_member": _customer_deletes_member,
    "member_deletes_customer": _member_deletes_customer,
    "start_chat": _start_chat,
    "set_admin_welcome": _set_admin_welcome,
    "member_edits_customer_tags": _member_edits_customer_tags,
    "admin_creates_tags": _admin_creates_tags,
    "admin_edits_tag": _admin_edits_tag,
    "admin_deletes_tag": _admin_deletes_tag,
    "admin_shuffles_tags": _admin_shuffles_tags,
    "set_acquisition_balance": _set_acquisition_balance,
    "lower_acquisition_balance": _lower_acquisition_balance,
    "kf_customer_enters": _kf_customer_enters,
    "kf_customer_says": _kf_customer_says,
    "kf_servicer_says": _kf_servicer_says,
    "kf_session_change": _kf_session_change,
    "kf_servicer_status": _kf_servicer_status,
    "kf_send_fail": _kf_send_fail,
    "member_confirms_groupmsg": _member_confirms_groupmsg,
    "member_sends_personal_mass": _member_sends_personal_mass,
    "member_clicks_card": _member_clicks_card,
    "customer_refuses_transfer": _customer_refuses_transfer,
    "set_customer_limit_reached": _set_customer_limit_reached,
}


def state(sim: SimulatedCorp) -> JSON:
    """The contact, mass-send and kf transcripts, for `GET /_sim/state`."""
    return {
        "welcomes": [asdict(w) for w in sim.welcomes],
        "groupmsgs": [asdict(m) for m in sim.groupmsgs],
        "groupmsg_reminders": [asdict(r) for r in sim.groupmsg_reminders],
        "kf_sent": [asdict(m) for m in sim.kf_sent],
        "sent_cards": [asdict(c) for c in sim.sent_cards],
        "card_updates": [asdict(u) for u in sim.card_updates],
        "transfers": [asdict(t) for t in sim.transfers],
        "acquisition_balance": sim.acquisition_balance,
        "emitted_callbacks": len(sim.emitted_callbacks),
    }
