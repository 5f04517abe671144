"""The workbook on a user's run: ``python -m gradkit.report --run FOLDER``.

``examples/track_your_training.py``'s model is trained a few epochs with the tracker into
``tmp_path``; notebooks 02 and 03 run on that folder (outputs under ``tmp_path`` through
``GRADKIT_OUTPUT``) into ``reports/<run name>/`` and ``figures/<run name>/``, the folder keeps
every byte, and ``reports/index.html`` lists the run. In headless Chromium (as
``test_reports_browser.py`` drives it) both reports load with no console error and their
slider moves the figure. Those take two notebook kernels, most of a minute on a loaded machine:
marked slow; the fast tier runs the same runner on the same run with the cells executed in
process. A bad folder is refused before any notebook starts, naming it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import matplotlib
import nbformat
import pytest

matplotlib.use("Agg")

from gradkit.core.paths import OUTPUT_ENV, project_root
from gradkit.report.export import find_math
from gradkit.report.runs import RUN_TAG, runs_html, select_cells

NAMES = ("02_gns_trend", "03_similarity_tsne")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def train_example(out: Path, epochs: int = 2) -> Path:
    spec = importlib.util.spec_from_file_location(
        "track_your_training", project_root() / "examples" / "track_your_training.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.main(out, epochs=epochs, clips=64, batch_size=16, gram_every=2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """``(run folder, its digest)``: the example's model trained two epochs with the tracker."""
    folder = train_example(tmp_path_factory.mktemp("workbook_on_run") / "runs" / "my_experiment")
    return folder, digest(folder)


def in_process(path: Path, timeout: int = 900, stop=None):
    """The runner's ``execute`` without a kernel: the same injection and cell selection, the
    code cells executed here in one namespace (for the fast tier: no kernel start)."""
    from gradkit.report.parameters import active_parameters, inject_active

    nb = nbformat.read(path, as_version=4)
    inject_active(nb, path.stem)
    select_cells(nb, run=active_parameters(path.stem).get("RUN") is not None)
    namespace: dict = {}
    for cell in nb.cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, path.name, "exec"), namespace)  # noqa: S102
    return nb


def report_run(folder: Path, out: Path, monkeypatch, kernel: bool):
    from gradkit.report import build_reports

    monkeypatch.setenv(OUTPUT_ENV, str(out))
    monkeypatch.delenv("GRADKIT_CONDITION", raising=False)
    if not kernel:
        monkeypatch.setattr("gradkit.report.runner.execute", in_process)
    return build_reports(list(NAMES), run=folder, parameters={"N_BOOT": 50})


def check_reported(folder: Path, before: dict, out: Path, results) -> None:
    assert [r.name for r in results] == list(NAMES)
    assert all(r.ok for r in results), [(r.name, r.error[-800:]) for r in results if not r.ok]
    assert digest(folder) == before, "the run folder was written into"
    reports = out / "reports" / "my_experiment"
    for name in NAMES:
        assert (reports / f"{name}.html").is_file()
    assert not (out / "reports" / "02_gns_trend.html").exists(), "the study's report slot"
    figures = sorted(p.name for p in (out / "figures" / "my_experiment").iterdir())
    assert "run_b_simple.png" in figures and any(f.startswith("run_similarity_step_")
                                                  for f in figures)
    assert not (out / "figures" / "run_b_simple.png").exists()
    record = json.loads((reports / "run.json").read_text(encoding="utf-8"))
    assert record["run"] == str(folder.resolve()) and record["ok"]
    top = (out / "reports" / "index.html").read_text(encoding="utf-8")
    assert "Your runs" in top and "my_experiment/02_gns_trend.html" in top
    assert "my_experiment/03_similarity_tsne.html" in top


def test_the_notebooks_run_cells_execute_on_a_tracked_run(trained, tmp_path, monkeypatch):
    """The fast tier's equivalent of the kernel test below: the same runner, the run's cells
    executed in this process."""
    folder, before = trained
    results = report_run(folder, tmp_path / "out", monkeypatch, kernel=False)
    check_reported(folder, before, tmp_path / "out", results)


@pytest.fixture(scope="module")
def reported(trained, tmp_path_factory):
    """``(run folder, its digest before, output root, results)``: reported by the kernels."""
    folder, before = trained
    out = tmp_path_factory.mktemp("kernel_out")
    with pytest.MonkeyPatch.context() as env:
        results = report_run(folder, out, env, kernel=True)
    return folder, before, out, results


@pytest.mark.slow  # two notebook kernels: most of a minute on a loaded machine
def test_the_notebooks_run_on_a_tracked_run_into_its_own_folders(reported):
    folder, before, out, results = reported
    check_reported(folder, before, out, results)
    heads = {k: v for r in results for k, v in r.headlines.items()}
    assert heads["did it learn (loss)"] in ("learned", "no detectable change", "loss rose",
                                            "too short to test")
    text = (out / "reports" / "my_experiment" / "02_gns_trend.html").read_text(encoding="utf-8")
    assert "Did the run learn?" in text
    assert ("describe an untrained model" in text) == (heads["did it learn (loss)"] != "learned")
    assert "learnability" not in " ".join(heads), "the study's gate ran on the run"
    assert "did it learn (loss)" in (out / "reports" / "index.html").read_text(encoding="utf-8")


def test_a_bad_run_folder_is_refused_naming_it(tmp_path, capsys, monkeypatch):
    from gradkit.report.runner import main

    monkeypatch.setenv(OUTPUT_ENV, str(tmp_path / "out"))
    missing = tmp_path / "nowhere"
    assert main(["--run", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().out
    (tmp_path / "plain").mkdir()
    assert main(["--run", str(tmp_path / "plain")]) == 2
    said = capsys.readouterr().out
    assert "no meta.json" in said and str(tmp_path / "plain") in said
    assert not (tmp_path / "out" / "reports").exists(), "a notebook ran on a bad folder"


def _imports_only(source: str) -> bool:
    lines = [line for line in source.splitlines() if line.strip()]
    return bool(lines) and all(line.startswith(("import ", "from ")) for line in lines)


def test_the_study_keeps_its_cells_and_a_run_gets_only_its_own():
    for name in NAMES:
        nb = nbformat.read(project_root() / "notebooks" / f"{name}.ipynb", as_version=4)
        run_cells = [c for c in nb.cells if RUN_TAG in c.metadata.get("tags", [])]
        assert run_cells, f"{name}: no cell tagged {RUN_TAG!r}"
        study = nbformat.from_dict(nb)
        select_cells(study, run=False)
        assert len(study.cells) == len(nb.cells) - len(run_cells)
        own = nbformat.from_dict(nb)
        select_cells(own, run=True)
        assert [c for c in own.cells if "parameters" not in c.metadata.get("tags", [])] \
            == run_cells
        # by hand in Jupyter with RUN = None, every run code cell does nothing but import
        assert all(c.source.startswith("if RUN is not None:") or _imports_only(c.source)
                   for c in run_cells if c.cell_type == "code")
        # the study's browser test counts the formulas of the whole notebook's markdown
        assert not any(find_math(c.source) for c in run_cells if c.cell_type == "markdown")


def test_the_index_lists_a_run_with_its_reports_and_headlines(tmp_path):
    from gradkit.report.index import NotebookResult, merge_index

    folder = tmp_path / "reports" / "exp_1"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"run": "/data/runs/exp_1", "updated": "now"}))
    merge_index(folder, [NotebookResult("02_gns_trend", "t", 1.0, ok=True,
                                        headlines={"batch-size advice": "keep batch"}),
                         NotebookResult("03_similarity_tsne", "t", 1.0, ok=False)])
    page = runs_html(tmp_path / "reports")
    assert "exp_1/02_gns_trend.html" in page and "keep batch" in page
    assert "/data/runs/exp_1" in page and "03_similarity_tsne <b" in page
    assert runs_html(tmp_path / "nothing") == ""


@pytest.mark.slow  # the kernels' reports of the test above
@pytest.mark.browser
def test_the_run_reports_load_in_chromium_and_their_sliders_move(reported):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium not found (apt-get install -y chromium, or set CHROMIUM=)")
    from playwright.sync_api import sync_playwright

    _, _, out, results = reported
    assert all(r.ok for r in results)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--headless", "--disable-gpu"])
        try:
            for name in NAMES:
                errors: list[str] = []
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.on("console", lambda m, e=errors: e.append(m.text) if m.type == "error"
                        else None)
                page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
                page.goto((out / "reports" / "my_experiment" / f"{name}.html").as_uri(),
                          wait_until="load")
                scrubber = page.locator(".gradkit-scrubber")
                assert scrubber.count() == 1, f"{name}: the run's slider is missing"
                frames = int(scrubber.get_attribute("data-frames"))
                assert frames >= 2, f"{name}: one frame only"
                image = scrubber.locator("img")
                first = image.get_attribute("src")
                slider = scrubber.locator("input[type=range]")
                slider.scroll_into_view_if_needed()
                slider.focus()
                page.keyboard.press("End")
                assert image.get_attribute("src") != first, f"{name}: the figure did not move"
                assert scrubber.locator(".gradkit-scrubber-label").inner_text().endswith(
                    f"({frames}/{frames})")
                assert errors == [], f"{name}: console errors {errors}"
                page.close()
        finally:
            browser.close()


def test_run_cells_by_hand_write_their_figures_under_the_run_name(tmp_path, monkeypatch):
    from gradkit.core.paths import figures_dir
    from gradkit.report.runs import use_run

    monkeypatch.setenv(OUTPUT_ENV, str(tmp_path / "out"))
    monkeypatch.delenv("GRADKIT_CONDITION", raising=False)
    assert use_run(tmp_path / "runs" / "exp_7") == "exp_7"
    assert figures_dir(create=False) == tmp_path / "out" / "figures" / "exp_7"
    monkeypatch.setenv("GRADKIT_CONDITION", "chosen_by_runner")
    assert use_run(tmp_path / "runs" / "exp_7") == "chosen_by_runner"


def test_a_name_already_used_by_another_run_or_condition_is_refused(trained, tmp_path,
                                                                   monkeypatch):
    from gradkit.report.runs import check_run_target

    folder, _ = trained
    monkeypatch.setenv(OUTPUT_ENV, str(tmp_path / "out"))
    assert check_run_target(folder) == (folder.resolve(), "my_experiment")
    used = tmp_path / "out" / "reports" / "my_experiment"
    used.mkdir(parents=True)
    (used / "run.json").write_text(json.dumps({"run": "/elsewhere/my_experiment"}))
    with pytest.raises(ValueError, match="/elsewhere/my_experiment.*--name"):
        check_run_target(folder)
    assert check_run_target(folder, "my_experiment_2")[1] == "my_experiment_2"
    (tmp_path / "out" / "reports" / "wood_1000hz").mkdir()
    (tmp_path / "out" / "reports" / "wood_1000hz" / "condition.json").write_text("{}")
    with pytest.raises(ValueError, match="data condition"):
        check_run_target(folder, "wood_1000hz")


def test_a_condition_never_takes_a_runs_folder_and_run_is_no_param(tmp_path, monkeypatch,
                                                                    capsys):
    """The reverse of the test above: a data condition named like a reported run is refused
    (it would overwrite the run's reports), and ``--param RUN=...`` (which would put run-only
    reports over the study's) is refused for --run."""
    from gradkit.report import runner
    from gradkit.report.parameters import resolve_condition

    monkeypatch.setenv(OUTPUT_ENV, str(tmp_path / "out"))
    used = tmp_path / "out" / "reports" / "myrun"
    used.mkdir(parents=True)
    (used / "run.json").write_text(json.dumps({"run": "/runs/myrun"}))
    with pytest.raises(ValueError, match="reports/myrun/ holds the reports of a tracked run"):
        resolve_condition(None, "wood", 1000, "myrun")
    assert runner.main(["--param", "RUN='/tmp/x'", "02"]) == 2
    assert "give the run folder as --run FOLDER" in capsys.readouterr().out
