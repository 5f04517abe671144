"""Per-sample gradients of ``nn.LSTM`` from one batched forward and backward (a replay rule).

One LSTM layer (one direction) computes, for every step ``t``, the gate pre-activations

    ``G_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh``   (``[n, 4H]``, gates in PyTorch's order
    ``i, f, g, o``)
    ``i, f, o = σ(G_t^i), σ(G_t^f), σ(G_t^o)``,  ``g = tanh(G_t^g)``
    ``c_t = f ⊙ c_{t-1} + i ⊙ g``,  ``h_t = o ⊙ tanh(c_t)``.

Each parameter enters only through ``G_t``, and sample ``n`` only touches row ``n``, so with
``δG[t, n] = ∂L/∂G_t[n]`` (``L = Σ_n l_n``) the per-sample gradients are

    ``∂l_n/∂W_ih = Σ_t δG[t, n]ᵀ x[t, n]``,   ``∂l_n/∂W_hh = Σ_t δG[t, n]ᵀ h[t-1, n]``,
    ``∂l_n/∂b_ih = ∂l_n/∂b_hh = Σ_t δG[t, n]``.

The replay splits ``G_t = A[t] + h_{t-1} W_hhᵀ`` with the input part for all steps in one
matmul, ``A = X W_ihᵀ + b_ih + b_hh`` (``[T, n, 4H]``). ``A[t]`` enters the graph only through
``G_t``, so ``∂L/∂A = δG``: one tensor hook on ``A`` receives all of ``δG`` and turns it into the
three sums above (batched matmuls over the samples). The recurrence itself is one autograd node
(:class:`_LSTMScan`) with a hand-written backward through time (BPTT),

    ``δh_t = ∂L/∂h_t (from above) + δG_{t+1} W_hh``,
    ``δc_t = δc_{t+1} ⊙ f_{t+1} + δh_t ⊙ o ⊙ (1 - tanh²c_t)``,
    ``δG^i = δc_t ⊙ g ⊙ i(1-i)``, ``δG^f = δc_t ⊙ c_{t-1} ⊙ f(1-f)``,
    ``δG^g = δc_t ⊙ i ⊙ (1-g²)``, ``δG^o = δh_t ⊙ tanh(c_t) ⊙ o(1-o)``,

so autograd sees one node per layer and direction instead of a dozen per step. Layers stack on
the concatenated directions; the reverse direction runs the same scan from ``t = T-1`` down
(its "previous" hidden state is ``h_{t+1}``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

from gradkit.grads.rules.registry import register_replay

__all__ = ["lstm_replay", "lstm_unsupported", "per_sample_sums"]

Store = Callable[[dict[str, Tensor]], None]


class _LSTMScan(torch.autograd.Function):
    """``(A [T, n, 4H], W_hh, h0 [n, H], c0 [n, H], reverse, box) -> (H [T, n, H], c_last)``.

    The recurrence of one layer and direction given its input projection ``A`` (biases
    included); ``W_hh`` is a constant (its gradient comes from the hook on ``A``). The hidden
    states and ``c_last`` are torch's own LSTM kernel's, computed outside the graph and handed
    over in ``box`` (:func:`_native_layer`): from them every step's gates follow at once,
    ``G = A + h_prev W_hhᵀ``, and the cell states by one fused op per step. The backward through
    time is hand-written (module docstring), about six ops per step, in time order.
    """

    @staticmethod
    def forward(ctx, A: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, reverse: bool, box: list):
        out, c_last = box.pop()  # not inputs: autograd attaches this node to them, no copy
        T, n, G = A.shape
        H = G // 4
        h_prev = previous(out, h0, reverse)
        gates = torch.addmm(A.reshape(T * n, G), h_prev.reshape(T * n, H), w_hh.t()).view(T, n, G)
        gates[..., : 2 * H].sigmoid_()
        gates[..., 2 * H : 3 * H].tanh_()
        gates[..., 3 * H :].sigmoid_()
        i, f, g, _ = gates.split(H, dim=2)
        cs = i * g  # c after step t, in time order: c_t = f_t c_prev + i_t g_t
        c, f_t, c_t = c0, f.unbind(0), cs.unbind(0)
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            c = c_t[t].addcmul_(f_t[t], c)
        ctx.save_for_backward(w_hh, gates, previous(cs, c0, reverse), torch.tanh(cs))
        ctx.reverse = reverse
        return out, c_last

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out: Tensor, d_c: Tensor):
        w_hh, gates, c_prev, tcs = ctx.saved_tensors
        T, n, G = gates.shape
        H = G // 4
        i, f, g, o = gates.split(H, dim=2)
        # The gates' local derivatives for all steps at once: δG = [δc, δc, δc, δh] ⊙ p.
        p = torch.empty_like(gates)
        pi, pf, pg, po = p.split(H, dim=2)
        torch.mul(g, i * (1 - i), out=pi)
        torch.mul(c_prev, f * (1 - f), out=pf)
        torch.mul(i, 1 - g * g, out=pg)
        torch.mul(tcs, o * (1 - o), out=po)
        oc = (o * (1 - tcs * tcs)).unbind(0)  # ∂h/∂c
        del gates, c_prev, tcs, i, g, o
        dA = torch.empty_like(p)  # δG in time order
        p3, d3 = p.view(T, n, 4, H)[:, :, :3].unbind(0), dA.view(T, n, 4, H)[:, :, :3].unbind(0)
        po, do, f, d_t, dA_t = (po.unbind(0), dA[..., 3 * H :].unbind(0), f.unbind(0),
                                d_out.unbind(0), dA.unbind(0))
        prev = None
        for t in (range(T) if ctx.reverse else range(T - 1, -1, -1)):
            dh = d_t[t] if prev is None else torch.addmm(d_t[t], dA_t[prev], w_hh)
            d_c = torch.addcmul(d_c, dh, oc[t])
            torch.mul(p3[t], d_c.unsqueeze(1), out=d3[t])
            torch.mul(po[t], dh, out=do[t])
            d_c = d_c * f[t]
            prev = t
        dh0 = dA_t[prev] @ w_hh if ctx.needs_input_grad[2] else None
        dc0 = d_c if ctx.needs_input_grad[3] else None
        return dA, None, dh0, dc0, None, None


def previous(states: Tensor, first: Tensor, reverse: bool) -> Tensor:
    """Each step's previous state ``[T, n, H]`` (time order): ``first`` before the first step
    (``t = 0``, or ``t = T - 1`` when ``reverse``)."""
    if reverse:
        return torch.cat([states[1:], first.unsqueeze(0)])
    return torch.cat([first.unsqueeze(0), states[:-1]])


def _native_layer(m: nn.LSTM, layer: int, x: Tensor, h0: Tensor, c0: Tensor
                  ) -> list[tuple[Tensor, Tensor]]:
    """One layer's ``[(H [T, n, H], c_last [n, H])]`` per direction by torch's own LSTM kernel
    (its fused CPU / cuDNN path), outside the graph: the forward the plain model runs."""
    dirs = 2 if m.bidirectional else 1
    sfx = [f"_l{layer}" + ("_reverse" if d else "") for d in range(dirs)]
    kinds = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if m.bias else [])
    params = [m._parameters[k + s].detach() for s in sfx for k in kinds]
    with torch.no_grad():
        out, _, c_n = torch.lstm(x.detach(), (h0.detach(), c0.detach()), params, m.bias, 1, 0.0,
                                 False, m.bidirectional, False)
    Hd = m.hidden_size
    return [(out[..., d * Hd : (d + 1) * Hd], c_n[d]) for d in range(dirs)]


def recurrent_call_unsupported(m: nn.Module, args: tuple, kwargs: dict,
                               sample_dim: int) -> str | None:
    """What every recurrent replay (LSTM, GRU, RNN) needs of a call, or why this one falls short:
    one batched 3-D input tensor (no PackedSequence) with the samples where ``batch_first``
    says, the parameters' dtype and device, no dropout between layers in training mode, grad
    mode on. The initial state's form is each rule's own check."""
    if set(kwargs) - {"hx"} or len(args) + len(kwargs) > 2 or not args:
        return f"{type(m).__name__} called with args {len(args)} and kwargs {sorted(kwargs)}"
    x = args[0]
    if isinstance(x, PackedSequence):
        return "PackedSequence input (variable lengths)"
    if not isinstance(x, Tensor) or x.dim() != 3:
        return f"input of {getattr(x, 'dim', lambda: '?')()} dims (unbatched or not a tensor)"
    if m.dropout > 0 and m.training and m.num_layers > 1:
        return f"dropout = {m.dropout} between layers in training mode"
    if sample_dim != (0 if m.batch_first else 1):
        return f"samples in dim {sample_dim} but batch_first={m.batch_first}"
    w = m.weight_ih_l0
    if x.dtype != w.dtype or x.device != w.device or not x.dtype.is_floating_point:
        return f"input {x.dtype} on {x.device}, parameters {w.dtype} on {w.device}"
    if not torch.is_grad_enabled():
        return "grad mode is off"
    return None


def lstm_unsupported(m: nn.Module, args: tuple, kwargs: dict, sample_dim: int) -> str | None:
    """Why :func:`lstm_replay` cannot replay this call (None: it can)."""
    if not isinstance(m, nn.LSTM) or m.mode != "LSTM":
        return f"{type(m).__name__} is not an nn.LSTM"
    if m.proj_size > 0:
        return f"proj_size = {m.proj_size} (projected LSTM)"
    why = recurrent_call_unsupported(m, args, kwargs, sample_dim)
    if why:
        return why
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if hx is not None:
        n, dirs = args[0].shape[sample_dim], 2 if m.bidirectional else 1
        shape = (m.num_layers * dirs, n, m.hidden_size)
        if not (isinstance(hx, tuple | list) and len(hx) == 2
                and all(isinstance(h, Tensor) and h.shape == shape for h in hx)):
            return f"hx is not a pair (h0, c0) of shape {shape}"
    return None


def per_sample_sums(dG: Tensor, x: Tensor, h_prev: Tensor, names: list[str],
                want: list[bool]) -> dict[str, Tensor]:
    """``δG [T, n, 4H]``, ``x [T, n, D]``, ``h_prev [T, n, H]`` -> the sums of the module
    docstring, for the parameters ``names`` (weight_ih, weight_hh[, bias_ih, bias_hh]) wanted."""
    dGn = dG.permute(1, 2, 0)  # [n, 4H, T]
    got = {}
    if want[0]:
        got[names[0]] = torch.bmm(dGn, x.transpose(0, 1))
    if want[1]:
        got[names[1]] = torch.bmm(dGn, h_prev.transpose(0, 1))
    if len(names) > 2 and (want[2] or want[3]):
        db = dG.sum(0)
        for k in (2, 3):
            if want[k]:
                got[names[k]] = db if k == 2 or not want[2] else db.clone()
    return got


def lstm_replay(m: nn.LSTM, args: tuple, kwargs: dict, sample_dim: int,
                store: Store) -> tuple[Any, list[Tensor]] | str:
    """Replay ``m(*args, **kwargs)`` -> ``((out, (h_n, c_n)), edges)`` or why it cannot.

    The output is recomputed layer by layer from the detached parameters (the graph reaches
    the input and ``hx`` but not the parameters). ``edges`` are the input projections ``A`` of
    the layers and directions with trainable parameters; when the backward reaches one, its
    hook calls ``store({name: Tensor[n, *param.shape]})`` for that layer and direction's
    trainable parameters and drops the activations it kept.
    """
    why = lstm_unsupported(m, args, kwargs, sample_dim)
    if why:
        return why
    x = args[0]
    hx = args[1] if len(args) > 1 else kwargs.get("hx")
    if m.batch_first:
        x = x.transpose(0, 1)
    T, n, _ = x.shape
    Hd, dirs = m.hidden_size, 2 if m.bidirectional else 1
    if hx is None:
        zeros = x.new_zeros(m.num_layers * dirs, n, Hd)
        hx = (zeros, zeros)
    h_n, c_n, edges = [], [], []
    layer_in = x
    for layer in range(m.num_layers):
        x2 = layer_in.reshape(T * n, -1)
        ks = slice(layer * dirs, (layer + 1) * dirs)
        native = _native_layer(m, layer, layer_in, hx[0][ks], hx[1][ks])
        outs = []
        for d in range(dirs):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
            names += [f"bias_ih{sfx}", f"bias_hh{sfx}"] if m.bias else []
            params = [m._parameters[k] for k in names]
            w_ih, w_hh = params[0].detach(), params[1].detach()
            if m.bias:
                A = torch.addmm(params[2].detach() + params[3].detach(), x2, w_ih.t())
            else:
                A = torch.mm(x2, w_ih.t())
            A = A.view(T, n, 4 * Hd)
            want = [p.requires_grad for p in params]
            if any(want) and not A.requires_grad:
                A.requires_grad_()  # a leaf: the backward still delivers δG to its hook
            k = layer * dirs + d
            out, c_last = _LSTMScan.apply(A, w_hh, hx[0][k], hx[1][k], bool(d), [native[d]])
            outs.append(out)
            h_n.append(out[0] if d else out[T - 1])
            c_n.append(c_last)
            if any(want):
                edges.append(A)
                A.register_hook(_hook(layer_in.detach(), out.detach(), hx[0][k].detach(),
                                      bool(d), names, want, store))
        layer_in = outs[0] if dirs == 1 else torch.cat(outs, dim=2)
    out = layer_in.transpose(0, 1) if m.batch_first else layer_in
    return (out, (torch.stack(h_n), torch.stack(c_n))), edges


def _hook(x: Tensor, out: Tensor, h0: Tensor, reverse: bool, names: list[str],
          want: list[bool], store: Store) -> Callable[[Tensor], None]:
    """The hook on ``A``: ``δG`` -> ``store`` the per-sample gradients; frees what it kept."""
    kept = [x, out, h0]

    def on_grad(dG: Tensor) -> None:
        x, out, h0 = kept
        kept.clear()
        store(per_sample_sums(dG, x, previous(out, h0, reverse), names, want))

    return on_grad


register_replay(nn.LSTM)(lstm_replay)


def examples() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Layers and per-sample input shapes for the shared test grid (tests/grads/test_rules.py)."""
    return [(nn.LSTM(3, 4, batch_first=True), (5, 3)),
            (nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True), (4, 3))]
