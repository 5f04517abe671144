"""gradkit: see how a neural network trains through its gradients.

One module per job:

- ``paths``      where data, checkpoints, figures and reports live (always from the project root)
- ``device``     picks cuda / mps / cpu
- ``data``       the synthetic acoustic data set, the loader for real recordings, log-mel features
- ``models``     ``ResNetAudioRanker``
- ``losses``     GHM-C and the (GHM-harmonised) pairwise ranking loss
- ``train``      seeded, resumable training runs, found again by their configuration
- ``grads``      exact per-sample, per-batch and full-data gradients (``torch.func``)
- ``gns``        gradient noise scale and the critical batch size
- ``similarity`` cosine-similarity matrices, their statistics, t-SNE of gradient directions
- ``multitask``  GradNorm, uncertainty weighting, PCGrad on a detection + classification task
- ``multitask_data`` the synthetic detection + classification task
- ``features``   log-mel features and the train/validation split
- ``ghm_analysis`` GHM statistics and figures of notebook 01
- ``hessian``    Hessian-vector products, Lanczos eigenvalues, trace and spectral density
- ``optimizers`` the lecture notes' update rules (momentum, AdaGrad, RMSProp, Adam), schedules
- ``notes``      the other checks of notebook 05 (critical points, Hoeffding, BatchNorm, …)
- ``checkpoint`` atomic, checked checkpoint files
- ``headlines``  a notebook's headline numbers, collected for the report index
- ``widgets``    epoch scrubbers: ipywidgets live, a JavaScript player in the HTML report
- ``report``     executes the notebooks and exports the HTML reports
"""

__version__ = "0.1.0"
