"""The gradient noise scale and the simple critical batch size.

For per-sample gradients ``G[N, P]`` of a data set ``D`` (rows ``G_i``, from
:func:`gradkit.grads.per_sample_grads`), or their Gram matrix ``K = G Gᵀ``
(:class:`~gradkit.grads.gram_matrix.Gram`, from :func:`gradkit.grads.gradient_gram`, accepted
wherever ``G`` is: every quantity below is a function of ``K``):

- ``g_D = (1/N) Σ_i G_i``                              the full-data gradient
- ``grad_sq = ||g_D||²``
- ``trace_sigma = (1/N) Σ_i ||G_i - g_D||²``           the trace of the per-sample covariance
- ``gns = E_B ||g_B - g_D||² / ||g_D||²``               the study's definition, for batches ``B``
  of ``B`` samples drawn uniformly *without replacement* from ``D`` (``g_B`` their mean); in
  closed form (finite-population correction) ``gns = trace_sigma / B · (N - B)/(N - 1) / grad_sq``
- ``b_simple = trace_sigma / grad_sq``                  the simple noise scale ``B_simple`` of
  McCandlish et al. (2018), "An Empirical Model of Large-Batch Training": batches much smaller
  than ``B_simple`` are dominated by noise, much larger ones waste samples.

The numerator alone, ``E_B ||g_B - g_D||²``, is :func:`batch_noise` (closed form) and
:func:`batch_deviations` (sampled batches); notebook 05's 1/B law uses the same two.

Note that ``gns = b_simple / B · (N - B)/(N - 1)``: the study's number is the relative noise of
one batch, ``B_simple`` the batch size at which that noise would equal the signal. Confidence
intervals come from a bootstrap over the samples (:func:`noise_scale`).

When per-sample gradients are too costly (during training), :class:`StreamingNoiseScale`
estimates ``|G|²`` and ``S = tr Σ`` from the squared norms of batch gradients at two batch sizes,
as in McCandlish et al. (2018), Appendix A.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gradkit.grads.gram_matrix import Gram

__all__ = [
    "NoiseScale",
    "StreamingNoiseScale",
    "b_simple",
    "batch_deviations",
    "batch_noise",
    "gns_closed_form",
    "gns_monte_carlo",
    "grad_sq",
    "mean_gradient",
    "noise_scale",
    "trace_sigma",
    "trace_sigma_of_norms",
    "two_batch_estimates",
]


def _check_G(G: Tensor | Gram) -> Tensor:
    """``G`` as float64 rows; a :class:`~gradkit.grads.gram_matrix.Gram` as its
    :meth:`~gradkit.grads.gram_matrix.Gram.rows` (the same inner products, so every statistic
    here is the same; only :func:`mean_gradient`'s coordinates are then those of its basis)."""
    if isinstance(G, Gram):
        G = G.rows()
    if not isinstance(G, Tensor) or G.dim() != 2:
        raise ValueError(f"G must be a Tensor[N, P] of per-sample gradients, got "
                         f"{type(G).__name__} {tuple(getattr(G, 'shape', ()))}")
    if G.shape[0] < 2:
        raise ValueError(f"G needs at least 2 samples (rows) for a noise scale, got {G.shape[0]}")
    if not torch.isfinite(G).all():
        raise ValueError("G contains NaN or infinite values")
    return G.detach().to(torch.float64)


def _check_batch(batch_size: int, n: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be an integer in [1, N={n}], got {batch_size!r}")
    return int(batch_size)


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return math.inf if num > 0 else math.nan


def mean_gradient(G: Tensor) -> Tensor:
    """``g_D = (1/N) Σ_i G_i``: the full-data gradient (float64)."""
    return _check_G(G).mean(0)


def grad_sq(G: Tensor) -> float:
    """``||g_D||²``, the squared norm of the full-data gradient."""
    return float(mean_gradient(G).square().sum())


def trace_sigma(G: Tensor) -> float:
    """``tr Σ = (1/N) Σ_i ||G_i - g_D||²``: total variance of the per-sample gradients."""
    G = _check_G(G)
    return float((G - G.mean(0)).square().sum(1).mean())


def trace_sigma_of_norms(sq_norms: Tensor, gsq: float) -> float:
    """:func:`trace_sigma` from the squared per-sample norms ``||G_i||²`` and ``gsq = ||g_D||²``:
    ``(1/N) Σ_i ||G_i||² - ||g_D||²`` (the same ``tr Σ``, expanded), for when the rows are not
    kept (:class:`gradkit.track.Tracker`)."""
    sq = torch.as_tensor(sq_norms).detach().to(torch.float64)
    if sq.dim() != 1 or sq.shape[0] < 1 or not torch.isfinite(sq).all():
        raise ValueError(f"sq_norms must be a finite Tensor[N], got shape {tuple(sq.shape)}")
    return float(sq.mean()) - float(gsq)


def batch_noise(trace: float, n: int, batch_size: int) -> float:
    """``E_B ||g_B - g_D||² = tr Σ / B · (N - B)/(N - 1)``, batches of ``B`` drawn without
    replacement from ``N`` samples (0 for ``N = 1``).

    The variance of the mean of ``B`` draws without replacement from ``N`` values is the
    population variance over ``B`` times the finite-population correction ``(N-B)/(N-1)``;
    summing over the ``P`` coordinates gives ``tr Σ``.
    """
    b = _check_batch(batch_size, n)
    return trace / b * (n - b) / (n - 1) if n > 1 else 0.0


def gns_closed_form(trace: float, gsq: float, n: int, batch_size: int) -> float:
    """``E_B ||g_B - g_D||² / ||g_D||² = tr Σ / B · (N - B)/(N - 1) / ||g_D||²``
    (:func:`batch_noise` over the signal)."""
    return _ratio(batch_noise(trace, n, batch_size), gsq)


def b_simple(trace: float, gsq: float) -> float:
    """``B_simple = tr Σ / ||g_D||²`` (McCandlish et al., 2018)."""
    return _ratio(trace, gsq)


def batch_deviations(G: Tensor, batch_size: int, draws: int = 2000, seed: int = 0) -> Tensor:
    """``||g_{B_k} - g_D||²`` for ``draws`` batches ``B_k`` of ``batch_size`` rows drawn without
    replacement (seeded; one ``randperm`` per draw), float64 ``[draws]``.

    With ``v = 1_B / B - 1 / N``, ``g_B - g_D = Gᵀv`` and ``||g_B - g_D||² = vᵀ(G Gᵀ)v``: the
    draws cost ``N x N``, not ``P``, per batch. Their mean estimates :func:`batch_noise`.
    """
    G = _check_G(G)
    n = G.shape[0]
    b = _check_batch(batch_size, n)
    if isinstance(draws, bool) or int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    gen = torch.Generator().manual_seed(int(seed))
    K = G @ G.T
    idx = torch.stack([torch.randperm(n, generator=gen)[:b] for _ in range(int(draws))])
    v = torch.full((int(draws), n), -1.0 / n, dtype=torch.float64)
    v.scatter_add_(1, idx, torch.full(idx.shape, 1.0 / b, dtype=torch.float64))
    return torch.einsum("ki,ij,kj->k", v, K, v)


def gns_monte_carlo(G: Tensor, batch_size: int, draws: int = 2000, seed: int = 0) -> float:
    """``mean_k ||g_{B_k} - g_D||² / ||g_D||²`` over ``draws`` batches drawn without replacement.

    The study's definition computed by sampling (:func:`batch_deviations`);
    :func:`gns_closed_form` is its exact value.
    """
    dev = batch_deviations(G, batch_size, draws, seed)
    return _ratio(float(dev.mean()), grad_sq(G))


@dataclass(frozen=True)
class NoiseScale:
    """Noise-scale statistics of one set of per-sample gradients (see the module docstring).

    ``gns_ci`` and ``b_simple_ci`` are percentile bootstrap intervals at level ``confidence``
    (``nan`` if ``n_boot`` was 0).
    """

    grad_sq: float
    trace_sigma: float
    gns: float
    b_simple: float
    gns_ci: tuple[float, float]
    b_simple_ci: tuple[float, float]
    n: int
    batch_size: int
    confidence: float
    n_boot: int


def noise_scale(G: Tensor, batch_size: int, n_boot: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> NoiseScale:
    """``grad_sq``, ``trace_sigma``, ``gns`` (batches of ``batch_size``), ``b_simple`` and CIs.

    Bootstrap: ``n_boot`` resamples of the ``N`` rows with replacement (seeded). A resample's
    plug-in values are biased: its mean gradient is the mean of ``N`` i.i.d. draws from ``D``,
    so ``E ||g*||² = grad_sq + trace_sigma / N`` and ``E trace_sigma* = trace_sigma (N-1)/N``.
    Plain plug-in replicates ``trace_sigma* / ||g*||²`` therefore sit far below the estimate
    whenever ``B_simple`` is not small against ``N`` (at ``B_simple ≈ N`` the whole percentile
    interval can lie below the estimate: ``benchmarks/README.md``). Each replicate uses the
    corrected parts instead,

        ``S* = trace_sigma* · N/(N-1)``,  ``|G|²* = ||g*||² - trace_sigma*/(N-1)``,
        ``b_simple* = S* / |G|²*``,  ``gns* = b_simple* / B · (N-B)/(N-1)``,

    whose numerator and denominator are unbiased for the estimate's; a replicate with
    ``|G|²* <= 0`` (no signal left above the noise) counts as ``b_simple* = ∞``. The interval is
    the ``(1 ± confidence)/2`` quantiles of the replicates; an upper bound of ``inf`` says that
    the data cannot tell the mean gradient from zero. All resamples come from the ``N x N``
    Gram matrix ``K = G Gᵀ``: with resample counts ``c``, ``||g*||² = cᵀKc / N²`` and
    ``trace_sigma* = (1/N) Σ_i c_i K_ii - ||g*||²``, so the cost does not grow with ``P``.
    """
    G = _check_G(G)
    n = G.shape[0]
    b = _check_batch(batch_size, n)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    gsq, tr = grad_sq(G), trace_sigma(G)
    fpc = (n - b) / (n - 1)
    gns_ci = bs_ci = (math.nan, math.nan)
    if n_boot > 0:
        gsq_b, tr_b = _bootstrap(G, int(n_boot), seed)
        signal, noise = gsq_b - tr_b / (n - 1), tr_b * n / (n - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            bs_b = np.where(signal > 0, noise / np.where(signal > 0, signal, 1.0), np.inf)
        q = [(1 - confidence) / 2, (1 + confidence) / 2]
        # "inverted_cdf": no interpolation, so an infinite replicate never turns into nan
        bs_ci = tuple(float(v) for v in np.quantile(bs_b, q, method="inverted_cdf"))
        gns_ci = tuple(float(v) * fpc / b for v in bs_ci)
    return NoiseScale(grad_sq=gsq, trace_sigma=tr, gns=gns_closed_form(tr, gsq, n, b),
                      b_simple=b_simple(tr, gsq), gns_ci=gns_ci, b_simple_ci=bs_ci, n=n,
                      batch_size=b, confidence=float(confidence), n_boot=int(n_boot))


def _bootstrap(G: Tensor, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(grad_sq*, trace_sigma*)`` of ``n_boot`` seeded resamples, from the Gram matrix."""
    G = _check_G(G)
    n = G.shape[0]
    K = (G @ G.T).numpy()
    rng = np.random.default_rng(int(seed))
    c = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)
    gsq_b = np.einsum("ki,ij,kj->k", c, K, c) / n**2
    tr_b = c @ np.diag(K) / n - gsq_b
    return gsq_b, tr_b


def _sq_norm(g: Tensor | float) -> float:
    return float(g.detach().double().square().sum()) if isinstance(g, Tensor) else float(g)


def two_batch_estimates(small_sq: float, big_sq: float, b_small: float, b_big: float,
                        n_data: int | None = None) -> tuple[float, float]:
    """``(|G|²_est, S_est)`` from one pair of squared batch-gradient norms (McCandlish et al.,
    2018, App. A): the one definition behind :class:`StreamingNoiseScale` and the DDP hook
    (:class:`gradkit.distributed.DDPNoiseScale`).

    ``E ||g_B||² = |G|² + S · a(B)``, ``a(B) = 1/B`` for i.i.d. draws or ``(N - B)/(B (N - 1))``
    without replacement from ``n_data = N`` samples, so ``S_est = (small_sq - big_sq) /
    (a(b_small) - a(b_big))`` and ``|G|²_est = small_sq - a(b_small) · S_est`` are unbiased.
    The sizes may be fractional (a harmonic mean of unequal batches).
    """
    limit = n_data if n_data is not None else math.inf
    if not (0 < b_small < b_big <= limit):
        raise ValueError(f"need 0 < b_small < b_big <= n_data ({limit}), got b_small={b_small} "
                         f"and b_big={b_big}")
    a_s, a_b = _size_factor(b_small, n_data), _size_factor(b_big, n_data)
    s_est = (small_sq - big_sq) / (a_s - a_b)
    return small_sq - a_s * s_est, s_est


def _size_factor(b: float, n_data: int | None) -> float:
    """``a(B)`` in ``E ||g_B||² = |G|² + S · a(B)``."""
    return 1.0 / b if n_data is None else (n_data - b) / (b * (n_data - 1))


class StreamingNoiseScale:
    """Two-batch-size estimator of ``|G|²`` and ``S = tr Σ`` (McCandlish et al., 2018, App. A).

    Each :meth:`update` takes the gradient (or its squared norm) of a batch of ``b_small`` and
    one of ``b_big`` samples. Since ``E ||g_B||² = |G|² + S · a(B)`` with ``a(B) = 1/B`` for
    i.i.d. draws, the two sizes give unbiased estimates (:func:`two_batch_estimates`)

        ``S_est   = (||g_small||² - ||g_big||²) / (a(b_small) - a(b_big))``
        ``|G|²_est = ||g_small||² - a(b_small) · S_est``
        (``= (B_big ||g_big||² - B_small ||g_small||²) / (B_big - B_small)`` for ``a = 1/B``).

    Numerator and denominator are averaged separately over the updates (running mean, or an
    exponential moving average with decay ``ema``, bias-corrected) and divided only at the end,
    ``b_simple = mean S_est / mean |G|²_est``: a ratio of noisy single-step estimates would be
    biased and often negative. With ``n_data = N`` batches are taken as drawn without
    replacement from a data set of ``N`` samples, ``a(B) = (N - B) / (B (N - 1))``; then the
    estimates converge to exactly :func:`noise_scale`'s ``trace_sigma`` and ``grad_sq``.

    ``b_small = b_big = None``: every :meth:`update` names its own sizes (DDP's local batches
    may differ from step to step).
    """

    def __init__(self, b_small: int | None = None, b_big: int | None = None,
                 n_data: int | None = None, ema: float | None = None):
        if n_data is not None and (int(n_data) != n_data or n_data < 2):
            raise ValueError(f"n_data must be an integer >= 2 or None, got {n_data!r}")
        limit = n_data if n_data is not None else math.inf
        if (b_small is None) != (b_big is None):
            raise ValueError(f"give both b_small and b_big, or neither, got {b_small!r} and "
                             f"{b_big!r}")
        for name, v in (("b_small", b_small), ("b_big", b_big)):
            if v is not None and (isinstance(v, bool) or int(v) != v or not 1 <= v <= limit):
                raise ValueError(f"{name} must be an integer in [1, {limit}], got {v!r}")
        if b_small is not None and not b_small < b_big:
            raise ValueError(f"b_small must be < b_big, got {b_small} and {b_big}")
        if ema is not None and not 0 < ema < 1:
            raise ValueError(f"ema must be in (0, 1) or None, got {ema!r}")
        self.b_small = None if b_small is None else int(b_small)
        self.b_big = None if b_big is None else int(b_big)
        self.n_data, self.ema = n_data, ema
        self.steps = 0
        self._s = self._g = self._w = 0.0

    def a(self, b: float) -> float:
        """``a(B)`` in ``E ||g_B||² = |G|² + S · a(B)``."""
        return _size_factor(b, self.n_data)

    def update(self, g_small: Tensor | float, g_big: Tensor | float,
               b_small: float | None = None, b_big: float | None = None) -> tuple[float, float]:
        """Add one pair: batch gradients (or their squared norms) at ``b_small`` and ``b_big``
        (default: the sizes given at construction). Returns this pair's ``(|G|²_est, S_est)``."""
        b_small = self.b_small if b_small is None else b_small
        b_big = self.b_big if b_big is None else b_big
        if b_small is None or b_big is None:
            raise ValueError("this estimator has no fixed batch sizes: pass b_small and b_big")
        g_est, s_est = two_batch_estimates(_sq_norm(g_small), _sq_norm(g_big), b_small, b_big,
                                           self.n_data)
        decay = 1.0 - 1.0 / (self.steps + 1) if self.ema is None else self.ema
        self._s = decay * self._s + (1 - decay) * s_est
        self._g = decay * self._g + (1 - decay) * g_est
        self._w = decay * self._w + (1 - decay)  # EMA bias correction (1 for a running mean)
        self.steps += 1
        return g_est, s_est

    @property
    def trace_sigma(self) -> float:
        """The averaged ``S_est`` (``tr Σ``)."""
        return self._s / self._w if self.steps else math.nan

    @property
    def grad_sq(self) -> float:
        """The averaged ``|G|²_est``."""
        return self._g / self._w if self.steps else math.nan

    @property
    def b_simple(self) -> float:
        """``mean S_est / mean |G|²_est``."""
        return _ratio(self.trace_sigma, self.grad_sq) if self.steps else math.nan

    def gns(self, batch_size: int) -> float:
        """The study's ``gns`` for ``batch_size`` from the averaged estimates."""
        if not self.steps:
            return math.nan
        if self.n_data is None:
            return _ratio(self.trace_sigma / batch_size, self.grad_sq)
        return gns_closed_form(self.trace_sigma, self.grad_sq, self.n_data, batch_size)
