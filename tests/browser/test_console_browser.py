"""The console in a real browser: sign-in and lockout, live lint in the editor, maker–checker decisions."""

from __future__ import annotations

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from bot.services import Services
from models.scripts import VersionStatus
from models.users import User
from scripts_library import catalogue as cat
from tests.browser.conftest import LiveConsole
from tests.scripts_fixtures import POLICY
from tests.test_console_auth import PEOPLE

CLEAN = (
    "{{ lead.display_name }}您好，欢迎关注{{ firm.name }}投资者教育服务号，我是{{ manager.name }}。"
    "回复“订阅”接收交易日早报。市场有风险，投资需谨慎。{{ firm.opt_out }}"
)
RED_LINE = "{{ lead.display_name }}您好，跟着老师操作保本稳赚！{{ firm.opt_out }}"


def wait(browser: WebDriver, seconds: float = 8) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(browser, seconds)


def follow(browser: WebDriver, element: WebElement) -> None:
    """Click something that loads a new page and wait until the old one is gone."""
    element.click()
    wait(browser).until(lambda _: _gone(element))


def _gone(element: WebElement) -> bool:
    """Whether the element's page has been replaced. Chromium reports a node caught mid-replacement
    as "does not belong to the document" rather than as stale; both mean the old page is gone."""
    try:
        element.is_enabled()
    except WebDriverException as exc:
        if isinstance(exc, StaleElementReferenceException) or "does not belong to the document" in str(exc):
            return True
        raise
    return False


def sign_in(live: LiveConsole, username: str, password: str | None = None) -> None:
    for attempt in range(3):
        live.open("/console/login")
        try:
            live.browser.find_element(By.NAME, "username").send_keys(username)
            live.browser.find_element(By.NAME, "password").send_keys(password or PEOPLE[username][1])
            break
        except WebDriverException:  # a slow machine replaced the page under us: open it again
            if attempt == 2:
                raise
    follow(live.browser, live.browser.find_element(By.CSS_SELECTOR, "button[type=submit].primary"))


def sign_out(live: LiveConsole) -> None:
    follow(live.browser, live.browser.find_element(By.CSS_SELECTOR, ".tools button.link"))


def flash_text(browser: WebDriver) -> str:
    return " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, ".flash"))


def test_sign_in_locks_the_account_after_repeated_wrong_passwords(
    live: LiveConsole, services: Services
) -> None:
    browser = live.browser
    for _ in range(services.settings.console.max_failed_logins - 1):
        sign_in(live, "olivia", "not-the-password")
        assert "用户名或密码错误" in browser.find_element(By.CSS_SELECTOR, "[data-testid=login-error]").text
    sign_in(live, "olivia", "not-the-password")
    assert "已被临时锁定" in browser.find_element(By.CSS_SELECTOR, "[data-testid=login-error]").text
    live.screenshot("login-locked")
    sign_in(live, "olivia")
    assert "已被临时锁定" in browser.find_element(By.CSS_SELECTOR, "[data-testid=login-error]").text
    sign_in(live, "ada")
    wait(browser).until(ec.url_contains("/console/scripts"))
    follow(browser, browser.find_element(By.LINK_TEXT, "账号管理"))
    row = browser.find_element(By.XPATH, "//table[@data-testid='users']//tr[td[1]='olivia']")
    assert "锁定至" in row.text
    live.screenshot("accounts")
    follow(browser, row.find_element(By.XPATH, ".//button[text()='解锁']"))
    assert "账号 olivia 已更新" in flash_text(browser)
    sign_out(live)
    sign_in(live, "olivia")
    wait(browser).until(ec.url_contains("/console/scripts"))
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=who]").text.startswith("olivia")


def test_operator_sees_the_linter_block_a_red_line_draft_as_they_type(live: LiveConsole) -> None:
    browser = live.browser
    sign_in(live, "olivia")
    wait(browser).until(ec.url_contains("/console/scripts"))
    follow(browser, browser.find_element(By.LINK_TEXT, "新建话术"))
    browser.find_element(By.NAME, "key").send_keys("welcome_xhs")
    Select(browser.find_element(By.NAME, "kind")).select_by_value("welcome")
    browser.find_element(By.NAME, "description").send_keys("小红书引流欢迎语")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "button.primary"))
    body = wait(browser).until(ec.presence_of_element_located((By.NAME, "body")))
    body.send_keys(RED_LINE)
    wait(browser).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "[data-testid=preview]"), "回复TD退订")
    )
    marks = browser.find_elements(By.CSS_SELECTOR, "[data-testid=preview] mark.sev-block")
    assert "保本稳" in "".join(m.text for m in marks)
    assert all(m.is_displayed() for m in marks)
    assert marks[0].value_of_css_property("background-color") not in ("rgba(0, 0, 0, 0)", "transparent")
    verdict = browser.find_element(By.CSS_SELECTOR, "#lint-verdict [data-testid=verdict]")
    assert verdict.text == "禁止发送"
    rules = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#lint-findings td code")]
    assert "C1.principal" in rules
    live.screenshot("editor-live-lint")
    body.send_keys("{{ lead.phone }}")
    error = wait(browser).until(ec.visibility_of_element_located((By.ID, "lint-error")))
    assert "lead.phone is not available" in error.text
    body.clear()
    body.send_keys(RED_LINE)
    wait(browser).until(ec.invisibility_of_element_located((By.ID, "lint-error")))
    follow(browser, browser.find_element(By.CSS_SELECTOR, "#draft-form button.primary"))
    wait(browser).until(ec.url_contains("/console/scripts/welcome_xhs/v/1"))
    assert "草稿 v1 已保存" in flash_text(browser)
    marks = browser.find_elements(By.CSS_SELECTOR, "[data-testid=preview] mark.sev-block")
    assert "保本稳" in "".join(m.text for m in marks)
    live.screenshot("version-blocked")


def test_reviewer_approves_a_clean_version_and_is_refused_their_own(
    live: LiveConsole, services: Services
) -> None:
    with services.db.transaction() as session:
        cat.create_script(session, "welcome_xhs", "welcome", "olivia", "小红书引流欢迎语")
        cat.save_draft(session, "welcome_xhs", CLEAN.replace("服务号", "公众号"), "olivia", POLICY)
        cat.submit(session, "welcome_xhs", 1, "olivia", POLICY)
        chen = session.scalars(select(User).where(User.username == "chen")).one()
        chen.role = "operator"  # chen wrote a script before moving to compliance
        cat.create_script(session, "fallback_x", "fallback", "chen")
        cat.save_draft(
            session,
            "fallback_x",
            "{{ lead.display_name }}您好，消息已收到。{{ firm.opt_out }}",
            "chen",
            POLICY,
        )
        cat.submit(session, "fallback_x", 1, "chen", POLICY)
        chen.role = "compliance"
    browser = live.browser
    sign_in(live, "chen")
    wait(browser).until(ec.url_contains("/console/review"))
    live.screenshot("review-queue")
    follow(browser, browser.find_element(By.LINK_TEXT, "welcome_xhs"))
    browser.find_element(By.ID, "reason").send_keys("措辞合规，已核对风险提示")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "[data-testid=approve]"))
    assert "v1 已批准" in flash_text(browser)
    follow(browser, browser.find_element(By.LINK_TEXT, "welcome_xhs"))
    assert "措辞合规" in browser.find_element(By.CSS_SELECTOR, "[data-testid=decisions]").text
    live.screenshot("script-history")
    live.open("/console/scripts/fallback_x/v/1")
    assert "此版本由您撰写" in browser.find_element(By.CSS_SELECTOR, "[data-testid=decide]").text
    follow(browser, browser.find_element(By.CSS_SELECTOR, "[data-testid=approve]"))
    assert "未批准" in flash_text(browser) and "may not review it" in flash_text(browser)
    with services.db.read() as session:
        assert cat.get_version(session, "welcome_xhs", 1).status == VersionStatus.APPROVED
        assert cat.get_version(session, "fallback_x", 1).status == VersionStatus.SUBMITTED
    live.open("/console/scripts")
    live.screenshot("script-library")
