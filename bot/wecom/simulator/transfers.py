"""在职继承 on the simulated corp: one member hands customers over to another (WECOM.md §9.2).

`transfer_customer` only starts a transfer. The takeover happens by itself 24 h later unless the
customer refuses (`customer_refuses_transfer`) or the takeover member is at their customer limit;
both failures raise the `transfer_fail` callback. A customer may be transferred at most twice in 90
natural days (40128). The bot learns outcomes from `transfer_result` (1 taken over, 2 waiting,
3 refused, 4 limit) or the callbacks; time moves with the simulator's clock (`advance`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from bot.wecom.simulator.api import JSON, ApiCall, ApiError, SimulationError, opt_str, str_list
from bot.wecom.simulator.callback_xml import external_contact_event
from bot.wecom.simulator.contacts import ACTIVE, GONE, HALF, ONE_WAY, Relation
from bot.wecom.simulator.groupmsg import CHINA_TZ
from bot.wecom.simulator.parts import CorpParts

MAX_CUSTOMERS_PER_CALL = 100
SUCCESS_MSG_MAX_CHARS = 200
TAKEOVER_DELAY_S = 86400.0
LIMIT_WINDOW_DAYS = 90
TRANSFERS_PER_WINDOW = 2
RESULT_PAGE = 1000
DEFAULT_SUCCESS_MSG = "您好，您的服务已升级，后续将由我的同事接替我的工作，继续为您服务。"
# follow_user.add_way 202: assigned by an admin (WECOM.md §9.1), how a taken-over pair shows.
ADD_WAY_ADMIN_ASSIGN = 202
# Source of the handover member's del_external_contact after a takeover (WECOM.md §2.1).
DELETE_BY_TRANSFER = "DELETE_BY_TRANSFER"

# transfer_result status (WECOM.md §9.2).
TAKEN_OVER, WAITING, REFUSED, LIMIT_EXCEEDED, NO_RECORD = 1, 2, 3, 4, 5


@dataclass
class Transfer:
    """One customer's transfer between two members, as WeCom tracks it (unix times)."""

    external_userid: str
    handover_userid: str
    takeover_userid: str
    success_msg: str
    started_at: float
    takeover_at: float
    status: int = WAITING
    settled_at: float | None = None


class TransfersMixin(CorpParts):
    """externalcontact/transfer_customer and transfer_result, plus the customer's refusal."""

    _relations: dict[tuple[str, str], Relation]

    def _init_transfers(self) -> None:
        self._transfers: list[Transfer] = []
        self._members_at_limit: set[str] = set()
        self.register("externalcontact/transfer_customer", self._transfer_customer)
        self.register("externalcontact/transfer_result", self._transfer_result)

    # ==== simulated client-side actions ===========================================================

    def customer_refuses_transfer(self, external_userid: str) -> Transfer:
        """The customer declines a waiting transfer: they stay with the handover member (transfer_fail)."""
        with self._lock:
            self._settle_transfers()
            transfer = self._waiting_transfer(external_userid)
            if transfer is None:
                raise SimulationError(f"{external_userid} has no transfer waiting for takeover")
            self._fail(transfer, REFUSED, "customer_refused", self.wall_time())
            result = replace(transfer)
        self._flush()
        return result

    def set_customer_limit_reached(self, userid: str, reached: bool = True) -> None:
        """Mark a member as holding the most customers WeCom allows: takeovers to them fail (status 4)."""
        with self._lock:
            member = self._member_or_fail(userid)
            if reached:
                self._members_at_limit.add(member)
            else:
                self._members_at_limit.discard(member)

    # ---- observations -------------------------------------------------------------------------

    @property
    def transfers(self) -> list[Transfer]:
        """Copies of every transfer started through the API, oldest first."""
        with self._lock:
            self._settle_transfers()
            return [replace(t) for t in self._transfers]

    # ==== time ====================================================================================

    def _settle_transfers(self) -> None:
        """Complete every waiting transfer whose 24 h have passed, in the order they fall due."""
        wall = self.wall_time()
        due = sorted(
            (t for t in self._transfers if t.status == WAITING and t.takeover_at <= wall),
            key=lambda t: t.takeover_at,
        )
        for transfer in due:
            if transfer.takeover_userid in self._members_at_limit:
                self._fail(transfer, LIMIT_EXCEEDED, "customer_limit_exceed", transfer.takeover_at)
            else:
                self._take_over(transfer)

    def _take_over(self, transfer: Transfer) -> None:
        at = int(transfer.takeover_at)
        transfer.status, transfer.settled_at = TAKEN_OVER, transfer.takeover_at
        ext = transfer.external_userid
        old = self._relations.get((transfer.handover_userid, ext))
        if old is not None and old.status in (ACTIVE, ONE_WAY, HALF):
            old.status = GONE
            old.tags.clear()
            self._emit_change("del_external_contact", old.userid, ext, at, source=DELETE_BY_TRANSFER)
        new = self._relations.get((transfer.takeover_userid, ext))
        if new is not None:
            # Already friends, or friends before: WeCom raises no add event (WECOM.md §2.1).
            new.status = ACTIVE
            return
        # The pair starts fresh: WECOM.md does not say whether remark and tags move with the customer.
        self._relations[(transfer.takeover_userid, ext)] = Relation(
            userid=transfer.takeover_userid,
            external_userid=ext,
            status=ACTIVE,
            createtime=at,
            state=None,
            add_way=ADD_WAY_ADMIN_ASSIGN,
            oper_userid=transfer.handover_userid,
            source=DELETE_BY_TRANSFER,
        )
        self._emit_change("add_external_contact", transfer.takeover_userid, ext, at)

    def _fail(self, transfer: Transfer, status: int, reason: str, at: float) -> None:
        transfer.status, transfer.settled_at = status, at
        # UserID is the member whose takeover failed (DOC-92130 via ZSM).
        self._emit_change(
            "transfer_fail", transfer.takeover_userid, transfer.external_userid, int(at), fail_reason=reason
        )

    def _emit_change(
        self,
        change_type: str,
        userid: str,
        external_userid: str,
        at: int,
        *,
        source: str | None = None,
        fail_reason: str | None = None,
    ) -> None:
        self._emit(
            external_contact_event(
                change_type,
                userid,
                external_userid,
                corp_id=self.config.corp_id,
                source=source,
                fail_reason=fail_reason,
                create_time=at,
            )
        )

    # ==== API =====================================================================================

    def _members_of(self, data: JSON) -> tuple[str, str]:
        handover, takeover = opt_str(data, "handover_userid"), opt_str(data, "takeover_userid")
        if not handover or not takeover:
            raise ApiError(41009, "handover_userid and takeover_userid are required")
        members = []
        for userid in (handover, takeover):
            member = self._member(userid)
            if member is None:
                raise ApiError(40003, f"userid {userid!r} is not a member")
            members.append(member)
        return members[0], members[1]

    def _transfer_customer(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        handover, takeover = self._members_of(data)
        if handover == takeover:
            raise ApiError(40130)
        if self._inactive(takeover):
            raise ApiError(41054, f"takeover member {takeover!r} has not activated WeCom")
        customers = str_list(data, "external_userid")
        if not customers:
            raise ApiError(40058, "external_userid needs at least one customer")
        if len(customers) > MAX_CUSTOMERS_PER_CALL:
            raise ApiError(40058, f"external_userid allows at most {MAX_CUSTOMERS_PER_CALL} customers")
        message = opt_str(data, "transfer_success_msg", max_chars=SUCCESS_MSG_MAX_CHARS)
        self._settle_transfers()
        wall = self.wall_time()
        results: list[JSON] = []
        for ext in customers:
            errcode = self._transfer_error(handover, ext, wall)
            if errcode == 0:
                text = message or DEFAULT_SUCCESS_MSG
                self._transfers.append(Transfer(ext, handover, takeover, text, wall, wall + TAKEOVER_DELAY_S))
            results.append({"external_userid": ext, "errcode": errcode})
        return {"customer": results}

    def _transfer_error(self, handover: str, external_userid: str, wall: float) -> int:
        """The per-customer errcode transfer_customer answers (0 = the transfer started)."""
        if external_userid not in self._customers:
            return 40096
        rel = self._relations.get((handover, external_userid))
        if rel is None or rel.status != ACTIVE:
            return 40131
        if self._waiting_transfer(external_userid) is not None:
            return 40129
        if self._recent_transfers(external_userid, wall) >= TRANSFERS_PER_WINDOW:
            return 40128
        return 0

    def _transfer_result(self, call: ApiCall) -> JSON:
        self._require_app(call, self.config.contact_apps)
        data = call.json()
        handover, takeover = self._members_of(data)
        cursor = opt_str(data, "cursor")
        offset = self._read_cursor("transfer_result", cursor) if cursor else 0
        self._settle_transfers()
        latest: dict[str, Transfer] = {}
        for transfer in self._transfers:
            if transfer.handover_userid == handover and transfer.takeover_userid == takeover:
                latest.pop(transfer.external_userid, None)
                latest[transfer.external_userid] = transfer
        rows = list(latest.values())
        page = rows[offset : offset + RESULT_PAGE]
        body: JSON = {"customer": [self._result_row(t) for t in page]}
        if offset + RESULT_PAGE < len(rows):
            body["next_cursor"] = self._new_cursor("transfer_result", offset + RESULT_PAGE)
        return body

    @staticmethod
    def _result_row(transfer: Transfer) -> JSON:
        row: JSON = {"external_userid": transfer.external_userid, "status": transfer.status}
        # takeover_time is the (future) automatic takeover, or when it happened.
        if transfer.status in (WAITING, TAKEN_OVER):
            row["takeover_time"] = int(transfer.takeover_at)
        return row

    # ---- helpers --------------------------------------------------------------------------------

    def _waiting_transfer(self, external_userid: str) -> Transfer | None:
        return next(
            (t for t in self._transfers if t.external_userid == external_userid and t.status == WAITING), None
        )

    def _recent_transfers(self, external_userid: str, wall: float) -> int:
        """Transfers of the customer started within the last 90 natural days (China time), today included."""
        today = datetime.fromtimestamp(wall, CHINA_TZ).date()
        return sum(
            1
            for t in self._transfers
            if t.external_userid == external_userid
            and (today - datetime.fromtimestamp(t.started_at, CHINA_TZ).date()).days < LIMIT_WINDOW_DAYS
        )
