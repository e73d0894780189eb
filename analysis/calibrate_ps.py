"""Fit the simulator's parameter-server topology (``sim --topology ps``) to runs of the
distributed engine: ``stalesgd calibrate`` on a folder of ``ray`` runs.

What the records give per update (``real/ps/loops.py``): ``t_read`` (the worker asks for θ),
``t_pulled`` (θ has arrived), ``t_pushed`` (its gradient or new θ leaves) and the server's
``t_apply``.  The simulated worker (``sim/psmodel.py``) waits for its pull and, ``leashed``,
its publishes and, ``hogwild``, its claim, and serialises what it sends (the cost per byte,
fitted below); the time from θ's arrival to the send is **compute**:

* ``lock``: ``t_pushed`` − ``t_pulled`` (the gradient; sending it, which Ray does in the
  caller before the call returns, is the simulated worker's serialising of its bytes);
* ``leashed``: ``t_pushed`` − ``t_pulled`` minus the apply the simulator adds on the worker,
  from updates published at the first attempt;
* ``hogwild``: ``t_pushed`` − ``t_pulled`` (the gradient; the claim's round trip and
  sending every shard its slice follow).

The network and the servers: one latency per message, a cost per byte and a server time per
message (``sim.latency``, ``sim.per_byte``, ``sim.server_time``) cannot be read off the
records one by one, so they are **fitted by simulation**: the values whose timing-only
simulations of the configurations with the fewest workers (per algorithm) best reproduce
their measured updates/s and how each worker's cycle splits (:func:`row_timings`: the median
time from a read to its apply, and, where the worker waits for its apply, from the apply to
its next read), least squares of the log ratios, Nelder–Mead.  Rates alone do not separate
the latency from the cost per byte when every message carries θ (a fit from 1 and 2
workers then traded one for the other and predicted Leashed-SGD at 8 workers 1.8× too
fast); Leashed-SGD's apply → next read is one reply without θ, its read → apply three
messages and two copies of θ.

**One machine.**  A local Ray instance runs workers, servers and its own message handling on
the same cores, and that is what bounds a run with more workers: on 2 cores the measured
lock rate stays flat from two workers on while Leashed-SGD's falls.  So for runs of a local
cluster the simulated machine is shared (``Network.cores``): compute, every message's cost
and the servers' work run on ``cores`` cores by processor sharing, and the number of cores
is fitted too: the **effective cores** (a fraction allowed; Ray's other processes take the
rest) whose simulations of the configurations with more workers best reproduce their
updates/s.  Every configuration is simulated with the compute times of its algorithm's
fewest-workers configuration: the waits for a core that longer measured cycles hold are now
the simulator's to produce.  So a calibration from runs of 1 and 2 workers predicts 4 or 8.

Each measured configuration also gets a **jitter** (the coefficient of variation of the
random factors on every message's latency and serialising, from :data:`JITTERS`): the one
whose simulation comes closest to the measured PDF(τ) in total variation (with round
trips several times a gradient, a network without jitter locks the workers into one
phase: Leashed-SGD's publishes then collide every time).  Other worker counts take the
jitter of the algorithm's nearest measured configuration.

The servers' copy and apply use the per-parameter costs of the same micro-measurement as a
thread-engine calibration.  Runs with a slowdown or a network delay on purpose are left
out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stalesgd.staleness import distances, histogram

__all__ = ["CALIBRATED_ALGORITHMS", "fit_network", "ps_compute", "row_timings"]

#: the algorithms whose ``ray`` records calibrate the topology (``seq`` runs are ``lock``'s
#: loop; ``sync`` logs one row per round)
CALIBRATED_ALGORITHMS = ("lock", "leashed", "hogwild", "seq")
#: simulated updates per configuration and evaluation of the fit
FIT_UPDATES = 800
#: the grid the fit starts from (latency, cost per byte), its evaluations (Nelder–Mead)
#: and the effective core counts tried
START_LATENCIES = (1e-4, 1e-3, 1e-2)
START_PER_BYTE = (1e-10, 1e-9, 1e-8, 1e-7)
FIT_EVALUATIONS = 80
CORE_STEPS = 16
#: evaluations of the joint fit of costs and cores to every configuration
JOINT_EVALUATIONS = 80
#: cycles left out at the start of every worker
WARMUP = 5
#: the network jitters (cv of a per-message factor) a configuration's fit chooses from (its
#: PDF(τ) turns on it: lock with 2 workers, TV 0.12 / 0.11 / 0.03 / 0.12 at 0 / 0.3 / 0.5 /
#: 0.8 in one calibration; a grid of 0.15 steps missed such minima), and
#: the simulated updates with which each is judged
JITTERS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)
JUDGE_UPDATES = 2000


def ps_compute(updates: Any, algorithm: str, workers: int, apply_cost: float
               ) -> list[np.ndarray]:
    """Per worker, the compute samples of one ``ray`` run's update rows (module doc)."""
    out = []
    for w in range(int(workers)):
        rows = updates[(updates["worker"] == w) & ~updates["dropped"].astype(bool)]
        rows = rows.sort_values("t_read")
        t_pulled, t_pushed = (rows[c].to_numpy(np.float64) for c in ("t_pulled", "t_pushed"))
        c = t_pushed - t_pulled
        if algorithm == "leashed":
            first = rows["attempts"].to_numpy(np.int64) == 1
            c = np.where(first, c - apply_cost, np.nan)
        c = c[np.isfinite(c)][WARMUP:]
        out.append(np.maximum(c, 0.0))
    return out


def row_timings(worker: np.ndarray, t_read: np.ndarray, t_apply: np.ndarray,
                dropped: np.ndarray) -> tuple[float, float]:
    """Median read → apply of the applied updates, and median apply → next read of the same
    worker (NaN where there are too few): how a cycle splits between what the worker waits
    for and what follows.  The first :data:`WARMUP` updates of every worker are left out."""
    spans, gaps = [], []
    keep = ~np.asarray(dropped, dtype=bool)
    worker, t_read, t_apply = (np.asarray(a)[keep] for a in (worker, t_read, t_apply))
    for w in np.unique(worker):
        order = np.argsort(t_read[worker == w], kind="stable")
        r, a = t_read[worker == w][order], t_apply[worker == w][order]
        spans.append((a - r)[WARMUP:])
        gaps.append((r[1:] - a[:-1])[WARMUP:])
    span = np.concatenate(spans) if spans else np.zeros(0)
    gap = np.concatenate(gaps) if gaps else np.zeros(0)
    return (float(np.median(span)) if span.size else math.nan,
            float(np.median(gap)) if gap.size else math.nan)


def _log_misses(measured: dict[str, Any], rate: float, timings: tuple[float, float]) -> float:
    """Squared log ratios of simulated to measured updates/s and :func:`row_timings` (the
    apply → next read only where both are positive: a worker that waits for its apply)."""
    err = math.log(rate / measured["updates_per_s"]) ** 2
    span, gap = measured.get("row_timings", (math.nan, math.nan))
    if span > 0 and timings[0] > 0:
        err += math.log(timings[0] / span) ** 2
    if gap > 0 and timings[1] > 0:
        err += math.log(timings[1] / gap) ** 2
    return err


def _simulate(config: dict[str, Any], costs: np.ndarray, theta_bytes: int,
              read: float, update: float, shards: int, jitter: float = 0.0,
              updates: int = FIT_UPDATES) -> tuple[float, np.ndarray, tuple[float, float]]:
    """Simulated updates/s, applied updates' τ and :func:`row_timings` of ``config`` with
    network ``costs`` (latency, per byte, server time, the shared machine's cores or 0);
    every worker resamples ``config["compute"]``."""
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.network import Network
    from stalesgd.sim.timing import Empirical

    latency, per_byte, serve, cores = (float(x) for x in costs)
    net = Network(latency=latency, per_byte=per_byte, serve=serve, theta_bytes=theta_bytes,
                  shards=shards if config["algorithm"] == "hogwild" else 1, jitter=jitter,
                  cores=cores)
    res = simulate_timing(config["algorithm"], config["workers"], cores=config["workers"],
                          compute=Empirical(config["compute"]), read=read, update=update,
                          updates=updates, seed=0, network=net)
    if res.interrupted:  # Ctrl-C: the simulation kept its rows, the fit must stop
        raise KeyboardInterrupt
    u = res.updates
    dropped = np.asarray(u["dropped"], dtype=bool)
    tau = np.asarray(u["tau"])[~dropped]
    timings = row_timings(np.asarray(u["worker"]), np.asarray(u["t_read"], dtype=np.float64),
                          np.asarray(u["t_apply"], dtype=np.float64), dropped)
    return (res.n_updates / res.duration if res.duration > 0 else math.inf), tau, timings


def fit_network(configs: list[dict[str, Any]], theta_bytes: int, read: float,
                update: float, shards: int, machine_cores: float | None
                ) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The network costs (latency, per byte, server time), the shared machine's effective
    cores (``machine_cores`` None: no shared machine), and per configuration its jitter and
    the τ distance it reaches (module doc).  ``configs``: per measured configuration
    ``algorithm``, ``workers``, ``compute`` (its algorithm's fewest-workers compute samples),
    ``updates_per_s``, the applied updates' ``tau`` and, when known, their
    ``row_timings``."""
    from scipy.optimize import minimize

    fewest: dict[str, dict[str, Any]] = {}
    for c in configs:
        if c["algorithm"] not in fewest or c["workers"] < fewest[c["algorithm"]]["workers"]:
            fewest[c["algorithm"]] = c
    base = list(fewest.values())
    shared = 0.0 if machine_cores is None else float(machine_cores)

    def misfit(group: list[dict[str, Any]], costs: np.ndarray) -> float:
        total = 0.0
        for c in group:
            rate, _, timings = _simulate(c, costs, theta_bytes, read, update, shards)
            total += _log_misses(c, rate, timings)
        return total

    more = [c for c in configs if c["workers"] > fewest[c["algorithm"]]["workers"]]
    # start from the best of a coarse grid of latency × cost per byte (the two can lie
    # orders of magnitude from any one guess)
    starts = [np.log([lat, pb, 1e-4]) for lat in START_LATENCIES for pb in START_PER_BYTE]
    log_costs = min(starts, key=lambda x: misfit(base, np.append(np.exp(x), shared)))
    machine = shared
    grid = np.geomspace(0.25, shared, CORE_STEPS) if shared and more else None
    best = minimize(lambda x: misfit(base, np.append(np.exp(x), shared)), log_costs,
                    method="Nelder-Mead",
                    options={"maxfev": FIT_EVALUATIONS, "xatol": 0.05, "fatol": 1e-4})
    log_costs = best.x
    if grid is not None:
        # the effective cores: the best of a geometric grid, then costs and cores together,
        # fitted to every configuration (the runs with more workers, which move θ more
        # often per update, also tell the cost per byte from the cost per message)
        errors = [misfit(more, np.append(np.exp(log_costs), k)) for k in grid]
        start = np.append(log_costs, math.log(float(grid[int(np.argmin(errors))])))
        joint = minimize(lambda x: misfit(configs, np.exp(x)), start, method="Nelder-Mead",
                         options={"maxfev": JOINT_EVALUATIONS, "xatol": 0.03, "fatol": 1e-4})
        log_costs, shared = joint.x[:3], min(float(np.exp(joint.x[3])), machine)
        errors = [joint.fun / len(configs) * len(more)]
    latency, per_byte, serve = (float(v) for v in np.exp(log_costs))
    if grid is not None:
        cores_source = (f"fitted with the costs to the updates/s and cycle timings of "
                        f"{', '.join(_names(configs))} (log error "
                        f"{math.sqrt(joint.fun / len(configs)):.3g})")
    elif shared:
        cores_source = "the machine's (no run with more workers to fit them to)"
    else:
        cores_source = "none: not one machine (runs of a cluster)"
    costs = np.array([latency, per_byte, serve, shared])
    fits = []
    for c in configs:
        best_fit = None
        for jitter in JITTERS if c["workers"] > 1 else (0.0,):
            rate, tau, _ = _simulate(c, costs, theta_bytes, read, update, shards, jitter,
                                     JUDGE_UPDATES)
            tv = distances(histogram(tau), histogram(c["tau"])).tv
            if best_fit is None or tv < best_fit["tau_tv"] - 1e-3:
                best_fit = {"network_jitter": jitter, "tau_tv": tv,
                            "simulated_updates_per_s": rate}
        fits.append(best_fit)
    network = {"latency": latency, "per_byte": per_byte, "server_time": serve,
               "cores": shared, "cores_source": cores_source,
               "fit_error": math.sqrt(best.fun / max(len(base), 1)),
               "fitted_to": _names(base)}
    return network, fits


def _names(configs: list[dict[str, Any]]) -> list[str]:
    return [f"{c['algorithm']} m={c['workers']}" for c in configs]
