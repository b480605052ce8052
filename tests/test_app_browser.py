"""The page of `self1e app` in a real browser: Debian's chromium, headless, driven by selenium through Debian's
chromium-driver (nothing downloads a browser). It clicks an example, submits, checks the overlay the page shows
against `draw_overlay` of `segment()`'s masks, shows a bad request's message, and saves screenshots a person can look
at under outputs/app/. Every request the page makes stays on 127.0.0.1.

`.ci/run` installs chromium and chromium-driver; under CI (the CI variable set) a missing browser fails the test
instead of skipping it.
"""

import io
import json
import os
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import PIL.Image
import pytest


def require(available: bool, reason: str) -> None:
    """Skips the module when something it needs is missing, except under CI, where that is a failure."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser test: .ci/run installs it)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
require(CHROMIUM is not None and CHROMEDRIVER is not None, "needs Debian's chromium and chromium-driver (apt)")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:
    require(False, "needs selenium (the 'test' extra)")
try:
    from helpers.app_server import serve_shipped_app
except ImportError:
    require(False, "needs gradio (the 'app' extra)")

from transformers_self1e.demo import DEMO_EXAMPLES
from transformers_self1e.visualize import draw_overlay

SCREENSHOTS = Path(__file__).resolve().parents[1] / "outputs" / "app"
WAIT_S = 120
WIDTH, HEIGHT = 1400, 1250


@pytest.fixture(scope="module")
def served():
    with serve_shipped_app() as served:
        yield served


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Root in CI: chromium's sandbox needs an unprivileged user; /dev/shm may be small in containers.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # A driver path given, selenium's driver manager is not needed; offline, it would not download one anyway.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, what: str):
    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited {WAIT_S} s for {what}")


def text_of(driver, element_id: str) -> str:
    """The value of a textbox, found by the elem_id of its block."""
    return driver.find_element(By.CSS_SELECTOR, f"#{element_id} textarea, #{element_id} input").get_attribute("value")


def screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    driver.save_screenshot(str(path))
    return path


def requested_urls(driver) -> list[str]:
    """Every URL the page requested since the last call (chromium's performance log)."""
    messages = (json.loads(entry["message"])["message"] for entry in driver.get_log("performance"))
    return [
        message["params"]["request"]["url"] for message in messages if message["method"] == "Network.requestWillBeSent"
    ]


def test_example_submit_overlay_and_a_bad_request_in_the_browser(served, browser):
    browser.get(served.url)
    example = wait_for(
        browser,
        lambda driver: driver.find_element(By.CSS_SELECTOR, '#referring-examples [data-testid="dataset-cell-1-0"]'),
        "the examples",
    )
    example.click()  # 01-position-regular.png with "the leftmost shape"
    wait_for(browser, lambda driver: text_of(driver, "referring-prompts") == "the leftmost shape", "the example")
    browser.find_element(By.CSS_SELECTOR, "#referring-prompts textarea").send_keys("\nthe green circle")
    browser.find_element(By.ID, "referring-submit").click()
    wait_for(browser, lambda driver: "took" in text_of(driver, "referring-status"), "the result")
    overlay = wait_for(
        browser, lambda driver: driver.find_element(By.CSS_SELECTOR, "#referring-picture img"), "the overlay"
    )
    shown = PIL.Image.open(io.BytesIO(urllib.request.urlopen(overlay.get_attribute("src")).read())).convert("RGB")
    image = PIL.Image.open(DEMO_EXAMPLES / "01-position-regular.png").convert("RGB")
    prompts = ["the leftmost shape", "the green circle"]
    expected = served.model.segment(image, prompts, processor=served.processor)
    drawn = draw_overlay(image, expected.masks, prompts, expected.scores)
    assert np.array_equal(np.asarray(shown), np.asarray(drawn))
    assert "no target" in browser.find_element(By.ID, "referring-table").text
    assert screenshot(browser, "referring.png").stat().st_size > 0

    # A request without an image: the message in the page, then the page still segments.
    browser.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Classes']").click()
    wait_for(browser, lambda driver: driver.find_element(By.ID, "classes-submit").is_displayed(), "the Classes tab")
    browser.find_element(By.ID, "classes-submit").click()
    wait_for(browser, lambda driver: "Upload an image first" in driver.find_element(By.TAG_NAME, "body").text, "error")
    screenshot(browser, "no-image-error.png")
    browser.find_element(By.CSS_SELECTOR, '#classes-examples [data-testid="dataset-cell-1-0"]').click()
    browser.find_element(By.ID, "classes-submit").click()
    wait_for(browser, lambda driver: "took" in text_of(driver, "classes-status"), "the label map")
    assert browser.find_element(By.CSS_SELECTOR, "#classes-picture img").get_attribute("src")
    screenshot(browser, "classes.png")

    host = urlparse(served.url).netloc
    elsewhere = [url for url in requested_urls(browser) if urlparse(url).scheme in ("http", "https", "ws", "wss")]
    elsewhere = [url for url in elsewhere if urlparse(url).netloc != host]
    assert not elsewhere, f"the page requested other hosts: {elsewhere}"
