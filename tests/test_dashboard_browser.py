"""A real browser (headless Chromium via Selenium) against a live node
running tasks: the page connects, its tables and charts update, and it says
when the dashboard goes away. Screenshots land in test-artifacts/."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

pytest.importorskip("aiohttp", reason="the dashboard needs the 'dashboard' extra")

import miniray  # noqa: E402

from .dashboard_util import on_loop, running_dashboard  # noqa: E402

ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "test-artifacts")


def _skip(reason: str):
    # CI installs the browser: there a missing one is a failure, not a skip.
    if os.environ.get("MINIRAY_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


def _find_browser():
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                  "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        _skip("no chromium/chromedriver on PATH: apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver  # noqa: F401
    except ImportError:
        _skip("selenium is not installed: pip install selenium")
    return browser, driver


@miniray.remote
def step(x):
    time.sleep(0.005)
    return x + 1


@miniray.remote
def combine(a, b):
    return a + b


@miniray.remote
def explode():
    raise RuntimeError("browser-test-failure")


@pytest.fixture
def browser():
    binary, driver_path = _find_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout: float = 10.0, what: str = ""):
    """Poll a JavaScript expression until it is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or script} (last: {value!r})")
        time.sleep(0.1)


def test_page_updates_live_and_reports_disconnect(ray, browser):
    from miniray import api

    runtime = api._runtime
    os.makedirs(ARTIFACTS, exist_ok=True)
    stop = threading.Event()
    errors = []

    def workload():
        try:
            while not stop.is_set():
                firsts = [step.remote(i) for i in range(30)]
                pairs = [combine.remote(firsts[i], firsts[i + 1]) for i in range(0, 8, 2)]
                failing = explode.remote()
                miniray.get(pairs)
                try:
                    miniray.get(failing)
                except RuntimeError:
                    pass
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    with running_dashboard(runtime, ws_interval=0.25) as dash:
        thread = threading.Thread(target=workload, daemon=True)
        thread.start()
        try:
            browser.get(dash.url + "/")
            wait_for(browser, "document.getElementById('conn-text').textContent === 'Live'",
                     what="the page to connect")
            finished = lambda: browser.execute_script(  # noqa: E731
                "return document.querySelector('[data-key=finished]').textContent")
            first = wait_for(browser, "document.querySelector('[data-key=finished]')"
                                      ".textContent.match(/^[0-9]/) && document.querySelector("
                                      "'[data-key=finished]').textContent", what="counters")
            wait_for(browser, "Number(document.getElementById('chart-rate').dataset.points) >= 2",
                     timeout=8, what="the tasks/s chart to have points")
            points = browser.execute_script(
                "return Number(document.getElementById('chart-rate').dataset.points)")
            wait_for(browser, f"Number(document.getElementById('chart-rate').dataset.points) "
                              f"> {points}", timeout=8, what="the chart to grow")
            assert browser.execute_script(
                "return document.querySelector('#chart-cpu path.series').getAttribute('d')")
            assert finished() != first, "the finished counter did not move"
            browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-overview.png"))

            browser.find_element("css selector", '#tabs button[data-tab="tasks"]').click()
            wait_for(browser, "document.querySelectorAll('#tasks-table tbody tr').length > 0",
                     what="task rows")
            top = browser.execute_script(
                "return document.querySelector('#tasks-table tbody tr').dataset.id")
            wait_for(browser, f"document.querySelector('#tasks-table tbody tr').dataset.id "
                              f"!== '{top}'", what="new tasks to appear live")
            from selenium.webdriver.support.ui import Select

            Select(browser.find_element("id", "task-state")).select_by_visible_text("FAILED")
            wait_for(browser, "[...document.querySelectorAll('#tasks-table tbody tr')]"
                              ".length > 0 && [...document.querySelectorAll('#tasks-table tbody"
                              " tr')].every(r => r.dataset.state === 'FAILED')",
                     what="the state filter")
            # Found and clicked in one script: the live table re-renders its rows, so a
            # row looked up from Python can be replaced (stale) before the click arrives,
            # and a real pointer could land on a moved row.
            browser.execute_script("document.querySelector('#tasks-table tbody tr').click()")
            wait_for(browser, "document.querySelector('#task-detail pre') && document."
                              "querySelector('#task-detail pre').textContent.includes("
                              "'browser-test-failure')", what="the failed task's traceback")
            browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-tasks.png"))

            browser.find_element("css selector", '#tabs button[data-tab="graph"]').click()
            wait_for(browser, "Number(document.getElementById('dag-svg').dataset.nodes) > 0 &&"
                              " document.querySelectorAll('#dag-svg path.edge').length > 0",
                     what="the task graph")
            browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-graph.png"))

            browser.find_element("css selector", '#tabs button[data-tab="workers"]').click()
            wait_for(browser, "document.querySelectorAll('#workers-table tbody tr').length >= 2",
                     what="worker rows")

            browser.find_element("css selector", '#tabs button[data-tab="overview"]').click()
        finally:
            stop.set()
            thread.join(10)
        assert not errors, errors
        on_loop(runtime, dash.stop())
        wait_for(browser, "document.getElementById('conn-text').textContent"
                          ".startsWith('Disconnected')", what="the disconnected state")
        browser.save_screenshot(os.path.join(ARTIFACTS, "dashboard-disconnected.png"))
