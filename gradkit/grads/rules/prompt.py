"""The project's additive input prompt (:class:`gradkit.models.InputPrompt`): ``x + P``."""

from __future__ import annotations

from torch import Tensor, nn

from gradkit.grads.rules.registry import register_rule, wants

try:  # the project's additive input prompt: x -> x + P, so ∂l_n/∂P = δ[n]
    from gradkit.models import InputPrompt

    @register_rule(InputPrompt, params=("prompt",))
    def _prompt_rule(m: nn.Module, a: Tensor, d: Tensor) -> dict[str, Tensor]:
        """``x + P`` with ``P`` broadcast over the batch: ``∂l_n/∂P = δ[n]``."""
        return {"prompt": d} if wants(m.prompt) else {}
except ImportError:  # pragma: no cover - models is optional for this module
    pass


def examples() -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Layers and per-sample input shapes for the shared test grid (tests/grads/test_rules.py)."""
    from gradkit.models import InputPrompt

    return [(InputPrompt((3, 4)), (3, 4))]
