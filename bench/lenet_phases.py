"""Where LeNet-5's gradient kernel spends its time: each layer pass timed on its own.

For one chunk of ``b`` rows (after one full gradient call has filled the workspace), every
pass of :mod:`stalesgd.problems.lenet_passes` is called ``R`` times in a Numba loop and
timed; the table gives microseconds per sample, the share of the sum, and GFLOP/s for the
passes that multiply (their FLOPs as :meth:`LeNet5.flops` counts them).  Times are this
thread's CPU time by default (steadier on a shared machine), best of five.

    python bench/lenet_phases.py
    python bench/lenet_phases.py --batch 16 --clock wall

The kernel runs a minibatch in chunks of at most :data:`~stalesgd.problems.lenet.CHUNK`
rows through a workspace sized for one chunk, so a larger ``--batch`` is timed as its
chunks are: one chunk of ``CHUNK`` rows (a pass called with more rows would write past the
workspace).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import scipy.linalg.cython_blas  # noqa: F401  - load SciPy's BLAS so threadpoolctl can limit it
from numba import njit
from threadpoolctl import threadpool_limits

from stalesgd.problems import lenet_passes as passes
from stalesgd.problems.lenet import CHUNK, LeNet5

PHASES = ("gather", "conv1 fwd", "conv2 fwd", "dense fwd", "dense bwd", "conv2 bwd",
          "conv1 bwd")


@njit(nogil=True)
def repeat_phase(phase, reps, theta, X, idx, grad, ws, dims):
    """Run pass number ``phase`` (order of PHASES) ``reps`` times on the chunk ``idx``."""
    b = idx.shape[0]
    for _ in range(reps):
        if phase == 0:
            passes.gather(X, idx, 0, b, ws, dims)
        elif phase == 1:
            passes.conv1_forward(theta, b, ws, dims)
        elif phase == 2:
            passes.conv2_forward(theta, b, ws, dims)
        elif phase == 3:
            passes.dense_forward(theta, b, ws, dims)
        elif phase == 4:
            passes.dense_backward(theta, grad, b, ws, dims, False)
        elif phase == 5:
            passes.conv2_backward(theta, grad, b, ws, dims, False)
        else:
            passes.conv1_backward(grad, b, ws, dims, False)


def phase_flops(model: LeNet5, b: int) -> list[float]:
    """FLOPs of each pass for ``b`` rows (products only, as LeNet5.flops counts them)."""
    C, H, W = model.input_shape
    conv1 = 2 * 6 * (H - 4) * (W - 4) * C * 25 * b
    fwd, _ = model.flops(b)
    conv2_dense = fwd - conv1
    pooled = (H - 4) // 2
    conv2 = 2 * 16 * (pooled - 4) ** 2 * 6 * 25 * b
    dense = conv2_dense - conv2
    return [0, conv1, conv2, dense, 2 * dense, 2 * conv2, conv1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = p.parse_args(argv)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.batch < 1:
        p.error(f"--batch must be at least 1 (got {args.batch})")
    b = min(args.batch, CHUNK)
    if b < args.batch:
        print(f"batch {args.batch} runs in chunks of {CHUNK} rows: timing one chunk of {b}")
    with threadpool_limits(limits=1):
        for dtype in ("float32", "float64"):
            for shape in ((1, 28, 28), (3, 32, 32)):
                model = LeNet5(shape, dtype=dtype)
                rng = np.random.default_rng(0)
                X = rng.uniform(0.0, 1.0, (4 * b, model.n_features)).astype(dtype)
                y = rng.integers(0, 10, 4 * b).astype(np.int64)
                theta = model.init_params(0)
                grad = np.zeros_like(theta)
                ws = model.workspace(b)
                idx = np.arange(b, dtype=np.int64)
                model.grad_kernel(theta, X, y, idx, grad, ws, model.dims)
                reps = max(1, 3200 // b)
                times = []
                for phase in range(len(PHASES)):
                    repeat_phase(phase, 1, theta, X, idx, grad, ws, model.dims)
                    best = float("inf")
                    for _ in range(5):
                        t0 = clock()
                        repeat_phase(phase, reps, theta, X, idx, grad, ws, model.dims)
                        best = min(best, clock() - t0)
                    times.append(best / reps)
                total = sum(times)
                cells = []
                for name, t, f in zip(PHASES, times, phase_flops(model, b), strict=True):
                    rate = f" {f / t / 1e9:5.1f} GF/s" if f else ""
                    cells.append(f"{name} {t / b * 1e6:5.2f} µs {t / total:4.0%}{rate}")
                fwd, _ = model.flops(b)
                print(f"{dtype} {'x'.join(map(str, shape))} b={b}: sum {total / b * 1e6:.1f} µs"
                      f"/sample, {3 * fwd / total / 1e9:.1f} GF/s (3 × forward)", flush=True)
                for cell in cells:
                    print("   ", cell)
    return 0


if __name__ == "__main__":
    sys.exit(main())
