"""Courses: creation checks (SAC number, time, link), 报名 in kf, registrations, attendance import, CLI."""

from __future__ import annotations

import io
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.accounts import create_user
from bot.campaigns.courses import (
    CourseError,
    create_course,
    import_attendance,
    register,
    upcoming_course,
)
from bot.cli import main
from bot.config import ComplianceSettings
from bot.kf.keywords import is_register
from bot.leads.timeline import timeline
from bot.services import Services
from bot.wecom.simulator import Simulator, SimulatorConfig
from models.audit import AuditEntry
from models.base import utcnow
from models.campaigns import Campaign, Course, CourseAttendance, CourseRegistration
from models.deliveries import Delivery
from models.kf import KfConversation
from models.leads import Lead
from models.users import User
from tests.conftest import TEST_AES_KEY, TEST_AGENT_ID, TEST_CORP_ID, TEST_TOKEN
from tests.scripts_fixtures import approved, ensure_people
from tests.test_console_auth import make_app
from tests.test_console_campaigns import _course_fields, _later, _post, _text
from tests.test_console_hookcodes import field_block
from tests.test_console_scripts import signed_in
from tests.test_kf import CUSTOMER, DEFAULTS, SCRIPTS, Bot

NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
START = NOW + timedelta(days=3)
LINK = "https://work.weixin.qq.com/live/abc"
COMPLIANCE = ComplianceSettings()


def people(session: Session) -> None:
    create_user(session, "olivia", "operator", "operator-password")
    create_user(session, "chen", "compliance", "compliance-password")


@pytest.fixture
def session(services: Services) -> Iterator[Session]:
    with services.db.sessions() as s:
        people(s)
        for i in range(1, 4):
            s.add(Lead(external_user_id=f"wm{i}", created_at=NOW, updated_at=NOW))
        s.commit()
        yield s


def course(session: Session, key: str = "etf-101", starts_at: datetime = START, **kw: Any) -> Course:
    args: dict[str, Any] = {
        "title": "ETF定投入门",
        "speaker_name": "张老师",
        "speaker_sac_no": "S0570516010001",
        "starts_at": starts_at,
        "link": LINK,
        "actor": "olivia",
        "compliance": COMPLIANCE,
        "now": NOW,
    }
    args.update(kw)
    return create_course(session, key, **args)


def lead(session: Session, userid: str) -> Lead:
    return session.scalars(select(Lead).where(Lead.external_user_id == userid)).one()


def state(session: Session) -> tuple[int, ...]:
    session.flush()
    return tuple(
        session.scalar(select(func.count()).select_from(model)) or 0
        for model in (Course, CourseRegistration, CourseAttendance, AuditEntry)
    )


def test_course_is_created_with_a_normalised_sac_number_and_audited(session: Session) -> None:
    row = course(session, speaker_sac_no=" ｓ0570516010001 ", link="https://live.work.weixin.qq.com/x?id=1")
    assert (row.speaker_sac_no, row.starts_at, row.created_by) == ("S0570516010001", START, "olivia")
    (entry,) = session.scalars(select(AuditEntry).where(AuditEntry.action.startswith("course.")))
    assert (entry.action, entry.target, entry.detail["sac"]) == (
        "course.create",
        "course:etf-101",
        row.speaker_sac_no,
    )


@pytest.mark.parametrize(
    ("kw", "message", "code"),
    [
        (
            {"speaker_sac_no": "S057051601000"},
            r"one capital letter and 13 digits \(pattern",
            "course.sac_format",
        ),
        ({"speaker_sac_no": "SS570516010001"}, "one capital letter and 13 digits", "course.sac_format"),
        ({"speaker_sac_no": "05705160100012"}, "one capital letter and 13 digits", "course.sac_format"),
        ({"speaker_sac_no": ""}, "SAC registration number", "course.sac_format"),
        ({"starts_at": datetime(2026, 12, 1, 20, 0)}, "give a time zone", "course.starts_zone"),
        ({"starts_at": NOW}, "has passed", "course.starts_passed"),
        ({"link": "ftp://work.weixin.qq.com/x"}, "an http\\(s\\) URL", "course.link_format"),
        ({"link": "work.weixin.qq.com/live"}, "an http\\(s\\) URL", "course.link_format"),
        (
            {"link": "https://work.weixin.qq.com.evil.cn/live"},
            "work.weixin.qq.com.evil.cn is not an allowed domain",
            "course.link_domain",
        ),
        (
            {"link": "https://evil.cn/?u=work.weixin.qq.com"},
            "evil.cn is not an allowed domain",
            "course.link_domain",
        ),
        (
            {"link": "https://evil.cn/", "compliance": ComplianceSettings(allowed_link_domains=())},
            r"\(none configured\)",
            "course.link_no_domains",
        ),
        ({"title": " "}, "title: 1-128", "course.title_length"),
        ({"speaker_name": ""}, "speaker: 1-64", "course.speaker_length"),
        ({"actor": "chen"}, "may not manage campaigns or courses", "author.role"),
        ({"actor": "nobody"}, "no active account", "author.unknown"),
    ],
)
def test_bad_course_is_refused_and_changes_nothing(
    session: Session, kw: dict[str, Any], message: str, code: str
) -> None:
    before = state(session)
    with pytest.raises(CourseError, match=message) as refused:
        course(session, **kw)
    assert refused.value.code == code  # the console words the refusal by its code
    assert state(session) == before and not session.new


def test_course_keys_are_unique_and_leave_room_for_campaign_suffixes(session: Session) -> None:
    course(session)
    with pytest.raises(CourseError, match="course 'etf-101' exists"):
        course(session)
    with pytest.raises(CourseError, match="key: 2-48 characters"):
        course(session, "k" * 49)


def test_upcoming_course_is_the_next_one_to_start(session: Session) -> None:
    assert upcoming_course(session, NOW) is None
    later = course(session, "later", START + timedelta(days=7))
    sooner = course(session, "sooner", START)
    assert upcoming_course(session, NOW) is sooner
    assert upcoming_course(session, START) is later  # a course that has started takes no 报名
    assert upcoming_course(session, START + timedelta(days=8)) is None


def test_registration_is_recorded_once_and_audited_once(session: Session) -> None:
    row = course(session)
    first = register(session, row, lead(session, "wm1"), "console", NOW, actor="olivia")
    again = register(session, row, lead(session, "wm1"), "kf", NOW + timedelta(hours=1))
    assert (first, again) == (True, False)
    (reg,) = session.scalars(select(CourseRegistration))
    assert (reg.channel, reg.registered_at) == ("console", NOW)
    regs = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "course.register")))
    assert [(a.actor, a.detail) for a in regs] == [("olivia", {"lead": "wm1", "channel": "console"})]
    with pytest.raises(CourseError, match="channel: one of"):
        register(session, row, lead(session, "wm2"), "sms", NOW)


CSV = (
    "\ufeffExternal_UserID,nickname,minutes\n"
    "wm1,王,45\n"
    "\n"
    "wm2,李,\n"
    "wmUNKNOWN,赵,30\n"
    ",空,10\n"
    "wm3,陈,abc\n"
    "wm1,王,50\n"
    "wm3,陈,-5\n"
)


def test_attendance_import_reports_bad_and_unknown_rows_and_is_idempotent(session: Session) -> None:
    row = course(session)
    after, later = START + timedelta(hours=2), START + timedelta(hours=5)
    report = import_attendance(session, row, CSV, "olivia", now=after)
    assert (report.created, report.updated, report.unchanged) == (2, 0, 0)
    assert report.unknown == [(5, "wmUNKNOWN")]
    assert [line for line, _ in report.bad] == [6, 7, 8, 9]
    assert "external_userid is empty" in report.bad[0][1] and "'abc'" in report.bad[1][1]
    assert "already appears on line 2" in report.bad[2][1]
    minutes = dict(
        session.execute(
            select(Lead.external_user_id, CourseAttendance.minutes).join(
                Lead, Lead.id == CourseAttendance.lead_id
            )
        ).all()
    )
    assert minutes == {"wm1": 45, "wm2": 0}
    again = import_attendance(
        session, row, "external_userid,minutes\nwm1,60\nwm2,0\nwm3,5\n", "olivia", now=later
    )
    assert (again.created, again.updated, again.unchanged, again.stored) == (1, 1, 1, 3)
    session.expire_all()
    seen = {
        lead_id: (minutes, at)
        for lead_id, minutes, at in session.execute(
            select(CourseAttendance.lead_id, CourseAttendance.minutes, CourseAttendance.imported_at)
        )
    }
    assert seen == {
        lead(session, "wm1").id: (60, later),
        lead(session, "wm2").id: (0, after),  # unchanged rows keep their import time
        lead(session, "wm3").id: (5, later),
    }
    imports = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "course.attendance_import")))
    assert [a.detail["created"] for a in imports] == [2, 1] and imports[0].detail["bad"] == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("userid,minutes\nwm1,3\n", "line 1: the header must name an external_userid column"),
        ("", "the file is empty"),
        ('external_userid\n"wm1\n', "not valid CSV"),
    ],
)
def test_unusable_attendance_file_changes_nothing(session: Session, text: str, message: str) -> None:
    row = course(session)
    before = state(session)
    with pytest.raises(CourseError, match=message):
        import_attendance(session, row, text, "olivia", now=START + timedelta(hours=2))
    assert state(session) == before


def test_attendance_is_not_imported_before_the_course_or_by_compliance(session: Session) -> None:
    row = course(session)
    before = state(session)
    with pytest.raises(CourseError, match="nothing to import yet"):
        import_attendance(session, row, "external_userid\nwm1\n", "olivia", now=NOW)
    with pytest.raises(CourseError, match="may not manage"):
        import_attendance(session, row, "external_userid\nwm1\n", "chen", now=START)
    assert state(session) == before


def test_timeline_shows_registrations_and_attendance(session: Session) -> None:
    row = course(session)
    register(session, row, lead(session, "wm1"), "kf", NOW)
    import_attendance(
        session, row, "external_userid,minutes\nwm1,42\n", "olivia", now=START + timedelta(hours=3)
    )
    items = [(i.kind, i.summary) for i in timeline(session, "wm1") if i.kind == "course"]
    assert items == [
        ("course", "registered for course etf-101 《ETF定投入门》 via kf"),
        ("course", "attended course etf-101 《ETF定投入门》 for 42 min"),
    ]
    assert [i.kind for i in timeline(session, "wm2")] == []


@pytest.mark.parametrize(
    "text", ["报名", "我要报名", "我要 报名", "  预约直播！", "报名直播课。", "【报名】"]
)
def test_registration_words_are_whole_message_commands(text: str) -> None:
    assert is_register(text)


@pytest.mark.parametrize("text", ["怎么报名开户", "报名了吗还有名额吗", "预约开户", "订阅", ""])
def test_other_messages_are_not_registrations(text: str) -> None:
    assert not is_register(text)


# 报名 through the real kf handler, against the simulator.


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimulatorConfig(
        corp_id=TEST_CORP_ID, token=TEST_TOKEN, encoding_aes_key=TEST_AES_KEY, agent_id=TEST_AGENT_ID,
        users=["zhangsan"], kf_sync_empty_pages=1,
    )  # fmt: skip
    with Simulator(config) as s:
        yield s


@pytest.fixture
def bot(services: Services, sim: Simulator) -> Bot:
    services.settings = services.settings.replace(
        wecom={"api_base_url": sim.base_url, "kf_secret": sim.config.secrets["kf"]}
    )
    with services.db.transaction() as s:
        ensure_people(s)
        for key in [*SCRIPTS, "course_registered", "course_none"]:
            script = tomllib.loads((DEFAULTS / f"{key}.toml").read_text(encoding="utf-8"))
            approved(s, key, script["kind"], script["body"].strip())
    return Bot(services, sim)


def future_course(bot: Bot, key: str = "live-1", days: int = 2) -> None:
    with bot.services.db.transaction() as s:
        create_course(
            s, key, "ETF定投入门", "张老师", "S0570516010001", utcnow() + timedelta(days=days), LINK,
            "olivia", COMPLIANCE,
        )  # fmt: skip


def kf_state(bot: Bot) -> tuple[list[tuple[str, str]], list[str]]:
    with bot.services.db.transaction() as s:
        regs = s.execute(
            select(Course.key, CourseRegistration.channel)
            .join(Course, Course.id == CourseRegistration.course_id)
            .order_by(CourseRegistration.id)
        )
        keys = s.scalars(select(Delivery.script_key).order_by(Delivery.id))
        return list(regs), list(keys)


def test_baoming_in_kf_registers_for_the_next_course_once_and_confirms(bot: Bot) -> None:
    future_course(bot, "later", days=9)
    future_course(bot, "live-1", days=2)
    bot.say("报名")
    bot.pump()
    bot.say("我要 报名！")
    bot.pump()
    regs, keys = kf_state(bot)
    assert regs == [("live-1", "kf")]
    assert keys == ["course_registered", "course_registered"]
    texts = [text for _, text in bot.sent_texts()]
    assert [via for via, _ in bot.sent_texts()] == ["send_msg", "send_msg"]
    assert "已为您报名示例证券" in texts[0] and "不构成投资建议" in texts[0]
    with bot.services.db.transaction() as s:
        summaries = [i.summary for i in timeline(s, CUSTOMER) if i.kind == "course"]
    assert summaries == ["registered for course live-1 《ETF定投入门》 via kf"]


def test_baoming_without_a_course_ahead_says_so_and_registers_nothing(bot: Bot) -> None:
    bot.say("预约直播")
    bot.pump()
    regs, keys = kf_state(bot)
    assert regs == [] and keys == ["course_none"]
    assert "暂无可报名" in bot.sent_texts()[0][1]


def test_baoming_while_a_person_serves_the_session_registers_but_the_bot_stays_quiet(bot: Bot) -> None:
    future_course(bot)
    bot.say("你好")
    bot.pump()
    with bot.services.db.transaction() as s:
        (conv,) = s.scalars(select(KfConversation))
        conv.servicer_userid = "zhangsan"
    bot.say("报名")
    bot.pump()
    regs, keys = kf_state(bot)
    assert regs == [("live-1", "kf")] and keys == ["fallback"]
    with bot.services.db.transaction() as s:
        (refused,) = s.scalars(select(AuditEntry).where(AuditEntry.action == "kf.reply_refused"))
        assert str(refused.detail["reason"]).startswith("human_servicer")
        assert refused.detail["script_key"] == "course_registered"


# The command line.


def invoke(runner: CliRunner, env: dict[str, str], *args: str, code: int = 0) -> str:
    result = runner.invoke(main, list(args), env=env)
    assert result.exit_code == code, result.output
    return result.output


def test_courses_from_the_command_line(
    runner: CliRunner, env: dict[str, str], services: Services, tmp_path: Path
) -> None:
    from scripts_library import catalogue as cat

    with services.db.transaction() as s:
        people(s)
        cat.create_script(s, "course_invite", "course_invite", "olivia")
        cat.create_script(s, "course_reminder", "course_reminder", "olivia")
        for i in (1, 2):
            s.add(Lead(external_user_id=f"wm{i}", created_at=NOW, updated_at=NOW))
    starts = (utcnow() + timedelta(days=5)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M+00:00")
    out = invoke(
        runner, env, "courses", "create", "live-1", "--title", "ETF定投入门", "--speaker", "张老师",
        "--sac", "S0570516010001", "--starts-at", starts, "--link", LINK, "--with-campaigns",
        "--as", "olivia",
    )  # fmt: skip
    assert "course live-1 created" in out
    assert "campaign live-1-invite created: 1440 min before course live-1" in out
    assert "campaign live-1-reminder created: 30 min before course live-1" in out
    out = invoke(
        runner, env, "courses", "create", "live-2", "--title", "x", "--speaker", "y", "--sac", "S12",
        "--starts-at", starts, "--link", LINK, "--with-campaigns", "--as", "olivia", code=1,
    )  # fmt: skip
    assert "^[A-Z]\\d{13}$" in out
    out = invoke(
        runner, env, "campaigns", "update", "live-1-reminder", "--offset-minutes", "-15", "--as", "olivia"
    )
    assert "15 min before course live-1" in out
    out = invoke(runner, env, "courses", "register", "live-1", "wm1", "--as", "olivia")
    assert "wm1 registered for live-1" in out
    out = invoke(runner, env, "courses", "register", "live-1", "wm1", "--as", "olivia")
    assert "was already registered" in out
    out = invoke(runner, env, "courses", "register", "live-1", "wmX", "--as", "olivia", code=1)
    assert "no customer 'wmX'" in out
    with services.db.transaction() as s:  # the course has taken place
        row = s.scalars(select(Course).where(Course.key == "live-1")).one()
        row.starts_at = utcnow() - timedelta(hours=2)
    csv_file = tmp_path / "attendance.csv"
    csv_file.write_text("external_userid,minutes\nwm1,40\nwm2,x\nwmX,10\n", encoding="utf-8")
    out = invoke(runner, env, "courses", "import-attendance", "live-1", str(csv_file), "--as", "olivia")
    assert "1 new, 0 updated, 0 unchanged, 1 unknown customers, 1 bad rows" in out
    assert "line 4: no customer wmX" in out and "line 3: minutes 'x'" in out
    out = invoke(runner, env, "courses", "show", "live-1")
    assert "speaker: 张老师 (SAC S0570516010001)" in out
    assert "registrations: 1 (console 1)" in out and "attendance: 1 (40 minutes in all)" in out
    assert "campaign live-1-reminder [active]" in out
    out = invoke(runner, env, "courses", "list")
    assert "registered=1" in out and "attended=1" in out
    out = invoke(runner, env, "courses", "import-attendance", "live-1", str(csv_file), "--as", "chen", code=1)
    assert "may not manage" in out
    with services.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Campaign)) == 2
        assert s.scalar(select(func.count()).select_from(User)) == 2


def test_console_words_course_refusals_in_chinese_next_to_their_fields(services: Services) -> None:
    app = make_app(services)
    with services.db.transaction() as s:
        course(s, key="etf201", now=utcnow(), starts_at=utcnow() + timedelta(days=3))
    operator = signed_in(app, "olivia")
    cases = [
        ({"speaker_sac_no": "12345"}, "speaker_sac_no", "12345 不是证券业协会执业注册编号", "13 digits"),
        (
            {"link": "https://evil.example.com/x"},
            "link",
            "evil.example.com 不是允许的链接域名",
            "not an allowed",
        ),
        ({"key": "x"}, "key", "课程标识为 2-48 个字符", "key: 2-48"),
        ({"key": "etf201"}, "key", "标识为 etf201 的课程已存在。", "exists"),
        ({"starts_at": _later(days=-1)}, "starts_at", "已过。", "has passed"),
    ]
    for changes, name, chinese, english in cases:
        response = _post(operator, "/console/courses/new", _course_fields(**changes))
        page = _text(response)
        assert response.status_code == 400 and chinese in field_block(page, name), changes
        assert english not in page, changes
    with services.db.read() as s:
        assert s.scalars(select(Course.key)).all() == ["etf201"]


def test_console_words_attendance_refusals_in_chinese(services: Services) -> None:
    app = make_app(services)
    with services.db.transaction() as s:
        course(s, key="future", now=utcnow(), starts_at=utcnow() + timedelta(days=1))
        course(s, key="past", now=NOW)
    operator = signed_in(app, "olivia")
    rows = b"external_userid,minutes\nwm1,lots\n,5\nwm2,5\nwm2,6\n"
    report = _text(_post(operator, "/console/courses/past/attendance", {"file": (io.BytesIO(rows), "r.csv")}))
    problems = report.split('data-testid="import-problems"')[1].split("</table>")[0]
    assert (
        "观看分钟数「lots」不是 0 到 1440 之间的整数。" in problems and "external_userid 为空。" in problems
    )
    assert "wm2 已出现在第 4 行；本行已忽略。" in problems
    assert "whole number" not in problems and "already appears" not in problems
    upload = {"file": (io.BytesIO(b"external_userid\nwm1\n"), "a.csv")}
    early = _text(_post(operator, "/console/courses/future/attendance", upload))
    assert (
        "课程 future 于 " in early
        and "开始，尚无到课记录可导入。" in early
        and "nothing to import" not in early
    )
    no_header = _post(
        operator, "/console/courses/past/attendance", {"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv")}
    )
    page = _text(no_header)
    assert no_header.status_code == 400 and "第 1 行：表头须包含 external_userid 列" in page
    assert "the header must name" not in page
