"""Checks that need this machine, made before a sweep starts (and by ``--dry-run``).

Reading an experiment checks everything a file can get wrong
(:mod:`stalesgd.experiment`); what remains depends on where it runs: that the results root
can take a new folder, that every data set is on disk and sound, that every calibration file
fits its runs, and that each problem fits in memory.  Each check raises the error the run
would raise later (an :class:`~stalesgd.validation.OptionError`, a
:class:`~stalesgd.data.DataError`), so a sweep is refused before its folder exists.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from stalesgd.algorithms import get_algorithm
from stalesgd.calibration import CalibrationError, check_compatible, load_calibration
from stalesgd.data import DATASETS, check_files
from stalesgd.experiment import ExperimentError, RunSpec
from stalesgd.problems.registry import check_problem
from stalesgd.validation import OptionError

__all__ = ["FOLDER_SUFFIX", "check_calibrations", "check_data", "check_memory",
           "check_output_root"]

#: what a results folder's name adds to the experiment's name: ``-YYYYmmdd-HHMMSS-NNN``
FOLDER_SUFFIX = len("-20260101-120000-999")
_OUT_ALLOWED = "a folder to hold the results folder (created if missing), writable"
#: the same for a folder written into itself (a report's, a comparison's)
_INTO_ALLOWED = "a folder to write the report into (created if missing), writable"


def _limit(path: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(path, name))
    except (OSError, ValueError):
        return default


def _existing_ancestor(path: Path, key: str, text: str, allowed: str) -> Path:
    """The nearest folder of ``path`` (itself included) that exists."""
    probe = path.absolute()
    while True:
        try:
            if probe.exists():
                break
        except OSError as exc:  # a name too long, a loop of links
            raise OptionError(key, text, allowed,
                              f"cannot be used ({exc.strerror or exc})") from None
        probe = probe.parent
    if not probe.is_dir():
        raise OptionError(key, text, allowed, f"is inside {probe}, which is a file"
                          if probe != path.absolute() else "is a file")
    return probe


def check_output_root(root: str | Path, name: str | None, key: str = "out") -> None:
    """Refuse a folder to write into (a results root that will take a folder
    ``<name>-<time stamp>``, or with ``name`` None the folder itself) that is a file, lies
    inside a file, makes a name too long for the file system, or where nothing can be written
    (tried with a temporary folder, removed at once)."""
    text = str(root)
    allowed = _OUT_ALLOWED if name is not None else _INTO_ALLOWED
    if not text:
        raise OptionError(key, text, allowed, "is empty")
    path = Path(root)
    existing = _existing_ancestor(path, key, text, allowed)
    name_max = _limit(existing, "PC_NAME_MAX", 255)
    path_max = _limit(existing, "PC_PATH_MAX", 4096)
    parts = list(path.absolute().relative_to(existing).parts)
    if name is not None:
        parts.append(name + "x" * FOLDER_SUFFIX)
    for part in parts:
        if len(os.fsencode(part)) > name_max:
            raise OptionError(key, text, f"{allowed}; names of at most {name_max} bytes",
                              f"makes a name of {len(os.fsencode(part))} bytes")
    full = len(os.fsencode(str(path.absolute())))
    if name is not None:
        full += 1 + len(os.fsencode(parts[-1]))
    if full > path_max:
        raise OptionError(key, text, f"{allowed}; paths of at most {path_max} bytes",
                          f"makes a path of {full} bytes")
    try:
        Path(tempfile.mkdtemp(prefix=".stalesgd-write-test-", dir=existing)).rmdir()
    except OSError as exc:
        raise OptionError(key, text, allowed,
                          f"is not writable ({existing}: {exc.strerror or exc})") from None


def _file_based(spec: RunSpec) -> bool:
    """A data set found on the search path (the ``file`` set was read when it was checked;
    generated sets have no files)."""
    return spec.problem.data in DATASETS


def check_data(runs: Iterable[RunSpec]) -> None:
    """Every file-based data set the runs use is found, readable and sound (checksums when
    the run verifies them); raises the :class:`~stalesgd.data.DataError` loading would.
    The data set of the first run (the runs in the order they run) is kept parsed for its
    load, which then does not read the files again."""
    seen: set[tuple[str, Any, bool]] = set()
    for i, spec in enumerate(runs):
        if not _file_based(spec):
            continue
        options = spec.problem.options
        key = (spec.problem.data, options.get("data_dir"), options.get("verify", True))
        if key not in seen:
            seen.add(key)
            check_files(key[0], data_dir=key[1], verify=key[2], keep=i == 0)


def check_calibrations(runs: Iterable[RunSpec], skip: str) -> None:
    """Every calibration file a sim run names (other than ``skip``, the automatic one) is a
    calibration fitted to that run's problem, batch, dtype and model size."""
    for spec in runs:
        path = spec.sim.calibration
        if spec.engine != "sim" or path is None or path == skip:
            continue
        try:
            p = spec.problem
            check_compatible(load_calibration(path), p.name, p.batch, p.dtype,
                             check_problem(p.name, p.options, p.dtype).n_params)
        except CalibrationError as exc:
            raise ExperimentError("sim.calibration", path, "a calibration file written by "
                                  "`stalesgd calibrate REAL_DIR` for this problem, batch and "
                                  "dtype", f"cannot be used ({exc})") from None


def parameter_vectors(spec: RunSpec, sparse: bool = False) -> int:
    """The fewest parameter-sized arrays the run's engine holds: θ, the monitor's snapshot
    (or the replay's workspace) and each worker's buffers (copy, gradient) as the
    algorithm's registry entry counts them; for a pooled algorithm on the real engine its
    pool (Leashed-SGD: 2m + 1 vectors, the snapshot among them) instead of θ and the
    snapshot, and on a ``sparse`` problem no gradient rows (they list coordinates)."""
    alg = get_algorithm(spec.algorithm.name)
    if _real_pool(spec):
        from stalesgd.real.pool import pool_size

        grads = 0 if sparse else spec.workers
        return pool_size(spec.workers) + (alg.buffers_per_worker - 1) * spec.workers + grads
    return alg.buffers_per_worker * spec.workers + 2


def permutations(spec: RunSpec, sparse: bool) -> int:
    """The fewest epoch permutations of the training rows a run keeps (``sampling =
    "epochs"``): one per worker; in a timing-only simulation of a sparse problem one per
    worker for the collision count, which draws the workers' minibatches from the rows
    (numeric replay counts with its own draws, unless its gradients are dense: then it holds
    both sets)."""
    if spec.problem.sampling != "epochs":
        return 0
    if spec.engine != "sim":
        return spec.workers
    if not spec.sim.timing_only:
        return spec.workers
    return spec.workers if sparse and spec.algorithm.name != "sync" else 0


def _real_pool(spec: RunSpec) -> bool:
    """Whether the run's shared vectors come from the real engine's pool (Leashed-SGD)."""
    return spec.engine == "real" and get_algorithm(spec.algorithm.name).pooled


def _pool(spec: RunSpec) -> str:
    """How the message names a real Leashed-SGD run's vectors."""
    return ", whose shared vectors come from a pool of 2m + 1" if _real_pool(spec) else ""


def _orders(nbytes: int) -> str:
    """The epoch permutations in the memory message (none: nothing)."""
    if not nbytes:
        return ""
    return (f", and {nbytes / 2**30:.3g} GiB of epoch permutations of the training rows "
            f"(fewer workers, or --sampling replacement, need less)")


def check_memory(runs: Iterable[RunSpec], memory_bytes: int | None) -> None:
    """Refuse a run whose data set and parameter vectors (:func:`parameter_vectors`) alone
    exceed this machine's memory (``memory_bytes``; nothing is checked when it is
    unknown)."""
    if not memory_bytes:
        return
    seen: set[str] = set()
    for spec in runs:
        p = spec.problem
        key = repr((p.name, p.dtype, sorted(p.options.items()), p.sampling,
                    spec.workers, spec.engine, spec.sim.timing_only, spec.algorithm.name))
        if key in seen:
            continue
        seen.add(key)
        shape = check_problem(p.name, p.options, p.dtype)
        vectors = parameter_vectors(spec, shape.data.nnz_per_row is not None)
        param_bytes = shape.n_params * np.dtype(p.dtype).itemsize
        orders = 8 * shape.data.n_train * permutations(spec, shape.data.nnz_per_row is not None)
        need = shape.data.nbytes(p.dtype) + vectors * param_bytes + orders
        if need > memory_bytes:
            workers = f"{spec.workers} {spec.algorithm.name} worker" + (
                "s" if spec.workers != 1 else "")
            fit = "data and parameters" if not orders else \
                "data, parameters and epoch permutations"
            raise ExperimentError("problem", p.name, f"a problem whose {fit} fit "
                                  f"in this machine's {memory_bytes / 2**30:.1f} GiB",
                                  f"needs at least {need / 2**30:.1f} GiB: its data and "
                                  f"{vectors} parameter vectors of {param_bytes / 2**30:.3g} "
                                  f"GiB ({shape.n_params:,} parameters; θ, a snapshot and the "
                                  f"buffers of {workers}{_pool(spec)}){_orders(orders)} "
                                  f"(run {spec.run_id}, options "
                                  f"{p.options})")
