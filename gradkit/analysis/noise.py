"""Notebook 02's measurements on training runs: the noise scale at every checkpoint."""

from __future__ import annotations

import pandas as pd

from gradkit.grads import noise_scale, per_sample_grads
from gradkit.training import sample_loss

__all__ = ["checkpoint_noise_scales"]


def checkpoint_noise_scales(run, loss_fn=None, batch_size: int | None = None, n_boot: int = 1000,
                            seed: int = 0, epochs=None):
    """:func:`noise_scale` at every checkpoint of a training run, on its training split.

    ``run`` is a :class:`gradkit.training.Run` (anything with ``checkpoint_epochs``,
    ``load_model(epoch)``, ``split.x_train``/``y_train`` and ``config.batch_size``). ``D`` is the
    training split, the gradients those of ``loss_fn`` (default
    :func:`gradkit.training.sample_loss`, cross-entropy of the class logits: a loss of one sample,
    unlike GHM-C whose weights depend on the batch), over the parameters the run trains;
    ``batch_size`` defaults to the run's. Returns ``(table, norms)``: one row per epoch with
    ``gns``, ``b_simple``, their interval bounds (``*_lo``, ``*_hi``), ``grad_sq``,
    ``trace_sigma``, ``n``, ``batch_size``; and ``{epoch: ||G_i|| per sample}``.
    """
    loss_fn = sample_loss if loss_fn is None else loss_fn
    split = run.split
    x, y = split.x_train, split.y_train
    b = int(batch_size if batch_size is not None else run.config.batch_size)
    rows, norms = [], {}
    for epoch in (run.checkpoint_epochs if epochs is None else epochs):
        G = per_sample_grads(run.load_model(epoch), loss_fn, x, y)
        ns = noise_scale(G, b, n_boot=n_boot, seed=seed)
        norms[int(epoch)] = G.norm(dim=1)
        rows.append({"epoch": int(epoch), "gns": ns.gns, "gns_lo": ns.gns_ci[0],
                     "gns_hi": ns.gns_ci[1], "b_simple": ns.b_simple,
                     "b_simple_lo": ns.b_simple_ci[0], "b_simple_hi": ns.b_simple_ci[1],
                     "grad_sq": ns.grad_sq, "trace_sigma": ns.trace_sigma, "n": ns.n,
                     "batch_size": ns.batch_size})
    return pd.DataFrame(rows), norms
