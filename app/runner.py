"""Running an experiment: checked whole first, then every run through its engine, each
finished run written at once.

:func:`plan_sweep` makes every check before anything runs (so that ``--dry-run`` and a real
run agree): the experiment's own (:func:`stalesgd.experiment.expand`), each engine's
``validate``, and this machine's (:mod:`stalesgd.app.preflight`: the results root, data sets,
calibration files, memory).  :func:`run_sweep` then creates the results folder (or, resuming,
opens it and skips the runs already complete), calls the registered engine for each run
(``fn(spec, progress, updates) -> RunRecord``, its update rows streamed into the folder while
it runs), writes each record as soon as it finishes, and survives Ctrl-C: the finished runs
stay on disk, a partial record the engine hands back is kept with ``interrupted = True``, and
the folder is merged and readable.  A record that cannot be written (a full disk) ends the
sweep; the runs written before it stay readable.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stalesgd.app.autocalibration import AUTO_CALIBRATION, AutoCalibrations, order_for_calibration
from stalesgd.app.errors import OutOfMemory
from stalesgd.app.preflight import check_calibrations, check_data, check_memory, check_output_root
from stalesgd.app.resume import check_resumable, open_for_resume
from tqdm.auto import tqdm

from stalesgd import engines
from stalesgd.calibration import CalibrationError
from stalesgd.data import FILE_SET, DataError, file_identity
from stalesgd.experiment import Experiment, RunSpec, expand, to_toml
from stalesgd.machine import machine_info
from stalesgd.problems.plugins import PluginError
from stalesgd.problems.registry import is_plugin_problem
from stalesgd.records import RecordError, RecordWriteError, ResultsFolder, RunRecord, summarize
from stalesgd.validation import OptionError

#: errors of this package, which a run of a plug-in model passes on as they are
OURS = (OptionError, DataError, RecordError, RecordWriteError, PluginError, CalibrationError,
        engines.EngineNotAvailable)

__all__ = ["SweepOutcome", "SweepPlan", "plan_sweep", "run_experiment", "run_summary",
           "run_sweep"]

# Sweep keys whose value already has a contract column in runs.parquet.
_POINT_COLUMNS = {"engine": "engine", "workers": "workers", "problem.name": "problem",
                  "problem.batch": "batch", "problem.dtype": "dtype",
                  "problem.sampling": "sampling", "algorithm.name": "algorithm",
                  "algorithm.persistence": "persistence", "stepsize.rule": "stepsize",
                  "stepsize.lr": "lr"}


@dataclass
class SweepPlan:
    """A checked sweep, ready to run: its runs in the order they run (auto-calibrated sim
    runs last), their engines, the machine, where the results go, and, when resuming, the
    runs already complete there (run id -> runs row)."""

    experiment: Experiment
    runs: list[RunSpec]
    engines: dict[str, engines.Engine]
    machine: dict[str, Any]
    out: Path
    resume: Path | None = None
    done: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SweepOutcome:
    """Where the results went, whether the sweep was interrupted, one summary per run run now
    (``specs`` maps their run ids to their specs), how many runs were planned and how many
    were already complete, and the error that stopped writing (a full disk), if any."""

    folder: Path
    interrupted: bool
    summaries: list[dict[str, Any]] = field(default_factory=list)
    planned: int = 0
    skipped: int = 0
    specs: dict[str, RunSpec] = field(default_factory=dict)
    write_error: RecordWriteError | None = None


def run_summary(spec: RunSpec, record: RunRecord) -> dict[str, Any]:
    """The runs-table row of one run: the spec's identity columns (they win over the engine's),
    the record's summary with derived values (:func:`stalesgd.records.summarize`), and extras:
    ``index``, ``dtype``, ``persistence``, ``final_loss``, every other swept key, and for
    the data set ``file`` the path and SHA-256 of the file."""
    s = summarize(record, spec.stop.target_loss)
    s.update(run_id=spec.run_id, engine=spec.engine, algorithm=spec.algorithm.name,
             problem=spec.problem.name, workers=spec.workers, stepsize=spec.stepsize.rule,
             lr=spec.stepsize.lr, batch=spec.problem.batch, seed=spec.seed)
    s.setdefault("index", spec.index)
    s.setdefault("dtype", spec.problem.dtype)
    s.setdefault("persistence", float(spec.algorithm.persistence))
    if spec.problem.data == FILE_SET:
        s["data_file"], s["data_sha256"] = file_identity(spec.problem.options["file"])
    for key, value in spec.point.items():
        if key not in _POINT_COLUMNS:
            s.setdefault(key, value)
    return s


def _diverged_record(exc: BaseException) -> RunRecord:
    return RunRecord(summary={"diverged": True, "converged": False,
                              "error": f"{type(exc).__name__}: {exc}"})


def plan_sweep(exp: Experiment, out: str | Path = "results",
               resume: str | Path | None = None, out_key: str = "out",
               resume_key: str = "resume") -> SweepPlan:
    """Check everything a sweep of ``exp`` needs before it starts; writes nothing.

    Raises an :class:`~stalesgd.validation.OptionError` (an
    :class:`~stalesgd.experiment.ExperimentError`, or one naming ``out_key`` or
    ``resume_key``), a :class:`~stalesgd.data.DataError`, or
    :class:`~stalesgd.engines.EngineNotAvailable`.
    """
    runs = order_for_calibration(expand(exp))
    fns = {name: engines.get_engine(name) for name in dict.fromkeys(r.engine for r in runs)}
    for spec in runs:
        fns[spec.engine].check(spec)
    machine = machine_info()
    done: dict[str, dict[str, Any]] = {}
    if resume is None:
        check_output_root(out, exp.name, out_key)
    else:
        done = check_resumable(resume, exp, runs, resume_key)
    todo = [spec for spec in runs if spec.run_id not in done]
    check_calibrations(todo, skip=AUTO_CALIBRATION)
    check_memory(todo, machine.get("memory_bytes"))
    check_data(todo)
    return SweepPlan(exp, runs, fns, machine, Path(out),
                     None if resume is None else Path(resume), done)


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist, innermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _remove(folder: Path, made: list[Path]) -> None:
    """Remove ``folder`` and the empty folders ``made`` to hold it."""
    shutil.rmtree(folder, ignore_errors=True)
    for path in made:
        try:
            path.rmdir()
        except OSError:
            break


def _create_folder(plan: SweepPlan, out_key: str) -> ResultsFolder:
    exp = plan.experiment
    try:
        return ResultsFolder.create(exp.name, plan.out, config_toml=to_toml(exp),
                                    machine=plan.machine)
    except OSError as exc:  # the root changed since it was checked
        raise OptionError(out_key, str(plan.out), "a folder where results can be written",
                          f"cannot take a results folder ({exc})") from None


def run_sweep(plan: SweepPlan, progress: bool = True,
              echo: Callable[[str], None] | None = None, out_key: str = "out") -> SweepOutcome:
    """Run the runs of ``plan`` not yet complete and store them (see the module docstring).

    A ``FloatingPointError`` / ``OverflowError`` from an engine is recorded as a diverged
    run, not a crash.  On Ctrl-C the sweep stops, finished runs are kept, the folder is
    merged, and the outcome says ``interrupted``; a record that cannot be written stops the
    sweep with ``write_error`` set.  Any other error propagates; a new folder that holds no
    run then is removed, else the error carries ``kept_in`` = (folder, runs kept, planned).
    """
    echo = echo or (lambda msg: print(msg, file=sys.stderr))
    exp, runs = plan.experiment, plan.runs
    made = _missing_folders(plan.out.absolute()) if plan.resume is None else []
    if plan.resume is None:
        folder = _create_folder(plan, out_key)
    else:
        folder = open_for_resume(plan.resume, plan.done)
    outcome = SweepOutcome(folder=folder.path, interrupted=False, planned=len(runs),
                           skipped=len(plan.done))
    todo = [spec for spec in runs if spec.run_id not in plan.done]
    bar = tqdm(total=len(runs), initial=len(plan.done), desc=exp.name, unit="run",
               disable=not progress, file=sys.stderr)
    auto = AutoCalibrations(folder.path, echo)
    for spec in runs:
        if spec.run_id in plan.done:
            auto.note(spec, plan.done[spec.run_id])
    written = empty = False
    try:
        for spec in todo:
            spec = auto.resolve(spec)
            bar.set_postfix_str(f"{spec.run_id} {spec.algorithm.name} m={spec.workers}")
            try:
                log = folder.update_log(spec.run_id, spec.record.rows)
                record = plan.engines[spec.engine].run(spec, progress, log)
            except KeyboardInterrupt as exc:
                outcome.interrupted = True
                partial = getattr(exc, "record", None)
                if isinstance(partial, RunRecord):
                    partial.summary["interrupted"] = True
                    _keep(folder, outcome, spec, partial)
                    written = True
                break
            except (FloatingPointError, OverflowError) as exc:
                record = _diverged_record(exc)
            except MemoryError as exc:
                raise OutOfMemory(spec, exc, written or bool(plan.done)) from None
            except Exception as exc:
                if not is_plugin_problem(spec.problem.name) or isinstance(exc, OURS):
                    raise
                raise _plugin_failed(spec, exc, written) from None
            if not isinstance(record, RunRecord):
                raise TypeError(f"engine {spec.engine!r} returned {type(record).__name__}; "
                                "expected a stalesgd.records.RunRecord")
            summary = _keep(folder, outcome, spec, record)
            written = True
            auto.note(spec, summary)
            bar.update(1)
            if summary.get("interrupted"):  # the engine caught Ctrl-C itself
                outcome.interrupted = True
                break
    except KeyboardInterrupt:  # Ctrl-C outside the engine (writing, progress bar)
        outcome.interrupted = True
    except RecordWriteError as exc:
        outcome.write_error = exc
    except BaseException as exc:
        empty = plan.resume is None and not written  # nothing ran: leave no folder behind
        if not empty:  # (the caller can say what is kept and how to go on)
            exc.kept_in = (folder.path, len(outcome.summaries) + outcome.skipped, len(runs))
        raise
    finally:
        bar.close()
        # nothing ran, or Ctrl-C came before the first run was kept: leave no folder behind
        empty = empty or (outcome.interrupted and plan.resume is None and not written)
        if empty:
            _remove(folder.path, made)
        else:
            _close(folder, outcome)
    if outcome.interrupted and empty:
        echo("interrupted before any run was kept: no results folder written")
    elif outcome.interrupted:
        echo(f"interrupted: {len(outcome.summaries) + outcome.skipped} of {len(runs)} runs "
             f"kept in {folder.path}")
    return outcome


def _plugin_failed(spec: RunSpec, exc: Exception, kept: bool) -> PluginError:
    """The error that ends a sweep when a plug-in model's code raised during a run (its
    kernels, called from an engine's loop or evaluation): one line naming the run, the
    model and the exception, not a traceback of the engine."""
    text = " ".join(str(exc).split())[:400]
    return PluginError(f"run {spec.run_id} ({spec.problem.name}, {spec.engine}): the plug-in "
                       f"model's code raised {type(exc).__name__}: {text}; its kernels must "
                       f"not raise during a run (the sweep stopped"
                       + ("; the runs before it are kept)" if kept else ")"))


def _keep(folder: ResultsFolder, outcome: SweepOutcome, spec: RunSpec,
          record: RunRecord) -> dict[str, Any]:
    """Write one run's record and note its summary in ``outcome``."""
    summary = run_summary(spec, record)
    folder.write_run(summary, record)
    outcome.summaries.append(summary)
    outcome.specs[spec.run_id] = spec
    return summary


def _close(folder: ResultsFolder, outcome: SweepOutcome) -> None:
    """Merge the folder's parts; if that cannot be written either, the parts stay (they are
    read back as they are) and the first write error is what the outcome reports."""
    try:
        folder.close()
    except RecordWriteError as exc:
        if outcome.write_error is None:
            outcome.write_error = exc


def run_experiment(exp: Experiment, out: str | Path = "results", progress: bool = True,
                   echo: Callable[[str], None] | None = None,
                   resume: str | Path | None = None) -> SweepOutcome:
    """Check (:func:`plan_sweep`) and run (:func:`run_sweep`) every run of ``exp``, stored
    under ``<out>/<name>-<timestamp>/``, or added to the results folder ``resume`` of an
    earlier, unfinished sweep of the same experiment.

    Raises before creating any folder what :func:`plan_sweep` raises.
    """
    return run_sweep(plan_sweep(exp, out, resume), progress, echo)

