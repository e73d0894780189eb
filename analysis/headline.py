"""Headline numbers: the three lines a run of the main job ends with.

1. How well the simulator predicts PDF(τ): the median (and worst) total-variation distance
   between simulated and measured PDF(τ) over the configurations run by both engines with
   more than one worker (one worker has τ ≡ 0 in both, a distance of 0 that says nothing).
2. How well it predicts throughput: the median |sim/real − 1| of updates/s.
3. What parallelism bought for real: the configuration that reached the target loss first,
   and its speed-up over the same algorithm and rule with one worker.

Then, for every out-of-sample engine ``sim[m<=N]`` (simulations calibrated only from runs of
at most N workers, see :mod:`.load`), one line of the same distances and errors over the
configurations it predicted that were also measured, beside the in-sample line 1–2.

Each is ``None`` when the folder does not hold what it needs (e.g. only one engine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .steadiness import disturbances, placement_note
from .tables import Analysis, has_target

__all__ = ["Headline", "headline"]


@dataclass(frozen=True)
class Headline:
    """The three headline numbers (``None`` where not computable) and their sentences."""

    tv_median: float | None
    tv_max: float | None
    throughput_error_median: float | None
    best_config: str | None
    best_time_to_target: float | None
    best_speedup_vs_one_worker: float | None
    lines: tuple[str, ...]
    #: per out-of-sample engine ``sim[m<=N]``: (median TV, median |updates/s error|,
    #: median |time-to-target error|), ``None`` where not computable
    out_of_sample: dict[str, tuple[float | None, float | None, float | None]] = field(
        default_factory=dict)


def _workers(key: str) -> int | None:
    for part in key.split():
        if part.startswith("m=") and part[2:].isdigit():
            return int(part[2:])
    return None


def headline(analysis: Analysis, reference: str = "real", other: str = "sim") -> Headline:
    """The headline numbers of an :class:`~stalesgd.analysis.tables.Analysis`."""
    lines: list[str] = []
    tv_med = tv_max = err_med = best_t = best_speedup = None
    best_key = None

    d = analysis.stale.distances
    if not d.empty:
        pair = d[(d["engine_a"] == reference) & (d["engine_b"] == other)]
        pair = pair[_more_than_one_worker(pair)]
        tv = pd.to_numeric(pair["tv"], errors="coerce")
        if tv.notna().any():
            tv_med, tv_max = float(tv.median()), float(tv.max())
            worst = pair.loc[tv.idxmax(), "config_key"]
            shaky, apart = _machine_states(analysis, reference)
            keys = set(pair.loc[tv.notna(), "config_key"])
            lines.append(f"PDF(τ) {other} vs {reference}: median total variation {tv_med:.3f} "
                         f"over {_configurations(int(tv.notna().sum()))} with m > 1 "
                         f"(worst {tv_max:.3f}: {worst}"
                         + (", a run on an unsteady machine" if worst in shaky else "") + ")"
                         + _machine_note(len(keys & shaky), len(keys & apart), len(keys),
                                         reference))

    sp = analysis.speedup
    if not sp.empty:
        ratio = _rate_ratios(sp, reference, other)
        if len(ratio):
            err_med = float((ratio - 1.0).abs().median())
            lines.append(f"updates/s predicted by {other}: median error {100 * err_med:.0f} % "
                         f"over {_configurations(len(ratio))} (sim/real "
                         + (f"{ratio.iloc[0]:.2f})" if len(ratio) == 1 else
                            f"from {ratio.min():.2f} to {ratio.max():.2f})"))
        real = sp[(sp["engine"] == reference) & sp["time_to_target"].notna()]
        if len(real):
            row = real.loc[real["time_to_target"].idxmin()]
            best_key, best_t = str(row["config_key"]), float(row["time_to_target"])
            one = sp[(sp["engine"] == reference) & (sp["algorithm"] == row["algorithm"])
                     & (sp["stepsize"] == row["stepsize"]) & (sp["workers"] == 1)]
            text = (f"first to loss {row['target_loss']:.4g} ({reference}): {best_key} "
                    f"in {best_t:.3g} s")
            if len(one) and math.isfinite(float(one["time_to_target"].iloc[0])):
                # (the fastest of all: never slower than its own 1-worker run)
                best_speedup = float(one["time_to_target"].iloc[0]) / best_t
                text += f", a {best_speedup:.2f}× speed-up over 1 worker"
            lines.append(text)
        elif (sp["engine"] == reference).any() and has_target(sp[sp["engine"] == reference]):
            lines.append(f"no {reference} run reached its target loss")
    predicted = {}
    for engine in _out_of_sample_engines(analysis, other):
        line, numbers = _out_of_sample_line(analysis, reference, engine)
        if line:
            lines.append(line)
            predicted[engine] = numbers
    return Headline(tv_med, tv_max, err_med, best_key, best_t, best_speedup, tuple(lines),
                    predicted)


def _machine_states(analysis: Analysis, engine: str) -> tuple[set[str], set[str]]:
    """Configurations with at least one ``engine`` run whose machine was not steady, and
    with one whose CPUs were apart (:mod:`~stalesgd.analysis.steadiness`)."""
    runs = getattr(analysis.loaded, "runs", None)
    if runs is None or runs.empty or "engine" not in runs:
        return set(), set()
    mine = runs[runs["engine"] == engine]
    return ({str(r["config_key"]) for _, r in mine.iterrows() if disturbances(r)},
            {str(r["config_key"]) for _, r in mine.iterrows() if placement_note(r)})


def _machine_note(unsteady: int, apart: int, n: int, engine: str) -> str:
    """"; k of them had a real run on an unsteady machine, j a real run with its CPUs apart
    (flags in the runs table)", or for one configuration "; it had …" (empty when none)."""
    found = [(count, what) for count, what in (
        (unsteady, f"a {engine} run on an unsteady machine"),
        (apart, f"a {engine} run with its CPUs apart")) if count]
    if not found:
        return ""
    if n == 1:
        text = "it had " + " and ".join(what for _, what in found)
    else:
        text = ", ".join(f"{count} of them had {what}" if i == 0 else f"{count} {what}"
                         for i, (count, what) in enumerate(found))
    return f"; {text} (flags in the runs table)"


def _configurations(n: int) -> str:
    """``n configurations``, singular for one."""
    return f"{n} configuration{'s' if n != 1 else ''}"


def _rate_ratios(sp: pd.DataFrame, reference: str, other: str) -> pd.Series:
    """Per configuration run by both engines, ``other``'s updates/s ÷ ``reference``'s, both
    from first read to last apply where both have it (a real run's whole-run rate counts its
    start-up), else the runs table's."""
    out = {}
    for col in ("updates_per_s", "updates_per_s_span"):
        if col not in sp:
            continue
        ups = sp.pivot_table(index="config_key", columns="engine", values=col, aggfunc="mean")
        if reference in ups and other in ups:
            r = (ups[other] / ups[reference]).replace([np.inf, -np.inf], np.nan).dropna()
            out.update(r.to_dict())  # the span-based ratio, where there is one, wins
    return pd.Series(out, dtype=float)


def _more_than_one_worker(frame: pd.DataFrame) -> np.ndarray:
    """Row mask: configurations with m > 1 (a boolean array, also for no rows)."""
    return np.array([(_workers(k) or 0) > 1 for k in frame["config_key"]], dtype=bool)


def _out_of_sample_engines(analysis: Analysis, other: str) -> list[str]:
    d = analysis.stale.distances
    if d.empty or "engine_b" not in d:
        return []
    return sorted({str(e) for e in d["engine_b"] if str(e).startswith(other + "[")})


def _out_of_sample_line(analysis: Analysis, reference: str, engine: str):
    """The headline line of one out-of-sample engine, and its three medians."""
    d = analysis.stale.distances
    pair = d[(d["engine_a"] == reference) & (d["engine_b"] == engine)]
    pair = pair[_more_than_one_worker(pair)]
    if pair.empty:
        return "", (None, None, None)
    tv = pd.to_numeric(pair["tv"], errors="coerce").dropna()
    ups = (pd.to_numeric(pair.get("updates_per_s_ratio"), errors="coerce") - 1).abs().dropna()
    ttt = (pd.to_numeric(pair.get("time_to_target_ratio"), errors="coerce") - 1).abs().dropna()
    med = [float(x.median()) if len(x) else None for x in (tv, ups, ttt)]
    scope = engine[engine.index("[") + 1:-1].replace("<=", " ≤ ")
    parts = []
    if med[0] is not None:
        parts.append(f"median TV {med[0]:.3f} (worst {float(tv.max()):.3f})")
    if med[1] is not None:
        parts.append(f"updates/s error {100 * med[1]:.0f} %")
    if med[2] is not None:
        parts.append(f"time-to-target error {100 * med[2]:.0f} %")
    ms = sorted({w for w in (_workers(k) for k in pair["config_key"]) if w})
    return (f"out of sample ({engine}, calibrated on {scope} only, predicting "
            f"m = {', '.join(map(str, ms))}): " + ", ".join(parts)
            + f" over {len(pair)} configuration{'s' if len(pair) != 1 else ''}", tuple(med))

