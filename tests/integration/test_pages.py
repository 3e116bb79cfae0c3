"""The API's pages in a real browser: Debian's headless Chromium through selenium and
chromedriver, against `personas serve` on a free port. The browser may resolve no host but
127.0.0.1, as on a machine without a CDN: GraphiQL must still load and run a query, and the
persona explorer must show the demo's personas, with no console error on either page."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from neo4j import Driver
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from graph.settings import Settings
from personas.local.web_assets import ensure_web_assets
from tests.integration.served import World, served_demo

pytestmark = pytest.mark.integration

USERS = 40
WAIT_S = 60


def require_browser() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, ("the page tests need Debian's Chromium and its driver: "
                                 "`apt-get install chromium chromium-driver` (make browser)")
    return chromium, driver


@pytest.fixture(scope="module")
def world(driver: Driver, settings: Settings,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ensure_web_assets(settings)  # provisioning, as `personas serve` does
    with served_demo(driver, settings, tmp_path_factory.mktemp("pages"), users=USERS,
                     runs=2) as served:
        yield served


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    chromium, chromedriver = require_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000",
                     # Offline but for this machine: every other host fails to resolve.
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(browser: WebDriver) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE"]


def persona_names(world: World) -> set[str]:
    rows = world.graph.rows(
        "MATCH (:SegmentationRun {id: $run})-[:PRODUCED]->(:Segment {level: 0})"
        "-[:EMBODIES]->(p:Persona) RETURN p.name AS name", run=world.run.run_id)
    return {r["name"] for r in rows}


def test_graphiql_runs_a_query_offline(world: World, browser: WebDriver) -> None:
    query = "{ personas { name size } }"
    headers = json.dumps({"Authorization": f"Bearer {world.keys['analyst']}"})
    browser.get(f"{world.base}/graphql?q={quote(query)}&headers={quote(headers)}")
    wait = WebDriverWait(browser, WAIT_S)
    run = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR,
                                                 ".graphiql-execute-button")))
    assert "unpkg" not in browser.page_source
    run.click()
    wait.until(lambda b: '"personas"' in b.find_element(
        By.CSS_SELECTOR, ".graphiql-response").text)
    answer = browser.find_element(By.CSS_SELECTOR, ".graphiql-response").text
    names = persona_names(world)
    assert names and any(name in answer for name in names), answer
    # The schema loaded (GraphiQL's introspection query passed the API's limits): the
    # documentation explorer lists the root types.
    browser.find_element(By.CSS_SELECTOR,
                         "button[aria-label='Show Documentation Explorer']").click()
    wait.until(lambda b: "Query" in b.find_element(By.CSS_SELECTOR,
                                                   ".graphiql-doc-explorer").text)
    assert console_errors(browser) == []


def test_explorer_shows_the_demo_personas(world: World, browser: WebDriver) -> None:
    browser.get(f"{world.base}/explorer")
    wait = WebDriverWait(browser, WAIT_S)
    browser.find_element(By.ID, "key").send_keys(world.keys["analyst"])
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#cards .card"))
    cards = browser.find_elements(By.CSS_SELECTOR, "#cards .card")
    shown = {card.find_element(By.TAG_NAME, "h4").text for card in cards}
    assert shown == persona_names(world)
    assert all("users" in card.text and "σ" in card.text for card in cards)
    # Both runs are listed, the newer with its drift against the older.
    rows = browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
    assert len(rows) == 2
    newest = [cell.text for cell in rows[0].find_elements(By.TAG_NAME, "td")]
    assert newest[0] == world.run.run_id and newest[6] != "–"
    assert browser.find_elements(By.CSS_SELECTOR, "#tree li")
    # Every picture of the run is drawn and shown.
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#pictures figure")) == 4)
    wait.until(lambda b: all(b.execute_script("return arguments[0].naturalWidth", img) > 0
                             for img in b.find_elements(By.CSS_SELECTOR, "#pictures img"))
               and len(b.find_elements(By.CSS_SELECTOR, "#pictures img")) == 4)
    # A user's persona history.
    user_id = world.run.user_ids[0]
    browser.find_element(By.ID, "user-id").send_keys(user_id)
    browser.find_element(By.CSS_SELECTOR, "#user-form button").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#history-table tbody tr"))
    history = browser.find_element(By.ID, "history").text
    assert any(name in history for name in persona_names(world)), history
    assert console_errors(browser) == []


def test_explorer_is_for_analyst_keys(world: World, browser: WebDriver) -> None:
    browser.get(f"{world.base}/explorer")
    browser.find_element(By.ID, "key").send_keys(world.keys["reader"])
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait = WebDriverWait(browser, WAIT_S)
    wait.until(lambda b: b.find_element(By.ID, "error").text)
    assert "analyst" in browser.find_element(By.ID, "error").text
    assert not browser.find_element(By.ID, "main").is_displayed()
    # The one console error is the refused session request itself.
    errors = console_errors(browser)
    assert len(errors) == 1 and "403" in errors[0], errors
