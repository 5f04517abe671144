"""Per-sample gradients of ``nn.GRU`` from one batched forward and backward (a replay rule).

One GRU layer (one direction) computes, for every step ``t`` (PyTorch's gate order ``r, z, n``),

    ``gi_t = x_t W_ihᵀ + b_ih``,  ``gh_t = h_{t-1} W_hhᵀ + b_hh``   (``[n, 3H]`` each)
    ``r = σ(gi^r + gh^r)``,  ``z = σ(gi^z + gh^z)``,  ``ñ = tanh(gi^n + r ⊙ gh^n)``,
    ``h_t = (1 - z) ⊙ ñ + z ⊙ h_{t-1}``.

Unlike the LSTM, ``b_hh``'s ``n`` part sits inside the reset gate's product, so the input and
hidden parts have different gradients: with ``δgi = [δr̂, δẑ, δn̂]`` (the pre-activations'
gradients) and ``δgh = [δr̂, δẑ, δn̂ ⊙ r]``, for ``L = Σ_n l_n`` and sample ``n`` touching only
row ``n``,

    ``∂l_n/∂W_ih = Σ_t δgi[t, n]ᵀ x[t, n]``,   ``∂l_n/∂b_ih = Σ_t δgi[t, n]``,
    ``∂l_n/∂W_hh = Σ_t δgh[t, n]ᵀ h[t-1, n]``, ``∂l_n/∂b_hh = Σ_t δgh[t, n]``.

The input part for all steps is one matmul, ``A = X W_ihᵀ + b_ih``; the recurrence is one
autograd node (:class:`_GRUScan`) whose hand-written backward through time,

    ``δñ = δh ⊙ (1 - z)``, ``δn̂ = δñ ⊙ (1 - ñ²)``, ``δẑ = δh ⊙ (h_{t-1} - ñ) ⊙ z(1 - z)``,
    ``δr̂ = δn̂ ⊙ gh^n ⊙ r(1 - r)``,  ``δh_{t-1} = δh ⊙ z + δgh W_hh``,

returns ``δgi`` as ``A``'s gradient and leaves ``δgh`` where the hook on ``A`` (run right after)
takes both and forms the four sums. The layer loop is
:func:`~gradkit.grads.rules.rnn.single_state_replay`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from gradkit.grads.rules.registry import register_replay
from gradkit.grads.rules.rnn import Store, previous_states, single_state_replay

__all__ = ["gru_replay"]


class _GRUScan(torch.autograd.Function):
    """``(A [T, n, 3H], W_hh, b_hh or None, h0 [n, H], reverse, box) -> H [T, n, H]``; the
    backward returns ``δgi`` for ``A`` and appends ``δgh [T, n, 3H]`` to the list ``box``."""

    @staticmethod
    def forward(ctx, A: Tensor, w_hh: Tensor, b_hh: Tensor | None, h0: Tensor, reverse: bool,
                box: list):
        T, n, G = A.shape
        H = G // 3
        out = A.new_empty(T, n, H)
        rz = A.new_empty(T, n, 2 * H)  # activated r, z
        nt = A.new_empty(T, n, H)  # ñ
        ghn = A.new_empty(T, n, H)  # gh^n (b_hn included)
        h, w_t = h0, w_hh.t()
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            gh = torch.mm(h, w_t) if b_hh is None else torch.addmm(b_hh, h, w_t)
            torch.add(A[t, :, : 2 * H], gh[:, : 2 * H], out=rz[t]).sigmoid_()
            ghn[t] = gh[:, 2 * H :]
            r, z = rz[t, :, :H], rz[t, :, H:]
            torch.addcmul(A[t, :, 2 * H :], r, ghn[t], out=nt[t]).tanh_()
            # h_t = ñ + z ⊙ (h - ñ)
            h = torch.addcmul(nt[t], z, h - nt[t], out=out[t])
        ctx.save_for_backward(w_hh, h0, out, rz, nt, ghn)
        ctx.reverse, ctx.box = reverse, box
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor):
        w_hh, h0, out, rz, nt, ghn = ctx.saved_tensors
        T, n, H = out.shape
        prev_h = previous_states(out, h0, ctx.reverse)
        r, z = rz[..., :H], rz[..., H:]
        dgi = out.new_empty(T, n, 3 * H)
        dgh = out.new_empty(T, n, 3 * H)
        order = range(T) if ctx.reverse else range(T - 1, -1, -1)
        carry = None  # ∂L/∂h_t from the step that read it: δh ⊙ z + δgh W_hh
        for t in order:
            dh = d_out[t] if carry is None else d_out[t] + carry
            dn = dh * (1 - z[t]) * (1 - nt[t] * nt[t])
            dz = dh * (prev_h[t] - nt[t]) * z[t] * (1 - z[t])
            dr = dn * ghn[t] * r[t] * (1 - r[t])
            dgi[t, :, :H], dgi[t, :, H : 2 * H], dgi[t, :, 2 * H :] = dr, dz, dn
            dgh[t, :, : 2 * H] = dgi[t, :, : 2 * H]
            torch.mul(dn, r[t], out=dgh[t, :, 2 * H :])
            carry = torch.addmm(dh * z[t], dgh[t], w_hh)
        ctx.box.append(dgh)
        dh0 = carry if ctx.needs_input_grad[3] else None
        return dgi, None, None, dh0, None, None


def _gru_scan(x: Tensor, params: list[Tensor], h0: Tensor, reverse: bool, names: list[str],
              want: list[bool], store: Store) -> tuple[Tensor, list[Tensor]]:
    T, n, _ = x.shape
    x2 = x.reshape(T * n, -1)
    A = (torch.addmm(params[2], x2, params[0].t()) if len(params) > 2
         else torch.mm(x2, params[0].t())).view(T, n, -1)
    if any(want) and not A.requires_grad:
        A.requires_grad_()  # a leaf: the backward still delivers δgi to its hook
    box: list[Tensor] = []
    out = _GRUScan.apply(A, params[1], params[3] if len(params) > 2 else None, h0, reverse, box)
    if not any(want):
        return out, []
    kept = [x.detach(), out.detach(), h0.detach()]

    def on_grad(dgi: Tensor) -> None:
        xs, hs, h0s = kept
        kept.clear()
        dgh = box.pop()
        sums = {0: (dgi, xs), 1: (dgh, previous_states(hs, h0s, reverse))}
        got = {names[k]: torch.bmm(d.permute(1, 2, 0), a.transpose(0, 1))
               for k, (d, a) in sums.items() if want[k]}
        for k, d in ((2, dgi), (3, dgh)):
            if len(names) > k and want[k]:
                got[names[k]] = d.sum(0)
        store(got)

    A.register_hook(on_grad)
    return out, [A]


def gru_replay(m: nn.GRU, args: tuple, kwargs: dict, sample_dim: int,
               store: Store) -> tuple[Any, list[Tensor]] | str:
    """The replay rule of ``nn.GRU`` (module docstring)."""
    if not isinstance(m, nn.GRU):
        return f"{type(m).__name__} is not an nn.GRU"
    return single_state_replay(m, args, kwargs, sample_dim, store, _gru_scan)


register_replay(nn.GRU)(gru_replay)


def examples() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Layers and per-sample input shapes for the shared test grid (tests/grads/test_rules.py)."""
    return [(nn.GRU(3, 4, batch_first=True), (5, 3))]
