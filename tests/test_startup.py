"""Start-up of a run: kernels compiled once per machine (the on-disk cache serves the next
process, with the same results bit for bit), the C library called in a cacheable way, and
a run's data set decompressed once, not once for the check and again for the load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from numba import njit
from numba.core.caching import NullCache
from stalesgd.app.preflight import check_data
from stalesgd.real.clock import monotonic_now, new_nap, new_timespec, sleep_nap
from stalesgd.real.workers import lock_worker

import stalesgd.data.files as files
from stalesgd import jitcache
from stalesgd.data import load_dataset
from stalesgd.data.errors import DataCorruptError
from stalesgd.data.idx import write_idx
from stalesgd.data.real import check_files, load_raw
from stalesgd.data.registry import DATASETS
from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.problems import _kernels, mlp

# --- kernels bound to their kernel argument ----------------------------------------------


@njit(nogil=True)
def _apply(kernel, x, times):
    total = 0.0
    for _ in range(times):
        total += kernel(x)
    return total


@njit(nogil=True)
def _double_sum(x):
    return 2.0 * x.sum()


def test_a_bound_function_computes_what_the_loop_computes_with_its_kernel():
    x = np.arange(4.0)
    bound = jitcache.specialise(_apply, _double_sum)
    assert bound(x, 3) == _apply(_double_sum, x, 3) == 36.0
    assert jitcache.specialise(_apply, _double_sum) is bound  # one per pair and process
    assert bound.targetoptions["nogil"]


def test_only_package_functions_are_bound_into_the_disk_cache():
    """A kernel defined outside the package is not covered by the cache's fingerprint: its
    bound loop compiles in every process rather than risk stale machine code."""
    outside = jitcache.specialise(_apply, _double_sum)
    assert isinstance(outside._cache, NullCache)
    assert jitcache.package_function_name(_double_sum) is None
    assert jitcache.package_function_name(mlp.mlp_grad_kernel) == (
        "stalesgd.problems.mlp.mlp_grad_kernel")
    inside = jitcache.specialise(lock_worker, mlp.mlp_grad_kernel)
    assert inside.py_func.__qualname__ == (
        "stalesgd.real.workers.lock_worker[stalesgd.problems.mlp.mlp_grad_kernel]")
    assert isinstance(inside._cache, NullCache) != jitcache.enabled()
    other = jitcache.specialise(_kernels.evaluate_chunks, mlp.mlp_loss_kernel)
    assert other.py_func.__qualname__ != inside.py_func.__qualname__


# --- a second process: nothing compiles, the same results ----------------------------------

#: the start of a probe script: every Numba compile of the process is listed in ``compiled``
_COUNT_COMPILES = """
import hashlib, json, os
from numba.core import event
from stalesgd.experiment import expand, experiment_from_flags

compiled = []


class Count(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass


event.register("numba:compile", Count())
"""

_PROBE = _COUNT_COMPILES + """
from stalesgd.real.engine import RealRun, final_params

out = {}
for alg, m in (("seq", 1), ("sync", 2)):
    exp = experiment_from_flags("real", problem="logreg-synthetic", algorithm=alg, workers=m,
                                updates=300, seed=3, problem_options={"n_train": 256})
    run = RealRun(expand(exp)[0], progress=False)
    rec = run.run()
    digest = hashlib.sha256(final_params(run).tobytes())
    for column in ("k", "worker", "tau", "eta"):
        digest.update(rec.updates[column].copy().tobytes())
    out[alg] = digest.hexdigest()
out["compiled"] = compiled
print(json.dumps(out))
"""


def test_a_second_process_runs_the_real_engine_from_the_cache_bit_for_bit(tmp_path):
    """Cold, every kernel of a run compiles (the bound worker loops among them, not the
    loops a second time on their own); warm, none does (all come from the disk cache), and
    the runs are the same bit for bit."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **{jitcache.ENV_VAR: "1"})

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True,
                              text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    cold, warm = run(), run()
    assert "stalesgd.real.workers.lock_worker[stalesgd.problems.logreg.logreg_grad_kernel]" \
        in cold["compiled"]
    assert "stalesgd.real.workers.sync_worker[stalesgd.problems.logreg.logreg_grad_kernel]" \
        in cold["compiled"]
    assert "lock_worker" not in cold["compiled"]  # compiled once, bound (not wrapped)
    assert warm["compiled"] == []
    assert (warm["seq"], warm["sync"]) == (cold["seq"], cold["sync"])
    assert warm["seq"] != warm["sync"]


_REPLAY_PROBE = _COUNT_COMPILES + """
from stalesgd.sim.run import SimRun

out = {}
for threads in ("1", "2"):
    os.environ["STALESGD_REPLAY_THREADS"] = threads
    exp = experiment_from_flags("sim", problem="logreg-synthetic", algorithm="lock", workers=3,
                                updates=300, seed=3, problem_options={"n_train": 256},
                                sim={"compute": "exp:1ms"})
    run = SimRun(expand(exp)[0], progress=False)
    run.run()
    out[threads] = hashlib.sha256(run.hook.theta.tobytes()).hexdigest()
out["compiled"] = compiled
print(json.dumps(out))
"""

#: numeric replay's loops, bound to the logistic regression's gradient kernel
_REPLAY_LOOPS = [f"stalesgd.sim.{name}[stalesgd.problems.logreg.logreg_grad_kernel]"
                 for name in ("replay._replay_ops", "pipeline._walk", "pipeline._serve")]


def test_numeric_replay_loops_are_bound_to_the_kernel_for_the_disk_cache():
    """The one-core loop and the pipeline's two loops take the gradient kernel as their first
    argument; bound to a built-in model's kernel they are kept in the disk cache, so a
    simulation with numeric replay does not compile them in every process."""
    from stalesgd.sim.pipeline import _serve, _walk
    from stalesgd.sim.replay import _replay_ops

    from stalesgd.problems import logreg
    for loop, name in zip((_replay_ops, _walk, _serve), _REPLAY_LOOPS, strict=True):
        bound = jitcache.specialise(loop, logreg.logreg_grad_kernel)
        assert bound.py_func.__qualname__ == name
        assert isinstance(bound._cache, NullCache) != jitcache.enabled()


@pytest.mark.slow
def test_a_second_process_replays_from_the_cache_bit_for_bit(tmp_path):
    """Cold (an empty cache: ~40 s), numeric replay's loops compile; warm, none does, and
    the one-core loop and the pipeline give the same θ in both processes."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), **{jitcache.ENV_VAR: "1"})

    def run() -> dict:
        done = subprocess.run([sys.executable, "-c", _REPLAY_PROBE], env=env,
                              capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    cold, warm = run(), run()
    for name in _REPLAY_LOOPS:
        assert name in cold["compiled"] and name not in warm["compiled"]
    assert cold["1"] == cold["2"] == warm["1"] == warm["2"]


# --- the C library by name ---------------------------------------------------------------


def test_the_clock_is_pythons_monotonic_clock_and_a_nap_sleeps():
    ts = new_timespec()
    before = time.monotonic()
    now = monotonic_now(ts)
    after = time.monotonic()
    assert before - 1e-6 <= now <= after + 1e-6
    t0 = time.monotonic()
    sleep_nap(new_nap(20_000_000))  # 20 ms
    assert time.monotonic() - t0 >= 0.019


# --- a run's data decompressed once ------------------------------------------------------


def fake_mnist(root, n_train: int = 5, n_test: int = 3):
    """A folder with MNIST's file names holding a few random images (not the upstream
    files: load them with verify=False)."""
    folder = root / DATASETS["mnist"].folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in DATASETS["mnist"].files:
        n = n_train if f.role.startswith("train") else n_test
        arr = (rng.integers(0, 256, (n, 28, 28)) if f.role.endswith("images")
               else rng.integers(0, 10, n)).astype(np.uint8)
        write_idx(folder / f.name, arr)
    return folder


@pytest.fixture
def reads(monkeypatch):
    """Counts the data files read (and decompressed)."""
    seen: list[str] = []
    real = files.read_decompressed

    def counting(path, dataset):
        seen.append(path.name)
        return real(path, dataset)

    monkeypatch.setattr(files, "read_decompressed", counting)
    return seen


def test_a_kept_check_hands_its_parsed_split_to_the_next_load_once(tmp_path, reads):
    fake_mnist(tmp_path)
    check_files("mnist", data_dir=tmp_path, verify=False, keep=True)
    assert len(reads) == 4
    first, _ = load_raw("mnist", data_dir=tmp_path, verify=False)
    assert len(reads) == 4  # handed over: nothing read again
    second, _ = load_raw("mnist", data_dir=tmp_path, verify=False)
    assert len(reads) == 8  # once only: the next load reads the files
    assert second.X_train is not first.X_train
    np.testing.assert_array_equal(second.X_train, first.X_train)
    assert not first.X_train.flags.writeable


def test_a_check_without_keep_or_a_changed_file_means_a_fresh_read(tmp_path, reads):
    folder = fake_mnist(tmp_path)
    check_files("mnist", data_dir=tmp_path, verify=False)
    load_raw("mnist", data_dir=tmp_path, verify=False)
    assert len(reads) == 8
    check_files("mnist", data_dir=tmp_path, verify=False, keep=True)
    target = folder / DATASETS["mnist"].files[0].name
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # edited since the check
    load_raw("mnist", data_dir=tmp_path, verify=False)
    assert len(reads) == 16
    check_files("mnist", data_dir=tmp_path, verify=False, keep=True)
    assert len(reads) == 20
    with pytest.raises(DataCorruptError, match="MISMATCH"):  # a verified load is another
        load_raw("mnist", data_dir=tmp_path, verify=True)  # load: it reads and checks
    assert len(reads) == 21


def test_a_run_s_preflight_and_load_read_its_data_once(tmp_path, reads):
    fake_mnist(tmp_path)
    exp = experiment_from_flags("real", problem="mlp-mnist", algorithm="lock", workers=1,
                                updates=10, problem_options={"data_dir": str(tmp_path),
                                                             "verify": False})
    check_data(expand(exp))
    data = load_dataset("mnist", data_dir=tmp_path, verify=False)
    assert len(reads) == 4
    assert data.n_train == 5 and data.n_test == 3
