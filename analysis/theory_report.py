"""Theory checks of a report: least-squares runs against the exact recursion and the bounds.

For every configuration run on a least-squares problem (``linreg-*``), one run (its lowest
seed) is set beside two pieces of theory (DESIGN §8):

* the **exact recursion** of :mod:`stalesgd.analysis.theory`, fed with the run's *own*
  measured PDF(τ), step-size rule, learning rate, batch, initial point and evaluation set.
  It gives E[loss] under i.i.d. staleness with consistent reads.  How far a run lies from
  it says how much of its convergence the staleness distribution alone explains (real
  ``lock``/``leashed`` runs have correlated τ, ``hogwild`` inconsistent reads; a simulated
  run with i.i.d. staleness must agree within its noise);
* the **Hogwild! envelope** (Niu et al. 2011, Prop. 4.1, :func:`~.bounds.hogwild_niu2011`)
  on the training gap E[f(θ_t)] − f*, with the problem's constants over the ball
  ‖θ − θ*‖ ≤ ‖θ_0 − θ*‖ (:func:`~.bounds.lstsq_constants`), Ω = d and the run's largest τ and
  η: checked on the recursion's expected training gap and, where the run evaluates the full
  training set, on the run's own gap;
* the **bounds on the average squared gradient norm** of Lian et al. 2015 (Thm. 1),
  Koloskova et al. 2022 and Mishchenko et al. 2022 (:mod:`.bounds`), checked at every step
  of the recursion's curve for runs with a constant step (the theorems' setting); a run whose
  step breaks a theorem's step-size condition is reported as not checked, with that reason.

Every check says whether the curve crossed the envelope and how loose the envelope is (the
minimum and median of envelope ÷ curve over the checked steps).  What a check can show is
limited, and the tables say so: no bound's statement or constants were checked against the
paper (each bound's ``source``), and an envelope at least :data:`TOO_LOOSE` times above the
curve everywhere is reported as "too loose to fail" rather than as holding.

The recursion costs about steps·((τmax+1)²d² + d⁴) operations, so each run is followed for at
most :data:`THEORY_HORIZON` updates and runs whose cost exceeds :data:`MAX_COST` are skipped
with a note.  Online rules (``tail``, ``model`` without a PDF) are checked with the static
table their rule builds from the measured PDF (what the online table converges to).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stalesgd.experiment import RunSpec, expand, parse_experiment
from stalesgd.problems.registry import make_problem
from stalesgd.stepsize import make_rule

from .bounds import (
    EnvelopeCheck,
    LstsqConstants,
    check_envelope,
    hogwild_niu2011,
    koloskova2022,
    lian2015,
    lstsq_constants,
    mishchenko2022,
    observed,
)
from .formatting import MISSING, display
from .load import Loaded
from .staleness_report import run_histograms
from .theory import TheoryCurve, expected_curve, lstsq_moments, step_table

__all__ = [
    "CHECKS",
    "GRADIENT_BOUNDS",
    "MAX_COST",
    "THEORY_HORIZON",
    "TOO_LOOSE",
    "TheoryChecks",
    "TheoryCurveRow",
    "bounds_table",
    "check_status",
    "gradient_bound_checks",
    "gradient_bounds_table",
    "theory_checks",
    "theory_table",
]

#: updates of a run followed by the recursion (its cost grows linearly with them)
THEORY_HORIZON = 4000
#: largest steps·((τmax+1)²d² + d⁴) computed for one run (about 10 s here)
MAX_COST = 2e10
#: an envelope at least this many times above the curve at every checked step cannot be
#: crossed by any plausible error of a run or of the simulator: such a check cannot fail
TOO_LOOSE = 100.0


@dataclass
class TheoryCurveRow:
    """One checked run's measured and expected loss at its evaluation steps."""

    label: str
    k: np.ndarray
    measured: np.ndarray
    expected: np.ndarray
    f_min: float


@dataclass
class TheoryChecks:
    """The theory table (one row per checked run), the curves for the figure, and notes on
    runs that could not be checked and why."""

    table: pd.DataFrame
    curves: list[TheoryCurveRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _specs(loaded: Loaded) -> dict[str, dict[str, RunSpec]]:
    """RunSpecs by source and run id, re-expanded from each folder's config.toml."""
    out: dict[str, dict[str, RunSpec]] = {}
    for src, res in zip(loaded.sources, loaded.folders, strict=True):
        try:
            exp = parse_experiment(res.config, source=str(res.path / "config.toml"))
            out[src] = {s.run_id: s for s in expand(exp)}
        except (ValueError, KeyError, TypeError):
            out[src] = {}
    return out


def _table_for(spec: RunSpec, pdf: np.ndarray) -> tuple[np.ndarray, str]:
    """The static table s[0..τmax] the run's rule gives under ``pdf`` (and how it was made)."""
    opts = dict(spec.stepsize.options)
    rule = make_rule(spec.stepsize.rule, workers=spec.workers, lr=spec.stepsize.lr, **opts)
    how = "the rule's table"
    if rule.estimator(pdf.size - 1) is not None:
        opts["pdf"] = pdf
        how = "static table from the measured PDF (the rule learns it online)"
    return step_table(spec.stepsize.rule, pdf, workers=spec.workers, lr=spec.stepsize.lr,
                      stepsize_options=opts), how


def _one(spec: RunSpec, counts: np.ndarray, ev: pd.DataFrame, label: str,
         ) -> tuple[dict[str, Any], TheoryCurveRow] | str:
    """Check one run whose applied updates' τ histogram is ``counts``; a string says why it
    was skipped."""
    ev = ev.sort_values("k")
    k_all = ev["k"].to_numpy(np.int64)
    loss_all = ev["loss"].to_numpy(np.float64)
    ok = np.isfinite(loss_all)
    k_all, loss_all = k_all[ok], loss_all[ok]
    if k_all.size < 2 or counts.sum() == 0:
        return f"{label}: fewer than two evaluations or no applied update"
    if spec.problem.sampling != "replacement":
        return (f"{label}: the exact expectation assumes minibatches drawn with replacement; "
                f"this run sampled {spec.problem.sampling}")
    horizon = int(min(k_all[-1], THEORY_HORIZON))
    keep = k_all <= horizon
    ks, measured = k_all[keep], loss_all[keep]
    pdf = counts.astype(np.float64) / counts.sum()
    problem = make_problem(spec.problem.name, dtype=spec.problem.dtype, **spec.problem.options)
    d = problem.dataset.n_features
    cost = horizon * (pdf.size**2 * d**2 + d**4)
    if cost > MAX_COST:
        return (f"{label}: the exact recursion would cost {cost:.1e} operations "
                f"(τmax = {pdf.size - 1}, d = {d}); more than {MAX_COST:.0e}")
    X = problem.dataset.features("train").astype(np.float64)
    y = problem.dataset.y_train.astype(np.float64)
    moments = lstsq_moments(X, y)
    theta0 = problem.init_params(spec.seed).astype(np.float64)
    table, how = _table_for(spec, pdf)
    lr, batch = float(spec.stepsize.lr), int(spec.problem.batch)
    # every step (the gradient-norm bounds average over all iterates); the run's points
    full = expected_curve(problem, pdf, table, lr=lr, batch=batch, updates=horizon,
                          theta0=theta0, eval_at=None, split=spec.eval.split,
                          max_rows=spec.eval.max_rows, workers=spec.workers, moments=moments)
    loss_at = full.loss[ks]
    f_min = float(full.loss[-1] - full.gap[-1])
    pos = ks > 0
    rel = np.abs(measured[pos] - loss_at[pos]) / np.maximum(np.abs(loss_at[pos]), 1e-300)
    gap_meas = measured[-1] - f_min
    gap_exp = float(full.gap[ks[-1]])

    eta_max = lr * float(np.max(table[: pdf.size]))
    consts = lstsq_constants(X, y, theta0, batch=batch, moments=moments)
    bound = dict(L=consts.L, mu=consts.mu, M2=consts.M2, D0=consts.D0,
                 tau_max=int(pdf.size - 1), gamma=eta_max, Omega=float(d))
    row: dict[str, Any] = {
        "label": label, "seed": spec.seed, "mean_tau": float(np.arange(pdf.size) @ pdf),
        "tau_max": int(pdf.size - 1), "horizon": horizon, "table": how,
        "measured_loss": float(measured[-1]), "expected_loss": float(loss_at[-1]),
        "gap_ratio": gap_meas / gap_exp if gap_exp > 0 else math.nan,
        "median_rel_dev": float(np.median(rel)) if rel.size else math.nan,
        "max_rel_dev": float(np.max(rel)) if rel.size else math.nan,
    }
    if consts.mu <= 0:
        why = "μ = 0: the envelope needs a strongly convex objective"
        row.update(_unchecked("hogwild", why) | _unchecked("hogwild_run", why))
    else:
        row.update(_checked("hogwild", check_envelope(
            full.t, np.maximum(full.train_gap, 0.0), hogwild_niu2011, **bound)))
        if spec.eval.split == "train" and spec.eval.max_rows >= X.shape[0]:
            row.update(_checked("hogwild_run", check_envelope(
                ks, np.maximum(measured - moments.f_star, 0.0), hogwild_niu2011, **bound)))
        else:
            row.update(_unchecked("hogwild_run", "the run does not evaluate the whole "
                                                 "training set"))
    row.update(gradient_bound_checks(full, table[: pdf.size], lr, consts, int(pdf.size - 1),
                                     int(spec.workers)))
    return row, TheoryCurveRow(label, ks, measured, loss_at.copy(), f_min)


#: the bounds on the average squared gradient norm checked per run (name → function)
GRADIENT_BOUNDS = {"lian": lian2015, "koloskova": koloskova2022, "mishchenko": mishchenko2022}
#: every check of a run, by the name its table columns start with → the bound it applies
CHECKS = {"hogwild": hogwild_niu2011, "hogwild_run": hogwild_niu2011, **GRADIENT_BOUNDS}


def _unchecked(name: str, note: str) -> dict[str, Any]:
    """The table columns of a check that was not made, and why."""
    return {f"{name}_crossed": None, f"{name}_min_ratio": math.nan,
            f"{name}_median_ratio": math.nan, f"{name}_note": note}


def _checked(name: str, env: EnvelopeCheck) -> dict[str, Any]:
    """The table columns of a check: crossed or not, and how loose (envelope ÷ curve)."""
    return {f"{name}_crossed": env.crossed, f"{name}_min_ratio": env.min_ratio,
            f"{name}_median_ratio": env.median_ratio, f"{name}_note": ""}


def gradient_bound_checks(curve: TheoryCurve, table: np.ndarray, lr: float,
                          consts: LstsqConstants, tau_max: int,
                          workers: int) -> dict[str, Any]:
    """The bounds of Lian et al. 2015, Koloskova et al. 2022 and Mishchenko et al. 2022 on
    (1/t)Σ E‖∇f(θ_k)‖², checked at every step of the recursion's ``curve``.

    Per bound ``<name>``: ``_crossed`` (True/False, or None when not checked),
    ``_min_ratio`` and ``_median_ratio`` (envelope ÷ curve over the checked steps) and
    ``_note`` (why not checked: a step size that varies with τ, or the theorem's step-size
    condition failing).  Constants: L, σ² over the ball ‖θ − θ*‖ ≤ ‖θ_0 − θ*‖, F0, the run's
    largest τ, τ_C = the number of workers (gradients in flight)."""
    out: dict[str, Any] = {}
    constant = bool(np.all(table == table[0]))
    t, avg = observed(curve, "avg_grad2") if curve.t.size > 1 else (None, None)
    for name, fn in GRADIENT_BOUNDS.items():
        if not constant:
            out.update(_unchecked(name, "η varies with τ"))
            continue
        if t is None or not np.all(np.isfinite(avg)):
            out.update(_unchecked(name, "no finite expected curve"))
            continue
        gamma = lr * float(table[0])
        kw: dict[str, Any] = dict(L=consts.L, sigma2=consts.sigma2, F0=consts.F0, gamma=gamma)
        if name in ("lian", "koloskova"):
            kw["tau_max"] = tau_max
        if name == "koloskova":
            kw["tau_c"] = workers
        if name == "mishchenko":
            kw["workers"] = workers
        try:
            out.update(_checked(name, check_envelope(t, avg, fn, **kw)))
        except ValueError:  # the theorem's step-size condition fails: it claims nothing
            out.update(_unchecked(name, f"step-size condition fails (γ = {gamma:.3g})"))
    return out


def theory_checks(loaded: Loaded) -> TheoryChecks | None:
    """Check every least-squares configuration's lowest-seed run; None when there is none."""
    runs = loaded.runs
    if runs.empty or "problem" not in runs:
        return None
    lsq = runs[runs["problem"].astype(str).str.startswith("linreg-") & runs["evaluated"]]
    if lsq.empty:
        return None
    specs = _specs(loaded)
    rows: list[dict[str, Any]] = []
    curves: list[TheoryCurveRow] = []
    notes: list[str] = []
    firsts = [g.sort_values("seed").iloc[0]
              for _, g in lsq.groupby(["engine", "config_key"], sort=True)]
    firsts.sort(key=lambda r: (str(r["engine"]), str(r["algorithm"]), str(r["stepsize"]),
                               int(r["workers"]), str(r["config_key"])))
    for run in firsts:
        label = (f"{run['engine']} {run['algorithm']} {run['stepsize']} "
                 f"m={int(run['workers'])}")
        if bool(run.get("diverged", False)):
            notes.append(f"{label}: diverged, no theory check")
            continue
        spec = specs.get(run["source"], {}).get(str(run["run_id"]))
        if spec is None:
            notes.append(f"{label}: its run could not be re-expanded from config.toml")
            continue
        counts = run_histograms(loaded).get(str(run["uid"]), np.zeros(0, np.int64))
        ev = loaded.evals[loaded.evals["uid"] == run["uid"]]
        got = _one(spec, counts, ev, label)
        if isinstance(got, str):
            notes.append(got)
            continue
        rows.append(got[0])
        curves.append(got[1])
    return TheoryChecks(table=pd.DataFrame(rows), curves=curves, notes=notes)


# ---------------------------------------------------------------------------------------------
# The report's theory tables
# ---------------------------------------------------------------------------------------------

#: what each bound bounds, in words
QUANTITY_TEXT = {"gap": "training gap E[f(θ_t)] − f*", "avg_grad2": "(1/t)·Σ_{k<t} E‖∇f(θ_k)‖²"}
#: what each check applies its bound to
CHECKED_ON = {
    "hogwild": "the recursion's expected gap, every step",
    "hogwild_run": "the run's own gap at its evaluations (whole training set only)",
    "lian": "the recursion, every step (constant step only)",
    "koloskova": "the recursion, every step (constant step only)",
    "mishchenko": "the recursion, every step (constant step only)",
}
_SHORT = {"hogwild": "Hogwild!", "hogwild_run": "Hogwild! (run)", "lian": "Lian",
          "koloskova": "Koloskova", "mishchenko": "Mishchenko"}


def check_status(crossed: Any, min_ratio: float, note: str) -> str:
    """One check in words: ``CROSSED``, ``below``, ``too loose to fail: …`` (the envelope is
    at least :data:`TOO_LOOSE` times above the curve everywhere) or ``not checked: why``."""
    if crossed is None or (isinstance(crossed, float) and math.isnan(crossed)):
        return f"not checked: {note}" if note else MISSING
    if bool(crossed):
        return "CROSSED"
    if math.isfinite(min_ratio) and min_ratio >= TOO_LOOSE:
        return f"too loose to fail: ≥ {min_ratio:.3g}× above the curve at every step"
    return "below"


def _status_columns(t: pd.DataFrame, names: Sequence[str]) -> list[tuple[str, str, str]]:
    cols = []
    for name in names:
        t[f"{name}_status"] = [check_status(c, r, n) for c, r, n in zip(
            t[f"{name}_crossed"], t[f"{name}_min_ratio"], t[f"{name}_note"], strict=True)]
        title = CHECKS[name].reference if name in GRADIENT_BOUNDS else _SHORT[name] + " env."
        cols += [(f"{name}_status", title, ""),
                 (f"{name}_min_ratio", f"{_SHORT[name]} min ×", ".3g"),
                 (f"{name}_median_ratio", f"{_SHORT[name]} median ×", ".3g")]
    return cols


def theory_table(checks: TheoryChecks | None) -> pd.DataFrame:
    """Least-squares runs against the exact recursion and the Hogwild! envelope, as text."""
    if checks is None or checks.table.empty:
        return pd.DataFrame()
    t = checks.table.copy()
    cols = [("label", "run (lowest seed)", ""), ("mean_tau", "mean τ", ".3g"),
            ("tau_max", "max τ", ""), ("horizon", "updates checked", ","),
            ("measured_loss", "loss (run)", ".5g"),
            ("expected_loss", "E[loss] (recursion)", ".5g"),
            ("gap_ratio", "gap run ÷ expected", ".3g"),
            ("median_rel_dev", "median |rel. dev.|", ".2%"),
            ("max_rel_dev", "max |rel. dev.|", ".2%")]
    cols += _status_columns(t, ["hogwild", "hogwild_run"])
    return display(t, cols + [("table", "step sizes", "")])


def gradient_bounds_table(checks: TheoryChecks | None) -> pd.DataFrame:
    """Least-squares runs against the bounds on the average squared gradient norm, as text."""
    if checks is None or checks.table.empty:
        return pd.DataFrame()
    t = checks.table.copy()
    cols = [("label", "run (lowest seed)", ""), ("tau_max", "max τ", "")]
    return display(t, cols + _status_columns(t, list(GRADIENT_BOUNDS)))


def bounds_table(checks: TheoryChecks | None) -> pd.DataFrame:
    """One row per check: the bound, what it bounds and is applied to, where its statement
    and constants come from, and what its checks in this report came to (how many runs
    crossed, stayed below, or could not fail; the smallest and the median envelope ÷ curve)."""
    if checks is None or checks.table.empty:
        return pd.DataFrame()
    t = checks.table
    rows = []
    for name, fn in CHECKS.items():
        status = [check_status(c, r, n) for c, r, n in zip(
            t[f"{name}_crossed"], t[f"{name}_min_ratio"], t[f"{name}_note"], strict=True)]
        counts = {k: sum(s.startswith(k) for s in status)
                  for k in ("CROSSED", "below", "too loose to fail", "not checked")}
        rows.append({
            "check": _SHORT[name], "bound": fn.reference,
            "bounds": QUANTITY_TEXT[fn.quantity], "checked on": CHECKED_ON[name],
            "statement and constants": fn.source,
            "runs": ", ".join(f"{n} {k}" for k, n in counts.items() if n) or MISSING,
            "min ×": t[f"{name}_min_ratio"].min(),
            "median ×": t[f"{name}_median_ratio"].median(),
        })
    frame = pd.DataFrame(rows)
    return display(frame, [(c, c, ".3g" if "×" in c else "") for c in frame.columns])
