"""Speedup against ``seq``, split into throughput and statistical efficiency, and stability.

Per configuration and engine (DESIGN §8):

* throughput: mean updates/s over the runs (the whole-run rate from the runs table);
* time to target and updates to target: means over the seeds that reached the target;
* speedup against the ``seq`` run of the same engine, problem, batch and dtype (same step-size
  rule and lr when there is one, else the same rule; none otherwise):
  ``speedup = T_seq / T``, split exactly as ``speedup = throughput_ratio × efficiency_ratio``
  with ``throughput_ratio = (U / T) / (U_seq / T_seq)`` (the update rate *up to the target*)
  and ``efficiency_ratio = U_seq / U`` (updates to target of seq ÷ of this configuration), where
  T and U are the mean time and updates to target.  The whole-run ratio of updates/s is given
  too (``throughput_ratio_run``); it differs from the to-target rate by start-up effects;
* non-convergence rate: the share of runs that diverged or, having a target and evaluations,
  did not reach it.  Runs that cannot be judged are left out of the rate: runs without
  evaluations (timing-only simulations) unless they diverged, and interrupted runs unless they
  diverged or reached the target (their budget was not used up).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .load import Loaded

__all__ = ["SPEEDUP_COLUMNS", "find_baseline", "nonconvergence", "speedup_table"]

SPEEDUP_COLUMNS = ["config_key", "engine", "algorithm", "workers", "stepsize", "runs",
                   "updates_per_s", "updates_per_s_std", "target_loss", "reached",
                   "time_to_target", "updates_to_target", "judged", "not_converged",
                   "nonconv_rate", "baseline", "speedup", "throughput_ratio",
                   "efficiency_ratio", "throughput_ratio_run", "updates_per_s_span"]


def _flag(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame:
        return np.zeros(len(frame), dtype=bool)
    return frame[col].fillna(False).astype(bool).to_numpy()


def nonconvergence(runs: pd.DataFrame) -> tuple[int, int]:
    """(runs that did not converge, runs that can be judged) for a group of runs.

    Not converged: diverged, or a finite target that an evaluated run did not reach.  Judged:
    diverged runs and evaluated runs, less interrupted runs that neither diverged nor reached
    the target.
    """
    diverged = _flag(runs, "diverged")
    interrupted = _flag(runs, "interrupted")
    evaluated = _flag(runs, "evaluated")
    reached = _flag(runs, "reached")
    target = pd.to_numeric(runs.get("target_loss", pd.Series(math.nan, index=runs.index)),
                           errors="coerce").to_numpy(dtype=np.float64)
    has_target = np.isfinite(target)
    judged = (diverged | evaluated) & ~(interrupted & ~diverged & ~reached)
    failed = judged & (diverged | (has_target & evaluated & ~reached))
    return int(failed.sum()), int(judged.sum())


def _mean(grp: pd.DataFrame, col: str) -> float:
    """Mean of the finite values of ``col`` (NaN without any)."""
    if col not in grp:
        return math.nan
    x = pd.to_numeric(grp[col], errors="coerce").to_numpy(dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _first(grp: pd.DataFrame, col: str) -> Any:
    if col not in grp:
        return None
    vals = grp[col].dropna()
    return vals.iloc[0] if len(vals) else None


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def find_baseline(info: dict[str, Any], seq: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``seq`` configuration to compare ``info`` against (see the module docstring)."""
    cands = [s for s in seq if all(_same(s.get(c), info.get(c))
                                   for c in ("engine", "problem", "batch", "dtype"))]
    for cols in (("stepsize", "lr"), ("stepsize",)):
        match = [s for s in cands if all(_same(s.get(c), info.get(c)) for c in cols)]
        if match:
            return sorted(match, key=lambda s: str(s["config_key"]))[0]
    return None


def _div(a: float, b: float) -> float:
    if b == 0 or not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    return a / b


def speedup_table(loaded: Loaded) -> pd.DataFrame:
    """One row per (configuration, engine): throughput, time and updates to target, the
    non-convergence rate, and the speedup against ``seq`` with its throughput/efficiency split
    (columns :data:`SPEEDUP_COLUMNS`; NaN where a value does not exist)."""
    runs = loaded.runs
    if runs.empty:
        return pd.DataFrame(columns=SPEEDUP_COLUMNS)
    infos: list[dict[str, Any]] = []
    for (key, engine), grp in runs.groupby(["config_key", "engine"], sort=True):
        ups = pd.to_numeric(grp["updates_per_s"], errors="coerce").to_numpy(dtype=np.float64)
        ups = ups[np.isfinite(ups)]
        hit = grp[_flag(grp, "reached")]
        failed, judged = nonconvergence(grp)
        targets = pd.to_numeric(grp["target_loss"], errors="coerce").dropna().unique()
        infos.append({
            "config_key": key, "engine": engine,
            "algorithm": _first(grp, "algorithm"), "workers": _first(grp, "workers"),
            "stepsize": _first(grp, "stepsize"), "lr": _first(grp, "lr"),
            "problem": _first(grp, "problem"), "batch": _first(grp, "batch"),
            "dtype": _first(grp, "dtype"), "runs": len(grp),
            "updates_per_s": float(ups.mean()) if ups.size else math.nan,
            "updates_per_s_span": _mean(grp, "updates_per_s_span"),
            "updates_per_s_std": float(ups.std(ddof=1)) if ups.size > 1 else math.nan,
            "target_loss": float(targets[0]) if len(targets) == 1 else math.nan,
            "reached": len(hit),
            "time_to_target": float(hit["time_to_target"].mean()) if len(hit) else math.nan,
            "updates_to_target": float(hit["updates_to_target"].mean()) if len(hit)
            else math.nan,
            "judged": judged, "not_converged": failed,
            "nonconv_rate": failed / judged if judged else math.nan,
        })
    seq = [i for i in infos if i["algorithm"] == "seq"]
    for info in infos:
        base = find_baseline(info, seq)
        info["baseline"] = base["config_key"] if base else ""
        if base is None:
            info.update(speedup=math.nan, throughput_ratio=math.nan, efficiency_ratio=math.nan,
                        throughput_ratio_run=math.nan)
            continue
        t, u = info["time_to_target"], info["updates_to_target"]
        t0, u0 = base["time_to_target"], base["updates_to_target"]
        info["speedup"] = _div(t0, t)
        info["throughput_ratio"] = _div(_div(u, t), _div(u0, t0))
        info["efficiency_ratio"] = _div(u0, u)
        info["throughput_ratio_run"] = _div(info["updates_per_s"], base["updates_per_s"])
    return pd.DataFrame(infos)[SPEEDUP_COLUMNS]
