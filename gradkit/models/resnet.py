"""``ResNetAudioRanker``: a small residual network over log-mel spectrograms, with two heads.

Input ``x [N, 1, mels, frames]`` (any size: the trunk ends in adaptive average pooling).

- **Trunk**: a 3x3 stem, then one :class:`BasicBlock` per width; every block after the first
  halves the resolution (stride 2, with a 1x1 projection on the skip path).
- **Heads** on the pooled features ``h [N, widths[-1]]``: ``classifier`` -> angle-class logits
  ``[N, n_classes]``, and ``score_head`` -> an ordinal score ``[N]`` that the ranking loss asks to
  grow with the angle.

Normalisation is **GroupNorm**, not BatchNorm. BatchNorm in training mode normalises with the
batch's statistics, so sample ``n``'s output (and gradient) depends on the other samples of its
batch, and the "per-sample gradient" is not the gradient of a per-sample loss. GroupNorm
normalises each sample over its own channels and positions: there is no cross-sample coupling,
training and evaluation compute the same function, and exact per-sample gradients (``torch.func``
``vmap(grad(...))``) are the gradients the optimiser actually sums.

For prompt tuning, ``prompt_shape=(1, mels, frames)`` adds an :class:`InputPrompt` (a learnable
tensor added to every input) before the trunk; :meth:`ResNetAudioRanker.freeze_trunk` then
freezes the trunk so that only the prompt and the heads learn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "InputPrompt", "ResNetAudioRanker", "group_norm"]


def group_norm(channels: int, max_groups: int = 4) -> nn.GroupNorm:
    """GroupNorm with the largest group count ``<= max_groups`` that divides ``channels``.

    Per sample: ``y = (x - mean_g) / sqrt(var_g + eps) * gamma + beta`` over each group ``g`` of
    channels and all positions; no statistic is shared between samples.
    """
    groups = next(k for k in range(min(max_groups, channels), 0, -1) if channels % k == 0)
    return nn.GroupNorm(groups, channels)


class BasicBlock(nn.Module):
    """``relu(GN(conv3x3(relu(GN(conv3x3(x))))) + skip(x))`` (He et al., 2016).

    ``skip`` is the identity when shape is kept, else ``GN(conv1x1(x, stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.norm1 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.relu = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.skip: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                group_norm(out_channels),
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.skip(x))


class InputPrompt(nn.Module):
    """A learnable additive input prompt: ``x -> x + P``, ``P`` of shape ``shape`` (zero-init).

    ``shape`` is one sample's shape, e.g. ``(1, mels, frames)``; ``P`` broadcasts over the batch.
    Zero initialisation makes the prompted model start exactly as the model without a prompt.
    """

    def __init__(self, shape: Sequence[int]):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"InputPrompt shape must be positive sizes, got {shape!r}")
        self.shape = shape
        self.prompt = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(
                f"InputPrompt of shape {self.shape} got inputs of shape {tuple(x.shape)}"
            )
        return x + self.prompt

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class ResNetAudioRanker(nn.Module):
    """Residual log-mel classifier + ordinal ranker; ``forward(x) -> (logits, score)``.

    ``x [N, in_channels, mels, frames]`` -> ``logits [N, n_classes]``, ``score [N]``.
    """

    def __init__(
        self,
        n_classes: int = 6,
        widths: Sequence[int] = (8, 16, 32),
        in_channels: int = 1,
        prompt_shape: Sequence[int] | None = None,
    ):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if n_classes < 1 or in_channels < 1 or not widths or any(w < 1 for w in widths):
            raise ValueError(
                f"bad ResNetAudioRanker sizes: n_classes={n_classes}, widths={widths}, "
                f"in_channels={in_channels}"
            )
        self.n_classes, self.widths, self.in_channels = int(n_classes), widths, int(in_channels)
        self.prompt = InputPrompt(prompt_shape) if prompt_shape is not None else None
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            group_norm(widths[0]),
            nn.ReLU(),
        )
        blocks, previous = [], widths[0]
        for k, width in enumerate(widths):
            blocks.append(BasicBlock(previous, width, stride=1 if k == 0 else 2))
            previous = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], n_classes)
        self.score_head = nn.Linear(widths[-1], 1)

    # -- architecture -------------------------------------------------------------------------
    def arch_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model: ``ResNetAudioRanker(**arch_config())``.

        Only primitives and lists, so it survives ``torch.load(weights_only=True)``.
        """
        return {
            "n_classes": self.n_classes,
            "widths": list(self.widths),
            "in_channels": self.in_channels,
            "prompt_shape": list(self.prompt.shape) if self.prompt is not None else None,
        }

    def trunk_modules(self) -> list[nn.Module]:
        """The feature extractor (stem and residual blocks), without prompt and heads."""
        return [self.stem, self.layers]

    def trunk_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.trunk_modules():
            yield from module.parameters()

    def freeze_trunk(self) -> ResNetAudioRanker:
        """``requires_grad = False`` on the trunk: only the prompt and the heads will learn."""
        for p in self.trunk_parameters():
            p.requires_grad_(False)
        return self

    def reset_classifier(self) -> None:
        """Re-draw the classifier head from PyTorch's default ``nn.Linear`` initialisation."""
        self.classifier.reset_parameters()

    # -- computation --------------------------------------------------------------------------
    def features(self, x: Tensor) -> Tensor:
        """Pooled trunk features ``[N, widths[-1]]`` (after the prompt, if any)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ResNetAudioRanker expects [N, {self.in_channels}, mels, frames], "
                f"got shape {tuple(x.shape)}"
            )
        if self.prompt is not None:
            x = self.prompt(x)
        return self.pool(self.layers(self.stem(x))).flatten(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.classifier(h), self.score_head(h).squeeze(1)

