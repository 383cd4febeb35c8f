"""Headless Chromium (Debian's chromium + chromium-driver) against the console on a real threaded server.

Missing browser binaries fail these tests: `scripts/test-all` installs them. Set
CONSOLE_SCREENSHOTS_DIR (e.g. docs/screenshots) to refresh the screenshots of the main pages.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from werkzeug.serving import make_server

from bot.services import Services
from tests.test_console_auth import make_app


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "browser tests need Debian's chromium and chromium-driver (scripts/test-all installs them)"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the whole module; nothing is downloaded."""
    chromium, driver_path = _browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


class LiveConsole:
    """The console served on a free local port, and a browser pointed at it."""

    def __init__(self, app: Flask, base_url: str, browser: WebDriver) -> None:
        self.app = app
        self.base_url = base_url
        self.browser = browser

    def open(self, path: str) -> None:
        self.browser.get(self.base_url + path)

    def screenshot(self, name: str) -> None:
        """Save a PNG of the page when screenshots are being refreshed."""
        target = os.environ.get("CONSOLE_SCREENSHOTS_DIR")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            assert self.browser.save_screenshot(str(Path(target) / f"{name}.png"))


@pytest.fixture
def live(services: Services, browser: WebDriver) -> Iterator[LiveConsole]:
    """A threaded werkzeug server over the test database, stopped after the test."""
    app = make_app(services)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # Cookies belong to the host, not the port: clear them all, or the last test's session would carry over.
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    try:
        yield LiveConsole(app, f"http://127.0.0.1:{server.server_port}", browser)
    finally:
        browser.get("about:blank")
        server.shutdown()
        thread.join(timeout=5)
