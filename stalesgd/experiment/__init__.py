"""Experiment specs: read from TOML, validated on load, expanded into one spec per run.

An experiment file (DESIGN §3) is flat and readable::

    name = "quick-logreg"
    engine = "real"                  # sim | real
    workers = 2
    seeds = [0, 1, 2]                # or: seed = 0 with repeats = 3

    [problem]
    name = "logreg-synthetic"        # MODEL-DATA
    batch = 16
    dtype = "float64"
    options = {}                     # passed to the problem, checked by it

    [algorithm]
    name = "lock"                    # seq | sync | lock | hogwild | leashed
    persistence = inf                # leashed only: 0..inf (or "inf")

    [stepsize]
    rule = "constant"                # constant inverse exponential tail tail-original model
    lr = 0.05                        #   delay-adaptive
    options = {}                     # checked by the rule (tail: A in 0..1, window, ...)

    [stop]                           # at least one of updates / seconds
    updates = 20000
    seconds = 10
    target_loss = 0.3                # time to target is recorded; the run stops there
    at_target = true                 #   unless at_target = false

    [eval]                           # at most one of every_seconds / every_updates
    every_updates = 1000
    split = "test"                   # train | test
    max_rows = 2000

    [sim]                            # used by the sim engine only
    cores = 2                        # omitted: one core per worker
    compute = "exp:2ms"              # exp:MEAN det:VALUE gamma:MEAN:CV lognormal:MEAN:CV
    read = "per-param"               # or a distribution
    update = "per-param"
    time_slice = "4ms"
    timing_only = false
    calibration = "calib.json"       # optional

    [record]
    rows = "all"                     # update rows kept: all | none | every:N (the exact
                                     #   τ histogram always counts every update)

    [controller]                     # elastic parallelism (asynchronous algorithms only)
    name = "window"                  # static (default) | window | ternary | model | schedule
    options = {probe = 2000, execute = 10000}   # see stalesgd.elastic

    [sweep]                          # cartesian product of every list, times the seeds
    workers = [1, 2, 4]
    "stepsize.rule" = ["constant", "tail"]

Errors raise :class:`ExperimentError`, whose message names the key path, the value and what is
allowed.  Reading checks everything that can be checked without this machine: every sweep
point, the problem's options and the minibatch against its training set (no data is read),
the step-size rule's and the controller's options.  :func:`load_experiment` returns a
resolved :class:`Experiment` (defaults filled in); :func:`to_toml` writes it back so that
loading the result gives an equal experiment; :func:`expand` turns it into one
:class:`RunSpec` per run.  Algorithm ``seq`` always runs one worker: its runs get
``workers = 1`` and sweep points that differ only in workers collapse.

Modules: :mod:`~stalesgd.experiment.spec` (the dataclasses and :class:`ExperimentError`),
:mod:`~stalesgd.experiment.tables` (checking one run's tables),
:mod:`~stalesgd.experiment.sweep` (``[sweep]``, ``exclude``, :func:`expand`),
:mod:`~stalesgd.experiment.load` (files and text), :mod:`~stalesgd.experiment.builders` (the
built-in default, command-line flags), :mod:`~stalesgd.experiment.toml_writer` (:func:`to_toml`).
"""

from stalesgd.experiment.builders import default_experiment, experiment_from_flags
from stalesgd.experiment.load import load_experiment, loads_experiment, parse_experiment
from stalesgd.experiment.spec import (
    DEFAULT_PS_COSTS,
    DEFAULT_SHARDS,
    DEFAULT_SIM_COMPUTE,
    DEFAULT_TIME_SLICE,
    PER_PARAM,
    SPLITS,
    AlgorithmSpec,
    ControllerSpec,
    DistSpec,
    EvalSpec,
    Experiment,
    ExperimentError,
    ProblemSpec,
    RecordSpec,
    RunSpec,
    SimSpec,
    StepsizeSpec,
    StopSpec,
    server_shards,
)
from stalesgd.experiment.sweep import expand
from stalesgd.experiment.toml_writer import dict_to_toml, to_toml, toml_value

__all__ = [
    "DEFAULT_PS_COSTS", "DEFAULT_SHARDS", "DEFAULT_SIM_COMPUTE", "DEFAULT_TIME_SLICE",
    "PER_PARAM", "SPLITS",
    "AlgorithmSpec", "ControllerSpec", "DistSpec", "EvalSpec", "Experiment", "ExperimentError",
    "ProblemSpec", "RecordSpec", "RunSpec", "SimSpec", "StepsizeSpec", "StopSpec",
    "default_experiment", "dict_to_toml", "expand", "experiment_from_flags", "load_experiment",
    "loads_experiment", "parse_experiment", "server_shards", "to_toml", "toml_value",
]
