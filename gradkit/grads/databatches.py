"""A data set as an iterable of ``(inputs, targets)`` batches (a ``DataLoader``), read in turn.

The statistics of a whole training split (norms, the Gram matrix in blocks, the noise scale,
the Hessian's eigenvalues) accept such an iterable in place of ``inputs`` (with ``targets``
omitted), so that no more than one or two batches are held at once. :class:`Batches` checks
what it reads: every item an ``(inputs, targets)`` pair with the samples on dim 0, at least one
sample in all; read again, the same batches in the same order (a ``DataLoader`` with
``shuffle=False``), checked by a fingerprint of each batch's values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves, tree_map

from gradkit.grads.samples import num_samples

__all__ = ["Batches", "concat", "is_batches"]


def is_batches(inputs: Any, targets: Any) -> bool:
    """Whether a call passed an iterable of batches: ``targets`` omitted and ``inputs`` an
    iterable that is no input structure itself (a ``DataLoader``, a list, an iterator; not a
    tensor, tuple or dict, which are one batch's inputs)."""
    return (targets is None and inputs is not None
            and not isinstance(inputs, Tensor | tuple | dict) and isinstance(inputs, Iterable))


def concat(a: Any, b: Any) -> Any:
    """Two batches' (nested) tensors joined along dim 0."""
    return tree_map(lambda s, t: torch.cat([s, t]) if isinstance(s, Tensor) else s, a, b)


def _fingerprint(tree: Any, n: int) -> tuple:
    """Shapes and a position-weighted sum of the values: another batch, or the same samples in
    another order, changes it."""
    weights = torch.arange(1, n + 1, dtype=torch.float64)
    out = []
    for t in tree_leaves(tree):
        if isinstance(t, Tensor):
            rows = t.detach().reshape(n, -1).to(device="cpu", dtype=torch.float64)
            out.append((tuple(t.shape), float(rows.sum(1) @ weights)))
    return tuple(out)


class Batches:
    """``batches`` (an iterable of ``(inputs, targets)``), checked as it is read.

    ``sizes`` holds each batch's sample count once a pass has completed. ``again=True`` asks
    for an iterable that can be read more than once (a ``DataLoader``, a list), not a one-shot
    iterator; each later pass must yield the same batches as the first.
    """

    def __init__(self, batches: Iterable, name: str = "batches", again: bool = False):
        if isinstance(batches, Tensor) or not isinstance(batches, Iterable):
            raise TypeError(
                f"{name} must be an iterable of (inputs, targets) batches (a DataLoader), got "
                f"{type(batches).__name__}; for one batch pass inputs and targets")
        if again and iter(batches) is batches:
            raise TypeError(
                f"{name} is a one-shot iterator ({type(batches).__name__}), but it must be read "
                "more than once: pass a DataLoader (shuffle=False) or a list of batches")
        self.batches, self.name = batches, name
        self.sizes: list[int] | None = None
        self._prints: list[tuple] | None = None

    @property
    def n(self) -> int:
        """The number of samples in all the batches (after a first pass)."""
        assert self.sizes is not None, "read the batches once first"
        return sum(self.sizes)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        first = self._prints is None
        sizes, prints = [], []
        for i, item in enumerate(self.batches):
            if not isinstance(item, tuple | list) or len(item) != 2:
                size = f" of length {len(item)}" if isinstance(item, tuple | list) else ""
                raise ValueError(f"{self.name}[{i}] must be an (inputs, targets) pair, got "
                                 f"{type(item).__name__}{size}")
            x, y = item
            n = num_samples(x, f"{self.name}[{i}]'s inputs")
            nt = num_samples(y, f"{self.name}[{i}]'s targets")
            if n != nt:
                raise ValueError(f"{self.name}[{i}] has {n} inputs but {nt} targets")
            if n == 0:
                raise ValueError(f"{self.name}[{i}] holds no samples (N = 0)")
            sizes.append(n)
            mark = _fingerprint((x, y), n)
            if not first and (i >= len(self._prints) or mark != self._prints[i]):
                raise ValueError(
                    f"{self.name} yielded different batches when read again (batch {i}): it "
                    "is read once per block of the result and must give the same batches in "
                    "the same order each time (a DataLoader with shuffle=False and no random "
                    "augmentation)")
            prints.append(mark)
            yield x, y
        if first:
            if not sizes or sum(sizes) == 0:
                raise ValueError(f"{self.name} yielded no samples (an empty DataLoader?)")
            self.sizes, self._prints = sizes, prints
        elif len(sizes) != len(self._prints):
            raise ValueError(f"{self.name} yielded {len(sizes)} batches when read again, "
                             f"{len(self._prints)} the first time: it must give the same batches")
