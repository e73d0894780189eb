"""The ``stalesgd`` command line (DESIGN §3).

``run`` runs an experiment file (or the built-in default), ``--resume`` continues one in its
results folder; ``real``, ``sim`` and ``dist`` (engine ``ray``) describe one run with flags
and go through the same experiment checks and runner; ``compare`` and ``report`` delegate to
:mod:`stalesgd.analysis`, ``calibrate`` to :mod:`stalesgd.analysis.calibrate`, and ``data``
to :mod:`stalesgd.data.cli`.

Every error a user can cause is checked before any work starts and ends in one message and
exit code 2 (:data:`EXIT_USAGE`); results that cannot be written (a full disk) or a run that
runs out of memory end in exit code 1 (:data:`EXIT_FAILURE`) with the runs written before
kept; Ctrl-C in 130.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from stalesgd import __version__

#: the engine each one-run command runs on
ENGINE_OF_COMMAND = {"real": "real", "sim": "sim", "dist": "ray"}

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _err(msg: str) -> None:
    print(f"stalesgd: {msg}", file=sys.stderr)


def _flag_value(convert: Callable[[str], Any], allowed: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``convert(text)``, or an error saying the value is not allowed
    and what is (the parser words it as the range checks do)."""
    def value(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; allowed: "
                                             f"{allowed}") from None
    return value


_whole_number = _flag_value(int, "a whole number")
_number = _flag_value(float, "a number, e.g. 0.05 or 1e-3")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, as every other ``stalesgd`` error:
    what is wrong and where to read more (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        # "argument --workers: 'abc' is not allowed…" -> "--workers 'abc' is not allowed…", as
        # the range checks say it
        message = re.sub(r"^argument (--?[\w-]+): (?=')", r"\1 ", message)
        _err(f"{message} (`{self.prog} --help` says more)")
        sys.exit(EXIT_USAGE)


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    """The parameter servers' flags (``dist``, and ``sim --topology ps``)."""
    p.add_argument("--shards", type=_whole_number, default=None,
                   help="hogwild: server shards θ is split over (default: 2)")
    p.add_argument("--net-delay", default=None, metavar="DIST",
                   help="an added delay per message between workers and servers, e.g. "
                        "exp:2ms, det:500us, gamma:1ms:0.5 (default: none)")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", required=True,
                   help="MODEL-DATA, e.g. logreg-synthetic, mlp-mnist or logreg-file (with "
                        "--data-file); MODEL may be a plug-in model")
    p.add_argument("--algorithm", required=True, help="seq | sync | lock | hogwild | leashed")
    p.add_argument("--workers", required=True, type=_whole_number, help="number of workers m")
    p.add_argument("--stepsize", default="constant",
                   help="constant | inverse | exponential | tail | tail-original | model | "
                        "delay-adaptive (default: constant)")
    p.add_argument("--lr", type=_number, default=0.05, help="base step size η0 (default: 0.05)")
    p.add_argument("--batch", type=_whole_number, default=16, help="minibatch size (default: 16)")
    p.add_argument("--dtype", default="float64", help="float32 | float64 (default: float64)")
    p.add_argument("--sampling", default="replacement",
                   help="how each worker draws its minibatches: replacement (rows uniformly "
                        "with replacement) | epochs (a reshuffled permutation of the rows every "
                        "epoch) (default: replacement)")
    p.add_argument("--persistence", default=None,
                   help="leashed: publish retries before dropping, 0..inf (default: inf)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                   help="problem option, value in TOML syntax, e.g. -o 'hidden=[128, 128]' "
                        "or -o n_train=5000 (repeatable)")
    p.add_argument("--stepsize-option", action="append", default=[], metavar="KEY=VALUE",
                   help="step-size rule option, e.g. --stepsize-option refresh_every=1000")
    p.add_argument("--controller", default=None,
                   help="elastic parallelism controller: static | window | ternary | model | "
                        "schedule (default: static, all workers; see stalesgd.elastic)")
    p.add_argument("--controller-option", action="append", default=[], metavar="KEY=VALUE",
                   help="controller option, value in TOML syntax, e.g. --controller-option "
                        "probe=2000 or --controller-option 'steps=[[0, 4], [5000, 1]]'")
    p.add_argument("--data-dir", default=None,
                   help="look for data sets here first (default: $STALESGD_DATA, user cache, "
                        "/usr/share/datasets)")
    p.add_argument("--data-file", default=None, metavar="PATH",
                   help="the data of a MODEL-file problem: a .npz (X, y, optional X_test, "
                        "y_test), .csv (label in the last column) or LIBSVM/svmlight file "
                        "(.svm, .svmlight, .libsvm; text also .gz or .bz2; other names: "
                        "-o format=svmlight)")
    p.add_argument("--data-sha256", default=None, metavar="HEX",
                   help="refuse the data file unless its SHA-256 is this")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--updates", type=_whole_number, help="stop after N updates (default: 20000)")
    stop.add_argument("--seconds", help="stop after T seconds (number or e.g. '1.5s')")
    p.add_argument("--target-loss", type=_number, default=None,
                   help="stop when the evaluated loss reaches this value")
    p.add_argument("--log-rows", default=None, metavar="all|none|every:N",
                   help="update rows to keep in updates.parquet (default: all); the exact "
                        "τ histogram counts every update either way")
    p.add_argument("--seed", type=_whole_number, default=0, help="seed (default: 0)")
    p.add_argument("--slowdown", action="append", default=None, metavar="W=F",
                   help="worker W computes F times slower (F in 1..1000; real engines spin "
                        "(F-1)x each gradient's time, the simulator scales compute time); "
                        "repeatable, e.g. --slowdown 1=3 --slowdown 2=1.5")
    p.add_argument("--name", default=None, help="experiment name (default: ENGINE-PROBLEM-ALG)")
    p.add_argument("--out", default="results", help="results root (default: results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="check the run as a real one would be checked, and show it without "
                        "running it")


def _add_report_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", type=_number, default=None,
                   help="target loss for time/updates to target (default: each run's own)")
    p.add_argument("--log-y", choices=("auto", "on", "off"), default="auto",
                   help="log scale for the PDF(τ) figures (default: auto)")
    p.add_argument("--no-run-fits", action="store_true",
                   help="fit laws to each configuration's pooled τ only, not to every run")
    p.add_argument("--families", default=None,
                   help="comma-separated laws to fit: geometric,poisson,cmp,negbin (default: "
                        "all; cmp is the slow one)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of DESIGN §3."""
    parser = _Parser(
        prog="stalesgd",
        description="Study asynchronous parallel SGD: staleness, step-size rules, lock-free "
                    "synchronisation, simulated and real.",
        epilog="Exit codes: 0 done, 1 results could not be written (or, for `data`, a data "
               "set is missing, fails its checks or cannot be downloaded), 2 bad input "
               "(nothing was run), 130 interrupted (finished runs kept).")
    parser.add_argument("--version", action="version", version=f"stalesgd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run an experiment file (the built-in default without one)",
                       description="Run every run of an experiment (sweeps × seeds) and store "
                                   "them under OUT/<experiment>-<timestamp>/, or continue an "
                                   "unfinished sweep in its folder with --resume.")
    p.add_argument("experiment", nargs="?", help="experiment TOML file (default: built-in)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="results root (default: results)")
    where.add_argument("--resume", default=None, metavar="FOLDER",
                       help="continue the sweep in this results folder: runs already "
                            "complete are kept, runs cut short run again (the experiment must "
                            "be the folder's config.toml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything a real run checks and list the runs without "
                        "running them")
    p.add_argument("--no-report", action="store_true",
                   help="do not write report.md/report.html into the results folder")

    p = sub.add_parser("real",
                       help="one run on the real multithreaded engine",
                       description="One run on the real engine, described by flags.")
    _add_run_flags(p)

    p = sub.add_parser("sim",
                       help="one run in the discrete-event simulator (timing only or numeric "
                            "replay)",
                       description="One run in the simulator, described by flags; times are "
                                   "simulated seconds.")
    _add_run_flags(p)
    p.add_argument("--cores", type=_whole_number, default=None,
                   help="simulated cores (default: one per worker)")
    p.add_argument("--compute", default=None, help="gradient time, e.g. exp:2ms, det:1ms, "
                                                    "gamma:2ms:0.5, lognormal:2ms:0.5")
    p.add_argument("--read", default=None, help="read/copy time distribution (default: "
                                                 "per-param)")
    p.add_argument("--update", default=None, help="apply time distribution (default: "
                                                   "per-param)")
    p.add_argument("--time-slice", default=None, help="scheduler time slice (default: 4ms)")
    p.add_argument("--timing-only", action="store_true", help="timing only, no numeric replay")
    p.add_argument("--calibration", default=None, help="timing model fitted by `calibrate`")
    p.add_argument("--topology", choices=("shared", "ps"), default=None,
                   help="shared: threads sharing θ (default); ps: workers and parameter "
                        "servers exchanging messages, the model of `stalesgd dist`")
    p.add_argument("--latency", default=None,
                   help="topology ps: one-way time per message (default: 500us)")
    p.add_argument("--per-byte", default=None,
                   help="topology ps: time per byte a message carries (default: 2ns)")
    p.add_argument("--server-time", default=None,
                   help="topology ps: a server's time per message besides its work "
                        "(default: 100us)")
    _add_server_flags(p)

    p = sub.add_parser("dist",
                       help="one run on the distributed engine (parameter server on Ray)",
                       description="One run on the distributed engine: workers and "
                                   "parameter servers are Ray actors, on this machine or on a "
                                   "cluster. Needs Ray: pip install 'stalesgd[ray]'.")
    _add_run_flags(p)
    p.add_argument("--address", default=None,
                   help="Ray cluster to join: 'auto' or HOST:PORT (default: start a local "
                        "instance and stop it at the end)")
    _add_server_flags(p)

    p = sub.add_parser("calibrate", help="fit a sim timing model to a real run",
                       description="Fit the simulator's timing model (compute-time "
                                   "distributions, read/update costs, lock hand-over, cores, "
                                   "time slice) to the real runs of a results folder and write "
                                   "it as JSON for `stalesgd sim --calibration FILE`. A folder "
                                   "of distributed-engine runs (engine ray; or --run naming "
                                   "them) fits the parameter-server topology instead (network "
                                   "latency, cost per byte, server time; for `stalesgd sim "
                                   "--topology ps --calibration FILE`).")
    p.add_argument("dirs", nargs=1, metavar="REAL_DIR")
    p.add_argument("--out", default=None,
                   help="calibration file to write (default: REAL_DIR/calibration.json)")
    p.add_argument("--run", action="append", default=None, metavar="RUN_ID",
                   help="calibrate from this run only (repeatable; default: every real run, "
                        "or every ray run of a folder without real runs)")
    p.add_argument("--max-workers", type=_whole_number, default=None, metavar="N",
                   help="calibrate only from the runs with at most N workers: simulations of "
                        "more workers are then out-of-sample predictions, shown as engine "
                        "sim[m<=N] in reports (default: every worker count)")
    p.add_argument("--model", choices=("empirical", "parametric"), default="empirical",
                   help="compute model the simulator uses by default: resample the measured "
                        "durations, or the fitted gamma/log-normal (default: empirical)")
    p.add_argument("--steady-only", action="store_true",
                   help="leave out the runs on an unsteady machine (speed changed within the "
                        "run, or the CPUs were shared) of every configuration that also has a "
                        "steady run (default: calibrate from every run, naming the unsteady)")

    p = sub.add_parser("compare", help="compare results folders (sim vs real, PDF(τ), speedups)",
                       description="Join results folders (e.g. one sim, one real) on their "
                                   "configurations, print the comparison tables and write "
                                   "report.md / report.html / figures into OUT.")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.add_argument("--out", default=None,
                   help="report folder (default: results/compare-<timestamp>/)")
    _add_report_flags(p)

    p = sub.add_parser("report", help="write an HTML/Markdown report for a results folder",
                       description="Write report.md, a self-contained report.html and "
                                   "figures/*.png into the results folder DIR.")
    p.add_argument("dirs", nargs=1, metavar="DIR")
    _add_report_flags(p)

    p = sub.add_parser("data", help="data sets: list, verify, path (where found) or download",
                       description="Data sets: list | verify | path | download [NAME].")
    p.add_argument("action", choices=("list", "verify", "path", "download"))
    p.add_argument("name", nargs="?", default=None, help="data set, e.g. mnist")
    p.add_argument("--data-dir", default=None, help="look here first")
    return parser


# ---------------------------------------------------------------------------------------------
# run, real, sim
# ---------------------------------------------------------------------------------------------


def _print_plan(plan) -> None:
    """One line per run of a dry run: what it would run, with every setting a flag or the
    file gave that is not the default shape of the line."""
    for spec in plan.runs:
        state = "  (complete)" if spec.run_id in plan.done else ""
        options = "".join(f" {k}={v!r}" for k, v in sorted(spec.problem.options.items()))
        stop = ", ".join(f"{k} {v:g}" for k, v in (("updates", spec.stop.updates),
                                                     ("seconds", spec.stop.seconds),
                                                     ("target", spec.stop.target_loss))
                         if v is not None)
        swept = f" swept {spec.point}" if spec.point else ""
        print(f"{spec.run_id}  {spec.engine} {spec.problem.name}{options} "
              f"{spec.algorithm.name} m={spec.workers} {spec.stepsize.rule} "
              f"lr={spec.stepsize.lr:g} batch={spec.problem.batch} {spec.problem.dtype}"
              f"{_sampling(spec)}"
              f"{_servers(spec)} seed={spec.seed} stop: {stop or 'none'}{swept}{state}")


def _sampling(spec) -> str:
    """The minibatch sampling of a run when it is not the default (a dry run's line)."""
    sampling = spec.problem.sampling
    return "" if sampling == "replacement" else f" sampling={sampling}"


def _servers(spec) -> str:
    """The parameter-server settings of a run that has servers (a dry run's line)."""
    from stalesgd.experiment.spec import uses_servers

    if not uses_servers(spec.engine, spec.sim):
        return ""
    text = " topology=ps" if spec.engine == "sim" else ""
    if spec.algorithm.name == "hogwild":
        text += f" shards={spec.dist.shards}"
    if spec.dist.net_delay:
        text += f" net_delay={spec.dist.net_delay}"
    return text


def _run(exp, out: str, progress: bool, *, dry_run: bool = False, resume: str | None = None,
         report: bool = False, rerun: str | None = None) -> int:
    """Check, then run (or with ``dry_run`` list) the runs of ``exp``; ``rerun`` is the
    command that resumes the sweep (``stalesgd run FILE``), named when writing fails."""
    from stalesgd.app.runner import plan_sweep, run_sweep
    from stalesgd.app.summary import format_summary

    plan = plan_sweep(exp, out, resume, out_key="--out", resume_key="--resume")
    if dry_run:
        _print_plan(plan)
        return 0
    try:
        outcome = run_sweep(plan, progress=progress, out_key="--out")
    except Exception as exc:
        if getattr(exc, "kept_in", None) is not None:  # an error stopped the sweep part-way
            folder, kept, planned = exc.kept_in
            hint = f"; once the error below is fixed, `{rerun} --resume {folder}` finishes " \
                "the sweep" if rerun else ""
            _err(f"the sweep stopped: {kept} of {planned} runs kept in {folder}{hint}")
        raise
    if outcome.summaries:
        print(format_summary(outcome.summaries, outcome.specs))
    done = f", {outcome.skipped} complete before" if outcome.skipped else ""
    if Path(outcome.folder).exists():  # (not when Ctrl-C came before any run was kept)
        print(f"results: {outcome.folder} ({len(outcome.summaries)} of {outcome.planned} runs"
              f"{done})")
    if outcome.write_error is not None:
        kept = len(outcome.summaries) + outcome.skipped
        hint = f" (once there is room: {rerun} --resume {outcome.folder})" if rerun else ""
        _err(f"{outcome.write_error}; the {kept} runs written before are kept in "
             f"{outcome.folder}{hint}")
        return EXIT_FAILURE
    if outcome.interrupted:
        # no report after Ctrl-C (the user asked to stop; an import the interrupt cut short
        # can break it): say how to go on instead
        if Path(outcome.folder).exists():
            hint = f"`{rerun} --resume {outcome.folder}` finishes the sweep; " if rerun else ""
            _err(f"{hint}`stalesgd report {outcome.folder}` reports the runs kept")
        return EXIT_INTERRUPTED
    if report and (outcome.summaries or outcome.skipped):
        _write_run_report(outcome.folder)
    return 0


def _write_run_report(folder: Path) -> None:
    """Write the folder's report and print where it is and its headline numbers."""
    from stalesgd.analysis import AnalysisError, analyse, write_report
    from stalesgd.analysis.headline import headline

    print("writing the report (staleness fits, figures)…", file=sys.stderr)
    try:
        analysis = analyse([folder])
        files = write_report([folder], folder, analysis=analysis)
    except (AnalysisError, OSError) as exc:
        _err(f"no report: {exc}")
        return
    print(f"report: {files.html}")
    for line in headline(analysis).lines:
        print(f"  {line}")


def _cmd_run(args: argparse.Namespace) -> int:
    from stalesgd.experiment import ExperimentError, default_experiment, load_experiment

    if args.experiment is None:
        exp = default_experiment()
    else:
        path = Path(args.experiment)
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ExperimentError("(file)", args.experiment, "an experiment file (TOML)", what)
        exp = load_experiment(path)
    out = "results" if args.out is None else args.out
    rerun = " ".join(["stalesgd run", *([args.experiment] if args.experiment else [])])
    return _run(exp, out, not args.no_progress, dry_run=args.dry_run, resume=args.resume,
                report=not args.no_report, rerun=rerun)


def _key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """Parse repeated ``KEY=VALUE`` flags; values in TOML syntax, bare words as strings."""
    from stalesgd.experiment import ExperimentError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ExperimentError(flag, item, "KEY=VALUE, e.g. n_train=5000")
        if key in out:
            raise ExperimentError(flag, item, f"each key once ({key} is given twice)")
        try:
            out[key] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text.strip()
    return out


def _number_or_text(text: str | None, parse: type) -> Any:
    """``text`` as a number of type ``parse`` if it is one, else as given (the experiment
    checks say what is allowed)."""
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError:
        return text


#: the flag of ``stalesgd real``/``sim``/``dist`` behind each experiment key (for messages)
FLAG_OF_KEY = {
    "workers": "--workers", "seeds": "--seed", "seeds[0]": "--seed", "name": "--name",
    "slowdown": "--slowdown",
    "problem.name": "--problem", "problem.batch": "--batch", "problem.dtype": "--dtype",
    "problem.sampling": "--sampling",
    "problem.options.data_dir": "--data-dir", "problem.options.file": "--data-file",
    "problem.options.sha256": "--data-sha256",
    "algorithm.name": "--algorithm", "algorithm.persistence": "--persistence",
    "stepsize.rule": "--stepsize", "stepsize.lr": "--lr",
    "stop.updates": "--updates", "stop.seconds": "--seconds",
    "stop.target_loss": "--target-loss", "record.rows": "--log-rows",
    "controller.name": "--controller",
    "sim.cores": "--cores", "sim.compute": "--compute", "sim.read": "--read",
    "sim.update": "--update", "sim.time_slice": "--time-slice",
    "sim.timing_only": "--timing-only", "sim.calibration": "--calibration",
    "sim.topology": "--topology", "sim.latency": "--latency", "sim.per_byte": "--per-byte",
    "sim.server_time": "--server-time",
    "dist.address": "--address", "dist.shards": "--shards", "dist.net_delay": "--net-delay",
}
#: the flags that set one option each (``-o KEY=VALUE``), by the table they fill
OPTION_FLAGS = {"problem.options.": "-o", "stepsize.options.": "--stepsize-option",
                "controller.options.": "--controller-option"}


def in_flags(error: Exception) -> Exception:
    """``error`` about a value the user gave as a flag, named as typed (``--shards 4``, not
    ``dist.shards = 4``); other errors unchanged."""
    from stalesgd.validation import OptionError, short_repr

    if not isinstance(error, OptionError):
        return error
    value = short_repr(error.value)
    text = None
    if error.key in FLAG_OF_KEY:
        text = FLAG_OF_KEY[error.key] if error.value is None else \
            f"{FLAG_OF_KEY[error.key]} {value}"
    else:
        for prefix, flag in OPTION_FLAGS.items():
            if error.key.startswith(prefix):
                text = f"{flag} {error.key[len(prefix):]}={value}"
    if text is None:
        return error
    named = OptionError(error.key, error.value, error.allowed, error.problem)
    named.args = (f"{text} {error.problem}; allowed: {error.allowed}",)
    return named


def _cmd_engine(args: argparse.Namespace) -> int:
    """``stalesgd real``/``sim``/``dist``: errors in a value name the flag that gave it."""
    from stalesgd.validation import OptionError

    try:
        return _run_flags(args)
    except OptionError as exc:
        raise in_flags(exc) from None


def _run_flags(args: argparse.Namespace) -> int:
    from stalesgd.experiment import experiment_from_flags
    from stalesgd.validation import OptionError

    persistence = args.persistence
    if persistence != "inf":
        persistence = _number_or_text(persistence, int)
    sim = None
    if args.command == "sim":
        sim = {"cores": args.cores, "compute": args.compute, "read": args.read,
               "update": args.update, "time_slice": args.time_slice,
               "timing_only": args.timing_only, "calibration": args.calibration,
               "topology": args.topology, "latency": args.latency,
               "per_byte": args.per_byte, "server_time": args.server_time}
    problem_options = _key_values(args.option, "--option")
    for key, value, flag in (("data_dir", args.data_dir, "--data-dir"),
                             ("file", args.data_file, "--data-file"),
                             ("sha256", args.data_sha256, "--data-sha256")):
        if value is not None:
            if key in problem_options and problem_options[key] != value:
                raise OptionError(f"-o {key}", problem_options[key],
                                  f"either -o {key} or {flag}",
                                  f"conflicts with {flag} {value!r}")
            problem_options[key] = value
    stepsize_options = _key_values(args.stepsize_option, "--stepsize-option")
    controller_options = _key_values(args.controller_option, "--controller-option")
    dist = None
    if args.command in ("dist", "sim"):
        dist = {"address": getattr(args, "address", None), "shards": args.shards,
                "net_delay": args.net_delay}
    exp = experiment_from_flags(
        ENGINE_OF_COMMAND[args.command], dist=dist, problem_options=problem_options,
        stepsize_options=stepsize_options,
        problem=args.problem, algorithm=args.algorithm, workers=args.workers,
        stepsize=args.stepsize, lr=args.lr, batch=args.batch, dtype=args.dtype,
        sampling=args.sampling, updates=args.updates, seconds=_number_or_text(args.seconds, float),
        target_loss=args.target_loss, seed=args.seed, persistence=persistence, sim=sim,
        name=args.name, controller=args.controller, controller_options=controller_options,
        log_rows=args.log_rows,
        slowdown=None if args.slowdown is None else ",".join(args.slowdown))
    return _run(exp, args.out, not args.no_progress, dry_run=args.dry_run)


# ---------------------------------------------------------------------------------------------
# calibrate, compare, report, data
# ---------------------------------------------------------------------------------------------


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from stalesgd.analysis import AnalysisError
    from stalesgd.analysis.calibrate import calibrate

    from stalesgd.calibration import CalibrationError
    from stalesgd.validation import OptionError

    folder = Path(args.dirs[0])
    out = Path(args.out) if args.out else folder / "calibration.json"
    if out.is_dir():
        raise OptionError("--out", str(out), "a calibration file name, e.g. calibration.json",
                          "is a folder")
    if args.out is not None and not out.parent.is_dir():
        raise OptionError("--out", str(out), "a file in an existing folder",
                          f"is in {out.parent}, which is not a folder")
    if args.max_workers is not None and args.max_workers < 1:
        raise OptionError("--max-workers", args.max_workers, "an integer >= 1")
    try:
        cal = calibrate(folder, runs=args.run, max_workers=args.max_workers,
                        steady_only=args.steady_only)
        cal.data["default_model"] = args.model
        cal.save(out)
    except (CalibrationError, AnalysisError, FileNotFoundError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(cal.summary_text())
    print(f"calibration: {out} (default model: {args.model})")
    return 0


def _cmd_analysis(args: argparse.Namespace) -> int:
    from stalesgd.analysis import AnalysisError, analyse, comparison_text, write_report
    from stalesgd.analysis.report import default_compare_dir
    from stalesgd.app.preflight import check_output_root

    from stalesgd.staleness import FAMILIES
    from stalesgd.validation import OptionError

    log_y = {"auto": None, "on": True, "off": False}[args.log_y]
    families = FAMILIES if args.families is None else tuple(
        f.strip() for f in args.families.split(",") if f.strip())
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise OptionError("--families", args.families, ", ".join(FAMILIES))
    if args.command == "compare":
        out = Path(args.out) if args.out else default_compare_dir()
    else:
        out = Path(args.dirs[0])
    if args.command == "compare":
        check_output_root(out, None, "--out")
    elif out.is_dir():  # analyse() says what is wrong with anything else
        check_output_root(out, None, "DIR")
    try:
        analysis = analyse(args.dirs, target=args.target, run_fits=not args.no_run_fits,
                           families=families)
        if args.command == "compare":
            print(comparison_text(analysis))
        files = write_report(args.dirs, out, log_y=log_y, analysis=analysis)
    except (AnalysisError, FileNotFoundError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    print(f"report: {files.html} ({len(files.figures)} figures), {files.markdown}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from stalesgd.data.cli import data_command

    return int(data_command(args.action, args.name, args.data_dir, sys.stdout) or 0)


#: what argparse itself reads as a negative number (and so as a value, not a flag)
_PLAIN_NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")
#: non-finite numbers a value may be typed as after its minus sign (``--lr -inf``)
_NON_FINITE = ("inf", "infinity", "nan")


def attach_dash_values(argv: Sequence[str]) -> list[str]:
    """``--flag -1=4`` as ``--flag=-1=4``: a value after a flag that starts like a negative
    number (``-`` then a digit or ``.``) but is not a plain one (``-1ns``, ``-1=4``).

    argparse reads such a value as another flag and stops with "expected one argument",
    before our checks can say what is wrong with the value; joined, the value reaches them.
    No option of this program starts so; after a flag that takes no value the joined form
    is refused by argparse as the separate one was.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out.extend(argv[i:])
            break
        nxt = argv[i + 1] if i + 1 < len(argv) else ""
        if (token.startswith("-") and "=" not in token and len(nxt) > 1 and nxt[0] == "-"
                and (nxt[1] in "0123456789." or nxt[1:].lower() in _NON_FINITE)
                and not _PLAIN_NEGATIVE.match(nxt)):
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stalesgd`` command; returns the exit code (0 ok, 1 results could
    not be written, 2 bad input, 130 interrupted)."""
    from stalesgd.calibration import CalibrationError
    from stalesgd.data import DataError
    from stalesgd.engines import EngineNotAvailable
    from stalesgd.problems.plugins import PluginError
    from stalesgd.records import RecordError, RecordWriteError
    from stalesgd.validation import OptionError

    from .errors import OutOfMemory, memory_text

    parser = build_parser()
    args = parser.parse_args(attach_dash_values(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handlers = {"run": _cmd_run, "real": _cmd_engine, "sim": _cmd_engine, "dist": _cmd_engine,
                "calibrate": _cmd_calibrate, "compare": _cmd_analysis,
                "report": _cmd_analysis, "data": _cmd_data}
    try:
        return handlers[args.command](args)
    except (RecordWriteError, OutOfMemory) as exc:
        _err(str(exc))
        return EXIT_FAILURE
    except (OptionError, DataError, EngineNotAvailable, CalibrationError, RecordError,
            PluginError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED
    except MemoryError as exc:  # (outside a run: reading data, writing records, a report)
        _err(f"out of memory ({memory_text(exc)}); the command needs more memory than this "
             "machine has free")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
