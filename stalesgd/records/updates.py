"""The per-update record of one run, taken in chunks while the run goes on.

Engines hand their update rows to an :class:`UpdateLog` a chunk at a time (the real engine's
monitor as it drains the workers' logs, the simulator as its event loop fills a buffer), so
a run's memory does not grow with its length.  The log

* counts every applied update's τ exactly (:class:`UpdateStats`: the ``staleness`` table, the
  mean τ, updates with a zero step), whatever rows are kept;
* keeps the rows a :class:`RowSelection` asks for (``all``, ``none``, or ``every:N``: the
  updates whose index k is a multiple of N, and every N-th dropped gradient);
* stores the kept rows in memory (API use, tests) or, given a folder, as numbered Parquet
  chunk files written atomically: a run interrupted at any point keeps every chunk written,
  and :meth:`UpdateLog.close` writes the last one.

:meth:`UpdateLog.add` is safe against Ctrl-C: its state changes in one assignment, so an
interruption leaves the rows either added or not, never half.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .schema import RecordError, declared
from .tables import column_table

__all__ = ["CHUNK_ROWS", "RowSelection", "UpdateLog", "UpdateStats", "chunk_files"]

#: a log writes a chunk file as soon as this many rows wait (~40 MB; a chunk holds what the
#: last addition brought on top)
CHUNK_ROWS = 1 << 20
_COLUMNS = tuple(c for c in declared("updates") if c != "run_id")
_DEFAULTS = {name: c.default for name, c in declared("updates").items()}
_ROWS_RE = re.compile(r"^every:([1-9][0-9]*)$")
ROWS_ALLOWED = "'all', 'none' or 'every:N' with N an integer >= 1 (e.g. 'every:100')"


@dataclass(frozen=True)
class RowSelection:
    """Which update rows a run keeps: every ``every``-th (1: all; 0: none)."""

    every: int = 1

    @classmethod
    def parse(cls, text: str) -> RowSelection:
        """``all``, ``none`` or ``every:N``; a :class:`ValueError` says what is allowed."""
        if text == "all":
            return cls(1)
        if text == "none":
            return cls(0)
        m = _ROWS_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise ValueError(f"log rows {text!r} is not allowed; allowed: {ROWS_ALLOWED}")
        return cls(int(m.group(1)))

    def __str__(self) -> str:
        return {1: "all", 0: "none"}.get(self.every, f"every:{self.every}")


@dataclass(frozen=True)
class UpdateStats:
    """What a run's updates add up to, counted over every update (kept or not)."""

    applied: int = 0
    dropped: int = 0
    zero_steps: int = 0
    """applied updates whose step size was exactly 0"""
    tau_sum: int = 0
    attempts_sum: int = 0
    """publish attempts of the applied updates"""
    t_last: float = 0.0
    """the latest ``t_apply`` of any row"""
    rows_kept: int = 0
    tau_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """``tau_counts[τ]``: applied updates with staleness τ"""
    worker_applied: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """``worker_applied[w]``: applied updates of worker w"""
    worker_tau_sum: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """``worker_tau_sum[w]``: the sum of τ of worker w's applied updates"""

    @property
    def mean_tau(self) -> float:
        """Mean τ of the applied updates (NaN without any)."""
        return self.tau_sum / self.applied if self.applied else math.nan

    def staleness_columns(self) -> dict[str, np.ndarray]:
        """The run's rows of the ``staleness`` table: each τ that occurred and its count."""
        taus = np.flatnonzero(self.tau_counts)
        return {"tau": taus.astype(np.int64), "count": self.tau_counts[taus]}

    def plus(self, cols: Mapping[str, np.ndarray], kept: int) -> UpdateStats:
        """These stats with the rows ``cols`` (all of them, kept or not) added."""
        n = len(cols["k"])
        if n == 0:
            return self
        dropped = np.asarray(cols["dropped"], dtype=bool)
        applied = ~dropped
        tau = np.asarray(cols["tau"])[applied]
        if tau.size and int(tau.min()) < 0:
            raise RecordError(f"updates column 'tau' holds {int(tau.min())}; allowed: τ >= 0")
        counts = _add_bincount(self.tau_counts, tau)
        eta = np.asarray(cols["eta"])[applied]
        attempts = np.asarray(cols["attempts"])[applied]
        worker = np.asarray(cols["worker"])[applied]
        by_worker = (_add_bincount(self.worker_applied, worker),
                     _add_bincount(self.worker_tau_sum, worker, tau))
        return replace(
            self, applied=self.applied + int(applied.sum()),
            dropped=self.dropped + int(dropped.sum()),
            zero_steps=self.zero_steps + int(np.count_nonzero(eta == 0.0)),
            tau_sum=self.tau_sum + int(tau.sum()),
            attempts_sum=self.attempts_sum + int(attempts.sum()),
            t_last=max(self.t_last, float(np.max(cols["t_apply"]))),
            rows_kept=self.rows_kept + kept, tau_counts=counts,
            worker_applied=by_worker[0], worker_tau_sum=by_worker[1])

    def per_worker(self, workers: int) -> dict[str, str]:
        """Each of ``workers`` workers' applied updates and mean τ, comma-separated
        (runs-table columns ``updates_by_worker`` and ``mean_tau_by_worker``)."""
        size = max(int(workers), self.worker_applied.shape[0])
        n = np.zeros(size, np.int64)
        n[: self.worker_applied.shape[0]] = self.worker_applied
        tau = np.zeros(size, np.int64)
        tau[: self.worker_tau_sum.shape[0]] = self.worker_tau_sum
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = tau / n
        return {"updates_by_worker": ",".join(str(int(c)) for c in n),
                "mean_tau_by_worker": ",".join("nan" if c == 0 else f"{t:.4g}"
                                               for c, t in zip(n, mean, strict=True))}


def _add_bincount(counts: np.ndarray, index: np.ndarray,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """``counts`` plus the (weighted) counts of ``index``, as long as needed (int64)."""
    if not index.size:
        return counts
    new = np.bincount(index, weights=weights, minlength=counts.shape[0])
    new = np.rint(new).astype(np.int64) if weights is not None else new.astype(np.int64)
    new[: counts.shape[0]] += counts
    return new


def chunk_files(folder: Path, run_id: str) -> list[Path]:
    """The update chunk files of ``run_id`` in ``folder``, in order."""
    return sorted(folder.glob(f"{run_id}.updates.*.parquet"))


def _complete(cols: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The rows with the defaulted columns filled in, as arrays of one length."""
    missing = [c for c in ("k", "worker", "t_read", "t_apply", "tau", "eta") if c not in cols]
    if missing:
        raise RecordError(f"updates column {missing[0]!r} is missing; required: k, worker, "
                          "t_read, t_apply, tau, eta")
    out = {name: np.asarray(cols[name]) for name in _COLUMNS if name in cols}
    extra = sorted(set(cols) - set(_COLUMNS))
    if extra:
        raise RecordError(f"updates column {extra[0]!r} is not declared; allowed: "
                          f"{', '.join(_COLUMNS)}")
    n = len(out["k"])
    lengths = {k: len(v) for k, v in out.items()}
    if any(v != n for v in lengths.values()):
        raise RecordError(f"updates columns differ in length: {lengths}; allowed: equal "
                          "lengths")
    if "attempts" not in out:
        out["attempts"] = np.ones(n, np.int32)
    if "dropped" not in out:
        out["dropped"] = np.zeros(n, bool)
    return out


def _column(part: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Column ``name`` of a chunk; a column the engine did not give (the distributed
    engine's network times) is its default, NaN for a null one."""
    if name in part:
        return part[name]
    default = _DEFAULTS[name]
    return np.full(len(part["k"]), np.nan if default is None else default)


class UpdateLog(Mapping):
    """One run's update rows, in chunks: exact statistics of all, storage of the kept ones.

    ``folder`` None keeps the rows in memory; a folder gets chunk files
    ``<run_id>.updates.<n>.parquet`` (any there from an earlier attempt of the run are
    removed first).  As a mapping it gives the kept rows' columns (read back from the chunk
    files if they are on disk)."""

    def __init__(self, rows: RowSelection | str = "all", folder: str | Path | None = None,
                 run_id: str = "run", chunk_rows: int = CHUNK_ROWS) -> None:
        self.rows = rows if isinstance(rows, RowSelection) else RowSelection.parse(rows)
        self.folder = None if folder is None else Path(folder)
        self.run_id = run_id
        self.chunk_rows = int(chunk_rows)
        self.closed = False
        # (pending chunks, stats, chunks written, chunks in memory): replaced in one go
        self._state: tuple[tuple[dict[str, np.ndarray], ...], UpdateStats, int,
                           tuple[dict[str, np.ndarray], ...]] = ((), UpdateStats(), 0, ())
        self._cache: dict[str, np.ndarray] | None = None
        if self.folder is not None:
            for old in chunk_files(self.folder, run_id):
                old.unlink()

    # ------------------------------------------------------------------ writing
    @property
    def stats(self) -> UpdateStats:
        """Counts over every update added so far."""
        return self._state[1]

    def add(self, columns: Mapping[str, Any]) -> None:
        """Add rows (applied updates and dropped gradients, in the order they happened);
        ``attempts`` and ``dropped`` may be left out (1 and False)."""
        if self.closed:
            raise RecordError(f"the update log of run {self.run_id!r} is closed")
        cols = _complete(columns)
        if len(cols["k"]) == 0:
            return
        keep = self._select(cols)
        kept = cols if keep is None else {k: v[keep] for k, v in cols.items()}
        n_kept = len(kept["k"])
        pending, stats, written, memory = self._state
        new_stats = stats.plus(cols, n_kept)
        if n_kept:
            pending = (*pending, {k: v.copy() for k, v in kept.items()})
        self._state = (pending, new_stats, written, memory)
        if sum(len(p["k"]) for p in self._state[0]) >= self.chunk_rows:
            self.flush()

    def _select(self, cols: dict[str, np.ndarray]) -> np.ndarray | None:
        """Which of ``cols``'s rows to keep (None: all)."""
        every = self.rows.every
        if every == 1:
            return None
        n = len(cols["k"])
        if every == 0:
            return np.zeros(n, bool)
        dropped = cols["dropped"]
        keep = ~dropped & (cols["k"] % every == 0)
        if dropped.any():
            before = self.stats.dropped
            index = before + np.cumsum(dropped) - 1
            keep |= dropped & (index % every == 0)
        return keep

    def flush(self) -> None:
        """Store the pending rows: as one chunk file (written to a temporary name, synced,
        renamed), or in memory."""
        pending, stats, written, memory = self._state
        if not pending:
            return
        chunk = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        if self.folder is None:
            self._state = ((), stats, written, (*memory, chunk))
            return
        path = self.folder / f"{self.run_id}.updates.{written:05d}.parquet"
        write_parquet(path, column_table("updates", self.run_id, chunk))
        self._state = ((), stats, written + 1, memory)

    def close(self) -> UpdateStats:
        """Store what is pending; no rows can be added afterwards.  Returns the stats."""
        if not self.closed:
            self.flush()
            self.closed = True
        return self.stats

    @property
    def files(self) -> list[Path]:
        """The chunk files written so far (none in memory)."""
        return [] if self.folder is None else chunk_files(self.folder, self.run_id)

    # ------------------------------------------------------------------ reading
    def _columns(self) -> dict[str, np.ndarray]:
        if self._cache is not None:
            return self._cache
        pending, _, _, memory = self._state
        parts = list(memory) + list(pending)
        if self.folder is not None:
            import pyarrow.parquet as pq

            parts = [{name: t.column(name).to_numpy() for name in _COLUMNS}
                     for t in (pq.read_table(f) for f in self.files)] + list(pending)
        if parts:
            cols = {k: np.concatenate([_column(p, k) for p in parts]) for k in _COLUMNS}
        else:
            cols = _complete({c: np.zeros(0, np.int64) for c in _COLUMNS})
        if self.closed:
            self._cache = cols
        return cols

    def __getitem__(self, name: str) -> np.ndarray:
        return self._columns()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_COLUMNS)

    def __len__(self) -> int:
        return len(_COLUMNS)


def write_parquet(path: Path, table: Any) -> None:
    """Write ``table`` to ``path`` atomically: a temporary name, synced, then renamed.  A
    full disk or an unwritable place is a :class:`RecordWriteError` naming the file."""
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise RecordWriteError(path, exc) from None


class RecordWriteError(OSError):
    """A part of the record could not be written (disk full, no permission, ...)."""

    def __init__(self, path: Path, cause: OSError) -> None:
        self.path = path
        reason = cause.strerror or str(cause)
        super().__init__(cause.errno, f"cannot write {path}: {reason}")
