"""The package's folders are its architecture: imports point down the layers, modules stay small."""

import ast
import subprocess
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradkit"
# Bottom to top. A module may import from its own layer and the layers below, never above.
LAYERS = {
    "core": 0, "stats": 0,
    "data": 1,
    "models": 2, "losses": 2,
    "grads": 3,
    "training": 4, "track": 4,
    "analysis": 5, "lectures": 5, "distributed": 5,
    "viz": 6,
    "report": 7,
}
MAX_LINES = 400
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def _subpackage(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0]


def _imported_subpackages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "gradkit" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_every_subpackage_has_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(LAYERS), f"give {sorted(folders - set(LAYERS))} a layer"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    own = LAYERS[_subpackage(path)]
    upward = {name for name in _imported_subpackages(path) if LAYERS.get(name, -1) > own}
    assert not upward, f"{path.relative_to(PACKAGE)} imports from a higher layer: {upward}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (> {MAX_LINES})"


def _seeds_the_global_rng(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "manual_seed" and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"):
            return True
    return False


def test_no_global_seeding_in_library_code():
    """Randomness goes through gradkit.core.seeding, which forks the RNG first."""
    offenders = [str(p.relative_to(PACKAGE)) for p in MODULES
                 if p.name != "seeding.py" and _seeds_the_global_rng(p)]
    assert not offenders, offenders


def test_project_root_is_the_folder_with_pyproject(monkeypatch):
    from gradkit.core.paths import project_root

    monkeypatch.delenv("GRADKIT_ROOT", raising=False)
    assert (project_root() / "pyproject.toml").is_file()
    assert project_root() == PACKAGE.parent


def _tracked_in_package() -> list[str] | None:
    """``git ls-files gradkit`` (paths relative to the package), or ``None`` outside a checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "gradkit"], cwd=PACKAGE.parent,
                                capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return [Path(p).relative_to("gradkit").as_posix()
            for p in listed.stdout.decode().split("\0") if p]


def test_git_tracks_only_source_files_in_the_package():
    """Generated data, figures or reports committed under ``gradkit/`` belong in the project
    root's ``data/``, ``figures/``, ``reports/`` (git-ignored), never in the package."""
    tracked = _tracked_in_package()
    if tracked is None:
        pytest.skip("not a git checkout")
    assert tracked, "git ls-files found no package files: is this the gradkit checkout?"
    others = [p for p in tracked if not p.endswith(".py")]
    assert not others, f"{len(others)} non-source files tracked under gradkit/: {others[:10]}"


def test_the_package_folder_holds_only_source_files():
    """The working tree too: a stray output under ``gradkit/`` means some code wrote into the
    package instead of the project root (see ``gradkit.core.paths``)."""
    others = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*")
                    if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts)
    assert not others, f"{len(others)} non-source files under gradkit/: {others[:10]}"
