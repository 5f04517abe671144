"""The gradient noise scale, estimated for free inside DistributedDataParallel training.

A DDP step already holds gradients at two batch sizes: every rank ``r`` has the mean gradient
``g_r`` of its own ``b_r`` samples, and the all-reduce forms the mean gradient ``g_B`` of all
``B = Σ_r b_r`` samples. McCandlish et al. (2018), "An Empirical Model of Large-Batch Training",
Appendix A: for a batch of ``b`` samples drawn i.i.d. from the data distribution,

    ``E ||g_b||² = |G|² + tr(Σ) / b``

with ``G`` the true gradient and ``Σ`` the per-sample gradient covariance. Per step, with ``W``
ranks (all quantities identical on every rank):

- ``b_small``  the local batch size; with unequal local sizes their harmonic mean,
  ``b_small = W / Σ_r (1/b_r)``, so that ``E small_sq = |G|² + tr(Σ)/b_small`` still holds;
- ``b_big = B``  the global batch;
- ``small_sq = (1/W) Σ_r ||g_r||²``  the mean over ranks of the squared local-gradient norms;
- ``big_sq = ||g_B||²``  the squared norm of the all-reduced mean gradient;
- ``grad_sq = (b_big·big_sq − b_small·small_sq) / (b_big − b_small)``  unbiased for ``|G|²``;
- ``trace_sigma = (small_sq − big_sq) / (1/b_small − 1/b_big)``  unbiased for ``tr(Σ)``;
- ``b_simple = EMA[trace_sigma] / EMA[grad_sq]``: numerator and denominator are averaged
  separately over steps (a bias-corrected exponential moving average with decay ``ema``, or the
  running mean over all steps for ``ema=None``) and divided only then: the ratio of two noisy
  single-step estimates is biased and often negative. ``b_simple`` is ``B_simple = tr(Σ)/|G|²``:
  batches much smaller than it are noise-dominated, much larger ones waste samples.

The estimates and their averaging are :mod:`gradkit.grads.noise`'s
(:func:`~gradkit.grads.noise.two_batch_estimates`, :class:`~gradkit.grads.noise.StreamingNoiseScale`
with per-step sizes): this hook only collects the two squared norms.

With ``trace_sigma`` and ``grad_sq`` defined on a finite data set as in :mod:`gradkit.grads.noise`
(population covariance, ``1/N``), batches drawn *with replacement* from it give exactly those
expectations (see ``tests/distributed/test_ddp_noise.py``).

**How** (one communication hook, :meth:`DDPNoiseScale._hook`): each bucket is sent as
``[b_r · g_r (bucket part), b_r, 1/b_r, ||g_r (bucket part)||²]``, summed by the same single
all-reduce that DDP would run anyway, and divided by the summed ``B``. No extra backward, no
extra collective: three scalars ride along with every bucket; ``big_sq`` is computed locally
from the reduced bucket. Consequences, by design:

- **Unequal local batches are weighted correctly**: the reduced gradient is ``Σ_r b_r g_r / B``,
  the mean over all ``B`` samples (what one process would compute on the concatenated batch),
  not DDP's plain mean of the rank means. With equal local sizes the two are the same up to
  float rounding.
- The scalars travel in the bucket's dtype (float32: relative rounding of ``small_sq`` about
  1e-7; float64 buckets keep float64). float16 / bfloat16 buckets are reduced in float32.
- **Gradient accumulation with** ``ddp_model.no_sync()`` **is refused** (``RuntimeError`` at the
  forward): the accumulated local gradient is a sum over micro-batches whose sizes and loss
  scaling the hook cannot know.
- The hook occupies DDP's single comm-hook slot (``register_comm_hook`` can be called once).

Works with the gloo backend on the CPU (tested) and NCCL on GPUs (same code path, the bucket
and the scalars are on the gradients' device; not run on a GPU here).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pandas as pd
import torch
import torch.distributed as dist

from gradkit.grads.noise import StreamingNoiseScale, two_batch_estimates

__all__ = ["DDPNoiseScale", "NoiseStep", "critical_batch_advice", "estimates"]

_TAIL = 3  # b_r, 1/b_r, ||g_r||² appended to every bucket


@dataclass(frozen=True)
class NoiseStep:
    """One step's measurement (see the module docstring for every field)."""

    step: int
    b_small: float
    b_big: int
    small_sq: float
    big_sq: float
    grad_sq: float
    trace_sigma: float
    grad_sq_ema: float
    trace_sigma_ema: float
    b_simple: float


#: ``(grad_sq, trace_sigma)``: the unbiased two-batch-size estimates of one step (``a = 1/b``).
estimates = two_batch_estimates


def critical_batch_advice(b_simple: float, global_batch: int, label: str = "EMA") -> str:
    """One line comparing ``B_simple`` with the global batch in use.

    Below ``B_simple / 2`` larger batches still use their samples well (noise dominates each
    step); above ``2 B_simple`` they mostly waste samples; in between the batch is near the
    critical batch size, the usual compromise between steps and samples.
    """
    head = f"global batch {global_batch}"
    if not math.isfinite(b_simple) or b_simple <= 0:
        why = "no estimate yet" if math.isnan(b_simple) else "no gradient signal above the noise"
        return f"B_simple undefined [{label}] ({why}), {head}: no advice"
    text = f"B_simple ≈ {b_simple:.4g} [{label}], {head}: "
    if global_batch < b_simple / 2:
        return text + "larger batches would still use their samples well"
    if global_batch > 2 * b_simple:
        return text + "beyond the critical batch; larger batches would mostly waste samples"
    return text + "near the critical batch size (a good trade-off of steps against samples)"


class DDPNoiseScale:
    """Gradient noise scale of a :class:`~torch.nn.parallel.DistributedDataParallel` model.

    ``DDPNoiseScale(ddp_model, ema=0.95)`` registers the communication hook. Each training
    step, on every rank::

        noise.step(batch_size=len(x))   # this rank's number of samples, before the forward
        loss = loss_fn(ddp_model(x), y) # a *mean* over the local batch
        loss.backward()                 # the hook measures while DDP reduces
        noise.last                      # NoiseStep of this step, identical on every rank

    ``history`` is a DataFrame with one row per step. ``ema`` is the decay of the
    bias-corrected moving averages behind ``b_simple`` (``None``: running mean of all steps).
    Needs at least 2 ranks (``b_small < b_big``). The loss must be the mean over the local batch
    (DDP's convention); a forward in training mode with gradients enabled must be preceded by
    :meth:`step`, and gradient accumulation under ``no_sync()`` is refused.
    """

    def __init__(self, ddp_model: torch.nn.parallel.DistributedDataParallel,
                 ema: float | None = 0.95):
        if not isinstance(ddp_model, torch.nn.parallel.DistributedDataParallel):
            raise TypeError(f"DDPNoiseScale needs a DistributedDataParallel model, got "
                            f"{type(ddp_model).__name__}")
        if ema is not None and not 0 < ema < 1:
            raise ValueError(f"ema must be in (0, 1) or None, got {ema!r}")
        self.group = ddp_model.process_group
        self.world_size = dist.get_world_size(self.group)
        if self.world_size < 2:
            raise ValueError("DDPNoiseScale needs at least 2 ranks: with one, the local and the "
                             "global batch coincide and there is nothing to compare")
        self.ddp_model, self.ema = ddp_model, ema
        self._pending: int | None = None
        self._buckets: dict[int, torch.Tensor] = {}  # index -> [B, Σ1/b_r, Σ||g_r||², big]
        self._rows: list[NoiseStep] = []
        # the averaging of grads/noise.py's estimator, fed one (small_sq, big_sq) pair per step
        self._noise = StreamingNoiseScale(ema=ema)
        ddp_model.register_comm_hook(self, DDPNoiseScale._hook)
        ddp_model.register_forward_pre_hook(self._before_forward)

    # -- the caller's side ----------------------------------------------------------------------
    def step(self, batch_size: int) -> None:
        """Announce this rank's local batch size for the next backward (an integer >= 1)."""
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self._finish()
        self._pending = int(batch_size)

    @property
    def last(self) -> NoiseStep | None:
        """The latest step's :class:`NoiseStep` (``None`` before the first backward)."""
        self._finish()
        return self._rows[-1] if self._rows else None

    def __len__(self) -> int:
        """The steps recorded so far."""
        self._finish()
        return len(self._rows)

    @property
    def history(self) -> pd.DataFrame:
        """Every step so far, one row each (the :class:`NoiseStep` fields as columns)."""
        self._finish()
        columns = list(NoiseStep.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self._rows], columns=columns)

    @property
    def b_simple(self) -> float:
        """The current ``B_simple`` estimate (the EMA ratio; ``nan`` before any step)."""
        last = self.last
        return last.b_simple if last is not None else math.nan

    def advice(self, global_batch: int | None = None) -> str:
        """:func:`critical_batch_advice` for the latest ``b_simple`` and ``global_batch``
        (default: the latest step's ``b_big``)."""
        last = self.last
        if global_batch is None:
            global_batch = last.b_big if last else 0
        label = "EMA" if self.ema is not None else "mean"
        return critical_batch_advice(self.b_simple, global_batch, label)

    # -- DDP's side -----------------------------------------------------------------------------
    def _before_forward(self, module, args) -> None:
        if not (torch.is_grad_enabled() and module.training):
            return
        if not module.require_backward_grad_sync:
            raise RuntimeError(
                "DDPNoiseScale does not support gradient accumulation with no_sync(): the "
                "accumulated local gradient is a sum over micro-batches whose sizes and loss "
                "scaling the hook cannot know. Use a larger per-rank batch instead, or run this "
                "forward under torch.no_grad() if it is not for training.")
        if self._pending is None:
            raise RuntimeError("call noise.step(batch_size=...) with this rank's local batch "
                               "size before each training forward (or run it under no_grad)")

    # No annotations: DDP checks them against the classes, and this module's are strings.
    def _hook(self, bucket):  # (dist.GradBucket) -> torch.futures.Future[torch.Tensor]
        buf = bucket.buffer()
        b = self._pending
        if b is None:
            raise RuntimeError("DDPNoiseScale: backward without noise.step(batch_size=...)")
        dtype = buf.dtype if buf.dtype in (torch.float32, torch.float64) else torch.float32
        n = buf.numel()
        send = torch.empty(n + _TAIL, dtype=dtype, device=buf.device)
        send[:n].copy_(buf)
        send[n + 2] = torch.linalg.vector_norm(send[:n], dtype=torch.float64).square()
        send[n:n + 2] = torch.tensor([b, 1.0 / b], dtype=dtype, device=buf.device)
        send[:n].mul_(b)
        fut = dist.all_reduce(send, group=self.group, async_op=True).get_future()
        index = bucket.index()

        def reduced(f: torch.futures.Future) -> torch.Tensor:
            out = f.value()[0]
            grad = out[:n].div_(out[n])
            big = torch.linalg.vector_norm(grad, dtype=torch.float64).square()
            # kept on the device: no host sync here, read once per step in _finish
            self._buckets[index] = torch.cat([out[n:].double(), big.reshape(1)])
            buf.copy_(grad)
            return buf

        return fut.then(reduced)

    def _finish(self) -> None:
        """Turn the buckets of a completed backward into one :class:`NoiseStep` (local only)."""
        if not self._buckets:
            return
        parts = torch.stack(list(self._buckets.values())).cpu()
        self._buckets, self._pending = {}, None
        w = self.world_size
        b_big, inv_sum = float(parts[0, 0]), float(parts[0, 1])
        small_sq, big_sq = float(parts[:, 2].sum()) / w, float(parts[:, 3].sum())
        # Equal local sizes <=> sum(1/b_r) = W²/B (AM-HM); allow the tail's float rounding.
        equal = abs(inv_sum - w * w / b_big) <= 1e-6 * inv_sum
        b_small = b_big / w if equal else w / inv_sum
        gsq, tr = self._noise.update(small_sq, big_sq, b_small=b_small, b_big=b_big)
        noise = self._noise
        self._rows.append(NoiseStep(step=len(self._rows), b_small=b_small, b_big=round(b_big),
                                    small_sq=small_sq, big_sq=big_sq, grad_sq=gsq,
                                    trace_sigma=tr, grad_sq_ema=noise.grad_sq,
                                    trace_sigma_ema=noise.trace_sigma, b_simple=noise.b_simple))
