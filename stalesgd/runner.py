"""Running an experiment: every run through its engine, each finished run written at once.

:func:`run_experiment` expands the sweep, calls the registered engine for each run
(``fn(spec, progress, updates) -> RunRecord``, its update rows streamed into the results
folder while it runs), writes each record to the folder as soon as it finishes, and
survives Ctrl-C: the finished runs stay on disk, a partial record the engine hands back is
kept with ``interrupted = True``, and the folder is merged and readable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from stalesgd import engines
from stalesgd.experiment import Experiment, ExperimentError, RunSpec, expand, to_toml
from stalesgd.machine import machine_info
from stalesgd.records import ResultsFolder, RunRecord, summarize

# Sweep keys whose value already has a contract column in runs.parquet.
_POINT_COLUMNS = {"engine": "engine", "workers": "workers", "problem.name": "problem",
                  "problem.batch": "batch", "problem.dtype": "dtype", "algorithm.name": "algorithm",
                  "algorithm.persistence": "persistence", "stepsize.rule": "stepsize",
                  "stepsize.lr": "lr"}


class RunInterrupted(KeyboardInterrupt):
    """Raised by an engine on Ctrl-C to hand back the partial record of the run it was in."""

    def __init__(self, record: RunRecord | None = None) -> None:
        super().__init__("run interrupted")
        self.record = record


@dataclass
class SweepOutcome:
    """Where the results went, whether the sweep was interrupted, and one summary per run."""

    folder: Path
    interrupted: bool
    summaries: list[dict[str, Any]] = field(default_factory=list)
    planned: int = 0


def run_summary(spec: RunSpec, record: RunRecord) -> dict[str, Any]:
    """The runs-table row of one run: the spec's identity columns (they win over the engine's),
    the record's summary with derived values (:func:`stalesgd.records.summarize`), and extras:
    ``index``, ``dtype``, ``persistence``, ``final_loss`` and every other swept key."""
    s = summarize(record, spec.stop.target_loss)
    s.update(run_id=spec.run_id, engine=spec.engine, algorithm=spec.algorithm.name,
             problem=spec.problem.name, workers=spec.workers, stepsize=spec.stepsize.rule,
             lr=spec.stepsize.lr, batch=spec.problem.batch, seed=spec.seed)
    s.setdefault("index", spec.index)
    s.setdefault("dtype", spec.problem.dtype)
    s.setdefault("persistence", float(spec.algorithm.persistence))
    for key, value in spec.point.items():
        if key not in _POINT_COLUMNS:
            s.setdefault(key, value)
    return s


def _diverged_record(exc: BaseException) -> RunRecord:
    return RunRecord(summary={"diverged": True, "converged": False,
                              "error": f"{type(exc).__name__}: {exc}"})


#: ``sim.calibration`` value asking for a calibration fitted to this experiment's own real runs.
AUTO_CALIBRATION = "auto"


def _needs_auto_calibration(spec: RunSpec) -> bool:
    return spec.engine == "sim" and spec.sim.calibration == AUTO_CALIBRATION


def _calibration_group(spec: RunSpec) -> tuple[Any, ...]:
    """Real runs calibrate a sim run when they share problem (with its options), batch, dtype."""
    p = spec.problem
    return (p.name, p.batch, p.dtype, json.dumps(p.options, sort_keys=True, default=str))


def _order_for_calibration(runs: list[RunSpec]) -> list[RunSpec]:
    """Auto-calibrated sim runs go last (stable otherwise), after the real runs they need; an
    auto-calibrated sim run without a real run of its group is an error before anything runs."""
    real_groups = {_calibration_group(r) for r in runs if r.engine == "real"}
    for r in runs:
        if _needs_auto_calibration(r) and _calibration_group(r) not in real_groups:
            raise ExperimentError(
                "sim.calibration", AUTO_CALIBRATION,
                "a calibration file, or 'auto' with real runs of the same problem, batch and "
                f"dtype in the same experiment (run {r.run_id} has none)", "cannot be used")
    return sorted(runs, key=_needs_auto_calibration)


class _AutoCalibrations:
    """Fits, once per group, the simulator's timing model to the real runs already written to
    the results folder, and points auto-calibrated sim runs at the file
    (``calibration-<n>.json`` in the folder; :func:`stalesgd.analysis.calibrate.calibrate`)."""

    def __init__(self, folder: Path, echo: Callable[[str], None]) -> None:
        self.folder = folder
        self.echo = echo
        self.files: dict[tuple[Any, ...], Path] = {}
        self.real: dict[tuple[Any, ...], list[str]] = {}

    def note(self, spec: RunSpec, summary: dict[str, Any]) -> None:
        if spec.engine == "real" and not summary.get("interrupted"):
            self.real.setdefault(_calibration_group(spec), []).append(spec.run_id)

    def resolve(self, spec: RunSpec) -> RunSpec:
        if not _needs_auto_calibration(spec):
            return spec
        group = _calibration_group(spec)
        path = self.files.get(group)
        if path is None:
            from stalesgd.analysis.calibrate import CalibrationError, calibrate

            ids = self.real.get(group, [])
            try:
                cal = calibrate(self.folder, runs=ids)
            except CalibrationError as exc:
                raise ExperimentError("sim.calibration", AUTO_CALIBRATION,
                                      "real runs to calibrate from", f"failed: {exc}") from None
            path = self.folder / f"calibration-{len(self.files) + 1}.json"
            cal.save(path)
            self.files[group] = path
            self.echo(f"calibrated the simulator from {len(ids)} real runs: {path.name}")
        return dataclasses.replace(spec, sim=dataclasses.replace(spec.sim,
                                                                 calibration=str(path)))


def run_experiment(exp: Experiment, out: str | Path = "results", progress: bool = True,
                   echo: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run every run of ``exp`` and store them under ``<out>/<name>-<timestamp>/``.

    Raises :class:`stalesgd.engines.EngineNotAvailable` before creating any folder if an
    engine is missing, and :class:`~stalesgd.experiment.ExperimentError` if an engine cannot
    run one of the runs as given (each engine's ``validate``).  A ``FloatingPointError`` /
    ``OverflowError`` from an engine is recorded as a diverged run, not a crash.  On Ctrl-C
    the sweep stops, finished runs are kept, the folder is merged, and the outcome says
    ``interrupted``.
    """
    echo = echo or (lambda msg: print(msg, file=sys.stderr))
    runs = _order_for_calibration(expand(exp))
    fns = {name: engines.get_engine(name) for name in dict.fromkeys(r.engine for r in runs)}
    for spec in runs:
        fns[spec.engine].check(spec)
    folder = ResultsFolder.create(exp.name, out, config_toml=to_toml(exp), machine=machine_info())
    outcome = SweepOutcome(folder=folder.path, interrupted=False, planned=len(runs))
    bar = tqdm(total=len(runs), desc=exp.name, unit="run", disable=not progress, file=sys.stderr)
    auto = _AutoCalibrations(folder.path, echo)
    try:
        for spec in runs:
            spec = auto.resolve(spec)
            bar.set_postfix_str(f"{spec.run_id} {spec.algorithm.name} m={spec.workers}")
            try:
                log = folder.update_log(spec.run_id, spec.record.rows)
                record = fns[spec.engine].run(spec, progress, log)
            except KeyboardInterrupt as exc:
                outcome.interrupted = True
                partial = getattr(exc, "record", None)
                if isinstance(partial, RunRecord):
                    partial.summary["interrupted"] = True
                    summary = run_summary(spec, partial)
                    folder.write_run(summary, partial)
                    outcome.summaries.append(summary)
                break
            except (FloatingPointError, OverflowError) as exc:
                record = _diverged_record(exc)
            if not isinstance(record, RunRecord):
                raise TypeError(f"engine {spec.engine!r} returned {type(record).__name__}; "
                                "expected a stalesgd.records.RunRecord")
            summary = run_summary(spec, record)
            folder.write_run(summary, record)
            outcome.summaries.append(summary)
            auto.note(spec, summary)
            bar.update(1)
            if summary.get("interrupted"):  # the engine caught Ctrl-C itself
                outcome.interrupted = True
                break
    except KeyboardInterrupt:  # Ctrl-C outside the engine (writing, progress bar)
        outcome.interrupted = True
    finally:
        bar.close()
        folder.close()
    if outcome.interrupted:
        echo(f"interrupted: {len(outcome.summaries)} of {len(runs)} runs kept in {folder.path}")
    return outcome


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_summary(summaries: list[dict[str, Any]]) -> str:
    """A short plain-text table: per run, algorithm, step-size rule, workers, updates/s,
    final loss, time to target, and a flag for diverged or interrupted runs."""
    header = ("run", "engine", "algorithm", "step size", "workers", "seed", "updates/s",
              "final loss", "time to target (s)", "flag")
    rows = [header]
    for s in summaries:
        flag = "diverged" if s.get("diverged") else ("interrupted" if s.get("interrupted") else "")
        rows.append((str(s.get("run_id")), str(s.get("engine")), str(s.get("algorithm")),
                     str(s.get("stepsize")), str(s.get("workers")), str(s.get("seed")),
                     _fmt(s.get("updates_per_s"), ".0f"), _fmt(s.get("final_loss"), ".4g"),
                     _fmt(s.get("time_to_target"), ".3g"), flag))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 4 or i == len(header) - 1 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
