"""Reading an experiment: a TOML file or text, or the dict read from one, checked whole.

:func:`parse_experiment` checks every key and every sweep point and resolves the defaults,
so that a bad value fails when the experiment is read rather than halfway through a sweep;
its :class:`~stalesgd.experiment.spec.ExperimentError` names the file, the key, the value
and what is allowed.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from stalesgd.experiment.spec import (
    DEFAULT_SHARDS,
    DistSpec,
    Experiment,
    ExperimentError,
    uses_servers,
)
from stalesgd.experiment.sweep import (
    MAX_RUNS,
    absolute_path,
    expand,
    parse_exclude,
    parse_sweep,
)
from stalesgd.experiment.tables import BODY_KEYS, parse_body
from stalesgd.seeds import MAX_SEED
from stalesgd.validation import OptionError, integer, table

__all__ = ["MAX_NAME", "load_experiment", "loads_experiment", "parse_experiment"]

#: longest experiment name (its results folder is the name and a time stamp)
MAX_NAME = 200
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_KEYS = ("name", "seeds", "seed", "repeats", *BODY_KEYS, "sweep", "exclude")


def _parse_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value) or len(value) > MAX_NAME:
        raise OptionError("name", value, f"a name of at most {MAX_NAME} letters, digits, '_', "
                          "'-' and '.', starting with a letter or digit")
    return value


def _parse_seeds(raw: dict[str, Any]) -> tuple[int, ...]:
    allowed = f"integers in 0..{MAX_SEED}"
    if "seeds" in raw:
        for key in ("seed", "repeats"):
            if key in raw:
                raise OptionError(key, raw[key], "either seeds = [...] or seed with repeats",
                                  "is set together with seeds")
        seeds = raw["seeds"]
        if not isinstance(seeds, list) or not seeds:
            raise OptionError("seeds", seeds, f"a non-empty array of {allowed}")
        for i, s in enumerate(seeds):
            integer(s, f"seeds[{i}]", 0, MAX_SEED)
        if len(set(seeds)) != len(seeds):
            raise OptionError("seeds", seeds, f"distinct {allowed}", "repeats a seed")
        return tuple(seeds)
    seed = integer(raw.get("seed", 0), "seed", 0, MAX_SEED)
    repeats = integer(raw.get("repeats", 1), "repeats", 1, min(MAX_RUNS, MAX_SEED - seed + 1),
                      allowed=f"an integer in 1..{MAX_RUNS} with seed + repeats - 1 <= "
                              f"{MAX_SEED}")
    return tuple(range(seed, seed + repeats))


def parse_experiment(raw: dict[str, Any], source: str | None = None,
                     default_name: str = "experiment") -> Experiment:
    """Validate a raw experiment (the dict read from TOML) and resolve its defaults.

    ``source`` (a file name, 'command line') prefixes error messages.  Every sweep point is
    validated too, so that a bad value fails here rather than halfway through a sweep.
    """
    try:
        raw = _absolute_data_file(table(raw, "", _TOP_KEYS))
        name = _parse_name(raw.get("name", default_name))
        body = parse_body(raw)
        sweep = parse_sweep(raw.get("sweep"))
        exp = Experiment(name=name, seeds=_parse_seeds(raw), sweep=sweep,
                         exclude=parse_exclude(raw.get("exclude"), sweep), **body)
        runs = expand(exp)  # validates every sweep point
        _check_dist_is_used(exp, runs)
        return exp
    except OptionError as exc:
        raise ExperimentError.of(exc, source) from None


def _absolute_data_file(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw experiment with its data file's path made absolute (:func:`absolute_path`)."""
    problem = raw.get("problem")
    options = problem.get("options") if isinstance(problem, dict) else None
    if not isinstance(options, dict) or "file" not in options:
        return raw
    return {**raw, "problem": {**problem, "options": {**options,
                                                       "file": absolute_path(options["file"])}}}


def _check_dist_is_used(exp: Experiment, runs: list) -> None:
    """``[dist]`` settings (or a sweep over them) in an experiment none of whose runs has
    parameter servers (engine ``ray``, or ``sim`` with topology ``ps``) would be ignored:
    refuse them; so are shards without a Hogwild! run on servers and a cluster address
    without a ``ray`` run."""
    swept = [k for k in exp.sweep if k.startswith("dist.")]
    allowed = ("[dist] settings with engine = \"ray\" or a simulation with sim.topology = "
               "\"ps\" (they set the parameter servers; no run of this experiment has any)")
    if (exp.dist != DistSpec() or swept) and not any(uses_servers(r.engine, r.sim)
                                                      for r in runs):
        set_keys = [f for f, v in exp.dist.__dict__.items() if v != getattr(DistSpec(), f)]
        key = swept[0] if swept else f"dist.{set_keys[0]}"
        value = list(exp.sweep[key]) if swept else getattr(exp.dist, set_keys[0])
        raise OptionError(key, value, allowed, "is set but never used")
    shards = list(exp.sweep.get("dist.shards", [exp.dist.shards]))
    if any(k != DEFAULT_SHARDS for k in shards) and not any(
            uses_servers(r.engine, r.sim) and r.algorithm.name == "hogwild" for r in runs):
        value = shards if "dist.shards" in swept else exp.dist.shards
        raise OptionError("dist.shards", value, "a number of servers for algorithm = "
                          "\"hogwild\" (the other algorithms keep θ on one server)",
                          "is set but no run splits θ over servers")
    if (exp.dist.address is not None or "dist.address" in swept) and not any(
            r.engine == "ray" for r in runs):
        value = exp.sweep.get("dist.address", exp.dist.address)
        raise OptionError("dist.address", value, "a cluster address with engine = \"ray\"",
                          "is set but no run uses the distributed engine")


def load_experiment(path: str | Path) -> Experiment:
    """Read, validate and resolve the experiment in the TOML file ``path``.

    The experiment's name defaults to the file's stem.  A file that cannot be read or is
    not TOML is an :class:`ExperimentError` too.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError("(file)", path.name, "valid TOML",
                              f"is not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ExperimentError("(file)", path.name, "a TOML file (UTF-8 text)",
                              "is not UTF-8 text") from None
    except OSError as exc:
        raise ExperimentError("(file)", str(path), "a readable experiment file (TOML)",
                              f"cannot be read ({exc.strerror or exc})") from None
    return parse_experiment(raw, source=path.name, default_name=path.stem)


def loads_experiment(text: str, source: str | None = None) -> Experiment:
    """Like :func:`load_experiment`, from TOML text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError("(text)", text[:40], "valid TOML", f"is not valid TOML ({exc})",
                              source=source) from None
    return parse_experiment(raw, source=source)
