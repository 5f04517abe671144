"""``python -m gradkit.data``: generate the default data set if it is not there yet."""

from gradkit.core.paths import data_dir
from gradkit.data.recordings import MANIFEST, ensure_dataset

target = data_dir()
existed = (target / MANIFEST).exists()
ensure_dataset(target)
print(f"data set {'already present' if existed else 'generated'} at {target}")
