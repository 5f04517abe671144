"""Track your own training: gradient statistics inside any PyTorch loop, from its own backward.

- :mod:`~gradkit.track.tracker`  ``Tracker``: per-sample norms, noise scale, Gram matrices
- :mod:`~gradkit.track.capture`  the hooks on the model's layers and the first step's checks
- :mod:`~gradkit.track.record`   the run folder (atomic, appended across restarts), ``load_run``
- :mod:`~gradkit.track.lightning`  ``GradientTracker``: the tracker as a Lightning ``Callback``
  (imported on first use: ``import gradkit.track`` does not import ``lightning``)

Under ``DistributedDataParallel``: :class:`gradkit.distributed.DDPTracker`.

Wrap forward and backward of each step; nothing else of the loop changes, and no extra forward
or backward runs (the first step adds one of one sample with ``loss_fn``):

>>> import tempfile, torch, torch.nn.functional as F
>>> from gradkit.track import Tracker, load_run
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
>>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
>>> out = tempfile.mkdtemp() + "/run"
>>> tracker = Tracker(model, out, gram_every=2)
>>> for step in range(4):
...     x, y = torch.randn(6, 8), torch.randint(0, 3, (6,))
...     with tracker.step(labels=y, epoch=0):
...         loss = F.cross_entropy(model(x), y)
...         optimizer.zero_grad()
...         loss.backward()
...     optimizer.step()
>>> tracker.close()
>>> run = load_run(out)
>>> len(run.scalars), sorted(run.grams), tuple(run.grams[2].shape)
(4, [0, 2], (6, 6))
"""

from gradkit.track.capture import TrackerCheckError, untracked_reason
from gradkit.track.record import COLUMNS, Run, load_run
from gradkit.track.tracker import Tracker


def __getattr__(name: str):
    if name == "GradientTracker":  # lazily: importing it imports lightning
        from gradkit.track.lightning import GradientTracker

        return GradientTracker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["COLUMNS", "GradientTracker", "Run", "Tracker", "TrackerCheckError",
           "load_run", "untracked_reason"]
