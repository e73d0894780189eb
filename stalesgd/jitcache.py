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

Only kernels marked with :func:`cached` use it.  Two kinds cannot be marked: those calling
C through ctypes (Numba refuses them; call C by name instead, as :mod:`stalesgd.real.libc`
does) and those taking another kernel as an argument (their cache entries are keyed by the
argument's identity in one process, so they never match in another, and pile up).  A
function of the second kind is cached bound to its kernel instead: :func:`specialise`.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import os
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache, lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar

import llvmlite
import numba
import numpy as np
from numba import njit
from numba.core import config
from numba.core.caching import NullCache

from stalesgd import compile_guard

# every process that compiles the package's kernels imports this module: Ctrl-C during a
# compilation then stops the program cleanly once it is over (stalesgd.compile_guard)
compile_guard.install()

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
        dispatcher.enable_caching()
    finally:
        config.CACHE_DIR = saved
    if not dispatcher._cache.cache_path.startswith(str(folder)):
        # Numba fell back to a folder of its own (next to the source): not keyed, so no cache
        dispatcher._cache = NullCache()
    else:
        one_at_a_time(dispatcher._cache)
    return dispatcher


#: the lock file in each cache folder that serialises saving and loading entries
LOCK_NAME = ".stalesgd-lock"


def one_at_a_time(cache: Any) -> None:
    """Make a Numba cache save an entry under an exclusive lock of its folder, and load one
    under a shared lock.

    Why: Numba keeps a function's entries as an index file that maps each signature to a data
    file ``<name>.<n>.nbc``, numbered by reading the index first.  Two processes that compile
    the same function for different signatures at once (two test processes, two runs started
    together) both read the old index, both pick the same number, and the index can end up
    naming the other one's machine code: a float64 call then ran float32 code ("can't unbox
    array from PyObject"), until the cache folder was deleted.  POSIX ``flock``; where it is
    not available the cache is used without it."""
    folder = getattr(cache, "cache_path", None)
    if folder is None or not hasattr(cache, "save_overload"):
        return
    lock_path = os.path.join(folder, LOCK_NAME)
    save, load = cache.save_overload, cache.load_overload

    def save_overload(sig: Any, data: Any) -> Any:
        with _locked(lock_path, exclusive=True):
            return save(sig, data)

    def load_overload(sig: Any, target_context: Any) -> Any:
        with _locked(lock_path, exclusive=False):
            return load(sig, target_context)

    cache.save_overload, cache.load_overload = save_overload, load_overload


@contextmanager
def _locked(path: str, *, exclusive: bool) -> Iterator[None]:
    """Hold ``flock`` on ``path`` (created if missing) for the block; without ``fcntl`` or a
    writable folder, nothing is held."""
    try:
        import fcntl

        handle = open(path, "a")  # noqa: SIM115  (closed below)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        handle.close()  # (releases the lock)


@lru_cache(maxsize=1)
def _package_roots() -> tuple[Path, ...]:
    return tuple(folder.resolve() for folder in package_folders())


def package_function_name(dispatcher: object) -> str | None:
    """``module.name`` of the ``@njit`` function ``dispatcher`` if it is a module-level
    function of this package (so that the cache's fingerprint covers its source), else
    None."""
    py = getattr(dispatcher, "py_func", None)
    module = sys.modules.get(getattr(py, "__module__", None) or "")
    if py is None or module is None or py.__qualname__ != py.__name__:
        return None
    if getattr(module, py.__name__, None) is not dispatcher:
        return None
    path = getattr(module, "__file__", None)
    if path is None or not any(Path(path).resolve().is_relative_to(root)
                               for root in _package_roots()):
        return None
    return f"{py.__module__}.{py.__name__}"


@cache
def specialise(fn: Any, kernel: Any) -> Any:
    """The ``@njit`` function ``fn`` with its first parameter fixed to the ``@njit`` function
    ``kernel``: a new ``@njit`` function (``fn``'s options) of ``fn``'s other parameters.

    Why: a loop that takes its kernel as an argument (one worker loop for every model)
    cannot be kept in the on-disk cache, so it would compile in every process.  The new
    function is ``fn``'s own source compiled again with the first parameter turned into a
    global bound to ``kernel``, so it takes only arrays and numbers and compiles once, as
    ``fn`` did (a wrapper calling ``fn(kernel, ...)`` would compile and optimise ``fn`` twice:
    once on its own and once linked into the wrapper).  It is marked :func:`cached` when
    ``fn`` and ``kernel`` are both module-level functions of this package (the fingerprint
    covers their source), under a name that names both, so that each pair has entries of its
    own.  Otherwise (a kernel defined elsewhere, whose edits the fingerprint would not see) it
    compiles in every process, as ``fn`` did.
    """
    py = fn.py_func
    tree = ast.parse(textwrap.dedent(inspect.getsource(py)))
    ast.increment_lineno(tree, py.__code__.co_firstlineno - 1)  # errors point at fn's lines
    definition = tree.body[0]
    if not isinstance(definition, ast.FunctionDef) or not definition.args.args:
        raise TypeError(f"specialise: {py.__qualname__} is not a function of a kernel")
    definition.decorator_list = []
    first = definition.args.args.pop(0).arg
    namespace = dict(py.__globals__)  # fn's module as it is now, and the kernel
    namespace[first] = kernel
    exec(compile(tree, py.__code__.co_filename, "exec"), namespace)
    bound = namespace[definition.name]
    fn_name, kernel_name = package_function_name(fn), package_function_name(kernel)
    label = f"{fn_name or py.__qualname__}[{kernel_name or kernel.py_func.__qualname__}]"
    bound.__name__ = bound.__qualname__ = label
    options = {k: v for k, v in fn.targetoptions.items() if k != "nopython"}
    dispatcher = njit(**options)(bound)
    return cached(dispatcher) if fn_name and kernel_name else dispatcher
