"""``python -m gradkit.data [--check FOLDER [--material M --freq HZ] [--no-follow-links]]``.

Without arguments: generate the synthetic default set in ``data/synthetic/`` if it is not there
yet. With ``--check``: the preflight table of every condition in FOLDER (or of one), read-only,
followed by a note for every entry not read (with the reason) and every symbolic link followed
out of FOLDER; ``--no-follow-links`` refuses such links instead. Exits 1 listing every problem
found.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from gradkit.core.paths import synthetic_dir
from gradkit.data.entries import unread_folders
from gradkit.data.preflight import preflight
from gradkit.data.recordings import DataError, DataNote
from gradkit.data.synthetic import ensure_dataset, is_complete, list_conditions


def _print_notes(notes: list[str]) -> None:
    if notes:
        print(f"NOTES ({len(notes)}: not read, or read through a link leaving the folder):")
        print("\n".join(f"  - {n}" for n in notes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="FOLDER", help="preflight a folder of recordings")
    parser.add_argument("--material", help="with --check: only this material")
    parser.add_argument("--freq", type=int, help="with --check: only this frequency (Hz)")
    parser.add_argument("--no-follow-links", action="store_true",
                        help="with --check: refuse symbolic links leading outside FOLDER")
    args = parser.parse_args(argv)
    if args.check is None:
        target = synthetic_dir()
        existed = is_complete(target)
        ensure_dataset(target)
        print(f"synthetic data set {'already present' if existed else 'generated'} at {target}")
        return 0
    failed = False
    try:
        conditions = [(args.material, args.freq)] if args.material and args.freq else [
            c for c in list_conditions(args.check)
            if args.material in (None, c[0]) and args.freq in (None, c[1])]
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    if args.material is None and args.freq is None:
        _print_notes(unread_folders(Path(args.check)))
    if not conditions:
        print(f"no <material>/<freq>hz/deg<angle:03d>/ folders found under {args.check}",
              file=sys.stderr)
        return 1
    for material, freq in conditions:
        print(f"\n== {material}, {freq} Hz ==")
        try:
            with warnings.catch_warnings():  # the notes are printed below the table instead
                warnings.simplefilter("ignore", DataNote)
                table = preflight(args.check, material, freq,
                                  follow_links=not args.no_follow_links)
            print(table.to_string())
        except DataError as err:
            failed = True
            table = getattr(err, "table", None)
            print(f"PROBLEMS:\n{err}", file=sys.stderr)
        if table is not None:
            _print_notes(table.attrs.get("notes", []))
    return 1 if failed else 0


sys.exit(main())
