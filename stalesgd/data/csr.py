"""Sparse examples in compressed sparse row (CSR) form: memory proportional to the non-zeros.

Row ``r`` holds the entries ``indices[indptr[r]:indptr[r+1]]`` (column numbers, strictly
increasing within a row) with the values ``values[indptr[r]:indptr[r+1]]``.  Kernels take
:meth:`CSRMatrix.kernel_inputs`, the tuple ``(indptr, indices, values, n_cols)``, read
through the helpers of ``stalesgd.problems._kernels`` like the other two input forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CSRMatrix:
    """An ``(n_rows, n_cols)`` sparse matrix: ``indptr`` int64 ``(n_rows + 1,)``,
    ``indices`` int32 column numbers, ``values`` float32 or float64 (C-contiguous)."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_cols: int

    def __post_init__(self) -> None:
        p, j, v = self.indptr, self.indices, self.values
        if p.dtype != np.int64 or p.ndim != 1 or p.shape[0] < 1 or p[0] != 0:
            raise ValueError("indptr must be a 1-D int64 array starting at 0")
        if j.dtype != np.int32 or v.dtype not in (np.float32, np.float64):
            raise ValueError(f"indices must be int32 and values float32/float64; got "
                             f"{j.dtype} and {v.dtype}")
        if j.shape != v.shape or j.ndim != 1 or p[-1] != j.shape[0]:
            raise ValueError(f"indices and values must be 1-D of length indptr[-1] = {p[-1]}; "
                             f"got {j.shape} and {v.shape}")
        if np.any(np.diff(p) < 0):
            raise ValueError("indptr must be non-decreasing")
        if int(self.n_cols) <= 0 or (j.size and (j.min() < 0 or j.max() >= self.n_cols)):
            raise ValueError(f"column indices must lie in [0, n_cols = {self.n_cols})")
        increasing = np.diff(j) > 0
        row_starts = p[1:-1]
        increasing[row_starts[(row_starts > 0) & (row_starts < j.size)] - 1] = True
        if not increasing.all():
            raise ValueError("column indices must be strictly increasing within each row")
        object.__setattr__(self, "n_cols", int(self.n_cols))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.indptr.shape[0] - 1), self.n_cols)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def nnz(self) -> int:
        """Stored entries."""
        return int(self.indices.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.indices.nbytes + self.values.nbytes)

    @property
    def max_row_nnz(self) -> int:
        """The most entries any row holds (0 for no rows)."""
        return int(np.diff(self.indptr).max()) if self.shape[0] else 0

    def kernel_inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(indptr, indices, values, n_cols)``: the form kernels take."""
        return (self.indptr, self.indices, self.values, self.n_cols)

    def row_range(self, start: int, stop: int) -> CSRMatrix:
        """Rows ``start..stop-1`` as a matrix of their own (copies, so that the rest can be
        freed)."""
        a, b = int(self.indptr[start]), int(self.indptr[stop])
        return CSRMatrix(self.indptr[start : stop + 1] - a, self.indices[a:b].copy(),
                         self.values[a:b].copy(), self.n_cols)

    def take_rows(self, rows: np.ndarray) -> CSRMatrix:
        """The rows ``rows`` (an int array, in its order) as a matrix of their own."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, stops = self.indptr[rows], self.indptr[rows + 1]
        indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(stops - starts, out=indptr[1:])
        picks = (np.repeat(starts - indptr[:-1], stops - starts)
                 + np.arange(int(indptr[-1]), dtype=np.int64))
        return CSRMatrix(indptr, self.indices[picks], self.values[picks], self.n_cols)

    def astype(self, dtype: Any) -> CSRMatrix:
        """The same matrix with values of ``dtype`` (itself if they already are)."""
        if self.values.dtype == np.dtype(dtype):
            return self
        return CSRMatrix(self.indptr, self.indices, self.values.astype(dtype), self.n_cols)

    def toarray(self, rows: Any = None) -> np.ndarray:
        """Dense float rows (all, or ``rows``: an index, slice or index array)."""
        sel = np.arange(self.shape[0])[rows if rows is not None else slice(None)]
        single = np.ndim(sel) == 0
        sel = np.atleast_1d(sel)
        out = np.zeros((sel.shape[0], self.n_cols), dtype=self.dtype)
        for i, r in enumerate(sel):
            a, b = self.indptr[r], self.indptr[r + 1]
            out[i, self.indices[a:b]] = self.values[a:b]
        return out[0] if single else out


def csr_from_coo(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int,
                 n_cols: int, dtype: Any) -> CSRMatrix:
    """A CSR matrix from entries (row, col, value) sorted by row then column, no repeats."""
    counts = np.bincount(rows, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return CSRMatrix(indptr, np.ascontiguousarray(cols, dtype=np.int32),
                     np.ascontiguousarray(values, dtype=dtype), n_cols)
