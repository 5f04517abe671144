"""A tracked run's folder, written atomically (:mod:`gradkit.core.io`) and appended to across
restarts, and :func:`load_run`, which reads it back with clear errors naming the file.

Layout::

    meta.json                        model summary, the tracker's parameters, versions, sessions
    scalars/part-SSS-TTTTTTTT.csv    rows of session SSS from step TTTTTTTT on (one per flush)
    tables/NAME/part-SSS-TTTTTTTT.csv  the same for a table another module adds per step
                                      (``ddp_noise``: :class:`gradkit.distributed.DDPTracker`)
    grams/step-TTTTTTTT.pt           {"K": [N, N] float64, "labels", "step", "epoch", "params",
                                      "session", "sketch": [N, k] or None}

Every file is complete or absent (a kill leaves at most a temporary file, removed at the next
start). A session that restarts at a step already recorded (``Tracker(..., start_step=k)``, the
step of the user's checkpoint) supersedes the earlier rows from ``k`` on: :func:`load_run`
keeps, for each step, the row of the latest session.

The columns of ``Run.scalars`` (:data:`COLUMNS`), one row per step. The per-sample gradient
``G_i`` is that of sample ``i``'s loss ``l_i`` (the loss of a step is ``mean_i l_i`` with
``reduction="mean"``, ``Σ_i l_i`` with ``"sum"``):

- ``loss``: the value ``backward()`` was called on (or ``step.loss``, set by the user);
- ``grad_norm``: ``||g_D||``, ``g_D = (1/N) Σ_i G_i`` the batch's mean gradient, from the
  ``.grad`` autograd produced, over **every** trainable parameter;
- ``norm_min``, ``norm_q10``, ``norm_q50``, ``norm_q90``, ``norm_max``: quantiles of the
  per-sample norms ``||G_i||``;
- ``grad_sq`` (``||g_D||²``), ``trace_sigma`` (``tr Σ``), ``b_simple`` (``tr Σ / ||g_D||²``):
  :mod:`gradkit.grads.noise`'s definitions with the batch as the data set, as
  ``noise_scale(G)`` would give on the batch's per-sample gradients;
- ``b_simple_ema``: McCandlish's ``B_simple`` from the unbiased per-step estimates of ``|G|²``
  and ``S`` (the mean of ``||G_i||²`` and ``||g_D||²`` as two batch sizes, ``1`` and ``N``),
  each averaged by an EMA of decay ``ema`` and divided at the end
  (:class:`~gradkit.grads.noise.StreamingNoiseScale`);
- ``update_size``: ``||θ_{t+1} - θ_t||``, the optimizer's step after this row's backward,
  taken when the next step starts (or at :meth:`Tracker.close`);
- ``hessian_top``, ``hessian_hvps``: with ``hessian_every``, the batch loss Hessian's top
  eigenvalue and the Hessian-vector products it took (NaN on other steps);
- ``covered``: the fraction of the trainable parameters (by count) the per-sample columns
  cover; ``gram``: 1 when the step's Gram matrix was written.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from gradkit.core.io import atomic_write, atomic_write_text, remove_stale_temps

__all__ = ["COLUMNS", "Run", "RunFolder", "load_run"]

#: The columns of ``Run.scalars`` (module docstring).
COLUMNS = ["step", "epoch", "session", "n", "loss", "grad_norm", "norm_min", "norm_q10",
           "norm_q50", "norm_q90", "norm_max", "grad_sq", "trace_sigma", "b_simple",
           "b_simple_ema", "update_size", "covered", "gram", "hessian_top", "hessian_hvps"]
# Columns added after FORMAT 1's first runs: read as missing values from older parts.
_LATER = {"hessian_top": float("nan"), "hessian_hvps": 0}
META = "meta.json"
FORMAT = 1


def _part_name(session: int, first_step: int) -> str:
    return f"part-{session:03d}-{first_step:08d}.csv"


class RunFolder:
    """Writes one run folder (see the module docstring); ``meta`` is read back when it exists."""

    def __init__(self, path: str | Path, resume: bool):
        self.path = Path(path)
        meta_path = self.path / META
        if meta_path.exists():
            if not resume:
                raise FileExistsError(f"{self.path} already holds a tracked run ({META}); pass "
                                      "resume=True to continue its record, or another out=")
            self.meta = _read_meta(meta_path)
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise FileExistsError(f"{self.path} is not empty and holds no tracked run "
                                      f"({META} missing): the tracker writes only into a new "
                                      "folder or its own")
            self.meta = {}
        for folder in (self.path, self.path / "scalars", self.path / "grams",
                       *(self.path / "tables").glob("*")):
            remove_stale_temps(folder)

    def last_step(self) -> int | None:
        """The last step recorded (None: none)."""
        steps = [int(p.stem.split("-")[1]) for p in (self.path / "grams").glob("step-*.pt")]
        frame = self.scalars()
        if len(frame):
            steps.append(int(frame["step"].max()))
        return max(steps) if steps else None

    def scalars(self) -> pd.DataFrame:
        return _read_scalars(self.path, self.meta)

    def write_meta(self, meta: dict) -> None:
        self.meta = meta
        atomic_write_text(self.path / META, json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def write_rows(self, session: int, rows: list[dict], table: str | None = None) -> None:
        """One part file of ``rows``: the scalars, or (``table``) those of ``tables/table``
        (every row has ``step``; ``session`` is added)."""
        if not rows:
            return
        if table is not None and not table.isidentifier():
            raise ValueError(f"table must be a plain name, got {table!r}")
        if table is None:
            frame, folder = pd.DataFrame(rows, columns=COLUMNS), self.path / "scalars"
        else:
            frame = pd.DataFrame(rows).assign(session=session)
            folder = self.path / "tables" / table
            folder.mkdir(parents=True, exist_ok=True)
        text = frame.to_csv(index=False, float_format="%.17g")
        atomic_write_text(folder / _part_name(session, rows[0]["step"]), text)

    def write_gram(self, step: int, session: int, epoch, K: Tensor, labels,
                   params: list[str], sketch: Tensor | None = None) -> None:
        payload = {"K": K.detach().to("cpu", torch.float64), "step": int(step),
                   "session": int(session),
                   "epoch": None if epoch is None else int(epoch),
                   "labels": _labels(labels),
                   "params": list(params),
                   "sketch": None if sketch is None else sketch.detach().to("cpu")}
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write(self.path / "grams" / f"step-{step:08d}.pt",
                     lambda f: f.write(buf.getvalue()))


def _labels(labels) -> Tensor | None:
    """The step's labels as a CPU tensor, or None where they are no tensor-like."""
    if labels is None:
        return None
    try:
        return torch.as_tensor(labels).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        return None


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable tracker meta.json ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "sessions" not in meta:
        raise ValueError(f"{path}: not a tracker meta.json of format {FORMAT} (keys "
                         f"{sorted(meta)[:8] if isinstance(meta, dict) else type(meta).__name__})")
    return meta


def _starts(meta: dict) -> dict[int, int]:
    """``{session: its first step}`` from ``meta.json``."""
    return {int(s["session"]): int(s["start_step"]) for s in meta.get("sessions", [])}


def _superseded(step: int, session: int, starts: dict[int, int]) -> bool:
    """Whether a later session restarted at or before ``step`` (its record replaces this one)."""
    return any(s > session and step >= first for s, first in starts.items())


def _read_scalars(path: Path, meta: dict, table: str | None = None) -> pd.DataFrame:
    """Every part's rows (of ``tables/table``), without those a later session superseded."""
    frames, columns = [], COLUMNS if table is None else ["step", "session"]
    folder = path / "scalars" if table is None else path / "tables" / table
    for part in sorted(folder.glob("part-*.csv")):
        try:
            frame = pd.read_csv(part)
        except (OSError, ValueError, pd.errors.ParserError) as err:
            raise ValueError(f"{part}: not a readable scalars file ({err})") from err
        if table is None:
            frame = frame.assign(**{c: v for c, v in _LATER.items() if c not in frame.columns})
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{part}: columns {missing} are missing")
        frames.append(frame[COLUMNS] if table is None else frame)
    if not frames:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(frames, ignore_index=True)
    starts = _starts(meta)
    keep = [not _superseded(int(step), int(session), starts)
            for step, session in zip(frame["step"], frame["session"], strict=True)]
    frame = frame[keep].sort_values("step", kind="stable").drop_duplicates("step", keep="last")
    return frame.reset_index(drop=True)


@dataclass
class Run:
    """A tracked run read back: ``scalars`` (one row per step), ``grams`` (``{step: [N, N]}``),
    ``labels`` (``{step: labels or None}``), ``sketches`` (``{step: [N, k]}``, with
    ``sketch_k``), ``meta`` (``meta.json``), ``tables`` (``{name: rows per step}``, e.g.
    ``ddp_noise``)."""

    path: Path
    meta: dict
    scalars: pd.DataFrame
    grams: dict[int, Tensor] = field(default_factory=dict)
    labels: dict[int, Tensor | None] = field(default_factory=dict)
    epochs: dict[int, int | None] = field(default_factory=dict)
    sketches: dict[int, Tensor] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


def load_run(path: str | Path) -> Run:
    """Read a run folder written by :class:`~gradkit.track.Tracker` (checked: a damaged or
    foreign file raises ``ValueError`` naming it). Grams are loaded with ``weights_only=True``."""
    path = Path(path)
    if not (path / META).is_file():
        raise FileNotFoundError(f"{path}: no {META}; not a tracked run folder")
    meta = _read_meta(path / META)
    run = Run(path=path, meta=meta, scalars=_read_scalars(path, meta))
    for folder in sorted(p for p in (path / "tables").glob("*") if p.is_dir()):
        run.tables[folder.name] = _read_scalars(path, meta, folder.name)
    starts = _starts(meta)
    for file in sorted((path / "grams").glob("step-*.pt")):
        try:
            data = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is named
            raise ValueError(f"{file}: not a readable Gram file ({err})") from err
        K = data.get("K") if isinstance(data, dict) else None
        if not (isinstance(K, Tensor) and K.dim() == 2 and K.shape[0] == K.shape[1]):
            raise ValueError(f"{file}: holds no [N, N] Gram matrix 'K'")
        step = int(data["step"])
        if _superseded(step, int(data.get("session", 0)), starts):
            continue
        run.grams[step], run.labels[step], run.epochs[step] = K, data.get("labels"), data.get(
            "epoch")
        if isinstance(data.get("sketch"), Tensor):
            run.sketches[step] = data["sketch"]
    return run
