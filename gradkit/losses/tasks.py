"""The two task losses of notebook 04 and the boxes they need.

Detection: the box ``(t0, f0, t1, f1)`` of one sound event in a ``size x size`` spectrogram,
predicted YOLO-style on a ``G x G`` grid (:func:`encode_boxes`, :func:`decode_boxes`,
:func:`box_iou`, :func:`detection_loss`). Classification: cross-entropy of the event class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["box_iou", "classification_loss", "decode_boxes", "detection_loss", "encode_boxes"]


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


