"""``stalesgd data list | verify [NAME] | path NAME | download NAME``.

:func:`data_command` does the work and returns the exit code; the top-level
``stalesgd`` command line calls it.  Exit codes: 0 success, 1 data missing,
corrupt or not downloadable, 2 usage error (unknown action or name).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .errors import DataError, DataNotFoundError
from .files import FileCheck, check_file
from .paths import Location, candidate_folders, find_in_folder, locate, search_roots
from .registry import DATASETS, FILE_SET, GENERATED_NAMES, NAMED_SETS, DataSpec

ACTIONS = ("list", "verify", "path", "download")


def _best_partial(spec: DataSpec, data_dir: str | None) -> tuple[dict, list[str]]:
    """Files found in the most complete candidate folder, and the names missing there."""
    best: dict = {}
    for root in search_roots(data_dir):
        for folder in candidate_folders(spec, root):
            if folder.is_dir():
                found, _ = find_in_folder(spec, folder)
                if len(found) > len(best):
                    best = found
    return best, [f.name for f in spec.files if f.name not in best]


def check_dataset(spec: DataSpec, loc: Location) -> list[FileCheck]:
    """Verify every file of a located data set (fresh checksums)."""
    return [check_file(spec, f, loc.files[f.name], fresh=True) for f in spec.files]


def _summary(checks: list[FileCheck]) -> str:
    bad = [c for c in checks if not c.ok]
    if not bad:
        structural = any("structure only" in c.detail for c in checks)
        return "OK (structure only)" if structural else "OK"
    return f"{bad[0].status} ({len(bad)} file{'s' * (len(bad) > 1)})"


def _list(data_dir: str | None, out: TextIO) -> int:
    print(f"{'NAME':<15}{'STATUS':<22}WHERE", file=out)
    for name in GENERATED_NAMES:
        print(f"{name:<15}{'generated':<22}no files (seeded generator)", file=out)
    for name, spec in DATASETS.items():
        try:
            loc = locate(spec, data_dir)
        except DataNotFoundError:
            print(f"{name:<15}{'NOT FOUND':<22}`stalesgd data download {name}`", file=out)
            continue
        status = _summary(check_dataset(spec, loc))
        print(f"{name:<15}{status:<22}{loc.folder} (via {loc.root.label})", file=out)
    print(f"{FILE_SET:<15}{'your own file':<22}.npz, .csv or svmlight (.svm, .svmlight, "
          ".libsvm; text also .gz, .bz2): --problem MODEL-file --data-file PATH", file=out)
    return 0


def _verify(name: str | None, data_dir: str | None, out: TextIO, err: TextIO) -> int:
    rc = 0
    names = [name] if name else list(DATASETS)
    for n in names:
        spec = DATASETS[n]
        try:
            loc = locate(spec, data_dir)
        except DataNotFoundError as exc:
            found, missing = _best_partial(spec, data_dir)
            if name is None and not found:
                print(f"{n}: not installed (skipped; `stalesgd data download {n}`)", file=out)
                continue
            rc = 1
            for fname, path in found.items():
                print(f"PRESENT   {n}/{fname}  {path} (folder incomplete)", file=out)
            for fname in missing:
                print(f"MISSING   {n}/{fname}", file=out)
            print(str(exc), file=err)
            continue
        print(f"{n}: {loc.folder} (via {loc.root.label})", file=out)
        failed = False
        for c in check_dataset(spec, loc):
            print(f"{c.status:<9} {n}/{c.name}  {c.path}  {c.detail}", file=out)
            failed = failed or not c.ok
        if failed:
            rc = 1
            print(f"{n}: verification failed; delete or replace the files marked above, or "
                  f"run `stalesgd data download {n}`", file=err)
    return rc


def _download(name: str, data_dir: str | None, out: TextIO, err: TextIO) -> int:
    from .download import download

    spec = DATASETS[name]
    if data_dir is None:  # a verified copy anywhere on the search path is enough
        try:
            found = locate(spec)
        except DataNotFoundError:
            found = None
        if found is not None and all(c.ok for c in check_dataset(spec, found)):
            print(f"{name}: already present and verified in {found.folder} (via "
                  f"{found.root.label}); nothing to download", file=out)
            return 0
    try:
        folder = download(name, data_dir, report=lambda s: print(s, file=out))
    except DataError as exc:
        print(f"error: {exc}", file=err)
        return 1
    loc = locate(spec, data_dir)
    checks = check_dataset(spec, loc)
    print(f"{name}: downloaded into {folder}; verify: {_summary(checks)}", file=out)
    if loc.folder.resolve() != folder.resolve():
        print(f"note: the search path finds {name} first in {loc.folder} "
              f"(via {loc.root.label}), which will be used", file=out)
    return 0 if all(c.ok for c in checks) else 1


def data_command(action: str, name: str | None = None, data_dir: str | None = None,
                 out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run ``stalesgd data ACTION [NAME]`` and return the exit code.

    ``list`` shows every data set, where it was found and whether it verifies;
    ``verify [NAME]`` prints OK/MISMATCH/CORRUPT/UNREADABLE/MISSING per file (exit 1 on any
    failure; without NAME, sets absent everywhere are skipped); ``path NAME``
    prints the folder used; ``download NAME`` fetches into the user cache (or
    ``data_dir``) and verifies, unless (without ``data_dir``) the search path already holds
    a copy that verifies.  Messages go to ``out``, errors to ``err``.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    if action not in ACTIONS:
        print(f"error: unknown action {action!r}; allowed: {', '.join(ACTIONS)}", file=err)
        return 2
    if name is not None and name not in NAMED_SETS:
        print(f"error: unknown data set {name!r}; allowed: {', '.join(NAMED_SETS)}", file=err)
        return 2
    if action == "list":
        return _list(data_dir, out)
    if name in GENERATED_NAMES:
        if action == "verify":
            print(f"{name}: generated from a seed, no files to verify", file=out)
            return 0
        print(f"error: data set {name!r} is generated from a seed and has no files",
              file=err)
        return 2
    if action == "verify":
        return _verify(name, data_dir, out, err)
    if name is None:
        print(f"error: `stalesgd data {action}` needs a data set name; allowed: "
              f"{', '.join(DATASETS)}", file=err)
        return 2
    if action == "path":
        try:
            print(locate(DATASETS[name], data_dir).folder, file=out)
        except DataNotFoundError as exc:
            print(f"error: {exc}", file=err)
            return 1
        return 0
    return _download(name, data_dir, out, err)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``ACTION [NAME] [--data-dir DIR]`` to a (sub)parser."""
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("name", nargs="?", choices=NAMED_SETS)
    parser.add_argument("--data-dir", default=None,
                        help="root searched first (holds mnist/, fashion-mnist/, cifar10/); "
                             "download target instead of the user cache")


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m stalesgd.data.cli ACTION [NAME] [--data-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="stalesgd data", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return data_command(args.action, args.name, args.data_dir)


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["ACTIONS", "add_arguments", "data_command", "main"]
