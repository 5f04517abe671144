"""The bottom layer: where things live, which device, atomic files, checkpoints, parameters, seeds.

Nothing here imports from the rest of gradkit.

- :mod:`~gradkit.core.paths`       project-root paths (``data/``, ``checkpoints/``, ``figures/``…)
- :mod:`~gradkit.core.device`      cuda / mps / cpu, picked by itself
- :mod:`~gradkit.core.io`          atomic file writes
- :mod:`~gradkit.core.checkpoint`  checkpoints written atomically, loaded with ``weights_only``
- :mod:`~gradkit.core.params`      trainable parameters, their count, flat gradient vectors
- :mod:`~gradkit.core.seeding`     seeded randomness that never touches the caller's RNG
"""

from gradkit.core.checkpoint import (
    CheckpointError,
    check_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from gradkit.core.device import pick_device
from gradkit.core.io import atomic_write_bytes, atomic_write_text
from gradkit.core.params import (
    count_parameters,
    flat_grad,
    flatten,
    num_trainable,
    param_slices,
    trainable_named_parameters,
    trainable_parameters,
)
from gradkit.core.paths import (
    build_dir,
    checkpoints_dir,
    data_dir,
    figures_dir,
    output_root,
    project_root,
    reports_dir,
)
from gradkit.core.seeding import generator, seeded

__all__ = [
    "CheckpointError", "atomic_write_bytes", "atomic_write_text", "build_dir", "check_state_dict",
    "checkpoints_dir", "count_parameters", "data_dir", "figures_dir", "flat_grad", "flatten",
    "generator", "load_checkpoint", "num_trainable", "output_root", "param_slices", "pick_device",
    "project_root", "reports_dir", "save_checkpoint", "seeded", "trainable_named_parameters",
    "trainable_parameters",
]
