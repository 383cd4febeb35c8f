"""The data-review dashboard in a real browser: the bundled Chart.js draws every chart offline."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from bot.services import Services
from tests.browser.conftest import LiveConsole
from tests.browser.test_console_browser import sign_in, wait
from tests.test_console_dashboard import QUERY, seed_november


def test_dashboard_draws_a_chart_above_every_table(live: LiveConsole, services: Services) -> None:
    seed_november(services)
    browser = live.browser
    sign_in(live, "olivia")
    wait(browser).until(ec.url_contains("/console/scripts"))
    browser.find_element(By.LINK_TEXT, "数据看板").click()
    wait(browser).until(ec.url_contains("/console/dashboard"))
    live.open(f"/console/dashboard?{QUERY}")
    canvases = browser.find_elements(By.CSS_SELECTOR, "canvas[data-chart]")
    names = [c.get_attribute("data-chart") for c in canvases]
    assert names == ["funnel_platform", "funnel_code", "adds_per_day", "scripts", "risk_words", "handoffs"]
    assert browser.execute_script("return Object.keys(Chart.instances).length") == len(names)
    drawn = browser.execute_script(
        "return Array.from(document.querySelectorAll('canvas[data-chart]'))"
        ".map(function (c) { var chart = Chart.getChart(c);"
        " return chart ? chart.data.datasets.length : 0; })"
    )
    assert all(count > 0 for count in drawn)
    assert all(c.size["height"] > 100 and c.size["width"] > 300 for c in canvases)
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=best-platform]").text == "抖音"
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=best-code]").text == "DY01"
    live.screenshot("dashboard")
