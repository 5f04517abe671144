"""Stale temporary files of killed writes, and the write probe of gradkit.core.io."""

import os
import tempfile

import pytest

from gradkit.core import io as gio
from gradkit.core.io import StorageError, probe_writable, remove_stale_temps


def test_only_gradkit_temporary_files_are_removed(tmp_path):
    fd, ours = tempfile.mkstemp(dir=tmp_path, prefix=".model_raw_epoch_5_x.pt.", suffix=".tmp")
    os.close(fd)
    keep = [".notes.tmp", "scratch.tmp", ".model.pt.SHORT.tmp", "model.pt", ".a.pt.abcdefgh.tmpx",
            "x.pt.corrupt"]
    for name in keep:
        (tmp_path / name).write_text("not ours")
    (tmp_path / ".dir.abcdefgh.tmp").mkdir()  # a folder is never removed
    assert remove_stale_temps(tmp_path) == [tmp_path / os.path.basename(ours)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, ".dir.abcdefgh.tmp"])
    assert remove_stale_temps(tmp_path / "missing") == []


def test_the_probe_leaves_nothing_and_names_an_unwritable_folder(tmp_path, monkeypatch):
    probe_writable(tmp_path, 10_000, needed_bytes=1)
    assert list(tmp_path.iterdir()) == []
    # Tests run as root, where chmod does not stop writes: a path under a file cannot be.
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="file/sub"):
        probe_writable(tmp_path / "file" / "sub")
    usage = gio.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(gio.shutil, "disk_usage", lambda p: usage._replace(free=10))
    with pytest.raises(StorageError, match=r"0\.0 MB free.*GRADKIT_ROOT"):
        probe_writable(tmp_path, needed_bytes=10**6)
