"""Log-mel features and the train/validation split of one material and probe frequency."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gradkit.data.recordings import SAMPLE_RATE, ensure_dataset, load_recordings, stratified_split

N_MELS = 40
N_FFT = 512
HOP = 256


def log_mel(waveforms: torch.Tensor, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS,
            n_fft: int = N_FFT, hop_length: int = HOP) -> torch.Tensor:
    """``[N, T]`` waveforms -> ``[N, 1, n_mels, frames]`` log-mel spectrograms in dB.

    ``MelSpectrogram`` (power) then ``AmplitudeToDB`` with an 80 dB floor per clip.
    """
    import torchaudio.transforms as T

    mel = T.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                           n_mels=n_mels, f_max=sample_rate / 2)
    to_db = T.AmplitudeToDB(stype="power", top_db=80.0)
    with torch.no_grad():
        return to_db(mel(waveforms)).unsqueeze(1)


@dataclass
class AudioSplit:
    """Normalised log-mel features of one condition, split into train and validation."""

    x_train: torch.Tensor  # [Nt, 1, n_mels, frames]
    y_train: torch.Tensor  # [Nt] class index
    angles_train: torch.Tensor  # [Nt] degrees
    paths_train: list[str]
    x_val: torch.Tensor
    y_val: torch.Tensor
    angles_val: torch.Tensor
    paths_val: list[str]
    classes: list[str]
    mean: float
    std: float

    @property
    def input_shape(self) -> tuple[int, ...]:
        """``(1, n_mels, frames)``: one sample's shape."""
        return tuple(self.x_train.shape[1:])


def load_split(material: str = "plastic", freq_hz: int = 3000, root: str | Path | None = None,
               seed: int = 42, val_fraction: float = 1 / 3) -> AudioSplit:
    """Features of ``root/<material>/<freq_hz>hz`` (the default data set if ``root`` is None).

    The split is stratified and seeded (:func:`gradkit.data.stratified_split`, the same one the
    manifest records); features are normalised with the training split's mean and std only.
    """
    root = ensure_dataset(root) if root is None else Path(root)
    rec = load_recordings(root, material, freq_hz)
    features = log_mel(rec.waveforms, rec.sample_rate)
    is_val = torch.from_numpy(stratified_split(rec.labels.numpy(), val_fraction, seed))
    train, val = ~is_val, is_val
    mean = features[train].mean().item()
    std = features[train].std().item() or 1.0
    features = (features - mean) / std
    pick = lambda items, mask: [p for p, keep in zip(items, mask.tolist(), strict=True) if keep]  # noqa: E731
    return AudioSplit(
        x_train=features[train], y_train=rec.labels[train], angles_train=rec.angles_deg[train],
        paths_train=pick(rec.paths, train),
        x_val=features[val], y_val=rec.labels[val], angles_val=rec.angles_deg[val],
        paths_val=pick(rec.paths, val),
        classes=rec.classes, mean=mean, std=std,
    )
