"""The divergence guard: a training that blows up stops at once, naming where and what to change.

At every step :func:`gradkit.training.loop.fit_epoch` hands the loss to
:meth:`DivergenceGuard.check_loss` (before the backward pass: a diverged loss never reaches the
weights) and the trainable parameters, after the optimiser step, to
:meth:`DivergenceGuard.check_parameters`. A step fails the guard when

- the loss is not finite (NaN or ±inf), or
- the loss exceeds ``max_loss`` (:data:`MAX_LOSS` = 1e4 nats by default), or
- a trainable parameter is not finite.

The bound: an untrained :class:`~gradkit.models.ResNetAudioRanker` starts near
``ln 6 + 0.1 * softplus(10) = 2.8`` nats (raw objective), and GHM's re-weighting multiplies that
by a few; 1e4 nats is more than three thousand times the untrained loss: the logits have left
any range in which the model still learns (with ``lr=1e6`` the loss reaches 1e13 at chance
accuracy). Pass
``max_loss=math.inf`` to check finiteness only (what :func:`~gradkit.training.short.train_short`
does: its loss function is the caller's).

A failed step raises :class:`TrainingDiverged`; :func:`gradkit.training.runs.get_run` records the
run as failed (never finished, never reused), keeps its last finite checkpoint and attaches the
:class:`~gradkit.training.runs.Run` to the exception.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MAX_LOSS", "DivergenceGuard", "TrainingDiverged"]

#: Default bound on a training step's loss (nats); see the module docstring.
MAX_LOSS = 1e4


class TrainingDiverged(RuntimeError):
    """A training stopped because its loss or parameters stopped being finite (or bounded).

    Attributes: ``epoch`` and ``batch`` (1-based epoch, 0-based batch index of the failing
    step; ``None`` when only the epoch is known), ``reason`` (what failed), ``value`` (the
    loss, NaN for parameters), ``lr`` (the learning rate, if known), ``run`` (the
    :class:`~gradkit.training.runs.Run`, attached by ``get_run``; its ``metrics`` hold the
    epochs up to the last finite checkpoint, none if it failed in the first ones) and
    ``summary``: one line for a notebook to print instead of plotting NaN, e.g.
    ``"run plastic_3000hz_raw 20261202_010203 diverged at epoch 1, batch 1 (loss is nan);
    lower the learning rate (lr = 1e+20; try 1e+19)"``. In a notebook::

        try:
            run = get_run(config)
        except TrainingDiverged as err:
            display(Markdown(err.summary))   # and skip the figures of this run
    """

    def __init__(self, epoch: int, batch: int | None, reason: str, value: float = math.nan,
                 lr: float | None = None, name: str = "training"):
        self.epoch, self.batch, self.reason, self.value, self.lr = epoch, batch, reason, value, lr
        self.name = name
        self.run = None
        super().__init__(self._message())

    @property
    def advice(self) -> str:
        """What to change: the learning rate (by 10x), then the loss bound if it was the bound."""
        lr = f" (lr = {self.lr:g}; try {self.lr / 10:g})" if self.lr is not None else ""
        return f"lower the learning rate{lr}"

    @property
    def summary(self) -> str:
        """One line: which training, where it diverged, why, what to change."""
        where = f"epoch {self.epoch}" + (f", batch {self.batch}" if self.batch is not None
                                          else "")
        return f"{self.name} diverged at {where} ({self.reason}); {self.advice}"

    def _message(self) -> str:
        return (f"{self.summary}. The run is recorded as failed and never reused as a result; "
                f"its last finite checkpoint is kept.")

    def attach(self, run, name: str) -> TrainingDiverged:
        """Attach the run and rename the training in the message (``get_run`` does this)."""
        self.run, self.name = run, name
        self.args = (self._message(),)
        return self


@dataclass
class DivergenceGuard:
    """Checks each step's loss and parameters (see the module docstring)."""

    max_loss: float = MAX_LOSS
    lr: float | None = None

    def check_loss(self, loss: Tensor | float, epoch: int, batch: int) -> None:
        value = float(loss.detach() if isinstance(loss, Tensor) else loss)
        if not math.isfinite(value):
            raise TrainingDiverged(epoch, batch, f"loss is {value}", value, self.lr)
        if value > self.max_loss:
            raise TrainingDiverged(epoch, batch, f"loss {value:.3g} exceeds the bound "
                                   f"{self.max_loss:g} nats", value, self.lr)

    def check_parameters(self, params: Sequence[Tensor], epoch: int, batch: int) -> None:
        if not params:
            return
        with torch.no_grad():  # one synchronisation per step
            if bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
                return
            n = sum(int((~torch.isfinite(p)).sum()) for p in params)
        if n:
            raise TrainingDiverged(epoch, batch, f"{n} parameter values are not finite after "
                                   f"the optimiser step", math.nan, self.lr)
