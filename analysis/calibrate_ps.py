"""Fit the simulator's parameter-server topology (``sim --topology ps``) to runs of the
distributed engine: ``stalesgd calibrate`` on a folder of ``ray`` runs.

What the records give per update (``real/ps/loops.py``): ``t_read`` (the worker asks for θ),
``t_pulled`` (θ has arrived), ``t_pushed`` (its gradient or new θ leaves) and the server's
``t_apply``.  The simulated worker (``sim/psmodel.py``) waits for its pull and, ``leashed``,
its publishes and, ``hogwild``, its claim; everything else it does is **compute**, so the
calibrated compute time of one update is the measured time the worker did not wait:

* ``lock``: next ``t_read`` − ``t_pulled`` (the gradient, and sending it: Ray serialises a
  call's arguments before it returns);
* ``leashed``: ``t_pushed`` − ``t_pulled`` minus the apply the simulator adds on the worker,
  from updates published at the first attempt;
* ``hogwild``: next ``t_read`` − ``t_pulled`` minus the claim's round trip (twice
  ``t_apply − t_pushed``): the gradient and sending every shard its slice.

The network and the servers: one latency per message, a cost per byte and a server time per
message (``sim.latency``, ``sim.per_byte``, ``sim.server_time``) cannot be read off the
records one by one, so they are **fitted by simulation**: the values whose timing-only
simulations of the configurations with the fewest workers (per algorithm) best reproduce
their measured updates/s (least squares of the log ratios, Nelder–Mead).  With more workers
on one machine, Ray's processes share the cores and every message and server step slows
down; each measured configuration gets a **network scale** κ (all three costs, and the servers'
copy and apply, × κ) fitted to its own updates/s, and a **jitter** (the coefficient of
variation of a random factor on every message's time, from :data:`JITTERS`): the one whose
simulation, κ refitted with it, comes closest to the measured PDF(τ) in total variation
(with the servers' round trips a few times a gradient, a network without jitter locks the
workers into one phase: Leashed-SGD's publishes then collide every time).  A simulation of a
measured configuration uses its κ and jitter; any other worker count takes κ from
:meth:`stalesgd.calibration.Calibration.network_scale` (on the straight line through the
algorithm's measured (m, κ)) and the jitter of the algorithm's nearest measured
configuration, and is a prediction.

The servers' copy and apply use the per-parameter costs of the same micro-measurement as a
thread-engine calibration.  The simulations give every worker a core of its own: the
measured compute times already hold the waits for a core (each worker is a process of its
own, sharing the machine with the servers and Ray's), and time-slicing them again in the
simulator would count those waits twice.  Runs with a slowdown or a network delay on purpose
are left out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CALIBRATED_ALGORITHMS", "fit_network", "ps_compute"]

#: the algorithms whose ``ray`` records calibrate the topology (``seq`` runs are ``lock``'s
#: loop; ``sync`` logs one row per round)
CALIBRATED_ALGORITHMS = ("lock", "leashed", "hogwild", "seq")
#: simulated updates per configuration and evaluation of the fit
FIT_UPDATES = 800
#: the fit's evaluations (Nelder–Mead) and the bisection steps of a network scale
FIT_EVALUATIONS = 60
SCALE_STEPS = 14
#: cycles left out at the start of every worker
WARMUP = 5
#: the network jitters (cv of a per-message factor) a configuration's fit chooses from, and
#: the simulated updates with which each is judged
JITTERS = (0.0, 0.15, 0.3, 0.5, 0.8)
JUDGE_UPDATES = 2000


def ps_compute(updates: Any, algorithm: str, workers: int, apply_cost: float
               ) -> list[np.ndarray]:
    """Per worker, the compute samples of one ``ray`` run's update rows (module doc)."""
    out = []
    for w in range(int(workers)):
        rows = updates[(updates["worker"] == w) & ~updates["dropped"].astype(bool)]
        rows = rows.sort_values("t_read")
        t_read, t_pulled, t_pushed, t_apply = (rows[c].to_numpy(np.float64) for c in (
            "t_read", "t_pulled", "t_pushed", "t_apply"))
        following = np.append(t_read[1:], np.nan)
        if algorithm == "leashed":
            first = rows["attempts"].to_numpy(np.int64) == 1
            c = np.where(first, t_pushed - t_pulled - apply_cost, np.nan)
        elif algorithm == "hogwild":
            c = following - t_pulled - 2.0 * (t_apply - t_pushed)
        else:
            c = following - t_pulled
        c = c[np.isfinite(c)][WARMUP:]
        out.append(np.maximum(c, 0.0))
    return out


def _simulate(config: dict[str, Any], costs: np.ndarray, theta_bytes: int,
              read: float, update: float, shards: int, jitter: float = 0.0,
              updates: int = FIT_UPDATES) -> tuple[float, np.ndarray]:
    """Simulated updates/s and applied updates' τ of ``config`` with network ``costs``
    (latency, per byte, server time, scale)."""
    from stalesgd.sim.engine import simulate_timing
    from stalesgd.sim.network import Network
    from stalesgd.sim.timing import Empirical

    latency, per_byte, serve, scale = (float(x) for x in costs)
    net = Network(latency=latency * scale, per_byte=per_byte * scale, serve=serve * scale,
                  theta_bytes=theta_bytes,
                  shards=shards if config["algorithm"] == "hogwild" else 1, jitter=jitter)
    compute = [Empirical(x) if x.size else Empirical(config["pooled"])
               for x in config["samples"]]
    res = simulate_timing(config["algorithm"], config["workers"], cores=config["workers"],
                          compute=compute, read=read * scale, update=update * scale,
                          updates=updates, seed=0, network=net)
    u = res.updates
    tau = np.asarray(u["tau"])[~np.asarray(u["dropped"])]
    return (res.n_updates / res.duration if res.duration > 0 else math.inf), tau


def _simulated_rate(config: dict[str, Any], costs: np.ndarray, theta_bytes: int,
                    read: float, update: float, shards: int, jitter: float = 0.0) -> float:
    return _simulate(config, costs, theta_bytes, read, update, shards, jitter)[0]


def _tv(a: np.ndarray, b: np.ndarray) -> float:
    """Total variation between the τ distributions of two samples."""
    n = int(max(a.max(initial=0), b.max(initial=0))) + 1
    pa = np.bincount(a, minlength=n) / max(a.size, 1)
    pb = np.bincount(b, minlength=n) / max(b.size, 1)
    return 0.5 * float(np.abs(pa - pb).sum())


def fit_network(configs: list[dict[str, Any]], theta_bytes: int, read: float,
                update: float, shards: int) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """The network costs (latency, per byte, server time), and per configuration its network
    scale κ, jitter and the τ distance they reach (module doc).  ``configs``: per measured
    configuration ``algorithm``, ``workers``, per-worker compute ``samples``, ``pooled``
    samples, ``updates_per_s`` and the applied updates' ``tau``."""
    from scipy.optimize import minimize

    fewest: dict[str, dict[str, Any]] = {}
    for c in configs:
        if c["algorithm"] not in fewest or c["workers"] < fewest[c["algorithm"]]["workers"]:
            fewest[c["algorithm"]] = c
    base = list(fewest.values())

    def misfit(log_costs: np.ndarray) -> float:
        costs = np.append(np.exp(log_costs), 1.0)
        return float(sum(math.log(_simulated_rate(c, costs, theta_bytes, read, update,
                                                  shards) / c["updates_per_s"]) ** 2
                         for c in base))

    start = np.log([5e-4, 2e-9, 1e-4])
    best = minimize(misfit, start, method="Nelder-Mead",
                    options={"maxfev": FIT_EVALUATIONS, "xatol": 0.05, "fatol": 1e-4})
    latency, per_byte, serve = (float(v) for v in np.exp(best.x))
    fits = []
    for c in configs:
        best_fit = None
        for jitter in JITTERS if c["workers"] > 1 else (0.0,):
            lo, hi = 0.05, 50.0
            for _ in range(SCALE_STEPS):
                mid = math.sqrt(lo * hi)
                rate = _simulated_rate(c, np.array([latency, per_byte, serve, mid]),
                                       theta_bytes, read, update, shards, jitter)
                lo, hi = (mid, hi) if rate > c["updates_per_s"] else (lo, mid)
            scale = math.sqrt(lo * hi)
            _, tau = _simulate(c, np.array([latency, per_byte, serve, scale]), theta_bytes,
                               read, update, shards, jitter, JUDGE_UPDATES)
            tv = _tv(tau, c["tau"])
            if best_fit is None or tv < best_fit["tau_tv"] - 1e-3:
                best_fit = {"network_scale": scale, "network_jitter": jitter, "tau_tv": tv}
        fits.append(best_fit)
    network = {"latency": latency, "per_byte": per_byte, "server_time": serve,
               "fit_error": math.sqrt(best.fun / max(len(base), 1)),
               "fitted_to": [f"{c['algorithm']} m={c['workers']}" for c in base]}
    return network, fits
