"""Exact recursion vs the i.i.d.-staleness simulator: PDF × rule × checkpoint table.

For each PDF of τ (geometric, the C++ 33-thread LeNet/CIFAR-10 histogram, a truncated zeta)
and each static step-size rule (constant, inverse, tail with its table built from the PDF),
runs ``run_iid_staleness`` over many seeds from one fixed θ_0 and compares the mean evaluated
loss at a few checkpoints with :func:`stalesgd.analysis.theory.expected_loss`.

Confidence interval: mean ± z·SE over seeds, with z the two-sided Bonferroni quantile for a
family-wise level of 1 % over *all* cells × checkpoints of the table (so one table is one
99 % test, not dozens).  Run::

    .venv/bin/python bench/theory_check.py [--seeds 200] [--updates 400]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm
from stalesgd.analysis.theory import (
    expected_curve,
    geometric_pdf,
    lstsq_moments,
    normalise_pdf,
    step_table,
    zeta_pdf,
)
from stalesgd.sim.iid import run_iid_staleness

from stalesgd.problems.registry import make_problem

REFERENCE = (Path(__file__).resolve().parents[2] / "shared" / "reference"
             / "cpp_async_lenet_cifar10.json")
RULES = ("constant", "inverse", "tail")


def pdfs() -> dict[str, np.ndarray]:
    """The three PDFs of the check (the C++ one only when the reference file is present)."""
    out = {"geometric(mean 8)": geometric_pdf(8.0, 40), "zeta(1.5, T=40)": zeta_pdf(1.5, 40)}
    if REFERENCE.exists():
        runs = json.loads(REFERENCE.read_text())["runs"]
        out["cpp-33-threads"] = normalise_pdf(runs["33"]["staleness_dist"])
    return out


def theory_grid(*, seeds: int = 200, updates: int = 400, eval_every: int = 50,
                checkpoints: tuple[int, ...] = (50, 100, 200, 400), lr: float = 0.01,
                batch: int = 4, alpha: float = 0.01) -> list[dict[str, Any]]:
    """One row per PDF × rule × checkpoint with the recursion, the simulated mean, its CI and
    whether the recursion lies inside (Bonferroni over all rows at family level ``alpha``)."""
    problem = make_problem("linreg-synthetic", n_features=4, n_train=200, n_test=100,
                           seed=0, noise=0.5)
    theta0 = np.full(4, 1.0)
    mom = lstsq_moments(problem.dataset.features("train"), problem.dataset.y_train)
    cells = [(pn, p, rn) for pn, p in pdfs().items() for rn in RULES]
    z = float(norm.ppf(1 - alpha / (2 * len(cells) * len(checkpoints))))
    rows: list[dict[str, Any]] = []
    for pname, p, rule in cells:
        table = step_table(rule, p, stepsize_options={"pdf": p} if rule == "tail" else None)
        curve = expected_curve(problem, p, table, lr=lr, batch=batch, updates=updates,
                               theta0=theta0, eval_at=list(checkpoints), moments=mom)
        losses = []
        for s in range(seeds):
            rec = run_iid_staleness(problem, p, updates=updates, lr=lr, stepsize=table,
                                    batch=batch, seed=s, eval_every=eval_every, theta0=theta0)
            ks = np.asarray(rec.evals["k"])
            losses.append(np.asarray(rec.evals["loss"])[np.searchsorted(ks, checkpoints)])
        L = np.asarray(losses)
        mean, se = L.mean(axis=0), L.std(axis=0, ddof=1) / math.sqrt(seeds)
        for j, k in enumerate(checkpoints):
            rows.append({"pdf": pname, "rule": rule, "t": k, "theory": float(curve.loss[j]),
                         "sim_mean": float(mean[j]), "half_width": float(z * se[j]),
                         "z": float((mean[j] - curve.loss[j]) / se[j]),
                         "inside": bool(abs(mean[j] - curve.loss[j]) <= z * se[j]),
                         "z_crit": z})
    return rows


def main() -> None:
    """Print the table (and the total wall time)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--updates", type=int, default=400)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = theory_grid(seeds=args.seeds, updates=args.updates)
    print(f"| PDF | rule | t | recursion | sim mean ± {rows[0]['z_crit']:.3f}·SE | z | inside |")
    print("|---|---|---:|---:|---:|---:|:---:|")
    for r in rows:
        print(f"| {r['pdf']} | {r['rule']} | {r['t']} | {r['theory']:.5f} | "
              f"{r['sim_mean']:.5f} ± {r['half_width']:.5f} | {r['z']:+.2f} | "
              f"{'yes' if r['inside'] else 'NO'} |")
    n_in = sum(r["inside"] for r in rows)
    print(f"\n{n_in}/{len(rows)} inside; {args.seeds} seeds × {args.updates} updates per cell; "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
