"""The ceiling of Hogwild!'s 2-worker scaling on a sparse set: what sharing θ costs the machine.

Runs the bare Hogwild! step (the model's sparse gradient of one row, then its coordinates
written into θ; with the next row prefetched, as the engine's workers do) in 1 and 2
threads, with no update counter, no record, no collision stamps, in two layouts:

* ``shared``: both threads update one θ (Hogwild!);
* ``own``: each thread updates a θ of its own (no coordinate is shared: what the cores
  and memory give when nothing moves between them).

The threads walk different permutations of the rows.  Prints the samples/s of each
configuration per repeat and the 2-thread / 1-thread ratios: the engine's Hogwild! cannot
scale better than the ``shared`` ratio, and the gap to ``own`` is what sharing θ costs in
cache-line transfers between the cores (a θ of this size stays in the caches, so a line
stays with the core that last wrote it: every coordinate the other thread wrote last, the
bias at every update, moves before it is read or written again).  ``--zipf 0`` (terms
equally frequent) spreads the writes over more lines, and more of them move.

    python bench/sparse_sharing.py                       # 20000 × 20000, 50 terms a row
    python bench/sparse_sharing.py --n-features 47236 --zipf 0.5
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
from numba import njit

from stalesgd.memory import line_zeros
from stalesgd.problems import make_problem
from stalesgd.problems._kernels import prefetch_rows


@njit(nogil=True)
def bare_hogwild(kernel, theta, X, y, order, gidx, gval, ws, dims, eta):
    """One pass over ``order``: each row's sparse gradient, written into θ at once."""
    idx = np.zeros(1, np.int64)
    total = 0.0
    n = order.shape[0]
    for i in range(n):
        idx[0] = order[i]
        prefetch_rows(X, order[i + 1:i + 2])
        loss, nnz = kernel(theta, X, y, idx, gidx, gval, ws, dims)
        for p in range(nnz):
            theta[gidx[p]] -= eta * gval[p]
        total += loss
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10, help="rows per thread, in epochs")
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-features", type=int, default=20000)
    ap.add_argument("--nnz", type=int, default=50)
    ap.add_argument("--zipf", type=float, default=1.0, help="the terms' Zipf exponent")
    ap.add_argument("--lr", type=float, default=1.0)
    args = ap.parse_args()
    prob = make_problem("logreg-sparse", n_train=args.n_train, n_test=1000,
                        n_features=args.n_features, nnz=args.nnz, zipf=args.zipf)
    model, X, y = prob.model, prob.dataset.inputs("train"), prob.dataset.y_train
    capacity = model.sparse_capacity(1)
    rng = np.random.default_rng(0)
    orders = [np.concatenate([rng.permutation(args.n_train) for _ in range(args.epochs)])
              for _ in range(2)]
    buffers = [(model.workspace(1), line_zeros(capacity, np.int64),
                line_zeros(capacity, model.dtype)) for _ in range(2)]
    start = model.init_params(0)
    thetas = [line_zeros(model.n_params, model.dtype) for _ in range(2)]

    def run(threads: int, layout: str) -> float:
        for theta in thetas:
            theta[:] = start

        def work(w: int) -> None:
            ws, gidx, gval = buffers[w]
            theta = thetas[w if layout == "own" else 0]
            bare_hogwild(model.sparse_grad_kernel, theta, X, y, orders[w], gidx, gval, ws,
                         model.dims, args.lr)

        ts = [threading.Thread(target=work, args=(w,)) for w in range(threads)]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        return threads * orders[0].shape[0] / (time.perf_counter() - t)

    run(1, "shared")  # compile
    print(f"logreg-sparse {args.n_train} rows × {args.n_features} features, zipf "
          f"{args.zipf:g}, {X[2].shape[0] / args.n_train:.1f} non-zeros a row; samples/s "
          f"(millions) of 1 and 2 threads and their ratio, per repeat")
    ratios: dict[str, list[float]] = {"shared": [], "own": []}
    for _ in range(args.repeats):
        line = []
        for layout in ("shared", "own"):  # interleaved: both see the same load
            one, two = run(1, layout), run(2, layout)
            ratios[layout].append(two / one)
            line.append(f"{layout} θ {one / 1e6:.2f} / {two / 1e6:.2f} = {two / one:.2f}")
        print("   ".join(line))
    for layout, r in ratios.items():
        print(f"{layout:>6} θ: 2 threads / 1 thread median {statistics.median(r):.2f} "
              f"(min {min(r):.2f}, max {max(r):.2f})")


if __name__ == "__main__":
    main()
