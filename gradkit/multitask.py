"""Two tasks, one backbone: GradNorm, uncertainty weighting and PCGrad, measured.

The task (``gradkit.multitask_data``): find the box of a sound event in a 16 x 16 spectrogram
(detection) and name its class (classification). The network (:class:`SharedNet`): a two-layer
convolutional backbone shared by a YOLO-style detection head (box regression + objectness on a
4 x 4 grid) and a classification head (global max-pooling + linear): 1,237 parameters, like the
study's 1,224.

Ways to combine the two task losses ``L_1`` (detection) and ``L_2`` (classification), all with
the same call ``total = method.backward(losses, shared_params)``, which writes the gradients of the
combined objective to the model's ``.grad`` and returns the (detached) combined loss:

- :class:`FixedWeights`          ``L = sum_i w_i L_i`` with constant ``w`` (equal; the study's
                                  1.0 / 0.01)
- :class:`GradNorm`              Chen et al. 2018: weights that equalise the tasks' gradient norms
                                  on the last shared layer, scaled by their relative training rates
- :class:`UncertaintyWeighting`  Kendall et al. 2018: ``L = sum_i exp(-s_i) L_i + s_i``, ``s_i``
                                  learned with the network
- :class:`PCGrad`                Yu et al. 2020: project away the conflicting component of each
                                  task's gradient on the shared parameters
- :class:`TwoBackbones`          no sharing at all: one backbone per task (the reference without
                                  interference)

Measurements between the two tasks' gradients ``g_1, g_2`` on the shared parameters:
:func:`cosine` (conflict when negative) and :func:`magnitude_similarity`. :func:`train_multitask`
trains one method on one seed and records them at every step; :func:`summarise` turns several runs
into mean +- std per method.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gradkit.models import count_parameters  # one parameter counter for the whole package
from gradkit.multitask_data import CLASSES, EventData, make_event_data

TASKS = ("detection", "classification")


# -- models -------------------------------------------------------------------------------------
class Backbone(nn.Sequential):
    """conv3x3(1->c1) ReLU maxpool2 conv3x3(c1->c2) ReLU maxpool2: [N,1,16,16] -> [N,c2,4,4].

    Each output cell sees 8 x 8 input bins. (Strided convolutions instead of max-pooling are
    about twice as fast on a CPU, but in a trial run (widths 8/16, 10 epochs, equal weights,
    seed 0) they reached a held-out accuracy of 0.54 against 0.73 with max-pooling.)
    """

    def __init__(self, widths: tuple[int, int] = (8, 14)):
        c1, c2 = widths
        super().__init__(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.out_channels = c2

    @property
    def first_layer(self) -> nn.Conv2d:
        return self[0]

    @property
    def last_layer(self) -> nn.Conv2d:
        """The last shared layer ``W`` on which GradNorm measures the task gradients."""
        return self[3]


class DetectionHead(nn.Module):
    """1x1 conv to 5 maps per grid cell: objectness logit, then box ``(dx, dy, w, h)`` logits."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 5, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)


class ClassificationHead(nn.Module):
    """Global max-pooling, then a linear layer to the class logits.

    Max rather than average: the event covers a few of the 16 cells, and averaging drowned its
    texture in the background cells (default config, equal weights, seeds 0/1/2: held-out
    accuracy 0.34/0.35/0.43 with average pooling, 0.40/0.68/0.84 with max-pooling).
    """

    def __init__(self, in_channels: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(in_channels, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.amax(dim=(2, 3)))


class SharedNet(nn.Module):
    """One backbone, two heads. ``forward(x) -> (det [N,5,G,G], logits [N,n_classes])``."""

    def __init__(self, n_classes: int = len(CLASSES), widths: tuple[int, int] = (8, 14)):
        super().__init__()
        self.backbone = Backbone(widths)
        self.det_head = DetectionHead(self.backbone.out_channels)
        self.cls_head = ClassificationHead(self.backbone.out_channels, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return self.det_head(features), self.cls_head(features)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.last_layer.parameters())

    def first_layers(self) -> list[nn.Conv2d]:
        return [self.backbone.first_layer]


class TwoBackbones(nn.Module):
    """One backbone per task, nothing shared: the no-interference reference (same interface)."""

    def __init__(self, n_classes: int = len(CLASSES), widths: tuple[int, int] = (8, 14)):
        super().__init__()
        self.det_backbone, self.cls_backbone = Backbone(widths), Backbone(widths)
        self.det_head = DetectionHead(self.det_backbone.out_channels)
        self.cls_head = ClassificationHead(self.cls_backbone.out_channels, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.det_head(self.det_backbone(x)), self.cls_head(self.cls_backbone(x))

    def shared_parameters(self) -> list[nn.Parameter]:
        return []

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return []

    def first_layers(self) -> list[nn.Conv2d]:
        return [self.det_backbone.first_layer, self.cls_backbone.first_layer]


# -- boxes and losses ---------------------------------------------------------------------------
def encode_boxes(boxes: torch.Tensor, size: int, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """YOLO-style targets for boxes ``(t0, f0, t1, f1)`` in bins of a ``size x size`` input.

    The cell ``(row, col)`` holding the box centre is responsible for it: returns its flat index
    ``row * grid + col`` (LongTensor[N]) and the regression targets ``(dx, dy, w, h)`` (all in
    [0, 1]): the centre's offset inside that cell in cell units, width and height / ``size``.
    """
    cell = size / grid
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    col = (cx / cell).floor().clamp(0, grid - 1)
    row = (cy / cell).floor().clamp(0, grid - 1)
    targets = torch.stack([
        cx / cell - col, cy / cell - row,
        (boxes[:, 2] - boxes[:, 0]) / size, (boxes[:, 3] - boxes[:, 1]) / size,
    ], dim=1)
    return (row * grid + col).long(), targets


def decode_boxes(det: torch.Tensor, size: int) -> torch.Tensor:
    """Predicted boxes ``(t0, f0, t1, f1)`` from the head output ``det [N,5,G,G]``.

    The most confident cell (argmax of objectness) is taken to hold the event; its box regression
    ``sigmoid(dx, dy, w, h)`` is turned back into bins.
    """
    n, _, grid, _ = det.shape
    cell = size / grid
    flat = det.flatten(2)                                      # [N, 5, G*G]
    best = flat[:, 0].argmax(dim=1)                            # [N]
    reg = torch.sigmoid(flat[torch.arange(n), 1:, best])       # [N, 4]
    cx = ((best % grid).float() + reg[:, 0]) * cell
    cy = ((best // grid).float() + reg[:, 1]) * cell
    w, h = reg[:, 2] * size, reg[:, 3] * size
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of paired boxes ``(x0, y0, x1, y1)``: ``|a ∩ b| / |a ∪ b|``, shape [N]."""
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = lambda z: (z[:, 2] - z[:, 0]).clamp(min=0) * (z[:, 3] - z[:, 1]).clamp(min=0)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-9)


def detection_loss(det: torch.Tensor, boxes: torch.Tensor, size: int,
                   box_weight: float = 5.0) -> torch.Tensor:
    """``L_det = CE(objectness over the G*G cells, responsible cell) + box_weight * L1(box)``.

    Objectness is a softmax over cells because every clip holds exactly one event (a per-cell
    sigmoid would face 1 positive against 15 negatives). The box L1 (sum over ``dx, dy, w, h``,
    mean over the batch) is taken at the responsible cell only, as in YOLO.
    """
    n, _, grid, _ = det.shape
    cell, target = encode_boxes(boxes, size, grid)
    flat = det.flatten(2)
    objectness = F.cross_entropy(flat[:, 0], cell)
    reg = torch.sigmoid(flat[torch.arange(n), 1:, cell])
    return objectness + box_weight * (reg - target).abs().sum(dim=1).mean()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_cls = CE(logits, labels)``, mean over the batch."""
    return F.cross_entropy(logits, labels)


# -- gradient measurements ----------------------------------------------------------------------
def flat_grad(loss: torch.Tensor, params: Sequence[torch.Tensor],
              retain_graph: bool = True) -> torch.Tensor:
    """``grad_params loss`` as one flat vector (zeros for parameters the loss does not reach)."""
    grads = torch.autograd.grad(loss, list(params), retain_graph=retain_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for p, g in zip(params, grads, strict=True)])


def cosine(g1: torch.Tensor, g2: torch.Tensor) -> float:
    """``cos(g1, g2) = g1 . g2 / (|g1| |g2|)``; negative means the tasks conflict."""
    return float(g1 @ g2 / (g1.norm() * g2.norm()).clamp(min=1e-30))


def magnitude_similarity(g1: torch.Tensor, g2: torch.Tensor) -> float:
    """``2 |g1| |g2| / (|g1|^2 + |g2|^2)``: 1 for equal norms, -> 0 as one dominates (Yu 2020)."""
    a, b = float(g1.norm()), float(g2.norm())
    return 2 * a * b / max(a * a + b * b, 1e-30)


# -- ways to combine the task losses ------------------------------------------------------------
def _stack(losses: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack(list(losses))


class FixedWeights:
    """``L = sum_i w_i L_i`` with constant weights."""

    def __init__(self, weights: Sequence[float]):
        self.weights = torch.as_tensor(weights, dtype=torch.float32)
        if (self.weights < 0).any():
            raise ValueError(f"FixedWeights: weights must be >= 0, got {list(weights)}")

    def backward(self, losses: Sequence[torch.Tensor], shared_params=None) -> torch.Tensor:
        total = (self.weights * _stack(losses)).sum()
        total.backward()
        return total.detach()


class GradNorm:
    """GradNorm (Chen et al. 2018) with a multiplicative (log-space) weight update.

    At every step, on the parameters ``W`` passed as ``shared_params`` (the paper's choice and
    ours: the last shared layer):

    - ``G_i = |grad_W (w_i L_i)| = w_i |grad_W L_i|``, the weighted gradient norm of task ``i``
    - ``r_i = (L_i / L_i(0)) / mean_j(L_j / L_j(0))``, the inverse training rate
    - ``target_i = mean(G) * r_i ** alpha``, held constant (no gradient flows through it)
    - ``L_grad = sum_i |G_i - target_i|`` (L1), which only the weights descend.

    ``L_i(0)`` is the loss of task ``i`` on the first batch this object sees (before any update),
    as in the paper; it only sets the reference of the ratio, so its noise shifts all later
    ``r_i`` of one task by the same factor. Set ``initial_losses`` beforehand to use another one.

    The update. ``dL_grad / dw_i = sign(G_i - target_i) |grad_W L_i|``. A plain step
    ``w_i -= lr * that`` crosses zero as soon as ``lr |grad_W L_i| > w_i`` (the study's weight
    fell to 0.000 and stayed there). We take the step in ``s_i = log w_i`` instead, scaled by
    ``1 / mean(G)`` so that ``lr`` is a relative step whatever the size of the losses::

        s_i -= lr * dL_grad/ds_i / mean(G) = lr * sign(G_i - target_i) * G_i / mean(G)

    i.e. each weight is multiplied by ``exp(-+ lr G_i / mean G)``, and then all are rescaled to sum
    to ``T`` (the paper's renormalisation). A weight therefore stays positive, and one whose
    ``G_i`` falls below its target grows back.
    """

    def __init__(self, num_tasks: int, alpha: float = 1.5, lr: float = 0.025,
                 init_weights: Sequence[float] | None = None):
        if num_tasks < 1:
            raise ValueError(f"GradNorm: num_tasks must be >= 1, got {num_tasks}")
        if lr <= 0 or alpha < 0:
            raise ValueError(f"GradNorm: need lr > 0 and alpha >= 0, got lr={lr}, alpha={alpha}")
        w = torch.ones(num_tasks) if init_weights is None else torch.as_tensor(
            init_weights, dtype=torch.float32)
        if w.shape != (num_tasks,) or (w <= 0).any():
            raise ValueError(f"GradNorm: init_weights must be {num_tasks} positive numbers, "
                             f"got {init_weights}")
        self.num_tasks, self.alpha, self.lr = num_tasks, alpha, lr
        self.weights = w * num_tasks / w.sum()
        self.initial_losses: torch.Tensor | None = None
        self.last: dict[str, torch.Tensor] = {}   # G, target, ratio of the last step

    def backward(self, losses: Sequence[torch.Tensor], shared_params) -> torch.Tensor:
        losses = list(losses)
        if len(losses) != self.num_tasks:
            raise ValueError(f"GradNorm: expected {self.num_tasks} losses, got {len(losses)}")
        W = list(shared_params)
        if not W:
            raise ValueError("GradNorm: shared_params (the last shared layer) is empty")
        L = _stack(losses).detach()
        if self.initial_losses is None:
            self.initial_losses = L.clone()
        # |grad_W L_i|: backward only as far as W (autograd prunes the rest of the graph)
        raw = torch.stack([flat_grad(loss, W).norm() for loss in losses])
        w = self.weights
        total = (w * _stack(losses)).sum()
        total.backward()                                  # the network's gradients
        G = w * raw
        ratio = L / self.initial_losses
        r = ratio / ratio.mean()
        target = G.mean() * r ** self.alpha
        step = self.lr * torch.sign(G - target) * G / G.mean().clamp(min=1e-30)
        w = w * torch.exp(-step)
        self.weights = w * self.num_tasks / w.sum()
        self.last = {"G": G, "target": target, "r": r}
        return total.detach()


class UncertaintyWeighting(nn.Module):
    """Kendall et al. 2018, homoscedastic task uncertainty: ``L = sum_i exp(-s_i) L_i + s_i``.

    ``s_i = log sigma_i^2`` is learned with the network (give ``.parameters()`` to the optimiser),
    starting at 0 (weights 1). We use this one form for both tasks: our detection loss mixes an
    objectness cross-entropy and an L1 box term, so the paper's separate Gaussian (``1/2``) and
    softmax forms have no clean home. For fixed ``L_i`` the optimum is ``s_i = log L_i``, i.e.
    weight ``exp(-s_i) = 1 / L_i``. The weights are *not* normalised to sum to ``T``.
    """

    def __init__(self, num_tasks: int):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(num_tasks))

    @property
    def weights(self) -> torch.Tensor:
        return torch.exp(-self.log_vars.detach())

    def total(self, losses: Sequence[torch.Tensor]) -> torch.Tensor:
        return (torch.exp(-self.log_vars) * _stack(losses) + self.log_vars).sum()

    def backward(self, losses: Sequence[torch.Tensor], shared_params=None) -> torch.Tensor:
        total = self.total(losses)
        total.backward()
        return total.detach()


def pcgrad_project(grads: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad's projection (Yu et al. 2020, Alg. 1) of task gradients ``grads [T, P]``.

    For each task ``i``, for the other tasks ``j`` in random order: if ``g_i' . g_j < 0`` (they
    conflict), ``g_i' <- g_i' - (g_i' . g_j) / |g_j|^2 g_j``, i.e. remove from ``g_i'`` its
    component along ``g_j``. Non-conflicting pairs are left untouched. Returns the projected
    ``g_i'`` (the update is their sum).
    """
    projected = grads.clone()
    T = grads.shape[0]
    for i in range(T):
        others = [j for j in torch.randperm(T, generator=generator).tolist() if j != i]
        for j in others:
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / (grads[j] @ grads[j]).clamp(min=1e-30) * grads[j]
    return projected


class PCGrad:
    """PCGrad on the shared parameters; the heads get their own task's gradient unchanged.

    ``backward`` runs one backward pass per task (accumulating the heads' gradients as usual and
    reading each task's gradient on the shared parameters off the difference), then replaces the
    shared parameters' gradient by ``sum_i g_i'`` from :func:`pcgrad_project`. Weights are all 1.
    """

    def __init__(self, num_tasks: int, seed: int = 0):
        self.num_tasks = num_tasks
        self.weights = torch.ones(num_tasks)
        self.generator = torch.Generator().manual_seed(seed)

    def backward(self, losses: Sequence[torch.Tensor], shared_params) -> torch.Tensor:
        losses, shared = list(losses), list(shared_params)
        flat = lambda: torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1)  # noqa: E731
                                  for p in shared])
        before = flat()
        grads = []
        for i, loss in enumerate(losses):
            loss.backward(retain_graph=i < len(losses) - 1)
            after = flat()
            grads.append(after - before)
            before = after
        update = pcgrad_project(torch.stack(grads), self.generator).sum(dim=0)
        offset = 0
        for p in shared:
            p.grad = update[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        return _stack(losses).sum().detach()


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
    torch.manual_seed(seed)
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


# -- training and evaluation --------------------------------------------------------------------
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
    """What one run measured.

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


_data_cache: dict[tuple[int, int, int], EventData] = {}


def event_data(n: int, seed: int) -> EventData:
    """:func:`make_event_data`, memoised (every run of a comparison uses the same clips)."""
    key = (n, seed, 16)
    if key not in _data_cache:
        _data_cache[key] = make_event_data(n, seed)
    return _data_cache[key]


@torch.no_grad()
def evaluate(model: nn.Module, data: EventData) -> dict[str, float]:
    """Held-out ``mean_iou``, ``iou50`` (share of clips with IoU >= 0.5) and ``accuracy``."""
    model.eval()
    det, logits = model(data.x)
    model.train()
    iou = box_iou(decode_boxes(det, data.size), data.boxes)
    return {"mean_iou": float(iou.mean()), "iou50": float((iou >= 0.5).float().mean()),
            "accuracy": float((logits.argmax(1) == data.labels).float().mean())}


def _plane(g1: torch.Tensor, g2: torch.Tensor, u: torch.Tensor) -> list[float]:
    """Coordinates of ``g1, g2, u`` in the plane of ``g1`` (x axis) and ``g2``: 6 numbers."""
    e1 = g1 / g1.norm().clamp(min=1e-30)
    rest = g2 - (g2 @ e1) * e1
    e2 = rest / rest.norm().clamp(min=1e-30)
    return [float(v @ e) for v in (g1, g2, u) for e in (e1, e2)]


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
    rows, layer_rows, epoch_times, step = [], [], [], 0
    epochs = range(config.epochs)
    if progress:
        from tqdm.auto import tqdm
        epochs = tqdm(epochs, desc=config.method, leave=False)
    for epoch in epochs:
        order = torch.randperm(len(train), generator=order_gen)
        seconds = 0.0
        for start in range(0, len(train), config.batch_size):
            idx = order[start:start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            det, logits = model(train.x[idx])
            losses = [detection_loss(det, train.boxes[idx], train.size),
                      classification_loss(logits, train.labels[idx])]
            seconds += time.perf_counter() - t0
            # Probe (not timed): each task's own gradient on the shared parameters.
            g = [flat_grad(loss, shared) for loss in losses] if shared else None
            weights = combiner.weights.clone()     # the weights this step is taken with
            t1 = time.perf_counter()
            counting[0] = True
            combiner.backward(losses, combine_on)
            counting[0] = False
            optimizer.step()
            seconds += time.perf_counter() - t1
            row = {"step": step, "epoch": epoch,
                   "loss_det": float(losses[0].detach()), "loss_cls": float(losses[1].detach()),
                   "w_det": float(weights[0]), "w_cls": float(weights[1])}
            if g is not None:
                update = torch.cat([p.grad.reshape(-1) for p in shared])
                n1, n2 = float(g[0].norm()), float(g[1].norm())
                row.update(gnorm_det=n1, gnorm_cls=n2, wgnorm_det=row["w_det"] * n1,
                           wgnorm_cls=row["w_cls"] * n2, cosine=cosine(g[0], g[1]),
                           magsim=magnitude_similarity(g[0], g[1]),
                           update_norm=float(update.norm()))
                row.update(zip(("g1_x", "g1_y", "g2_x", "g2_y", "u_x", "u_y"),
                               _plane(g[0], g[1], update), strict=True))
                offset = 0
                for name, p in zip(names, shared, strict=True):
                    k = p.numel()
                    layer_rows.append({"step": step, "tensor": name,
                                       "det": float(g[0][offset:offset + k].norm()),
                                       "cls": float(g[1][offset:offset + k].norm())})
                    offset += k
            rows.append(row)
            step += 1
        epoch_times.append(seconds)
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


# -- summaries ----------------------------------------------------------------------------------
def run_table(runs: Sequence[MultitaskRun]) -> pd.DataFrame:
    """One row per run: method, seed, held-out metrics, parameters, time per epoch, interference."""
    rows = []
    for run in runs:
        h = run.history
        shared = "cosine" in h
        rows.append({
            "method": run.config.method, "seed": run.config.seed, **run.metrics,
            "params": run.n_params, "epoch_s": float(np.mean(run.epoch_times)),
            "mean_cosine": float(h["cosine"].mean()) if shared else np.nan,
            "conflict_share": float((h["cosine"] < 0).mean()) if shared else np.nan,
            "magsim": float(h["magsim"].mean()) if shared else np.nan,
            "backbone_passes": run.passes.get("backbone", np.nan),
            "last_shared_passes": run.passes.get("last_shared", np.nan),
            "adapted_scalars": run.adapted_scalars,
            "final_w_det": float(h["w_det"].iloc[-1]), "final_w_cls": float(h["w_cls"].iloc[-1]),
            "min_w": float(h[["w_det", "w_cls"]].min().min()),
        })
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of every numeric column of :func:`run_table`, per method."""
    numeric = table.drop(columns=["seed"]).groupby("method", sort=False)
    out = numeric.agg(["mean", "std"])
    out.insert(0, ("seeds", "n"), table.groupby("method", sort=False)["seed"].count())
    return out


def compare(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, str]:
    """``(mean(a) - mean(b), noise, verdict)``: ``noise = max(std a, std b)`` over seeds; the
    verdict is ``"higher"``/``"lower"`` only when the difference exceeds that noise, else
    ``"within noise"``."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    noise = float(max(a.std(ddof=1) if len(a) > 1 else 0.0, b.std(ddof=1) if len(b) > 1 else 0.0))
    if abs(diff) <= noise:
        return diff, noise, "within noise"
    return diff, noise, "higher" if diff > 0 else "lower"
