"""Data: acoustic recordings (the synthetic default set and the loader of yours), log-mel
features with their train / validation split, the preflight check, and the synthetic multi-task
event data.

- :mod:`~gradkit.data.recordings`  ``load_recordings`` (read-only), ``list_conditions``, checks
- :mod:`~gradkit.data.synthetic`   ``make_dataset``, ``ensure_dataset``: the default set, in a
  folder gradkit owns (``data/synthetic/``) and never anywhere else
- :mod:`~gradkit.data.features`    ``log_mel``, ``load_split`` -> :class:`AudioSplit`
- :mod:`~gradkit.data.preflight`   ``preflight(root, material, freq_hz)``: the table of what is
  there, or one error listing every problem
- :mod:`~gradkit.data.events`      ``make_event_data``: detection + classification (notebook 04)
- :mod:`~gradkit.data.synthetic`   the synthetic set's own marked folder (``data/synthetic/``)
- :mod:`~gradkit.data.preflight`   a data folder checked before anything trains, every problem
  at once
- :mod:`~gradkit.data.folds`       stratified k-fold splits of a condition (notebook 01)
"""

from gradkit.data.events import EventData, make_event_data
from gradkit.data.features import AudioSplit, load_split, log_mel
from gradkit.data.preflight import preflight
from gradkit.data.recordings import (
    CLIP_SECONDS,
    SAMPLE_RATE,
    DataError,
    DataNote,
    Recordings,
    load_recordings,
    read_wav,
    stratified_split,
)
from gradkit.data.synthetic import (
    ANGLES,
    FREQS_HZ,
    MANIFEST,
    MARKER,
    MATERIALS,
    data_root,
    ensure_dataset,
    list_conditions,
    make_dataset,
    synthesize_clip,
)

__all__ = [
    "ANGLES", "CLIP_SECONDS", "FREQS_HZ", "MANIFEST", "MARKER", "MATERIALS", "SAMPLE_RATE",
    "AudioSplit", "DataError", "DataNote", "EventData", "Recordings", "data_root",
    "ensure_dataset", "list_conditions", "load_recordings", "load_split", "log_mel",
    "make_dataset", "make_event_data", "preflight", "read_wav", "stratified_split",
    "synthesize_clip",
]
