"""The operator page ``/ui`` in a real browser (Debian's chromium + chromedriver, Selenium)
against a real ``bentoml serve`` with a canary: it loads with no console errors, its chart and
arm table follow the traffic, promote without the token is refused and leaves production alone,
promote with it makes the canary production in the registry. Writes docs/canary_ui.png.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from mirec.registry import CANARY, PRODUCTION, Registry
from tests.serving.conftest import Deployment
from tests.serving.servers import REPO_ROOT
from tests.serving.test_canary_router import registry  # noqa: F401 - the fixture
from tests.serving.test_canary_server import TOKEN, serve
from tests.serving.test_canary_server import pytestmark as SERVER_MARKS

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = REPO_ROOT / "docs" / "canary_ui.png"
CHART = "return document.getElementById('chart').toDataURL()"

pytestmark = [
    *SERVER_MARKS,
    pytest.mark.skipif(
        not (CHROMIUM.is_file() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromedriver: apt-get install chromium chromium-driver",
    ),
]


@pytest.fixture()
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1500", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _severe(driver: webdriver.Chrome) -> list[dict[str, object]]:
    """The console's errors since the last read (the log is drained by every read)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def _traffic(url: str, users: list[str], stop: threading.Event, sent: list[int]) -> None:
    """Recommendations for every user in turn; canary answers are clicked more often."""
    rng = random.Random(3)
    session = requests.Session()
    while not stop.is_set():
        for user in users:
            if stop.is_set():
                return
            answer = session.post(f"{url}/recommend", json={"user_id": user, "k": 5}, timeout=30)
            if answer.status_code != 200:
                continue
            body = answer.json()
            sent[0] += 1
            share = 0.6 if body["variant"] == "canary" else 0.3
            if body["items"] and rng.random() < share:
                click = {"request_id": body["request_id"], "item_id": body["items"][0]}
                session.post(f"{url}/feedback", json=click, timeout=30)


def _text(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def test_operator_page_in_a_real_browser(
    deployment: Deployment,
    registry: Registry,  # noqa: F811 (the imported fixture)
    browser: webdriver.Chrome,
    tmp_path: Path,
) -> None:
    policy = '{"min_impressions": 1000000}'  # the policy holds: the operator decides here
    canary = registry.stage(CANARY)
    production = registry.stage(PRODUCTION)
    assert canary is not None and production is not None
    users = sorted(deployment.dataset.events["user_id"].astype(str).unique())
    with serve(registry, tmp_path / "events.db", tmp_path / "serve.log", policy) as (url, _):
        browser.get(f"{url}/ui/")
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-refreshes"))
        assert browser.title == "mirec canary"
        assert _text(browser, "production-version") == f"v{production.version}"
        assert _text(browser, "canary-version") == f"v{canary.version}"
        assert _severe(browser) == [], "console errors on load"
        empty_chart = browser.execute_script(CHART)

        stop, sent = threading.Event(), [0]
        thread = threading.Thread(target=_traffic, args=(url, users, stop, sent), daemon=True)
        thread.start()
        try:
            seen = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(set(seen)) < 4:
                time.sleep(1.0)
                seen.append(int(browser.find_element(By.TAG_NAME, "body")
                                .get_attribute("data-impressions") or 0))  # fmt: skip
            time.sleep(6)  # a second 5 s bucket: the chart draws lines, not points
        finally:
            stop.set()
            thread.join(60)
        assert sent[0] > 0 and len(set(seen)) >= 4 and seen == sorted(seen), seen
        wait.until(lambda d: d.execute_script(CHART) != empty_chart)
        arms = _text(browser, "arms")
        assert "production" in arms and "canary" in arms
        assert _severe(browser) == [], "console errors while the page followed the traffic"
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))

        browser.find_element(By.ID, "promote").click()  # no token typed
        wait.until(lambda d: _text(d, "message").startswith("401"))
        assert "token" in _text(browser, "message")
        assert registry.stage(PRODUCTION).version == production.version  # type: ignore[union-attr]
        refused = _severe(browser)  # the browser reports the refused request, nothing else
        assert refused and all("/admin/promote" in str(e["message"]) and "401" in
                               str(e["message"]) for e in refused), refused  # fmt: skip

        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "promote").click()
        wait.until(lambda d: _text(d, "message").startswith("/admin/promote:"))
        wait.until(lambda d: _text(d, "production-version") == f"v{canary.version}")
        assert registry.stage(PRODUCTION).version == canary.version  # type: ignore[union-attr]
        assert registry.stage(CANARY) is None
        assert _text(browser, "canary-version") == "none"
        assert _severe(browser) == []
