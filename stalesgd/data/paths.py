"""Where data sets are looked for (DESIGN §9) and how a data set's folder is found.

Search order, first complete folder wins:

1. an explicit ``data_dir`` (``--data-dir``);
2. ``$STALESGD_DATA`` (several roots may be joined with ``os.pathsep``);
3. the user cache, ``$XDG_CACHE_HOME/stalesgd`` or ``~/.cache/stalesgd``
   (where ``stalesgd data download`` puts files);
4. Debian's ``/usr/share/datasets`` (package ``dataset-fashion-mnist``).

Each root holds one folder per data set named as in problem names
(``mnist/``, ``fashion-mnist/``, ``cifar10/``) with the upstream file names
inside, raw or ``.gz``.  An explicit ``data_dir`` may also be the data set's
folder itself.  A folder counts only if it holds *every* file of the set, so
files from different copies are never mixed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataNotFoundError
from .registry import DataSpec

ENV_VAR = "STALESGD_DATA"
SYSTEM_ROOT = Path("/usr/share/datasets")


@dataclass(frozen=True)
class Root:
    """One place in the search path: a label for messages and a path (None if unset)."""

    label: str
    path: Path | None


@dataclass
class Location:
    """A data set found on disk: its folder, the root it came from, and each file's path."""

    folder: Path
    root: Root
    files: dict[str, Path] = field(default_factory=dict)
    """Maps upstream file name (without ``.gz``) to the path found (raw or ``.gz``)."""


def user_cache_root() -> Path:
    """The user cache root: ``$XDG_CACHE_HOME/stalesgd``, else ``~/.cache/stalesgd`` (a
    relative ``$XDG_CACHE_HOME`` is ignored, as the XDG specification says)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "stalesgd"


def search_roots(data_dir: str | os.PathLike[str] | None = None) -> list[Root]:
    """Every root in search order, including unset ones (``path=None``) for messages."""
    roots: list[Root] = []
    if data_dir is not None:
        roots.append(Root("--data-dir", Path(data_dir).expanduser()))
    env = os.environ.get(ENV_VAR, "")
    parts = [p for p in env.split(os.pathsep) if p.strip()]
    if parts:
        roots.extend(Root(f"${ENV_VAR}", Path(p).expanduser()) for p in parts)
    else:
        roots.append(Root(f"${ENV_VAR}", None))
    roots.append(Root("user cache", user_cache_root()))
    roots.append(Root("system", SYSTEM_ROOT))
    return roots


def candidate_folders(spec: DataSpec, root: Root) -> list[Path]:
    """Folders under ``root`` that may hold ``spec``'s files, in the order tried."""
    if root.path is None:
        return []
    base = root.path / spec.folder
    out = [base] + [base / sub for sub in spec.alt_subdirs]
    if root.label == "--data-dir":
        out += [root.path] + [root.path / sub for sub in spec.alt_subdirs]
    return out


def find_in_folder(spec: DataSpec, folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Files of ``spec`` present in ``folder`` (raw preferred over ``.gz``) and those missing."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for f in spec.files:
        for cand in (folder / f.name, folder / (f.name + ".gz")):
            if cand.is_file():
                found[f.name] = cand
                break
        else:
            missing.append(f.name)
    return found, missing


def fix_hint(name: str) -> str:
    """The commands that fix a missing or corrupt data set, for error messages."""
    return (
        f"fix: run `stalesgd data download {name}` (into the user cache), or put the "
        f"upstream files (raw or .gz) in <ROOT>/{name}/ and pass --data-dir ROOT or "
        f"set ${ENV_VAR}=ROOT"
    )


def locate(spec: DataSpec, data_dir: str | os.PathLike[str] | None = None) -> Location:
    """The first folder in the search path that holds every file of ``spec``.

    Raises :class:`DataNotFoundError` naming the missing file(s), every place
    looked in (with what each one lacked), and the command that fixes it.
    """
    looked: list[str] = []
    first_missing: str | None = None
    for root in search_roots(data_dir):
        if root.path is None:
            looked.append(f"  {root.label}: (not set)")
            continue
        for folder in candidate_folders(spec, root):
            if not folder.is_dir():
                looked.append(f"  {root.label}: {folder} (no such folder)")
                continue
            found, missing = find_in_folder(spec, folder)
            if not missing:
                return Location(folder=folder, root=root, files=found)
            if found and first_missing is None:
                first_missing = missing[0]
            looked.append(f"  {root.label}: {folder} (missing {', '.join(missing)})")
    what = first_missing or spec.files[0].name
    raise DataNotFoundError(
        f"data set {spec.name!r} not found: no folder holds all its files "
        f"(first missing: {what}[.gz]; expected files: "
        f"{', '.join(f.name for f in spec.files)}, each raw or .gz).\nLooked in, in order:\n"
        + "\n".join(looked)
        + "\n"
        + fix_hint(spec.name)
    )
