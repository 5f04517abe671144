"""The one training loop and the one evaluation pass of gradkit.

Every training of the workbook runs its epochs through :func:`fit_epoch` and measures through
:func:`evaluate`: the GHM runs of :mod:`gradkit.training.runs` (via
:func:`gradkit.training.state.train_epoch`) and the short trainings of
:func:`gradkit.training.short.train_short`. What differs between them is only the ``step``
(the forward pass and the loss of one batch, plus what the training wants to record).

One step of :func:`fit_epoch`, for batch ``b`` of epoch ``e``::

    optimizer.zero_grad(set_to_none=True)
    loss = step(batch)                 # forward + loss (+ the caller's bookkeeping)
    guard.check_loss(loss, e, b)       # before the backward pass (gradkit.training.guard)
    backward(loss)                     # default: loss.backward()
    optimizer.step(); scheduler.step()
    guard.check_parameters(...)        # the optimiser's parameters, after the update
    on_step(b, batch, loss)

**Data order.** The batches of epoch ``e`` are :func:`epoch_batches`: ``randperm(n)`` from a
generator seeded by ``(seed, e)`` (:func:`epoch_order`), cut into consecutive slices of
``batch_size`` (the last one may be shorter). The order depends on nothing else, so a resumed
run sees exactly the batches it would have seen.

**Other loops.** :func:`gradkit.training.multitask.train_multitask` could run on the same core
with unchanged results: its batches are any iterable of index tensors (its own permutation
generator, drawn per epoch); its ``step`` does the forward pass, the probe gradients
(``flat_grad(..., retain_graph=True)``, which leave ``.grad`` alone) and the copy of the
combiner's weights, and returns the two task losses; its ``backward`` is
``lambda losses: combiner.backward(losses, combine_on)`` (with the pass counter switched on);
its per-step row goes into ``on_step`` (``p.grad`` still holds the update's gradient there).
Timing: ``step`` times its forward pass, and the clock started at the top of ``backward`` and
read in ``on_step`` covers combine/backward plus the optimiser step, as today. Its guard may be
``None`` (no check, as today) or a :class:`~gradkit.training.guard.DivergenceGuard` (a list of
losses is checked loss by loss).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from gradkit.core.seeding import generator
from gradkit.training.guard import DivergenceGuard

__all__ = ["cpu_threads", "epoch_batches", "epoch_order", "evaluate", "fit_epoch"]

T = TypeVar("T")


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The data order of ``epoch``: ``randperm(n)`` from a generator seeded by ``(seed, epoch)``.

    Depends on nothing else, so a resumed run sees exactly the batches it would have seen.
    """
    return torch.randperm(n, generator=generator(seed, epoch))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[Tensor]:
    """The index batches of ``epoch``: :func:`epoch_order` cut into slices of ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = epoch_order(n, seed, epoch)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


@contextlib.contextmanager
def cpu_threads(device: torch.device, threads: int = 1) -> Iterator[None]:
    """Run single-threaded on the CPU (a tiny model: as fast, and machine-independent results);
    the caller's thread count comes back afterwards, also on an exception."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def fit_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Any],
    step: Callable[[Any], Any],
    *,
    epoch: int = 0,
    backward: Callable[[Any], None] | None = None,
    scheduler: Any = None,
    guard: DivergenceGuard | None = None,
    on_step: Callable[[int, Any, Any], None] | None = None,
) -> int:
    """One epoch of optimisation (see the module docstring); returns the number of steps.

    ``model`` is put in training mode first. ``step(batch)`` returns the loss (a tensor, or a
    list of tensors when ``backward`` combines them); ``guard`` (a
    :class:`~gradkit.training.guard.DivergenceGuard`) raises
    :class:`~gradkit.training.guard.TrainingDiverged` naming ``epoch`` and the batch index.
    """
    model.train()
    params = _parameters(optimizer) if guard is not None else []
    n = 0
    for b, batch in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        loss = step(batch)
        if guard is not None:
            for value in (loss if isinstance(loss, list | tuple) else [loss]):
                guard.check_loss(value, epoch, b)
        if backward is None:
            loss.backward()
        else:
            backward(loss)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if guard is not None:
            guard.check_parameters(params, epoch, b)
        if on_step is not None:
            on_step(b, batch, loss)
        n += 1
    return n


def evaluate(model: nn.Module, measure: Callable[[], T]) -> T:
    """``measure()`` with ``model`` in eval mode and gradients off; the model stays in eval
    mode (the next :func:`fit_epoch` switches it back), so that a trained model is handed back
    ready for inference as before."""
    model.eval()
    with torch.no_grad():
        return measure()
