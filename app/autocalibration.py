"""``[sim] calibration = "auto"``: simulated runs calibrated from the same sweep's real runs.

:func:`order_for_calibration` puts such sim runs after the real runs they need (refusing a
sweep where none exists), and :class:`AutoCalibrations` fits, once per group of runs sharing
problem, batch and dtype, the simulator's timing model to the real runs already in the
results folder (:func:`stalesgd.analysis.calibrate.calibrate`), and points the sim runs at
the file it writes there (``calibration-<n>.json``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stalesgd.calibration import CalibrationError, load_calibration
from stalesgd.experiment import ExperimentError, RunSpec

__all__ = ["AUTO_CALIBRATION", "AutoCalibrations", "order_for_calibration"]

#: ``sim.calibration`` value asking for a calibration fitted to this experiment's own real runs
AUTO_CALIBRATION = "auto"


def needs_auto_calibration(spec: RunSpec) -> bool:
    """A sim run calibrated from the sweep's real runs."""
    return spec.engine == "sim" and spec.sim.calibration == AUTO_CALIBRATION


def calibration_group(spec: RunSpec) -> tuple[Any, ...]:
    """Real runs calibrate a sim run when they share problem (with its options), batch, dtype."""
    p = spec.problem
    return (p.name, p.batch, p.dtype, json.dumps(p.options, sort_keys=True, default=str))


def order_for_calibration(runs: list[RunSpec]) -> list[RunSpec]:
    """Auto-calibrated sim runs go last (stable otherwise), after the real runs they need; an
    auto-calibrated sim run without a real run of its group is an error before anything runs."""
    real_groups = {calibration_group(r) for r in runs if r.engine == "real"}
    for r in runs:
        if needs_auto_calibration(r) and calibration_group(r) not in real_groups:
            raise ExperimentError(
                "sim.calibration", AUTO_CALIBRATION,
                "a calibration file, or 'auto' with real runs of the same problem, batch and "
                f"dtype in the same experiment (run {r.run_id} has none)", "cannot be used")
    return sorted(runs, key=needs_auto_calibration)


def _fitted_from(path: Path, run_ids: list[str]) -> bool:
    """``path`` is a calibration fitted to exactly the real runs ``run_ids``."""
    try:
        cal = load_calibration(path)
    except CalibrationError:
        return False
    return sorted(cal.data.get("source", {}).get("run_ids", [])) == sorted(run_ids)


class AutoCalibrations:
    """Calibrates, once per group, the simulator from the real runs written to ``folder``.

    A resumed sweep finds the files an earlier session wrote and uses them again when they
    were fitted to the same real runs, so that every sim run of a folder has the same
    timing model."""

    def __init__(self, folder: Path, echo: Callable[[str], None]) -> None:
        self.folder = folder
        self.echo = echo
        self.files: dict[tuple[Any, ...], Path] = {}
        self.real: dict[tuple[Any, ...], list[str]] = {}

    def note(self, spec: RunSpec, summary: dict[str, Any]) -> None:
        """Count ``spec`` (with its runs row ``summary``) if it is a complete real run."""
        if spec.engine == "real" and not summary.get("interrupted"):
            self.real.setdefault(calibration_group(spec), []).append(spec.run_id)

    def resolve(self, spec: RunSpec) -> RunSpec:
        """``spec`` with its calibration file, fitting it first if needed."""
        if not needs_auto_calibration(spec):
            return spec
        group = calibration_group(spec)
        path = self.files.get(group)
        if path is None:
            ids = self.real.get(group, [])
            path = self.folder / f"calibration-{len(self.files) + 1}.json"
            if not _fitted_from(path, ids):
                self._fit(path, ids)
            self.files[group] = path
        return dataclasses.replace(spec, sim=dataclasses.replace(spec.sim,
                                                                 calibration=str(path)))

    def _fit(self, path: Path, ids: list[str]) -> None:
        from stalesgd.analysis.calibrate import calibrate

        try:
            cal = calibrate(self.folder, runs=ids)
        except CalibrationError as exc:
            raise ExperimentError("sim.calibration", AUTO_CALIBRATION,
                                  "real runs to calibrate from", f"failed: {exc}") from None
        cal.save(path)
        self.echo(f"calibrated the simulator from {len(ids)} real runs: {path.name}")
