"""Data: acoustic recordings (the synthetic generator and the loader of real ones), log-mel
features with their train / validation split, and the synthetic multi-task event data.

- :mod:`~gradkit.data.recordings`  ``make_dataset`` (the default set), ``load_recordings``
- :mod:`~gradkit.data.features`    ``log_mel``, ``load_split`` -> :class:`AudioSplit`
- :mod:`~gradkit.data.events`      ``make_event_data``: detection + classification (notebook 04)
"""

from gradkit.data.events import EventData, make_event_data
from gradkit.data.features import AudioSplit, load_split, log_mel
from gradkit.data.recordings import (
    ANGLES,
    CLIP_SECONDS,
    FREQS_HZ,
    MANIFEST,
    MATERIALS,
    SAMPLE_RATE,
    DataError,
    Recordings,
    ensure_dataset,
    list_conditions,
    load_recordings,
    make_dataset,
    read_wav,
    stratified_split,
    synthesize_clip,
)

__all__ = [
    "ANGLES", "CLIP_SECONDS", "FREQS_HZ", "MANIFEST", "MATERIALS", "SAMPLE_RATE", "AudioSplit",
    "DataError", "EventData", "Recordings", "ensure_dataset", "load_recordings", "load_split",
    "list_conditions", "log_mel", "make_dataset", "make_event_data", "read_wav", "stratified_split",
    "synthesize_clip",
]
