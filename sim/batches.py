"""Minibatches: the row indices each worker draws, as the real engine's workers draw them.

Every engine gives worker ``w`` the seed :func:`stalesgd.seeds.worker_seeds` derives from the
run seed, and its minibatch indices are ``randint(0, n_rows)`` of a legacy Mersenne Twister
(``np.random.RandomState``), which is what the real engine's Numba workers draw after
``np.random.seed(seed)``.  :class:`BatchStream` gives them in Python; :func:`mt_draw` draws
the same indices inside compiled code (numeric replay's batched loop).  With reshuffled
epochs (``sampling = "epochs"``, :mod:`stalesgd.real.sampling`) the stream walks the same
permutations as the worker, shuffled by the same ``randint(0, i + 1)`` draws.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stalesgd.experiment.spec import SAMPLING
from stalesgd.jitcache import cached

__all__ = ["BATCH_CHUNK", "BatchStream", "epoch_draw", "mt_draw"]

#: minibatches drawn per refill of a worker's index buffer
BATCH_CHUNK = 256


class BatchStream:
    """One worker's minibatches: row indices drawn uniformly with replacement, or from
    reshuffled epochs.

    Draws come from ``np.random.RandomState(seed)`` in chunks; the sequence equals
    ``randint(0, n_rows)`` called once per index, which is what the real engine's
    Numba workers do after ``np.random.seed(seed)``.  For ``2 <= n_rows < 2**32`` the
    chunks are made from raw 32-bit Mersenne-Twister outputs with the same masked
    rejection as ``randint`` (vectorised; several times faster, the same indices).
    With ``sampling = "epochs"`` the indices walk reshuffled permutations of the rows
    (:func:`epoch_draw`) instead.
    """

    __slots__ = ("_rs", "_n_rows", "_batch", "_buf", "_pos", "mask", "_accept", "_epochs")

    def __init__(self, seed: int, n_rows: int, batch: int, sampling: str = "replacement"
                 ) -> None:
        if int(n_rows) < 1:
            raise ValueError(f"n_rows {n_rows!r} must be >= 1")
        if int(batch) < 1:
            raise ValueError(f"batch {batch!r} must be >= 1")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling {sampling!r} is not known; allowed: "
                             f"{', '.join(SAMPLING)}")
        self._rs = np.random.RandomState(int(seed))
        self._n_rows = int(n_rows)
        self._batch = int(batch)
        self._buf = np.empty(0, dtype=np.int64)
        self._pos = 0
        rng = self._n_rows - 1  # randint's range; its masked rejection uses 32-bit draws
        #: randint's 32-bit mask for this range (0: the range needs other draws, or the
        #: stream walks epochs, and :func:`mt_draw` cannot reproduce them)
        self.mask = (1 << rng.bit_length()) - 1 if 0 < rng < 0xFFFFFFFF else 0
        self._accept = (rng + 1) / (self.mask + 1) if self.mask else 1.0
        #: reshuffled epochs: the Mersenne-Twister state, [position, cursor], the permutation
        self._epochs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if sampling == "epochs":
            if self._n_rows > 0xFFFFFFFF:
                raise ValueError(f"sampling 'epochs' needs fewer than 2**32 rows, not "
                                 f"{self._n_rows}")
            key, pos = self.mt_state()
            self._epochs = (key.copy(), np.array([pos, self._n_rows], dtype=np.int64),
                            np.arange(self._n_rows, dtype=np.int64))
            self.mask = 0

    def _more(self, count: int) -> np.ndarray:
        """At least ``count`` further indices of the stream (more is fine: they are kept)."""
        if self._epochs is not None:
            out = np.empty(count, dtype=np.int64)
            epoch_draw(*self._epochs, out)
            return out
        if not self.mask:
            return self._rs.randint(0, self._n_rows, size=count, dtype=np.int64)
        parts, got = [], 0
        while got < count:
            raw = self._rs.randint(0, 1 << 32, size=int((count - got) / self._accept) + 64,
                                   dtype=np.uint32)
            v = raw & np.uint32(self.mask)
            v = v[v < self._n_rows]
            parts.append(v)
            got += v.shape[0]
        return np.concatenate(parts).astype(np.int64)

    def _ensure(self, need: int) -> None:
        left = self._buf.shape[0] - self._pos
        if left < need:
            more = self._more(max(need - left, self._batch * BATCH_CHUNK))
            self._buf = np.concatenate([self._buf[self._pos :], more]) if left else more
            self._pos = 0

    def next(self) -> np.ndarray:
        """The next minibatch's row indices (an int64 view, valid until the next refill)."""
        b = self._batch
        self._ensure(b)
        pos = self._pos
        self._pos = pos + b
        return self._buf[pos : pos + b]

    def mt_state(self) -> tuple[np.ndarray, int]:
        """The Mersenne-Twister state the stream's next draws start from (624 words, position):
        where :func:`mt_draw` continues it (a stream with replacement; one that walks epochs
        keeps its own state, which this does not follow)."""
        _, key, pos, _, _ = self._rs.get_state(legacy=True)
        return np.asarray(key, dtype=np.uint32), int(pos)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` minibatches as an ``(n, batch)`` int64 array (a copy): the same rows
        as ``n`` calls of :meth:`next`."""
        b = self._batch
        need = int(n) * b
        self._ensure(need)
        pos = self._pos
        self._pos = pos + need
        return self._buf[pos : pos + need].reshape(int(n), b).copy()


@njit(nogil=True)
def _mt_twist(key: np.ndarray) -> None:
    """Regenerate the 624 words of a Mersenne-Twister state (NumPy's ``mt19937_gen``)."""
    n, m_ = 624, 397
    for i in range(n):
        y = (np.uint64(key[i]) & np.uint64(0x80000000)) | \
            (np.uint64(key[(i + 1) % n]) & np.uint64(0x7FFFFFFF))
        x = np.uint64(key[(i + m_) % n]) ^ (y >> np.uint64(1))
        if y & np.uint64(1):
            x ^= np.uint64(0x9908B0DF)
        key[i] = np.uint32(x & np.uint64(0xFFFFFFFF))


@njit(nogil=True)
def _mt_masked(key: np.ndarray, p: int, hi: np.uint64, msk: np.uint64) -> tuple[int, int]:
    """The next ``randint`` draw of range ``hi + 1`` (mask ``msk``) from the Mersenne Twister
    ``key`` at position ``p`` (raw 32-bit outputs, masked rejection); returns it and the new
    position."""
    while True:
        if p >= 624:
            _mt_twist(key)
            p = 0
        y = np.uint64(key[p])
        p += 1
        y ^= y >> np.uint64(11)
        y ^= (y << np.uint64(7)) & np.uint64(0x9D2C5680)
        y ^= (y << np.uint64(15)) & np.uint64(0xEFC60000)
        y ^= y >> np.uint64(18)
        v = y & msk
        if v <= hi:
            return np.int64(v), p


@njit(nogil=True)
def _mt_below(key: np.ndarray, state: np.ndarray, n: int) -> int:
    """``randint(0, n)`` (2 <= n <= 2**32) of the Mersenne Twister ``key`` at position
    ``state[0]``, which it advances."""
    hi = np.uint64(n - 1)
    msk = hi
    for shift in (1, 2, 4, 8, 16):
        msk |= msk >> np.uint64(shift)
    v, state[0] = _mt_masked(key, state[0], hi, msk)
    return v


@cached
@njit(nogil=True)
def epoch_draw(key: np.ndarray, state: np.ndarray, order: np.ndarray, out: np.ndarray) -> None:
    """Fill ``out`` with the next rows of reshuffled epochs (``state`` = [MT position,
    cursor in ``order``]), as :func:`stalesgd.real.sampling.draw_batch` draws them."""
    n = order.shape[0]
    cursor = state[1]
    for i in range(out.shape[0]):
        if cursor >= n:
            for j in range(n - 1, 0, -1):
                k = _mt_below(key, state, j + 1)
                t = order[j]
                order[j] = order[k]
                order[k] = t
            cursor = 0
        out[i] = order[cursor]
        cursor += 1
    state[1] = cursor


@njit(nogil=True)
def mt_draw(key: np.ndarray, pos: np.ndarray, w: int, n_rows: int, mask: int,
             out: np.ndarray) -> None:
    """Fill ``out`` with ``randint(0, n_rows)`` draws of worker ``w``'s legacy Mersenne
    Twister (raw 32-bit outputs, masked rejection: what ``RandomState.randint`` does for a
    range below 2**32), advancing its state ``key[w]``, ``pos[w]``."""
    k = key[w]
    p = pos[w]
    hi = np.uint64(n_rows - 1)
    msk = np.uint64(mask)
    for i in range(out.shape[0]):
        out[i], p = _mt_masked(k, p, hi, msk)
    pos[w] = p
