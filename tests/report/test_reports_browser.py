"""The HTML reports in a real browser, offline: headless Chromium driven by Playwright.

Loads every report from ``file://`` with all network requests blocked and asserts: no page
errors, every image decoded, and each scrubber's range input changes the frame shown. Screenshots
land in ``test-artifacts/browser/``. Reports missing from ``reports/`` are built first (this
executes the notebooks; set ``GRADKIT_REBUILD_REPORTS=1`` to rebuild stale ones). Without
Debian's chromium the test is skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gradkit.core.paths import project_root, reports_dir
from gradkit.report import build_reports, notebook_paths

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = project_root() / "test-artifacts" / "browser"
NAMES = [p.stem for p in notebook_paths()]


@pytest.fixture(scope="module")
def reports() -> Path:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium not found: install Debian's package with "
                    "`apt-get install -y chromium` (or set CHROMIUM=/path/to/chromium)")
    out = reports_dir()
    missing = [n for n in NAMES if not (out / f"{n}.html").exists()]
    if missing or os.environ.get("GRADKIT_REBUILD_REPORTS") == "1":
        results = build_reports()
        failed = [r.name for r in results if not r.ok]
        assert not failed, f"notebooks failed while building the reports: {failed}"
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


def _offline_page(browser, blocked: list[str], errors: list[str]):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    # Everything but the report file itself is refused: the page must not need the network.
    context.route("**/*", lambda route: (
        route.continue_() if route.request.url.startswith("file://")
        else (blocked.append(route.request.url), route.abort())[1]))
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


@pytest.mark.parametrize("name", NAMES)
def test_report_renders_offline_and_its_scrubbers_move(reports, browser, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    blocked, errors = [], []
    page = _offline_page(browser, blocked, errors)
    page.goto((reports / f"{name}.html").as_uri(), wait_until="load")

    images = page.locator("img")
    assert images.count() > 0, f"{name}: no figure in the report"
    broken = page.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0, f"{name}: {broken} image(s) did not render"
    linked = page.evaluate(
        "Array.from(document.images).filter(i => !i.src.startsWith('data:')).map(i => i.src)")
    assert linked == [], f"{name}: figures linked instead of embedded: {linked[:3]}"

    scrubbers = page.locator(".gradkit-scrubber")
    assert scrubbers.count() > 0, f"{name}: no kernel-free scrubber in the report"
    for i in range(scrubbers.count()):
        scrubber = scrubbers.nth(i)
        frame, label = scrubber.locator("img"), scrubber.locator(".gradkit-scrubber-label")
        before, before_label = frame.get_attribute("src"), label.inner_text()
        scrubber.locator("input[type=range]").scroll_into_view_if_needed()
        scrubber.locator("input[type=range]").focus()
        page.keyboard.press("End")  # what a user does with the keyboard on a slider
        assert frame.get_attribute("src") != before, f"{name}: scrubber {i} frame did not change"
        assert label.inner_text() != before_label
        if i == 0:
            scrubber.screenshot(path=str(ARTIFACTS / f"{name}_scrubber_end.png"))
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
    assert errors == [], f"{name}: page errors {errors}"
    assert blocked == [], f"{name}: the report tried to reach the network: {blocked[:3]}"
    page.context.close()


def test_index_links_every_report_with_headlines(reports, browser):
    blocked, errors = [], []
    page = _offline_page(browser, blocked, errors)
    page.goto((reports / "index.html").as_uri())
    hrefs = page.eval_on_selector_all("a", "links => links.map(a => a.getAttribute('href'))")
    assert sorted(hrefs) == sorted(f"{n}.html" for n in NAMES)
    assert page.locator("text=failed").count() == 0
    assert page.locator("li").count() >= len(NAMES), "every notebook reports headline numbers"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)
    assert errors == [] and blocked == []
    page.context.close()
