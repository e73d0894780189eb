"""Per-worker data on cache lines of its own (no false sharing between worker threads)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit
from stalesgd.real.clock import new_timespec
from stalesgd.real.engine import RealRun
from stalesgd.real.sparse_workers import SPARSE_WORKER_ARGS
from stalesgd.real.workers import WORKER_ARGS

from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.memory import LINE_BYTES, line_copy, line_width, line_zeros, prefetch
from stalesgd.problems._kernels import prefetch_rows


def _lines(a: np.ndarray) -> set[int]:
    """The cache lines an array's bytes occupy."""
    if a.nbytes == 0:
        return set()
    return set(range(a.ctypes.data // LINE_BYTES, (a.ctypes.data + a.nbytes - 1) // LINE_BYTES + 1))


@pytest.mark.parametrize(("shape", "dtype"), [(1, np.int64), (2, np.int64), (3, np.float32),
                                              ((2, 8), np.int64), ((3, 5), np.float64),
                                              (1000, np.float32)])
def test_line_zeros_start_on_a_line_and_share_none(shape, dtype):
    arrays = [line_zeros(shape, dtype) for _ in range(50)]  # small ones come from one arena
    seen: set[int] = set()
    for a in arrays:
        assert a.shape == (shape if isinstance(shape, tuple) else (shape,)) and a.dtype == dtype
        assert a.ctypes.data % LINE_BYTES == 0 and a.flags.c_contiguous and a.flags.aligned
        assert not a.any()
        assert not _lines(a) & seen, "two arrays share a cache line"
        seen |= _lines(a)


def test_line_copy_copies_onto_a_line_of_its_own():
    src = np.arange(30, dtype=np.float32).reshape(5, 6)[:, ::2]  # (not contiguous)
    for _ in range(20):
        out = line_copy(src)
        assert out.ctypes.data % LINE_BYTES == 0 and out.flags.c_contiguous
        assert out.dtype == src.dtype and np.array_equal(out, src)
        assert not np.shares_memory(out, src)


def test_line_width_fills_whole_lines():
    assert line_width(1, np.int64) == 8 and line_width(8, np.int64) == 8
    assert line_width(9, np.int64) == 16 and line_width(17, np.float32) == 32
    rows = line_zeros((3, line_width(5, np.float32)), np.float32)
    assert all(rows[i].ctypes.data % LINE_BYTES == 0 for i in range(3))


@pytest.mark.parametrize(("problem", "options"), [
    ("logreg-sparse", {"n_train": 300, "n_test": 50, "n_features": 500, "nnz": 10}),
    ("mlp-synthetic", {}),
])
def test_no_two_workers_write_one_cache_line(problem, options):
    """What a worker writes every update (its minibatch indices, workspace, clock scratch,
    gradient or sparse rows and statistics) lies on lines no other worker writes."""
    exp = experiment_from_flags("real", problem=problem, algorithm="hogwild", workers=3,
                                updates=10, batch=2, problem_options=options)
    run = RealRun(expand(exp)[0], progress=False)
    names = SPARSE_WORKER_ARGS if run.sparse else WORKER_ARGS[1:]  # (dense: kernel bound)
    rows = ("gidx", "gval", "stats") if run.sparse else ("grads",)
    owned = []
    for w, (_, args) in enumerate(run._worker_calls(run.shared, 10, script=None)):
        arg = dict(zip(names, args, strict=True))
        mine = [arg[n] for n in ("local", "sampler", "ws", "timespec")]
        mine += [arg[n][w] for n in rows if arg[n].shape[1]]
        assert all(a.ctypes.data % LINE_BYTES == 0 for a in mine if a.nbytes)
        owned.append(set().union(*(_lines(a) for a in mine)))
    for w in range(3):
        for v in range(w + 1, 3):
            assert not owned[w] & owned[v], f"workers {w} and {v} write one cache line"


def test_the_clock_scratch_has_its_line():
    assert all(new_timespec().ctypes.data % LINE_BYTES == 0 for _ in range(20))


@njit
def _prefetch_everything(a, b, X, rows):
    for i in range(-3, a.shape[0] + 3):  # (also outside the arrays: a hint never faults)
        prefetch(a, i)
    prefetch(b, np.int32(2))
    prefetch_rows(X, rows)
    return a.sum() + b.sum()


def test_prefetch_is_a_hint_that_changes_nothing_on_every_input_form():
    """The worker loops' prefetches compile for CSR, dense and packed inputs and for rows out
    of range or empty, and leave every value as it was."""
    csr = (np.array([0, 2, 2, 5]), np.array([0, 3, 1, 2, 4], np.int32),
           np.arange(5.0), 5)
    dense = np.arange(12.0).reshape(3, 4)
    packed = (np.arange(12, dtype=np.uint8).reshape(3, 4), np.ones((1, 3)))
    a, b = np.arange(7.0), np.arange(5, dtype=np.int64)
    for X in (csr, dense, packed):
        before = [np.array(x, copy=True) for x in (X if isinstance(X, tuple) else (X,))]
        for rows in (np.array([0, 1, 2]), np.array([-1, 3, 99]), np.zeros(0, np.int64)):
            assert _prefetch_everything(a, b, X, rows) == a.sum() + b.sum()
        after = X if isinstance(X, tuple) else (X,)
        for x, y in zip(before, after, strict=True):
            np.testing.assert_array_equal(x, y)


@njit
def _prefetch_one(a):
    prefetch(a, 1)


@pytest.mark.parametrize("view", [lambda a: a[::2], lambda a: a[::-1], lambda a: a.reshape(2, 4)])
def test_prefetch_refuses_arrays_whose_elements_it_cannot_address(view):
    from numba.core.errors import TypingError

    with pytest.raises(TypingError):
        _prefetch_one(view(np.arange(8.0)))
