"""LeNet-5 gradient kernel against the single-core GEMM roofline, measured alternately.

For each precision, input shape and batch size, one round times a 1024³ GEMM (the
yardstick, BLAS on one thread), then ``R`` SGD updates (gradient kernel + θ -= η g, in one
Numba loop) of this checkout's LeNet-5 and, with ``--baseline``, of another checkout's; the
rounds alternate so that every kernel and its yardstick see the same load on a shared
machine.  Each round gives a ratio kernel GFLOP/s ÷ GEMM GFLOP/s; the table prints the
median over rounds (min–max in brackets) and updates/s.

FLOPs per update are the nominal ``3 × forward`` of :meth:`LeNet5.flops` (forward = Σ
2·outputs·C_in·25 over the convolutions + 2·in·out over the dense layers, per sample;
backward counted as twice the forward).  The kernels skip conv1's input gradient, so what
they execute is ``3 × forward − conv1``; ``--executed`` uses that count instead.

    python bench/lenet_roofline.py
    python bench/lenet_roofline.py --baseline /path/to/other/checkout --rounds 7
    python bench/lenet_roofline.py --clock cpu    # on a machine other processes share

The baseline's LeNet-5 modules (``stalesgd/problems/lenet*.py`` and ``gemm.py``) are
loaded under names of their own; anything else they import is this checkout's.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  - load SciPy's BLAS so threadpoolctl can limit it
from numba import njit
from test_kernels import run_updates
from threadpoolctl import threadpool_limits

from stalesgd.problems import lenet

GEMM_N = 1024
N_ROWS = 2048
SHAPES = ((1, 28, 28), (3, 32, 32))


@njit(nogil=True)
def _gemm(a, b, c, reps):
    for _ in range(reps):
        np.dot(a, b, c)


#: The clock timing every call: wall time, or the CPU time of this thread (what the kernel
#: and the yardstick used of the core, not counting the time other processes had it).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCKS["wall"]


def best_of(fn, tries: int) -> float:
    """Shortest of ``tries`` times of ``fn()`` (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(tries):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


class Gemm:
    """The yardstick: GFLOP/s of a GEMM_N³ product in ``dtype``."""

    def __init__(self, dtype: str) -> None:
        rng = np.random.default_rng(0)
        self.a = rng.random((GEMM_N, GEMM_N)).astype(dtype)
        self.b = rng.random((GEMM_N, GEMM_N)).astype(dtype)
        self.c = np.empty_like(self.a)
        _gemm(self.a, self.b, self.c, 1)

    def gflops(self) -> float:
        t = best_of(lambda: _gemm(self.a, self.b, self.c, 1), 3)
        return 2.0 * GEMM_N**3 / t / 1e9


class Updates:
    """A LeNet-5 of one module, data and buffers for SGD updates at one batch size."""

    def __init__(self, module, shape, dtype: str, batch: int, executed: bool) -> None:
        model = module.LeNet5(shape, fc84=True, dtype=dtype)
        rng = np.random.default_rng(0)
        X = rng.uniform(0.0, 1.0, (N_ROWS, model.n_features)).astype(dtype)
        y = rng.integers(0, 10, N_ROWS).astype(np.int64)
        theta = model.init_params(0)
        self.args = (model.grad_kernel, theta, X, y, rng.permutation(N_ROWS).astype(np.int64),
                     batch, np.empty_like(theta), model.workspace(batch), model.dims, 1e-4)
        fwd, bwd = model.flops(batch)  # bwd = 2 × forward − conv1
        self.flops = fwd + bwd if executed else 3 * fwd
        self.n = max(2, 1600 // batch)
        run_updates(*self.args, 2)

    def round(self) -> tuple[float, float]:
        """(updates/s, GFLOP/s) of the fastest of three calls of ``n`` updates."""
        t = best_of(lambda: run_updates(*self.args, self.n), 3) / self.n
        return 1.0 / t, self.flops / t / 1e9


class _BaselineModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves another checkout's LeNet-5 modules (``stalesgd/problems/lenet*.py`` and
    ``gemm.py``) as ``lenet_baseline.<name>``, their imports of each other rewritten to
    match, so that the baseline runs its own layers, passes and layout, not this
    checkout's; every other import (``stalesgd.problems.base``, …) stays this checkout's."""

    PACKAGE = "lenet_baseline"

    def __init__(self, checkout: Path) -> None:
        folder = checkout / "stalesgd" / "problems"
        self.files = {p.stem: p for p in sorted(folder.glob("lenet*.py"))}
        self.files["gemm"] = folder / "gemm.py"

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if fullname == self.PACKAGE:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        if package == self.PACKAGE and name in self.files:
            return importlib.util.spec_from_loader(fullname, self, origin=str(self.files[name]))
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        name = module.__name__.rpartition(".")[2]
        if module.__name__ == self.PACKAGE:
            return
        source = self.files[name].read_text()
        for other in self.files:
            source = source.replace(f"stalesgd.problems.{other} ", f"{self.PACKAGE}.{other} ")
        module.__file__ = str(self.files[name])
        exec(compile(source, module.__file__, "exec"), module.__dict__)


def load_baseline(checkout: Path):
    """The LeNet-5 module of another checkout with its own helper modules (see
    :class:`_BaselineModules`)."""
    sys.meta_path.insert(0, _BaselineModules(checkout))
    return importlib.import_module(f"{_BaselineModules.PACKAGE}.lenet")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="another checkout to compare with")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[16, 128])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time, or this thread's CPU time (steadier on a loaded machine)")
    p.add_argument("--executed", action="store_true",
                   help="count the FLOPs executed (3 × forward − conv1) instead of 3 × forward")
    args = p.parse_args(argv)
    global clock
    clock = CLOCKS[args.clock]
    modules = {"here": lenet}
    if args.baseline is not None:
        modules["baseline"] = load_baseline(args.baseline.resolve())
    print(f"FLOPs per update: {'3 × forward − conv1' if args.executed else '3 × forward'}; "
          f"ratio = kernel GFLOP/s ÷ {GEMM_N}³ GEMM GFLOP/s of the same round; "
          f"median [min–max] of {args.rounds} rounds; {args.clock} clock")
    with threadpool_limits(limits=1):
        for dtype in args.dtypes:
            gemm = Gemm(dtype)
            for shape in SHAPES:
                for batch in args.batches:
                    runs = {k: Updates(m, shape, dtype, batch, args.executed)
                            for k, m in modules.items()}
                    ratios = {k: [] for k in runs}
                    rates = {k: [] for k in runs}
                    yard = []
                    for _ in range(args.rounds):
                        g = gemm.gflops()
                        yard.append(g)
                        for k, run in runs.items():
                            ups, gf = run.round()
                            rates[k].append(ups)
                            ratios[k].append(gf / g)
                    cells = []
                    for k in runs:
                        r = ratios[k]
                        cells.append(f"{k}: {statistics.median(r):4.0%} [{min(r):.0%}–{max(r):.0%}]"
                                     f" {statistics.median(rates[k]):7.0f} upd/s")
                    if "baseline" in runs:
                        speedup = [a / b for a, b in zip(rates["here"], rates["baseline"],
                                                         strict=True)]
                        cells.append(f"here/baseline {statistics.median(speedup):.2f}×")
                    name = "x".join(map(str, shape))
                    print(f"{dtype} {name:8s} b={batch:<4d} GEMM {statistics.median(yard):5.1f} "
                          f"GF/s | " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
