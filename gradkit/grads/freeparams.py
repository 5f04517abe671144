"""Parameters owned by no layer, taken exactly inside the ``"layers"`` pass when additive.

A model may hold a parameter directly and use it in its own ``forward``: a learned positional
embedding, ``x = self.embed(x) + self.pos``. No layer rule covers it (its module has children
and no rule), yet its per-sample gradient is simple when every use is an **additive broadcast**
``r = t + v(p)``: ``t`` carries the samples on dim 0, ``v(p)`` (the parameter, or a function of
it alone: a slice ``p[:, :T]``, a reshape) broadcasts over them, so

    ``∂l_n/∂v = Σ_{broadcast dims} ∂L/∂r[n]``   and   ``∂l_n/∂p = vjp_v(∂l_n/∂v)``.

:class:`AdditiveCapture` watches every torch call of the pass's forward (a
``TorchFunctionMode``, only for models with such parameters), swaps each parameter for a fresh
leaf, follows the tensors computed from it alone, and hooks the result of each addition or
subtraction that meets the conditions above. Any other use (a product with the input, a
matmul) rejects that parameter, and only it goes to an exact fallback. Each accepted
parameter is checked at the end: the sum of its per-sample gradients must equal the gradient
autograd forms for its leaf in the same backward (a use the mode did not see shows there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map

__all__ = ["AdditiveCapture", "free_parameters"]

_T = torch.Tensor
# sign of (args[0], args[1]) in the result
_ADDITIVE = {f: (1, 1) for f in (torch.add, _T.add, _T.add_, _T.__add__, _T.__radd__,
                                  _T.__iadd__)}
_ADDITIVE.update({f: (1, -1) for f in (torch.sub, _T.sub, _T.sub_, _T.__sub__, _T.__isub__)})
_ADDITIVE[_T.__rsub__] = (-1, 1)
_HOLE = object()  # where a recorded call took the followed tensor


class _Use:
    """The tensor ``v(p)`` of one parameter, as the calls that made it from ``p`` alone."""

    def __init__(self, key: int, chain: list):
        self.key, self.chain = key, chain


def free_parameters(model: nn.Module, holders: list[nn.Module]) -> dict[int, tuple]:
    """``{id(p): (holder, attribute name, qualified name)}`` of the trainable parameters held
    directly by ``holders`` (modules with children and no rule, :mod:`gradkit.grads.rules`)."""
    names = {id(m): prefix for prefix, m in model.named_modules(remove_duplicate=False)}
    out = {}
    for m in holders:
        for k, p in m._parameters.items():
            if p is not None and p.requires_grad:
                prefix = names.get(id(m), "")
                out[id(p)] = (m, k, f"{prefix}.{k}" if prefix else k)
    return out


class AdditiveCapture(TorchFunctionMode):
    """One forward's capture of the free parameters ``free`` (:func:`free_parameters`) of a
    chunk of ``n`` samples; ``store(id(p), Tensor[n, *p.shape])`` receives the per-sample
    gradients during the backward; ``rejected``: qualified name -> why."""

    def __init__(self, free: dict[int, tuple], n: int, store: Callable[[int, Tensor], None]):
        super().__init__()
        self.free, self.n, self.store = free, n, store
        self.rejected: dict[str, str] = {}
        self.tracked: dict[int, tuple[Tensor, _Use]] = {}  # id -> (tensor kept alive, use)
        self.leaves: dict[int, Tensor] = {}  # id(p) -> the fresh leaf standing in for p
        self.real: dict[int, Tensor] = {}
        self.sums: dict[int, Tensor] = {}  # id(p) -> Σ_n of what was stored (the check)

    def swap(self) -> None:
        for pid, (m, k, _) in self.free.items():
            p = m._parameters[k]
            q = p.detach().requires_grad_()
            self.real[pid], self.leaves[pid] = p, q
            m._parameters[k] = q
            self.tracked[id(q)] = (q, _Use(pid, []))

    def restore(self) -> None:
        for pid, (m, k, _) in self.free.items():
            if pid in self.real:
                m._parameters[k] = self.real[pid]
        self.tracked.clear()

    def _reject(self, pid: int, why: str) -> None:
        m, k, name = self.free[pid]
        self.rejected.setdefault(name, f"parameter {k!r} of {type(m).__name__} (held by no "
                                       f"layer) is {why}, not only added to the activations")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        mine = [self.tracked[id(t)][1] for t in tensors if id(t) in self.tracked
                and self.tracked[id(t)][0] is t]
        out = func(*args, **kwargs)
        if not mine:
            return out
        if len(mine) == len(tensors):  # a function of the parameter alone: follow it
            use = mine[0]
            if all(u.key == use.key for u in mine) and len(tensors) == 1:
                step = (func, *tree_map(lambda a: _HOLE if isinstance(a, Tensor) else a,
                                        (args, kwargs)))
                for t in tree_leaves(out):
                    if isinstance(t, Tensor):
                        self.tracked[id(t)] = (t, _Use(use.key, [*use.chain, step]))
                return out
        self._additive(func, args, kwargs, out, mine)
        return out

    def _additive(self, func, args, kwargs, out, mine: list[_Use]) -> None:
        """Hook ``out`` if it is ``t ± v(p)`` as the module docstring requires, else reject."""
        signs = _ADDITIVE.get(func)
        ok = (signs is not None and len(args) == 2 and not kwargs and len(mine) == 1
              and all(isinstance(a, Tensor) for a in args) and isinstance(out, Tensor))
        use = mine[0]
        if not ok:
            for u in mine:
                self._reject(u.key, f"used by {getattr(func, '__name__', func)} with other "
                                    "tensors")
            return
        i = 0 if id(args[0]) in self.tracked and self.tracked[id(args[0])][0] is args[0] else 1
        v, t = args[i], args[1 - i]
        aligned = (1,) * (out.dim() - v.dim()) + tuple(v.shape)
        if not (out.dim() >= 1 and tuple(t.shape) == tuple(out.shape) and out.shape[0] == self.n
                and aligned[0] == 1 and out.requires_grad):
            self._reject(use.key, f"added to a tensor of shape {tuple(t.shape)} without "
                                  f"broadcasting over its {self.n} samples on dim 0")
            return
        dims = tuple(d for d in range(1, out.dim()) if aligned[d] == 1 and out.shape[d] != 1)
        sign, vshape, q = signs[i], tuple(v.shape), self.leaves[use.key]

        def on_grad(d: Tensor) -> None:
            c = (d.sum(dims, keepdim=True) if dims else d) * sign
            c = c.reshape(self.n, *vshape)
            self._store(use, q, c)

        out.register_hook(on_grad)

    def _store(self, use: _Use, q: Tensor, c: Tensor) -> None:
        if use.chain:
            chain = use.chain

            def f(p):
                x = p
                for func, args, kwargs in chain:
                    args, kwargs = tree_map(lambda a, x=x: x if a is _HOLE else a, (args, kwargs))
                    x = func(*args, **kwargs)
                return x

            _, vjp = torch.func.vjp(f, q.detach())
            try:
                g = torch.func.vmap(lambda ci: vjp(ci)[0])(c)
            except Exception:  # noqa: BLE001 - an op vmap cannot batch: sample by sample
                g = torch.stack([vjp(ci)[0] for ci in c])
        else:
            g = c
        self.sums[use.key] = self.sums.get(use.key, 0) + g.sum(0)
        self.store(use.key, g)

    def verify(self, leaf_grads: dict[int, Any]) -> None:
        """Reject every parameter whose per-sample gradients do not sum to its leaf's
        gradient (``leaf_grads``: id(p) -> autograd's gradient of the leaf, or None)."""
        for pid, g in leaf_grads.items():
            got = self.sums.get(pid)
            if g is None and got is None:
                continue
            g = torch.zeros_like(self.leaves[pid]) if g is None else g
            got = torch.zeros_like(g) if got is None else got
            err = float((got - g).norm())
            if err > 1e-4 * float(g.norm()) + 1e-6 * float(got.abs().sum()) + 1e-30:
                self._reject(pid, "used in a way the capture did not see (a call outside "
                                  "torch's functions?)")
