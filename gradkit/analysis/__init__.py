"""Analysis: what the notebooks measure on training runs, and the rules that read the numbers.

Composes :mod:`gradkit.training` runs with :mod:`gradkit.grads` quantities; every decision rule a
notebook states lives here (or in :mod:`gradkit.stats`) with a unit test.

- :mod:`~gradkit.analysis.ghm`         GHM statistics per epoch, raw vs GHM tables (notebook 01)
- :mod:`~gradkit.analysis.noise`       the noise scale at every checkpoint (notebook 02)
- :mod:`~gradkit.analysis.similarity`  phases of the similarity statistics (notebook 03)
- :mod:`~gradkit.analysis.multitask`   per-run and per-method tables (notebook 04)
"""
