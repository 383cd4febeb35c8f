"""Template cards on the simulated corp: validation, each member's copy, clicks, and updates.

`message/send` (in `corp.py`) validates a card here and remembers it for every member it reached.
A member's click (`member_clicks_card`) raises a `template_card_event` carrying a fresh single-use
ResponseCode; `message/update_template_card` consumes a code (from the send or from a click) to
grey out the button or replace the card for the task's recipients (WECOM.md §8.2-8.4).
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.wecom.simulator.api import JSON, ApiCall, ApiError, SimulationError, opt_int, opt_list, str_list
from bot.wecom.simulator.callback_xml import template_card_event
from bot.wecom.simulator.parts import CorpParts

MAX_BUTTONS = 6
MAX_UPDATE_USERS = 1000
MAX_UPDATE_PARTIES = 100
MAX_UPDATE_TAGS = 100
TASK_ID_RE = re.compile(r"^[0-9A-Za-z_\-@]{1,128}$")
INTERACTIVE_CARDS = frozenset({"button_interaction", "vote_interaction", "multiple_interaction"})
CARD_TYPES = INTERACTIVE_CARDS | {"text_notice", "news_notice"}
# WECOM.md gives no errcode for an unknown, used or expired response_code. 40058 (invalid parameter,
# §11) is the global code for a bad parameter value, and the simulator already answers it for a
# reused task_id; the errmsg says which case it was.
RESPONSE_CODE_ERRCODE = 40058


@dataclass
class ResponseCode:
    """A template card's single-use `response_code` (valid 24 h)."""

    code: str
    agentid: int
    task_id: str | None
    userids: tuple[str, ...]
    expires_at: float
    used: bool = False


@dataclass(frozen=True)
class SentTemplateCard:
    """A template card WeCom accepted: its task, who received it, and its callback keys."""

    agentid: int
    task_id: str
    card_type: str
    msgid: str
    card: JSON
    recipients: tuple[str, ...]
    button_keys: tuple[str, ...]
    sent_at: float


@dataclass(frozen=True)
class CardState:
    """What one member's copy of a card shows now: the card (or its replacement) and any greyed text."""

    userid: str
    task_id: str
    card: JSON
    replace_name: str | None
    clicked_key: str | None
    updated_at: float | None


@dataclass(frozen=True)
class CardUpdate:
    """An accepted message/update_template_card: the task, the members updated, and the change."""

    task_id: str
    userids: tuple[str, ...]
    replace_name: str | None
    card: JSON | None
    at: float


@dataclass
class _CardView:
    card: JSON
    replace_name: str | None = None
    clicked_key: str | None = None
    updated_at: float | None = None


def callback_keys(card: Mapping[str, Any]) -> tuple[str, ...]:
    """The keys a click on `card` can report: callback buttons, the submit button, then menu entries."""
    return (*_button_keys(card), *_menu_keys(card))


def _button_keys(card: Mapping[str, Any]) -> tuple[str, ...]:
    keys: list[str] = []
    if card.get("card_type") == "button_interaction":
        for button in card.get("button_list") or []:
            if isinstance(button, dict) and int(button.get("type", 0) or 0) == 0 and button.get("key"):
                keys.append(str(button["key"]))
    submit = card.get("submit_button")
    voting = card.get("card_type") in ("vote_interaction", "multiple_interaction")
    if voting and isinstance(submit, dict) and submit.get("key"):
        keys.append(str(submit["key"]))
    return tuple(keys)


def _menu_keys(card: Mapping[str, Any]) -> tuple[str, ...]:
    menu = card.get("action_menu")
    actions = menu.get("action_list") if isinstance(menu, dict) else None
    return tuple(str(a["key"]) for a in actions or [] if isinstance(a, dict) and a.get("key"))


def _questions(card: Mapping[str, Any]) -> dict[str, set[str]]:
    """Each question_key on the card and the option ids it offers."""
    groups: list[Any] = [card.get("button_selection"), card.get("checkbox"), *(card.get("select_list") or [])]
    return {
        str(group["question_key"]): {
            str(option.get("id")) for option in group.get("option_list") or [] if isinstance(option, dict)
        }
        for group in groups
        if isinstance(group, dict) and group.get("question_key")
    }


class CardsMixin(CorpParts):
    """Template-card validation and state, the member's click, and message/update_template_card."""

    _task_ids: dict[int, set[str]]
    _response_codes: dict[str, ResponseCode]

    def _check_agent(self, call: ApiCall, data: JSON) -> int:
        """The request's agentid, checked against the token's app (implemented by SimulatedCorp)."""
        raise NotImplementedError

    def _init_cards(self) -> None:
        self._cards: dict[tuple[int, str], SentTemplateCard] = {}
        self._card_views: dict[tuple[int, str, str], _CardView] = {}
        self._card_updates: list[CardUpdate] = []
        self.register("message/update_template_card", self._update_template_card)

    # ==== simulated client-side action ============================================================

    def member_clicks_card(
        self,
        userid: str,
        task_id: str,
        button_key: str,
        *,
        selected_items: Mapping[str, Sequence[str]] | None = None,
    ) -> str:
        """The member taps a button (or menu entry) on a card they received; returns the new ResponseCode."""
        with self._lock:
            member = self._member_or_fail(userid)
            agentid = self.config.agent_id
            view = self._card_views.get((agentid, task_id, member))
            if view is None:
                raise SimulationError(f"{member} never received a card with task_id {task_id!r}")
            if view.replace_name is not None or (view.clicked_key and view.card.get("replace_text")):
                raise SimulationError(f"the buttons of card {task_id!r} are greyed out for {member}")
            keys = callback_keys(view.card)
            if button_key not in keys:
                raise SimulationError(f"{button_key!r} is not a key of card {task_id!r}; it has {keys}")
            self._check_selection(view.card, selected_items or {})
            record = self._cards[(agentid, task_id)]
            code = self._new_response_code(agentid, task_id, record.recipients)
            menu = button_key not in _button_keys(view.card)
            view.clicked_key = button_key
            self._emit(
                template_card_event(
                    member,
                    button_key,
                    task_id,
                    code,
                    corp_id=self.config.corp_id,
                    agent_id=agentid,
                    card_type=str(view.card.get("card_type")),
                    selected_items=selected_items,
                    event="template_card_menu_event" if menu else "template_card_event",
                    create_time=int(self.wall_time()),
                )
            )
        self._flush()
        return code

    # ---- observations -------------------------------------------------------------------------

    def card_state(self, userid: str, task_id: str) -> CardState | None:
        """What `userid`'s copy of the card `task_id` shows now, or None if they never received it."""
        with self._lock:
            member = self._member(userid) or userid
            view = self._card_views.get((self.config.agent_id, task_id, member))
            if view is None:
                return None
            return CardState(
                member,
                task_id,
                copy.deepcopy(view.card),
                view.replace_name,
                view.clicked_key,
                view.updated_at,
            )

    @property
    def sent_cards(self) -> list[SentTemplateCard]:
        """Every template card with a task_id WeCom accepted, oldest first."""
        with self._lock:
            return list(self._cards.values())

    @property
    def card_updates(self) -> list[CardUpdate]:
        """Every accepted message/update_template_card, oldest first."""
        with self._lock:
            return list(self._card_updates)

    # ==== validation and bookkeeping used by message/send =========================================

    def _check_template_card(
        self, payload: JSON, agentid: int, *, replacing: str | None = None
    ) -> str | None:
        """Validate `payload["template_card"]`; return its task_id. `replacing` = the task being updated."""
        card = payload.get("template_card")
        if not isinstance(card, dict):
            raise ApiError(40058, "template_card is required")
        card_type = card.get("card_type")
        if card_type not in CARD_TYPES:
            raise ApiError(40058, f"template_card.card_type {card_type!r} is invalid")
        raw_title = card.get("main_title")
        main_title: JSON = raw_title if isinstance(raw_title, dict) else {}
        if card_type == "button_interaction" and not main_title.get("title"):
            raise ApiError(40058, "template_card.main_title.title is required")
        if card_type == "text_notice" and not (main_title.get("title") or card.get("sub_title_text")):
            raise ApiError(40058, "text_notice needs main_title.title or sub_title_text")
        action_menu = card.get("action_menu")
        if action_menu is not None:
            actions = action_menu.get("action_list") if isinstance(action_menu, dict) else None
            if not isinstance(actions, list) or not 1 <= len(actions) <= 3:
                raise ApiError(40058, "template_card.action_menu.action_list needs 1 to 3 entries")
        horizontal = card.get("horizontal_content_list")
        if horizontal is not None and (not isinstance(horizontal, list) or len(horizontal) > 6):
            raise ApiError(40058, "template_card.horizontal_content_list allows at most 6 entries")
        if card_type == "button_interaction":
            self._check_buttons(card.get("button_list"))
        if card_type == "vote_interaction":
            options = (card.get("checkbox") or {}).get("option_list")
            if not isinstance(options, list) or not 1 <= len(options) <= 20:
                raise ApiError(40058, "template_card.checkbox.option_list needs 1 to 20 options")
        if card_type == "multiple_interaction":
            selects = card.get("select_list")
            if not isinstance(selects, list) or not 1 <= len(selects) <= 3:
                raise ApiError(40058, "template_card.select_list needs 1 to 3 selectors")
        task_id = card.get("task_id")
        if replacing is not None:
            # A replacement belongs to the task it updates: it may repeat the task_id or leave it out.
            if task_id not in (None, "", replacing):
                raise ApiError(40058, f"the replacement card must keep task_id {replacing!r}")
            card["task_id"] = replacing
            return replacing
        needs_task = card_type in INTERACTIVE_CARDS or action_menu is not None
        if task_id is None or task_id == "":
            if needs_task:
                raise ApiError(40058, "template_card.task_id is required for this card")
            return None
        if not isinstance(task_id, str) or not TASK_ID_RE.match(task_id):
            raise ApiError(40058, "template_card.task_id must be 1-128 characters of [0-9A-Za-z_-@]")
        # The errcode for a reused task_id is not documented; 40058 with a clear message stands in.
        if task_id in self._task_ids.get(agentid, set()):
            raise ApiError(40058, f"template_card.task_id {task_id!r} already used by this app")
        return task_id

    @staticmethod
    def _check_buttons(buttons: Any) -> None:
        if not isinstance(buttons, list) or not 1 <= len(buttons) <= MAX_BUTTONS:
            raise ApiError(40058, f"template_card.button_list needs 1 to {MAX_BUTTONS} buttons")
        keys: set[str] = set()
        for button in buttons:
            if not isinstance(button, dict) or not button.get("text"):
                raise ApiError(40058, "every button needs text")
            if int(button.get("type", 0) or 0) == 1:
                if not button.get("url"):
                    raise ApiError(40058, "a url button needs url")
                continue
            key = button.get("key")
            if not isinstance(key, str) or not key or len(key.encode()) > 1024:
                raise ApiError(40058, "a callback button needs a key of at most 1024 bytes")
            if key in keys:
                raise ApiError(40058, f"button key {key!r} is not unique")
            keys.add(key)
            style = button.get("style")
            if style is not None and style not in (1, 2, 3, 4):
                raise ApiError(40058, "button style must be 1 to 4")

    def _remember_card(
        self, agentid: int, task_id: str, msgid: str, card: JSON, recipients: Sequence[str]
    ) -> str | None:
        """Record a sent card for each member it reached; return the send's response_code, if any."""
        self._task_ids.setdefault(agentid, set()).add(task_id)
        self._cards[(agentid, task_id)] = SentTemplateCard(
            agentid=agentid,
            task_id=task_id,
            card_type=str(card.get("card_type")),
            msgid=msgid,
            card=copy.deepcopy(card),
            recipients=tuple(recipients),
            button_keys=callback_keys(card),
            sent_at=self.now(),
        )
        for userid in recipients:
            self._card_views[(agentid, task_id, userid)] = _CardView(copy.deepcopy(card))
        if card.get("card_type") not in INTERACTIVE_CARDS:
            return None
        return self._new_response_code(agentid, task_id, recipients)

    def _new_response_code(self, agentid: int, task_id: str, userids: Sequence[str]) -> str:
        code = secrets.token_urlsafe(32)
        self._response_codes[code] = ResponseCode(
            code, agentid, task_id, tuple(userids), self.now() + self.config.response_code_ttl_s
        )
        return code

    @staticmethod
    def _check_selection(card: Mapping[str, Any], selected: Mapping[str, Sequence[str]]) -> None:
        questions = _questions(card)
        for question, options in selected.items():
            offered = questions.get(question)
            if offered is None:
                raise SimulationError(f"the card has no question {question!r}")
            unknown = [o for o in options if o not in offered]
            if unknown:
                raise SimulationError(f"question {question!r} has no options {unknown}")

    # ==== message/update_template_card ============================================================

    def _update_template_card(self, call: ApiCall) -> JSON:
        data = call.json()
        agentid = self._check_agent(call, data)
        value = data.get("response_code")
        if not isinstance(value, str) or not value:
            raise ApiError(40058, "response_code is required")
        if ("button" in data) == ("template_card" in data):
            raise ApiError(40058, "give exactly one of button and template_card")
        userids = str_list(data, "userids")
        parties, tags = opt_list(data, "partyids"), opt_list(data, "tagids")
        atall = opt_int(data, "atall", 0)
        if len(userids) > MAX_UPDATE_USERS:
            raise ApiError(40032)
        if len(parties) > MAX_UPDATE_PARTIES:
            raise ApiError(82002)
        if len(tags) > MAX_UPDATE_TAGS:
            raise ApiError(82003)
        if atall not in (0, 1):
            raise ApiError(40058, "atall must be 0 or 1")
        if not (userids or parties or tags or atall):
            raise ApiError(40058, "name the members to update: userids, partyids, tagids or atall")
        code, task_id = self._usable_code(value, agentid)
        record = self._cards[(agentid, task_id)]
        replace_name: str | None = None
        replacement: JSON | None = None
        if "button" in data:
            button = data["button"]
            name = button.get("replace_name") if isinstance(button, dict) else None
            if not isinstance(name, str) or not name:
                raise ApiError(40058, "button.replace_name is required")
            replace_name = name
        else:
            payload = {"template_card": copy.deepcopy(data["template_card"])}
            self._check_template_card(payload, agentid, replacing=record.task_id)
            replacement = payload["template_card"]
        targets: list[str] = list(record.recipients) if atall else []
        invalid: list[str] = []
        if not atall:
            # The simulator has no departments or tags, so partyids and tagids name nobody.
            for userid in userids:
                member = self._member(userid)
                if member is not None and member in record.recipients:
                    targets.append(member)
                else:
                    invalid.append(userid.lower())
        if not targets:
            raise ApiError(81013, "none of the members received this card", invaliduser=invalid)
        code.used = True
        now = self.now()
        for member in targets:
            view = self._card_views.get((agentid, record.task_id, member))
            if view is None:
                continue
            if replacement is not None:
                view.card, view.replace_name, view.clicked_key = copy.deepcopy(replacement), None, None
            else:
                view.replace_name = replace_name
            view.updated_at = now
        self._card_updates.append(
            CardUpdate(record.task_id, tuple(targets), replace_name, copy.deepcopy(replacement), now)
        )
        return {"invaliduser": invalid}

    def _usable_code(self, value: str, agentid: int) -> tuple[ResponseCode, str]:
        """The unused, unexpired code `value` of this app, and the task it updates."""
        code = self._response_codes.get(value)
        if code is None or code.agentid != agentid or code.task_id is None:
            raise ApiError(RESPONSE_CODE_ERRCODE, "response_code is invalid")
        task_id = code.task_id
        if code.used:
            raise ApiError(RESPONSE_CODE_ERRCODE, "response_code was already used (each code works once)")
        if code.expires_at <= self.now():
            raise ApiError(RESPONSE_CODE_ERRCODE, "response_code has expired (valid 24 h)")
        return code, task_id
