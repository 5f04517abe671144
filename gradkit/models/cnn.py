"""A plain CNN without skip connections: the textbook hard-to-optimise deep network."""

from __future__ import annotations

from torch import nn

from gradkit.core.seeding import seeded

__all__ = ["plain_cnn"]


def plain_cnn(depth: int, width: int = 16, n_classes: int = 6, seed: int = 42) -> nn.Sequential:
    """A CNN with ``depth`` conv–ReLU layers and *no* skip connections and no normalisation.

    ``conv3x3(1→width)`` then ``depth − 1`` ``conv3x3(width→width)`` (layers 2 and 4 with
    stride 2), each followed by ReLU; global average pooling and a linear classifier. The
    textbook case in which a deeper network is harder to optimise than a shallower one (He et
    al., 2016); compare with :class:`gradkit.models.ResNetAudioRanker`. Seeded initial weights.
    """
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be ≥ 1, got {depth}, {width}")
    with seeded(seed):
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Conv2d(1 if i == 0 else width, width, 3, 2 if i in (1, 3) else 1, 1),
                       nn.ReLU()]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(width, n_classes))
