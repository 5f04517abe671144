"""Training the detection + classification task of notebook 04, with diagnostics at every step.

:func:`train_multitask` trains one method of :data:`METHODS` (a network of
:mod:`gradkit.models.multitask` and a loss combiner of :mod:`gradkit.losses.weighting`) on one seed
and records, at every step, the two task losses, the weights, and the two tasks' gradients on the
shared parameters (norms, :func:`~gradkit.grads.similarity.cosine`,
:func:`~gradkit.grads.similarity.magnitude_similarity`, the plane picture).
:func:`run_comparison` trains every method on every seed. The loop is the workbook's one
(:func:`gradkit.training.loop.fit_epoch`), the held-out pass its one evaluation pass.

**Peak memory** of a training step (``MultitaskRun.peak_step_bytes``): the tensor bytes held at
the step's backward pass, i.e. the parameters, their gradients, Adam's two moments and every
tensor autograd saved for backward during the step's forward and the method's backward
(counted with ``torch.autograd.graph.saved_tensors_hooks``, each storage once), maximised over
steps. It is a count of tensor storage, exact and independent of the allocator and the other
processes (``tracemalloc`` does not see PyTorch's CPU allocations and the process RSS mixes in
everything else the kernel holds); the probes of the task gradients are left out, as in the
timing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import nn

from gradkit.core.params import count_parameters, flat_grad
from gradkit.core.seeding import seeded
from gradkit.data.events import EventData, make_event_data
from gradkit.grads.similarity import cosine, magnitude_similarity
from gradkit.losses.tasks import box_iou, classification_loss, decode_boxes, detection_loss
from gradkit.losses.weighting import FixedWeights, GradNorm, PCGrad, UncertaintyWeighting
from gradkit.models.multitask import SharedNet, TwoBackbones
from gradkit.training.loop import evaluate as evaluate_pass
from gradkit.training.loop import fit_epoch

TASKS = ("detection", "classification")


METHODS = {
    "equal": "fixed weights 1 / 1",
    "study": "fixed weights 1.0 / 0.01 (the study's initial weights)",
    "gradnorm": "GradNorm, alpha 1.5, lr 0.025, from 1 / 1",
    "uncertainty": "uncertainty weighting (Kendall 2018)",
    "pcgrad": "PCGrad (Yu 2020)",
    "two_backbones": "two independent backbones, fixed weights 1 / 1",
}


def make_method(name: str, seed: int = 0, alpha: float = 1.5, gradnorm_lr: float = 0.025,
                init_weights: Sequence[float] | None = None):
    """``(model, combiner)`` for a method of :data:`METHODS`; ``seed`` sets the initialisation."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    with seeded(seed):
        model = TwoBackbones() if name == "two_backbones" else SharedNet()
    T = len(TASKS)
    combiner = {
        "equal": lambda: FixedWeights([1.0, 1.0]),
        "study": lambda: FixedWeights([1.0, 0.01]),
        "gradnorm": lambda: GradNorm(T, alpha=alpha, lr=gradnorm_lr, init_weights=init_weights),
        "uncertainty": lambda: UncertaintyWeighting(T),
        "pcgrad": lambda: PCGrad(T, seed=seed),
        "two_backbones": lambda: FixedWeights([1.0, 1.0]),
    }[name]()
    return model, combiner




@dataclass
class MultitaskConfig:
    """One training run. ``seed`` sets the initialisation and the batch order; the data are fixed
    by ``data_seed`` (train) and ``data_seed + 1`` (held-out test)."""

    method: str = "equal"
    seed: int = 0
    epochs: int = 8
    batch_size: int = 64
    lr: float = 0.02
    n_train: int = 1024
    n_test: int = 512
    data_seed: int = 0
    alpha: float = 1.5
    gradnorm_lr: float = 0.025
    init_weights: tuple[float, ...] | None = None   # GradNorm's starting weights (None: 1, 1)


@dataclass
class MultitaskRun:
    """What one run recorded.

    ``history``: one row per step (losses, weights, task gradient norms on the shared
    parameters, their cosine and magnitude similarity, weighted norms, the plane picture).
    ``layer_norms``: per step, per shared tensor, each task's gradient norm.
    ``epoch_times``: training seconds per epoch (forward + combine/backward + optimiser step;
    the measurement probes are excluded). ``metrics``: held-out mean IoU, share IoU >= 0.5,
    accuracy. ``passes``: backward passes per step through the first backbone layer(s) and
    through the last shared layer. ``adapted_scalars``: how many scalars the combiner itself
    adapts during training (GradNorm's weights, uncertainty weighting's log-variances).
    """

    config: MultitaskConfig
    history: pd.DataFrame
    layer_norms: pd.DataFrame
    epoch_times: list[float]
    metrics: dict[str, float]
    n_params: int
    passes: dict[str, float] = field(default_factory=dict)
    adapted_scalars: int = 0
    initial_metrics: dict[str, float] = field(default_factory=dict)
    peak_step_bytes: int = 0
    steps: int = 0

    @property
    def seconds_per_batch(self) -> float:
        """Mean training seconds per step (forward, combine, backward, optimiser step)."""
        return sum(self.epoch_times) / max(self.steps, 1)


_data_cache: dict[tuple[int, int, int], EventData] = {}


def event_data(n: int, seed: int) -> EventData:
    """:func:`make_event_data`, memoised (every run of a comparison uses the same clips)."""
    key = (n, seed, 16)
    if key not in _data_cache:
        _data_cache[key] = make_event_data(n, seed)
    return _data_cache[key]


def evaluate(model: nn.Module, data: EventData) -> dict[str, float]:
    """Held-out ``mean_iou``, ``iou50`` (share of clips with IoU >= 0.5) and ``accuracy``,
    through the shared evaluation pass (eval mode, no gradients)."""
    def measure() -> dict[str, float]:
        det, logits = model(data.x)
        iou = box_iou(decode_boxes(det, data.size), data.boxes)
        return {"mean_iou": float(iou.mean()), "iou50": float((iou >= 0.5).float().mean()),
                "accuracy": float((logits.argmax(1) == data.labels).float().mean())}
    return evaluate_pass(model, measure)


def _plane(g1: torch.Tensor, g2: torch.Tensor, u: torch.Tensor) -> list[float]:
    """Coordinates of ``g1, g2, u`` in the plane of ``g1`` (x axis) and ``g2``: 6 numbers."""
    e1 = g1 / g1.norm().clamp(min=1e-30)
    rest = g2 - (g2 @ e1) * e1
    e2 = rest / rest.norm().clamp(min=1e-30)
    return [float(v @ e) for v in (g1, g2, u) for e in (e1, e2)]


class _SavedBytes:
    """Bytes of the distinct storages autograd saves for backward inside the context."""

    def __init__(self):
        self.seen: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        self.seen[storage.data_ptr()] = storage.nbytes()
        return t

    def context(self):
        self.seen.clear()
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    @property
    def total(self) -> int:
        return sum(self.seen.values())


def _state_bytes(params: list[torch.Tensor], optimizer: torch.optim.Optimizer) -> int:
    """Parameters, their gradients and the optimiser's tensors, in bytes."""
    total = sum(p.numel() * p.element_size() * (2 if p.grad is not None else 1) for p in params)
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values()
                     if isinstance(v, torch.Tensor))
    return total


def _step_record(step: int, epoch: int, losses, weights, g, shared, names
                 ) -> tuple[dict, list[dict]]:
    """One step's row of :attr:`MultitaskRun.history` and its rows of ``layer_norms``."""
    row = {"step": step, "epoch": epoch,
           "loss_det": float(losses[0].detach()), "loss_cls": float(losses[1].detach()),
           "w_det": float(weights[0]), "w_cls": float(weights[1])}
    if g is None:
        return row, []
    update = torch.cat([p.grad.reshape(-1) for p in shared])
    n1, n2 = float(g[0].norm()), float(g[1].norm())
    row.update(gnorm_det=n1, gnorm_cls=n2, wgnorm_det=row["w_det"] * n1,
               wgnorm_cls=row["w_cls"] * n2, cosine=cosine(g[0], g[1]),
               magsim=magnitude_similarity(g[0], g[1]), update_norm=float(update.norm()))
    row.update(zip(("g1_x", "g1_y", "g2_x", "g2_y", "u_x", "u_y"),
                   _plane(g[0], g[1], update), strict=True))
    layers, offset = [], 0
    for name, p in zip(names, shared, strict=True):
        k = p.numel()
        layers.append({"step": step, "tensor": name, "det": float(g[0][offset:offset + k].norm()),
                       "cls": float(g[1][offset:offset + k].norm())})
        offset += k
    return row, layers


def train_multitask(config: MultitaskConfig, progress: bool = False) -> MultitaskRun:
    """Train ``config.method`` with Adam and measure the two tasks' gradients at every step."""
    train, test = event_data(config.n_train, config.data_seed), event_data(
        config.n_test, config.data_seed + 1)
    model, combiner = make_method(config.method, config.seed, config.alpha, config.gradnorm_lr,
                                  config.init_weights)
    extra = list(combiner.parameters()) if isinstance(combiner, nn.Module) else []
    optimizer = torch.optim.Adam(list(model.parameters()) + extra, lr=config.lr, foreach=True)
    shared = model.shared_parameters()
    names = [n for n, p in model.named_parameters() if any(p is q for q in shared)]
    # What the combiner measures on: GradNorm the last shared layer, PCGrad all shared ones.
    combine_on = model.last_shared_parameters() if isinstance(combiner, GradNorm) else shared

    counts = {"backbone": 0, "last_shared": 0}
    counting = [False]

    def counter(key):
        def hook(grad):
            if counting[0]:
                counts[key] += 1
        return hook
    handles = [layer.weight.register_hook(counter("backbone")) for layer in model.first_layers()]
    handles += [p.register_hook(counter("last_shared")) for p in model.last_shared_parameters()[:1]]

    order_gen = torch.Generator().manual_seed(config.seed)
    rows, layer_rows, epoch_times = [], [], []
    initial = evaluate(model, test)
    saved, all_params = _SavedBytes(), list(model.parameters()) + extra
    probe = {"peak": 0, "seconds": 0.0}

    def step(idx):  # forward (timed) and the probe of each task's gradient (not timed)
        t0 = time.perf_counter()
        with saved.context():
            det, logits = model(train.x[idx])
            losses = [detection_loss(det, train.boxes[idx], train.size),
                      classification_loss(logits, train.labels[idx])]
        probe["seconds"] += time.perf_counter() - t0
        probe["forward_saved"] = dict(saved.seen)
        probe["g"] = [flat_grad(loss, shared, retain_graph=True) for loss in losses] \
            if shared else None
        probe["weights"] = combiner.weights.clone()  # the weights this step is taken with
        return losses

    def backward(losses):  # the method's backward; timed with the optimiser step (on_step)
        probe["t1"] = time.perf_counter()
        counting[0] = True
        with saved.context():
            combiner.backward(losses, combine_on)
        counting[0] = False

    def on_step(b, idx, losses):
        probe["seconds"] += time.perf_counter() - probe["t1"]
        saved.seen.update(probe["forward_saved"])
        probe["peak"] = max(probe["peak"], saved.total + _state_bytes(all_params, optimizer))
        row, layers = _step_record(len(rows), epoch, losses, probe["weights"], probe["g"],
                                   shared, names)
        rows.append(row)
        layer_rows.extend(layers)

    epochs = range(config.epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc=config.method, leave=False)
    for epoch in epochs:
        probe["seconds"] = 0.0
        order = torch.randperm(len(train), generator=order_gen)
        fit_epoch(model, optimizer, order.split(config.batch_size), step, epoch=epoch,
                  backward=backward, on_step=on_step)
        epoch_times.append(probe["seconds"])
    step, peak = len(rows), probe["peak"]
    for h in handles:
        h.remove()
    steps = max(step, 1)
    return MultitaskRun(
        config=config, history=pd.DataFrame(rows), layer_norms=pd.DataFrame(layer_rows),
        epoch_times=epoch_times, metrics=evaluate(model, test),
        n_params=count_parameters(model, trainable_only=True),
        passes={k: v / steps for k, v in counts.items()},
        adapted_scalars=sum(p.numel() for p in extra)
        + (combiner.num_tasks if isinstance(combiner, GradNorm) else 0),
        initial_metrics=initial, peak_step_bytes=int(peak), steps=step,
    )


def run_comparison(methods: Sequence[str], seeds: Sequence[int], progress: bool = True,
                   **config) -> list[MultitaskRun]:
    """Train every method on every seed (``config`` overrides :class:`MultitaskConfig` fields)."""
    jobs = [(m, s) for m in methods for s in seeds]
    if progress:
        from tqdm.auto import tqdm
        jobs = tqdm(jobs, desc="runs")
    return [train_multitask(MultitaskConfig(method=m, seed=s, **config)) for m, s in jobs]


def step_table(runs: Sequence[MultitaskRun]) -> pd.DataFrame:
    """All runs' per-step histories in one long table with ``method`` and ``seed`` columns."""
    return pd.concat([r.history.assign(method=r.config.method, seed=r.config.seed) for r in runs],
                     ignore_index=True)

