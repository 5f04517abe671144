"""Log-mel features and the train/validation split of one material and probe frequency."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from gradkit.data.recordings import (
    SAMPLE_RATE,
    Recordings,
    load_recordings,
    problems_error,
    stratified_split,
)
from gradkit.data.synthetic import data_root

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


def split_problems(rec: Recordings, features: torch.Tensor) -> list[str]:
    """What stops a condition from being split and trained on, one line per offending class or
    file: a class of fewer than two clips (nothing to validate on), a clip whose log-mel
    features are not finite (e.g. one absurd sample such as 1e30 in a float WAV)."""
    problems = []
    for c, name in enumerate(rec.classes):
        members = [p for p, y in zip(rec.paths, rec.labels.tolist(), strict=True) if y == c]
        if len(members) == 1:  # none: the loader already names the empty folder or bad files
            problems.append(f"class {name} has {len(members)} clip(s) ({', '.join(members)}): "
                            f"a class needs at least 2, one for training and one for validation")
    bad = (~torch.isfinite(features.flatten(1))).any(1)
    for i in torch.nonzero(bad).flatten().tolist():
        peak = rec.waveforms[i].abs().max().item()
        problems.append(f"{rec.paths[i]}: its log-mel features are not finite (peak |sample| "
                        f"{peak:.3g} after conversion; full scale is 1)")
    return problems


def load_split(material: str = "plastic", freq_hz: int = 3000, root: str | Path | None = None,
               seed: int = 42, val_fraction: float = 1 / 3, *, follow_links: bool = True
               ) -> AudioSplit:
    """Features of ``root/<material>/<freq_hz>hz`` (the synthetic default set if ``root`` is
    None).

    The split is stratified and seeded (:func:`gradkit.data.stratified_split`, the same one the
    manifest records: ``round(val_fraction · n_c)``, at least one, of each class's ``n_c``
    clips); features are normalised with the training split's mean and std only. Raises one
    :class:`DataError` listing every problem (:func:`split_problems` and the loader's);
    ``follow_links=False`` refuses symbolic links leading outside ``root``.
    """
    rec = load_recordings(data_root(root), material, freq_hz, follow_links=follow_links)
    features = log_mel(rec.waveforms, rec.sample_rate)
    problems = split_problems(rec, features)
    if problems:
        raise problems_error(Path(rec.paths[0]).parent.parent, problems)
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
