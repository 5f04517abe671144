"""GHM-C (softmax and sigmoid) and the GHM-harmonised smooth pairwise ranking loss
(:mod:`gradkit.losses.ranking`).

Gradient Harmonizing Mechanism (Li, Liu & Wang, "Gradient Harmonized Single-stage Detector",
AAAI 2019, arXiv:1811.05181). Every loss term ``k`` has a gradient norm ``g_k`` in ``[0, 1]``.
The unit interval is cut into ``bins`` equal bins, edges ``e_i = i / bins`` with the last edge
moved to ``1 + 1e-6`` so that ``g = 1`` still lands in the last bin; bin ``i`` holds the valid
terms with ``e_i <= g < e_{i+1}``. With ``count_i`` terms in bin ``i``, ``tot`` valid terms and
``n`` non-empty bins, a term in bin ``i`` gets the weight

    w_i = tot / acc_i / n,   acc_i = m * acc_i + (1 - m) * count_i    (momentum m > 0)
    w_i = tot / count_i / n                                          (m = 0)

where ``acc`` is an exponential moving average kept across calls (a buffer that starts at zero
and is only moved for non-empty bins), and the loss is ``sum_k w_k * loss_k / tot``. Frequent
gradient norms (usually the many easy terms) are down-weighted, rare ones up-weighted.

State: ``acc_sum`` is a registered buffer, so ``state_dict()`` / ``load_state_dict()`` save and
restore it. It is updated only when the call asks for it: ``update_state=True``, or, by default,
when the module is in training mode (``module.train()``) and not inside ``with module.frozen():``.
Evaluation (``module.eval()``, ``update_state=False`` or ``frozen()``) computes the weights as if
the batch were the next one but never writes the EMA.

Diagnostics of the last call (training or evaluation) are kept on the module, detached:
``last_g`` (g of the valid terms, 1-D), ``last_counts`` (terms per bin), ``last_acc`` (the
denominators used: EMA counts with momentum, raw counts without), ``last_weights`` (the weight per
bin, 0 for empty bins), ``last_tot`` and ``last_nonempty``; :meth:`diagnostics` returns them as a
dict.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradkit.losses.ranking import ranking_margin_matrix

__all__ = [
    "GHMC",
    "GHMRanking",
    "bin_edges",
    "bin_index",
    "ghm_loss",
    "ghm_ranking_loss",
    "ghm_weights",
    "ghm_weights_batched",
    "ghmc_softmax_loss",
]

EDGE_EPS = 1e-6  # mmdetection moves the last edge by this much so that g = 1 is counted


def bin_edges(bins: int) -> Tensor:
    """Edges ``e_i = i / bins`` for ``i = 0..bins``, the last one ``1 + 1e-6`` (float32)."""
    if not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    edges = torch.arange(bins + 1, dtype=torch.float32) / bins
    edges[-1] += EDGE_EPS
    return edges


def bin_index(g: Tensor, edges: Tensor) -> Tensor:
    """The bin ``i`` with ``edges[i] <= g < edges[i+1]``; ``-1`` below, ``bins`` above the range."""
    return torch.bucketize(g, edges.to(g.dtype), right=True) - 1


def ghm_weights(
    g: Tensor,
    valid: Tensor,
    edges: Tensor,
    acc_sum: Tensor | None,
    momentum: float,
) -> dict[str, Tensor]:
    """GHM weights of the terms with gradient norms ``g`` (any shape) and mask ``valid``.

    ``tot = max(#valid, 1)``; ``count_i`` = valid terms in bin ``i``; for non-empty bins
    ``acc_i = m * acc_sum_i + (1 - m) * count_i`` if ``m > 0`` else ``acc_i = count_i``;
    ``w_i = tot / acc_i / n`` with ``n`` the number of non-empty bins; empty bins, invalid terms
    and terms outside ``[0, 1 + 1e-6)`` weigh 0. Pure function: ``acc_sum`` is not modified; the
    returned ``"acc"`` is the new EMA (equal to ``acc_sum`` on empty bins).

    Returns a dict with ``weights`` (shape of ``g``), ``counts``, ``acc``, ``bin_weights``
    (all ``[bins]``), ``tot`` and ``nonempty`` (0-d tensors). It is the one-member case of
    :func:`ghm_weights_batched`.
    """
    out = ghm_weights_batched(g[None], valid[None], edges,
                              None if acc_sum is None else acc_sum[None], momentum)
    return {k: v[0] for k, v in out.items()}


def ghm_weights_batched(g: Tensor, valid: Tensor, edges: Tensor, acc_sum: Tensor | None,
                        momentum: float) -> dict[str, Tensor]:
    """:func:`ghm_weights` for ``M`` independent members at once (the definition of both).

    ``g``, ``valid``: ``[M, ...]``; ``acc_sum``: ``[M, bins]`` (each member its own EMA). The
    returned tensors carry the leading ``[M]``: ``weights [M, ...]``, ``counts``, ``acc``,
    ``bin_weights [M, bins]``, ``tot``, ``nonempty [M]``. Dense (one-hot counts and a gather,
    no data-dependent shapes), so that one call serves a whole ensemble.
    """
    g = g.detach()
    bins = edges.numel() - 1
    idx = bin_index(g, edges)
    inside = valid & (idx >= 0) & (idx < bins)
    # counts and tot in g's dtype, so float64 inputs get float64 weights
    tot = valid.flatten(1).sum(1).clamp_min(1).to(g.dtype)
    safe = idx.clamp(0, bins - 1)
    onehot = F.one_hot(safe, bins) * inside.unsqueeze(-1)
    counts = onehot.reshape(g.shape[0], -1, bins).sum(1).to(g.dtype)
    filled = counts > 0
    nonempty = filled.sum(1)
    if momentum > 0:
        if acc_sum is None:
            raise ValueError("momentum > 0 needs the EMA buffer acc_sum")
        acc_sum = acc_sum.to(g.dtype)
        acc = torch.where(filled, momentum * acc_sum + (1 - momentum) * counts, acc_sum)
    else:
        acc = counts
    bin_weights = torch.where(filled, tot[:, None] / acc.clamp_min(torch.finfo(acc.dtype).tiny),
                              0.0)
    bin_weights = bin_weights / nonempty[:, None].clamp_min(1)
    picked = torch.gather(bin_weights, 1, safe.reshape(g.shape[0], -1)).view_as(g)
    weights = torch.where(inside, picked, 0.0).to(g.dtype)
    return {
        "weights": weights,
        "counts": counts,
        "acc": acc,
        "bin_weights": bin_weights,
        "tot": tot,
        "nonempty": nonempty,
    }


def ghm_loss(terms: Tensor, g: Tensor, valid: Tensor, edges: Tensor, acc_sum: Tensor | None,
             momentum: float) -> tuple[Tensor, dict[str, Tensor]]:
    """The harmonised loss ``sum_k w_k * terms_k / tot`` of each of ``M`` members.

    ``terms``, ``g``, ``valid``: ``[M, ...]`` (per-term losses, their gradient norms, the mask);
    ``acc_sum``: ``[M, bins]``. Returns the losses ``[M]`` and :func:`ghm_weights_batched`'s
    dict (with the new EMA ``"acc"``, and ``"g"``, ``"valid"`` as given). :class:`GHMC`
    (softmax), :class:`GHMRanking` and the ensemble's objective all go through it.
    """
    out = ghm_weights_batched(g, valid, edges, acc_sum, momentum)
    loss = (out["weights"] * terms).reshape(g.shape[0], -1).sum(1) / out["tot"]
    return loss, {**out, "g": g.detach(), "valid": valid}


def ghmc_softmax_loss(logits: Tensor, target: Tensor, valid: Tensor, edges: Tensor,
                      acc_sum: Tensor | None, momentum: float) -> tuple[Tensor, dict[str, Tensor]]:
    """GHM-C of softmax logits ``[M, N, C]`` with class indices ``target [M, N]``: per sample
    ``CE_n = -log p[n, target_n]``, ``g_n = 1 - p[n, target_n]`` (see :class:`GHMC`); the
    losses ``[M]`` and the weights' dict, via :func:`ghm_loss`."""
    log_p = F.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return ghm_loss(-log_p, 1.0 - log_p.detach().exp(), valid, edges, acc_sum, momentum)


def ghm_ranking_loss(scores: Tensor, angles: Tensor, margin: float, edges: Tensor,
                     acc_sum: Tensor | None, momentum: float) -> tuple[Tensor, dict[str, Tensor]]:
    """The GHM ranking loss of ``scores``, ``angles`` ``[M, N]``: per pair ``angle_i < angle_j``
    the term ``softplus(-z)`` with ``g = sigmoid(-z)`` (see :class:`GHMRanking`); the losses
    ``[M]`` and the weights' dict, via :func:`ghm_loss`."""
    z, pairs = ranking_margin_matrix(scores, angles, margin)
    return ghm_loss(F.softplus(-z), torch.sigmoid(-z.detach()), pairs, edges, acc_sum, momentum)


class _Harmonizer(nn.Module):
    """Shared state, EMA update rule and diagnostics of :class:`GHMC` and :class:`GHMRanking`."""

    def __init__(self, bins: int, momentum: float, loss_weight: float):
        super().__init__()
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.bins = bins
        self.momentum = float(momentum)
        self.loss_weight = float(loss_weight)
        self.register_buffer("edges", bin_edges(bins))
        # Zero-initialised like mmdetection's; always registered (also for momentum 0, where it
        # stays zero) so that every configuration has the same state_dict keys.
        self.register_buffer("acc_sum", torch.zeros(bins))
        self._frozen = False
        self.last_g: Tensor | None = None
        self.last_counts: Tensor | None = None
        self.last_acc: Tensor | None = None
        self.last_weights: Tensor | None = None
        self.last_tot: float | None = None
        self.last_nonempty: int | None = None

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Within this block no call updates the EMA (evaluation), whatever ``update_state``."""
        previous, self._frozen = self._frozen, True
        try:
            yield
        finally:
            self._frozen = previous

    def reset_state(self) -> None:
        """Forget the EMA: ``acc_sum = 0``."""
        self.acc_sum.zero_()

    def _should_update(self, update_state: bool | None) -> bool:
        wanted = self.training if update_state is None else bool(update_state)
        return wanted and not self._frozen

    def _harmonize(self, g: Tensor, valid: Tensor, update_state: bool | None) -> Tensor:
        """Per-term weights of ``g``; records diagnostics; updates the EMA when asked."""
        out = ghm_weights(g, valid, self.edges, self.acc_sum, self.momentum)
        self._record(out, g, valid, update_state)
        return out["weights"]

    def _record(self, out: dict[str, Tensor], g: Tensor, valid: Tensor,
                update_state: bool | None) -> None:
        if self.momentum > 0 and self._should_update(update_state):
            with torch.no_grad():
                self.acc_sum.copy_(out["acc"])
        self.last_g = g.detach()[valid].clone()
        self.last_counts = out["counts"]
        self.last_acc = out["acc"].clone()
        self.last_weights = out["bin_weights"]
        self.last_tot = float(out["tot"])
        self.last_nonempty = int(out["nonempty"])

    def diagnostics(self) -> dict[str, Tensor | float | int | None]:
        """The last call's ``g``, bin counts, EMA counts, bin weights, ``tot``, non-empty bins."""
        return {
            "g": self.last_g,
            "counts": self.last_counts,
            "acc": self.last_acc,
            "acc_sum": self.acc_sum.detach().clone(),
            "bin_weights": self.last_weights,
            "tot": self.last_tot,
            "nonempty": self.last_nonempty,
        }

    def extra_repr(self) -> str:
        return f"bins={self.bins}, momentum={self.momentum}, loss_weight={self.loss_weight}"


def _expand_onehot(labels: Tensor, label_weight: Tensor, channels: int) -> tuple[Tensor, Tensor]:
    """Class indices ``[N]`` -> one-hot ``[N, C]`` (out-of-range labels -> all zeros), and the
    per-sample ``label_weight [N]`` repeated over the ``C`` channels (mmdetection's behaviour)."""
    onehot = torch.zeros(labels.size(0), channels, dtype=torch.float32, device=labels.device)
    ok = (labels >= 0) & (labels < channels)
    onehot[ok, labels[ok]] = 1.0
    return onehot, label_weight.reshape(-1, 1).expand(labels.size(0), channels)


class GHMC(_Harmonizer):
    """GHM classification loss (see the module docstring for binning, EMA and weights).

    Softmax mode (``use_sigmoid=False``, default), ``forward(logits [N, C], target [N])``:
    ``p = softmax(logits)``, gradient norm ``g_n = 1 - p[n, target_n]`` (detached),
    ``CE_n = -log p[n, target_n]``, ``tot = N`` (or the number of samples with
    ``label_weight > 0`` if an ``[N]`` mask is given, at least 1),
    ``loss = loss_weight * sum_n w_n * CE_n / tot``.

    Sigmoid mode (``use_sigmoid=True``), ``forward(pred [N, C], target [N, C], label_weight
    [N, C])``, mmdetection's GHMC: per element ``g = |sigmoid(pred) - target|`` (detached),
    ``valid = label_weight > 0`` (a mask only: its values are not multiplied in),
    ``tot = max(#valid, 1)``, ``loss = loss_weight * sum w * BCEWithLogits(pred, target) / tot``.
    A ``target`` of class indices ``[N]`` is expanded to one-hot (then ``label_weight`` is ``[N]``).

    ``update_state`` (keyword): ``None`` -> update the EMA iff ``self.training`` and not in
    :meth:`frozen`; ``False`` never updates (evaluation); ``True`` updates unless frozen.
    Defaults follow the study: ``momentum=0.75`` (mmdetection's default is 0).
    """

    def __init__(
        self,
        bins: int = 10,
        momentum: float = 0.75,
        use_sigmoid: bool = False,
        loss_weight: float = 1.0,
    ):
        super().__init__(bins, momentum, loss_weight)
        self.use_sigmoid = bool(use_sigmoid)

    def forward(
        self,
        pred: Tensor,
        target: Tensor,
        label_weight: Tensor | None = None,
        *,
        update_state: bool | None = None,
    ) -> Tensor:
        if pred.dim() != 2:
            raise ValueError(f"pred must be [N, C] logits, got shape {tuple(pred.shape)}")
        if self.use_sigmoid:
            return self._forward_sigmoid(pred, target, label_weight, update_state)
        return self._forward_softmax(pred, target, label_weight, update_state)

    def _forward_softmax(self, logits, target, label_weight, update_state) -> Tensor:
        n, c = logits.shape
        if target.shape != (n,) or target.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"target must be integer class indices of shape ({n},), "
                f"got {target.dtype} {tuple(target.shape)}"
            )
        target = target.long()
        if n and (target.min() < 0 or target.max() >= c):
            raise ValueError(f"target values must lie in [0, {c}), got {target.tolist()}")
        valid = self._mask(label_weight, (n,), logits.device)
        loss, out = ghmc_softmax_loss(logits[None], target[None], valid[None], self.edges,
                                      self.acc_sum[None], self.momentum)
        self._record({k: v[0] for k, v in out.items()}, out["g"][0], valid, update_state)
        return loss[0] * self.loss_weight

    def _forward_sigmoid(self, pred, target, label_weight, update_state) -> Tensor:
        if label_weight is None:
            label_weight = torch.ones(target.shape, device=pred.device)
        if target.dim() != pred.dim():
            if target.shape != pred.shape[:1]:
                raise ValueError(
                    f"target must be [N, C] binary or [N] class indices for pred "
                    f"{tuple(pred.shape)}, got {tuple(target.shape)}"
                )
            target, label_weight = _expand_onehot(target.long(), label_weight, pred.size(1))
        if target.shape != pred.shape:
            raise ValueError(f"target shape {tuple(target.shape)} != pred {tuple(pred.shape)}")
        target = target.float()
        valid = self._mask(label_weight, tuple(pred.shape), pred.device)
        g = (pred.detach().sigmoid() - target).abs()
        weights = self._harmonize(g, valid, update_state)
        bce = F.binary_cross_entropy_with_logits(pred, target, weights, reduction="sum")
        return bce / self.last_tot * self.loss_weight

    @staticmethod
    def _mask(label_weight: Tensor | None, shape: tuple[int, ...], device) -> Tensor:
        if label_weight is None:
            return torch.ones(shape, dtype=torch.bool, device=device)
        if tuple(label_weight.shape) != shape:
            raise ValueError(
                f"label_weight must have shape {shape}, got {tuple(label_weight.shape)}"
            )
        return label_weight > 0


class GHMRanking(_Harmonizer):
    """GHM-harmonised pairwise ranking loss: GHM-C's binning, EMA and weights on the pairs.

    ``forward(scores [N], angles [N])``: pairs ``angle_i < angle_j``,
    ``z = s_j - s_i - margin``, gradient norm ``g = sigmoid(-z)`` (detached), ``tot`` = number of
    pairs (at least 1), ``loss = loss_weight * sum_pairs w * softplus(-z) / tot``. With no pair the
    loss is ``0 * sum(scores)`` and the EMA is unchanged. ``update_state`` as in :class:`GHMC`.
    """

    def __init__(
        self,
        bins: int = 10,
        momentum: float = 0.75,
        margin: float = 10.0,
        loss_weight: float = 1.0,
    ):
        super().__init__(bins, momentum, loss_weight)
        self.margin = float(margin)

    def forward(
        self, scores: Tensor, angles: Tensor, *, update_state: bool | None = None
    ) -> Tensor:
        if scores.dim() != 1:
            raise ValueError(f"scores and angles must be 1-D, got shape {tuple(scores.shape)}")
        loss, out = ghm_ranking_loss(scores[None], angles[None], self.margin, self.edges,
                                     self.acc_sum[None], self.momentum)
        out = {k: v[0] for k, v in out.items()}
        self._record(out, out["g"], out["valid"], update_state)
        return loss[0] * self.loss_weight

    def extra_repr(self) -> str:
        return super().extra_repr() + f", margin={self.margin}"
