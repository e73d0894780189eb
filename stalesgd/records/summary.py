"""What an engine hands back for one run (:class:`RunRecord`), and its ``runs`` row.

Every engine builds its row with :func:`engine_summary`: the run's identity from its spec,
the counts of its update log, throughput, time and updates to target from its evaluations,
plus the engine's own declared extras.  :func:`summarize` completes a row an engine left
partial (derived values from the record itself) and is what the runner stores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .updates import UpdateLog, UpdateStats

if TYPE_CHECKING:
    from stalesgd.experiment import RunSpec

__all__ = ["RunRecord", "engine_summary", "summarize", "update_stats"]


@dataclass
class RunRecord:
    """What an engine returns for one run.

    ``summary``: the run's row of the ``runs`` table (declared columns);
    ``updates``: its update rows, an :class:`~stalesgd.records.updates.UpdateLog` (streamed
    while the run went on; counts every update even where it kept a sample of rows) or, for
    small records made by hand, a dict of columns; ``evals``/``control``: column name ->
    1-D array (``accuracy``, ``attempts``, ``dropped`` and the control defaults may be left
    out; an empty dict means no rows).  Derived summary values left out are filled in by
    :func:`summarize`.
    """

    summary: dict[str, Any] = field(default_factory=dict)
    updates: Mapping[str, np.ndarray] = field(default_factory=dict)
    evals: dict[str, np.ndarray] = field(default_factory=dict)
    control: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def update_stats(self) -> UpdateStats:
        """Counts over every update of the run (:func:`update_stats`)."""
        return update_stats(self.updates)


def update_stats(updates: Mapping[str, np.ndarray]) -> UpdateStats:
    """The counts of an update log, or of update columns given in memory (all rows)."""
    if isinstance(updates, UpdateLog):
        return updates.stats
    if not updates or len(updates.get("k", ())) == 0:
        return UpdateStats()
    log = UpdateLog()
    log.add(updates)
    return log.close()


def _target_hit(evals: Mapping[str, np.ndarray], target: float | None
                ) -> tuple[float, int | None]:
    """Time and updates at the first evaluation (in time order) at or below ``target``."""
    if target is None or math.isnan(target) or len(evals.get("loss", ())) == 0:
        return math.nan, None
    t = np.asarray(evals["t"], dtype=np.float64)
    order = np.argsort(t, kind="stable")
    loss = np.asarray(evals["loss"], dtype=np.float64)[order]
    hit = np.flatnonzero(loss <= target)
    if not hit.size:
        return math.nan, None
    return float(t[order][hit[0]]), int(np.asarray(evals["k"])[order][hit[0]])


def _final_loss(evals: Mapping[str, np.ndarray]) -> float:
    if len(evals.get("loss", ())) == 0:
        return math.nan
    order = np.argsort(np.asarray(evals["t"], dtype=np.float64), kind="stable")
    return float(np.asarray(evals["loss"], dtype=np.float64)[order][-1])


def engine_summary(engine: str, spec: RunSpec, evals: Mapping[str, np.ndarray],
                   stats: UpdateStats, seconds: float, diverged: bool, interrupted: bool,
                   **extras: Any) -> dict[str, Any]:
    """The ``runs`` row of one run of ``spec`` on ``engine``: its identity, the counts of its
    updates (``stats``), ``seconds`` (wall or simulated) and throughput, time and updates
    to target (NaN / null when not reached), the last loss, and ``extras`` (declared
    columns of the engine)."""
    target = spec.stop.target_loss
    t_hit, k_hit = _target_hit(evals, target)
    n = stats.applied
    row = {
        "run_id": spec.run_id,
        "engine": engine,
        "algorithm": spec.algorithm.name,
        "problem": spec.problem.name,
        "workers": spec.workers,
        "stepsize": spec.stepsize.rule,
        "lr": float(spec.stepsize.lr),
        "batch": spec.problem.batch,
        "sampling": spec.problem.sampling,
        "seed": spec.seed,
        "slowdown": spec.slowdown,
        "updates": n,
        "seconds": float(seconds),
        "updates_per_s": n / seconds if seconds > 0 else math.nan,
        "target_loss": math.nan if target is None else float(target),
        "time_to_target": t_hit,
        "updates_to_target": k_hit,
        "final_loss": _final_loss(evals),
        "converged": bool(target is not None and k_hit is not None and not diverged),
        "diverged": bool(diverged),
        "interrupted": bool(interrupted),
        "mean_tau": stats.mean_tau,
        "dropped": stats.dropped,
        "zero_step_updates": stats.zero_steps,
        "log_rows": spec.record.rows,
        "logged_rows": stats.rows_kept,
    }
    if spec.workers > 1 and spec.algorithm.name != "sync":  # (sync: one update per round)
        row.update(stats.per_worker(spec.workers))
    row.update(extras)
    return row


def summarize(record: RunRecord, target_loss: float | None = None) -> dict[str, Any]:
    """The record's summary with derived values filled in where the engine left them out.

    ``updates`` (applied, i.e. not dropped), ``seconds`` (last apply or evaluation time),
    ``updates_per_s``, ``target_loss``, ``time_to_target`` / ``updates_to_target`` (first
    evaluation with loss <= target; NaN / None if never), ``final_loss`` (last evaluation),
    ``diverged`` (an evaluated loss that is not finite), ``converged`` (target reached, or
    without a target: not diverged), ``interrupted`` (False), ``mean_tau`` and ``dropped``.
    Engine values win.
    """
    s = dict(record.summary)
    stats = record.update_stats
    ev = record.evals
    t_evals = float(np.max(ev["t"])) if len(ev.get("t", ())) else 0.0
    s.setdefault("updates", stats.applied)
    s.setdefault("seconds", max(stats.t_last, t_evals))
    if "updates_per_s" not in s:
        s["updates_per_s"] = s["updates"] / s["seconds"] if s["seconds"] > 0 else math.nan
    target = s.get("target_loss", target_loss)
    s["target_loss"] = math.nan if target is None else float(target)
    t_hit, k_hit = _target_hit(ev, s["target_loss"])
    s.setdefault("time_to_target", t_hit)
    s.setdefault("updates_to_target", k_hit)
    s.setdefault("final_loss", _final_loss(ev))
    losses = np.asarray(ev.get("loss", []), dtype=np.float64)
    s.setdefault("diverged", bool(len(losses) and not np.all(np.isfinite(losses))))
    if "converged" not in s:
        if math.isnan(s["target_loss"]):
            s["converged"] = bool(len(losses)) and not s["diverged"]
        else:
            s["converged"] = k_hit is not None and not s["diverged"]
    s.setdefault("interrupted", False)
    s.setdefault("peak_param_bytes", None)
    s.setdefault("peak_rss_bytes", None)
    s.setdefault("mean_tau", stats.mean_tau)
    s.setdefault("dropped", stats.dropped)
    return s
