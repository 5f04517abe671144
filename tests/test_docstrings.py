"""Docstrings state definitions and reasons; benchmark figures live in benchmarks/README.md."""

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "gradkit"
FIGURE = re.compile(r"[0-9] ?ms\b|measured")


def test_no_benchmark_figures_in_the_package():
    found = [f"{p.relative_to(PACKAGE)}:{i}: {line.strip()}"
             for p in sorted(PACKAGE.rglob("*.py"))
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if FIGURE.search(line)]
    assert not found, "timings belong in benchmarks/README.md:\n" + "\n".join(found)
