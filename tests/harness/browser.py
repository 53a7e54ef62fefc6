"""Debian's headless Chromium for the tests that drive the chat page (e2e, security, faults)."""

from __future__ import annotations

import shutil
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

# No network beyond the page under test: these flags stop Chromium's own background traffic.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1000,800",
)
PAGE_LOAD_TIMEOUT = 30


def browser_available() -> bool:
    return bool(CHROMIUM and CHROMEDRIVER)


def headless_chromium(*extra_flags: str) -> Any:
    """A Selenium driver for headless Chromium (needs the chromium and chromium-driver packages)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, *extra_flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    return driver
