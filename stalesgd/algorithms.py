"""The algorithms of DESIGN §4, one registry entry each: every fact about an algorithm that
more than one part of the suite needs lives here and nowhere else.

An entry says what the algorithm is and what its staleness τ means, which experiment
options it reads, how many parameter-sized buffers it holds (the memory-footprint figure of
a run record), what the simulator adds to a worker's cycle per update (which is what a
calibration subtracts from a measured cycle), and which function implements it in each
engine (``"module:function"`` strings, so that this core module imports no engine).

Adding an algorithm: one :class:`Algorithm` entry in :data:`ALGORITHMS`, then one
implementation per engine named in its ``implementations`` (see the README, "How the code
is laid out").  Every list, formula and check that names algorithms reads this module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "CycleCosts",
    "UnknownAlgorithmError",
    "algorithm_names",
    "asynchronous_names",
    "get_algorithm",
]

#: the per-update costs the simulator knows: copying θ, applying an update to it, one atomic
#: compare-and-swap (or fetch-add)
COSTS = ("read", "update", "cas")


class UnknownAlgorithmError(ValueError, LookupError):
    """An algorithm name the registry does not hold (the message lists those it does)."""


@dataclass(frozen=True)
class CycleCosts:
    """What the simulator adds to a worker's gradient time per update: costs paid ``once``
    per update and costs paid per publish ``attempt`` (names from :data:`COSTS`).

    A calibration subtracts exactly this from each measured cycle (one ``t_read`` to the
    next of one worker), so that a calibrated simulation reproduces the measured cycle."""

    once: tuple[str, ...]
    per_attempt: tuple[str, ...] = ()

    def overhead(self, attempts: np.ndarray, costs: Mapping[str, float]) -> np.ndarray:
        """Seconds the simulator adds to each update with ``attempts`` publish tries."""
        once = sum(float(costs[c]) for c in self.once)
        per_attempt = sum(float(costs[c]) for c in self.per_attempt)
        return once + np.asarray(attempts, dtype=np.float64) * per_attempt


@dataclass(frozen=True)
class Algorithm:
    """One synchronisation scheme of asynchronous SGD and its facts (see the module doc)."""

    name: str
    title: str
    """What it is, in a few words (tables, help texts)."""
    tau: str
    """What τ = t1 − t0 means for it, in one sentence."""
    asynchronous: bool
    """Workers apply their own updates (elastic control can run it on m(t) workers)."""
    consistent: bool
    """Every read sees θ exactly as some version left it."""
    fixed_workers: int | None = None
    """The worker count it always runs with (``seq``: 1); None: any."""
    options: tuple[str, ...] = ()
    """Fields of the experiment's ``[algorithm]`` table it reads besides ``name``."""
    buffers_per_worker: int = 1
    """Parameter-sized buffers each worker of the real engine holds (copy, gradient)."""
    pooled: bool = False
    """Its shared vectors come from a pool whose high-water mark is measured (Leashed-SGD);
    otherwise one shared θ."""
    reads_in_place: bool = False
    """The gradient is computed on the shared θ without a copy: no read cost."""
    fused_apply: bool = False
    """Copy and apply are one loop (``dst = src − η g``): its update cost is the fused loop's
    minus the copy's."""
    publishes_whole_vector: bool = False
    """Every update publishes a new whole vector, so on a sparse problem it still copies all
    of θ (Leashed-SGD); the others copy at most the coordinates a minibatch reads."""
    cycle: CycleCosts = field(default_factory=lambda: CycleCosts(once=("read", "update")))
    """What the simulator adds to each update (and a calibration subtracts)."""
    calibratable: bool = True
    """Its real records time every worker's cycle, so they can calibrate the simulator."""
    implementations: Mapping[str, str] = field(default_factory=dict)
    """Engine name -> ``"module:function"`` that runs it there (``sim-ps``: the simulator's
    parameter-server topology)."""
    sparse_implementations: Mapping[str, str] = field(default_factory=dict)
    """Engine name -> the function that runs it on a sparse problem (updates that write
    only the coordinates a gradient touches), where the engine has one."""

    def param_bytes(self, theta_nbytes: int, workers: int,
                    pool_high_water: int | None = None) -> int | None:
        """Peak bytes of parameter-sized buffers of a real run with ``workers`` workers
        active at once: the shared θ (or, pooled, the pool's high-water mark of vectors in
        use), each worker's buffers, and the monitor's snapshot.  None for a pooled
        algorithm whose high-water mark is unknown (the simulator does not model the pool).
        """
        if self.pooled:
            if pool_high_water is None:
                return None
            shared = int(pool_high_water)
        else:
            shared = 1
        return int(theta_nbytes) * (shared + self.buffers_per_worker * int(workers) + 1)

    def sim_costs(self, n_params: int, read_per_param: float, update_per_param: float,
                  fused_per_param: float, cas: float,
                  coords: float | None = None) -> dict[str, float]:
        """Read, update and compare-and-swap seconds per update a simulation of it uses,
        from per-parameter costs measured on a machine (a calibration's).

        ``coords``: on a sparse problem, the coordinates an update touches (see
        :meth:`stalesgd.problems.registry.Problem.coords_per_update`); updates then apply
        only those, and copy only those too unless the algorithm publishes whole vectors
        (copy and apply are then separate loops, not fused)."""
        if coords is not None:
            copied = n_params if self.publishes_whole_vector else coords
            read = 0.0 if self.reads_in_place else read_per_param * float(copied)
            return {"read": read, "update": update_per_param * float(coords), "cas": float(cas)}
        read = 0.0 if self.reads_in_place else read_per_param * n_params
        update = update_per_param * n_params
        if self.fused_apply:
            update = max(fused_per_param * n_params - read, 0.0)
        return {"read": read, "update": update, "cas": float(cas)}

    def update_streams(self, workers: int) -> int:
        """The workers an online step-size rule counts its warm-up and window for: each
        worker of an asynchronous algorithm; one for ``seq`` and ``sync`` (a round's one
        update is logged as worker 0's)."""
        return int(workers) if self.asynchronous else 1

    def implementation(self, engine: str, sparse: bool = False) -> Callable[..., Any]:
        """The function that runs this algorithm in ``engine`` (imported on first use);
        with ``sparse``, the one for sparse problems."""
        table = self.sparse_implementations if sparse else self.implementations
        try:
            target = table[engine]
        except KeyError:
            kind = "sparse " if sparse else ""
            raise LookupError(f"algorithm {self.name!r} has no {kind}implementation in engine "
                              f"{engine!r}; it runs in: {', '.join(table) or 'none'}"
                              ) from None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


_REAL = "stalesgd.real.workers"
_REAL_SPARSE = "stalesgd.real.sparse_workers"
_SIM = "stalesgd.sim.model"
_PS = "stalesgd.real.ps.loops"
_SIM_PS = "stalesgd.sim.psmodel"

ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType({a.name: a for a in (
    Algorithm(
        name="seq", title="sequential SGD (one worker)",
        tau="always 0: one worker reads and applies in turn",
        asynchronous=False, consistent=True, fixed_workers=1, buffers_per_worker=2,
        implementations={"real": f"{_REAL}:lock_worker", "sim": f"{_SIM}:hogwild_process",
                         "ray": f"{_PS}:lock_loop", "sim-ps": f"{_SIM_PS}:lock_ps"},
        sparse_implementations={"real": f"{_REAL_SPARSE}:lock_sparse_worker"},
    ),
    Algorithm(
        name="sync", title="synchronous SGD (barrier, mean gradient)",
        tau="always 0: all workers read the same θ and one update per round applies their "
            "mean gradient",
        asynchronous=False, consistent=True, buffers_per_worker=1, calibratable=False,
        implementations={"real": f"{_REAL}:sync_worker", "sim": f"{_SIM}:sync_process",
                         "ray": f"{_PS}:sync_loop", "sim-ps": f"{_SIM_PS}:sync_ps"},
        sparse_implementations={"real": f"{_REAL_SPARSE}:sync_sparse_worker"},
    ),
    Algorithm(
        name="lock", title="AsyncSGD with one lock",
        tau="the updates applied by others between this worker's copy of θ under the lock "
            "and its apply under the lock",
        asynchronous=True, consistent=True, buffers_per_worker=2,
        implementations={"real": f"{_REAL}:lock_worker", "sim": f"{_SIM}:lock_process",
                         "ray": f"{_PS}:lock_loop", "sim-ps": f"{_SIM_PS}:lock_ps"},
        sparse_implementations={"real": f"{_REAL_SPARSE}:lock_sparse_worker"},
    ),
    Algorithm(
        name="hogwild", title="Hogwild! (no lock, θ read and written in place)",
        tau="the update indices claimed by others (atomic fetch-add) between this worker's "
            "atomic read of the version and its own claim; the θ it read may mix versions",
        asynchronous=True, consistent=False, buffers_per_worker=1, reads_in_place=True,
        cycle=CycleCosts(once=("update", "cas")),
        implementations={"real": f"{_REAL}:hogwild_worker", "sim": f"{_SIM}:hogwild_process",
                         "ray": f"{_PS}:hogwild_loop",
                         "sim-ps": f"{_SIM_PS}:hogwild_ps"},
        sparse_implementations={"real": f"{_REAL_SPARSE}:hogwild_sparse_worker"},
    ),
    Algorithm(
        name="leashed", title="Leashed-SGD (lock-free, consistent, pooled vectors)",
        tau="the versions published by others between the published vector this worker "
            "computed on and the one its successful compare-and-swap replaced",
        asynchronous=True, consistent=True, options=("persistence",), buffers_per_worker=1,
        pooled=True, fused_apply=True, publishes_whole_vector=True,
        cycle=CycleCosts(once=("cas",), per_attempt=("read", "update", "cas")),
        implementations={"real": f"{_REAL}:leashed_worker", "sim": f"{_SIM}:leashed_process",
                         "ray": f"{_PS}:leashed_loop",
                         "sim-ps": f"{_SIM_PS}:leashed_ps"},
        sparse_implementations={"real": f"{_REAL_SPARSE}:leashed_sparse_worker"},
    ),
)})


def algorithm_names() -> tuple[str, ...]:
    """Every algorithm's name, in the registry's order."""
    return tuple(ALGORITHMS)


def asynchronous_names() -> tuple[str, ...]:
    """The algorithms whose workers apply on their own (elastic control applies to them)."""
    return tuple(a.name for a in ALGORITHMS.values() if a.asynchronous)


def get_algorithm(name: str) -> Algorithm:
    """The registry entry ``name``; an :class:`UnknownAlgorithmError` names the known ones."""
    try:
        return ALGORITHMS[name]
    except (KeyError, TypeError):
        raise UnknownAlgorithmError(f"algorithm {name!r} is not known; allowed: "
                          f"{', '.join(ALGORITHMS)}") from None
