"""Stragglers on purpose: ``slowdown`` makes chosen workers compute F times slower.

Heterogeneous workers are where asynchrony pays off over a barrier and where staleness
grows a tail: a slow worker's gradients arrive late, computed on old parameters.  A run's
``slowdown`` names workers and factors, ``"1=3"`` (worker 1 three times slower) or
``"1=3,2=1.5"``; in an experiment file also as a table, ``slowdown = {1 = 3.0}``.

What each engine does with it:

* ``real`` and ``ray``: after each gradient, the worker spins for (F − 1) × the time that
  gradient took, on its own core (a straggler that holds its CPU, as a slower core or a
  co-located job would), and checks the stop flag while it spins;
* ``sim``: the worker's compute time is multiplied by F (for a calibrated simulation the
  calibrated compute time, which also holds the minibatch draw and the record write, so the
  simulated straggler is slightly slower than the real one when those costs matter).

The canonical form (what the runs table's ``slowdown`` column and ``config.toml`` hold) lists
workers in ascending order with factors to 12 significant digits; factors of 1 are left out
and no slowdown at all is ``None``, so that ``slowdown = ["", "1=2", "1=4"]`` sweeps from the
baseline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from stalesgd.validation import OptionError, type_name

__all__ = ["ALLOWED", "MAX_FACTOR", "canonical_slowdown", "parse_slowdown",
           "slowdown_factors", "sweep_value"]

#: a factor as text: ASCII digits, a point, an exponent
_NUMBER = re.compile(r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?|[0-9]+\.")
#: largest slowdown factor (a worker 1000 times slower than the others)
MAX_FACTOR = 1000.0
ALLOWED = ("WORKER=FACTOR pairs, comma-separated (e.g. '1=3' or '1=3,2=1.5'; WORKER an index "
           f"of this run's workers, FACTOR a number in 1..{MAX_FACTOR:g}), or a table such as "
           "{1 = 3.0}; '' for none")


def _pairs(value: Any, key: str) -> list[tuple[Any, Any]]:
    """``value`` (text or table) as raw (worker, factor) pairs, syntax checked."""
    if isinstance(value, Mapping):
        return list(value.items())
    if not isinstance(value, str):
        kind = type_name(value)
        article = "an" if kind[0] in "aeiou" else "a"
        raise OptionError(key, value, ALLOWED, f"is {article} {kind}, not a string or table")
    pairs = []
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        worker, sep, factor = item.partition("=")
        if not sep:
            raise OptionError(key, value, ALLOWED, f"has {item!r}, not WORKER=FACTOR")
        pairs.append((worker.strip(), factor.strip()))
    return pairs


def _worker_index(raw: Any, value: Any, key: str, workers: int) -> int:
    text = str(raw).strip() if not isinstance(raw, bool) else ""
    if isinstance(raw, int) and not isinstance(raw, bool):
        index = int(raw)
    elif text.isascii() and text.isdigit():
        index = int(text)
    else:
        raise OptionError(key, value, ALLOWED, f"names worker {raw!r}, not a worker index")
    if not 0 <= index < workers:
        raise OptionError(key, value, ALLOWED,
                          f"names worker {index}, but this run has {workers} worker"
                          f"{'s' if workers != 1 else ''} (0..{workers - 1}; in a sweep over "
                          "workers, leave such points out with exclude)")
    return index


def _factor(raw: Any, value: Any, key: str, worker: int) -> float:
    if isinstance(raw, bool):
        factor = math.nan
    elif isinstance(raw, int | float | np.integer | np.floating):
        factor = float(raw)
    elif isinstance(raw, str) and _NUMBER.fullmatch(raw.strip()):
        factor = float(raw)
    else:
        factor = math.nan  # (not float(): it takes '٣' and '1_0')
    if not (math.isfinite(factor) and 1.0 <= factor <= MAX_FACTOR):
        raise OptionError(key, value, ALLOWED,
                          f"gives worker {worker} the factor {raw!r}, not a number in "
                          f"1..{MAX_FACTOR:g} (a worker can be slowed down, not sped up)")
    return factor


def parse_slowdown(value: Any, workers: int, key: str = "slowdown") -> str | None:
    """The canonical form of ``value`` for a run of ``workers`` workers (``None``: no worker
    slowed); an :class:`~stalesgd.validation.OptionError` names what is wrong."""
    if value is None:
        return None
    factors: dict[int, float] = {}
    for raw_worker, raw_factor in _pairs(value, key):
        worker = _worker_index(raw_worker, value, key, workers)
        if worker in factors:
            raise OptionError(key, value, ALLOWED, f"names worker {worker} twice")
        factors[worker] = _factor(raw_factor, value, key, worker)
    return canonical_slowdown(factors)


def sweep_value(value: Any, key: str = "slowdown") -> str:
    """A swept or excluded slowdown in canonical form ('' for none), its syntax checked
    (whether its workers exist is checked per run): so that ``{1 = 2}``, ``"1=2"`` and
    ``"01=2.0"`` are one sweep value."""
    return parse_slowdown(value, 2**62, key) or ""


def canonical_slowdown(factors: Mapping[int, float]) -> str | None:
    """``{worker: factor}`` as the canonical text (factors of 1 left out; ``None`` if none
    is left)."""
    kept = [(int(w), f"{float(f):.12g}") for w, f in sorted(factors.items())]
    return ",".join(f"{w}={f}" for w, f in kept if f != "1") or None


def _factors(canonical: str | None) -> dict[int, float]:
    if not canonical:
        return {}
    out = {}
    for item in canonical.split(","):
        worker, _, factor = item.partition("=")
        out[int(worker)] = float(factor)
    return out


def slowdown_factors(canonical: str | None, workers: int) -> np.ndarray:
    """Every worker's slowdown factor (1.0 for those not slowed) from the canonical text."""
    out = np.ones(int(workers), dtype=np.float64)
    for worker, factor in _factors(canonical).items():
        if worker < out.size:
            out[worker] = factor
    return out
