"""The torchrun entry point refuses to run outside torchrun (the training itself is exercised
in test_ddp_noise.py, inside the same two spawned processes as the hook tests)."""

from __future__ import annotations

from gradkit.distributed.train import main


def test_ddp_train_main_refuses_without_torchrun(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    assert main(["--epochs", "1"]) == 2
    assert "torchrun" in capsys.readouterr().err
