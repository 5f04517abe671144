"""Reports: execute the notebooks, export self-contained HTML, index them with headline numbers.

- :mod:`~gradkit.report.runner`     ``build_reports`` / ``python -m gradkit.report``
- :mod:`~gradkit.report.headlines`  a notebook's headline numbers, collected for the index
- :mod:`~gradkit.report.interrupts` Ctrl-C / SIGTERM stop a report and its kernel at once
- :mod:`~gradkit.report.runs`       notebooks 02 and 03 on a run recorded by ``gradkit.track``:
  ``build_reports(run="runs/my_experiment")`` (``python -m gradkit.report --run …``)
"""

from gradkit.report.headlines import collect_headlines, show_headlines
from gradkit.report.interrupts import Interrupted
from gradkit.report.runner import build_reports, main, notebook_paths

__all__ = ["Interrupted", "build_reports", "collect_headlines", "main", "notebook_paths",
           "show_headlines"]
