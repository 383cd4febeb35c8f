"""The console's read pages in a real browser, in Chinese: hook codes, leads, a lead's paged timeline,
the handoff queue, campaigns, courses and the ledger (and their screenshots when refreshed)."""

from __future__ import annotations

from datetime import timedelta

from selenium.webdriver.common.by import By
from sqlalchemy import update

from bot.campaigns.planner import plan_run
from bot.leads.hookcodes import create_code
from bot.services import Services
from models.base import utcnow
from models.leads import HookCode
from tests.browser.conftest import LiveConsole
from tests.browser.test_console_browser import follow, sign_in
from tests.scripts_fixtures import approved
from tests.test_console_leads import EXT, _busy_timeline, seed
from tests.test_console_ledger import NOV, _message, _outcome
from tests.test_courses import course
from tests.test_planner import TUESDAY, body, campaign, lead, relate, run

# The CLI's English wording of entries these pages show; none of it may reach the Chinese console.
ENGLISH = (
    "arrived via",
    "(in WeCom)",
    "customer: ",
    "offered to",
    "by kf",
    "trading days at",
    "Asia/Shanghai",
    "the customer opted out",
    "queued",
)


def _seed(services: Services) -> dict[str, int]:
    """Leads with handoffs in every state and a long timeline, hook codes, a campaign with a run,
    a course with registrations, and ledger entries: enough for every list to show something."""
    seeded = seed(services)
    _busy_timeline(services, seeded)
    now = utcnow()
    with services.db.transaction() as session:
        for code, platform, member, name in (
            ("XHS1", "xiaohongshu", "li", "双十一直播"),
            ("XHS2", "xiaohongshu", "li", "笔记置顶"),
            ("DY01", "douyin", "wang", "短视频挂链"),
            ("DY02", "douyin", "wang", ""),
        ):
            create_code(session, code, platform, [member], "olivia", name)
        kf_url = "https://work.weixin.qq.com/kfid/kfc1a2b3c?enc_scene=ENC&scene_param=XHS1"
        session.execute(update(HookCode).where(HookCode.code == "XHS1").values(kf_url=kf_url))
        approved(session, "morning_report", "morning_report", body("morning_report"))
        camp = campaign(session, key="morning", audience={"tags": []})
        for n in range(6):
            lead(session, f"cust{n}", owner="zhangsan", stage="engaged")
            relate(session, "zhangsan", f"cust{n}")
        lead(session, "cust_out", owner="zhangsan", opted_out=True)
        relate(session, "zhangsan", "cust_out")
        run_id = run(session, camp, TUESDAY - timedelta(days=1))
        course(session, "etf-101", starts_at=now + timedelta(days=3), now=now)
    plan_run(services.db, services.settings, run_id, now=TUESDAY - timedelta(days=1))
    for n, outcome in enumerate(("sent", "sent", "failed")):
        seq = _message(services, f"cust{n}", "morning_report", NOV + timedelta(hours=n), "早上好")
        _outcome(services, seq, f"cust{n}", outcome, NOV + timedelta(hours=n, minutes=1))
    return seeded.ids


def _shows(live: LiveConsole, path: str, heading: str, shot: str) -> str:
    """Open `path`, check it is the Chinese page with `heading` and no English service wording."""
    live.open(path)
    text = live.browser.find_element(By.TAG_NAME, "main").text
    assert heading in text, (path, heading)
    leftovers = [words for words in ENGLISH if words in text]
    assert leftovers == [], (path, leftovers)
    live.screenshot(shot)
    return text


def test_read_pages_are_in_chinese_and_the_timeline_pages_within_the_lead(
    live: LiveConsole, services: Services
) -> None:
    services.settings = services.settings.replace(console={"page_size": 8})
    ids = _seed(services)
    browser = live.browser
    live.open("/console/login")
    assert "登录" in browser.find_element(By.TAG_NAME, "main").text
    live.screenshot("login")
    sign_in(live, "chen")  # compliance sees ids and numbers unmasked

    _shows(live, "/console/hookcodes", "引流码", "hookcodes")
    _shows(live, "/console/hookcodes/XHS1", "XHS1", "hookcode")
    _shows(live, "/console/leads", "客户线索", "leads")
    _shows(live, "/console/handoffs", "转交", "handoffs")
    _shows(live, "/console/campaigns", "交易日 08:30", "campaigns")
    _shows(live, "/console/courses", "ETF定投入门", "courses")
    _shows(live, "/console/ledger?start=2026-11-01&end=2026-11-30", "发送台账", "ledger")

    first = _shows(live, f"/console/leads/{ids['1']}#timeline", "通过「联系我」二维码添加", "lead")
    assert EXT["1"] in first
    pager = browser.find_element(By.CSS_SELECTOR, "[data-testid=pager-tpage]")
    follow(browser, pager.find_element(By.CSS_SELECTOR, "a[rel=next]"))
    assert browser.current_url.endswith(f"/console/leads/{ids['1']}?tpage=2#timeline")
    second = browser.find_element(By.CSS_SELECTOR, "[data-testid=timeline]").text
    assert "通过「联系我」二维码添加" not in second and "转交 #" in second
