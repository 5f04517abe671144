"""``GradientTracker`` in a real Lightning ``Trainer`` on the CPU: the recorded numbers equal a
per-sample autograd loop on the same batches, a resumed fit appends to the record, and the
``TensorBoardLogger`` gets the same scalars."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.grads.noise import noise_scale
from gradkit.track import load_run

L = pytest.importorskip("lightning")
from test_tracker import _close, _loop_grads  # noqa: E402 - tests/track is on the path

from gradkit.track import GradientTracker  # noqa: E402 - exported lazily
from gradkit.track.lightning import default_labels  # noqa: E402

BATCH, SAMPLES = 8, 24  # 3 batches an epoch


class _Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.2)


class _Loop(L.Callback):
    """Before the tracker's step: the batch's per-sample gradients by one backward per sample,
    at the weights the step starts from."""

    def __init__(self):
        self.G, self.y = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        x, y = batch
        self.G.append(_loop_grads(pl_module, x, y))
        self.y.append(y.clone())


def _loader():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(SAMPLES, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (SAMPLES,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)


def _fit(tmp_path, callbacks, epochs, logger=False, ckpt_path=None, module=None):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=logger,
                        precision="64-true", enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=callbacks)
    module = module or _Net()
    trainer.fit(module, _loader(), ckpt_path=ckpt_path)
    return trainer, module


def test_the_callback_records_what_a_per_sample_loop_gives(tmp_path):
    loop = _Loop()
    _fit(tmp_path, [loop, GradientTracker(tmp_path / "run", gram_every=2)], epochs=2)
    run = load_run(tmp_path / "run")
    assert list(run.scalars["step"]) == list(range(6))
    assert list(run.scalars["epoch"]) == [0, 0, 0, 1, 1, 1]
    assert len(loop.G) == 6
    for (_, row), G in zip(run.scalars.iterrows(), loop.G, strict=True):
        norms = G.norm(dim=1)
        ns = noise_scale(G, batch_size=len(G), n_boot=0)
        q = torch.quantile(norms, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        _close([row.norm_min, row.norm_q10, row.norm_q50, row.norm_q90, row.norm_max],
               [norms.min(), *q, norms.max()])
        _close([row.grad_sq, row.trace_sigma, row.b_simple],
               [ns.grad_sq, ns.trace_sigma, ns.b_simple])
        assert row.covered == 1.0 and row.n == BATCH
    assert sorted(run.grams) == [0, 2, 4]
    for step, K in run.grams.items():
        _close(K, loop.G[step] @ loop.G[step].T)
        assert torch.equal(run.labels[step], loop.y[step])
    assert run.meta["model"]["class"].endswith("_Net")


def test_a_resumed_fit_appends_and_logs_to_the_tensorboard_logger(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def logger():
        return TensorBoardLogger(tmp_path / "logs", name="", version=0)

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path, [GradientTracker(tmp_path / "run"), ckpt], epochs=1, logger=logger())
    first = load_run(tmp_path / "run").scalars
    loop = _Loop()
    _fit(tmp_path, [loop, GradientTracker(tmp_path / "run"),
                    ModelCheckpoint(dirpath=tmp_path / "ckpt")], epochs=2, logger=logger(),
         ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    run = load_run(tmp_path / "run")
    assert list(run.scalars["step"]) == list(range(6))
    assert list(run.scalars["session"]) == [0, 0, 0, 1, 1, 1]
    assert [s["start_step"] for s in run.meta["sessions"]] == [0, 3]
    assert run.scalars.iloc[:3].equals(first)  # the first fit's rows, unchanged
    assert len(loop.G) == 3  # the resumed fit trained the second epoch only
    for (_, row), G in zip(run.scalars.iloc[3:].iterrows(), loop.G, strict=True):
        _close(row.b_simple, noise_scale(G, batch_size=len(G), n_boot=0).b_simple)
    acc = EventAccumulator(str(tmp_path / "logs" / "version_0"),
                           size_guidance={"scalars": 0, "histograms": 0}).Reload()
    got = {e.step: e.value for e in acc.Scalars("gradkit/b_simple")}
    assert got == pytest.approx(dict(zip(run.scalars["step"], run.scalars["b_simple"],
                                         strict=True)), rel=1e-6)
    assert [e.step for e in acc.Histograms("gradkit/per_sample_norm")] == list(range(6))


class _Manual(_Net):
    def __init__(self):
        super().__init__()
        self.automatic_optimization = False


def test_what_the_tracker_cannot_follow_is_refused(tmp_path):
    with pytest.raises(ValueError, match="manual optimization"):
        _fit(tmp_path, [GradientTracker(tmp_path / "run")], epochs=1, module=_Manual())
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                        enable_progress_bar=False, accumulate_grad_batches=2,
                        callbacks=[GradientTracker(tmp_path / "run2")])
    with pytest.raises(ValueError, match="accumulate_grad_batches=2"):
        trainer.fit(_Net(), _loader())
    with pytest.raises(TypeError, match="sets 'start_step' itself"):
        GradientTracker(tmp_path / "run3", start_step=4)


class _Skipping(_Net):
    def training_step(self, batch, batch_idx):
        return None if batch_idx == 1 else super().training_step(batch, batch_idx)


def test_a_skipped_batch_records_nothing_and_unhooks(tmp_path):
    backward = torch.Tensor.backward
    loop = _Loop()
    trainer, _ = _fit(tmp_path, [loop, GradientTracker(tmp_path / "run")], epochs=1,
                      module=_Skipping())
    assert torch.Tensor.backward is backward
    run = load_run(tmp_path / "run")
    assert list(run.scalars["step"]) == [0, 2]  # the Trainer's global_step
    for (_, row), G in zip(run.scalars.iterrows(), [loop.G[0], loop.G[2]], strict=True):
        _close(row.b_simple, noise_scale(G, batch_size=len(G), n_boot=0).b_simple)


def test_default_labels():
    y = torch.arange(3)
    assert default_labels((torch.zeros(3, 2), y)) is y
    assert default_labels({"x": 1, "target": y}) is y
    assert default_labels(torch.zeros(3, 2)) is None


def test_gradkit_track_does_not_import_lightning_and_a_missing_lightning_is_named():
    code = ("import sys, gradkit.track; assert 'lightning' not in sys.modules, 'imported'\n"
            "sys.modules['lightning'] = None\n"
            "try:\n    import gradkit.track.lightning\nexcept ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert "needs the lightning package (pip install lightning" in out


class _SavedLoop(_Loop):
    """``_Loop`` on global rank 0 of a spawned DDP fit, its batches' G saved to ``path``."""

    def __init__(self, path):
        super().__init__()
        self.path = str(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.is_global_zero:
            super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            torch.save({"G": self.G, "y": self.y}, self.path)


@pytest.mark.slow
def test_under_a_ddp_strategy_rank0_records_its_local_batch(tmp_path):
    """Two spawned gloo processes: rank 0's rows are its local batches' per-sample statistics
    (its own backward's gradient, not the all-reduced .grad; the first-step check passes)."""
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=2,
                        logger=False, precision="64-true", enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        callbacks=[_SavedLoop(tmp_path / "loop.pt"),
                                   GradientTracker(tmp_path / "run", gram_every=2)])
    trainer.fit(_Net(), _loader())
    saved = torch.load(tmp_path / "loop.pt", weights_only=True)
    run = load_run(tmp_path / "run")
    assert list(run.scalars["step"]) == list(range(4))  # 12 samples a rank, batches of 8 and 4
    assert list(run.scalars["n"]) == [8, 4, 8, 4]
    assert run.meta["sessions"][0]["checks"]["per_sample_sum_vs_grad"] is True
    for (_, row), G in zip(run.scalars.iterrows(), saved["G"], strict=True):
        ns = noise_scale(G, batch_size=len(G), n_boot=0)
        _close([row.norm_max, row.grad_sq, row.trace_sigma, row.b_simple],
               [G.norm(dim=1).max(), ns.grad_sq, ns.trace_sigma, ns.b_simple])
    for step, K in run.grams.items():
        _close(K, saved["G"][step] @ saved["G"][step].T)
        assert torch.equal(run.labels[step], saved["y"][step])


def test_on_a_rank_other_than_0_the_callback_records_nothing(tmp_path):
    from types import SimpleNamespace

    module = _Net()
    trainer = SimpleNamespace(accumulate_grad_batches=1, is_global_zero=False, world_size=2,
                              global_step=0, loggers=[])
    callback = GradientTracker(tmp_path / "run")
    callback.on_train_start(trainer, module)
    callback.on_train_batch_start(trainer, module, (torch.zeros(2, 4), torch.zeros(2)), 0)
    callback.on_after_backward(trainer, module)
    callback.on_train_end(trainer, module)
    assert callback.tracker is None and not (tmp_path / "run").exists()
    trainer.is_global_zero = True  # rank 0 of 2: its own backward's gradient, not .grad
    callback.on_train_start(trainer, module)
    assert callback.tracker.local_grads
    callback.on_train_end(trainer, module)
