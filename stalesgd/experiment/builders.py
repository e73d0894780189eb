"""Experiments not read from a file: the built-in default, and one run described by flags.

Both go through :func:`~stalesgd.experiment.load.parse_experiment`, the same checks as an
experiment file.
"""

from __future__ import annotations

import re
from typing import Any

from stalesgd.experiment.load import MAX_NAME, parse_experiment
from stalesgd.experiment.spec import Experiment

__all__ = ["default_experiment", "experiment_from_flags"]


def _default_name(engine: Any, problem: Any, algorithm: Any) -> str:
    """``ENGINE-PROBLEM-ALGORITHM`` with characters a name cannot hold replaced by ``_`` (a
    bad value is then reported under its own key, not under ``name``)."""
    text = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{engine}-{problem}-{algorithm}")
    return ("x" + text if not text[:1].isalnum() else text)[:MAX_NAME]


def default_experiment() -> Experiment:
    """The built-in experiment run by ``stalesgd run`` with no file (the main job).

    An MLP 200-128-10 on a synthetic 10-class set (no files needed; one update ≈ 0.1 ms, so
    a run of 2.5 s makes tens of thousands of updates and reaches the target loss 1.05 after
    about a second): ``lock``, ``hogwild`` and ``leashed`` × ``constant`` and ``tail`` × 1,
    2 and 4 workers, for real; then the same 18 configurations in the simulator with numeric
    replay, calibrated from all those real runs (in sample), and the 4-worker ones once more
    calibrated only from the runs of at most 2 workers (out of sample, shown as engine
    ``sim[m<=2]``).  Three to four minutes on 2 cores.
    """
    return parse_experiment({
        "name": "default",
        "engine": "real",
        "workers": 1,
        "seeds": [0],
        "problem": {"name": "mlp-synthetic", "batch": 16, "dtype": "float64",
                    "options": {"n_features": 200, "n_train": 100000, "separation": 3.0,
                                "hidden": [128]}},
        "algorithm": {"name": "lock"},
        "stepsize": {"rule": "constant", "lr": 0.002},
        "stop": {"seconds": 2.5, "target_loss": 1.05, "at_target": False},
        "eval": {"every_seconds": 0.1, "split": "test", "max_rows": 2000},
        "sim": {"calibration": "auto"},
        "sweep": {"engine": ["real", "sim"],
                  "algorithm.name": ["lock", "hogwild", "leashed"],
                  "stepsize.rule": ["constant", "tail"],
                  "workers": [1, 2, 4],
                  "sim.calibration_max_workers": [4, 2]},
        "exclude": [{"engine": "sim", "workers": 1, "sim.calibration_max_workers": 2},
                    {"engine": "sim", "workers": 2, "sim.calibration_max_workers": 2}],
    })


def experiment_from_flags(engine: str, *, problem: str, algorithm: str, workers: int,
                          stepsize: str = "constant", lr: float = 0.05, batch: int = 16,
                          dtype: str = "float64", sampling: str = "replacement",
                          updates: int | None = None,
                          seconds: float | str | None = None, target_loss: float | None = None,
                          seed: int = 0, persistence: int | str | None = None,
                          sim: dict[str, Any] | None = None, name: str | None = None,
                          problem_options: dict[str, Any] | None = None,
                          stepsize_options: dict[str, Any] | None = None,
                          controller: str | None = None,
                          controller_options: dict[str, Any] | None = None,
                          log_rows: str | None = None,
                          dist: dict[str, Any] | None = None,
                          slowdown: str | None = None,
                          ) -> Experiment:
    """The experiment described by ``stalesgd real``/``stalesgd sim`` flags.

    It goes through the same validation as an experiment file (one code path); a run without
    ``updates`` or ``seconds`` stops after 20000 updates.  ``controller`` names the elastic
    parallelism controller (default ``static``) and ``controller_options`` its options;
    ``log_rows`` which update rows the record keeps (``all``, ``none``, ``every:N``);
    ``dist`` the distributed engine's settings (``address``, ``shards``); ``slowdown`` the
    workers that compute slower on purpose (``"1=3"``, :mod:`stalesgd.slowdown`);
    ``sampling`` how workers draw minibatches (``replacement``, ``epochs``).
    """
    stop: dict[str, Any] = {}
    if updates is not None:
        stop["updates"] = updates
    if seconds is not None:
        stop["seconds"] = seconds
    if not stop:
        stop["updates"] = 20000
    if target_loss is not None:
        stop["target_loss"] = target_loss
    alg: dict[str, Any] = {"name": algorithm}
    if persistence is not None:
        alg["persistence"] = persistence
    raw: dict[str, Any] = {
        "name": name if name is not None else _default_name(engine, problem, algorithm),
        "engine": engine,
        "workers": workers,
        "seeds": [seed],
        "problem": {"name": problem, "batch": batch, "dtype": dtype,
                    "options": dict(problem_options or {})},
        "algorithm": alg,
        "stepsize": {"rule": stepsize, "lr": lr, "options": dict(stepsize_options or {})},
        "stop": stop,
    }
    if sim:
        raw["sim"] = {k: v for k, v in sim.items() if v is not None}
    if controller is not None or controller_options:
        raw["controller"] = {"name": controller or "static",
                             "options": dict(controller_options or {})}
    if log_rows is not None:
        raw["record"] = {"rows": log_rows}
    if slowdown is not None:
        raw["slowdown"] = slowdown
    if sampling != "replacement":  # (the default is left out, as in a file)
        raw["problem"]["sampling"] = sampling
    if dist:
        raw["dist"] = {k: v for k, v in dist.items() if v is not None}
    return parse_experiment(raw, source="command line")
