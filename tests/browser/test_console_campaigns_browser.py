"""Campaigns in a real browser: an operator creates and previews one; compliance downloads the ledger."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select
from sqlalchemy import select

from bot.campaigns.previews import PreviewRunner
from bot.console.blueprint import SHANGHAI
from bot.services import Services
from models.base import utcnow
from models.campaigns import Campaign
from tests.browser.conftest import LiveConsole
from tests.browser.test_console_browser import follow, sign_in, wait
from tests.scripts_fixtures import approved
from tests.test_console_ledger import NOV, NOVEMBER, _message, _outcome
from tests.test_planner import lead, relate

ANNOUNCEMENT = (
    "{{ firm.name }}投资者教育：今晚八点更新ETF入门资料，资料仅供学习参考，不构成投资建议。"
    "市场有风险，投资需谨慎。{{ firm.opt_out }}"
)


def _seed(services: Services) -> None:
    """An approved announcement script, reachable subscribed customers and November's ledger entries."""
    with services.db.transaction() as session:
        approved(session, "flash", "keyword_reply", ANNOUNCEMENT)
        for n in range(3):
            lead(session, f"cust{n}", owner="zhangsan", stage="engaged")
            relate(session, "zhangsan", f"cust{n}")
        lead(session, "cust_new", owner="zhangsan")  # stage "new": outside the audience
        relate(session, "zhangsan", "cust_new")
    seq = _message(services, "cust0", "flash", NOV, "盘中快讯")
    _outcome(services, seq, "cust0", "sent", NOV + timedelta(minutes=1))


def test_operator_creates_and_previews_a_campaign_and_compliance_exports_the_ledger(
    live: LiveConsole, services: Services
) -> None:
    _seed(services)
    browser = live.browser
    sign_in(live, "olivia")
    live.open("/console/campaigns")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "[data-testid=campaign-new]"))
    browser.find_element(By.NAME, "key").send_keys("flash-news")
    browser.find_element(By.NAME, "name").send_keys("盘中快讯")
    Select(browser.find_element(By.NAME, "kind")).select_by_value("announcement")
    Select(browser.find_element(By.NAME, "script_key")).select_by_value("flash")
    Select(browser.find_element(By.NAME, "schedule_kind")).select_by_value("daily")
    browser.find_element(By.NAME, "time_of_day").send_keys("25:00")
    browser.find_element(By.CSS_SELECTOR, "input[name=stages][value=engaged]").click()
    follow(browser, browser.find_element(By.CSS_SELECTOR, "[data-testid=campaign-save]"))
    refusal = browser.find_element(By.CSS_SELECTOR, ".field.has-error").text
    assert "25:00" in refusal and "HH:MM" in refusal  # the catalogue's refusal, next to the time field
    assert browser.find_element(By.CSS_SELECTOR, "input[name=stages][value=engaged]").is_selected()
    time_field = browser.find_element(By.NAME, "time_of_day")
    time_field.clear()
    time_field.send_keys("09:15")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "[data-testid=campaign-save]"))
    wait(browser).until(ec.url_contains("/console/campaigns/flash-news"))
    assert "09:15" in browser.find_element(By.CSS_SELECTOR, "[data-testid=schedule]").text
    with services.db.read() as session:
        made = session.scalars(select(Campaign).where(Campaign.key == "flash-news")).one()
    assert made.audience == {"stages": ["engaged"], "subscribed_only": True} and made.created_by == "olivia"

    tomorrow = (utcnow() + timedelta(days=1)).astimezone(SHANGHAI).strftime("%Y-%m-%dT09:15")
    at = browser.find_element(By.NAME, "at")
    browser.execute_script("arguments[0].value = arguments[1]", at, tomorrow)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "[data-testid=preview] button[type=submit]"))
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=preview-status]").text == "排队中"
    PreviewRunner(services.settings, services.db).run_once()  # what a worker does in the background
    browser.refresh()
    assert "ETF" in browser.find_element(By.CSS_SELECTOR, "[data-testid=preview-text]").text
    recipients = browser.find_element(By.CSS_SELECTOR, "[data-testid=preview-recipients]").text
    assert "cust0" in recipients and "cust2" in recipients and "cust_new" not in recipients
    live.screenshot("campaign-dry-run")

    browser.delete_all_cookies()
    sign_in(live, "chen")
    live.open(f"/console/ledger?{NOVEMBER}")
    link = browser.find_element(By.CSS_SELECTOR, "[data-testid=export] a[href*='format=csv']")
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    response = requests.get(str(link.get_attribute("href")), cookies=cookies, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in response.headers["Content-Disposition"]
    assert response.content.startswith(b"\xef\xbb\xbf")  # the UTF-8 BOM spreadsheet programs need
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows and {"seq", "rendered_text", "entry_hash"} <= set(rows[0])
    assert [r["rendered_text"] for r in rows if r["rendered_text"]] == ["盘中快讯"]
