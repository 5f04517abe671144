"""A data folder's odd entries are never dropped or accepted silently (issue 26, case 3).

Real entries on disk: a dangling symbolic link ``broken.wav``, a folder ``degabc``, a class
``deg999``, a link to a recording outside the data folder, a link loop. Each entry that is not
read is named in the preflight notes with its reason; an angle outside [0, 360) is refused; a
link leading outside is noted, and refused with ``follow_links=False`` / ``--no-follow-links``.
"""

import os
import shutil
import subprocess
import sys
import warnings

import pytest
from test_user_recordings import cond_dir, digest, write_user_folder

from gradkit.data import DataError, DataNote, load_recordings, load_split, preflight


@pytest.fixture
def user(tmp_path):
    return write_user_folder(tmp_path / "recordings", sizes=(3, 3, 3, 3))


def quiet_preflight(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataNote)
        return preflight(root, "glass", 2500, **kw)


def check(root, *args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "gradkit.data", "--check", str(root), *args],
                          env=env, capture_output=True, text=True, timeout=300)


def test_a_dangling_link_a_misnamed_folder_and_stray_entries_are_noted_with_their_reason(user):
    os.symlink("gone.wav", cond_dir(user) / "broken.wav")
    os.symlink("loop.wav", cond_dir(user) / "loop.wav")
    misnamed = cond_dir(user).parent / "degabc"
    misnamed.mkdir()
    shutil.copy(cond_dir(user) / "take0.wav", misnamed / "take0.wav")
    (cond_dir(user).parent / "readme.txt").write_text("lab notes")
    (cond_dir(user) / "extra").mkdir()
    before = digest(user)
    with pytest.warns(DataNote, match=r"skipped 5 entries.*broken\.wav.*gone\.wav"):
        table = preflight(user, "glass", 2500)
    notes = "\n".join(table.attrs["notes"])
    assert "deg000/broken.wav: not read, a symbolic link to gone.wav, which does not exist" \
        in notes
    assert "deg000/loop.wav: not read, a symbolic link to loop.wav, which does not exist" in notes
    assert "2500hz/degabc: not read, a folder not named deg<angle:03d>" in notes
    assert "2500hz/readme.txt: not read, a file beside the class folders" in notes
    assert "deg000/extra: not read, a folder inside a class folder" in notes
    assert len(table.attrs["notes"]) == 5 and len(table.attrs["skipped"]) == 5
    assert list(table.index) == ["deg000", "deg030", "deg060", "deg090"]  # degabc is no class
    assert digest(user) == before, "nothing in the data folder changed"


def test_the_check_prints_every_note_and_names_folders_without_a_condition(user):
    os.symlink("gone.wav", cond_dir(user) / "broken.wav")
    (cond_dir(user).parent / "degabc").mkdir()
    (user / "stray").mkdir()
    (user / "glass" / "2500Hz_old").mkdir()
    done = check(user)
    assert done.returncode == 0, done.stderr
    for needle in ("deg000/broken.wav: not read, a symbolic link to gone.wav",
                   "glass/2500hz/degabc: not read, a folder not named deg<angle:03d>",
                   "stray: not read, no <freq>hz/deg<angle:03d>/ folders inside",
                   "glass/2500Hz_old: not read, a folder not named <freq>hz"):
        assert needle in done.stdout, done.stdout


@pytest.mark.parametrize("name", ["deg999", "deg360"])
def test_an_angle_outside_0_to_360_is_refused_naming_the_folder(user, name):
    shutil.copytree(cond_dir(user), cond_dir(user).parent / name)
    with pytest.raises(DataError, match=rf"class folder \S*/{name}: angle {int(name[3:])} is "
                                        rf"outside \[0, 360\) degrees"):
        quiet_preflight(user)
    with pytest.raises(DataError, match=name):
        load_recordings(user, "glass", 2500)


def test_a_link_leading_outside_is_noted_and_refused_with_no_follow_links(user, tmp_path):
    elsewhere = tmp_path / "elsewhere.wav"
    shutil.copy(cond_dir(user) / "take0.wav", elsewhere)
    link = cond_dir(user, 30) / "borrowed.wav"
    os.symlink(elsewhere, link)
    inside = cond_dir(user, 60) / "same_as_take0.wav"  # a link within the folder: read quietly
    os.symlink(cond_dir(user, 60) / "take0.wav", inside)

    table = quiet_preflight(user)
    assert table.attrs["notes"] == [f"glass/2500hz/deg030/borrowed.wav: read through a symbolic "
                                    f"link to {elsewhere}, outside the data folder"]
    assert table.loc["deg030", "clips"] == 4 and table.loc["deg060", "clips"] == 4

    refusal = rf"{link} is a symbolic link to {elsewhere}, outside the data folder"
    with pytest.raises(DataError, match=refusal):
        quiet_preflight(user, follow_links=False)
    with pytest.raises(DataError, match=refusal):
        load_split("glass", 2500, root=user, follow_links=False)
    done = check(user, "--no-follow-links")
    assert done.returncode == 1 and str(link) in done.stderr and "refused" in done.stderr


def test_a_class_folder_linked_from_outside_is_noted_or_refused(user, tmp_path):
    outside = tmp_path / "other_session" / "deg120"
    shutil.copytree(cond_dir(user), outside)
    os.symlink(outside, cond_dir(user).parent / "deg120")
    table = quiet_preflight(user)
    assert 120 in set(table["angle_deg"])
    assert any("2500hz/deg120: read through a symbolic link" in n for n in table.attrs["notes"])
    with pytest.raises(DataError, match=r"2500hz/deg120 is a symbolic link"):
        quiet_preflight(user, follow_links=False)


def test_a_material_folder_linked_from_outside_is_refused_with_no_follow_links(user, tmp_path):
    moved = tmp_path / "moved_glass"
    shutil.move(user / "glass", moved)
    os.symlink(moved, user / "glass")
    assert any(n.startswith("glass: read through a symbolic link")
               for n in quiet_preflight(user).attrs["notes"])
    with pytest.raises(DataError, match=r"recordings/glass is a symbolic link"):
        quiet_preflight(user, follow_links=False)
