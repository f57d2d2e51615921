"""The dashboard at /ui in a real browser: headless Chromium driven by selenium through
Debian's chromium-driver (``.ci/run`` installs ``chromium``, ``chromium-driver`` and the
``selenium`` package). The page is loaded at a phone's width; it must show the test's
topics and lag figures, log no console error, and show a message produced while it is open
in its live tail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI") == "true"
PHONE_WIDTH = 412
TIMEOUT = 30


def test_unknown_pages_under_ui_answer_404_json(make_broker) -> None:
    broker = make_broker("--store", "memory")
    for path in ["/ui/nope.js", "/ui/%2E%2E/topics", "/ui/app.js/x"]:
        response = broker.get(path)
        assert response.status_code == 404, path
        assert response.json()["code"] == "not_found", path
    for path, kind in [
        ("/ui", "text/html"),
        ("/ui/app.js", "javascript"),
        ("/ui/style.css", "css"),
    ]:
        response = broker.get(path)
        assert response.status_code == 200, path
        assert kind in response.headers["content-type"]
    # Nothing the page loads comes from elsewhere.
    page = broker.get("/ui").text
    assert "http://" not in page and "https://" not in page


@pytest.fixture
def browser() -> Iterator:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    if webdriver is None or chromium is None or driver_path is None:
        if IN_CI:
            pytest.fail("chromium, chromium-driver or selenium is missing (.ci/run installs them)")
        pytest.skip("chromium, chromium-driver or selenium is missing")
    os.environ["SE_OFFLINE"] = "true"  # never let selenium download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={PHONE_WIDTH},900",
    ]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    driver.set_page_load_timeout(TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def produce(broker, topic: str, messages: list[str]) -> None:
    producer = broker.post("/producer/register", {"topic": topic}).json()["producer_id"]
    response = broker.post(
        "/producer/produce_batch",
        {"topic": topic, "producer_id": producer, "messages": messages},
    )
    assert response.status_code == 200, response.text


def test_the_dashboard_shows_topics_lag_and_a_live_tail(make_broker, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    broker = make_broker("--store", "memory")
    for topic in ["clicks", "orders"]:
        assert broker.post("/topics", {"name": topic}).status_code == 200
    broker.post("/consumer/register", {"topic": "clicks", "group": "left-behind"})
    produce(broker, "clicks", [f"click {i}" for i in range(5)])
    reader = broker.post("/consumer/register", {"topic": "orders", "group": "up-to-date"})
    produce(broker, "orders", ["order 1", "order 2"])
    broker.post(
        "/consumer/commit",
        {"topic": "orders", "consumer_id": reader.json()["consumer_id"], "offset": "end"},
    )

    browser.get(broker.url + "/ui")
    wait = WebDriverWait(browser, TIMEOUT)

    def rows(table: str) -> list[list[str]]:
        return [
            [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
        ]

    wait.until(lambda _: len(rows("consumers")) == 2)
    topics = {row[0]: row for row in rows("topics")}
    assert set(topics) == {"clicks", "orders"}
    assert topics["clicks"][2:5] == ["0", "5", "5"]  # start, end, messages
    assert topics["orders"][2:5] == ["0", "2", "2"]
    # The laggard first, with its lag.
    assert rows("consumers") == [
        ["clicks", "group left-behind", "5", "0"],
        ["orders", "group up-to-date", "0", "2"],
    ]
    assert "available" in browser.find_element(By.ID, "store").text

    # Usable at a phone's width: the page itself does not scroll sideways.
    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, f"the page is {overflow}px wider than the screen"

    Select(browser.find_element(By.ID, "tail-topic")).select_by_value("clicks")
    wait.until(lambda _: "Following clicks" in browser.find_element(By.ID, "tail-status").text)
    fresh = f"produced while watching {uuid.uuid4()}"
    produce(broker, "clicks", [fresh])
    wait.until(lambda _: fresh in browser.find_element(By.ID, "tail").text)
    # Older messages are not in the tail: it starts at the end.
    assert "click 0" not in browser.find_element(By.ID, "tail").text

    if os.environ.get("MYQUEUE_UI_SCREENSHOT"):
        browser.set_window_size(1100, 900)
        browser.save_screenshot(os.environ["MYQUEUE_UI_SCREENSHOT"])

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
