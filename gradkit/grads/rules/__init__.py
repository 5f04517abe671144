"""The ``"layers"`` method's rules, one file per layer type (BackPACK / Opacus style).

Forward hooks keep each layer's input ``a`` and tensor hooks its output gradient
``δ = ∂(Σ_i l_i)/∂out``; because sample ``i`` only touches row ``i`` of every activation (eval
mode), the per-sample gradient of a layer is a per-sample contraction of ``a_i`` and ``δ_i``, one
small rule per layer type. A layer type's file holds all its forms: the materialised rule, the
Gram / norm / sketch forms where they differ from materialising (:mod:`gradkit.grads.gramsink`
reduces the rest), and, where the forward is more than one contraction, its *replay* (the
module's output computed by the rule, instead of its forward, so that the backward yields the
per-sample gradients):

- :mod:`~gradkit.grads.rules.linear`     ``nn.Linear``: ``δ_iᵀ a_i``; Gram (ghost), norms, sketch
- :mod:`~gradkit.grads.rules.conv`       convolutions: the exact paths and their cost model, and
  the forms of a Linear layer on unfolded patches
- :mod:`~gradkit.grads.rules.norm`       LayerNorm / BatchNorm (eval) ``Σ δ_i ⊙ x̂_i``, ``Σ δ_i``;
  GroupNorm by replay (one native backward)
- :mod:`~gradkit.grads.rules.prompt`     the project's ``InputPrompt``: ``δ_i``
- :mod:`~gradkit.grads.rules.lstm`       ``nn.LSTM``'s replay (backward through time, per sample)
- :mod:`~gradkit.grads.rules.rnn`        ``nn.RNN``'s replay, the one-state layer loop
- :mod:`~gradkit.grads.rules.gru`        ``nn.GRU``'s replay
- :mod:`~gradkit.grads.rules.attention`  ``nn.MultiheadAttention``'s replay (projections as Linear)
- :mod:`~gradkit.grads.rules.registry`   :func:`register_rule`, :func:`register_replay`, lookups

The backward is taken with respect to the layer outputs only, so autograd never forms the summed
weight gradients it would throw away. A new layer type: one file here that calls
:func:`register_rule` (or :func:`register_replay`; :func:`register_factored` when its weight
gradient is a product of factors, for the Gram path's ghost and sketch forms), gives
``examples()`` and is imported below; the shared test grid
(``tests/grads/test_rules.py``) runs every registered type. Why each rule has the form it has
(measurements): ``benchmarks/README.md``.
"""

# Each file registers its layer types when imported.
from gradkit.grads.rules import (  # noqa: E402, F401, I001
    attention,
    conv,
    gru,
    linear,
    lstm,
    norm,
    prompt,
    rnn,
)
from gradkit.grads.rules.registry import (
    Factored,
    Replay,
    Rule,
    any_sample_dim,
    factored_for,
    holds_free_parameters,
    layers_supported,
    register_factored,
    register_replay,
    register_rule,
    replay_for,
    rule_for,
    unsupported_reason,
    wants,
)

__all__ = ["Factored", "Replay", "Rule", "any_sample_dim", "factored_for", "holds_free_parameters",
           "layers_supported", "register_factored", "register_replay", "register_rule",
           "replay_for", "rule_for", "unsupported_reason", "wants"]
