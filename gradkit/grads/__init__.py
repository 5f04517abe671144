"""Gradients: exact per-sample, per-batch and full-data gradients and statistics of them.

- :mod:`~gradkit.grads.engine`      ``per_sample_grads``, four exact methods
- :mod:`~gradkit.grads.fallbacks`   the exact fallbacks: vmap and the per-sample loop
- :mod:`~gradkit.grads.rules`       the ``"layers"`` method's rules, one file per layer type: the
  materialised rule, Gram / norm / sketch forms and replays (LSTM, GRU, RNN, attention, GroupNorm)
- :mod:`~gradkit.grads.freeparams`  a container's own parameters, when added to activations
- :mod:`~gradkit.grads.layerpass`   the ``"layers"`` pass and the checks of its assumptions
- :mod:`~gradkit.grads.reference`   the pass's reference: one sample alone (shapes, coupling)
- :mod:`~gradkit.grads.learned`     what a call learns about a model, kept for later calls
- :mod:`~gradkit.grads.coupling`    does the loss couple the samples? (``CoupledLossError``)
- :mod:`~gradkit.grads.warn`        warnings at the user's line
- :mod:`~gradkit.grads.samples`     samples on dim 0, per-sample losses
- :mod:`~gradkit.grads.databatches` a data set as an iterable of batches (a ``DataLoader``)
- :mod:`~gradkit.grads.batches`     ``batch_grads``, ``batch_means``, ``full_grad``
- :mod:`~gradkit.grads.sketch`      random projections that keep inner products
- :mod:`~gradkit.grads.gram`        ``gradient_gram``, ``per_sample_norms``, ``gradient_sketch``
- :mod:`~gradkit.grads.gramsink`    what the pass hands each layer to for them (the cost model)
- :mod:`~gradkit.grads.gram_matrix` ``Gram``: the statistics' input in place of ``G``
- :mod:`~gradkit.grads.noise`       the gradient noise scale and ``B_simple``
- :mod:`~gradkit.grads.similarity`  cosine matrices of gradient directions and their statistics
- :mod:`~gradkit.grads.tsne`        t-SNE of gradient directions
- :mod:`~gradkit.grads.hessian`     Hessian-vector products, Lanczos eigenvalues, trace, density
- :mod:`~gradkit.grads.lanczos`     the one Lanczos iteration (eigenpairs, quadrature)

Usage: ``from gradkit.grads import per_sample_grads, noise_scale``.
"""

from gradkit.grads.batches import batch_grads, batch_index, batch_means, full_grad
from gradkit.grads.engine import (
    METHODS,
    CoupledLossError,
    choose_method,
    default_chunk_size,
    forget,
    per_sample_grads,
)
from gradkit.grads.hessian import top_eigenvalues
from gradkit.grads.noise import NoiseScale, StreamingNoiseScale, noise_scale
from gradkit.grads.rules import layers_supported, register_rule
from gradkit.grads.samples import per_sample_losses
from gradkit.grads.similarity import cosine, similarity_matrix, similarity_stats
from gradkit.grads.sketch import sketch
from gradkit.grads.tsne import tsne_directions

__all__ = [
    "METHODS", "CoupledLossError", "NoiseScale", "StreamingNoiseScale", "batch_grads",
    "batch_index", "batch_means",
    "choose_method", "cosine", "default_chunk_size", "forget", "full_grad", "layers_supported",
    "noise_scale", "per_sample_grads", "per_sample_losses", "register_rule",
    "similarity_matrix", "similarity_stats", "sketch", "top_eigenvalues", "tsne_directions",
]

# Exact per-sample norms, Gram matrices and sketches without [N, P], and the Gram type the
# statistics accept (issue 25)
from gradkit.grads.gram import gradient_gram, gradient_sketch, per_sample_norms  # noqa: E402
from gradkit.grads.gram_matrix import Gram  # noqa: E402

__all__ += ["Gram", "gradient_gram", "gradient_sketch", "per_sample_norms"]
