"""Staleness tables: PDF(τ) summaries and fitted laws per run and per configuration, and the
distances between engines for every configuration that more than one engine ran.

Staleness here is the τ of applied updates (dropped gradients are left out: they never touched
the parameters).  A configuration's histogram pools the runs of all its seeds for one engine.
Statistics, fits and distances are those of :mod:`stalesgd.staleness` (DESIGN §8); nothing is
re-implemented here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from stalesgd import staleness as st

from .load import Loaded

__all__ = [
    "StalenessTables",
    "config_histograms",
    "engine_distances",
    "fit_row",
    "run_histograms",
    "staleness_tables",
    "summary_row",
]


def run_histograms(loaded: Loaded) -> dict[str, np.ndarray]:
    """τ histogram (int64 counts) of the applied updates of each run, by ``uid``, from the
    exact counts of the ``staleness`` table (every update, whatever rows were kept); runs
    without updates are left out."""
    out: dict[str, np.ndarray] = {}
    for uid, grp in loaded.staleness.groupby("uid", sort=False):
        tau = grp["tau"].to_numpy(np.int64)
        count = grp["count"].to_numpy(np.int64)
        if count.sum() > 0:
            hist = np.zeros(int(tau.max()) + 1, dtype=np.int64)
            np.add.at(hist, tau, count)
            out[str(uid)] = hist
    return out


def _pool(hists: list[np.ndarray]) -> np.ndarray:
    size = max(h.size for h in hists)
    total = np.zeros(size, dtype=np.int64)
    for h in hists:
        total[: h.size] += h
    return total


def config_histograms(loaded: Loaded, per_run: dict[str, np.ndarray] | None = None
                      ) -> dict[tuple[str, str], np.ndarray]:
    """Pooled τ histogram per (config_key, engine), over all seeds of that configuration."""
    per_run = run_histograms(loaded) if per_run is None else per_run
    out: dict[tuple[str, str], np.ndarray] = {}
    for (key, engine), grp in loaded.runs.groupby(["config_key", "engine"], sort=True):
        hists = [per_run[u] for u in grp["uid"] if u in per_run]
        if hists:
            out[(str(key), str(engine))] = _pool(hists)
    return out


def summary_row(counts: np.ndarray) -> dict[str, float]:
    """PDF(τ) summary of one histogram: n, mean, variance, dispersion, p50/p90/p99, max."""
    s = st.summarize(counts, q=(0.5, 0.9, 0.99))
    return {"n": s.n, "mean": s.mean, "var": s.variance, "dispersion": s.dispersion,
            "p50": s.quantiles[0.5], "p90": s.quantiles[0.9], "p99": s.quantiles[0.99],
            "max": s.max}


def _fmt_params(fit: st.Fit) -> str:
    keys = [k for k in fit.params if not (fit.family == "cmp" and k == "log_lam")]
    return ", ".join(f"{k}={fit.params[k]:.4g}" for k in keys)


_FIT_CACHE: dict[tuple[bytes, tuple[str, ...]], tuple[dict[str, Any], st.Fit | None]] = {}
_FIT_CACHE_SIZE = 512


def _fit(counts: np.ndarray, families: Iterable[str] = st.FAMILIES
         ) -> tuple[dict[str, Any], st.Fit | None]:
    """Best fit and AIC columns of one histogram; memoised per process on (histogram,
    families), since a CMP fit of a geometric-like histogram can take a second or more."""
    fams = tuple(families)
    key = (np.trim_zeros(np.asarray(counts, dtype=np.int64), "b").tobytes(), fams)
    hit = _FIT_CACHE.get(key)
    if hit is None:
        hit = _fit_uncached(counts, fams)
        if len(_FIT_CACHE) >= _FIT_CACHE_SIZE:
            _FIT_CACHE.pop(next(iter(_FIT_CACHE)))
        _FIT_CACHE[key] = hit
    return dict(hit[0]), hit[1]


def _fit_uncached(counts: np.ndarray, families: tuple[str, ...]
                  ) -> tuple[dict[str, Any], st.Fit | None]:
    fits = st.fit_all(counts, families)
    row: dict[str, Any] = {}
    best: st.Fit | None
    try:
        best = st.best_fit(fits)
        row.update(best_law=best.family, law_params=_fmt_params(best), aic=best.aic)
    except ValueError:
        best = None
        row.update(best_law="", law_params="", aic=math.nan)
    for fam, f in fits.items():
        row[f"aic_{fam}"] = f.aic if f.applicable else math.nan
    return row, best


def fit_row(counts: np.ndarray, families: Iterable[str] = st.FAMILIES) -> dict[str, Any]:
    """The best law by AIC among ``families`` (default :data:`stalesgd.staleness.FAMILIES`)
    for one histogram: family, parameters (as text) and AIC, plus the AIC of every family
    (NaN if not applicable)."""
    return _fit(counts, families)[0]


def engine_distances(hists: dict[tuple[str, str], np.ndarray],
                     reference: str = "real") -> pd.DataFrame:
    """TV, KS (statistic, p-value) and W1 between engines, for every configuration that two or
    more engines ran: each other engine against ``reference`` (or, if the reference engine did
    not run it, against the first engine in sorted order), a simulation of parameter servers
    (``sim-ps…``) against engine ``ray`` where it ran.  Columns: config_key, engine_a
    (reference), engine_b, n_a, n_b, tv, ks, ks_pvalue, w1, and tv_floor: the TV two
    samples of sizes n_a and n_b of the reference's law show by chance
    (:func:`stalesgd.staleness.tv_sampling_floor`): a TV below it tells nothing, and one up to
    about twice it little."""
    by_key: dict[str, dict[str, np.ndarray]] = {}
    for (key, engine), h in hists.items():
        by_key.setdefault(key, {})[engine] = h
    rows = []
    for key in sorted(by_key):
        engines = by_key[key]
        if len(engines) < 2:
            continue
        first = reference if reference in engines else sorted(engines)[0]
        for other in sorted(e for e in engines if e != first):
            ref = "ray" if other.startswith("sim-ps") and "ray" in engines else first
            d = st.distances(engines[ref], engines[other])
            rows.append({"config_key": key, "engine_a": ref, "engine_b": other,
                         "n_a": int(engines[ref].sum()), "n_b": int(engines[other].sum()),
                         **d.as_dict(),
                         "tv_floor": st.tv_sampling_floor(
                             engines[ref], max(1, int(round(float(engines[other].sum())))),
                             n_self=max(1, int(round(float(engines[ref].sum())))))})
    cols = ["config_key", "engine_a", "engine_b", "n_a", "n_b", "tv", "ks", "ks_pvalue", "w1",
            "tv_floor"]
    return pd.DataFrame(rows, columns=cols)


@dataclass
class StalenessTables:
    """The staleness results: ``per_run`` (one row per run with updates), ``per_config`` (one
    row per configuration and engine), ``distances`` (engine pairs per configuration), and the
    histograms they were computed from (``run_hists`` by uid, ``config_hists`` by
    (config_key, engine)) and the best fitted law of each configuration histogram
    (``config_fits``, empty without fits)."""

    per_run: pd.DataFrame
    per_config: pd.DataFrame
    distances: pd.DataFrame
    run_hists: dict[str, np.ndarray]
    config_hists: dict[tuple[str, str], np.ndarray]
    config_fits: dict[tuple[str, str], st.Fit] = field(default_factory=dict)


def staleness_tables(loaded: Loaded, fits: bool = True, run_fits: bool = True,
                     reference: str = "real",
                     families: Iterable[str] = st.FAMILIES) -> StalenessTables:
    """Summaries and best fits per run and per configuration × engine, and engine distances.

    ``fits=False`` skips the maximum-likelihood fits; ``run_fits=False`` fits the pooled
    configuration histograms only; ``families`` limits the laws tried (a CMP fit of a
    geometric-like histogram can take a second or more; equal histograms are fitted once).
    """
    fams = tuple(families)
    bad = [f for f in fams if f not in st.FAMILIES]
    if bad or not fams:
        raise ValueError(f"families {list(fams)} not allowed; choose from "
                         f"{', '.join(st.FAMILIES)}")

    def fitted(h: np.ndarray) -> tuple[dict[str, Any], st.Fit | None]:
        return _fit(h, fams)

    run_hists = run_histograms(loaded)
    cfg_hists = config_histograms(loaded, run_hists)
    run_rows = []
    ident = loaded.runs.set_index("uid")
    for uid, h in run_hists.items():
        meta = ident.loc[uid] if uid in ident.index else None
        row: dict[str, Any] = {"uid": uid}
        if meta is not None:
            row.update(source=meta["source"], run_id=meta["run_id"],
                       config_key=meta["config_key"], engine=meta["engine"], seed=meta["seed"])
        row.update(summary_row(h))
        if fits and run_fits:
            row.update(fitted(h)[0])
        run_rows.append(row)
    per_run = pd.DataFrame(run_rows)
    cfg_rows = []
    cfg_fits: dict[tuple[str, str], st.Fit] = {}
    for (key, engine), h in sorted(cfg_hists.items()):
        grp = loaded.runs[(loaded.runs["config_key"] == key) & (loaded.runs["engine"] == engine)]
        row = {"config_key": key, "engine": engine, "runs": len(grp)}
        row.update(summary_row(h))
        if fits:
            fit_cols, best = fitted(h)
            row.update(fit_cols)
            if best is not None:
                cfg_fits[(key, engine)] = best
        cfg_rows.append(row)
    per_config = pd.DataFrame(cfg_rows)
    return StalenessTables(per_run=per_run, per_config=per_config,
                           distances=engine_distances(cfg_hists, reference),
                           run_hists=run_hists, config_hists=cfg_hists, config_fits=cfg_fits)
