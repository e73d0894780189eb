"""Reading the tables of one run (``[problem]``, ``[stop]``, ``[sim]``, …) into its specs.

:func:`parse_body` checks everything one run is made of, with the helpers of
:mod:`stalesgd.validation`: every key, every value, and what the parts say about each other.
It builds nothing and reads no file, yet checks what the run's parts will check when they are
built: the problem's options and the minibatch against the size of its training set
(:func:`stalesgd.problems.registry.check_problem`), the step-size rule's options
(:func:`stalesgd.stepsize.make_rule`) and the controller's
(:func:`stalesgd.elastic.make_controller`).  A bad value is an
:class:`~stalesgd.validation.OptionError` whose key is its dotted path in the file.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from stalesgd import engines
from stalesgd.algorithms import algorithm_names, asynchronous_names
from stalesgd.elastic import CONTROLLERS, make_controller
from stalesgd.experiment.spec import (
    DEFAULT_PS_COSTS,
    DEFAULT_SHARDS,
    PER_PARAM,
    SAMPLING,
    SPLITS,
    TOPOLOGIES,
    AlgorithmSpec,
    ControllerSpec,
    DistSpec,
    EvalSpec,
    ProblemSpec,
    RecordSpec,
    SimSpec,
    StepsizeSpec,
    StopSpec,
)
from stalesgd.problems.base import DTYPES
from stalesgd.problems.registry import check_problem, split_name
from stalesgd.records.updates import ROWS_ALLOWED, RowSelection
from stalesgd.slowdown import parse_slowdown
from stalesgd.stepsize import make_rule, rule_names
from stalesgd.units import MAX_MEAN, UnitsError, parse_distribution, parse_duration
from stalesgd.validation import (
    OptionError,
    a_type,
    choice,
    flag,
    integer,
    number,
    table,
    text,
)

__all__ = ["BODY_KEYS", "MAX_COUNT", "MAX_PERSISTENCE", "MAX_WORKERS", "TABLE_KEYS",
           "parse_body"]

#: most workers (and simulated cores) a run may have
MAX_WORKERS = 4096
#: largest count of updates, rows or seeds a record can hold (signed 64-bit)
MAX_COUNT = 2**63 - 1
#: largest finite Leashed-SGD persistence (publish retries; ``inf`` for no limit)
MAX_PERSISTENCE = 10**9

#: the keys one run is made of (an experiment adds name, seeds, sweep and exclude)
BODY_KEYS = ("engine", "workers", "problem", "algorithm", "stepsize", "stop", "eval", "sim",
             "controller", "record", "dist", "slowdown")
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "problem": ("name", "batch", "dtype", "options", "sampling"),
    "algorithm": ("name", "persistence", "options"),
    "stepsize": ("rule", "lr", "options"),
    "stop": ("updates", "seconds", "target_loss", "at_target"),
    "eval": ("every_seconds", "every_updates", "split", "max_rows"),
    "sim": ("cores", "compute", "read", "update", "time_slice", "timing_only", "calibration",
            "calibration_max_workers", "topology", "latency", "per_byte", "server_time"),
    "controller": ("name", "options"),
    "record": ("rows",),
    "dist": ("address", "shards", "net_delay"),
}
#: most server shards of a distributed ``hogwild`` run
MAX_SHARDS = 256


def _options(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OptionError(key, value, "a table such as {n_features = 20}",
                          f"is {a_type(value)}, not a table")
    return copy.deepcopy(value)


def _positive_duration(value: str, key: str, allowed: str) -> float:
    """Seconds of a duration string such as '1.5s', which must be > 0."""
    try:
        seconds = parse_duration(value)
    except UnitsError:
        raise OptionError(key, value, allowed) from None
    if seconds <= 0:
        raise OptionError(key, value, allowed, "is out of range")
    return seconds


def _seconds(value: Any, key: str) -> float:
    """A positive time in seconds, as a number or a duration string such as '1.5s'."""
    allowed = "a number of seconds > 0 or a duration such as '1.5s' or '500ms'"
    if isinstance(value, str):
        return _positive_duration(value, key, allowed)
    return number(value, key, positive=True, allowed=allowed)


def _persistence(value: Any, key: str) -> int | float:
    allowed = f"an integer in 0..{MAX_PERSISTENCE} or inf (\"inf\")"
    if value == "inf" or (isinstance(value, float) and value == math.inf):
        return math.inf
    return integer(value, key, 0, MAX_PERSISTENCE, allowed=allowed)


def _distribution(value: Any, key: str, per_param: bool) -> str:
    extra = f"'{PER_PARAM}' or " if per_param else ""
    allowed = f"{extra}exp:MEAN, det:VALUE, gamma:MEAN:CV, lognormal:MEAN:CV (e.g. 'exp:2ms')"
    if per_param and value == PER_PARAM:
        return value
    if not isinstance(value, str):
        raise OptionError(key, value, allowed, f"is {a_type(value)}, not a string")
    try:
        parse_distribution(value)
    except UnitsError as exc:
        raise OptionError(key, value, allowed, f"is not allowed ({exc})") from None
    return value


def _duration(value: Any, key: str) -> str:
    """A duration string > 0 (kept as written)."""
    allowed = "a duration > 0 such as '4ms', '150us' or '1.5s'"
    if not isinstance(value, str):
        raise OptionError(key, value, allowed, f"is {a_type(value)}, not a string")
    _positive_duration(value, key, allowed)
    return value


def _parse_problem(raw: Any) -> ProblemSpec:
    """``[problem]``: its options are checked by the problem registry, and the minibatch
    against its training set (without reading data)."""
    t = table(raw, "problem", TABLE_KEYS["problem"])
    if "name" not in t:
        raise OptionError("problem.name", None, "MODEL-DATA, e.g. logreg-synthetic",
                          "is missing")
    name = t["name"]
    try:
        split_name(name)
    except OptionError as exc:
        raise exc.under("problem") from None
    dtype = choice(t.get("dtype", "float64"), "problem.dtype", tuple(DTYPES))
    options = _options(t.get("options", {}), "problem.options")
    batch = integer(t.get("batch", 16), "problem.batch", 1)
    try:
        shape = check_problem(name, options, dtype)
    except OptionError as exc:
        raise exc.under("problem" if exc.key == "name" else "problem.options") from None
    n_train = shape.data.n_train
    if batch > n_train:
        raise OptionError("problem.batch", batch, f"an integer in 1..{n_train} (the training "
                          f"examples of {name})", "is larger than the training set")
    sampling = choice(t.get("sampling", SAMPLING[0]), "problem.sampling", SAMPLING)
    return ProblemSpec(name=name, batch=batch, dtype=dtype, options=options, sampling=sampling)


def _parse_algorithm(raw: Any) -> AlgorithmSpec:
    t = table(raw, "algorithm", TABLE_KEYS["algorithm"])
    return AlgorithmSpec(
        name=choice(t.get("name", "lock"), "algorithm.name", algorithm_names()),
        persistence=_persistence(t.get("persistence", math.inf), "algorithm.persistence"),
        options=_options(t.get("options", {}), "algorithm.options"),
    )


def _parse_stepsize(raw: Any, workers: int) -> StepsizeSpec:
    """``[stepsize]``: the rule is built once for ``workers``, which checks its options."""
    t = table(raw, "stepsize", TABLE_KEYS["stepsize"])
    spec = StepsizeSpec(
        rule=choice(t.get("rule", "constant"), "stepsize.rule", rule_names()),
        lr=number(t.get("lr", 0.05), "stepsize.lr", positive=True),
        options=_options(t.get("options", {}), "stepsize.options"),
    )
    try:
        make_rule(spec.rule, workers=workers, lr=spec.lr, **spec.options)
    except OptionError as exc:
        raise exc.under("stepsize.options") from None
    return spec


def _parse_stop(raw: Any) -> StopSpec:
    t = table(raw, "stop", TABLE_KEYS["stop"])
    updates = integer(t["updates"], "stop.updates", 1, MAX_COUNT) if "updates" in t else None
    seconds = _seconds(t["seconds"], "stop.seconds") if "seconds" in t else None
    if updates is None and seconds is None:
        raise OptionError("stop", t, "a [stop] table with updates = N and/or seconds = T",
                          "sets neither updates nor seconds")
    target = None
    if "target_loss" in t:
        target = number(t["target_loss"], "stop.target_loss", positive=True)
    return StopSpec(updates=updates, seconds=seconds, target_loss=target,
                    at_target=flag(t.get("at_target", True), "stop.at_target"))


def _parse_eval(raw: Any, stop: StopSpec) -> EvalSpec:
    t = table(raw, "eval", TABLE_KEYS["eval"])
    every_s = _seconds(t["every_seconds"], "eval.every_seconds") if "every_seconds" in t else None
    every_u = (integer(t["every_updates"], "eval.every_updates", 1, MAX_COUNT)
               if "every_updates" in t else None)
    if every_s is not None and every_u is not None:
        raise OptionError("eval.every_updates", every_u,
                          "at most one of eval.every_seconds and eval.every_updates",
                          "is set together with eval.every_seconds")
    if every_s is None and every_u is None:  # default: about 50 evaluations per run
        if stop.updates is not None:
            every_u = max(1, stop.updates // 50)
        else:
            every_s = float(stop.seconds) / 50.0
    return EvalSpec(every_seconds=every_s, every_updates=every_u,
                    split=choice(t.get("split", "test"), "eval.split", SPLITS),
                    max_rows=integer(t.get("max_rows", 2000), "eval.max_rows", 1, MAX_COUNT))


def _parse_sim(raw: Any) -> SimSpec:
    t = table(raw, "sim", TABLE_KEYS["sim"])
    calibration = t.get("calibration")
    if calibration is not None:
        text(calibration, "sim.calibration", "a file name (string), or 'auto'")
    max_workers = None
    if t.get("calibration_max_workers") is not None:
        max_workers = integer(t["calibration_max_workers"], "sim.calibration_max_workers", 1,
                              MAX_WORKERS)
        if calibration != "auto":
            raise OptionError("sim.calibration_max_workers", max_workers,
                              "only with sim.calibration = 'auto' (a calibration file has its "
                              "runs already: `stalesgd calibrate --max-workers N`)",
                              "cannot be used")
    return SimSpec(
        cores=integer(t["cores"], "sim.cores", 1, MAX_WORKERS) if "cores" in t else None,
        compute=(_distribution(t["compute"], "sim.compute", per_param=False)
                 if t.get("compute") is not None else None),
        read=_distribution(t.get("read", PER_PARAM), "sim.read", per_param=True),
        update=_distribution(t.get("update", PER_PARAM), "sim.update", per_param=True),
        time_slice=(_duration(t["time_slice"], "sim.time_slice")
                    if t.get("time_slice") is not None else None),
        timing_only=flag(t.get("timing_only", False), "sim.timing_only"),
        calibration=calibration,
        calibration_max_workers=max_workers,
        **_parse_topology(t),
    )


def _parse_topology(t: dict[str, Any]) -> dict[str, Any]:
    """``sim.topology`` and the costs of topology ``ps`` (durations >= 0, only with it)."""
    topology = choice(t.get("topology", "shared"), "sim.topology", TOPOLOGIES)
    out: dict[str, Any] = {"topology": topology}
    allowed = "a duration >= 0 such as '500us', '2ns' or '0'"
    for key in DEFAULT_PS_COSTS:
        value = t.get(key)
        if value is None:
            continue
        if topology != "ps":
            raise OptionError(f"sim.{key}", value, "only with sim.topology = 'ps' (a cost of "
                              "the parameter-server topology)", "cannot be used")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise OptionError(f"sim.{key}", value, allowed,
                              f"is {a_type(value)}, not a duration")
        try:
            seconds = parse_duration(value)
        except UnitsError:
            raise OptionError(f"sim.{key}", value, allowed) from None
        if not (math.isfinite(seconds) and 0 <= seconds <= MAX_MEAN):
            raise OptionError(f"sim.{key}", value, f"{allowed}, at most {MAX_MEAN:g} s",
                              "is out of range")
        out[key] = str(value)
    return out


def _parse_dist(raw: Any) -> DistSpec:
    t = table(raw, "dist", TABLE_KEYS["dist"])
    address = t.get("address")
    if address is not None:
        text(address, "dist.address", "'auto' or HOST:PORT of a running Ray cluster")
        if not address.strip():
            raise OptionError("dist.address", address,
                              "'auto' or HOST:PORT of a running Ray cluster", "is empty")
    net_delay = t.get("net_delay")
    if net_delay is not None:
        net_delay = _distribution(net_delay, "dist.net_delay", per_param=False)
    return DistSpec(address=address,
                    shards=integer(t.get("shards", DEFAULT_SHARDS), "dist.shards", 1,
                                   MAX_SHARDS),
                    net_delay=net_delay)


def _parse_record(raw: Any) -> RecordSpec:
    t = table(raw, "record", TABLE_KEYS["record"])
    rows = t.get("rows", "all")
    try:
        selection = RowSelection.parse(rows)
    except ValueError:
        raise OptionError("record.rows", rows, ROWS_ALLOWED) from None
    if selection.every > MAX_COUNT:
        raise OptionError("record.rows", rows, ROWS_ALLOWED, "is out of range")
    return RecordSpec(rows=rows)


def _parse_controller(raw: Any, workers: int, algorithm: str) -> ControllerSpec:
    """The [controller] table, checked by building the controller for ``workers`` threads."""
    t = table(raw, "controller", TABLE_KEYS["controller"])
    name = choice(t.get("name", "static"), "controller.name", tuple(CONTROLLERS))
    options = _options(t.get("options", {}), "controller.options")
    if name != "static" and algorithm not in asynchronous_names():
        raise OptionError("controller.name", name,
                          f"static with algorithm {algorithm} (elastic control needs an "
                          f"asynchronous algorithm: {', '.join(asynchronous_names())})")
    make_controller(name, workers, **options)  # its errors name controller.options.KEY
    return ControllerSpec(name=name, options=options)


def parse_body(raw: dict[str, Any]) -> dict[str, Any]:
    """Check the keys one run is made of (those of an experiment but its name, seeds, sweep
    and exclude); returns its parts as specs, by key."""
    if "problem" not in raw:
        raise OptionError("problem", None, "a [problem] table with name = \"MODEL-DATA\"",
                          "is missing")
    stop = _parse_stop(raw.get("stop", {"updates": 20000}))
    workers = integer(raw.get("workers", 1), "workers", 1, MAX_WORKERS)
    algorithm = _parse_algorithm(raw.get("algorithm", {}))
    return dict(
        engine=choice(raw.get("engine", "real"), "engine", engines.engine_names()),
        workers=workers,
        problem=_parse_problem(raw["problem"]),
        algorithm=algorithm,
        stepsize=_parse_stepsize(raw.get("stepsize", {}), workers),
        stop=stop,
        eval=_parse_eval(raw.get("eval", {}), stop),
        sim=_parse_sim(raw.get("sim", {})),
        controller=_parse_controller(raw.get("controller", {}), workers, algorithm.name),
        record=_parse_record(raw.get("record", {})),
        dist=_parse_dist(raw.get("dist", {})),
        slowdown=parse_slowdown(raw.get("slowdown"), workers),
    )
