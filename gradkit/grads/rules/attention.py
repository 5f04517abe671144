"""Per-sample gradients of ``nn.MultiheadAttention`` by replaying its forward (a "replay rule").

:func:`mha_replay` recomputes the module's output from the *detached* parameters, so the
autograd graph reaches the inputs but never the parameters, and hooks the few tensors whose
gradients give every parameter's per-sample gradient. In eval mode (no dropout) sample ``n``
only touches row ``n`` of every activation, and all parameters enter through per-position affine
maps, so (``a`` a layer input, ``δ = ∂(Σ_i l_i)/∂out`` its output gradient, ``t`` the position):

- projections ``q = x_q W_qᵀ + b_q`` (same for k, v) and ``out = c W_oᵀ + b_o`` (``c`` the
  concatenated heads' context): ``∂l_n/∂W = Σ_t δ[n, t]ᵀ a[n, t]`` (one ``bmm`` over the
  ``n`` samples), ``∂l_n/∂b = Σ_t δ[n, t]``;
- self-attention (``query is key is value``, packed weights): ``[q|k|v] = x Wᵀ + b`` is one
  matmul, its gradient ``[δ_q|δ_k|δ_v]`` gives the whole ``[n, 3E, E]`` in one ``bmm``;
  otherwise each part is stored zero-padded into the packed shape (the store adds them up);
- ``bias_k``/``bias_v``: one row appended to every sample's keys/values, broadcast over heads
  by the head split, so ``∂l_n/∂bias_k`` is the gradient of that appended row of sample ``n``
  (the heads' slices side by side, i.e. summed over heads into the ``[E]`` vector).

The attention itself (masks merged exactly as ``F.multi_head_attention_forward`` does: bool
``True`` = masked -> ``-inf``, float masks added, the key padding mask added to ``attn_mask``)
has no parameters; autograd differentiates it back to the projection outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradkit.grads.rules.registry import register_replay

__all__ = ["mha_replay"]

Store = Callable[[dict[str, Tensor]], None]
_NAMES = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
          "average_attn_weights", "is_causal")
_DEFAULTS: dict[str, Any] = dict(key_padding_mask=None, need_weights=True, attn_mask=None,
                                 average_attn_weights=True, is_causal=False)


def _bind(args: tuple, kwargs: dict) -> dict[str, Any] | str:
    """``MultiheadAttention.forward``'s arguments by name, or why they cannot be read."""
    if len(args) > len(_NAMES):
        return f"MultiheadAttention got {len(args)} positional arguments"
    bound = dict(_DEFAULTS, **dict(zip(_NAMES, args, strict=False)))
    for k, v in kwargs.items():
        if k not in _NAMES or k in _NAMES[: len(args)]:
            return f"unexpected MultiheadAttention argument {k!r}"
        bound[k] = v
    missing = [k for k in _NAMES[:3] if k not in bound]
    return f"missing argument(s) {missing}" if missing else bound


def _float_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """``F._canonical_mask``: a bool mask (True = not allowed) becomes 0 / -inf in ``dtype``."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, -math.inf)


def _edge(t: Tensor) -> Tensor:
    """``t`` as a node of the graph: a fresh tensor that requires no grad becomes a leaf that does.

    (When no input requires grad the projections are constants; their gradient is still what
    the parameter rules need.)"""
    return t if t.requires_grad else t.requires_grad_()


def _padded(g: Tensor, start: int, total: int) -> Tensor:
    """``g`` [n, k, ...] placed at rows ``start:start+k`` of zeros [n, total, ...]."""
    out = g.new_zeros((g.shape[0], total, *g.shape[2:]))
    out[:, start : start + g.shape[1]] = g
    return out


def _linear_rule(a: Tensor, names: dict[str, tuple[str, tuple[int, int] | None]],
                 wants: Callable[[str], bool], store: Store) -> Callable[[Tensor], None]:
    """A tensor hook for ``out = a Wᵀ + b`` (``a`` [n, T, in], batch first): per sample
    ``δ[n]ᵀ a[n]`` and ``Σ_t δ[n, t]``. ``names`` maps "weight"/"bias" to the parameter's name
    and, when ``out`` is only rows ``start:start+k`` of a packed parameter with ``total`` rows,
    that placement ``(start, total)`` (``None`` = the whole parameter)."""
    saved = [a]

    def hook(d: Tensor) -> None:
        if not saved:
            raise RuntimeError("mha_replay: a hook fired twice (backward through the graph again)")
        x = saved.pop()
        d = d.to(x.dtype)
        factored = getattr(store, "linear", None)  # the Gram path takes x and δ themselves
        if factored is not None and factored(names, wants, x, d):
            return
        got: dict[str, Tensor] = {}
        for kind, (name, place) in names.items():
            if not wants(name):
                continue
            g = torch.bmm(d.transpose(1, 2), x) if kind == "weight" else d.sum(1)
            got[name] = g if place is None else _padded(g, place[0], place[1])
        if got:
            store(got)

    return hook


def _row_rule(name: str, shape: torch.Size, store: Store) -> Callable[[Tensor], None]:
    """Hook for an appended per-sample copy of a parameter (``bias_k``/``bias_v``): its gradient
    row is that sample's gradient."""
    return lambda d: store({name: d.reshape(d.shape[0], *shape)})


def mha_replay(m: nn.MultiheadAttention, args: tuple, kwargs: dict, sample_dim: int,
               store: Store) -> tuple[Any, list[Tensor]] | str:
    """Replay ``m(*args, **kwargs)`` so that backward yields per-sample parameter gradients.

    Returns ``(output, edges)``: ``output`` equals ``m``'s (``(attn_output, attn_weights or
    None)``), recomputed from the detached parameters, its graph reaching query/key/value;
    ``edges`` are the tensors whose gradient the caller's backward must request. Their hooks call
    ``store({name: Tensor[n, *param.shape]})`` (names as in ``m.named_parameters()``; partial
    dicts add up) for the parameters that require grad. Returns a reason string instead when the
    call is outside the rule (unbatched input, samples not on ``sample_dim``, dropout in
    training, static k/v, nested tensors, ...).
    """
    if not isinstance(m, nn.MultiheadAttention):
        return f"{type(m).__name__} is not nn.MultiheadAttention"
    b = _bind(args, kwargs)
    if isinstance(b, str):
        return b
    query, key, value = b["query"], b["key"], b["value"]
    if not all(isinstance(t, Tensor) for t in (query, key, value)):
        return "query/key/value are not all tensors"
    if any(t.is_nested for t in (query, key, value)):
        return "nested tensor input"
    if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
        return f"unbatched input ({query.dim()}-D query): no sample dimension"
    if sample_dim != (0 if m.batch_first else 1):
        return f"sample_dim {sample_dim} but batch_first={m.batch_first}"
    if m.training and m.dropout > 0:
        return f"attention dropout {m.dropout} in training mode (samples are not replayable)"
    if (m.bias_k is None) != (m.bias_v is None):
        return "only one of bias_k / bias_v is set"
    sd = sample_dim
    n = query.shape[sd]
    if key.shape[sd] != n or value.shape[sd] != n:
        return f"sample dims differ: query {n}, key {key.shape[sd]}, value {value.shape[sd]}"
    if key.shape[1 - sd] != value.shape[1 - sd]:
        return "key and value lengths differ"
    E, H = m.embed_dim, m.num_heads
    D = m.head_dim
    kpm, attn_mask, is_causal = b["key_padding_mask"], b["attn_mask"], bool(b["is_causal"])
    need_weights = bool(b["need_weights"])
    if is_causal and attn_mask is None:
        return "is_causal without attn_mask (MultiheadAttention requires the mask)"
    pdt = m.out_proj.weight.dtype
    if query.dtype != pdt or key.dtype != pdt or value.dtype != pdt:
        return f"input dtype {query.dtype} differs from the parameters' {pdt}"
    L, S = query.shape[1 - sd], key.shape[1 - sd]
    if attn_mask is not None and tuple(attn_mask.shape) not in ((L, S), (n * H, L, S)):
        return f"attn_mask of shape {tuple(attn_mask.shape)}"
    if kpm is not None and tuple(kpm.shape) != (n, S):
        return f"key_padding_mask of shape {tuple(kpm.shape)}"

    params = dict(m.named_parameters())

    def wants(name: str) -> bool:
        return name in params and params[name].requires_grad

    def detached(name: str) -> Tensor | None:
        p = getattr(m, name)
        return None if p is None else p.detach()

    edges: list[Tensor] = []
    bf = (lambda t: t) if sd == 0 else (lambda t: t.transpose(0, 1))  # -> [n, T, C]
    xq, xk, xv = bf(query), bf(key), bf(value)
    bias = detached("in_proj_bias")
    bq, bk, bv = (None, None, None) if bias is None else bias.chunk(3)

    def project(x: Tensor, w: Tensor, bb: Tensor | None, wname: str, wrow: int | None,
                brow: int | None) -> Tensor:
        """``x wᵀ + b``, hooked when its weight or bias require grad; ``wrow``/``brow``: where
        ``w``/``b`` start in the packed ``in_proj_weight``/``in_proj_bias`` (None: all of it)."""
        y = F.linear(x, w, bb)
        names = {"weight": (wname, None if wrow is None else (wrow, 3 * E))}
        if bb is not None:
            names["bias"] = ("in_proj_bias", None if brow is None else (brow, 3 * E))
        if any(wants(nm) for nm, _ in names.values()):
            y = _edge(y)
            y.register_hook(_linear_rule(x.detach(), names, wants, store))
            edges.append(y)
        return y

    if m._qkv_same_embed_dim:
        w = m.in_proj_weight.detach()
        if query is key and key is value:
            q, k, v = project(xq, w, bias, "in_proj_weight", None, None).split(E, dim=-1)
        elif key is value:
            q = project(xq, w[:E], bq, "in_proj_weight", 0, 0)
            bkv = None if bias is None else bias[E:]
            k, v = project(xk, w[E:], bkv, "in_proj_weight", E, E).split(E, dim=-1)
        else:
            q = project(xq, w[:E], bq, "in_proj_weight", 0, 0)
            k = project(xk, w[E : 2 * E], bk, "in_proj_weight", E, E)
            v = project(xv, w[2 * E :], bv, "in_proj_weight", 2 * E, 2 * E)
    else:  # kdim/vdim != embed_dim: three weights, one packed bias
        q = project(xq, m.q_proj_weight.detach(), bq, "q_proj_weight", None, 0)
        k = project(xk, m.k_proj_weight.detach(), bk, "k_proj_weight", None, E)
        v = project(xv, m.v_proj_weight.detach(), bv, "v_proj_weight", None, 2 * E)

    kf = _float_mask(kpm, query.dtype)
    causal = is_causal and kf is None and not need_weights  # F's rule for the is_causal hint
    mask = None if causal else _float_mask(attn_mask, query.dtype)
    if mask is not None:  # -> [1 or n, 1 or H, L, S]
        mask = mask.view(1, 1, L, S) if mask.dim() == 2 else mask.view(n, H, L, S)

    extra = 0
    for bname, vec, t in (("bias_k", m.bias_k, "k"), ("bias_v", m.bias_v, "v")):
        if vec is None:
            continue
        row = vec.detach().reshape(1, 1, E).expand(n, 1, E).clone()
        if wants(bname):
            row = _edge(row)
            row.register_hook(_row_rule(bname, vec.shape, store))
            edges.append(row)
        if t == "k":
            k = torch.cat([k, row], dim=1)
        else:
            v = torch.cat([v, row], dim=1)
        extra = 1
    if extra:
        mask = None if mask is None else F.pad(mask, (0, 1))
        kf = None if kf is None else F.pad(kf, (0, 1))

    q = q.view(n, L, H, D).transpose(1, 2)  # [n, H, L, D]: head h = channels h·D:(h+1)·D
    k = k.reshape(n, -1, H, D).transpose(1, 2)
    v = v.reshape(n, -1, H, D).transpose(1, 2)
    if m.add_zero_attn:
        k = torch.cat([k, k.new_zeros(n, H, 1, D)], dim=2)
        v = torch.cat([v, v.new_zeros(n, H, 1, D)], dim=2)
        mask = None if mask is None else F.pad(mask, (0, 1))
        kf = None if kf is None else F.pad(kf, (0, 1))
    if kf is not None:
        kf = kf.view(n, 1, 1, -1)
        mask = kf if mask is None else mask + kf

    if need_weights:
        scores = (q * math.sqrt(1.0 / D)) @ k.transpose(-2, -1)
        weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
        ctx = weights @ v
        if b["average_attn_weights"]:
            weights = weights.mean(dim=1)
    else:
        ctx = F.scaled_dot_product_attention(q, k, v, mask, 0.0, is_causal=causal)
        weights = None
    ctx = ctx.transpose(1, 2).reshape(n, L, E)

    ob = m.out_proj.bias
    out = F.linear(ctx, m.out_proj.weight.detach(), None if ob is None else ob.detach())
    onames: dict[str, tuple[str, tuple[int, int] | None]] = {"weight": ("out_proj.weight", None)}
    if ob is not None:
        onames["bias"] = ("out_proj.bias", None)
    if any(wants(nm) for nm, _ in onames.values()):
        out = _edge(out)
        out.register_hook(_linear_rule(ctx.detach(), onames, wants, store))
        edges.append(out)
    return (out if sd == 0 else out.transpose(0, 1), weights), edges


register_replay(nn.MultiheadAttention)(mha_replay)


class _SelfAttention(nn.Module):
    """``mha(x, x, x)``: the test grid's layers take one input."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        self.mha = mha

    def forward(self, x: Tensor) -> Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


def examples() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Layers and per-sample input shapes for the shared test grid (tests/grads/test_rules.py)."""
    return [(_SelfAttention(nn.MultiheadAttention(4, 2, batch_first=True)), (5, 4))]
