"""The table a command prints when its runs are done: one line per run, and notes on what
did not go as asked."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stalesgd.experiment import RunSpec

__all__ = ["format_summary", "run_notes"]

#: stop reasons a run can be asked for (``stop_reason`` of the runs table)
ASKED_STOPS = ("updates", "seconds", "target")


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _asked(spec: RunSpec | None) -> tuple[str, ...]:
    """The stop rules ``spec`` asks for (all of them when the spec is not known)."""
    if spec is None:
        return ASKED_STOPS
    stop = spec.stop
    return tuple(reason for reason, on in (
        ("updates", stop.updates is not None), ("seconds", stop.seconds is not None),
        ("target", stop.target_loss is not None and stop.at_target)) if on)


def _count(value: Any) -> int:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return 0
    return int(value)


#: swept keys the table shows in columns of their own, or that the notes name otherwise
_SHOWN = {"engine", "algorithm.name", "stepsize.rule", "workers", "seeds", "seed", "slowdown",
          "problem.sampling"}


def _swept(spec: RunSpec | None) -> list[str]:
    """The run's values of swept keys the columns do not show (``batch=64``): without them
    the lines of a sweep over them would read alike."""
    if spec is None:
        return []
    return [f"{key.rsplit('.', 1)[-1]}={value}" for key, value in spec.point.items()
            if key not in _SHOWN]


def run_notes(summary: Mapping[str, Any], spec: RunSpec | None = None) -> list[str]:
    """What a reader of the run's line must know: the values of swept keys no column shows,
    minibatches from reshuffled epochs, workers slowed down on purpose, it diverged or was
    interrupted, it stopped for another reason than the ones asked (a cap, an error), some
    updates were applied with η = 0, or it is a simulation beyond what its calibration
    measured; a simulation of parameter servers, with its message delay."""
    notes = _swept(spec)
    if summary.get("sampling") == "epochs":
        notes.append("epochs")
    if summary.get("topology") == "ps":
        notes.append("parameter servers (sim topology ps)")
    delay = summary.get("net_delay")
    if isinstance(delay, str) and delay:
        notes.append(f"net delay {delay}")
    slowdown = summary.get("slowdown")
    if isinstance(slowdown, str) and slowdown:
        notes.append(f"slowdown {slowdown}")
    if summary.get("diverged"):
        notes.append("diverged")
    if summary.get("interrupted"):
        notes.append("interrupted")
    reason = summary.get("stop_reason")
    if reason and reason not in _asked(spec) and reason not in ("diverged", "interrupted"):
        notes.append(f"stopped: {reason}")
    zero = _count(summary.get("zero_step_updates"))
    if zero:
        notes.append(f"{zero} updates with η = 0")
    if summary.get("prediction") is True:
        notes.append("prediction (beyond the calibration)")
    return notes


def format_summary(summaries: list[dict[str, Any]],
                   specs: Mapping[str, RunSpec] | None = None) -> str:
    """A short plain-text table: per run, algorithm, step-size rule, workers, updates/s,
    final loss, time to target, and :func:`run_notes` (``specs`` maps run ids to their specs,
    which say what stop each run asked for)."""
    header = ("run", "engine", "algorithm", "step size", "workers", "seed", "updates/s",
              "final loss", "time to target (s)", "notes")
    rows = [header]
    for s in summaries:
        spec = (specs or {}).get(str(s.get("run_id")))
        engine = str(s.get("engine"))
        if engine == "sim" and s.get("topology") == "ps":  # the model of engine ray
            engine = "sim-ps"
        if s.get("calibration_scope"):  # an out-of-sample prediction, as reports name it
            engine += f"[{s['calibration_scope']}]"
        rows.append((str(s.get("run_id")), engine, str(s.get("algorithm")),
                     str(s.get("stepsize")), str(s.get("workers")), str(s.get("seed")),
                     _fmt(s.get("updates_per_s"), ".0f"), _fmt(s.get("final_loss"), ".4g"),
                     _fmt(s.get("time_to_target"), ".3g"), "; ".join(run_notes(s, spec))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    last = len(header) - 1
    lines = ["  ".join(c.ljust(w) if i < 4 or i == last else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
