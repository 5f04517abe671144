"""The live sliders in a real front end: JupyterLab 4 in headless Chromium, nothing but localhost.

A Jupyter server from this environment (127.0.0.1, a free port, a random token) serves a
temporary copy of ``notebooks/`` with the smoke parameters injected (:mod:`gradkit.report.smoke`);
Playwright drives Debian's Chromium: open the notebook, run all cells (training runs are reused
from ``build/smoke/checkpoints/``; ``make test`` builds the smoke reports first),
find the slider by its label, drag it and assert that the figure follows the drag in place (the
same ``<img>`` element, a new picture, while the mouse button is still down), the label is whole,
and no "Error displaying widget", traceback or dead kernel appears. Every request and websocket
that is not the local server is refused and fails the test. Screenshots go to
``test-artifacts/lab/``. The server is stopped whatever happens, and the committed notebooks are
unchanged afterwards (checked by hash). Without Chromium the test is skipped.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from gradkit.core.paths import project_root
from gradkit.report.parameters import inject
from gradkit.report.smoke import SMOKE_OUTPUT, smoke_parameters

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = project_root() / "test-artifacts" / "lab"
NOTEBOOKS = project_root() / "notebooks"
RUN_TIMEOUT_S = 900  # one notebook's "run all", cached training runs or not
# One live notebook in the default tier: 03's and 05's sliders are the same Scrubber as 01's,
# dragged in the full tier.
CASES = [("01_train_ghm", "epoch"),
         pytest.param("03_similarity_tsne", "epoch", marks=pytest.mark.slow),
         pytest.param("05_optimizer_notes", "learning rate", marks=pytest.mark.slow)]


def _hashes() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(NOTEBOOKS.glob("*")) if p.suffix in (".ipynb", ".py")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the Jupyter server exited ({server.returncode}):\n"
                        f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the Jupyter server did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server with its kernels (its own process group), however it ended."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium not found: install Debian's package with "
                    "`apt-get install -y chromium` (or set CHROMIUM=/path/to/chromium)")
    before = _hashes()
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    smoke = smoke_parameters()
    for p in NOTEBOOKS.glob("*.ipynb"):  # with the smoke parameters, as make test's reports
        nb = nbformat.read(p, as_version=4)
        inject(nb, smoke.get(p.stem, {}))
        nbformat.write(nb, root / p.name)
    news = home / "settings" / "@jupyterlab" / "apputils-extension"
    news.mkdir(parents=True)  # no "official Jupyter news?" toast over the notebook
    (news / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_PREFER_ENV_PATH="1", JUPYTER_CONFIG_DIR=str(home / "config"),
               GRADKIT_OUTPUT=SMOKE_OUTPUT,
               JUPYTER_RUNTIME_DIR=str(home / "runtime"))
    env.pop("GRADKIT_REPORT", None)  # live sliders, not the report player
    log = home / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             f"--LabServerApp.user_settings_dir={home / 'settings'}",
             f"--LabServerApp.workspaces_dir={home / 'workspaces'}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root
            cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{base}/api/status?token={token}", server, log)
        yield {"base": base, "token": token, "root": root, "log": log}
    finally:
        _stop(server)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log, ARTIFACTS / "server.log")
    assert _hashes() == before, "the committed notebooks changed while JupyterLab ran"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield browser
        finally:
            browser.close()


def _local_page(browser, base: str, refused: list[str]):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.route("**/*", lambda route: (
        route.continue_() if route.request.url.startswith(base)
        else (refused.append(route.request.url), route.abort())[1]))
    page = context.new_page()
    ws_base = base.replace("http://", "ws://")
    page.on("websocket", lambda ws: ws.url.startswith(ws_base) or refused.append(ws.url))
    return page


# From the notebook's model (cells scrolled out of view may not be in the page): "error" when a
# cell raised, "done" when every code cell has run and the kernel is idle, else "running".
_STATE = """() => {
  const panel = window.jupyterapp.shell.currentWidget, cells = panel.content.model.cells;
  let done = true;
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    for (let j = 0; j < cell.outputs.length; j++)
      if (cell.outputs.get(j).type === 'error') return 'error in cell ' + (i + 1);
    if (cell.executionCount === null) done = false;
  }
  return done && panel.sessionContext.session.kernel.status === 'idle' ? 'done' : 'running';
}"""


def _run_all(page, name: str) -> None:
    page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell"
                           ".currentWidget; return w && w.sessionContext && w.sessionContext"
                           ".session && w.sessionContext.session.kernel; }", timeout=180_000)
    kernel = page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext"
                           ".kernelDisplayName")
    assert "gradkit" in kernel, f"{name} opened with the kernel {kernel!r}, not gradkit's"
    module = page.evaluate(_ASK, "import gradkit; print(gradkit.__file__)").strip()
    assert Path(module) == project_root() / "gradkit" / "__init__.py", \
        f"{name}: the kernel runs {module}, not this clone's gradkit"
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(f"() => ({_STATE})() !== 'running'", timeout=RUN_TIMEOUT_S * 1000,
                           polling=1000)
    state = page.evaluate(f"({_STATE})()")
    assert state == "done", f"{name}: {state}"


_ASK = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, silent: false, store_history: false});
  let text = '';
  future.onIOPub = msg => { if (msg.header.msg_type === 'stream') text += msg.content.text; };
  await future.done;
  return text;
}"""

_ROUND_TRIP = """async () => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  await kernel.requestExecute({code: "pass", silent: true, store_history: false}).done;
}"""


def _wait_idle(page) -> None:
    """The moves sent so far handled and their frame shown.

    The kernel handles messages in order: an empty request's reply comes once every move sent
    before it has been drawn; then the page applies the last frame.
    """
    for _ in range(2):
        page.wait_for_timeout(300)
        page.evaluate(_ROUND_TRIP)
    page.wait_for_timeout(700)


_PNG = "async e => { const b = await (await fetch(e.src)).arrayBuffer(); " \
       "const v = new Uint8Array(b); let h = 0; " \
       "for (let i = 0; i < v.length; i++) h = (h * 31 + v[i]) >>> 0; return v.length + ':' + h; }"


def _errors(page) -> list[str]:
    problems = []
    for text in ("Error displaying widget", "Traceback (most recent call last)",
                 "The kernel appears to have died", "Kernel Restarting"):
        if page.get_by_text(text).count():
            problems.append(text)
    return problems


@pytest.mark.parametrize("name, label", CASES)
def test_slider_redraws_its_figure_in_place_while_dragged(lab, browser, name, label, smoke_report):
    assert smoke_report(name).ok, f"{name} failed with the smoke parameters"  # its runs cached
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    refused: list[str] = []
    page = _local_page(browser, lab["base"], refused)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        page.goto(f"{lab['base']}/lab/tree/{name}.ipynb?reset&token={lab['token']}")
        _run_all(page, name)
        assert _errors(page) == [], f"{name}: {_errors(page)} after running all cells"

        sliders = page.locator(".widget-slider", has=page.locator(
            ".widget-label", has_text=label))
        assert sliders.count() >= 1, f"{name}: no slider labelled {label!r}"
        slider = sliders.first
        box = page.locator(".widget-vbox", has=slider).last
        image = box.locator("img.widget-image")
        assert image.count() == 1, f"{name}: the slider's figure is not one image widget"
        slider.scroll_into_view_if_needed()
        title = slider.locator(".widget-label").first
        assert title.text_content() == label, slider.evaluate("e => e.outerHTML")[:2000]
        assert title.evaluate("e => e.scrollWidth <= e.clientWidth"), f"{name}: label cut off"
        height = image.evaluate("e => e.getBoundingClientRect().height")
        assert 0 < height <= 900 * 0.8 + 1, f"{name}: the figure is {height:.0f} px tall"
        image.evaluate("e => { e.dataset.gkSame = '1'; }")  # marks this very element
        before = image.get_attribute("src")
        image.screenshot(path=str(ARTIFACTS / f"{name}_before.png"))

        handle = slider.locator(".noUi-handle").first
        track = slider.locator(".noUi-target").first.bounding_box()
        start = handle.bounding_box()
        page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + track["width"] + 40, start["y"] + start["height"] / 2,
                        steps=12)  # past the end of the track: the handle stops at the last value
        # Still holding the button: the figure must follow the drag, not wait for the release.
        page.wait_for_function("([e, src]) => e.src !== src && e.complete && e.naturalWidth > 0",
                               arg=[image.element_handle(), before], timeout=120_000)
        page.mouse.up()
        _wait_idle(page)
        assert image.evaluate("e => e.dataset.gkSame") == "1", "the output was cleared and redrawn"
        assert box.locator("img.widget-image").count() == 1
        image.screenshot(path=str(ARTIFACTS / f"{name}_after.png"))
        after_drag = image.evaluate(_PNG)
        readout = slider.locator(".widget-readout").first.text_content()
        # The frame left after the drag is the one for where the handle stopped (the last
        # value), not a position it passed: compare with the last value chosen by keyboard.
        handle.focus()
        page.keyboard.press("Home")
        _wait_idle(page)
        assert image.evaluate(_PNG) != after_drag, "Home shows the first frame"
        page.keyboard.press("End")
        _wait_idle(page)
        assert slider.locator(".widget-readout").first.text_content() == readout
        assert image.evaluate(_PNG) == after_drag, "after the drag: the last position's frame"
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        assert _errors(page) == [], f"{name}: {_errors(page)} after moving the slider"
        assert refused == [], f"{name}: requests beyond the local server: {refused[:3]}"
        assert page_errors == [], f"{name}: page errors {page_errors[:3]}"
    finally:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
        page.context.close()
