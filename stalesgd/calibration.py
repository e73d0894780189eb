"""The calibration file: a simulator timing model fitted to real runs, as JSON.

A calibration is written by ``stalesgd calibrate REAL_DIR`` (the fitting lives in
:mod:`stalesgd.analysis.calibrate`) and read by the simulator (``--calibration FILE``,
``[sim] calibration``).  This module is the contract between the two: the format name and
version (:data:`FORMAT`, :data:`VERSION`), the :class:`Calibration` document with its
accessors, :func:`load_calibration` (validates a file; every error names the file and the
problem) and :func:`check_compatible` (the file was fitted to the run's problem, batch and
dtype, on which compute times depend).

The document's main keys: ``problem`` (name, batch, dtype, n_params, options), ``machine``,
``cores``, ``effective_cores``, ``time_slice``, the per-parameter costs ``read_per_param``,
``update_per_param``, ``fused_per_param`` and ``cas_cost`` (seconds), ``lock_handover``, the
``pooled`` compute model and one entry per measured (algorithm, workers) in
``configurations``; a compute model has a parametric ``fit`` (gamma or log-normal: mean, cv)
and ``samples_ns`` for empirical resampling.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FORMAT",
    "VERSION",
    "Calibration",
    "CalibrationError",
    "check_compatible",
    "load_calibration",
]

FORMAT = "stalesgd-calibration"
VERSION = 1


class CalibrationError(ValueError):
    """A results folder that cannot be calibrated, or a bad/incompatible calibration file."""


@dataclass
class Calibration:
    """A fitted timing model: the JSON document (``data``) and where it came from."""

    data: dict[str, Any]
    path: Path | None = None

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON to ``path`` (parent folders must exist); returns the path.
        Raises :class:`CalibrationError` when ``path`` is a folder or cannot be written."""
        path = Path(path)
        if path.is_dir():
            raise CalibrationError(f"cannot write the calibration to {path}: it is a folder; "
                                   "give a file name, e.g. calibration.json")
        try:
            path.write_text(json.dumps(self.data, indent=1, allow_nan=False))
        except OSError as exc:
            raise CalibrationError(f"cannot write the calibration to {path} "
                                   f"({exc.strerror or exc})") from None
        self.path = path
        return path

    def configuration(self, algorithm: str, workers: int) -> dict[str, Any] | None:
        """The measured configuration entry for (algorithm, workers), or None."""
        for c in self.data["configurations"]:
            if c["algorithm"] == algorithm and int(c["workers"]) == int(workers):
                return c
        return None

    def nearest_configuration(self, algorithm: str, workers: int) -> dict[str, Any] | None:
        """The measured configuration of ``algorithm`` closest to ``workers`` from below (the
        most workers not above it; else the fewest above), or None when it was not
        measured at all: what a prediction of an unmeasured worker count starts from."""
        same = [c for c in self.data["configurations"] if c["algorithm"] == algorithm]
        if not same:
            return None
        below = [c for c in same if int(c["workers"]) <= int(workers)]
        if below:
            return max(below, key=lambda c: int(c["workers"]))
        return min(same, key=lambda c: int(c["workers"]))

    @property
    def topology(self) -> str:
        """``"ps"`` for a calibration of the parameter-server topology (fitted to runs of the
        distributed engine), else ``"shared"``."""
        return str(self.data.get("topology", "shared"))

    def network_jitter(self, algorithm: str, workers: int) -> float:
        """Topology ``ps``: the message-time jitter fitted to ``algorithm``'s measured
        configuration with ``workers`` workers, else to its nearest measured one (the most
        workers not above, else the fewest above); 0 when not measured."""
        entry = (self.configuration(algorithm, workers)
                 or self.nearest_configuration(algorithm, workers))
        return 0.0 if entry is None else float(entry.get("network_jitter") or 0.0)

    @property
    def max_workers(self) -> int | None:
        """The most workers of the runs it was fitted to when the fit was restricted to them
        (``stalesgd calibrate --max-workers N``), else None."""
        value = self.data.get("source", {}).get("max_workers")
        return None if value is None else int(value)

    @property
    def scope(self) -> str | None:
        """``"m<=N"`` for a calibration restricted to runs of at most N workers (its
        simulations of more workers are out-of-sample predictions), else None."""
        return None if self.max_workers is None else f"m<={self.max_workers}"

    def summary_text(self) -> str:
        """A short human-readable summary of the fitted model."""
        d = self.data
        us = 1e6
        p = d["problem"]
        lines = [
            f"calibration of {p['name']} (batch {p['batch']}, {p['dtype']}, {p['n_params']} "
            f"params) from runs {', '.join(d['source']['run_ids'])} of {d['source']['folder']}"
            + (f" (only runs with at most {self.max_workers} worker"
               f"{'s' if self.max_workers != 1 else ''})"
               if self.max_workers is not None else ""),
            *([f"left out: runs {', '.join(d['source']['skipped_run_ids'])} (an algorithm "
               "without a calibrated model, or workers slowed down on purpose)"]
              if d["source"].get("skipped_run_ids") else []),
            *([f"left out as unsteady (a steady run of the same configuration is used): "
               f"{', '.join(d['source']['left_out_unsteady'])}"]
              if d["source"].get("left_out_unsteady") else []),
            *[f"not a steady machine in run {rid}: {'; '.join(found['why'])}"
              for rid, found in (d["source"].get("disturbed_runs") or {}).items()],
            *([f"runs whose CPUs were on cores without a shared cache at both ends: "
               f"{', '.join(d['source']['runs_on_cpus_apart'])} (the same code is slower "
               "there when workers share parameters often)"]
              if d["source"].get("runs_on_cpus_apart") else []),
            *(["runs whose monitor (evaluations, record) took a tenth of a core or more, which "
               "the workers did not have and the simulator does not model: "
               + ", ".join(f"{rid} ({share:.2f})" for rid, share in
                           d["source"]["monitor_core_share"].items())]
              if d["source"].get("monitor_core_share") else []),
            f"machine: {d['machine'].get('hostname')} ({d['machine'].get('cpu_model')}), "
            f"cores = {d['cores']}, time slice = {d['time_slice'] * 1e3:.3g} ms "
            f"({d['time_slice_source']})",
            f"per parameter: read {d['read_per_param'] * 1e9:.3g} ns, update "
            f"{d['update_per_param'] * 1e9:.3g} ns, fused copy-apply "
            f"{d['fused_per_param'] * 1e9:.3g} ns ({d['costs_source']})",
            f"cas {d['cas_cost'] * 1e9:.3g} ns; lock hand-over {d['lock_handover'] * 1e9:.3g} ns "
            f"({d['lock_handover_source']})",
        ]
        net = d.get("network")
        if self.topology == "ps" and isinstance(net, dict):
            lines.append(
                f"parameter servers: latency {net['latency'] * us:.3g} us, per byte "
                f"{net['per_byte'] * 1e9:.3g} ns, server time {net['server_time'] * us:.3g} us "
                f"per message (fitted to {', '.join(net.get('fitted_to', []))}; log-rate "
                f"error {net.get('fit_error', math.nan):.3g}), shards {net.get('shards', 1)}; "
                f"one machine of {net.get('cores', 0):.3g} effective cores "
                f"({net.get('cores_source', '')})")
        pooled = d["pooled"]
        f = pooled["fit"]
        lines.append(f"compute, pooled: mean {pooled['mean'] * us:.3g} us, cv {pooled['cv']:.3g},"
                     f" n = {pooled['n']}; best fit {f['kind']}:{f['mean'] * us:.3g}us:"
                     f"{f['cv']:.3g}")
        for c in d["configurations"]:
            m = c["compute"]
            extra = ""
            if c.get("leashed"):
                extra = f", failed publishes/update {c['leashed']['failed_per_update']:.3g}"
            if c.get("hogwild_write_s") is not None:
                extra += (f", write after the claim {c['hogwild_write_s'] * us:.3g} us "
                          f"({c.get('hogwild_write_source', '')})")
            if c.get("network_jitter") is not None:
                extra += (f", jitter {c['network_jitter']:.3g}: simulated "
                          f"{c.get('simulated_updates_per_s', math.nan):,.0f} updates/s, τ "
                          f"total variation {c.get('tau_tv', math.nan):.3g}")
            lines.append(
                f"  {c['algorithm']:8s} m={c['workers']:<3d} compute mean {m['mean'] * us:.3g} us "
                f"cv {m['cv']:.3g} ({m['fit']['kind']}), {c['updates_per_s']:,.0f} updates/s "
                f"from the first read to the last apply (the runs table divides by the whole "
                f"run), mean tau {c['mean_tau']:.3g}"
                + (f", {c['preempted_cycles']} descheduled cycles left out"
                   if c["oversubscribed"] else "") + extra
                + _shared_note(c.get("effective_cores"), min(c["workers"], d["cores"])))
        return "\n".join(lines)


def _shared_note(effective: int | None, could: int) -> str:
    """A note when a configuration got fewer cores than it could use (other load shared the
    machine): its simulation gets those cores unless ``--cores`` says otherwise."""
    if effective is None or effective >= could:
        return ""
    return (f"; it effectively had {effective} of {could} core{'s' if could > 1 else ''} "
            "(shared with other load): simulations of it get as many unless --cores is set")


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format": str, "version": int, "source": dict, "machine": dict, "problem": dict,
    "cores": int, "time_slice": (int, float), "read_per_param": (int, float),
    "update_per_param": (int, float), "fused_per_param": (int, float),
    "cas_cost": (int, float), "lock_handover": (int, float), "default_model": str,
    "pooled": dict, "configurations": list,
}


#: the largest value each duration may take (seconds): far beyond any machine, but finite,
#: so that a damaged file is refused rather than simulating nothing
_MOST_SECONDS: dict[str, float] = {
    "time_slice": 10.0, "read_per_param": 1e-3, "update_per_param": 1e-3,
    "fused_per_param": 1e-3, "cas_cost": 1.0, "lock_handover": 1.0,
}
#: the largest mean compute time (seconds) and coefficient of variation of a compute model
_MOST_MEAN, _MOST_CV = 1e4, 100.0


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file; errors name the file and the problem."""
    path = Path(path)
    if path.is_dir():
        hint = path / "calibration.json"
        raise CalibrationError(
            f"calibration file {path} is a folder, not a file"
            + (f" (did you mean {hint}?)" if hint.is_file() else
               " (write one with `stalesgd calibrate REAL_DIR`)"))
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} does not exist (write one with "
                               "`stalesgd calibrate REAL_DIR`)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"calibration file {path} is not valid JSON ({exc})") from None
    except OSError as exc:
        raise CalibrationError(f"calibration file {path} cannot be read "
                               f"({exc.strerror or exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        fmt = data.get("format") if isinstance(data, dict) else None
        raise CalibrationError(f"calibration file {path} is not a stalesgd calibration "
                               f"(format = {fmt!r}, expected {FORMAT!r})")
    if data.get("version") != VERSION:
        raise CalibrationError(f"calibration file {path} has version {data.get('version')!r}; "
                               f"this stalesgd reads version {VERSION} (re-run calibrate)")
    for key, kind in _REQUIRED.items():
        if key not in data:
            raise CalibrationError(f"calibration file {path} lacks the key {key!r}")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise CalibrationError(f"calibration file {path}: {key} = {data[key]!r} has the "
                                   f"wrong type")
    for key, most in _MOST_SECONDS.items():
        if not (math.isfinite(data[key]) and 0 <= data[key] <= most):
            raise CalibrationError(f"calibration file {path}: {key} = {data[key]!r} must be a "
                                   f"number of seconds in 0..{most:g}")
    if not data["configurations"]:
        raise CalibrationError(f"calibration file {path}: configurations is empty (a "
                               "calibration fits at least one measured configuration)")
    if data["time_slice"] <= 0 or data["cores"] < 1:
        raise CalibrationError(f"calibration file {path}: time_slice and cores must be > 0")
    if data["default_model"] not in ("empirical", "parametric"):
        raise CalibrationError(f"calibration file {path}: default_model = "
                               f"{data['default_model']!r}; allowed: empirical, parametric")
    for where, model in [("pooled", data["pooled"])] + [
            (f"configurations[{i}].compute", c.get("compute") if isinstance(c, dict) else None)
            for i, c in enumerate(data["configurations"])]:
        _check_model(path, where, model)
    if data.get("topology", "shared") not in ("shared", "ps"):
        raise CalibrationError(f"calibration file {path}: topology = {data['topology']!r}; "
                               "allowed: shared, ps")
    if data.get("topology") == "ps":
        _check_network(path, data)
    bound = data["source"].get("max_workers")
    if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool) or bound < 1):
        raise CalibrationError(f"calibration file {path}: source.max_workers = {bound!r}; "
                               "allowed: an integer >= 1, or null")
    for key in ("name", "batch", "dtype", "n_params"):
        if key not in data["problem"]:
            raise CalibrationError(f"calibration file {path} lacks problem.{key}")
    return Calibration(data, path)


def _check_network(path: Path, data: dict[str, Any]) -> None:
    """A ``ps`` calibration's network costs and cores, and every configuration's jitter."""
    net = data.get("network")
    if not isinstance(net, dict):
        raise CalibrationError(f"calibration file {path}: topology ps needs a network table")
    for key in ("latency", "per_byte", "server_time"):
        value = net.get(key)
        if not (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value) and 0 <= value <= 10.0):
            raise CalibrationError(f"calibration file {path}: network.{key} = {value!r} must "
                                   "be a number of seconds in 0..10")
    cores = net.get("cores")
    if not (isinstance(cores, int | float) and not isinstance(cores, bool)
            and math.isfinite(cores) and 0 <= cores <= 1e6):
        raise CalibrationError(f"calibration file {path}: network.cores = {cores!r} must be a "
                               "number >= 0 (0: not one machine)")
    shards = net.get("shards")
    if not (isinstance(shards, int) and not isinstance(shards, bool) and shards >= 1):
        raise CalibrationError(f"calibration file {path}: network.shards = {shards!r} must be "
                               "an integer >= 1")
    for i, c in enumerate(data["configurations"]):
        j = c.get("network_jitter") if isinstance(c, dict) else None
        if not (isinstance(j, int | float) and not isinstance(j, bool) and math.isfinite(j)
                and 0 <= j <= 10):
            raise CalibrationError(f"calibration file {path}: configurations[{i}]."
                                   f"network_jitter = {j!r} must be a number in 0..10")


def _check_model(path: Path, where: str, model: Any) -> None:
    if not isinstance(model, dict):
        raise CalibrationError(f"calibration file {path}: {where} is not a compute model")
    s = model.get("samples_ns")
    if not isinstance(s, list) or not s or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in s):
        raise CalibrationError(f"calibration file {path}: {where}.samples_ns must be a "
                               "non-empty list of integer nanoseconds >= 0")
    fit = model.get("fit")
    if not isinstance(fit, dict) or fit.get("kind") not in ("gamma", "lognormal") or not (
            isinstance(fit.get("mean"), int | float) and 0 < fit["mean"] <= _MOST_MEAN
            and isinstance(fit.get("cv"), int | float) and 0 <= fit["cv"] <= _MOST_CV):
        raise CalibrationError(f"calibration file {path}: {where}.fit must be "
                               f"{{kind: gamma|lognormal, mean in (0, {_MOST_MEAN:g}] s, "
                               f"cv in 0..{_MOST_CV:g}}}")


def check_compatible(cal: Calibration, problem: str, batch: int, dtype: str,
                     n_params: int | None = None) -> None:
    """Raise :class:`CalibrationError` unless ``cal`` was fitted to this problem, batch and
    dtype (compute times depend on all three) and, when ``n_params`` is given, to a model of
    as many parameters (the problem's options, e.g. the features or hidden widths, match)."""
    p = cal.data["problem"]
    got = (problem, int(batch), str(dtype))
    want = (p["name"], int(p["batch"]), str(p["dtype"]))
    where = cal.path if cal.path is not None else "calibration"
    if got != want:
        raise CalibrationError(
            f"calibration file {where} was fitted to problem {want[0]} batch {want[1]} "
            f"{want[2]}; this run is {got[0]} batch {got[1]} {got[2]} (calibrate from a real "
            "run of the same problem, batch and dtype)")
    if n_params is not None and p.get("n_params") is not None and \
            int(p["n_params"]) != int(n_params):
        raise CalibrationError(
            f"calibration file {where} was fitted to a model of {int(p['n_params']):,} "
            f"parameters (problem options {p.get('options') or {}}); this run's has "
            f"{int(n_params):,} (calibrate from real runs with the same problem options)")
