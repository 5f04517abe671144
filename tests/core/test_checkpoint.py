"""Atomic checkpoint writes and safe, checked loads."""

from pathlib import Path

import pytest
import torch

from gradkit.core import io as ck
from gradkit.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gradkit.core.io import atomic_write_text
from gradkit.models import ResNetAudioRanker


def _payload(model):
    return {"arch": model.arch_config(), "model": model.state_dict(), "epoch": 3,
            "config": {"lr": 1e-3, "widths": [8, 16, 32]},
            "metrics": [{"epoch": 1, "val_acc": 0.5}], "history": [torch.arange(3)]}


def test_round_trip_with_weights_only(tmp_path):
    model = ResNetAudioRanker()
    path = save_checkpoint(tmp_path / "sub" / "m.pt", _payload(model))
    # Plain torch.load with weights_only=True accepts it: only tensors and primitives inside.
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 3 and raw["metrics"][0]["val_acc"] == 0.5
    fresh = ResNetAudioRanker(widths=(8, 16, 32))
    payload = load_checkpoint(path, expected_arch=model.arch_config(), model=fresh)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)
    torch.testing.assert_close(payload["history"][0], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary files left


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_failed_rename_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.csv"
    atomic_write_text(path, "epoch\n1\n")

    def broken_replace(src, dst):
        raise OSError("crash before rename")

    monkeypatch.setattr(ck.os, "replace", broken_replace)
    with pytest.raises(OSError, match="crash"):
        atomic_write_text(path, "epoch\n1\n2\n")
    monkeypatch.undo()
    assert path.read_text() == "epoch\n1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_missing_file_raises_naming_it(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_raises_naming_it(tmp_path, damage):
    path = tmp_path / "model_raw_epoch_5_x.pt"
    save_checkpoint(path, _payload(ResNetAudioRanker()))
    data = path.read_bytes()
    damaged = {"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 100,
               "empty": b""}[damage]
    path.write_bytes(damaged)
    with pytest.raises(CheckpointError, match="model_raw_epoch_5_x.pt.*corrupt"):
        load_checkpoint(path)


class _Custom:
    pass


def test_arbitrary_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": _Custom()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_not_a_dict_is_refused(tmp_path):
    path = tmp_path / "tensor.pt"
    torch.save(torch.ones(2), path)
    with pytest.raises(CheckpointError, match="tensor.pt.*not a checkpoint"):
        load_checkpoint(path)


def test_other_architecture_raises_naming_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "small.pt", _payload(ResNetAudioRanker(widths=(4, 8))))
    other = ResNetAudioRanker(widths=(8, 16, 32))
    with pytest.raises(CheckpointError, match="small.pt.*another architecture"):
        load_checkpoint(path, expected_arch=other.arch_config())
    with pytest.raises(CheckpointError, match="small.pt.*(missing keys|shape mismatch)"):
        load_checkpoint(path, model=other)


def test_same_keys_other_shapes_raise(tmp_path):
    payload = _payload(ResNetAudioRanker(n_classes=4))
    path = save_checkpoint(tmp_path / "four.pt", payload)
    six = ResNetAudioRanker(n_classes=6)
    before = {k: v.clone() for k, v in six.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"four.pt.*shape mismatch.*classifier"):
        load_checkpoint(path, model=six)
    for k, v in six.state_dict().items():  # the model is left untouched
        assert torch.equal(v, before[k])


def test_payload_must_be_a_mapping(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "x.pt", [1, 2])
    assert not any(Path(tmp_path).iterdir())
