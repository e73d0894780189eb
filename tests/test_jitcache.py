"""The on-disk cache of compiled kernels: keyed by the package source, off on request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numba import njit
from numba.core.caching import NullCache

from stalesgd import jitcache
from stalesgd.problems import mlp


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_fingerprint_changes_with_any_source_file(tmp_path):
    a = _tree(tmp_path / "a", {"x.py": "A = 1\n"})
    b = _tree(tmp_path / "b", {"y.py": "def f():\n    return 1\n", "sub/z.py": "Z = 2\n"})
    before = jitcache.source_fingerprint([a, b])
    assert jitcache.source_fingerprint([a, b]) == before  # deterministic
    (b / "sub" / "z.py").write_text("Z = 3\n")  # an edit in a callee's file elsewhere
    edited = jitcache.source_fingerprint([a, b])
    assert edited != before
    (b / "sub" / "new.py").write_text("")  # a new file, even an empty one
    assert jitcache.source_fingerprint([a, b]) != edited
    (b / "notes.txt").write_text("not code")
    assert jitcache.source_fingerprint([a, b]) == jitcache.source_fingerprint([a, b])


def test_fingerprint_follows_symlinked_folders(tmp_path):
    target = _tree(tmp_path / "elsewhere", {"k.py": "K = 1\n"})
    pkg = _tree(tmp_path / "pkg", {"__init__.py": ""})
    (pkg / "linked").symlink_to(target, target_is_directory=True)
    (pkg / "loop").symlink_to(pkg, target_is_directory=True)  # visited once, no endless walk
    before = jitcache.source_fingerprint([pkg])
    (target / "k.py").write_text("K = 2\n")
    assert jitcache.source_fingerprint([pkg]) != before


def test_fingerprint_covers_the_engine_folders():
    folders = jitcache.package_folders()
    names = {Path(rel).name for f in folders for rel in jitcache._py_files(f)}
    for module in ("workers.py", "atomics.py", "mlp.py", "jitcache.py"):
        assert module in names


def test_cache_dir_is_keyed_and_outside_the_package(monkeypatch, tmp_path):
    jitcache.cache_dir.cache_clear()
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    try:
        d = jitcache.cache_dir()
        key = jitcache.source_fingerprint(jitcache.package_folders())
        assert d == tmp_path / "xdg" / "stalesgd" / f"numba-{key}"
        for folder in jitcache.package_folders():
            assert not d.resolve().is_relative_to(folder.resolve())
        jitcache.cache_dir.cache_clear()
        monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
        assert jitcache.cache_dir() == tmp_path / "numba" / f"stalesgd-{key}"
    finally:
        jitcache.cache_dir.cache_clear()


@pytest.mark.parametrize("value,on", [("0", False), ("off", False), ("no", False),
                                      ("1", True), ("", True)])
def test_opt_out(monkeypatch, value, on):
    monkeypatch.setenv(jitcache.ENV_VAR, value)
    assert jitcache.enabled() is on

    def f(x):
        return x + 1

    disp = jitcache.cached(njit(nogil=True)(f))
    assert isinstance(disp._cache, NullCache) is not on


def test_cached_redirects_only_its_own_function(monkeypatch, tmp_path):
    from numba.core import config

    jitcache.cache_dir.cache_clear()
    monkeypatch.setenv(jitcache.ENV_VAR, "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    before = config.CACHE_DIR
    try:
        disp = jitcache.cached(njit(nogil=True)(lambda x: x + 1))
        assert config.CACHE_DIR == before  # restored for every other function
        assert disp._cache.cache_path.startswith(str(jitcache.cache_dir()))
    finally:
        jitcache.cache_dir.cache_clear()


def test_an_unusable_cache_folder_means_no_cache_and_nothing_written_elsewhere(monkeypatch,
                                                                               tmp_path):
    jitcache.cache_dir.cache_clear()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(jitcache.ENV_VAR, "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    try:
        def g(x):
            return x * 2

        disp = jitcache.cached(njit(nogil=True)(g))
        assert isinstance(disp._cache, NullCache)
        assert disp(3) == 6
        assert not list(Path(__file__).parent.glob("__pycache__/*.nbi"))
    finally:
        jitcache.cache_dir.cache_clear()


def _triple(x):
    return 3 * x


#: holds an exclusive flock on the file argv[1] for argv[2] seconds
_LOCKER = """
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_cache_entries_are_saved_and_loaded_one_process_at_a_time(monkeypatch, tmp_path):
    """Two processes saving entries of one function at once could leave its index naming the
    other one's machine code (a float64 call ran float32 code); saves and loads take the
    folder's lock, so this process waits while another holds it."""
    import time

    jitcache.cache_dir.cache_clear()
    monkeypatch.setenv(jitcache.ENV_VAR, "1")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    try:
        disp = jitcache.cached(njit(nogil=True)(_triple))
        folder = Path(disp._cache.cache_path)
        folder.mkdir(parents=True, exist_ok=True)
        hold = 2.0
        locker = subprocess.Popen([sys.executable, "-c", _LOCKER, str(folder / jitcache.LOCK_NAME),
                                   str(hold)], stdout=subprocess.PIPE, text=True)
        try:
            assert locker.stdout.readline().strip() == "held"
            t0 = time.monotonic()
            assert disp(np.int64(2)) == 6  # looks in the cache, compiles, saves: waits
            waited = time.monotonic() - t0
        finally:
            locker.wait(timeout=30)
        assert waited >= 0.75 * hold
        assert list(folder.glob("*_triple*.nbi"))  # saved once the lock was free
    finally:
        jitcache.cache_dir.cache_clear()


def test_problem_kernels_are_marked():
    for kernel in (mlp.mlp_grad_kernel, mlp.mlp_loss_kernel, mlp._forward):
        assert not isinstance(kernel._cache, NullCache) or not jitcache.enabled()


_SCRIPT = """
import numpy as np
from stalesgd.problems import make_problem
p = make_problem("mlp-synthetic", dtype="float32", hidden=[8], n_train=64, n_test=16)
theta = p.init_params(0)
ws = p.workspace(4)
idx = np.arange(4, dtype=np.int64)
grad = np.zeros_like(theta)
X = p.dataset.inputs("train")
loss = p.model.grad_kernel(theta, X, p.dataset.y_train, idx, grad, ws, p.model.dims)
k = p.model.grad_kernel
print(repr(float(loss)), sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values()))
"""


def test_a_second_process_loads_the_kernel_and_gets_the_same_result(tmp_path):
    """Cold, then warm: the same loss, and the second process hits the cache."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **{jitcache.ENV_VAR: "1"})

    def run() -> list[str]:
        out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                             text=True, timeout=300, check=True)
        return out.stdout.split()

    cold, warm = run(), run()
    assert cold[0] == warm[0]
    assert (int(cold[1]), int(cold[2])) == (0, 1)
    assert (int(warm[1]), int(warm[2])) == (1, 0)
    assert any(tmp_path.iterdir())
    assert np.isfinite(float(cold[0]))


def test_long_unused_cache_folders_of_other_versions_are_pruned(tmp_path):
    import time

    current = tmp_path / "numba-aaaa"
    old, recent, other = tmp_path / "numba-bbbb", tmp_path / "numba-cccc", tmp_path / "keep-dddd"
    for folder in (current, old, recent, other):
        folder.mkdir()
        (folder / "x.nbi").write_text("index")
    week = time.time() - 8 * 24 * 3600
    for path in (old, old / "x.nbi", other, other / "x.nbi", current, current / "x.nbi"):
        os.utime(path, (week, week))
    gone = jitcache.prune_stale(current)
    assert gone == [old]
    assert current.is_dir() and recent.is_dir() and other.is_dir() and not old.exists()
