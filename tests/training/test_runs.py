"""Training runs: validation, determinism, exact resume, reuse by config, files, prompt mode.

Every test trains on a tiny fake split (12 + 6 clips of 8 x 8 "log-mels") under
``GRADKIT_ROOT=tmp_path``, so nothing touches the real data or checkpoints and each run takes
well under a second.
"""

import dataclasses
import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import gradkit.training.runs as T
import gradkit.training.session as S
from gradkit.core.checkpoint import CheckpointError
from gradkit.training import (
    GHMRecord,
    Run,
    TrainConfig,
    build_model,
    epoch_order,
    get_run,
    sample_loss,
)

ANGLES = torch.tensor([0.0, 36, 72, 108, 144, 180])


def fake_split(n_train=12, n_val=6, shape=(1, 8, 8), seed=0, shift=0.0):
    """Two clips per class; the class shifts the mean so the task is learnable."""
    gen = torch.Generator().manual_seed(seed)

    def part(n):
        y = torch.arange(n) % 6
        x = torch.randn(n, *shape, generator=gen) + y.view(-1, 1, 1, 1) * 0.4 + shift
        return x, y, ANGLES[y]

    x_train, y_train, a_train = part(n_train)
    x_val, y_val, a_val = part(n_val)
    return SimpleNamespace(
        x_train=x_train, y_train=y_train, angles_train=a_train,
        paths_train=[f"t{i}.wav" for i in range(n_train)],
        x_val=x_val, y_val=y_val, angles_val=a_val, paths_val=[f"v{i}.wav" for i in range(n_val)],
        classes=[f"deg{a:03d}" for a in (0, 36, 72, 108, 144, 180)], mean=0.0, std=1.0,
    )


def fake_root(tmp_path, monkeypatch):
    """``GRADKIT_ROOT=tmp_path``, the CPU, and :func:`fake_split` as every run's data."""
    monkeypatch.setenv("GRADKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("GRADKIT_DEVICE", "cpu")
    split = fake_split()
    monkeypatch.setattr(T, "_load_split", lambda config: split)
    return tmp_path


@pytest.fixture
def root(tmp_path, monkeypatch):
    return fake_root(tmp_path, monkeypatch)


def small(**kw):
    base = dict(epochs=6, save_every=3, batch_size=4, widths=(4, 8), lr=3e-3)
    return TrainConfig(**{**base, **kw})


def files(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def final_state(run):
    return run.load_model().state_dict()


def assert_same_run(a: Run, b: Run):
    for (ka, va), (kb, vb) in zip(final_state(a).items(), final_state(b).items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    pd.testing.assert_frame_equal(a.metrics, b.metrics, check_exact=True)
    assert len(a.ghm_history) == len(b.ghm_history)
    for ha, hb in zip(a.ghm_history, b.ghm_history, strict=True):
        for key in ("g", "w", "counts", "acc", "bin_weights", "rank_g", "rank_acc", "index"):
            assert torch.equal(ha[key], hb[key]), key
    pa, pb = a.load_checkpoint(), b.load_checkpoint()
    for name in ("ghmc", "ghm_ranking"):
        assert torch.equal(pa["ghm"][name]["acc_sum"], pb["ghm"][name]["acc_sum"])
    sa, sb = pa["optimizer"]["state"], pb["optimizer"]["state"]
    for i in sa:
        assert torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])


# -- configuration ----------------------------------------------------------------------------
def test_config_defaults_and_names():
    cfg = TrainConfig()
    assert (cfg.material, cfg.freq_hz, cfg.objective, cfg.mode) == ("plastic", 3000, "raw", "full")
    assert (cfg.epochs, cfg.save_every, cfg.seed, cfg.bins) == (60, 5, 42, 10)
    assert (cfg.momentum, cfg.margin) == (0.75, 10.0)
    assert cfg.folder_name == "plastic_3000hz_raw"
    prompt = TrainConfig(mode="prompt", objective="ghm")
    assert prompt.epochs == 30 and prompt.label == "prompt_ghm"
    assert prompt.base_config() == TrainConfig(objective="raw", mode="full", epochs=60)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    json.dumps(cfg.to_dict())


@pytest.mark.parametrize("field, value", [
    ("objective", "focal"), ("mode", "half"), ("epochs", 0), ("epochs", 2.5), ("save_every", 0),
    ("bins", 0), ("momentum", 1.0), ("momentum", -0.1), ("margin", -1.0), ("lr", 0.0),
    ("lr", float("nan")), ("batch_size", 0), ("rank_weight", -1.0), ("seed", -1),
    ("material", "../etc"), ("material", ""), ("freq_hz", 0), ("widths", ()),
    ("widths", (8, 0)), ("epochs", True),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown TrainConfig fields.*'colour'"):
        TrainConfig.from_dict({"colour": "red"})


def test_sample_loss_is_mean_cross_entropy_of_the_logits():
    logits, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 5])
    expected = F.cross_entropy(logits, y)
    torch.testing.assert_close(sample_loss((logits, torch.zeros(5)), y), expected)
    torch.testing.assert_close(sample_loss(logits, y), expected)


def test_raw_and_ghm_runs_start_from_the_same_weights():
    split = fake_split()
    a = build_model(small(objective="raw"), split).state_dict()
    b = build_model(small(objective="ghm"), split).state_dict()
    c = build_model(small(seed=7), split).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert torch.equal(epoch_order(12, 42, 3), epoch_order(12, 42, 3))
    assert not torch.equal(epoch_order(12, 42, 3), epoch_order(12, 42, 4))
    assert sorted(epoch_order(12, 42, 3).tolist()) == list(range(12))


# -- runs -------------------------------------------------------------------------------------
def test_files_metrics_and_history(root):
    cfg = small(objective="ghm", epochs=7)
    run = get_run(cfg, progress=False)
    folder = root / "checkpoints" / "plastic_3000hz_ghm"
    assert run.dir == folder and run.finished
    assert run.checkpoint_epochs == [3, 6, 7]
    for epoch in (3, 6, 7):
        assert (folder / f"model_ghm_epoch_{epoch}_{run.run_id}.pt").is_file()
        assert torch.load(run.checkpoint_path(epoch), weights_only=True)["epoch"] == epoch
    assert len(run.run_id) == 15 and run.run_id[8] == "_"
    csv = pd.read_csv(folder / f"metrics_ghm_{run.run_id}.csv")
    m = run.metrics
    assert list(m.columns) == [  # the columns notebooks read, in their order
        "epoch", "train_loss", "train_raw_loss", "train_ghm_loss", "train_ce", "train_rank",
        "train_acc", "val_loss", "val_raw_loss", "val_ghm_loss", "val_ce", "val_rank", "val_acc",
        "val_pair_acc"]
    assert list(m.epoch) == list(range(1, 8)) and len(csv) == 7
    pd.testing.assert_frame_equal(csv, m, check_dtype=False, atol=1e-12, rtol=0)
    for col in ("train_raw_loss", "train_ghm_loss", "train_acc", "val_raw_loss", "val_ghm_loss",
                "val_acc", "val_loss", "train_loss"):
        assert m[col].notna().all(), col
    assert (m.train_loss == m.train_ghm_loss).all()  # the GHM run optimises its GHM loss
    assert m.train_raw_loss.iloc[-1] < m.train_raw_loss.iloc[0]

    hist = run.ghm_history
    assert all(isinstance(h, GHMRecord) for h in hist)
    assert [h["epoch"] for h in hist] == [h.epoch for h in hist] == list(range(1, 8))
    assert hist[0]["rank_batch_sizes"] == hist[0].rank.batch_sizes and len(hist[0]) == 14
    for h in hist:
        assert h["g"].shape == (12,) and ((h["g"] >= 0) & (h["g"] <= 1)).all()
        assert h["counts"].shape == (3, cfg.bins)  # 12 samples / batch 4 = 3 batches
        assert h["counts"].sum(1).tolist() == [4.0, 4.0, 4.0]
        assert sorted(h["index"].tolist()) == list(range(12))
    # The EMA moves in training ...
    assert not torch.equal(hist[0]["acc"][0], hist[-1]["acc"][-1])
    # ... and evaluation never moves it: the saved state is the last training batch's EMA.
    saved = run.load_checkpoint(7)["ghm"]["ghmc"]["acc_sum"]
    assert torch.equal(saved, hist[-1]["acc"][-1])


def test_raw_run_logs_ghm_values_without_using_them(root):
    raw = get_run(small(objective="raw"), progress=False)
    m = raw.metrics
    assert (m.train_loss == m.train_raw_loss).all()
    assert not (m.train_ghm_loss == m.train_raw_loss).all()
    assert raw.ghm_history[-1]["acc"].sum() > 0  # the shadow EMA tracked the raw run
    ghm = get_run(small(objective="ghm"), progress=False)
    assert not torch.equal(final_state(raw)["classifier.weight"],
                           final_state(ghm)["classifier.weight"])


def test_determinism_two_fresh_runs_are_identical(root, monkeypatch):
    a = get_run(small(objective="ghm"), progress=False)
    monkeypatch.setenv("GRADKIT_ROOT", str(root / "elsewhere"))
    b = get_run(small(objective="ghm"), progress=False)
    assert a.dir != b.dir
    assert_same_run(a, b)


@pytest.mark.parametrize("objective", ["raw", "ghm"])
def test_resume_equals_uninterrupted(root, monkeypatch, objective):
    cfg = small(objective=objective, epochs=10, save_every=5)
    whole = get_run(cfg, progress=False)
    monkeypatch.setenv("GRADKIT_ROOT", str(root / "resumed"))
    first = get_run(cfg, progress=False, stop_after=5)
    assert not first.finished and first.checkpoint_epochs == [5]
    second = get_run(cfg, progress=False)
    assert second.run_id == first.run_id and second.checkpoint_epochs == [5, 10]
    assert_same_run(whole, second)


def test_crash_keeps_the_good_checkpoint_and_resume_is_exact(root, monkeypatch):
    cfg = small(objective="ghm", epochs=10, save_every=5)
    whole = get_run(cfg, progress=False)
    monkeypatch.setenv("GRADKIT_ROOT", str(root / "crashed"))
    real_save = S.save_checkpoint

    def crash_at_10(path, payload):
        if payload["epoch"] == 10:
            raise KeyboardInterrupt("killed while saving")
        return real_save(path, payload)

    monkeypatch.setattr(S, "save_checkpoint", crash_at_10)
    with pytest.raises(KeyboardInterrupt):
        get_run(cfg, progress=False)
    monkeypatch.setattr(S, "save_checkpoint", real_save)
    folder = root / "crashed" / "checkpoints" / "plastic_3000hz_ghm"
    assert [f for f in files(folder) if f.endswith(".pt")] == [
        next(f for f in files(folder) if "epoch_5_" in f)
    ]
    resumed = get_run(cfg, progress=False)
    assert_same_run(whole, resumed)


def test_get_run_reuses_a_finished_run(root, monkeypatch):
    cfg = small()
    first = get_run(cfg, progress=False)
    before = {p: (root / p).stat().st_mtime_ns for p in files(root)}
    calls = []
    monkeypatch.setattr(T, "_train", lambda *a, **k: calls.append(a))
    again = get_run(small(), progress=False)
    assert calls == []
    assert again.run_id == first.run_id and again.dir == first.dir
    assert {p: (root / p).stat().st_mtime_ns for p in files(root)} == before
    pd.testing.assert_frame_equal(again.metrics, first.metrics)


def test_other_config_or_other_data_is_a_new_run(root, monkeypatch):
    first = get_run(small(), progress=False)
    other_lr = get_run(small(lr=1e-3), progress=False)
    assert other_lr.run_id != first.run_id and other_lr.dir == first.dir
    monkeypatch.setattr(T, "_load_split", lambda config: fake_split(shift=0.1))
    other_data = get_run(small(), progress=False)
    assert other_data.run_id not in (first.run_id, other_lr.run_id)
    assert len({first.key, other_lr.key, other_data.key}) == 3


def test_load_model_is_eval_mode_and_bad_checkpoints_name_the_file(root):
    run = get_run(small(), progress=False)
    model = run.load_model(3)
    assert not model.training
    x = run.split.x_val
    with torch.no_grad():
        a, b = model(x), run.load_model(3)(x)
    assert torch.equal(a[0], b[0])
    with pytest.raises(CheckpointError, match="does not exist"):
        run.load_model(4)
    path = run.checkpoint_path(6)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=path.name):
        run.load_model(6)


def test_checkpoint_of_another_architecture_is_refused(root):
    run = get_run(small(), progress=False)
    payload = torch.load(run.checkpoint_path(6), weights_only=True)
    payload["model"]["classifier.weight"] = torch.zeros(3, 8)
    torch.save(payload, run.checkpoint_path(6))
    with pytest.raises(CheckpointError, match=f"{run.checkpoint_path(6).name}.*shape mismatch"):
        run.load_model(6)


def test_prompt_mode_freezes_the_trunk_of_the_raw_run(root):
    cfg = small(mode="prompt", epochs=4, base_epochs=5, save_every=2, prompt_lr=1e-2)
    run = get_run(cfg, progress=False)
    base = run.base_run
    assert base.config == dataclasses.replace(cfg, mode="full", objective="raw", epochs=5)
    assert base.finished and run.dir.name == "plastic_3000hz_prompt_raw"
    assert run.checkpoint_epochs == [2, 4]
    tuned, trunk = run.load_model(), base.load_model()
    tuned_state, base_state = tuned.state_dict(), trunk.state_dict()
    for name in base_state:
        if name.startswith(("stem.", "layers.")):
            assert torch.equal(tuned_state[name], base_state[name]), name
    assert not torch.equal(tuned_state["classifier.weight"], base_state["classifier.weight"])
    assert tuned_state["prompt.prompt"].abs().sum() > 0
    trainable = {n for n, p in tuned.named_parameters() if p.requires_grad}
    assert trainable == {"prompt.prompt", "classifier.weight", "classifier.bias",
                         "score_head.weight", "score_head.bias"}
    # Asking again reuses both runs.
    assert get_run(cfg, progress=False).run_id == run.run_id


def test_checkpoint_holds_model_optimiser_ghm_state_epoch_config_and_metrics(root):
    cfg = small(objective="ghm")
    run = get_run(cfg, progress=False)
    payload = torch.load(run.checkpoint_path(3), weights_only=True)
    assert {"model", "optimizer", "ghm", "epoch", "config", "metrics"} <= set(payload)
    assert payload["epoch"] == 3 and TrainConfig.from_dict(payload["config"]) == cfg
    assert [r["epoch"] for r in payload["metrics"]] == [1, 2, 3]
    assert set(payload["ghm"]) == {"ghmc", "ghm_ranking"}
    assert payload["ghm"]["ghmc"]["acc_sum"].sum() > 0
    assert payload["optimizer"]["state"], "Adam moments are saved"
    assert set(payload["model"]) == set(build_model(cfg, run.split).state_dict())


def test_consistent_checkpoint_of_another_architecture_is_refused(root):
    """A file whose arch and weights agree with each other but not with the run's config."""
    run = get_run(small(), progress=False)
    other = build_model(small(widths=(4, 8, 16)), run.split)
    payload = torch.load(run.checkpoint_path(6), weights_only=True)
    payload["arch"], payload["model"] = other.arch_config(), other.state_dict()
    torch.save(payload, run.checkpoint_path(6))
    with pytest.raises(CheckpointError,
                       match=f"{run.checkpoint_path(6).name}.*another architecture"):
        run.load_model(6)


def test_a_run_whose_only_checkpoint_is_unreadable_is_rebuilt_after_saying_so(root, monkeypatch):
    cfg = small(epochs=6, save_every=3)
    whole = get_run(cfg, progress=False)
    monkeypatch.setenv("GRADKIT_ROOT", str(root / "damaged"))
    first = get_run(cfg, progress=False, stop_after=3)
    path = first.checkpoint_path(3)
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(RuntimeWarning) as caught:
        again = get_run(cfg, progress=False)
    messages = [str(w.message) for w in caught]
    assert any(path.name in m and "corrupt" in m for m in messages)
    assert any("trained again from the start" in m for m in messages)
    assert path.with_name(path.name + ".corrupt").read_bytes() == b"not a checkpoint"
    assert again.run_id == first.run_id and again.checkpoint_epochs == [3, 6]
    assert_same_run(whole, again)


def test_data_root_is_recorded_but_the_data_content_identifies_the_run(tmp_path):
    here = TrainConfig(data_root=str(tmp_path / "a" / ".." / "a"))
    assert here.data_root == str((tmp_path / "a").resolve())
    moved = TrainConfig(data_root=str(tmp_path / "b"))
    assert here.to_dict()["data_root"] != moved.to_dict()["data_root"]
    assert T.run_key(here, "same-data") == T.run_key(moved, "same-data")
    assert T.run_key(here, "same-data") != T.run_key(here, "other-data")
    with pytest.raises(ValueError, match="data_root"):
        TrainConfig(data_root=3)
