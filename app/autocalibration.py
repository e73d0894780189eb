"""``[sim] calibration = "auto"``: simulated runs calibrated from the same sweep's real runs
(of the thread engine; of the distributed engine for a simulation with ``sim.topology =
"ps"``).

:func:`order_for_calibration` puts such sim runs after the real runs they need (refusing a
sweep where none exists), and :class:`AutoCalibrations` fits, once per group of runs sharing
problem, batch and dtype, the simulator's timing model to the real runs already in the
results folder (:func:`stalesgd.analysis.calibrate.calibrate`), and points the sim runs at
the file it writes there (``calibration-<n>.json``).  With ``[sim] calibration_max_workers =
N`` the fit uses only the real runs of at most N workers, in a file of its own: the sim runs
of more workers are then out-of-sample predictions of runs the same folder also measured.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stalesgd.calibration import CalibrationError, load_calibration
from stalesgd.experiment import ExperimentError, RunSpec
from stalesgd.units import adds_delay

__all__ = ["AUTO_CALIBRATION", "AutoCalibrations", "order_for_calibration"]

#: ``sim.calibration`` value asking for a calibration fitted to this experiment's own real runs
AUTO_CALIBRATION = "auto"


def needs_auto_calibration(spec: RunSpec) -> bool:
    """A sim run calibrated from the sweep's real runs."""
    return spec.engine == "sim" and spec.sim.calibration == AUTO_CALIBRATION


def source_engine(spec: RunSpec) -> str:
    """The engine whose runs calibrate the sim run ``spec``: ``ray`` for the parameter-server
    topology, else ``real``."""
    return "ray" if spec.sim.topology == "ps" else "real"


def calibration_group(spec: RunSpec, engine: str | None = None) -> tuple[Any, ...]:
    """Runs of ``engine`` (default: the one that calibrates ``spec``, or ``spec``'s own for a
    real run) calibrate a sim run when they share problem (with its options), batch, dtype."""
    p = spec.problem
    if engine is None:
        engine = source_engine(spec) if spec.engine == "sim" else spec.engine
    return (engine, p.name, p.batch, p.dtype,
            json.dumps(p.options, sort_keys=True, default=str))


def order_for_calibration(runs: list[RunSpec]) -> list[RunSpec]:
    """Auto-calibrated sim runs go last (stable otherwise), after the real runs they need; an
    auto-calibrated sim run without a real run of its group (of at most
    ``sim.calibration_max_workers`` workers, when set, and without a slowdown) is an error
    before anything runs."""
    real_workers: dict[tuple[Any, ...], int] = {}
    slowed: set[tuple[Any, ...]] = set()
    for r in runs:
        if r.engine not in ("real", "ray"):
            continue
        if r.slowdown is not None or adds_delay(r.dist.net_delay):  # (calibrate leaves
            slowed.add(calibration_group(r))  # them out)
        else:
            g = calibration_group(r)
            real_workers[g] = min(real_workers.get(g, r.workers), r.workers)
    for r in runs:
        if not needs_auto_calibration(r):
            continue
        fewest = real_workers.get(calibration_group(r))
        bound = r.sim.calibration_max_workers
        engine = source_engine(r)
        if fewest is None and calibration_group(r) in slowed:
            raise ExperimentError(
                "sim.calibration", AUTO_CALIBRATION,
                f"'auto' with {engine} runs without a slowdown or network delay of the same "
                f"problem, batch and dtype (run {r.run_id}'s {engine} runs all slow workers or "
                "messages down on purpose, which a calibration leaves out; add slowdown = \"\" "
                "to the sweep)", "cannot be used")
        if fewest is None:
            raise ExperimentError(
                "sim.calibration", AUTO_CALIBRATION,
                f"a calibration file, or 'auto' with {engine} runs of the same problem, batch "
                f"and dtype in the same experiment (run {r.run_id} has none"
                + (": a simulation with sim.topology = 'ps' calibrates from engine ray"
                   if engine == "ray" else "") + ")", "cannot be used")
        if bound is not None and fewest > bound:
            raise ExperimentError(
                "sim.calibration_max_workers", bound,
                f"at least {fewest}, the fewest workers of a real run of the same problem, "
                "batch and dtype", f"leaves sim run {r.run_id} no real run to calibrate from")
    return sorted(runs, key=needs_auto_calibration)


def _fitted_from(path: Path, run_ids: list[str], bound: int | None) -> bool:
    """``path`` is a calibration fitted to exactly the real runs ``run_ids`` (restricted to at
    most ``bound`` workers)."""
    try:
        cal = load_calibration(path)
    except CalibrationError:
        return False
    return (sorted(cal.data.get("source", {}).get("run_ids", [])) == sorted(run_ids)
            and cal.max_workers == bound)


class AutoCalibrations:
    """Calibrates, once per group, the simulator from the real runs written to ``folder``.

    A resumed sweep finds the files an earlier session wrote and uses them again when they
    were fitted to the same real runs, so that every sim run of a folder has the same
    timing model."""

    def __init__(self, folder: Path, echo: Callable[[str], None]) -> None:
        self.folder = folder
        self.echo = echo
        self.files: dict[tuple[Any, ...], Path] = {}
        self.real: dict[tuple[Any, ...], list[tuple[str, int]]] = {}

    def note(self, spec: RunSpec, summary: dict[str, Any]) -> None:
        """Count ``spec`` (with its runs row ``summary``) if it is a complete real run."""
        if spec.engine in ("real", "ray") and not summary.get("interrupted"):
            self.real.setdefault(calibration_group(spec), []).append(
                (spec.run_id, spec.workers))

    def resolve(self, spec: RunSpec) -> RunSpec:
        """``spec`` with its calibration file, fitting it first if needed."""
        if not needs_auto_calibration(spec):
            return spec
        bound = spec.sim.calibration_max_workers
        key = (calibration_group(spec), bound)
        path = self.files.get(key)
        if path is None:
            ids = [rid for rid, m in self.real.get(key[0], []) if bound is None or m <= bound]
            path = self.folder / f"calibration-{len(self.files) + 1}.json"
            if not _fitted_from(path, ids, bound):
                self._fit(path, ids, bound)
            self.files[key] = path
        return dataclasses.replace(spec, sim=dataclasses.replace(spec.sim,
                                                                 calibration=str(path)))

    def _fit(self, path: Path, ids: list[str], bound: int | None) -> None:
        from stalesgd.analysis.calibrate import calibrate

        try:
            cal = calibrate(self.folder, runs=ids, max_workers=bound)
        except CalibrationError as exc:
            raise ExperimentError("sim.calibration", AUTO_CALIBRATION,
                                  "real runs to calibrate from", f"failed: {exc}") from None
        cal.save(path)
        which = "" if bound is None else f" with at most {bound} worker{'s' * (bound != 1)}"
        kind = "ray runs (parameter servers)" if cal.topology == "ps" else "real runs"
        shaky = sorted(cal.data["source"].get("disturbed_runs") or {})
        note = (f" (not a steady machine in run{'s' * (len(shaky) != 1)} {', '.join(shaky)}: "
                "see `stalesgd calibrate` or the report's flags)" if shaky else "")
        self.echo(f"calibrated the simulator from {len(ids)} {kind}{which}: {path.name}{note}")
