"""Pictures: every figure the notebooks write, and the epoch scrubber.

- :mod:`~gradkit.viz.figures`     ``publish`` (save atomically under the study's name, show once)
- :mod:`~gradkit.viz.scrubber`    ``Scrubber``: ipywidgets live, a JavaScript player in reports
- :mod:`~gradkit.viz.ghm`         notebook 01's figures
- :mod:`~gradkit.viz.verdicts`    notebook 01's paired differences
- :mod:`~gradkit.viz.noise`       notebook 02's noise-scale figures
- :mod:`~gradkit.viz.distributed` notebook 02's noise scale inside DDP training
- :mod:`~gradkit.viz.similarity`  notebook 03's matrices, t-SNE maps and trend
- :mod:`~gradkit.viz.multitask`   notebook 04's figures
- :mod:`~gradkit.viz.lectures`    notebook 05's figures, sections 1–3, 6, 7
- :mod:`~gradkit.viz.optim`       notebook 05's figures, sections 4, 5, 8, 9
"""

from gradkit.viz.figures import figures_written, publish, save_figure
from gradkit.viz.scrubber import Scrubber, in_report_mode

__all__ = ["Scrubber", "figures_written", "in_report_mode", "publish", "save_figure"]
