"""An on-disk cache of compiled Numba kernels that no source edit can make stale.

Compiling a run's kernels costs memory as well as time: Numba keeps what it built, so a
process that compiled the MNIST MLP's gradient kernel holds ~20 MB more than one that loaded
the same machine code from disk.  Numba's own ``cache=True`` is unsafe here (DESIGN §7): its
index checks only the source file of the cached function, so an edit to a callee in another
file, or to ``nogil``/``fastmath`` options, can leave old machine code running.

So the cache lives in a directory whose name is a fingerprint of every ``.py`` file of the
package together with the Python, NumPy, Numba and llvmlite versions: any edit or upgrade
selects a fresh, empty directory.  It is ``$NUMBA_CACHE_DIR/stalesgd-<fingerprint>`` when
``NUMBA_CACHE_DIR`` is set, else ``<user cache>/numba-<fingerprint>`` (the user cache of
:func:`stalesgd.data.paths.user_cache_root`); it is never inside the package.  Set
``STALESGD_NUMBA_CACHE=0`` to compile everything afresh in every process.

Only kernels marked with :func:`cached` use it.  Kernels that cannot be cached are not
marked: those calling C through ctypes (Numba refuses them) and those taking another
kernel as an argument (their cache entries never match in a new process, and pile up).
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import TypeVar

import llvmlite
import numba
import numpy as np
from numba.core import config
from numba.core.caching import NullCache

#: Environment variable: ``0`` (or ``false``, ``no``, ``off``) turns the cache off.
ENV_VAR = "STALESGD_NUMBA_CACHE"

#: The package's code: its own folder and the engine folders installed as subpackages.
PACKAGES = ("stalesgd", "stalesgd.real", "stalesgd.sim", "stalesgd.analysis")

D = TypeVar("D")


def enabled() -> bool:
    """Whether kernels marked :func:`cached` use the on-disk cache (``$STALESGD_NUMBA_CACHE``)."""
    return os.environ.get(ENV_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def source_fingerprint(folders: list[Path]) -> str:
    """A hex digest of every ``.py`` file under ``folders`` (relative path and content) and of
    the interpreter and compiler versions; it changes whenever any of them changes."""
    h = hashlib.sha256()
    versions = (sys.version, np.__version__, numba.__version__, llvmlite.__version__)
    h.update(repr(versions).encode())
    for folder in folders:
        for rel in _py_files(Path(folder)):
            h.update(rel.encode() + b"\0")
            h.update((Path(folder) / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _py_files(folder: Path) -> list[str]:
    """Relative paths of the ``.py`` files under ``folder``, sorted; symlinked folders are
    followed (a source tree may be assembled from links), each real folder once."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        rel = Path(root).relative_to(folder)
        found += [str(rel / f) for f in files if f.endswith(".py")]
    return sorted(found)


def package_folders() -> list[Path]:
    """The folders holding the package's source, one per entry of :data:`PACKAGES`."""
    folders = []
    for name in PACKAGES:
        spec = find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            folders.extend(Path(p) for p in spec.submodule_search_locations)
    return folders


@lru_cache(maxsize=1)
def cache_dir() -> Path:
    """The cache directory of this package source and these compiler versions."""
    from stalesgd.data.paths import user_cache_root

    key = source_fingerprint(package_folders())
    numba_dir = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if numba_dir:
        return Path(numba_dir) / f"stalesgd-{key}"
    return user_cache_root() / f"numba-{key}"


#: cache folders of other source versions unused for this long are deleted (seconds)
STALE_AFTER = 7 * 24 * 3600


def prune_stale(current: Path, max_age: float = STALE_AFTER) -> list[Path]:
    """Delete the sibling cache folders of other source versions (same name prefix as
    ``current``) not modified for ``max_age`` seconds; returns those deleted.  Every edit of
    the package makes a new folder, so without this they would pile up."""
    import shutil
    import time

    prefix = current.name.rsplit("-", 1)[0] + "-"
    now, gone = time.time(), []
    try:
        siblings = list(current.parent.iterdir())
    except OSError:
        return gone
    for folder in siblings:
        if folder == current or not folder.name.startswith(prefix) or not folder.is_dir():
            continue
        try:
            newest = max([folder.stat().st_mtime] + [f.stat().st_mtime for f in folder.iterdir()])
            if now - newest > max_age:
                shutil.rmtree(folder)
                gone.append(folder)
        except OSError:  # in use or removed by another process: leave it
            continue
    return gone


def cached(dispatcher: D) -> D:
    """Mark the ``@njit`` function ``dispatcher`` for the on-disk cache (unless it is off).

    Use as the outer decorator (``@cached`` above ``@njit(...)``).  Only Numba's cache
    *location* is redirected, for this function alone: other Numba caches of the process keep
    ``NUMBA_CACHE_DIR`` as it is.
    """
    if not enabled():
        return dispatcher
    folder = cache_dir()
    try:
        if not folder.is_dir():  # a new source version: clear out long-unused old ones
            folder.mkdir(parents=True, exist_ok=True)
            prune_stale(folder)
    except OSError:
        return dispatcher  # not writable: compile every time rather than cache elsewhere
    if not os.access(folder, os.W_OK):
        return dispatcher
    saved = config.CACHE_DIR
    config.CACHE_DIR = str(folder)  # read once, when the cache locator is created
    try:
        dispatcher.enable_caching()  # type: ignore[attr-defined]
    finally:
        config.CACHE_DIR = saved
    if not dispatcher._cache.cache_path.startswith(str(folder)):  # type: ignore[attr-defined]
        # Numba fell back to a folder of its own (next to the source): not keyed, so no cache
        dispatcher._cache = NullCache()  # type: ignore[attr-defined]
    return dispatcher
