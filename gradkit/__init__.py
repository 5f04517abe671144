"""gradkit: see how a neural network trains through its gradients.

The subpackages are the layers of the workbook, bottom to top; a module imports only from its own
layer and the layers below (``tests/test_layout.py`` checks it):

=========  =================================================================================
layer      subpackages
=========  =================================================================================
report     ``report``     execute the notebooks, export self-contained HTML, the index
viz        ``viz``        every figure the notebooks write; the epoch scrubber
analysis   ``analysis``   what the notebooks measure on runs, and the rules that read the numbers
           ``lectures``   the optimisation notes' rules and demonstrations, one module per topic
           ``distributed`` the noise scale inside DistributedDataParallel training
training   ``training``   seeded, resumable runs; the loop; the multi-task training
grads      ``grads``      per-sample / batch / full gradients, noise scale, similarity, Hessian
models     ``models``     ``ResNetAudioRanker``, the plain CNN, the multi-task networks
losses     ``losses``     GHM-C, GHM ranking, task losses, task weighting
data       ``data``       recordings (generator + loader), log-mel features, multi-task events
core       ``core``       paths, device, atomic files, checkpoints, parameters, seeding
           ``stats``      every "is this difference real" decision (paired tests, intervals)
=========  =================================================================================

Each subpackage's ``__init__`` documents its public API, e.g.
``from gradkit.grads import per_sample_grads, noise_scale``.
"""

__version__ = "0.1.0"
