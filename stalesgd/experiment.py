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
    options = {}

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
allowed.  :func:`load_experiment` returns a resolved :class:`Experiment` (defaults filled in);
:func:`to_toml` writes it back so that loading the result gives an equal experiment;
:func:`expand` turns it into one :class:`RunSpec` per run.  Algorithm ``seq`` always runs one
worker: its runs get ``workers = 1`` and sweep points that differ only in workers collapse.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stalesgd import engines
from stalesgd.algorithms import algorithm_names, asynchronous_names, get_algorithm
from stalesgd.units import UnitsError, parse_distribution, parse_duration

MODELS = ("linreg", "logreg", "softmax", "mlp", "lenet")
DATASETS = ("synthetic", "mnist", "fashion-mnist", "cifar10")
STEPSIZE_RULES = (
    "constant", "inverse", "exponential", "tail", "tail-original", "model", "delay-adaptive",
)
DTYPES = ("float32", "float64")
SPLITS = ("train", "test")
PER_PARAM = "per-param"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExperimentError(ValueError):
    """An invalid experiment: ``key`` (dotted path), offending ``value`` and what is ``allowed``."""

    def __init__(self, key: str, value: Any, allowed: str, problem: str = "is not allowed",
                 source: str | None = None) -> None:
        self.key, self.value, self.allowed, self.problem, self.source = (
            key, value, allowed, problem, source)
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key} = {value!r} {problem}; allowed: {allowed}")

    def with_source(self, source: str) -> ExperimentError:
        """The same error, its message prefixed by ``source`` (a file name or 'command line')."""
        return ExperimentError(self.key, self.value, self.allowed, self.problem, source)


# ---------------------------------------------------------------------------------------------
# Spec dataclasses
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemSpec:
    """The problem: ``name`` = MODEL-DATA, minibatch size, parameter dtype, problem options."""

    name: str = "logreg-synthetic"
    batch: int = 16
    dtype: str = "float64"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        """The model part of the name (``logreg`` in ``logreg-synthetic``)."""
        return self.name.split("-", 1)[0]

    @property
    def data(self) -> str:
        """The data-set part of the name (``fashion-mnist`` in ``mlp-fashion-mnist``)."""
        return self.name.split("-", 1)[1]


@dataclass(frozen=True)
class AlgorithmSpec:
    """The synchronisation scheme and its parameters (``persistence`` is used by ``leashed``)."""

    name: str = "lock"
    persistence: int | float = math.inf
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepsizeSpec:
    """The step-size rule η(τ) = lr · s(τ) (DESIGN §5) and rule options."""

    rule: str = "constant"
    lr: float = 0.05
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StopSpec:
    """When a run stops: after ``updates``, after ``seconds``, or at ``target_loss``.

    At least one of ``updates`` and ``seconds`` is set.  With ``at_target = False`` the target
    is only recorded (time and updates to target), not used to stop.
    """

    updates: int | None = None
    seconds: float | None = None
    target_loss: float | None = None
    at_target: bool = True


@dataclass(frozen=True)
class EvalSpec:
    """Evaluation cadence (exactly one of ``every_seconds``/``every_updates`` once resolved),
    split and the number of rows evaluated."""

    every_seconds: float | None = None
    every_updates: int | None = None
    split: str = "test"
    max_rows: int = 2000


#: The simulator's gradient-time distribution and scheduler time slice when neither the
#: experiment nor a calibration file sets them.
DEFAULT_SIM_COMPUTE = "exp:2ms"
DEFAULT_TIME_SLICE = "4ms"


@dataclass(frozen=True)
class SimSpec:
    """Simulator settings: cores (None = one per worker), timing distributions, time slice.

    ``compute`` and ``time_slice`` are None when not given: the simulator then takes them from
    the calibration file, if any, else :data:`DEFAULT_SIM_COMPUTE` / :data:`DEFAULT_TIME_SLICE`
    (so a value given explicitly, even equal to the default, always wins over a calibration).
    """

    cores: int | None = None
    compute: str | None = None
    read: str = PER_PARAM
    update: str = PER_PARAM
    time_slice: str | None = None
    timing_only: bool = False
    calibration: str | None = None


@dataclass(frozen=True)
class ControllerSpec:
    """Elastic parallelism control: the controller ``name`` (:mod:`stalesgd.elastic`) and its
    ``options``; ``static`` (all workers, always) by default."""

    name: str = "static"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordSpec:
    """What a run's record keeps: ``rows`` of the per-update table (``all``, ``none`` or
    ``every:N``; the ``staleness`` table counts every update's τ whatever is kept)."""

    rows: str = "all"


@dataclass(frozen=True)
class Experiment:
    """A resolved experiment: the base run, the seeds and the sweep (dotted key -> values)."""

    name: str
    engine: str = "real"
    workers: int = 1
    seeds: tuple[int, ...] = (0,)
    problem: ProblemSpec = field(default_factory=ProblemSpec)
    algorithm: AlgorithmSpec = field(default_factory=AlgorithmSpec)
    stepsize: StepsizeSpec = field(default_factory=StepsizeSpec)
    stop: StopSpec = field(default_factory=lambda: StopSpec(updates=20000))
    eval: EvalSpec = field(default_factory=lambda: EvalSpec(every_updates=400))
    sim: SimSpec = field(default_factory=SimSpec)
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    record: RecordSpec = field(default_factory=RecordSpec)
    sweep: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    exclude: tuple[dict[str, Any], ...] = ()
    """Sweep points left out: each entry maps swept keys to one of their values; a point that
    matches every pair of an entry is not run (e.g. ``{engine = "real", workers = 64}``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the TOML layout); None values are left out."""
        return _drop_none(_plain(asdict(self)))


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs: what an engine receives.

    ``run_id`` is unique within the experiment (``r0000``, ``r0001``, …), ``index`` its position,
    ``point`` the values of the swept keys for this run (dotted key -> value).
    """

    experiment: str
    run_id: str
    index: int
    engine: str
    workers: int
    seed: int
    problem: ProblemSpec
    algorithm: AlgorithmSpec
    stepsize: StepsizeSpec
    stop: StopSpec
    eval: EvalSpec
    sim: SimSpec
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    record: RecordSpec = field(default_factory=RecordSpec)
    point: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the run (None values left out)."""
        return _drop_none(_plain(asdict(self)))


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def _table(raw: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ExperimentError(path, raw, f"a table with keys {', '.join(allowed)}",
                              f"is a {_type_name(raw)}, not a table")
    for key in raw:
        if key not in allowed:
            where = f"[{path}]" if path else "the top level"
            raise ExperimentError(_join(path, key), raw[key],
                                  f"keys in {where}: {', '.join(allowed)}", "is an unknown key")
    return raw


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _choice(value: Any, key: str, choices: tuple[str, ...] | list[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ExperimentError(key, value, ", ".join(choices))
    return value


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExperimentError(key, value, f"an integer >= {minimum}",
                              f"is a {_type_name(value)}, not an integer")
    if value < minimum:
        raise ExperimentError(key, value, f"an integer >= {minimum}", "is out of range")
    return value


def _positive_float(value: Any, key: str, allowed: str = "a finite number > 0") -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExperimentError(key, value, allowed, f"is a {_type_name(value)}, not a number")
    if not (math.isfinite(value) and value > 0):
        raise ExperimentError(key, value, allowed, "is out of range")
    return float(value)


def _seconds(value: Any, key: str) -> float:
    """A positive time in seconds, as a number or a duration string such as '1.5s'."""
    allowed = "a number of seconds > 0 or a duration such as '1.5s' or '500ms'"
    if isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except UnitsError:
            raise ExperimentError(key, value, allowed) from None
        if seconds <= 0:
            raise ExperimentError(key, value, allowed, "is out of range")
        return seconds
    return _positive_float(value, key, allowed)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ExperimentError(key, value, "true or false", f"is a {_type_name(value)}, not a "
                              "boolean")
    return value


def _options(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ExperimentError(key, value, "a table such as {n_features = 20}",
                              f"is a {_type_name(value)}, not a table")
    return copy.deepcopy(value)


def _problem_name(value: Any, key: str) -> str:
    allowed = (f"MODEL-DATA with MODEL in {', '.join(MODELS)} and DATA in "
               f"{', '.join(DATASETS)}, e.g. logreg-synthetic")
    if not isinstance(value, str) or "-" not in value:
        raise ExperimentError(key, value, allowed)
    model, data = value.split("-", 1)
    if model not in MODELS or data not in DATASETS:
        raise ExperimentError(key, value, allowed)
    return value


def _persistence(value: Any, key: str) -> int | float:
    allowed = "an integer >= 0 or inf (\"inf\")"
    if value == "inf" or (isinstance(value, float) and value == math.inf):
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int):
        raise ExperimentError(key, value, allowed)
    if value < 0:
        raise ExperimentError(key, value, allowed, "is out of range")
    return value


def _distribution(value: Any, key: str, per_param: bool) -> str:
    extra = f"'{PER_PARAM}' or " if per_param else ""
    allowed = f"{extra}exp:MEAN, det:VALUE, gamma:MEAN:CV, lognormal:MEAN:CV (e.g. 'exp:2ms')"
    if per_param and value == PER_PARAM:
        return value
    if not isinstance(value, str):
        raise ExperimentError(key, value, allowed, f"is a {_type_name(value)}, not a string")
    try:
        parse_distribution(value)
    except UnitsError as exc:
        raise ExperimentError(key, value, allowed, f"is not allowed ({exc})") from None
    return value


def _duration(value: Any, key: str) -> str:
    allowed = "a duration > 0 such as '4ms', '150us' or '1.5s'"
    if not isinstance(value, str):
        raise ExperimentError(key, value, allowed, f"is a {_type_name(value)}, not a string")
    try:
        seconds = parse_duration(value)
    except UnitsError:
        raise ExperimentError(key, value, allowed) from None
    if seconds <= 0:
        raise ExperimentError(key, value, allowed, "is out of range")
    return value


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

_TOP_KEYS = ("name", "engine", "workers", "seeds", "seed", "repeats", "problem", "algorithm",
             "stepsize", "stop", "eval", "sim", "controller", "record", "sweep", "exclude")
_BODY_KEYS = ("engine", "workers", "problem", "algorithm", "stepsize", "stop", "eval", "sim",
              "controller", "record")
_TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "problem": ("name", "batch", "dtype", "options"),
    "algorithm": ("name", "persistence", "options"),
    "stepsize": ("rule", "lr", "options"),
    "stop": ("updates", "seconds", "target_loss", "at_target"),
    "eval": ("every_seconds", "every_updates", "split", "max_rows"),
    "sim": ("cores", "compute", "read", "update", "time_slice", "timing_only", "calibration"),
    "controller": ("name", "options"),
    "record": ("rows",),
}


def _parse_problem(raw: Any) -> ProblemSpec:
    t = _table(raw, "problem", _TABLE_KEYS["problem"])
    if "name" not in t:
        raise ExperimentError("problem.name", None, "MODEL-DATA, e.g. logreg-synthetic",
                              "is missing")
    return ProblemSpec(
        name=_problem_name(t["name"], "problem.name"),
        batch=_int(t.get("batch", 16), "problem.batch", 1),
        dtype=_choice(t.get("dtype", "float64"), "problem.dtype", DTYPES),
        options=_options(t.get("options", {}), "problem.options"),
    )


def _parse_algorithm(raw: Any) -> AlgorithmSpec:
    t = _table(raw, "algorithm", _TABLE_KEYS["algorithm"])
    return AlgorithmSpec(
        name=_choice(t.get("name", "lock"), "algorithm.name", algorithm_names()),
        persistence=_persistence(t.get("persistence", math.inf), "algorithm.persistence"),
        options=_options(t.get("options", {}), "algorithm.options"),
    )


def _parse_stepsize(raw: Any) -> StepsizeSpec:
    t = _table(raw, "stepsize", _TABLE_KEYS["stepsize"])
    return StepsizeSpec(
        rule=_choice(t.get("rule", "constant"), "stepsize.rule", STEPSIZE_RULES),
        lr=_positive_float(t.get("lr", 0.05), "stepsize.lr"),
        options=_options(t.get("options", {}), "stepsize.options"),
    )


def _parse_stop(raw: Any) -> StopSpec:
    t = _table(raw, "stop", _TABLE_KEYS["stop"])
    updates = _int(t["updates"], "stop.updates", 1) if "updates" in t else None
    seconds = _seconds(t["seconds"], "stop.seconds") if "seconds" in t else None
    if updates is None and seconds is None:
        raise ExperimentError("stop", t, "a [stop] table with updates = N and/or seconds = T",
                              "sets neither updates nor seconds")
    target = None
    if "target_loss" in t:
        target = _positive_float(t["target_loss"], "stop.target_loss")
    return StopSpec(updates=updates, seconds=seconds, target_loss=target,
                    at_target=_bool(t.get("at_target", True), "stop.at_target"))


def _parse_eval(raw: Any, stop: StopSpec) -> EvalSpec:
    t = _table(raw, "eval", _TABLE_KEYS["eval"])
    every_s = _seconds(t["every_seconds"], "eval.every_seconds") if "every_seconds" in t else None
    every_u = _int(t["every_updates"], "eval.every_updates", 1) if "every_updates" in t else None
    if every_s is not None and every_u is not None:
        raise ExperimentError("eval.every_updates", every_u,
                              "at most one of eval.every_seconds and eval.every_updates",
                              "is set together with eval.every_seconds")
    if every_s is None and every_u is None:  # default: about 50 evaluations per run
        if stop.updates is not None:
            every_u = max(1, stop.updates // 50)
        else:
            every_s = float(stop.seconds) / 50.0
    return EvalSpec(every_seconds=every_s, every_updates=every_u,
                    split=_choice(t.get("split", "test"), "eval.split", SPLITS),
                    max_rows=_int(t.get("max_rows", 2000), "eval.max_rows", 1))


def _parse_sim(raw: Any) -> SimSpec:
    t = _table(raw, "sim", _TABLE_KEYS["sim"])
    calibration = t.get("calibration")
    if calibration is not None and (not isinstance(calibration, str) or not calibration):
        raise ExperimentError("sim.calibration", calibration, "a file name (string)")
    return SimSpec(
        cores=_int(t["cores"], "sim.cores", 1) if "cores" in t else None,
        compute=(_distribution(t["compute"], "sim.compute", per_param=False)
                 if t.get("compute") is not None else None),
        read=_distribution(t.get("read", PER_PARAM), "sim.read", per_param=True),
        update=_distribution(t.get("update", PER_PARAM), "sim.update", per_param=True),
        time_slice=(_duration(t["time_slice"], "sim.time_slice")
                    if t.get("time_slice") is not None else None),
        timing_only=_bool(t.get("timing_only", False), "sim.timing_only"),
        calibration=calibration,
    )


def _parse_record(raw: Any) -> RecordSpec:
    from stalesgd.records import ROWS_ALLOWED, RowSelection

    t = _table(raw, "record", _TABLE_KEYS["record"])
    rows = t.get("rows", "all")
    try:
        RowSelection.parse(rows)
    except ValueError:
        raise ExperimentError("record.rows", rows, ROWS_ALLOWED) from None
    return RecordSpec(rows=rows)


def _parse_controller(raw: Any, workers: int, algorithm: str) -> ControllerSpec:
    """The [controller] table, checked by building the controller for ``workers`` threads."""
    from stalesgd.elastic import CONTROLLERS, ControllerError, make_controller

    t = _table(raw, "controller", _TABLE_KEYS["controller"])
    name = _choice(t.get("name", "static"), "controller.name", tuple(CONTROLLERS))
    options = _options(t.get("options", {}), "controller.options")
    if name != "static" and algorithm not in asynchronous_names():
        raise ExperimentError("controller.name", name,
                              f"static with algorithm {algorithm} (elastic control needs an "
                              f"asynchronous algorithm: {', '.join(asynchronous_names())})")
    try:
        make_controller(name, workers, **options)
    except ControllerError as exc:
        raise ExperimentError(exc.key, exc.value, exc.allowed, exc.problem) from None
    return ControllerSpec(name=name, options=options)


def _parse_body(raw: dict[str, Any]) -> dict[str, Any]:
    """Validate the keys shared by an experiment and one run; returns the parsed parts."""
    if "problem" not in raw:
        raise ExperimentError("problem", None, "a [problem] table with name = \"MODEL-DATA\"",
                              "is missing")
    stop = _parse_stop(raw.get("stop", {"updates": 20000}))
    workers = _int(raw.get("workers", 1), "workers", 1)
    algorithm = _parse_algorithm(raw.get("algorithm", {}))
    return dict(
        engine=_choice(raw.get("engine", "real"), "engine", engines.engine_names()),
        workers=workers,
        problem=_parse_problem(raw["problem"]),
        algorithm=algorithm,
        stepsize=_parse_stepsize(raw.get("stepsize", {})),
        stop=stop,
        eval=_parse_eval(raw.get("eval", {}), stop),
        sim=_parse_sim(raw.get("sim", {})),
        controller=_parse_controller(raw.get("controller", {}), workers, algorithm.name),
        record=_parse_record(raw.get("record", {})),
    )


def _parse_seeds(raw: dict[str, Any]) -> tuple[int, ...]:
    if "seeds" in raw:
        for key in ("seed", "repeats"):
            if key in raw:
                raise ExperimentError(key, raw[key], "either seeds = [...] or seed with repeats",
                                      "is set together with seeds")
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not seeds:
            raise ExperimentError("seeds", seeds, "a non-empty array of integers >= 0")
        for i, s in enumerate(seeds):
            _int(s, f"seeds[{i}]", 0)
        if len(set(seeds)) != len(seeds):
            raise ExperimentError("seeds", seeds, "distinct integers >= 0", "repeats a seed")
        return tuple(seeds)
    seed = _int(raw.get("seed", 0), "seed", 0)
    repeats = _int(raw.get("repeats", 1), "repeats", 1)
    return tuple(range(seed, seed + repeats))


def _flatten_sweep(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"stepsize": {"rule": [...]}}`` (unquoted dotted keys) -> ``{"stepsize.rule": [...]}``."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        path = _join(prefix, key)
        if isinstance(value, dict):
            flat.update(_flatten_sweep(value, path))
        else:
            flat[path] = value
    return flat


def _check_sweep_key(key: str, value: Any) -> None:
    parts = key.split(".")
    allowed = ("engine, workers, or TABLE.KEY for the keys of [problem], [algorithm], "
               "[stepsize], [stop], [eval], [sim], [controller], [record], or "
               "TABLE.options.NAME")
    if len(parts) == 1 and parts[0] in ("engine", "workers"):
        return
    if len(parts) == 2 and parts[0] in _TABLE_KEYS and parts[1] in _TABLE_KEYS[parts[0]] \
            and parts[1] != "options":
        return
    if len(parts) >= 3 and parts[0] in ("problem", "algorithm", "stepsize", "controller") \
            and parts[1] == "options":
        return
    raise ExperimentError(f"sweep.{key}", value, allowed, "is not a key that can be swept")


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ExperimentError(key, value, "a path through tables", "cannot be set")
    node[parts[-1]] = copy.deepcopy(value)


def _get_path(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _parse_sweep(raw: Any) -> dict[str, tuple[Any, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ExperimentError("sweep", raw, "a [sweep] table of key = [values]",
                              f"is a {_type_name(raw)}, not a table")
    sweep: dict[str, tuple[Any, ...]] = {}
    for key, values in _flatten_sweep(raw).items():
        _check_sweep_key(key, values)
        if not isinstance(values, list) or not values:
            raise ExperimentError(f"sweep.{key}", values, "a non-empty array of values",
                                  "is not a non-empty array")
        sweep[key] = tuple(copy.deepcopy(values))
    return sweep


def _parse_exclude(raw: Any, sweep: dict[str, tuple[Any, ...]]) -> tuple[dict[str, Any], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ExperimentError("exclude", raw, "an array of tables of swept key = value, e.g. "
                              "exclude = [{engine = \"real\", workers = 64}]")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry:
            raise ExperimentError(f"exclude[{i}]", entry, "a non-empty table of swept "
                                  "key = value")
        flat = _flatten_sweep(entry)
        for key, value in flat.items():
            if key not in sweep:
                raise ExperimentError(f"exclude[{i}].{key}", value,
                                      f"a swept key ({', '.join(sweep) or 'nothing is swept'})",
                                      "is not swept")
            if value not in sweep[key]:
                raise ExperimentError(f"exclude[{i}].{key}", value,
                                      f"one of the swept values {list(sweep[key])}",
                                      "is never swept")
        out.append(flat)
    return tuple(out)


def parse_experiment(raw: dict[str, Any], source: str | None = None,
                     default_name: str = "experiment") -> Experiment:
    """Validate a raw experiment (the dict read from TOML) and resolve its defaults.

    ``source`` (a file name, 'command line') prefixes error messages.  Every sweep point is
    validated too, so that a bad value fails here rather than halfway through a sweep.
    """
    try:
        raw = _table(raw, "", _TOP_KEYS)
        name = raw.get("name", default_name)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ExperimentError("name", name, "a non-empty name of letters, digits, '_', '-' "
                                  "and '.', starting with a letter or digit")
        body = _parse_body(raw)
        sweep = _parse_sweep(raw.get("sweep"))
        exp = Experiment(name=name, seeds=_parse_seeds(raw), sweep=sweep,
                         exclude=_parse_exclude(raw.get("exclude"), sweep), **body)
        expand(exp)  # validates every sweep point
        return exp
    except ExperimentError as exc:
        if source and not exc.source:
            raise exc.with_source(source) from None
        raise


def load_experiment(path: str | Path) -> Experiment:
    """Read, validate and resolve the experiment in the TOML file ``path``.

    The experiment's name defaults to the file's stem.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError("(file)", path.name, "valid TOML", f"is not valid TOML ({exc})") \
            from None
    return parse_experiment(raw, source=path.name, default_name=path.stem)


def loads_experiment(text: str, source: str | None = None) -> Experiment:
    """Like :func:`load_experiment`, from TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError("(text)", text[:40], "valid TOML", f"is not valid TOML ({exc})") \
            from None
    return parse_experiment(raw, source=source)


# ---------------------------------------------------------------------------------------------
# Expansion into runs
# ---------------------------------------------------------------------------------------------


def expand(exp: Experiment) -> list[RunSpec]:
    """One :class:`RunSpec` per run: the cartesian product of the sweep (less the points
    ``exclude`` names), times the seeds.

    Sweep keys vary slowest in the order written, seeds fastest.  ``seq`` runs one worker, so
    points that then coincide are run once.
    """
    base = exp.to_dict()
    for key in ("name", "seeds", "sweep", "exclude"):
        base.pop(key, None)
    keys = list(exp.sweep)
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for combo in itertools.product(*(exp.sweep[k] for k in keys)):
        chosen = dict(zip(keys, combo, strict=True))
        if any(all(chosen[k] == v for k, v in ex.items()) for ex in exp.exclude):
            continue
        raw = copy.deepcopy(base)
        for key, value in zip(keys, combo, strict=True):
            _set_path(raw, key, value)
        try:
            body = _parse_body(raw)
        except ExperimentError as exc:
            point = dict(zip(keys, combo, strict=True))
            raise ExperimentError(f"sweep point {point}: {exc.key}", exc.value, exc.allowed,
                                  exc.problem) from None
        fixed = get_algorithm(body["algorithm"].name).fixed_workers
        if fixed is not None:
            body["workers"] = fixed
        point = {k: _get_path(_plain(_asdict_body(body)), k) for k in keys}
        for seed in exp.seeds:
            fingerprint = repr((sorted(_plain(_asdict_body(body)).items()), seed))
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            idx = len(runs)
            runs.append(RunSpec(experiment=exp.name, run_id=f"r{idx:04d}", index=idx, seed=seed,
                                point=point, **body))
    return runs


def _asdict_body(body: dict[str, Any]) -> dict[str, Any]:
    """The parsed parts of a run as a plain nested dict (dataclasses turned into dicts)."""
    return {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in body.items()}


# ---------------------------------------------------------------------------------------------
# Built-in default and command-line construction
# ---------------------------------------------------------------------------------------------


def default_experiment() -> Experiment:
    """The built-in experiment run by ``stalesgd run`` with no file (the main job).

    On ``logreg-synthetic`` (no files needed): ``lock``, ``hogwild`` and ``leashed`` ×
    ``constant`` and ``tail`` × 1, 2 and 4 workers, for real, then the same 18
    configurations in the simulator with numeric replay, calibrated from those real runs
    (``sim.calibration = "auto"``).  A few seconds of training per run, a few minutes in all.
    """
    return parse_experiment({
        "name": "default",
        "engine": "real",
        "workers": 1,
        "seeds": [0],
        "problem": {"name": "logreg-synthetic", "batch": 16, "dtype": "float64",
                    "options": {"n_features": 200, "n_train": 20000}},
        "algorithm": {"name": "lock"},
        "stepsize": {"rule": "constant", "lr": 0.005},
        "stop": {"updates": 20000, "seconds": 10.0, "target_loss": 0.40, "at_target": False},
        "eval": {"every_updates": 500, "split": "test", "max_rows": 2000},
        "sim": {"calibration": "auto"},
        "sweep": {"engine": ["real", "sim"],
                  "algorithm.name": ["lock", "hogwild", "leashed"],
                  "stepsize.rule": ["constant", "tail"],
                  "workers": [1, 2, 4]},
    })


def experiment_from_flags(engine: str, *, problem: str, algorithm: str, workers: int,
                          stepsize: str = "constant", lr: float = 0.05, batch: int = 16,
                          dtype: str = "float64", updates: int | None = None,
                          seconds: float | str | None = None, target_loss: float | None = None,
                          seed: int = 0, persistence: int | str | None = None,
                          sim: dict[str, Any] | None = None, name: str | None = None,
                          problem_options: dict[str, Any] | None = None,
                          stepsize_options: dict[str, Any] | None = None,
                          controller: str | None = None,
                          controller_options: dict[str, Any] | None = None,
                          log_rows: str | None = None,
                          ) -> Experiment:
    """The experiment described by ``stalesgd real``/``stalesgd sim`` flags.

    It goes through the same validation as an experiment file (one code path); a run without
    ``updates`` or ``seconds`` stops after 20000 updates.  ``controller`` names the elastic
    parallelism controller (default ``static``) and ``controller_options`` its options;
    ``log_rows`` which update rows the record keeps (``all``, ``none``, ``every:N``).
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
        "name": name or f"{engine}-{problem}-{algorithm}",
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
    return parse_experiment(raw, source="command line")


# ---------------------------------------------------------------------------------------------
# TOML writing
# ---------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that a spec compares and writes like its TOML."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _toml_str(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """One TOML value: string, boolean, integer, float (incl. inf/nan), array or inline table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()
                          if v is not None)
        return "{" + items + "}" if items else "{}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as TOML; allowed: str, "
                    "bool, int, float, list, dict")


def dict_to_toml(data: dict[str, Any], header: str = "") -> str:
    """A nested dict as TOML: scalars and arrays at the top, then one ``[table]`` per sub-dict
    (dicts inside tables become inline tables).  None values are left out."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def to_toml(exp: Experiment) -> str:
    """The resolved experiment as TOML text; :func:`loads_experiment` of it gives ``exp`` back."""
    data = exp.to_dict()
    order = ["name", "engine", "workers", "seeds", "exclude", "problem", "algorithm", "stepsize",
             "stop", "eval", "sim", "controller", "record", "sweep"]
    ordered = {k: data[k] for k in order if k in data and data[k] not in ({}, [])}
    return dict_to_toml(ordered, header=f"stalesgd experiment {exp.name!r} (resolved)")


__all__ = [
    "DATASETS", "DTYPES", "MODELS", "SPLITS", "STEPSIZE_RULES",
    "AlgorithmSpec", "ControllerSpec", "EvalSpec", "Experiment", "ExperimentError",
    "ProblemSpec", "RecordSpec", "RunSpec",
    "SimSpec", "StepsizeSpec", "StopSpec", "default_experiment", "dict_to_toml", "expand",
    "experiment_from_flags", "load_experiment", "loads_experiment", "parse_experiment",
    "to_toml", "toml_value",
]
