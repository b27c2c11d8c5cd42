"""The hub in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, Selenium).

JavaScript is switched off in the browser: every page must work without it. The test
searches, filters, opens an adapter page through its link, checks the metrics and the
forgetting chart are drawn with interval whiskers and verdict words, opens a compare
page (own-task gain clipped), filters on "no task forgotten", and takes screenshots. With
``ADAPTERHUB_HUB_SCREENSHOTS=DIR`` the screenshots are kept there (``docs/hub/`` holds
the committed ones); otherwise they go to the test's temporary directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    # Not a skip: `make test` installs the Debian packages when they are missing, so a
    # machine without them is a broken setup, and the message says how to fix it.
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} missing: run `make browser` (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keep = os.environ.get("ADAPTERHUB_HUB_SCREENSHOTS")
    out = Path(keep) if keep else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _shot(driver: object, path: Path) -> None:
    from selenium.webdriver.common.by import By

    # Full-page: grow the window to the document height for the picture.
    height = driver.find_element(By.TAG_NAME, "body").size["height"] + 120  # type: ignore[attr-defined]
    driver.set_window_size(1280, min(max(height, 700), 4000))  # type: ignore[attr-defined]
    assert driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    assert path.stat().st_size > 10_000  # a real rendering, not a blank page
    driver.set_window_size(1280, 1000)  # type: ignore[attr-defined]


def _type(element: object, text: str) -> None:
    """Replace a field's text with keystrokes (WebDriver's clear() needs page script)."""
    from selenium.webdriver.common.keys import Keys

    element.send_keys(Keys.CONTROL, "a")  # type: ignore[attr-defined]
    element.send_keys(Keys.DELETE)  # type: ignore[attr-defined]
    if text:
        element.send_keys(text)  # type: ignore[attr-defined]


def _click_and_wait(driver: object, element: object) -> None:
    """Click a link or submit button and wait until the next page has replaced this one."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    # A marker on this page's window: the next page has a fresh window without it. (Waiting
    # for the old <html> element to go stale races: chromedriver may answer "node does not
    # belong to the document", an error rather than staleness, while the page is swapped.)
    driver.execute_script("window.__adapterhubOldPage = true")  # type: ignore[attr-defined]
    element.click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 30, ignored_exceptions=(WebDriverException,)).until(
        lambda drv: drv.execute_script("return window.__adapterhubOldPage === undefined && document.readyState === 'complete'"))


def test_search_filter_open_compare_in_chromium(browser: object, hub_url: str, shots: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d = browser
    d.get(hub_url + "/")  # type: ignore[attr-defined]
    find = d.find_element  # type: ignore[attr-defined]
    find_all = d.find_elements  # type: ignore[attr-defined]
    assert "4 adapters" in find(By.ID, "result-count").text
    assert len(find_all(By.CSS_SELECTOR, "#results tbody tr")) == 4
    _shot(d, shots / "browse.png")

    # Free text, submitted with the form's button (no script involved).
    _type(find(By.ID, "q"), "summarisation")
    _click_and_wait(d, find(By.ID, "search-button"))
    rows = find_all(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == 1 and "team/summaries" in rows[0].text

    # Filters: method select, then a metric threshold and a metric sort.
    _type(find(By.ID, "q"), "")
    Select(find(By.ID, "method")).select_by_value("lora")
    _type(find(By.ID, "where"), "accuracy>=0.7")
    Select(find(By.ID, "sort")).select_by_value("accuracy")
    _click_and_wait(d, find(By.ID, "search-button"))
    names = [a.text for a in find_all(By.CSS_SELECTOR, "#results a.adapter-link")]
    assert names == ["team/sentiment"]
    assert "method=lora" in d.current_url and "where=accuracy" in d.current_url  # type: ignore[attr-defined]
    _shot(d, shots / "search.png")

    # Open the adapter page through its link.
    _click_and_wait(d, find(By.LINK_TEXT, "team/sentiment"))
    assert "/a/team/sentiment" in d.current_url  # type: ignore[attr-defined]
    assert "team/sentiment" in find(By.ID, "adapter-name").text
    metric_rows = find_all(By.CSS_SELECTOR, "#metrics-table tbody tr")
    assert len(metric_rows) == 2 and any("accuracy" in r.text for r in metric_rows)
    chart = find(By.CSS_SELECTOR, "#forgetting-chart svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 60  # laid out, not collapsed
    assert len(find_all(By.CSS_SELECTOR, "#forgetting-chart rect.bar")) == 5  # own task + 4 held out
    # Each delta with its interval whisker, drawn (not collapsed), and the verdict in words.
    whiskers = find_all(By.CSS_SELECTOR, "#forgetting-chart g.whisker")
    # (the own task's +48 is clipped off the axis: its interval is printed, not drawn)
    assert len(whiskers) == 4 and all(w.size["width"] > 5 for w in whiskers)
    values = [t.text for t in find_all(By.CSS_SELECTOR, "#forgetting-chart text.value")]
    assert any("✓ kept" in v for v in values) and any("? unresolved" in v for v in values)
    table = find(By.CSS_SELECTOR, "#forgetting table").text
    assert "400" in table and "? unresolved" in table and "✓ kept" in table  # n and verdicts in the table
    assert find(By.CSS_SELECTOR, "#loss-chart svg polyline").is_displayed()
    assert "adapterhub pull team/sentiment@1.1.0" in find(By.ID, "snippet-pull").text
    _shot(d, shots / "adapter.png")

    # From the versions table to a compare page of the two versions.
    _click_and_wait(d, find(By.LINK_TEXT, "compare"))
    assert "/compare" in d.current_url  # type: ignore[attr-defined]
    assert len(find_all(By.CSS_SELECTOR, "#compare-table thead th")) == 4
    assert len(find_all(By.CSS_SELECTOR, "#overlay-chart rect.bar")) == 9
    # The own task's +48 is clipped with its value printed; the held-out bars keep their size.
    assert len(find_all(By.CSS_SELECTOR, "#overlay-chart rect.clipped")) == 1
    assert "(own task, clipped; 95 % [+46.00, +50.00])" in find(By.ID, "overlay-chart").text
    _shot(d, shots / "compare.png")

    # An adapter that forgets: the word, the hatching-free solid bar, and its whiskers.
    d.get(hub_url + "/a/ops/full-baseline")  # type: ignore[attr-defined]
    chart = find(By.ID, "forgetting-chart")
    assert chart.text.count("▼ forgotten") == 3 and "? unresolved" in chart.text
    assert len(find_all(By.CSS_SELECTOR, "#forgetting-chart rect.forgotten")) == 3
    assert all(w.is_displayed() for w in find_all(By.CSS_SELECTOR, "#forgetting-chart g.whisker"))
    _shot(d, shots / "adapter-forgetting.png")

    # Search: "no task forgotten" leaves it out (a checkbox: works without JavaScript).
    d.get(hub_url + "/")  # type: ignore[attr-defined]
    find(By.ID, "no-forgotten").click()
    _click_and_wait(d, find(By.ID, "search-button"))
    names = [a.text for a in find_all(By.CSS_SELECTOR, "#results a.adapter-link")]
    assert "ops/full-baseline" not in names and len(names) == 3
    assert "no_forgotten=1" in d.current_url  # type: ignore[attr-defined]

    d.get(hub_url + "/a/no/such-adapter")  # type: ignore[attr-defined]
    assert find(By.ID, "error-heading").text == "Not found"
