"""``GradientTracker``: the :class:`~gradkit.track.Tracker` as a Lightning ``Callback``.

The callback wraps the tracker's step around each training batch's forward and backward
(entered at ``on_train_batch_start``, left at ``on_after_backward``, before the optimizer's
step), so the ``Trainer`` records the same run folder a plain loop would (:func:`load_run`
reads it). Row ``k`` is the batch at the ``Trainer``'s ``global_step`` ``k`` (a batch whose
``training_step`` returns None runs no backward and has no row); a fit resumed from a
checkpoint (``trainer.fit(..., ckpt_path=...)``) continues the record from the checkpoint's
step, superseding the rows recorded after it (a fit from step 0 into a folder that holds a
run supersedes all of it: give a new ``out`` to keep both).

Needs ``lightning`` (``pip install lightning``); ``import gradkit.track`` does not import it.

>>> import tempfile, torch, torch.nn.functional as F
>>> import lightning as L
>>> from gradkit.track import load_run
>>> from gradkit.track.lightning import GradientTracker
>>> class Net(L.LightningModule):
...     def __init__(self):
...         super().__init__()
...         self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(),
...                                        torch.nn.Linear(8, 3))
...     def training_step(self, batch, batch_idx):
...         x, y = batch
...         return F.cross_entropy(self.net(x), y)  # the mean over the batch
...     def configure_optimizers(self):
...         return torch.optim.SGD(self.parameters(), lr=0.1)
>>> data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randint(0, 3, (16,)))
>>> out = tempfile.mkdtemp() + "/run"
>>> trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False,
...                     enable_checkpointing=False, enable_progress_bar=False,
...                     enable_model_summary=False, callbacks=[GradientTracker(out, gram_every=2)])
>>> trainer.fit(Net(), torch.utils.data.DataLoader(data, batch_size=8))
>>> run = load_run(out)
>>> list(run.scalars["step"]), sorted(run.grams)
([0, 1, 2, 3], [0, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

try:
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
except ImportError as err:  # pragma: no cover - exercised with lightning hidden
    raise ImportError("gradkit.track.lightning needs the lightning package (pip install "
                      f"lightning; gradkit's 'track' extra pins it): {err}") from err

from gradkit.track.tracker import Tracker

__all__ = ["GradientTracker", "default_labels"]

_LABEL_KEYS = ("labels", "label", "y", "target", "targets")


def default_labels(batch):
    """The labels of a batch: ``batch[1]`` of an ``(x, y, ...)`` tuple or list, the first of
    ``labels``, ``label``, ``y``, ``target``, ``targets`` of a dict; otherwise None (the
    tracker then counts the samples from dim 0 of the first tracked layer's input)."""
    if isinstance(batch, tuple | list) and len(batch) >= 2:
        return batch[1]
    if isinstance(batch, dict):
        return next((batch[k] for k in _LABEL_KEYS if k in batch), None)
    return None


class GradientTracker(L.Callback):
    """Records gradient statistics of a ``Trainer``'s fit into the run folder ``out``.

    ``labels``: ``labels(batch)`` gives the batch's labels (dim 0: the samples; default
    :func:`default_labels`); ``inputs``: ``inputs(batch)``, for the tracker's first-step
    coupling check and its exact fallback with ``loss_fn`` (``loss_fn(pl_module(x), y)`` must be
    the per-sample loss the ``training_step`` averages); ``tensorboard``: "auto" logs to the
    ``Trainer``'s first ``TensorBoardLogger`` if it has one (tags ``gradkit/...``; a resumed fit
    logging into the same logger version leaves that version's events after the checkpoint's
    step in place), True to ``out/tensorboard`` (those are hidden), False nowhere. Every other
    keyword goes to :class:`~gradkit.track.Tracker` (``gram_every``, ``reduction``, ``ema``,
    ``sketch_k``, ...). The ``training_step``'s loss must be reduced over the batch as
    ``reduction`` says, with one backward per batch.

    Refused with an error (the per-sample rows would not be those of the step's gradient):
    manual optimization, ``accumulate_grad_batches > 1``. With several processes (a DDP
    strategy) only global rank 0 records and writes, as :class:`gradkit.distributed.DDPTracker`
    does: its rows are the per-sample statistics of rank 0's *local* batch, from its own
    backward's gradient (``Tracker(local_grads=True)``), not the all-reduced ``.grad``; the
    other ranks compute nothing (the DDP noise hook is not attached: Lightning's strategy owns
    DDP's communication hook). With a ``GradScaler`` (``precision="16-mixed"`` on a GPU) its
    scale is divided out of every number. The run folder is complete when the fit ends (or
    fails: the rows so far are written).
    """

    def __init__(self, out: str | Path, *, labels: Callable | None = None,
                 inputs: Callable | None = None, tensorboard: bool | str = "auto",
                 **tracker_kwargs):
        super().__init__()
        if tensorboard not in ("auto", True, False):
            raise ValueError(f"tensorboard must be 'auto', True or False, got {tensorboard!r}")
        for name in ("resume", "start_step"):
            if name in tracker_kwargs:
                raise TypeError(f"GradientTracker sets {name!r} itself (from the Trainer's "
                                "checkpoint): do not pass it")
        self.out, self.labels, self.inputs = Path(out), labels or default_labels, inputs
        self.tensorboard, self.tracker_kwargs = tensorboard, tracker_kwargs
        self.tracker: Tracker | None = None
        self._step = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        problem = (
            "manual optimization (automatic_optimization=False)"
            if not pl_module.automatic_optimization else
            f"accumulate_grad_batches={trainer.accumulate_grad_batches}"
            if trainer.accumulate_grad_batches != 1 else None)
        if problem is not None:
            raise ValueError(f"GradientTracker: {problem} is not supported: the tracker needs "
                             "one backward of the batch's own loss per optimizer step")
        if not trainer.is_global_zero:
            return  # only rank 0 records (and writes)
        writer = self.tensorboard
        if writer == "auto":
            writer = next((lg.experiment for lg in trainer.loggers
                           if isinstance(lg, TensorBoardLogger)), False)
        # the checkpoint's step: a resumed fit supersedes what was recorded after it
        self.tracker = Tracker(pl_module, self.out, resume=True, start_step=trainer.global_step,
                               tensorboard=writer, local_grads=trainer.world_size > 1,
                               **self.tracker_kwargs)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.tracker is None:  # a rank other than 0
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        scale = float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0
        inputs = self.inputs(batch) if self.inputs is not None else None
        self.tracker.step_index = trainer.global_step  # a skipped batch still counts a step
        self._step = self.tracker.step(labels=self.labels(batch), epoch=trainer.current_epoch,
                                       inputs=inputs, grad_scale=scale)
        self._step.__enter__()

    def on_after_backward(self, trainer, pl_module) -> None:
        step, self._step = self._step, None
        if step is not None:
            step.__exit__(None, None, None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._abandon()  # no backward ran (training_step returned None): nothing recorded

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._close()  # the rows recorded so far are kept

    def _abandon(self) -> None:
        step, self._step = self._step, None
        if step is not None:
            step.__exit__(RuntimeError, None, None)

    def _close(self) -> None:
        self._abandon()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
