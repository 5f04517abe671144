"""Notebook 02's measurements on training runs: the noise scale at every checkpoint, and the
variants of it that could explain a published magnitude.

Two per-sample gradients are computed (``kind``):

- ``"objective"``  the objective the run trained (GHM-C + GHM ranking, or CE + ranking), per
  sample as defined in :mod:`gradkit.analysis.objective_grads`;
- ``"ce"``         cross-entropy of the class logits only (:func:`gradkit.training.sample_loss`).

Both are computed from their Gram matrix ``K = G Gᵀ`` (:func:`sample_gram`), never ``[N, P]``.
"""

from __future__ import annotations

import pandas as pd
import torch

from gradkit.analysis.objective_grads import objective_sample_grads, objective_sample_gram
from gradkit.grads import Gram, gradient_gram, noise_scale, per_sample_grads
from gradkit.training import sample_loss

__all__ = ["KINDS", "checkpoint_noise_scales", "gns_variants", "kind_label", "run_gns_variants",
           "sample_grads", "sample_gram"]

KINDS = ("objective", "ce")


def sample_grads(run, epoch: int, kind: str = "objective") -> torch.Tensor:
    """``G[N, P]`` of the training split at checkpoint ``epoch`` (``kind``: module docstring,
    or a per-sample loss function ``loss_fn(outputs, y)``)."""
    if kind == "objective":
        return objective_sample_grads(run, epoch)
    if kind == "ce" or callable(kind):
        return per_sample_grads(run.load_model(epoch), sample_loss if kind == "ce" else kind,
                                run.split.x_train, run.split.y_train)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def sample_gram(run, epoch: int, kind: str = "objective", by_layer: bool = False):
    """The Gram matrix ``K = G Gᵀ`` of :func:`sample_grads`'s rows, without ``G``: a
    :class:`~gradkit.grads.Gram`, or with ``by_layer`` the per-parameter blocks
    ``{name: [N, N]}`` (:func:`gradkit.grads.gradient_gram`)."""
    if kind == "objective":
        K = objective_sample_gram(run, epoch, by_layer=by_layer)
    elif kind == "ce" or callable(kind):
        K = gradient_gram(run.load_model(epoch), sample_loss if kind == "ce" else kind,
                          run.split.x_train, run.split.y_train, by_layer=by_layer)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return K if by_layer else Gram(K)


def _row(epoch: int, G, b: int, n_boot: int, seed: int) -> dict:
    ns = noise_scale(G, b, n_boot=n_boot, seed=seed)
    return {"epoch": int(epoch), "gns": ns.gns, "gns_lo": ns.gns_ci[0], "gns_hi": ns.gns_ci[1],
            "b_simple": ns.b_simple, "b_simple_lo": ns.b_simple_ci[0],
            "b_simple_hi": ns.b_simple_ci[1], "grad_sq": ns.grad_sq,
            "trace_sigma": ns.trace_sigma, "n": ns.n, "batch_size": ns.batch_size}


def checkpoint_noise_scales(run, kind: str = "objective", batch_size: int | None = None,
                            n_boot: int = 1000, seed: int = 0, epochs=None):
    """:func:`gradkit.grads.noise_scale` at every checkpoint of ``run`` on its training split.

    ``kind``: ``"objective"``, ``"ce"`` or a per-sample loss ``loss_fn(outputs, y)`` of any
    model (plain logits or a tuple): the table's ``kind`` is then the function's name
    (:func:`kind_label`), which :func:`gradkit.viz.noise.plot_gns_trend` labels as it is.

    ``D`` is the training split, the gradients those of ``kind`` over the parameters the run
    trains, through their Gram matrix (:func:`sample_gram`: no ``[N, P]``); ``batch_size``
    defaults to the run's. Returns ``(table, norms)``: one row per epoch
    with ``gns``, ``b_simple``, their interval bounds (``*_lo``, ``*_hi``), ``grad_sq``,
    ``trace_sigma``, ``n``, ``batch_size``, ``kind``; and ``{epoch: ||G_i|| per sample}``.
    """
    b = int(batch_size if batch_size is not None else run.config.batch_size)
    rows, norms = [], {}
    for epoch in (run.checkpoint_epochs if epochs is None else epochs):
        K = sample_gram(run, epoch, kind)
        rows.append(_row(epoch, K, b, n_boot, seed))
        norms[int(epoch)] = K.norms()
    return pd.DataFrame(rows).assign(kind=kind_label(kind)), norms


def kind_label(kind) -> str:
    """The name a table of ``kind`` carries: ``"objective"``, ``"ce"``, or a loss function's own
    name (``"custom"`` for a lambda or a callable without a name)."""
    if isinstance(kind, str):
        return kind
    name = getattr(kind, "__name__", "") or type(kind).__name__
    return "custom" if name in ("<lambda>", "function", "partial") else name


def gns_variants(gram: Gram, batch_size: int, parts: dict[str, Gram], p: int,
                 p_total: int | None = None) -> dict[str, float]:
    """The study's GNS computed in ways that could explain a far smaller published number.

    ``gram``: the per-sample gradients' :class:`~gradkit.grads.Gram` (``G`` rows also work)
    over ``p`` trained parameters; ``parts``: the Gram matrices of parameter subsets
    (:meth:`~gradkit.grads.Gram.of_blocks` of ``sample_gram(..., by_layer=True)``).

    - ``exact``: ``E_B ||g_B − g_D||² / ||g_D||²``, batches of ``batch_size`` without replacement;
    - ``B = N, with replacement``: a "batch" as large as ``D`` drawn with replacement,
      ``tr Σ / N / ||g_D||²`` (without replacement it would be exactly 0);
    - ``unit directions``: the exact GNS of ``G_i / ||G_i||`` (the Gram matrix normalised);
    - ``per-parameter mean``: the numerator averaged over the ``P`` coordinates, the
      denominator summed, ``exact / P``; with ``p_total`` also ``exact / p_total`` (the mean
      over every parameter of the model, frozen ones included);
    - ``<name> only``: the exact GNS of the parameters of ``parts[name]``.
    """
    gram = gram if isinstance(gram, Gram) else Gram.of_rows(gram)
    n = gram.n
    exact = noise_scale(gram, batch_size, n_boot=0)
    inv = 1.0 / gram.norms().clamp_min(1e-30)
    unit = Gram(gram.K * inv[:, None] * inv[None, :])
    out = {"exact": exact.gns, "B = N, with replacement": exact.b_simple / n,
           "unit directions": noise_scale(unit, batch_size, n_boot=0).gns,
           "per-parameter mean": exact.gns / int(p)}
    if p_total is not None:
        out["per-parameter mean, all parameters"] = exact.gns / int(p_total)
    for name, part in parts.items():
        out[f"{name} only"] = noise_scale(part, batch_size, n_boot=0).gns
    return out


def run_gns_variants(run, epoch: int, batch_size: int, parts: dict[str, str],
                     p_total: int | None = None) -> dict[str, float]:
    """:func:`gns_variants` of ``run``'s objective gradients at checkpoint ``epoch`` from their
    per-parameter Gram blocks; ``parts``: ``{label: parameter-name prefix}`` (``"prompt."``)."""
    blocks = sample_gram(run, epoch, "objective", by_layer=True)
    parts = {label: Gram.of_blocks(blocks, [k for k in blocks if k.startswith(prefix)])
             for label, prefix in parts.items()}
    p = sum(p.numel() for p in run.load_model(epoch).parameters() if p.requires_grad)
    return gns_variants(Gram.of_blocks(blocks), batch_size, parts, p=p, p_total=p_total)
