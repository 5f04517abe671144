"""The HTML reports in a real browser, offline: headless Chromium driven by Playwright.

Loads every report from ``file://`` in a 1,400 px window with all network requests blocked and
asserts: no page errors, every image decoded and embedded; each scrubber's player moves with its
range input, step buttons, arrow keys and play / pause; code cells are collapsed behind a toggle
(their input still in the page); nothing is wider than the window (wide tables scroll inside
their output); the markdown's formulas are MathML that Chromium lays out, with no raw ``$`` left.
A small fixture notebook checks the formula export on inline and display math next to ``$`` in
code, outputs and prices. Screenshots land in ``test-artifacts/browser/``. The reports checked
are the smoke reports in ``build/smoke/reports/`` (:mod:`gradkit.report.smoke`; ``make test``
builds them once per test run, ``tests/conftest.py``). Without Debian's chromium the test is
skipped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from gradkit.core.paths import OUTPUT_ENV, project_root, reports_dir
from gradkit.report import notebook_paths
from gradkit.report.export import find_math, to_html
from gradkit.report.smoke import SMOKE_OUTPUT
from gradkit.viz.scrubber import Scrubber

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = project_root() / "test-artifacts" / "browser"
NAMES = [p.stem for p in notebook_paths()]
WIDTH = 1400


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium not found: install Debian's package with "
                    "`apt-get install -y chromium` (or set CHROMIUM=/path/to/chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def reports(chromium, smoke_report) -> Path:
    # the default condition's smoke reports of this test run, whatever a test before this
    # module left in the env
    os.environ.pop("GRADKIT_CONDITION", None)
    failed = [name for name in NAMES if not smoke_report(name).ok]
    assert not failed, f"notebooks failed while building the reports: {failed}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv(OUTPUT_ENV, SMOKE_OUTPUT)
        return reports_dir()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        try:
            yield browser
        finally:
            browser.close()


def _offline_page(browser, blocked: list[str], errors: list[str]):
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    # Everything but the report file itself is refused: the page must not need the network.
    context.route("**/*", lambda route: (
        route.continue_() if route.request.url.startswith("file://")
        else (blocked.append(route.request.url), route.abort())[1]))
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


# -- what every report must do ----------------------------------------------------------------
def _check_images(page, name):
    assert page.locator("img").count() > 0, f"{name}: no figure in the report"
    broken = page.evaluate(
        "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0, f"{name}: {broken} image(s) did not render"
    linked = page.evaluate(
        "Array.from(document.images).filter(i => !i.src.startsWith('data:')).map(i => i.src)")
    assert linked == [], f"{name}: figures linked instead of embedded: {linked[:3]}"


def _check_player(page, scrubber, name, i):
    frame, label = scrubber.locator("img"), scrubber.locator(".gradkit-scrubber-label")
    frames = int(scrubber.get_attribute("data-frames"))
    first, first_label = frame.get_attribute("src"), label.inner_text()
    box = frame.bounding_box() or scrubber.bounding_box()
    assert frame.evaluate("e => e.getBoundingClientRect().height") <= 900 * 0.8 + 1, \
        f"{name}: scrubber {i} is taller than the window"
    assert box["width"] <= WIDTH
    scrubber.locator("input[type=range]").scroll_into_view_if_needed()
    scrubber.locator("input[type=range]").focus()
    page.keyboard.press("End")  # what a user does with the keyboard on a slider
    assert frames == 1 or frame.get_attribute("src") != first, f"{name}: {i} did not change"
    assert label.inner_text() == first_label or frames > 1
    assert label.inner_text().endswith(f"({frames}/{frames})")
    if frames < 2:
        return
    scrubber.locator(".gradkit-scrubber-prev").click()
    assert label.inner_text().endswith(f"({frames - 1}/{frames})"), "the step-back button"
    scrubber.locator(".gradkit-scrubber-next").click()
    assert label.inner_text().endswith(f"({frames}/{frames})"), "the step button"
    scrubber.focus()
    page.keyboard.press("Home")
    assert frame.get_attribute("src") == first and label.inner_text() == first_label
    page.keyboard.press("ArrowRight")
    assert label.inner_text().endswith(f"(2/{frames})"), "the arrow keys step"
    page.keyboard.press("ArrowLeft")
    play = scrubber.locator(".gradkit-scrubber-play")
    play.click()
    assert play.get_attribute("aria-label") == "pause"
    label.evaluate("(e, t) => { e.dataset.first = t; }", first_label)
    page.wait_for_function("e => e.textContent !== e.dataset.first", arg=label.element_handle(),
                           timeout=10_000)
    play.click()
    assert play.get_attribute("aria-label") == "play"
    paused_at = label.inner_text()
    page.wait_for_timeout(1500)
    assert label.inner_text() == paused_at, "pause stops the player"


def _check_layout(page, name):
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{name}: the page is {width} px wide in a {WIDTH} px window"
    tables = page.evaluate("""() => Array.from(document.querySelectorAll('table')).map(t => {
        let c = t.parentElement;
        const scrolls = e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX);
        while (c && !scrolls(c)) c = c.parentElement;
        const r = t.getBoundingClientRect();
        return {table: t.scrollWidth, box: c ? c.clientWidth : null,
                scrolls: c ? c.scrollWidth > c.clientWidth : false,
                right: c ? c.getBoundingClientRect().right : r.right};
    })""")
    for t in tables:
        assert t["box"] is not None and t["right"] <= WIDTH + 1, f"{name}: unbounded table {t}"
        assert t["table"] <= t["box"] or t["scrolls"], f"{name}: table cut instead of scrolled {t}"
    cells = page.locator(".jp-CodeCell").count()
    toggles = page.locator("details.gradkit-code")
    assert toggles.count() == cells, f"{name}: {cells} code cells, {toggles.count()} toggles"
    assert page.locator("details.gradkit-code[open]").count() == 0, "code starts collapsed"
    assert page.locator(".jp-InputArea-editor").first.is_hidden()
    if cells:
        code = toggles.first
        assert code.locator(".jp-InputArea-editor").text_content().strip(), "the input is kept"
        code.locator("summary").click()
        assert code.locator(".jp-InputArea-editor").is_visible(), "the toggle opens the code"
        code.locator("summary").click()


def _check_math(page, name, formulas: int):
    rendered = page.evaluate("""() => Array.from(document.querySelectorAll('math')).map(m => {
        const r = m.getBoundingClientRect();
        return {display: getComputedStyle(m).display, w: r.width, h: r.height};
    })""")
    assert len(rendered) >= formulas, f"{name}: {formulas} formulas, {len(rendered)} MathML"
    assert all(r["display"] in ("math", "block math", "inline math") for r in rendered), \
        f"{name}: the browser does not lay out the MathML: {rendered[:2]}"
    assert all(r["w"] > 0 and r["h"] > 0 for r in rendered if r["display"] != "none")
    assert page.locator(".gradkit-math-error").count() == 0, f"{name}: formulas left as TeX"
    raw = page.evaluate("""() => Array.from(document.querySelectorAll('.jp-MarkdownCell'))
        .map(c => { const k = c.cloneNode(true); k.querySelectorAll('code, pre, math')
                    .forEach(e => e.remove()); return k.textContent; })
        .filter(t => t.includes('$'))""")
    assert raw == [], f"{name}: raw $ left in the text: {raw[:2]}"


@pytest.mark.parametrize("name", NAMES)
def test_report_renders_offline_and_reads_as_a_report(reports, browser, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    blocked, errors = [], []
    page = _offline_page(browser, blocked, errors)
    page.goto((reports / f"{name}.html").as_uri(), wait_until="load")
    _check_images(page, name)
    _check_layout(page, name)
    markdown = [c.source for c in nbformat.read(project_root() / "notebooks" / f"{name}.ipynb",
                                                as_version=4).cells if c.cell_type == "markdown"]
    formulas = sum(len(find_math(m)) for m in markdown)
    if formulas:  # every report whose notebook writes LaTeX shows it rendered
        _check_math(page, name, formulas)
    scrubbers = page.locator(".gradkit-scrubber")
    assert scrubbers.count() > 0, f"{name}: no kernel-free scrubber in the report"
    for i in range(scrubbers.count()):
        _check_player(page, scrubbers.nth(i), name, i)
        if i == 0:
            scrubbers.nth(i).screenshot(path=str(ARTIFACTS / f"{name}_scrubber_end.png"))
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
    assert errors == [], f"{name}: page errors {errors}"
    assert blocked == [], f"{name}: the report tried to reach the network: {blocked[:3]}"
    page.context.close()


# -- the export on a small fixture notebook -------------------------------------------------------
def _fixture_notebook():
    wide = "".join(f"<td>column_{i:03d}_value</td>" for i in range(120))
    wide = f"<table><tr>{wide}</tr></table>"
    scrubber = Scrubber(lambda fig, v: fig.add_subplot().plot([0, v]), [1, 2, 3], label="step")
    code = new_code_cell("price = '$5'  # $x$ stays code\nprint(price, '$y$')")
    code.outputs = [new_output("stream", name="stdout", text="$5 $y$\n"),
                    new_output("display_data", data={"text/html": wide}),
                    new_output("display_data", data={"text/html": scrubber.player_html()})]
    return new_notebook(cells=[
        new_markdown_cell("# Rates with $\\eta$\n\nThe step $\\eta < 2/\\lambda_{\\max}$ and the "
                          "update\n\n$$\n\\theta_{t+1} = \\theta_t - \\eta \\frac{g_t}"
                          "{\\sqrt{v_t} + \\epsilon}\n$$\n\nin `code $z$` and\n\n```\n$w$\n```"),
        new_markdown_cell("Prices stay text: \\$3, costs $5 and $10."),
        code,
    ])


def test_fixture_formulas_render_as_mathml_offline_and_dollars_elsewhere_stay(browser, tmp_path):
    page_file = tmp_path / "fixture.html"
    page_file.write_text(to_html(_fixture_notebook(), where="fixture"), encoding="utf-8")
    blocked, errors = [], []
    page = _offline_page(browser, blocked, errors)
    page.goto(page_file.as_uri(), wait_until="load")
    assert page.locator("math").count() == 3
    assert page.locator('math[display="block"]').count() == 1
    assert page.evaluate("getComputedStyle(document.querySelector('math[display=block]')).display"
                         ) == "block math", "Chromium lays out MathML natively"
    assert page.locator("mfrac").count() == 1 and page.locator("msqrt").count() == 1
    heading = page.locator("h1")
    assert heading.locator("math").count() == 1 and "$" not in heading.inner_text()
    markdown = page.locator(".jp-MarkdownCell")
    assert "$z$" in markdown.nth(0).locator("code").first.inner_text(), "code spans stay TeX"
    assert "$w$" in markdown.nth(0).locator("pre").inner_text(), "fenced code stays TeX"
    assert "$3, costs $5 and $10." in markdown.nth(1).inner_text(), "prices are not formulas"
    code = page.locator(".jp-CodeCell")
    assert "$x$" in code.locator(".jp-InputArea-editor").text_content(), "code stays code"
    assert "$5 $y$" in code.locator(".jp-OutputArea-output").first.inner_text()
    _check_layout(page, "fixture")
    _check_player(page, page.locator(".gradkit-scrubber"), "fixture", 0)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "fixture_math.png"), full_page=True)
    assert errors == [] and blocked == []
    page.context.close()


def test_index_links_every_report_with_headlines(reports, browser):
    blocked, errors = [], []
    page = _offline_page(browser, blocked, errors)
    page.goto((reports / "index.html").as_uri())
    hrefs = page.eval_on_selector_all("a", "links => links.map(a => a.getAttribute('href'))")
    assert sorted(hrefs) == sorted(f"{n}.html" for n in NAMES)
    # every notebook's status cell says ok (headline values may mention failed runs)
    statuses = page.eval_on_selector_all(
        "tr td:nth-child(2)", "cells => cells.map(c => c.textContent.trim())")
    assert statuses == ["ok"] * len(NAMES), statuses
    assert page.locator("li").count() >= len(NAMES), "every notebook reports headline numbers"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "index.png"), full_page=True)
    assert errors == [] and blocked == []
    page.context.close()
