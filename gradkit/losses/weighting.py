"""Ways to combine task losses ``L_1 … L_T`` into one update, with one call for all:
``total = method.backward(losses, shared_params)`` writes the gradients of the combined objective
to the model's ``.grad`` and returns the (detached) combined loss.

- :class:`FixedWeights`          ``L = sum_i w_i L_i`` with constant ``w``
- :class:`GradNorm`              Chen et al. 2018: weights that equalise the tasks' gradient norms
                                  on the last shared layer, scaled by their relative training rates
- :class:`UncertaintyWeighting`  Kendall et al. 2018: ``L = sum_i exp(-s_i) L_i + s_i``, ``s_i``
                                  learned with the network
- :class:`PCGrad`                Yu et al. 2020: project away the conflicting component of each
                                  task's gradient on the shared parameters
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gradkit.core.params import flat_grad

__all__ = ["FixedWeights", "GradNorm", "PCGrad", "UncertaintyWeighting", "pcgrad_project"]


def _stack(losses: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(losses))


class FixedWeights:
    """``L = sum_i w_i L_i`` with constant weights."""

    def __init__(self, weights: Sequence[float]):
        self.weights = torch.as_tensor(weights, dtype=torch.float32)
        if (self.weights < 0).any():
            raise ValueError(f"FixedWeights: weights must be >= 0, got {list(weights)}")

    def backward(self, losses: Sequence[torch.Tensor], shared_params=None) -> torch.Tensor:
        total = (self.weights * _stack(losses)).sum()
        total.backward()
        return total.detach()


class GradNorm:
    """GradNorm (Chen et al. 2018) with a multiplicative (log-space) weight update.

    At every step, on the parameters ``W`` passed as ``shared_params`` (the paper's choice and
    ours: the last shared layer):

    - ``G_i = |grad_W (w_i L_i)| = w_i |grad_W L_i|``, the weighted gradient norm of task ``i``
    - ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``, the inverse training rate
    - ``target_i = mean(G) * r_i ** alpha``, held constant (no gradient flows through it)
    - ``L_grad = sum_i |G_i - target_i|`` (L1), which only the weights descend.

    ``L_i(0)`` is the loss of task ``i`` on the first batch this object sees (before any update),
    as in the paper; it only sets the reference of the ratio, so its noise shifts all later
    ``r_i`` of one task by the same factor. Set ``initial_losses`` beforehand to use another one.

    The update. ``dL_grad / dw_i = sign(G_i - target_i) |grad_W L_i|``. A plain step
    ``w_i -= lr * that`` crosses zero as soon as ``lr |grad_W L_i| > w_i`` (the study's weight
    fell to 0.000 and stayed there). We take the step in ``s_i = log w_i`` instead, scaled by
    ``1 / mean(G)`` so that ``lr`` is a relative step whatever the size of the losses::

        s_i -= lr * dL_grad/ds_i / mean(G) = lr * sign(G_i - target_i) * G_i / mean(G)

    i.e. each weight is multiplied by ``exp(-+ lr G_i / mean G)``, and then all are rescaled to sum
    to ``T`` (the paper's renormalisation). A weight therefore stays positive, and one whose
    ``G_i`` falls below its target grows back.
    """

    def __init__(self, num_tasks: int, alpha: float = 1.5, lr: float = 0.025,
                 init_weights: Sequence[float] | None = None):
        if num_tasks < 1:
            raise ValueError(f"GradNorm: num_tasks must be >= 1, got {num_tasks}")
        if lr <= 0 or alpha < 0:
            raise ValueError(f"GradNorm: need lr > 0 and alpha >= 0, got lr={lr}, alpha={alpha}")
        w = torch.ones(num_tasks) if init_weights is None else torch.as_tensor(
            init_weights, dtype=torch.float32)
        if w.shape != (num_tasks,) or (w <= 0).any():
            raise ValueError(f"GradNorm: init_weights must be {num_tasks} positive numbers, "
                             f"got {init_weights}")
        self.num_tasks, self.alpha, self.lr = num_tasks, alpha, lr
        self.weights = w * num_tasks / w.sum()
        self.initial_losses: torch.Tensor | None = None
        self.last: dict[str, torch.Tensor] = {}   # G, target, ratio of the last step

    def backward(self, losses: Sequence[torch.Tensor], shared_params) -> torch.Tensor:
        losses = list(losses)
        if len(losses) != self.num_tasks:
            raise ValueError(f"GradNorm: expected {self.num_tasks} losses, got {len(losses)}")
        W = list(shared_params)
        if not W:
            raise ValueError("GradNorm: shared_params (the last shared layer) is empty")
        L = _stack(losses).detach()
        if self.initial_losses is None:
            self.initial_losses = L.clone()
        # |grad_W L_i|: backward only as far as W (autograd prunes the rest of the graph)
        raw = torch.stack([flat_grad(loss, W, retain_graph=True).norm() for loss in losses])
        w = self.weights
        total = (w * _stack(losses)).sum()
        total.backward()                                  # the network's gradients
        G = w * raw
        ratio = L / self.initial_losses
        r = ratio / ratio.mean()
        target = G.mean() * r ** self.alpha
        step = self.lr * torch.sign(G - target) * G / G.mean().clamp(min=1e-30)
        w = w * torch.exp(-step)
        self.weights = w * self.num_tasks / w.sum()
        self.last = {"G": G, "target": target, "r": r}
        return total.detach()


class UncertaintyWeighting(nn.Module):
    """Kendall et al. 2018, homoscedastic task uncertainty: ``L = sum_i exp(-s_i) L_i + s_i``.

    ``s_i = log sigma_i^2`` is learned with the network (give ``.parameters()`` to the optimiser),
    starting at 0 (weights 1). We use this one form for both tasks: our detection loss mixes an
    objectness cross-entropy and an L1 box term, so the paper's separate Gaussian (``1/2``) and
    softmax forms have no clean home. For fixed ``L_i`` the optimum is ``s_i = log L_i``, i.e.
    weight ``exp(-s_i) = 1 / L_i``. The weights are *not* normalised to sum to ``T``.
    """

    def __init__(self, num_tasks: int):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(num_tasks))

    @property
    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_vars.detach())

    def total(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        return (torch.exp(-self.log_vars) * _stack(losses) + self.log_vars).sum()

    def backward(self, losses: Sequence[torch.Tensor], shared_params=None) -> torch.Tensor:
        total = self.total(losses)
        total.backward()
        return total.detach()


def pcgrad_project(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad's projection (Yu et al. 2020, Alg. 1) of task gradients ``grads [T, P]``.

    For each task ``i``, for the other tasks ``j`` in random order: if ``g_i' . g_j < 0`` (they
    conflict), ``g_i' <- g_i' - (g_i' . g_j) / |g_j|^2 g_j``, i.e. remove from ``g_i'`` its
    component along ``g_j``. Non-conflicting pairs are left untouched. Returns the projected
    ``g_i'`` (the update is their sum).
    """
    projected = grads.clone()
    T = grads.shape[0]
    for i in range(T):
        others = [j for j in torch.randperm(T, generator=generator).tolist() if j != i]
        for j in others:
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / (grads[j] @ grads[j]).clamp(min=1e-30) * grads[j]
    return projected


class PCGrad:
    """PCGrad on the shared parameters; the heads get their own task's gradient unchanged.

    ``backward`` runs one backward pass per task (accumulating the heads' gradients as usual and
    reading each task's gradient on the shared parameters off the difference), then replaces the
    shared parameters' gradient by ``sum_i g_i'`` from :func:`pcgrad_project`. Weights are all 1.
    """

    def __init__(self, num_tasks: int, seed: int = 0):
        self.num_tasks = num_tasks
        self.weights = torch.ones(num_tasks)
        self.generator = torch.Generator().manual_seed(seed)

    def backward(self, losses: Sequence[torch.Tensor], shared_params) -> torch.Tensor:
        losses, shared = list(losses), list(shared_params)
        flat = lambda: torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)  # noqa: E731
                                  for p in shared])
        before = flat()
        grads = []
        for i, loss in enumerate(losses):
            loss.backward(retain_graph=i < len(losses) - 1)
            after = flat()
            grads.append(after - before)
            before = after
        update = pcgrad_project(torch.stack(grads), self.generator).sum(dim=0)
        offset = 0
        for p in shared:
            p.grad = update[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        return _stack(losses).sum().detach()


