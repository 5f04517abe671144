"""Per-sample gradients of ``nn.RNN`` (tanh and relu) by replay, and the driver it shares with
``nn.GRU`` (:mod:`~gradkit.grads.rules.gru`): recurrences with one hidden state.

One Elman layer (one direction) computes ``h_t = φ(A[t] + h_{t-1} W_hhᵀ)`` with the input part
for all steps in one matmul, ``A = X W_ihᵀ + b_ih + b_hh`` (``[T, n, H]``), ``φ`` tanh or relu.
Each parameter enters only through the pre-activation, and sample ``n`` only touches row ``n``,
so with ``δA[t, n] = ∂L/∂(pre-activation at t)[n]`` (``L = Σ_n l_n``)

    ``∂l_n/∂W_ih = Σ_t δA[t, n]ᵀ x[t, n]``,   ``∂l_n/∂W_hh = Σ_t δA[t, n]ᵀ h[t-1, n]``,
    ``∂l_n/∂b_ih = ∂l_n/∂b_hh = Σ_t δA[t, n]``,

the sums of the LSTM's rule (:func:`~gradkit.grads.rules.lstm.lstm_replay`, whose

:func:`~gradkit.grads.rules.lstm.per_sample_sums` computes them). The recurrence is one autograd
node (:class:`_ElmanScan`) with a hand-written backward through time,
``δpre_t = (∂L/∂h_t + δpre_{t+1} W_hh) ⊙ φ'``; one tensor hook on ``A`` receives all of ``δA``.

:func:`single_state_replay` is the layer loop (layers, directions, ``batch_first``, ``h_0``)
for any such cell: a ``scan(x_layer, params, h0, reverse, store-hook)`` per layer and
direction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from gradkit.grads.rules.lstm import per_sample_sums, recurrent_call_unsupported
from gradkit.grads.rules.registry import register_replay

__all__ = ["Store", "elman_replay", "previous_states", "single_state_replay",
           "single_state_unsupported"]

Store = Callable[[dict[str, Tensor]], None]
# (layer input [T, n, D], the layer/direction's parameters detached, h0 [n, H], reverse,
#  names, want, store) -> (output [T, n, H], tensors the pass backpropagates to)
Scan = Callable[..., tuple[Tensor, list[Tensor]]]


class _ElmanScan(torch.autograd.Function):
    """``(A [T, n, H], W_hh, h0 [n, H], reverse, relu) -> H [T, n, H]`` (module docstring)."""

    @staticmethod
    def forward(ctx, A: Tensor, w_hh: Tensor, h0: Tensor, reverse: bool, relu: bool):
        T = A.shape[0]
        out = torch.empty_like(A)
        h, w_t = h0, w_hh.t()
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            h = torch.addmm(A[t], h, w_t, out=out[t])
            h.relu_() if relu else h.tanh_()
        ctx.save_for_backward(w_hh, out)
        ctx.reverse, ctx.relu = reverse, relu
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor):
        w_hh, out = ctx.saved_tensors
        local = (out > 0).to(out.dtype) if ctx.relu else 1 - out * out  # φ' from φ's value
        dA = torch.empty_like(out)
        order = range(out.shape[0]) if ctx.reverse else range(out.shape[0] - 1, -1, -1)
        prev = None
        for t in order:
            dh = d_out[t] if prev is None else torch.addmm(d_out[t], dA[prev], w_hh)
            torch.mul(dh, local[t], out=dA[t])
            prev = t
        dh0 = dA[prev] @ w_hh if ctx.needs_input_grad[2] else None
        return dA, None, dh0, None, None


def previous_states(out: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """``h_{t-1}`` for every step (``h_{t+1}`` for the reverse direction)."""
    if reverse:
        return torch.cat([out[1:], h0.unsqueeze(0)])
    return torch.cat([h0.unsqueeze(0), out[:-1]])


def _elman_scan(m: nn.RNN):
    relu = m.nonlinearity == "relu"

    def scan(x: Tensor, params: list[Tensor], h0: Tensor, reverse: bool, names: list[str],
             want: list[bool], store: Store) -> tuple[Tensor, list[Tensor]]:
        T, n, _ = x.shape
        w_ih, w_hh = params[0], params[1]
        x2 = x.reshape(T * n, -1)
        A = (torch.addmm(params[2] + params[3], x2, w_ih.t()) if len(params) > 2
             else torch.mm(x2, w_ih.t())).view(T, n, -1)
        if any(want) and not A.requires_grad:
            A.requires_grad_()  # a leaf: the backward still delivers δA to its hook
        out = _ElmanScan.apply(A, w_hh, h0, reverse, relu)
        if not any(want):
            return out, []
        kept = [x.detach(), out.detach(), h0.detach()]

        def on_grad(dA: Tensor) -> None:
            xs, hs, h0s = kept
            kept.clear()
            store(per_sample_sums(dA, xs, previous_states(hs, h0s, reverse), names, want))

        A.register_hook(on_grad)
        return out, [A]

    return scan


def single_state_unsupported(m: nn.Module, args: tuple, kwargs: dict,
                             sample_dim: int) -> str | None:
    """Why :func:`single_state_replay` cannot replay this call of an ``nn.RNN`` / ``nn.GRU``."""
    why = recurrent_call_unsupported(m, args, kwargs, sample_dim)
    if why:
        return why
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    shape = (m.num_layers * (2 if m.bidirectional else 1), args[0].shape[sample_dim],
             m.hidden_size)
    if hx is not None and not (isinstance(hx, Tensor) and hx.shape == shape):
        return f"hx is not a tensor of shape {shape}"
    return None


def single_state_replay(m: nn.Module, args: tuple, kwargs: dict, sample_dim: int, store: Store,
                        scan: Scan) -> tuple[Any, list[Tensor]] | str:
    """Replay ``m(*args, **kwargs)`` -> ``((out, h_n), edges)`` or why it cannot: layer by layer
    from the detached parameters, each layer and direction by ``scan`` (module docstring)."""
    why = single_state_unsupported(m, args, kwargs, sample_dim)
    if why:
        return why
    x = args[0]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if m.batch_first:
        x = x.transpose(0, 1)
    dirs = 2 if m.bidirectional else 1
    if hx is None:
        hx = x.new_zeros(m.num_layers * dirs, x.shape[1], m.hidden_size)
    h_n, edges, layer_in = [], [], x
    for layer in range(m.num_layers):
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
            names += [f"bias_ih{sfx}", f"bias_hh{sfx}"] if m.bias else []
            params = [m._parameters[k] for k in names]
            want = [p.requires_grad for p in params]
            out, got = scan(layer_in, [p.detach() for p in params], hx[layer * dirs + d],
                            bool(d), names, want, store)
            outs.append(out)
            h_n.append(out[0] if d else out[-1])
            edges += got
        layer_in = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
    out = layer_in.transpose(0, 1) if m.batch_first else layer_in
    return (out, torch.stack(h_n)), edges


def elman_replay(m: nn.RNN, args: tuple, kwargs: dict, sample_dim: int,
                 store: Store) -> tuple[Any, list[Tensor]] | str:
    """The replay rule of ``nn.RNN`` (tanh or relu; module docstring)."""
    if not isinstance(m, nn.RNN):
        return f"{type(m).__name__} is not an nn.RNN"
    return single_state_replay(m, args, kwargs, sample_dim, store, _elman_scan(m))


register_replay(nn.RNN)(elman_replay)


def examples() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Layers and per-sample input shapes for the shared test grid (tests/grads/test_rules.py)."""
    return [(nn.RNN(3, 4, batch_first=True), (5, 3)),
            (nn.RNN(3, 4, nonlinearity="relu", batch_first=True), (5, 3))]
