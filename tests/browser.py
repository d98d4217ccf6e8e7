"""A headless Chromium for the tests that open pages: the system's browser
(Debian's `chromium` and `chromium-driver` packages), driven by Selenium.

Nothing downloads a browser: the driver's path is given, so Selenium's own
manager never runs. Where no browser is installed the tests are skipped,
except in CI (the `CI` environment variable), where that is an error.
"""

import os
import shutil

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)


def _which(names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def open_browser(width=1280, height=900):
    """A headless Chromium WebDriver, or a skip (an error in CI)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install -e '.[dev]')")
    browser, driver = _which(BROWSERS), _which(DRIVERS)
    if browser is None or driver is None:
        _missing("no chromium and chromedriver (apt install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    # Script errors reach the console log, which the tests read.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def script_errors(driver):
    """The console's SEVERE entries since the last call (script errors,
    failed loads)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _missing(why):
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests need a browser in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    driver = open_browser()
    yield driver
    driver.quit()
