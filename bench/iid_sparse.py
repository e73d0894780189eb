"""The i.i.d.-staleness mode on a sparse problem: a ring of whole iterates against the undo log.

``stalesgd.sim.iid.run_iid_staleness`` reads θ_{k−τ} either from a ring of the last τmax + 1
iterates (any model; every update copies and steps the whole vector) or, on a sparse problem
where it is cheaper, from θ_k and an undo log of the last τmax updates' writes (rewinding
E[τ] updates, there and back).  This script runs both on the synthetic text-like set of
``bench/sparse_hogwild.py`` for uniform τ on 0…τmax, interleaved repeat by repeat, checks that
they give the same bits, and prints updates/s, memory and which one the mode chooses.

    python bench/iid_sparse.py                     # batch 1 and 16, τmax 0, 4, 16, 64, 256
    python bench/iid_sparse.py --batches 1 --tau-max 16 512 --repeats 3
"""

from __future__ import annotations

import argparse

import numpy as np
from stalesgd.sim import iid

from stalesgd.problems import make_problem


def _forced(kind: type) -> object:
    """An iterate-store factory that always returns ``kind``."""
    return lambda problem, theta, pdf, batch: kind(problem, theta, pdf.size - 1, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--tau-max", type=int, nargs="+", default=[0, 4, 16, 64, 256])
    ap.add_argument("--samples", type=int, default=400_000, help="rows a run draws")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    problem = make_problem("logreg-sparse")
    chooser = iid._iterates
    kinds = {"ring": _forced(iid._RingOfIterates), "log": _forced(iid._UndoLog)}
    print(f"logreg-sparse, {problem.model.n_params} parameters; uniform τ on 0…τmax; "
          f"best of {args.repeats} repeats")
    print("batch  τmax  ring upd/s  log upd/s  log/ring  ring MB  log MB  same bits  chosen")
    for batch in args.batches:
        updates = max(1000, args.samples // batch)
        for tau_max in args.tau_max:
            pdf = np.full(tau_max + 1, 1.0 / (tau_max + 1))
            rate, nbytes, final = {}, {}, {}
            try:
                for _ in range(args.repeats):
                    for name, factory in kinds.items():
                        iid._iterates = factory
                        out = np.empty(problem.model.n_params, problem.model.dtype)
                        rec = iid.run_iid_staleness(problem, pdf, updates=updates, lr=0.5,
                                                    batch=batch, seed=1, eval_every=updates,
                                                    final_params=out)
                        s = rec.summary
                        rate[name] = max(rate.get(name, 0.0), updates / s["wall_seconds"])
                        nbytes[name], final[name] = s["peak_param_bytes"], out
            finally:
                iid._iterates = chooser
            theta0 = problem.init_params(1)
            chosen = "log" if isinstance(chooser(problem, theta0, pdf, batch),
                                         iid._UndoLog) else "ring"
            same = np.array_equal(final["ring"], final["log"])
            print(f"{batch:5d} {tau_max:5d} {rate['ring']:11.0f} {rate['log']:10.0f} "
                  f"{rate['log'] / rate['ring']:9.2f} {nbytes['ring'] / 1e6:8.1f} "
                  f"{nbytes['log'] / 1e6:7.1f} {str(same):>10s}  {chosen}", flush=True)


if __name__ == "__main__":
    main()
