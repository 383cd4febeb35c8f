"""Customer contact on the simulated corp: 「联系我」, acquisition links, relations, welcomes, corp tags.

Every callback here comes from a simulated client-side action (a customer scans a QR code, a
member deletes a customer, an admin edits a tag in the console). Changes made through the API
never produce callbacks, as on WeCom (WECOM.md §2).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bot.wecom.simulator.api import (
    JSON,
    ApiCall,
    ApiError,
    SimulationError,
    opt_bool,
    opt_int,
    opt_list,
    opt_str,
    str_list,
    utf8_len,
)
from bot.wecom.simulator.callback_xml import (
    customer_acquisition_event,
    external_contact_event,
    external_tag_event,
)
from bot.wecom.simulator.parts import CorpParts, Customer, new_id

STATE_MAX_CHARS = 30
REMARK_MAX_CHARS = 30
TAG_NAME_MAX_CHARS = 30
LINK_NAME_MAX_CHARS = 30
WELCOME_TEXT_MAX_BYTES = 4000
WELCOME_MAX_ATTACHMENTS = 9
TEMP_MAX_S = 14 * 86400
TEMP_DEFAULT_EXPIRES_S = 7 * 86400
TEMP_DEFAULT_CHAT_EXPIRES_S = 86400
LIST_DEFAULT_WINDOW_S = 90 * 86400
LIST_MAX_LIMIT = 1000
FOLLOW_USER_PAGE = 500
ORDER_MAX = 2**32 - 1
# follow_user.add_way: 1 = scanned a QR code; 16 = via an acquisition link (assumed; not in WECOM.md §9.1).
ADD_WAY_UNKNOWN = 0
ADD_WAY_QR = 1
ADD_WAY_LINK = 16

# Relation states between a member and a customer.
PENDING = "pending"  # the customer asked to add a member who must verify; nothing exists yet
HALF = "half"  # add_half_external_contact fired; the member has not confirmed (APIs answer 84061)
ACTIVE = "active"
ONE_WAY = "one_way"  # the customer deleted the member; the member still has them (APIs work)
GONE = "gone"  # the member deleted the customer (or it never completed): APIs answer 84061
_VISIBLE = frozenset({ACTIVE, ONE_WAY})

_ATTACHMENT_TYPES = frozenset({"image", "link", "miniprogram", "video", "file"})


@dataclass
class ContactWay:
    """A 「联系我」 configuration created through the API."""

    config_id: str
    type: int
    scene: int
    style: int | None
    remark: str
    skip_verify: bool
    state: str
    users: list[str]
    parties: list[int]
    is_temp: bool
    expires_in: int | None
    chat_expires_in: int | None
    unionid: str
    conclusions: JSON | None
    qr_code: str | None
    created_at: int
    expires_at: float | None
    app: str
    used: bool = False
    deleted: bool = False
    picks: int = 0


@dataclass
class AcquisitionLink:
    """A 获客链接 created through customer_acquisition/create_link."""

    link_id: str
    link_name: str
    url: str
    create_time: int
    users: list[str]
    parties: list[int]
    skip_verify: bool
    deleted: bool = False
    picks: int = 0


@dataclass
class Relation:
    """What WeCom knows about one member-customer pair (tags are per pair)."""

    userid: str
    external_userid: str
    status: str
    createtime: int
    state: str | None
    add_way: int
    oper_userid: str
    source: str
    remark: str = ""
    description: str = ""
    tags: list[str] = field(default_factory=list)
    chatted: bool = False
    welcomed: bool = False


@dataclass
class _WelcomeCode:
    code: str
    userid: str
    external_userid: str
    expires_at: float
    used: bool = False


@dataclass(frozen=True)
class Welcome:
    """A welcome message delivered through send_welcome_msg (errcode 0)."""

    external_userid: str
    userid: str
    text: str | None
    attachments: tuple[JSON, ...]
    at: float
    welcome_code: str
    app: str


@dataclass(frozen=True)
class AddResult:
    """What a simulated add did: the pair, the contact events raised, and the WelcomeCode, if any."""

    external_userid: str
    userid: str
    status: str
    change_types: tuple[str, ...]
    state: str | None
    welcome_code: str | None


@dataclass
class _TagGroup:
    group_id: str
    name: str
    create_time: int
    order: int
    seq: int
    created_by: str | None
    deleted: bool = False


@dataclass
class _Tag:
    tag_id: str
    group_id: str
    name: str
    create_time: int
    order: int
    seq: int
    created_by: str | None
    deleted: bool = False


def _order(value: Any, key: str = "order") -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= ORDER_MAX:
        raise ApiError(40058, f"{key} must be an integer in [0, 2^32)")
    return value


def _sorted(items: Iterable[Any]) -> list[Any]:
    # A larger order sorts first; ties keep creation order.
    return sorted(items, key=lambda item: (-item.order, item.seq))


class ContactsMixin(CorpParts):
    """Customer-contact endpoints, their state, and the client-side actions that raise callbacks."""

    def _init_contacts(self) -> None:
        self._contact_ways: dict[str, ContactWay] = {}
        self._qr_codes: dict[str, str] = {}
        self._temp_created: list[float] = []
        self._links: dict[str, AcquisitionLink] = {}
        self._relations: dict[tuple[str, str], Relation] = {}
        self._welcome_codes: dict[str, _WelcomeCode] = {}
        self._welcomes: list[Welcome] = []
        self._admin_welcome = {u.lower() for u in self.config.admin_welcome_users}
        self._tag_groups: dict[str, _TagGroup] = {}
        self._tags: dict[str, _Tag] = {}
        self._tag_seq = itertools.count()
        self._acq_balance = self.config.acquisition_quota
        for api, handler in (
            ("externalcontact/add_contact_way", self._add_contact_way),
            ("externalcontact/get_contact_way", self._get_contact_way),
            ("externalcontact/update_contact_way", self._update_contact_way),
            ("externalcontact/del_contact_way", self._del_contact_way),
            ("externalcontact/list_contact_way", self._list_contact_way),
            ("externalcontact/customer_acquisition/create_link", self._create_link),
            ("externalcontact/customer_acquisition/get", self._get_link),
            ("externalcontact/customer_acquisition/delete_link", self._delete_link),
            ("externalcontact/send_welcome_msg", self._send_welcome_msg),
            ("externalcontact/get_corp_tag_list", self._get_corp_tag_list),
            ("externalcontact/add_corp_tag", self._add_corp_tag),
            ("externalcontact/edit_corp_tag", self._edit_corp_tag),
            ("externalcontact/del_corp_tag", self._del_corp_tag),
            ("externalcontact/mark_tag", self._mark_tag),
        ):
            self.register(api, handler)
        for api, handler in (
            ("externalcontact/customer_acquisition_quota", self._acquisition_quota),
            ("externalcontact/get", self._get_external_contact),
            ("externalcontact/list", self._list_external_contacts),
            ("externalcontact/get_follow_user_list", self._get_follow_user_list),
        ):
            self.register(api, handler, methods=("GET",))

    # ==== simulated client-side actions (each may raise callbacks) =================================

    def customer_scans(
        self,
        target: str,
        external_userid: str | None = None,
        *,
        member: str | None = None,
        customer_channel: str | None = None,
        name: str | None = None,
        customer_type: int = 1,
        gender: int = 0,
        unionid: str = "",
    ) -> AddResult:
        """A WeChat user scans a 「联系我」 QR (config_id or qr_code) or opens a link (link_id or url)."""
        with self._lock:
            result = self._scan(
                target, external_userid, member, customer_channel, name, customer_type, gender, unionid
            )
        self._flush()
        return result

    def member_accepts(self, userid: str, external_userid: str) -> AddResult:
        """The member confirms a pending or half add: add_external_contact fires."""
        with self._lock:
            rel = self._relation_or_fail(userid, external_userid)
            if rel.status not in (PENDING, HALF):
                raise SimulationError(f"nothing to accept: the relation is {rel.status}")
            rel.status = ACTIVE
            code = self._issue_welcome_code(rel)
            self._emit_contact("add_external_contact", rel, state=rel.state, welcome_code=code)
            result = AddResult(
                rel.external_userid, rel.userid, rel.status, ("add_external_contact",), rel.state, code
            )
        self._flush()
        return result

    def customer_deletes_member(self, userid: str, external_userid: str) -> None:
        """The customer deletes the member: del_follow_user (a one-way relation remains)."""
        with self._lock:
            rel = self._relation_or_fail(userid, external_userid)
            if rel.status == ACTIVE:
                rel.status = ONE_WAY
            elif rel.status == HALF:
                rel.status = GONE
            else:
                raise SimulationError(f"the customer cannot delete a relation that is {rel.status}")
            self._emit_contact("del_follow_user", rel)
        self._flush()

    def member_deletes_customer(
        self, userid: str, external_userid: str, *, source: str | None = None
    ) -> None:
        """The member deletes the customer: del_external_contact; later API calls answer 84061."""
        with self._lock:
            rel = self._relation_or_fail(userid, external_userid)
            if rel.status not in (ACTIVE, ONE_WAY, HALF):
                raise SimulationError(f"the member cannot delete a relation that is {rel.status}")
            rel.status = GONE
            rel.tags.clear()
            self._emit_contact("del_external_contact", rel, source=source)
        self._flush()

    def start_chat(self, userid: str, external_userid: str) -> None:
        """The member and the customer exchange a message: no more WelcomeCode (41051 for open ones)."""
        with self._lock:
            rel = self._relation_or_fail(userid, external_userid)
            if rel.status in (PENDING, GONE):
                raise SimulationError(f"no chat is possible while the relation is {rel.status}")
            rel.chatted = True

    def set_admin_welcome(self, userid: str, enabled: bool = True) -> None:
        """Configure (or remove) an admin-console welcome for a member: adds then carry no WelcomeCode."""
        with self._lock:
            member = self._member_or_fail(userid).lower()
            if enabled:
                self._admin_welcome.add(member)
            else:
                self._admin_welcome.discard(member)

    def member_edits_customer_tags(
        self, userid: str, external_userid: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        """The member changes the pair's corp tags in the client: edit_external_contact."""
        with self._lock:
            rel = self._relation_or_fail(userid, external_userid)
            if rel.status not in _VISIBLE:
                raise SimulationError(f"cannot tag while the relation is {rel.status}")
            for tag_id in [*add, *remove]:
                tag = self._tags.get(tag_id)
                if tag is None or tag.deleted:
                    raise SimulationError(f"no corp tag {tag_id!r}")
            self._apply_tags(rel, add, remove)
            self._emit_contact("edit_external_contact", rel)
        self._flush()

    def admin_creates_tags(self, group_name: str, tag_names: Sequence[str], *, order: int = 0) -> list[str]:
        """An admin adds tags in the console (reusing a group by name): change_external_tag create."""
        with self._lock:
            if not tag_names:
                raise SimulationError("a tag group needs at least one tag")
            group = self._group_by_name(group_name)
            names = list(dict.fromkeys(tag_names))
            existing = {t.name: t for t in self._tags_of(group.group_id)} if group else {}
            new_names = [n for n in names if n not in existing]
            if self._active_tag_count() + len(new_names) > self.config.corp_tag_limit:
                raise SimulationError("the corp already has the maximum number of tags")
            if group is None:
                group = self._new_group(group_name, order, None)
                self._emit_tag("create", group.group_id, "tag_group")
            ids: list[str] = []
            for tag_name in names:
                tag = existing.get(tag_name)
                if tag is None:
                    tag = self._new_tag(group, tag_name, 0, None)
                    self._emit_tag("create", tag.tag_id, "tag")
                ids.append(tag.tag_id)
        self._flush()
        return ids

    def admin_edits_tag(
        self, tag_or_group_id: str, *, name: str | None = None, order: int | None = None
    ) -> None:
        """An admin renames or reorders a tag or group in the console: change_external_tag update."""
        with self._lock:
            entity, tag_type = self._tag_entity(tag_or_group_id)
            if name is not None:
                entity.name = name
            if order is not None:
                entity.order = order
            self._emit_tag("update", tag_or_group_id, tag_type)
        self._flush()

    def admin_deletes_tag(self, tag_or_group_id: str) -> None:
        """An admin deletes a tag or a whole group in the console: change_external_tag delete."""
        with self._lock:
            entity, tag_type = self._tag_entity(tag_or_group_id)
            if isinstance(entity, _TagGroup):
                self._delete_group(entity)
            else:
                emptied = self._delete_tag(entity)
                if emptied is not None:
                    self._emit_tag("delete", tag_or_group_id, "tag")
                    tag_or_group_id, tag_type = emptied.group_id, "tag_group"
            self._emit_tag("delete", tag_or_group_id, tag_type)
        self._flush()

    def admin_shuffles_tags(self, group_id: str, strategy_id: str | None = None) -> None:
        """An admin reorders tags in the console: change_external_tag shuffle."""
        with self._lock:
            self._emit(
                external_tag_event(
                    "shuffle",
                    group_id,
                    corp_id=self.config.corp_id,
                    strategy_id=strategy_id,
                    create_time=self._ts(),
                )
            )
        self._flush()

    def set_acquisition_balance(self, balance: int) -> None:
        """Set the 获客助手 quota balance; crossing the thresholds raises balance_low/balance_exhausted."""
        with self._lock:
            before, self._acq_balance = self._acq_balance, max(0, balance)
            self._acquisition_balance_events(before)
        self._flush()

    def lower_acquisition_balance(self, by: int = 1) -> None:
        """Use up `by` units of the 获客助手 quota (as customers arriving elsewhere would)."""
        with self._lock:
            before, self._acq_balance = self._acq_balance, max(0, self._acq_balance - by)
            self._acquisition_balance_events(before)
        self._flush()

    # ---- observations -------------------------------------------------------------------------

    @property
    def welcomes(self) -> list[Welcome]:
        """Every welcome message delivered through send_welcome_msg, oldest first."""
        with self._lock:
            return list(self._welcomes)

    @property
    def acquisition_balance(self) -> int:
        """The 获客助手 quota left."""
        with self._lock:
            return self._acq_balance

    def relation(self, userid: str, external_userid: str) -> Relation | None:
        """A copy of what WeCom knows about the pair, or None."""
        with self._lock:
            member = self._member(userid)
            rel = self._relations.get((member or userid, external_userid))
            return None if rel is None else replace(rel, tags=list(rel.tags))

    # ==== internals for the actions ===============================================================

    def _ts(self) -> int:
        return int(self.wall_time())

    def _emit_tag(self, change_type: str, entity_id: str, tag_type: str) -> None:
        self._emit(
            external_tag_event(
                change_type, entity_id, corp_id=self.config.corp_id, tag_type=tag_type, create_time=self._ts()
            )
        )

    def _emit_contact(
        self,
        change_type: str,
        rel: Relation,
        *,
        state: str | None = None,
        welcome_code: str | None = None,
        source: str | None = None,
    ) -> None:
        self._emit(
            external_contact_event(
                change_type,
                rel.userid,
                rel.external_userid,
                corp_id=self.config.corp_id,
                state=state or None,
                welcome_code=welcome_code,
                source=source,
                create_time=self._ts(),
            )
        )

    def _relation_or_fail(self, userid: str, external_userid: str) -> Relation:
        rel = self._relations.get((self._member_or_fail(userid), external_userid))
        if rel is None:
            raise SimulationError(f"{userid} and {external_userid} have no relation")
        return rel

    def _expand(self, users: Sequence[str], parties: Sequence[int]) -> list[str]:
        members: dict[str, None] = dict.fromkeys(users)
        for party in parties:
            for userid in self.config.departments.get(party, []):
                member = self._member(userid)
                if member is not None:
                    members[member] = None
        return list(members)

    def _find_way(self, target: str) -> ContactWay | None:
        way = self._contact_ways.get(target)
        if way is None and target in self._qr_codes:
            way = self._contact_ways[self._qr_codes[target]]
        return way

    def _find_link(self, target: str) -> tuple[AcquisitionLink | None, str | None]:
        parts = urlsplit(target)
        channel = parse_qs(parts.query).get("customer_channel", [None])[0]
        base = target.split("?", 1)[0].split("#", 1)[0]
        link = self._links.get(base) or next((lk for lk in self._links.values() if lk.url == base), None)
        return link, channel

    def _scan(
        self,
        target: str,
        external_userid: str | None,
        member: str | None,
        customer_channel: str | None,
        name: str | None,
        customer_type: int,
        gender: int,
        unionid: str,
    ) -> AddResult:
        now = self.now()
        way = self._find_way(target)
        link: AcquisitionLink | None = None
        if way is not None:
            if way.deleted:
                raise SimulationError("this 「联系我」 QR code was deleted")
            if way.is_temp and (way.used or (way.expires_at is not None and now >= way.expires_at)):
                raise SimulationError("this temporary QR code is no longer valid")
            candidates = self._expand(way.users, way.parties)
            state: str | None = way.state or None
            skip_verify, source = way.skip_verify, way.config_id
            add_way = ADD_WAY_QR if way.scene == 2 else ADD_WAY_UNKNOWN
            holder: ContactWay | AcquisitionLink = way
        else:
            link, channel = self._find_link(target)
            if link is None:
                raise SimulationError(f"no contact way or acquisition link {target!r}")
            if link.deleted:
                raise SimulationError("this acquisition link was deleted")
            if self._acq_balance <= 0:
                raise SimulationError("the 获客助手 quota is exhausted: the link is unavailable")
            candidates = self._expand(link.users, link.parties)
            state = customer_channel if customer_channel is not None else channel
            skip_verify, source, add_way, holder = link.skip_verify, link.link_id, ADD_WAY_LINK, link
        if not candidates:
            raise SimulationError("the contact way has no members")
        if member is not None:
            userid = self._member_or_fail(member)
            if userid not in candidates:
                raise SimulationError(f"{member} is not on this contact way")
        else:
            userid = candidates[holder.picks % len(candidates)]
            holder.picks += 1
        profile: dict[str, Any] = {"name": name, "type": customer_type, "gender": gender, "unionid": unionid}
        customer = self._customer(external_userid, **profile)
        key = (userid, customer.external_userid)
        old = self._relations.get(key)
        if old is not None and old.status in (PENDING, HALF, ACTIVE):
            # Already friends, or already waiting for the member: WeCom raises nothing new.
            return AddResult(customer.external_userid, userid, old.status, (), old.state, None)
        if old is not None and not self.config.readd_keeps_state:
            state = None
        if self.config.half_add_when == "verify_required":
            # A verification-required add is "half" until the member accepts; skip-verify adds complete.
            status = ACTIVE if skip_verify else HALF
        else:
            # The doc's wording: a skip-verify add is "half"; a verification request raises nothing yet.
            status = HALF if skip_verify else PENDING
        rel = Relation(
            userid=userid,
            external_userid=customer.external_userid,
            status=status,
            createtime=self._ts(),
            state=state,
            add_way=add_way,
            oper_userid=customer.external_userid,
            source=source,
            tags=list(old.tags) if old is not None and old.status == ONE_WAY else [],
            chatted=old is not None and (old.chatted or old.welcomed),
        )
        self._relations[key] = rel
        if way is not None and way.is_temp:
            way.used = True
        if link is not None:
            if not skip_verify:
                self._emit(
                    customer_acquisition_event(
                        "friend_request",
                        corp_id=self.config.corp_id,
                        link_id=link.link_id,
                        state=state or None,
                        create_time=self._ts(),
                    )
                )
            before = self._acq_balance
            self._acq_balance -= 1
            self._acquisition_balance_events(before)
        change_types: tuple[str, ...] = ()
        code: str | None = None
        if status == ACTIVE:
            code = self._issue_welcome_code(rel)
            self._emit_contact("add_external_contact", rel, state=state, welcome_code=code)
            change_types = ("add_external_contact",)
        elif status == HALF:
            code = self._issue_welcome_code(rel)
            self._emit_contact("add_half_external_contact", rel, state=state, welcome_code=code)
            change_types = ("add_half_external_contact",)
        return AddResult(customer.external_userid, userid, status, change_types, state, code)

    def _issue_welcome_code(self, rel: Relation) -> str | None:
        customer = self._customers[rel.external_userid]
        if rel.userid.lower() in self._admin_welcome or rel.chatted or rel.welcomed or customer.type == 2:
            return None
        code = secrets.token_urlsafe(32)
        self._welcome_codes[code] = _WelcomeCode(
            code, rel.userid, rel.external_userid, self.now() + self.config.welcome_code_ttl_s
        )
        return code

    def _acquisition_balance_events(self, before: int) -> None:
        after, low = self._acq_balance, self.config.acquisition_low_balance
        if after <= 0 < before:
            change_type = "balance_exhausted"
        elif after <= low < before:
            change_type = "balance_low"
        else:
            return
        self._emit(
            customer_acquisition_event(change_type, corp_id=self.config.corp_id, create_time=self._ts())
        )

    # ==== 「联系我」 endpoints ====================================================================

    def _check_members(self, users: Sequence[str], parties: Sequence[Any]) -> tuple[list[str], list[int]]:
        members: list[str] = []
        for userid in users:
            member = self._member(userid)
            if member is None:
                raise ApiError(40003, f"userid {userid!r} is not a member")
            if self._inactive(member):
                raise ApiError(41054, f"member {member!r} has not activated WeCom")
            members.append(member)
        party_ids: list[int] = []
        for party in parties:
            if isinstance(party, bool) or not isinstance(party, int):
                raise ApiError(40058, "party ids must be integers")
            if party not in self.config.departments:
                raise ApiError(60123, f"department {party} does not exist")
            party_ids.append(party)
        return list(dict.fromkeys(members)), list(dict.fromkeys(party_ids))

    def _check_way(self, way: ContactWay) -> None:
        way.users, way.parties = self._check_members(way.users, way.parties)
        if way.type == 1 and (len(way.users) != 1 or way.parties):
            raise ApiError(40058, "a single-member contact way (type=1) needs exactly one user and no party")
        if way.type == 2 and not (way.users or way.parties):
            raise ApiError(40058, "a multi-member contact way (type=2) needs user or party")
        if len(self._expand(way.users, way.parties)) > self.config.contact_way_member_limit:
            raise ApiError(41041, f"more than {self.config.contact_way_member_limit} members")
        if way.is_temp:
            if way.type != 1:
                raise ApiError(40058, "a temporary contact way supports a single member only")
            for key, value in (("expires_in", way.expires_in), ("chat_expires_in", way.chat_expires_in)):
                if value is not None and not 0 < value <= TEMP_MAX_S:
                    raise ApiError(40058, f"{key} must be between 1 s and 14 days")

    def _way_options(self, data: JSON, way: ContactWay) -> None:
        # The fields add_contact_way and update_contact_way share; absent fields keep their value.
        if "style" in data:
            style = data["style"]
            if isinstance(style, bool) or not isinstance(style, int) or style < 1:
                raise ApiError(41042)
            way.style = style
        if "remark" in data:
            way.remark = opt_str(data, "remark", max_chars=REMARK_MAX_CHARS)
        if "state" in data:
            way.state = opt_str(data, "state", max_chars=STATE_MAX_CHARS)
        if "skip_verify" in data:
            way.skip_verify = opt_bool(data, "skip_verify", True)
        if "user" in data:
            way.users = str_list(data, "user")
        if "party" in data:
            way.parties = opt_list(data, "party")
        if "expires_in" in data:
            way.expires_in = opt_int(data, "expires_in")
        if "chat_expires_in" in data:
            way.chat_expires_in = opt_int(data, "chat_expires_in")
        if "unionid" in data:
            way.unionid = opt_str(data, "unionid")
        if "conclusions" in data:
            way.conclusions = self._check_conclusions(data["conclusions"])

    @staticmethod
    def _check_conclusions(value: Any) -> JSON | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ApiError(40058, "conclusions must be an object")
        limits = {
            "text": {"content": 4000},
            "link": {"title": 128, "desc": 512},
            "miniprogram": {"title": 64},
        }
        for kind, fields in limits.items():
            part = value.get(kind)
            if part is None:
                continue
            if not isinstance(part, dict):
                raise ApiError(40058, f"conclusions.{kind} must be an object")
            for key, max_bytes in fields.items():
                opt_str(part, key, max_bytes=max_bytes)
        return dict(value)

    def _way_of(self, data: JSON) -> ContactWay:
        config_id = data.get("config_id")
        if config_id in (None, ""):
            raise ApiError(41043)
        way = self._contact_ways.get(config_id) if isinstance(config_id, str) else None
        if way is None or way.deleted:
            raise ApiError(41044)
        return way

    def _add_contact_way(self, call: ApiCall) -> JSON:
        app = self._require_app(call, self.config.contact_apps)
        data = call.json()
        if data.get("type") is None:
            raise ApiError(41037)
        if data.get("scene") is None:
            raise ApiError(41038)
        way_type, scene = data["type"], data["scene"]
        if isinstance(way_type, bool) or way_type not in (1, 2):
            raise ApiError(41039)
        if isinstance(scene, bool) or scene not in (1, 2):
            raise ApiError(41040)
        is_temp = opt_bool(data, "is_temp", False)
        way = ContactWay(
            config_id=secrets.token_hex(16),
            type=way_type,
            scene=scene,
            style=None,
            remark="",
            skip_verify=True,
            state="",
            users=[],
            parties=[],
            is_temp=is_temp,
            expires_in=None,
            chat_expires_in=None,
            unionid="",
            conclusions=None,
            qr_code=f"http://p.qpic.cn/wwhead/{secrets.token_hex(24)}/0" if scene == 2 else None,
            created_at=self._ts(),
            expires_at=None,
            app=app,
        )
        self._way_options(data, way)
        self._check_way(way)
        now = self.now()
        if is_temp:
            way.expires_in = way.expires_in or TEMP_DEFAULT_EXPIRES_S
            way.chat_expires_in = way.chat_expires_in or TEMP_DEFAULT_CHAT_EXPIRES_S
            way.expires_at = now + way.expires_in
            self._temp_created = [t for t in self._temp_created if now - t < 86400]
            if len(self._temp_created) >= self.config.temp_contact_way_per_day:
                raise ApiError(41045, "temporary contact ways are limited per day")
            self._temp_created.append(now)
        else:
            way.unionid, way.conclusions = "", None
            permanent = sum(1 for w in self._contact_ways.values() if not w.is_temp and not w.deleted)
            if permanent >= self.config.contact_way_limit:
                raise ApiError(41045)
        self._contact_ways[way.config_id] = way
        result: JSON = {"config_id": way.config_id}
        if way.qr_code is not None:
            self._qr_codes[way.qr_code] = way.config_id
            result["qr_code"] = way.qr_code
        return result

    def _get_contact_way(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        way = self._way_of(call.json())
        body: JSON = {
            "config_id": way.config_id,
            "type": way.type,
            "scene": way.scene,
            "remark": way.remark,
            "skip_verify": way.skip_verify,
            "state": way.state,
            "user": list(way.users),
            "party": list(way.parties),
            "is_temp": way.is_temp,
        }
        if way.style is not None:
            body["style"] = way.style
        if way.qr_code is not None:
            body["qr_code"] = way.qr_code
        if way.is_temp:
            body.update(expires_in=way.expires_in, chat_expires_in=way.chat_expires_in, unionid=way.unionid)
            if way.conclusions is not None:
                body["conclusions"] = way.conclusions
        return {"contact_way": body}

    def _update_contact_way(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        way = self._way_of(data)
        if way.is_temp and way.expires_at is not None and self.now() >= way.expires_at:
            raise ApiError(41044, "an expired temporary contact way cannot be edited")
        candidate = replace(way, users=list(way.users), parties=list(way.parties))
        self._way_options(data, candidate)
        self._check_way(candidate)
        if candidate.is_temp and candidate.expires_in != way.expires_in and candidate.expires_in:
            candidate.expires_at = self.now() + candidate.expires_in
        self._contact_ways[way.config_id] = candidate
        return {}

    def _del_contact_way(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        self._way_of(call.json()).deleted = True
        return {}

    def _list_contact_way(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        limit = opt_int(data, "limit", 100) or 100
        if not 0 < limit <= LIST_MAX_LIMIT:
            raise ApiError(40058, f"limit must be between 1 and {LIST_MAX_LIMIT}")
        cursor = opt_str(data, "cursor")
        if cursor:
            start, end, offset = self._read_cursor("contact_way", cursor)
        else:
            now = self._ts()
            start = opt_int(data, "start_time", now - LIST_DEFAULT_WINDOW_S)
            end = opt_int(data, "end_time", now)
            offset = 0
            if start is None or end is None or start > end:
                raise ApiError(40058, "start_time must not be after end_time")
        ways = [
            w
            for w in self._contact_ways.values()
            if not w.is_temp and not w.deleted and start <= w.created_at <= end
        ]
        page = ways[offset : offset + limit]
        more = offset + limit < len(ways)
        next_cursor = self._new_cursor("contact_way", (start, end, offset + limit)) if more else ""
        return {"contact_way": [{"config_id": w.config_id} for w in page], "next_cursor": next_cursor}

    # ==== acquisition links ========================================================================

    def _link_of(self, data: JSON) -> AcquisitionLink:
        link_id = opt_str(data, "link_id")
        link = self._links.get(link_id)
        if not link_id or link is None or link.deleted:
            raise ApiError(40058, "link_id is missing or invalid")
        return link

    def _create_link(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        link_name = opt_str(data, "link_name", max_chars=LINK_NAME_MAX_CHARS)
        if not link_name:
            raise ApiError(40058, "link_name is required")
        scope = data.get("range")
        if not isinstance(scope, dict):
            raise ApiError(40058, "range is required")
        users, parties = self._check_members(str_list(scope, "user_list"), opt_list(scope, "department_list"))
        if not (users or parties):
            raise ApiError(40058, "range.user_list and range.department_list cannot both be empty")
        if len(self._expand(users, parties)) > self.config.acquisition_range_limit:
            raise ApiError(40058, f"a link covers at most {self.config.acquisition_range_limit} members")
        link_id = "cawcde" + secrets.token_hex(8)
        link = AcquisitionLink(
            link_id=link_id,
            link_name=link_name,
            url=f"https://work.weixin.qq.com/ca/{link_id}",
            create_time=self._ts(),
            users=users,
            parties=parties,
            skip_verify=opt_bool(data, "skip_verify", True),
        )
        self._links[link_id] = link
        return {
            "link": {
                "link_id": link.link_id,
                "link_name": link.link_name,
                "url": link.url,
                "create_time": link.create_time,
            }
        }

    def _get_link(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        link = self._link_of(call.json())
        return {
            "link": {
                "link_name": link.link_name,
                "url": link.url,
                "create_time": link.create_time,
                "skip_verify": link.skip_verify,
            },
            "range": {"user_list": list(link.users), "department_list": list(link.parties)},
        }

    def _delete_link(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        self._link_of(call.json()).deleted = True
        return {}

    def _acquisition_quota(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        expires = self._ts() + 365 * 86400
        return {
            "total": self.config.acquisition_quota,
            "balance": self._acq_balance,
            "quota_list": [{"expire_date": expires, "balance": self._acq_balance}],
        }

    # ==== welcome ====================================================================================

    def _send_welcome_msg(self, call: ApiCall) -> JSON:
        app = self._require_app(call, self.config.contact_apps)
        data = call.json()
        code = data.get("welcome_code")
        if code in (None, ""):
            raise ApiError(41049)
        record = self._welcome_codes.get(code) if isinstance(code, str) else None
        if record is None or self.now() >= record.expires_at:
            raise ApiError(41050)
        if record.used:
            raise ApiError(41051, "welcome_code was already used (first caller wins)")
        rel = self._relations.get((record.userid, record.external_userid))
        if rel is None or rel.status in (GONE, PENDING):
            raise ApiError(41050, "the relation behind this welcome_code no longer exists")
        if rel.chatted or rel.welcomed:
            raise ApiError(41051)
        text, attachments = self._check_welcome(data)
        record.used = True
        rel.welcomed = True
        self._welcomes.append(
            Welcome(rel.external_userid, rel.userid, text, tuple(attachments), self.wall_time(), code, app)
        )
        return {}

    @staticmethod
    def _check_welcome(data: JSON) -> tuple[str | None, list[JSON]]:
        text: str | None = None
        body = data.get("text")
        if body is not None:
            if not isinstance(body, dict):
                raise ApiError(40058, "text must be an object")
            text = opt_str(body, "content") or None
            if text is not None and utf8_len(text) > WELCOME_TEXT_MAX_BYTES:
                raise ApiError(45002, f"text.content exceeds {WELCOME_TEXT_MAX_BYTES} bytes")
        attachments = opt_list(data, "attachments")
        if len(attachments) > WELCOME_MAX_ATTACHMENTS:
            raise ApiError(41064)
        for item in attachments:
            kind = item.get("msgtype") if isinstance(item, dict) else None
            if kind not in _ATTACHMENT_TYPES:
                raise ApiError(41065)
            part = item.get(kind)
            if not isinstance(part, dict):
                raise ApiError(40058, f"attachment {kind} needs its {kind} object")
            if kind == "image" and not (part.get("media_id") or part.get("pic_url")):
                raise ApiError(41006, "image needs media_id or pic_url")
            if kind in ("video", "file") and not part.get("media_id"):
                raise ApiError(41006)
            if kind == "link":
                if not part.get("title"):
                    raise ApiError(41016)
                if not part.get("url"):
                    raise ApiError(41010)
                opt_str(part, "title", max_bytes=128)
                opt_str(part, "desc", max_bytes=512)
            if kind == "miniprogram":
                opt_str(part, "title", max_bytes=64)
                for key in ("title", "pic_media_id", "appid", "page"):
                    if not part.get(key):
                        raise ApiError(40058, f"miniprogram.{key} is required")
        if text is None and not attachments:
            raise ApiError(40058, "text and attachments cannot both be empty")
        return text, [dict(a) for a in attachments]

    # ==== corp tags ==================================================================================

    def _active_tag_count(self) -> int:
        return sum(1 for t in self._tags.values() if not t.deleted)

    def _tags_of(self, group_id: str, include_deleted: bool = False) -> list[_Tag]:
        return _sorted(
            t for t in self._tags.values() if t.group_id == group_id and (include_deleted or not t.deleted)
        )

    def _group_by_name(self, name: str) -> _TagGroup | None:
        return next((g for g in self._tag_groups.values() if g.name == name and not g.deleted), None)

    def _new_group(self, name: str, order: int, app: str | None) -> _TagGroup:
        group = _TagGroup(new_id("et"), name, self._ts(), order, next(self._tag_seq), app)
        self._tag_groups[group.group_id] = group
        return group

    def _new_tag(self, group: _TagGroup, name: str, order: int, app: str | None) -> _Tag:
        tag = _Tag(new_id("et"), group.group_id, name, self._ts(), order, next(self._tag_seq), app)
        self._tags[tag.tag_id] = tag
        return tag

    def _tag_entity(self, entity_id: str) -> tuple[_Tag | _TagGroup, str]:
        tag = self._tags.get(entity_id)
        if tag is not None and not tag.deleted:
            return tag, "tag"
        group = self._tag_groups.get(entity_id)
        if group is not None and not group.deleted:
            return group, "tag_group"
        raise SimulationError(f"no corp tag or tag group {entity_id!r}")

    def _delete_group(self, group: _TagGroup) -> None:
        group.deleted = True
        for tag in self._tags_of(group.group_id):
            tag.deleted = True
        self._forget_deleted_tags()

    def _delete_tag(self, tag: _Tag) -> _TagGroup | None:
        # Deleting the last tag of a group deletes the group; returns the group when that happens.
        tag.deleted = True
        self._forget_deleted_tags()
        group = self._tag_groups[tag.group_id]
        if not group.deleted and not self._tags_of(group.group_id):
            group.deleted = True
            return group
        return None

    def _forget_deleted_tags(self) -> None:
        for rel in self._relations.values():
            rel.tags = [t for t in rel.tags if not self._tags[t].deleted]

    @staticmethod
    def _apply_tags(rel: Relation, add: Iterable[str], remove: Iterable[str]) -> None:
        removed = set(remove)
        tags = [t for t in rel.tags if t not in removed]
        tags += [t for t in dict.fromkeys(add) if t not in tags]
        rel.tags = tags

    @staticmethod
    def _tag_json(tag: _Tag, with_deleted: bool) -> JSON:
        body: JSON = {"id": tag.tag_id, "name": tag.name, "create_time": tag.create_time, "order": tag.order}
        if with_deleted:
            body["deleted"] = tag.deleted
        return body

    def _group_json(self, group: _TagGroup, tags: Sequence[_Tag], with_deleted: bool) -> JSON:
        body: JSON = {
            "group_id": group.group_id,
            "group_name": group.name,
            "create_time": group.create_time,
            "order": group.order,
        }
        if with_deleted:
            body["deleted"] = group.deleted
        body["tag"] = [self._tag_json(t, with_deleted) for t in tags]
        return body

    def _check_tag_owner(self, app: str, owner: str | None) -> None:
        if owner != app and app not in self.config.tag_admin_apps:
            raise ApiError(81011, "an app may only edit or delete the corp tags it created")

    def _get_corp_tag_list(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        tag_ids, group_ids = str_list(data, "tag_id"), str_list(data, "group_id")
        groups: list[JSON] = []
        if group_ids:
            # Unknown ids are skipped; `deleted` is returned only when querying by id.
            for group in _sorted(g for gid in group_ids if (g := self._tag_groups.get(gid)) is not None):
                groups.append(self._group_json(group, self._tags_of(group.group_id, group.deleted), True))
        elif tag_ids:
            wanted = [t for tid in tag_ids if (t := self._tags.get(tid)) is not None]
            for group in _sorted(
                {self._tag_groups[t.group_id].group_id: self._tag_groups[t.group_id] for t in wanted}.values()
            ):
                groups.append(
                    self._group_json(group, _sorted(t for t in wanted if t.group_id == group.group_id), True)
                )
        else:
            for group in _sorted(g for g in self._tag_groups.values() if not g.deleted):
                groups.append(self._group_json(group, self._tags_of(group.group_id), False))
        return {"tag_group": groups}

    def _add_corp_tag(self, call: ApiCall) -> JSON:
        app = self._require_app(call, self.config.contact_apps)
        data = call.json()
        raw_tags = opt_list(data, "tag")
        if not raw_tags:
            raise ApiError(40058, "tag must list at least one tag (empty groups are not allowed)")
        wanted: dict[str, int] = {}
        for item in raw_tags:
            if not isinstance(item, dict):
                raise ApiError(40058, "every tag must be an object")
            tag_name = opt_str(item, "name", max_chars=TAG_NAME_MAX_CHARS)
            if not tag_name:
                raise ApiError(40058, "tag.name is required")
            # Duplicate names in one request collapse into one tag.
            wanted.setdefault(tag_name, _order(item.get("order"), "tag.order"))
        group_id = opt_str(data, "group_id")
        group: _TagGroup | None
        if group_id:
            group = self._tag_groups.get(group_id)
            if group is None or group.deleted:
                raise ApiError(40068, f"tag group {group_id!r} does not exist")
        else:
            group_name = opt_str(data, "group_name", max_chars=TAG_NAME_MAX_CHARS)
            if not group_name:
                raise ApiError(40058, "group_id or group_name is required")
            group = self._group_by_name(group_name)
        existing = {t.name: t for t in self._tags_of(group.group_id)} if group else {}
        new_names = [n for n in wanted if n not in existing]
        if self._active_tag_count() + len(new_names) > self.config.corp_tag_limit:
            raise ApiError(40126)
        if group is None:
            group = self._new_group(opt_str(data, "group_name"), _order(data.get("order")), app)
        tags = [existing.get(n) or self._new_tag(group, n, order, app) for n, order in wanted.items()]
        return {"tag_group": self._group_json(group, tags, False)}

    def _edit_corp_tag(self, call: ApiCall) -> JSON:
        app = self._require_app(call, self.config.contact_apps)
        data = call.json()
        entity_id = opt_str(data, "id")
        name = opt_str(data, "name", max_chars=TAG_NAME_MAX_CHARS) if "name" in data else None
        order = _order(data.get("order")) if "order" in data else None
        if not entity_id:
            raise ApiError(40068, "id is required")
        if not name and order is None:
            raise ApiError(40058, "give name or order")
        tag = self._tags.get(entity_id)
        group = self._tag_groups.get(entity_id)
        entity: _Tag | _TagGroup
        if tag is not None and not tag.deleted:
            entity = tag
            taken = {t.name for t in self._tags_of(tag.group_id) if t.tag_id != tag.tag_id}
        elif group is not None and not group.deleted:
            entity = group
            taken = {g.name for g in self._tag_groups.values() if not g.deleted and g is not group}
        else:
            raise ApiError(40068)
        self._check_tag_owner(app, entity.created_by)
        if name:
            if name in taken:
                raise ApiError(40071, f"the name {name!r} is already used")
            entity.name = name
        if order is not None:
            entity.order = order
        return {}

    def _del_corp_tag(self, call: ApiCall) -> JSON:
        app = self._require_app(call, self.config.contact_apps)
        data = call.json()
        tag_ids, group_ids = str_list(data, "tag_id"), str_list(data, "group_id")
        if not (tag_ids or group_ids):
            raise ApiError(40068, "tag_id and group_id cannot both be empty")
        tags = [self._tags.get(t) for t in tag_ids]
        groups = [self._tag_groups.get(g) for g in group_ids]
        for item in [*tags, *groups]:
            if item is None or item.deleted:
                raise ApiError(40068)
            self._check_tag_owner(app, item.created_by)
        for group in groups:
            if group is not None:
                self._delete_group(group)
        for tag in tags:
            if tag is not None and not tag.deleted:
                self._delete_tag(tag)
        return {}

    def _visible_relation(self, data: JSON) -> Relation:
        userid = opt_str(data, "userid")
        external_userid = opt_str(data, "external_userid")
        if not userid:
            raise ApiError(41009)
        member = self._member(userid)
        if member is None:
            raise ApiError(40003, f"userid {userid!r} is not a member")
        if not external_userid:
            raise ApiError(41035)
        if external_userid not in self._customers:
            raise ApiError(40096)
        rel = self._relations.get((member, external_userid))
        if rel is None or rel.status not in _VISIBLE:
            raise ApiError(84061)
        return rel

    def _mark_tag(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        rel = self._visible_relation(data)
        add, remove = str_list(data, "add_tag"), str_list(data, "remove_tag")
        if not (add or remove):
            raise ApiError(40058, "add_tag and remove_tag cannot both be empty")
        for tag_id in [*add, *remove]:
            tag = self._tags.get(tag_id)
            if tag is None or tag.deleted:
                raise ApiError(40068, f"tag {tag_id!r} does not exist")
        self._apply_tags(rel, add, remove)
        return {}

    # ==== customers ==================================================================================

    def _follow_user_json(self, rel: Relation) -> JSON:
        tags = []
        for tag_id in rel.tags:
            tag = self._tags[tag_id]
            group = self._tag_groups[tag.group_id]
            tags.append({"group_name": group.name, "tag_name": tag.name, "tag_id": tag.tag_id, "type": 1})
        body: JSON = {
            "userid": rel.userid,
            "remark": rel.remark,
            "description": rel.description,
            "createtime": rel.createtime,
            "tags": tags,
            "remark_mobiles": [],
            "oper_userid": rel.oper_userid,
            "add_way": rel.add_way,
        }
        if rel.state:
            body["state"] = rel.state
        return body

    def _get_external_contact(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        external_userid = call.query.get("external_userid", "")
        if not external_userid:
            raise ApiError(41035)
        customer = self._customers.get(external_userid)
        if customer is None:
            raise ApiError(40096)
        rels = [
            r
            for r in self._relations.values()
            if r.external_userid == external_userid and r.status in _VISIBLE
        ]
        if not rels:
            raise ApiError(84061)
        cursor = call.query.get("cursor", "")
        offset = self._read_cursor("follow_user", cursor) if cursor else 0
        page = rels[offset : offset + FOLLOW_USER_PAGE]
        result: JSON = {
            "external_contact": self._customer_json(customer),
            "follow_user": [self._follow_user_json(r) for r in page],
        }
        if offset + FOLLOW_USER_PAGE < len(rels):
            result["next_cursor"] = self._new_cursor("follow_user", offset + FOLLOW_USER_PAGE)
        return result

    @staticmethod
    def _customer_json(customer: Customer) -> JSON:
        body: JSON = {
            "external_userid": customer.external_userid,
            "name": customer.name,
            "avatar": customer.avatar,
            "type": customer.type,
            "gender": customer.gender,
        }
        if customer.unionid:
            body["unionid"] = customer.unionid
        if customer.type == 2 and customer.corp_name:
            body["corp_name"] = customer.corp_name
        return body

    def _list_external_contacts(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        userid = call.query.get("userid", "")
        if not userid:
            raise ApiError(41009)
        member = self._member(userid)
        if member is None:
            raise ApiError(40003)
        ids = [
            r.external_userid for r in self._relations.values() if r.userid == member and r.status in _VISIBLE
        ]
        return {"external_userid": ids}

    def _get_follow_user_list(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        return {"follow_user": [u for u in self.config.users if not self._inactive(u)]}
