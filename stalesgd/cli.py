"""The ``stalesgd`` command line (DESIGN §3).

``run`` runs an experiment file (or the built-in default); ``real`` and ``sim`` describe one
run with flags and go through the same experiment validation and runner; ``data`` delegates to
:mod:`stalesgd.data.cli`.  Commands that later issues add (``calibrate``, ``compare``,
``report``) say so and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from stalesgd import __version__

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

NOT_BUILT: dict[str, str] = {
    "calibrate": "fitting a sim timing model to a real run comes with the analysis layer "
                 "(issue 6)",
    "compare": "comparing sim and real runs (PDF(τ), speedups) comes with the analysis layer "
               "(issue 6)",
    "report": "HTML/Markdown reports with figures come with the analysis layer (issue 6)",
}
"""Commands that exist in the design but not yet in the code, and which issue adds them."""


def _err(msg: str) -> None:
    print(f"stalesgd: {msg}", file=sys.stderr)


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problem", required=True, help="MODEL-DATA, e.g. logreg-synthetic")
    p.add_argument("--algorithm", required=True, help="seq | sync | lock | hogwild | leashed")
    p.add_argument("--workers", required=True, type=int, help="number of workers m")
    p.add_argument("--stepsize", default="constant",
                   help="constant | inverse | exponential | tail | tail-original | model | "
                        "delay-adaptive (default: constant)")
    p.add_argument("--lr", type=float, default=0.05, help="base step size η0 (default: 0.05)")
    p.add_argument("--batch", type=int, default=16, help="minibatch size (default: 16)")
    p.add_argument("--dtype", default="float64", help="float32 | float64 (default: float64)")
    p.add_argument("--persistence", default=None,
                   help="leashed: publish retries before dropping, 0..inf (default: inf)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--updates", type=int, help="stop after N updates (default: 20000)")
    stop.add_argument("--seconds", help="stop after T seconds (number or e.g. '1.5s')")
    p.add_argument("--target-loss", type=float, default=None,
                   help="stop when the evaluated loss reaches this value")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--name", default=None, help="experiment name (default: ENGINE-PROBLEM-ALG)")
    p.add_argument("--out", default="results", help="results root (default: results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _engine_note(name: str) -> str:
    from stalesgd.engines import PLANNED

    return f"{PLANNED[name].description} is added by {PLANNED[name].issue}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand of DESIGN §3."""
    parser = argparse.ArgumentParser(
        prog="stalesgd",
        description="Study asynchronous parallel SGD: staleness, step-size rules, lock-free "
                    "synchronisation, simulated and real.")
    parser.add_argument("--version", action="version", version=f"stalesgd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run an experiment file (the built-in default without one)",
                       description="Run every run of an experiment (sweeps × seeds) and store "
                                   "them under OUT/<experiment>-<timestamp>/.")
    p.add_argument("experiment", nargs="?", help="experiment TOML file (default: built-in)")
    p.add_argument("--out", default="results", help="results root (default: results)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and list the runs without running them")

    p = sub.add_parser("real",
                       help=f"one run on the real multithreaded engine ({_engine_note('real')})",
                       description="One run on the real engine, described by flags.")
    _add_run_flags(p)

    p = sub.add_parser("sim",
                       help=f"one run in the discrete-event simulator ({_engine_note('sim')})",
                       description="One run in the simulator, described by flags.")
    _add_run_flags(p)
    p.add_argument("--cores", type=int, default=None, help="simulated cores (default: one per "
                                                            "worker)")
    p.add_argument("--compute", default=None, help="gradient time, e.g. exp:2ms, det:1ms, "
                                                    "gamma:2ms:0.5, lognormal:2ms:0.5")
    p.add_argument("--read", default=None, help="read/copy time distribution (default: "
                                                 "per-param)")
    p.add_argument("--update", default=None, help="apply time distribution (default: "
                                                   "per-param)")
    p.add_argument("--time-slice", default=None, help="scheduler time slice (default: 4ms)")
    p.add_argument("--timing-only", action="store_true", help="timing only, no numeric replay")
    p.add_argument("--calibration", default=None, help="timing model fitted by `calibrate`")

    for name, helptext, arg in (
        ("calibrate", "fit a sim timing model to a real run", "REAL_DIR"),
        ("compare", "compare results folders (sim vs real, PDF(τ), speedups)", "DIR"),
        ("report", "write an HTML/Markdown report for a results folder", "DIR"),
    ):
        p = sub.add_parser(name, help=f"{helptext} — not built yet",
                           description=f"{helptext}. Not built yet: {NOT_BUILT[name]}.")
        p.add_argument("dirs", nargs="+" if name == "compare" else 1, metavar=arg)
        if name == "calibrate":
            p.add_argument("--out", default=None, help="where to write the timing model")

    p = sub.add_parser("data", help="list, verify, locate or download data sets",
                       description="Data sets: list | verify | path | download [NAME].")
    p.add_argument("action", choices=("list", "verify", "path", "download"))
    p.add_argument("name", nargs="?", default=None, help="data set, e.g. mnist")
    p.add_argument("--data-dir", default=None, help="look here first")
    return parser


def _run(exp, out: str, progress: bool) -> int:
    from stalesgd.engines import EngineNotAvailable
    from stalesgd.runner import format_summary, run_experiment

    try:
        outcome = run_experiment(exp, out=out, progress=progress)
    except EngineNotAvailable as exc:
        _err(str(exc))
        return EXIT_USAGE
    if outcome.summaries:
        print(format_summary(outcome.summaries))
    print(f"results: {outcome.folder} ({len(outcome.summaries)} of {outcome.planned} runs)")
    return EXIT_INTERRUPTED if outcome.interrupted else 0


def _cmd_run(args: argparse.Namespace) -> int:
    from stalesgd.experiment import default_experiment, expand, load_experiment

    if args.experiment is None:
        exp = default_experiment()
    else:
        path = Path(args.experiment)
        if not path.is_file():
            _err(f"experiment file {args.experiment} does not exist")
            return EXIT_USAGE
        exp = load_experiment(path)
    if args.dry_run:
        for spec in expand(exp):
            print(f"{spec.run_id}  engine={spec.engine} algorithm={spec.algorithm.name} "
                  f"workers={spec.workers} seed={spec.seed} {spec.point}")
        return 0
    return _run(exp, args.out, not args.no_progress)


def _cmd_engine(args: argparse.Namespace) -> int:
    from stalesgd.experiment import experiment_from_flags

    persistence = args.persistence
    if persistence is not None and persistence != "inf":
        try:
            persistence = int(persistence)
        except ValueError:
            pass  # validation names the bad value
    seconds = args.seconds
    if seconds is not None:
        try:
            seconds = float(seconds)
        except ValueError:
            pass  # a duration string such as '1.5s'
    sim = None
    if args.command == "sim":
        sim = {"cores": args.cores, "compute": args.compute, "read": args.read,
               "update": args.update, "time_slice": args.time_slice,
               "timing_only": args.timing_only, "calibration": args.calibration}
    exp = experiment_from_flags(
        args.command, problem=args.problem, algorithm=args.algorithm, workers=args.workers,
        stepsize=args.stepsize, lr=args.lr, batch=args.batch, dtype=args.dtype,
        updates=args.updates, seconds=seconds, target_loss=args.target_loss, seed=args.seed,
        persistence=persistence, sim=sim, name=args.name)
    return _run(exp, args.out, not args.no_progress)


def _cmd_not_built(args: argparse.Namespace) -> int:
    _err(f"`stalesgd {args.command}` is not built yet: {NOT_BUILT[args.command]}.")
    return EXIT_USAGE


def _cmd_data(args: argparse.Namespace) -> int:
    from stalesgd.data.cli import data_command

    return int(data_command(args.action, args.name, args.data_dir, sys.stdout) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stalesgd`` command; returns the exit code (0 ok, 2 usage or not
    built, 130 interrupted)."""
    from stalesgd.experiment import ExperimentError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handlers = {"run": _cmd_run, "real": _cmd_engine, "sim": _cmd_engine,
                "calibrate": _cmd_not_built, "compare": _cmd_not_built,
                "report": _cmd_not_built, "data": _cmd_data}
    try:
        return handlers[args.command](args)
    except ExperimentError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
