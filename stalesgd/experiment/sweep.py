"""Sweeps: the ``[sweep]`` and ``exclude`` keys, and the expansion into one spec per run.

:func:`expand` turns an :class:`~stalesgd.experiment.spec.Experiment` into its runs: the
cartesian product of the sweep (less the excluded points), times the seeds, each point checked
like a run of its own.  Algorithm ``seq`` always runs one worker: its runs get ``workers = 1``
(and a slowdown of worker 0 at most), and sweep points that differ only in workers collapse.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stalesgd.algorithms import get_algorithm
from stalesgd.experiment.spec import (
    DEFAULT_SHARDS,
    DistSpec,
    Experiment,
    ExperimentError,
    RunSpec,
    SimSpec,
    plain,
    uses_servers,
)
from stalesgd.experiment.tables import TABLE_KEYS, parse_body
from stalesgd.slowdown import canonical_slowdown, slowdown_factors, sweep_value
from stalesgd.validation import OptionError, a_type

__all__ = ["DATA_FILE_KEY", "MAX_RUNS", "absolute_path", "expand", "parse_exclude", "parse_sweep"]

#: engines that run for real: they read no ``[sim]`` setting
REAL_ENGINES = ("real", "ray")
#: most runs one experiment may have (sweep points × seeds)
MAX_RUNS = 100_000


def _flatten_sweep(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"stepsize": {"rule": [...]}}`` (unquoted dotted keys) -> ``{"stepsize.rule": [...]}``."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and path != "slowdown":  # (a slowdown may be a table)
            flat.update(_flatten_sweep(value, path))
        else:
            flat[path] = value
    return flat


def _check_sweep_key(key: str, value: Any) -> None:
    parts = key.split(".")
    allowed = ("engine, workers, slowdown, or TABLE.KEY for the keys of [problem], [algorithm], "
               "[stepsize], [stop], [eval], [sim], [controller], [record], or "
               "TABLE.options.NAME")
    if len(parts) == 1 and parts[0] in ("engine", "workers", "slowdown"):
        return
    if len(parts) == 2 and parts[0] in TABLE_KEYS and parts[1] in TABLE_KEYS[parts[0]] \
            and parts[1] != "options":
        return
    if len(parts) >= 3 and parts[0] in ("problem", "algorithm", "stepsize", "controller") \
            and parts[1] == "options":
        return
    raise OptionError(f"sweep.{key}", value, allowed, "is not a key that can be swept")


def _set_path(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise OptionError(key, value, "a path through tables", "cannot be set")
    node[parts[-1]] = copy.deepcopy(value)


def _get_path(raw: dict[str, Any], key: str) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_sweep(raw: Any) -> dict[str, tuple[Any, ...]]:
    """The ``[sweep]`` table as dotted key -> the values it takes."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise OptionError("sweep", raw, "a [sweep] table of key = [values]",
                          f"is {a_type(raw)}, not a table")
    sweep: dict[str, tuple[Any, ...]] = {}
    for key, values in _flatten_sweep(raw).items():
        _check_sweep_key(key, values)
        if not isinstance(values, list) or not values:
            raise OptionError(f"sweep.{key}", values, "a non-empty array of values",
                              "is not a non-empty array")
        if key == "slowdown":  # one canonical form per value (a table or text)
            values = [sweep_value(v, f"sweep.slowdown[{i}]") for i, v in enumerate(values)]
        if key == DATA_FILE_KEY:
            values = [absolute_path(v) for v in values]
        sweep[key] = tuple(copy.deepcopy(values))
    return sweep


#: the problem option naming a data file (the data set ``file``), as a swept key
DATA_FILE_KEY = "problem.options.file"


def absolute_path(value: Any) -> Any:
    """A data file's relative path as the absolute one it names from the current folder (a
    leading ``~`` as the home folder, as a shell would), so that an experiment, and the
    config.toml a results folder keeps of it, name the same file from any folder (anything
    but a non-empty string is left for the checks to refuse)."""
    return str(Path(value).expanduser().absolute()) if isinstance(value, str) and value \
        else value


def parse_exclude(raw: Any, sweep: dict[str, tuple[Any, ...]]) -> tuple[dict[str, Any], ...]:
    """``exclude``: the sweep points left out, each a table of swept key = one of its values."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise OptionError("exclude", raw, "an array of tables of swept key = value, e.g. "
                          "exclude = [{engine = \"real\", workers = 64}]")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not entry:
            raise OptionError(f"exclude[{i}]", entry, "a non-empty table of swept key = value")
        flat = _flatten_sweep(entry)
        for key, value in flat.items():
            if key == "slowdown" and key in sweep:
                value = flat[key] = sweep_value(value, f"exclude[{i}].slowdown")
            if key == DATA_FILE_KEY:
                value = flat[key] = absolute_path(value)
            if key not in sweep:
                raise OptionError(f"exclude[{i}].{key}", value,
                                  f"a swept key ({', '.join(sweep) or 'nothing is swept'})",
                                  "is not swept")
            if value not in sweep[key]:
                raise OptionError(f"exclude[{i}].{key}", value,
                                  f"one of the swept values {list(sweep[key])}",
                                  "is never swept")
        out.append(flat)
    return tuple(out)


def _asdict_body(body: dict[str, Any]) -> dict[str, Any]:
    """The parsed parts of a run as a plain nested dict (dataclasses turned into dicts)."""
    return {k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in body.items()}


def expand(exp: Experiment) -> list[RunSpec]:
    """One :class:`RunSpec` per run: the cartesian product of the sweep (less the points
    ``exclude`` names), times the seeds.

    Sweep keys vary slowest in the order written, seeds fastest.  ``seq`` runs one worker, so
    points that then coincide are run once; so are runs of the real engines (:data:`REAL_ENGINES`)
    that differ only in ``[sim]`` settings (those runs keep the default settings), and runs of
other engines than ``ray`` that differ only in ``[dist]`` settings.  Every point is
    checked like a run of its own (an :class:`ExperimentError` names the point and the key);
    more than :data:`MAX_RUNS` runs are refused before any is built.
    """
    keys = list(exp.sweep)
    planned = math.prod(len(exp.sweep[k]) for k in keys) * len(exp.seeds)
    if planned > MAX_RUNS:
        raise ExperimentError("sweep", {k: len(v) for k, v in exp.sweep.items()},
                              f"at most {MAX_RUNS} runs (sweep points × seeds)",
                              f"makes {planned} runs with {len(exp.seeds)} seeds")
    base = exp.to_dict()
    for key in ("name", "seeds", "sweep", "exclude"):
        base.pop(key, None)
    runs: list[RunSpec] = []
    seen: set[str] = set()
    for combo in itertools.product(*(exp.sweep[k] for k in keys)):
        chosen = dict(zip(keys, combo, strict=True))
        if any(all(chosen[k] == v for k, v in ex.items()) for ex in exp.exclude):
            continue
        raw = copy.deepcopy(base)
        try:
            for key, value in zip(keys, combo, strict=True):
                _set_path(raw, key, value)
            body = parse_body(raw)
        except OptionError as exc:
            where = f"sweep point {chosen}: " if keys else ""
            raise ExperimentError(f"{where}{exc.key}", exc.value, exc.allowed,
                                  exc.problem) from None
        fixed = get_algorithm(body["algorithm"].name).fixed_workers
        if fixed is not None:
            body["workers"] = fixed
            # (and slows down only the workers it has)
            factors = slowdown_factors(body["slowdown"], body["workers"])
            body["slowdown"] = canonical_slowdown(dict(enumerate(factors)))
        if body["engine"] in REAL_ENGINES:  # simulator settings do not make them differ
            body["sim"] = SimSpec()
        if body["engine"] != "ray":  # ... nor distributed-engine settings the others (a
            # simulated parameter server keeps its shards and message delay)
            dist = body["dist"]
            body["dist"] = (DistSpec(shards=dist.shards, net_delay=dist.net_delay)
                            if uses_servers(body["engine"], body["sim"]) else DistSpec())
        if body["algorithm"].name != "hogwild":  # ... nor shards, which only hogwild splits
            body["dist"] = dataclasses.replace(body["dist"], shards=DEFAULT_SHARDS)
        point = {k: _get_path(plain(_asdict_body(body)), k) for k in keys}
        for seed in exp.seeds:
            fingerprint = repr((sorted(plain(_asdict_body(body)).items()), seed))
            if fingerprint in seen:
                continue
            seen.add(fingerprint)
            idx = len(runs)
            runs.append(RunSpec(experiment=exp.name, run_id=f"r{idx:04d}", index=idx, seed=seed,
                                point=point, **body))
    return runs
