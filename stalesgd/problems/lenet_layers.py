"""The loops of LeNet-5's kernels that are not matrix products, on sample-last maps.

Maps are stored as :mod:`stalesgd.problems.lenet_layout` describes: element
(channel, row, column, sample) of a C×H×W map for ``b`` samples lies at
``((c·H + y)·W + x)·b + s``.  Every inner loop here runs over a contiguous stretch
(``b`` samples, or a line of ``width·b``), so the compiler vectorises it; the products are
in :mod:`stalesgd.problems.lenet_conv` and BLAS (:mod:`stalesgd.problems.gemm`).  All are
``@njit(nogil=True)`` and write only into the arrays they are given.
"""

from __future__ import annotations

from numba import njit

from stalesgd.problems._kernels import copy_row, n_rows
from stalesgd.problems.lenet_layout import BAND, K


@njit(nogil=True)
def transpose(src, rows, cols, dst):
    """dst[j·rows + i] = src[i·cols + j]: the rows×cols matrix ``src`` transposed."""
    for j in range(cols):
        d = dst[j * rows : (j + 1) * rows]
        for i in range(rows):
            d[i] = src[i * cols + j]


@njit(nogil=True)
def gather_sample_last(X, idx, start, b, rows, x):
    """x[f·b + s] = feature f of input row idx[start + s], for s < b (``rows``: b rows of
    scratch, where the rows are read before being transposed)."""
    n = x.shape[0] // b
    available = n_rows(X)
    for s in range(b):
        r = idx[start + s]
        if r < 0 or r >= available:
            raise IndexError("minibatch row index out of range")
        copy_row(X, r, rows[s * n : (s + 1) * n])
    transpose(rows, b, n, x)


@njit(nogil=True)
def col2im_band(col, cin, hin, win, row0, ow, b, dst):
    """dst[c, row0 + r + ki, ox + kj, s] += col[(c, ki, kj), (r, ox, s)] for r < BAND,
    ox < ow: the gradient of a band's patches (rows (c, ki, kj), columns (r, ox, s)) added
    into the gradient of the cin×hin×win map they were taken from."""
    run = ow * b
    n = BAND * run
    for c in range(cin):
        for ki in range(K):
            for kj in range(K):
                base = ((c * K + ki) * K + kj) * n
                for r in range(BAND):
                    d0 = ((c * hin + row0 + r + ki) * win + kj) * b
                    d = dst[d0 : d0 + run]
                    s = col[base + r * run : base + (r + 1) * run]
                    for i in range(run):
                        d[i] += s[i]


@njit(nogil=True)
def pool_band(a, nch, ow, b, theta, boff, out, code, o0, ch_stride):
    """2×2 max-pool of a band (nch, BAND, ow) of pre-activations, + bias, ReLU.

    Writes out[o0 + ch·ch_stride + px·b + s] (px < ow/2) and, at the same places, ``code``:
    the window position of the first maximum (0..3 row-major), or -1 where the ReLU is off.
    The bias of channel ch is theta[boff + ch].
    """
    pw = ow // 2
    line = ow * b
    for ch in range(nch):
        bias = theta[boff + ch]
        for px in range(pw):
            i0 = ch * BAND * line + 2 * px * b
            v0 = a[i0 : i0 + b]
            v1 = a[i0 + b : i0 + 2 * b]
            v2 = a[i0 + line : i0 + line + b]
            v3 = a[i0 + line + b : i0 + line + 2 * b]
            j = o0 + ch * ch_stride + px * b
            o = out[j : j + b]
            k = code[j : j + b]
            for s in range(b):
                m = v0[s]
                w = 0.0
                if v1[s] > m:
                    m = v1[s]
                    w = 1.0
                if v2[s] > m:
                    m = v2[s]
                    w = 2.0
                if v3[s] > m:
                    m = v3[s]
                    w = 3.0
                m = m + bias
                on = m > 0
                o[s] = m if on else 0
                k[s] = w if on else -1.0


@njit(nogil=True)
def unpool_band(dout, code, o0, ch_stride, nch, ow, b, da, lanes, grad, gboff):
    """Adjoint of :func:`pool_band`: writes the whole band ``da`` (nch, BAND, ow) and adds
    the bias gradient into grad[gboff + ch] (``lanes``: b elements of scratch).

    One loop per output (few arrays per loop, so that the compiler vectorises each).
    """
    pw = ow // 2
    line = ow * b
    for ch in range(nch):
        for s in range(b):
            lanes[s] = 0
        for px in range(pw):
            j = o0 + ch * ch_stride + px * b
            g = dout[j : j + b]
            k = code[j : j + b]
            for s in range(b):
                lanes[s] += g[s] if k[s] >= 0 else 0
            for q in range(4):
                i0 = ch * BAND * line + 2 * px * b + (q // 2) * line + (q % 2) * b
                d = da[i0 : i0 + b]
                for s in range(b):
                    d[s] = g[s] if k[s] == q else 0
        total = 0.0
        for s in range(b):
            total += lanes[s]
        grad[gboff + ch] += total


@njit(nogil=True)
def bias_relu(h, nout, b, theta, boff):
    """h[j·b + s] = max(h[j·b + s] + theta[boff + j], 0) for the units j < nout."""
    for j in range(nout):
        bias = theta[boff + j]
        v = h[j * b : (j + 1) * b]
        for s in range(b):
            t = v[s] + bias
            v[s] = t if t > 0 else 0


@njit(nogil=True)
def relu_mask(d, h):
    """d[i] = 0 wherever h[i] <= 0 (the gradient through a ReLU whose output is ``h``)."""
    for i in range(d.shape[0]):
        if h[i] <= 0:
            d[i] = 0


@njit(nogil=True)
def add_row_sums(d, nout, b, grad, goff):
    """grad[goff + j] += Σ_s d[j·b + s] (the bias gradient of a sample-last layer)."""
    for j in range(nout):
        total = 0.0
        for s in range(b):
            total += d[j * b + s]
        grad[goff + j] += total
