"""Analysis: what the notebooks measure on training runs, and the rules that read the numbers.

Composes :mod:`gradkit.training` runs with :mod:`gradkit.grads` quantities; every decision rule a
notebook states lives here (or in :mod:`gradkit.stats`) with a unit test.

- :mod:`~gradkit.analysis.learnability`  is the condition learnable at all? the gate before any
  comparison (01, 02, 03, 05): ``learnability_gate(baseline_accuracy(fold_set.splits, 6),
  summary.chance).comparable``
- :mod:`~gradkit.analysis.ghm`         GHM statistics per epoch, raw vs GHM tables (notebook 01)
- :mod:`~gradkit.analysis.noise`       the noise scale at every checkpoint, study variants (02)
- :mod:`~gradkit.analysis.objective_grads`  per-sample gradients of the trained GHM objective
- :mod:`~gradkit.analysis.advice`      failed-run, plateau and interval rules behind 02's advice
- :mod:`~gradkit.analysis.similarity`  one checkpoint's similarity measurements, phases, trends (03)
- :mod:`~gradkit.analysis.conflicts`   conflicting clips, failing classes, class-mean baseline (03)
- :mod:`~gradkit.analysis.control`     each similarity statistic's excess over its label-permuted
  control: label-induced against data-induced structure (03)
- :mod:`~gradkit.analysis.multitask`   per-run and per-method tables (notebook 04)
- :mod:`~gradkit.analysis.verdicts`    GHM vs raw over seeds x folds (notebook 01)
- :mod:`~gradkit.analysis.advice`      batch-size advice after the plateau and failed-run checks
- :mod:`~gradkit.analysis.objective_grads`  per-sample gradients of the trained GHM objective
- :mod:`~gradkit.analysis.conflicts`   clips whose gradient opposes their class or the data
- :mod:`~gradkit.analysis.runs`        a tracked run (:mod:`gradkit.track`) read by 02 and 03:
  did its loss fall, its noise scale per step and epoch, its logged Gram matrices
"""
