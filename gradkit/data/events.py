"""A synthetic joint detection + classification task: one sound event in a small spectrogram.

Each example is a ``size x size`` log-magnitude "spectrogram" (rows = frequency bins, bottom row =
lowest frequency; columns = time frames) holding exactly one sound event:

- **where** it is, the detection target: a time/frequency box ``(t0, f0, t1, f1)`` in bins, edges
  on the bin grid: the tight bounding box of the event's lit bins, drawn ``min_extent`` to
  ``max_extent`` bins long in each direction (one less where a stripe pattern ends dark);
- **what** it is, the classification target, one of four textures inside the box:

  ===  =========  ======================================================================
  0    tonal      a harmonic stack: every other frequency bin lit, steady in time
  1    clicks     an impulse train: every other time frame lit, broadband
  2    burst      broadband noise burst: the whole box lit with a random texture
  3    sweep      an up-chirp: a two-bin-wide line from the box's low-left to high-right
  ===  =========  ======================================================================

The event's amplitude is drawn from ``[amp_low, amp_high]`` and everything is drowned in Gaussian
background noise of standard deviation ``noise``, so neither task is trivial. Why this task: it is
the study's setting (one network that both locates and names an event) shrunk until a ~1,000
parameter convolutional network learns both tasks in a few seconds on a CPU, which is what lets us
train every method on several seeds. Why these textures: the classes differ by texture *inside* the
box, so the classifier must read the same local features the detector uses to find the box; the
two tasks share their evidence, and interfere through the shared backbone.

Everything comes from ``numpy.random.default_rng(seed)``: the same seed gives the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

CLASSES = ("tonal", "clicks", "burst", "sweep")


@dataclass
class EventData:
    """A batch of examples of the event task.

    ``x``: FloatTensor[N, 1, size, size]; ``boxes``: FloatTensor[N, 4] as ``(t0, f0, t1, f1)`` in
    bins (columns, rows; ``t1``/``f1`` exclusive); ``labels``: LongTensor[N] indexing ``CLASSES``.
    """

    x: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size(self) -> int:
        return self.x.shape[-1]


def event_pattern(label: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The texture of class ``label`` filling a ``height x width`` box (values in [0, 1])."""
    rows, cols = np.mgrid[0:height, 0:width]
    if label == 0:  # tonal: harmonics on every other frequency bin, starting at the box's bottom
        return (rows % 2 == 0).astype(np.float32)
    if label == 1:  # clicks: an impulse on every other time frame
        return (cols % 2 == 0).astype(np.float32)
    if label == 2:  # burst: broadband, random texture but never dark
        return rng.uniform(0.6, 1.0, size=(height, width)).astype(np.float32)
    if label == 3:  # sweep: the rising diagonal of the box, two bins thick
        # distance (in bins) of each cell centre from the line through the box's corners
        line = (cols + 0.5) / width * height - (rows + 0.5)
        return (np.abs(line) <= 1.0).astype(np.float32)
    raise ValueError(f"label must be in 0..{len(CLASSES) - 1}, got {label}")


def make_event_data(
    n: int,
    seed: int = 0,
    *,
    size: int = 16,
    min_extent: int = 3,
    max_extent: int = 8,
    noise: float = 0.35,
    amp_low: float = 0.5,
    amp_high: float = 1.0,
) -> EventData:
    """Generate ``n`` examples deterministically from ``seed`` (see the module docstring).

    Classes are balanced (``n // 4`` of each, the remainder in class order) and shuffled.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= min_extent <= max_extent <= size:
        raise ValueError(
            f"need 1 <= min_extent <= max_extent <= size, got {min_extent}, {max_extent}, {size}"
        )
    if noise < 0 or not 0 < amp_low <= amp_high:
        raise ValueError(f"need noise >= 0 and 0 < amp_low <= amp_high, got {noise}, "
                         f"{amp_low}, {amp_high}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    x = rng.normal(0.0, noise, size=(n, 1, size, size)).astype(np.float32)
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i, label in enumerate(labels):
        w, h = rng.integers(min_extent, max_extent + 1, size=2)
        t0 = rng.integers(0, size - w + 1)
        f0 = rng.integers(0, size - h + 1)
        amp = rng.uniform(amp_low, amp_high)
        pattern = event_pattern(int(label), h, w, rng)
        x[i, 0, f0:f0 + h, t0:t0 + w] += amp * pattern
        # the box is the tight bounding box of the lit bins (a stripe pattern on an even extent
        # leaves the last row or column dark)
        rows, cols = np.nonzero(pattern)
        boxes[i] = (t0 + cols.min(), f0 + rows.min(), t0 + cols.max() + 1, f0 + rows.max() + 1)
    return EventData(torch.from_numpy(x), torch.from_numpy(boxes), torch.from_numpy(labels))
