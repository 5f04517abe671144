"""Models not shaped by gradkit, built from torch and torchaudio alone, for the benchmark.

Each builder returns ``(model, inputs, targets)`` for ``n`` samples with cross-entropy targets
(3 classes; Wav2Letter 5), random normal inputs, seed 0, eval mode. The model sizes are small
enough for this 2-core CPU; their layouts are the libraries' own (torchaudio's Conformer runs
its layers time-major, ``[T, N, C]``, and takes ``(x, lengths)``).
"""

from __future__ import annotations

import torch
from torch import nn


class PoolHead(nn.Module):
    """``body(x)`` -> mean over the time axis -> Linear (the classifier every model gets)."""

    def __init__(self, body: nn.Module, width: int, classes: int = 3, time_dim: int = 1):
        super().__init__()
        self.body, self.head, self.time_dim = body, nn.Linear(width, classes), time_dim

    def forward(self, x):
        h = self.body(x)
        h = h[0] if isinstance(h, tuple) else h
        return self.head(h.mean(self.time_dim))


def transformer(n: int):
    """``nn.TransformerEncoder``: 2 layers, d = 32, 4 heads, feed-forward 64, on ``[N, 20, 32]``."""
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = PoolHead(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), 32)
    return model.eval(), torch.randn(n, 20, 32), torch.randint(0, 3, (n,))


def lstm(n: int):
    """``nn.LSTM``: 1 layer, 16 -> 32, batch first, on ``[N, 20, 16]``."""
    model = PoolHead(nn.LSTM(16, 32, batch_first=True), 32)
    return model.eval(), torch.randn(n, 20, 16), torch.randint(0, 3, (n,))


class ConformerClassifier(nn.Module):
    """torchaudio's ``Conformer`` (tiny) on ``(x [N, T, 16], lengths [N])``, masked mean, Linear."""

    def __init__(self):
        super().__init__()
        from torchaudio.models import Conformer

        self.conformer = Conformer(input_dim=16, num_heads=2, ffn_dim=32, num_layers=2,
                                   depthwise_conv_kernel_size=7)
        self.head = nn.Linear(16, 3)

    def forward(self, inputs):
        x, lengths = inputs
        h, lengths = self.conformer(x[:, : int(lengths.max())], lengths)  # as a padded batch
        mask = (torch.arange(h.shape[1])[None, :] < lengths[:, None]).to(h.dtype)[..., None]
        return self.head((h * mask).sum(1) / lengths[:, None].to(h.dtype))


def conformer(n: int):
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(12, 21, (n,), generator=g)
    x = torch.randn(n, 20, 16)
    return ConformerClassifier().eval(), (x, lengths), torch.randint(0, 3, (n,))


class Wav2LetterClassifier(nn.Module):
    """torchaudio's ``Wav2Letter`` (16 MFCC features, 5 classes; its own 250/2000 channels,
    ``Conv1d(250, 2000, 32)`` included), log-probabilities averaged over time."""

    def __init__(self):
        super().__init__()
        from torchaudio.models import Wav2Letter

        self.w2l = Wav2Letter(num_classes=5, input_type="mfcc", num_features=16)

    def forward(self, x):
        return self.w2l(x).mean(2)


def wav2letter(n: int):
    return Wav2LetterClassifier().eval(), torch.randn(n, 16, 100), torch.randint(0, 5, (n,))


# name -> (builder, N)
MODELS = {
    "TransformerEncoder": (transformer, 32),
    "LSTM": (lstm, 32),
    "Conformer (torchaudio)": (conformer, 32),
    "Wav2Letter (torchaudio)": (wav2letter, 8),
}
