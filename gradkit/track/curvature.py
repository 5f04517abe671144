"""The loss Hessian's top eigenvalue at chosen steps of the user's training (optional).

``λ_max`` of the Hessian of the step's batch loss at the step's parameters, by Lanczos
(:func:`~gradkit.grads.top_eigenvalues`): each iteration is one Hessian-vector product, a
double backward through the batch (about two backward passes), and at most ``max_iter`` are
spent (``hessian_hvps`` in the row says how many were). It runs after the user's backward and
before ``optimizer.step()``, so at the same parameters as the step's gradient; ``.grad``, the
buffers and the random number generators are left as they were. The sharpness ``λ_max``
against ``2 / lr`` tells whether plain gradient descent at that rate is at the edge of
stability (Cohen et al. 2021).
"""

from __future__ import annotations

import math

from torch import nn

from gradkit.grads import top_eigenvalues
from gradkit.track.fallback import model_state_kept

__all__ = ["HessianSchedule"]


class HessianSchedule:
    """``λ_max`` every ``every`` steps (0: never), with at most ``max_iter`` products each."""

    def __init__(self, every: int, max_iter: int, loss_fn):
        for name, v, low in (("hessian_every", every, 0), ("hessian_iters", max_iter, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")
        if every and loss_fn is None:
            raise ValueError("hessian_every needs Tracker(loss_fn=...) and step(inputs=x): the "
                             "Hessian-vector products recompute the batch loss")
        self.every, self.max_iter, self.loss_fn = every, max_iter, loss_fn

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def __call__(self, model: nn.Module, inputs, labels) -> dict[str, float]:
        """``{"hessian_top": λ_max, "hessian_hvps": products used}`` of the batch loss."""
        if inputs is None or labels is None:
            return {"hessian_top": math.nan, "hessian_hvps": 0}
        with model_state_kept(model):
            found = top_eigenvalues(model, self.loss_fn, inputs, labels, k=1,
                                    max_iter=self.max_iter)
        return {"hessian_top": float(found.eigenvalues[0]), "hessian_hvps": int(found.n_hvp)}
