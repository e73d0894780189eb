"""LeNet-5 over one flat parameter vector, with Numba loss and gradient kernels.

Architecture (for an input of C×H×W, either 1×28×28 or 3×32×32)::

    conv1  5×5, C → 6, 'valid', with bias   → 6×(H-4)×(W-4)
    max-pool 2×2 (stride 2), then ReLU      → 6×(H-4)/2×(W-4)/2
    conv2  5×5, 6 → 16, 'valid', with bias  → 16×(H-12)/2×(W-12)/2
    max-pool 2×2 (stride 2), then ReLU      → 16×4×4 = 256   (28×28)
                                              16×5×5 = 400   (32×32)
    fc1    FEAT → 120, ReLU
    fc2    120 → 84, ReLU                   (optional: ``fc84=False`` drops it,
                                             as the reference experiments did)
    out    120 or 84 → 10, softmax cross-entropy (log-sum-exp, computed in float64)

The activation is ReLU everywhere.  ReLU and max-pooling commute
(max(relu(a)) = relu(max(a))), so the kernels pool the pre-activation and
apply the bias and ReLU to the four times smaller pooled map; the gradient is
the usual one (routed to the window's first maximum, zero where the pooled
value is not positive).  At exact ties inside a pooling window the function
is not differentiable and the kernels pick the first maximum (row-major).

Parameters live in one flat vector ``theta`` (float32 or float64), in this
order, each weight stored row-major as (out, in...) like PyTorch:
``conv1.w (6,C,5,5)``, ``conv1.b (6,)``, ``conv2.w (16,6,5,5)``,
``conv2.b (16,)``, ``fc1.w (120,FEAT)``, ``fc1.b``, [``fc2.w (84,120)``,
``fc2.b``], ``out.w (10,120|84)``, ``out.b (10,)``.

Kernels (module level, ``@njit(nogil=True)``) follow
:mod:`stalesgd.problems.base`.  Convolutions are im2col into the workspace
plus a BLAS GEMM (``np.dot(W, col, out)``; backward ``dW = dA @ colᵀ``,
``dcol = Wᵀ @ dA`` and col2im).  conv1 runs one sample at a time (its im2col
block, 25·C × 576..784, stays in cache; re-built in the backward pass), conv2
as one GEMM over the chunk with maps stored (channel, sample, y, x); both
choices were measured faster at batch 16.  Batches are processed in chunks of
at most :data:`CHUNK` rows, so the workspace stays bounded when a large
evaluation set is passed; every intermediate is a view of ``ws``, and nothing
is allocated per call.  BLAS must be held to one thread by the caller
(threadpoolctl) when kernels run in worker threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from stalesgd.problems._kernels import copy_row
from stalesgd.problems.base import INIT_SCHEMES, Model, resolve_dtype
from stalesgd.validation import flag

#: Maximum number of rows processed at once; larger batches are chunked.
CHUNK = 64

#: The input shapes (C, H, W) LeNet-5 is defined for here.
ALLOWED_INPUT_SHAPES = ((1, 28, 28), (3, 32, 32))

N_CLASSES = 10
_K = 5  # convolution kernel size
_N1 = 6  # conv1 output channels
_N2 = 16  # conv2 output channels
_F1 = 120
_F2 = 84

# Positions in the int64 ``dims`` vector.
_D_C, _D_H, _D_W, _D_FC84 = 0, 1, 2, 3
_D_OH1, _D_OW1, _D_PH1, _D_PW1 = 4, 5, 6, 7
_D_OH2, _D_OW2, _D_PH2, _D_PW2 = 8, 9, 10, 11
_D_FEAT, _D_FLAST, _D_NPAR = 12, 13, 14
_D_C1W, _D_C1B, _D_C2W, _D_C2B = 15, 16, 17, 18
_D_F1W, _D_F1B, _D_F2W, _D_F2B = 19, 20, 21, 22
_D_OW, _D_OB = 23, 24
_D_NF1, _D_NF2, _D_NCLS = 25, 26, 27
_D_LEN = 28


# --------------------------------------------------------------------------- workspace layout


@njit(nogil=True)
def _layout(dims: np.ndarray, b: int) -> tuple:
    """Offsets of the workspace regions for a chunk of ``b`` rows (last entry: total size)."""
    C = dims[_D_C]
    S1 = dims[_D_OH1] * dims[_D_OW1]
    P1 = dims[_D_PH1] * dims[_D_PW1]
    S2 = dims[_D_OH2] * dims[_D_OW2]
    FEAT = dims[_D_FEAT]
    FL = dims[_D_FLAST]
    KK = _K * _K
    o_x = 0  # (b, C·H·W)      the chunk's input rows, gathered
    o_col1 = o_x + b * C * dims[_D_H] * dims[_D_W]  # (C·25, S1)  im2col of one input
    o_a1 = o_col1 + C * KK * S1  # (b, 6, S1)  conv1 pre-activation, then its gradient
    o_p1 = o_a1 + _N1 * b * S1  # (6, b, P1)  pooled + ReLU, then its gradient
    o_m1 = o_p1 + _N1 * b * P1  # (6, b, P1)  argmax in window (0..3), -1 if ReLU off
    o_col2 = o_m1 + _N1 * b * P1  # (150, b·S2) im2col of p1, then its gradient
    o_a2 = o_col2 + _N1 * KK * b * S2  # (16, b·S2) conv2 pre-activation, then gradient
    o_h0 = o_a2 + _N2 * b * S2  # (b, FEAT)  pooled + ReLU features, sample-major
    o_m2 = o_h0 + b * FEAT  # (b, FEAT)  argmax codes
    o_h1 = o_m2 + b * FEAT  # (b, 120)
    o_h2 = o_h1 + b * _F1  # (b, 84)  (unused without fc84)
    o_z = o_h2 + b * _F2  # (b, 10) logits, then their gradient
    o_d0 = o_z + b * N_CLASSES  # (b, FEAT) gradient wrt h0
    o_d1 = o_d0 + b * FEAT  # (b, 120)
    o_d2 = o_d1 + b * _F1  # (b, 84)
    o_tmp = o_d2 + b * _F2  # largest weight block, for accumulating over chunks
    n_tmp = max(FEAT * _F1, _N2 * _N1 * KK, _N1 * C * KK, _F1 * _F2, N_CLASSES * FL)
    total = o_tmp + n_tmp
    return (o_x, o_col1, o_a1, o_p1, o_m1, o_col2, o_a2, o_h0, o_m2, o_h1, o_h2, o_z,
            o_d0, o_d1, o_d2, o_tmp, total)


# Indices into the tuple returned by _layout.
_L_X, _L_COL1, _L_A1, _L_P1, _L_M1, _L_COL2, _L_A2, _L_H0, _L_M2 = 0, 1, 2, 3, 4, 5, 6, 7, 8
_L_H1, _L_H2, _L_Z, _L_D0, _L_D1, _L_D2, _L_TMP, _L_END = 9, 10, 11, 12, 13, 14, 15, 16


# --------------------------------------------------------------------------- building blocks


@njit(nogil=True)
def _im2col(src, sstride, cstride, cin, win, b, oh, ow, col):
    """col[(c,ki,kj), (s,oy,ox)] = src[s·sstride + c·cstride + (oy+ki)·win + ox+kj].

    ``col`` is flat, (cin·25) × (b·oh·ow) row-major: the right operand of the
    convolution GEMM (5×5 'valid' window).
    """
    so = oh * ow
    n = b * so
    for c in range(cin):
        for ki in range(_K):
            for kj in range(_K):
                rbase = (c * _K * _K + ki * _K + kj) * n
                for s in range(b):
                    sbase = s * sstride + c * cstride + ki * win + kj
                    dbase = rbase + s * so
                    for oy in range(oh):
                        src0 = sbase + oy * win
                        dst0 = dbase + oy * ow
                        for ox in range(ow):
                            col[dst0 + ox] = src[src0 + ox]


@njit(nogil=True)
def _conv1_cols(x, W, col):
    """im2col of one input image ``x`` (C×H×W flat) into ``col`` ((C·25) × S1).

    The sizes are passed as literal constants per input shape: with run-time
    sizes LLVM's code for these short loops is 2-5x slower (measured).
    """
    if W == 28:
        _im2col(x, 784, 784, 1, 28, 1, 24, 24, col)
    else:
        _im2col(x, 3072, 1024, 3, 32, 1, 28, 28, col)


@njit(nogil=True)
def _col2im(col, cin, b, oh, ow, win, sstride, cstride, dst):
    """Adjoint of :func:`_im2col`: dst[...] += col[...] (``dst`` must be zeroed first)."""
    so = oh * ow
    n = b * so
    for c in range(cin):
        for ki in range(_K):
            for kj in range(_K):
                rbase = (c * _K * _K + ki * _K + kj) * n
                for s in range(b):
                    dbase = s * sstride + c * cstride + ki * win + kj
                    sbase = rbase + s * so
                    for oy in range(oh):
                        d0 = dbase + oy * win
                        s0 = sbase + oy * ow
                        for ox in range(ow):
                            dst[d0 + ox] += col[s0 + ox]


@njit(nogil=True)
def _pool_relu(a, istride_s, istride_c, theta, boff, nch, b, oh, ow, out, arg, ostride_s,
               ostride_c):
    """2×2 max-pool of the (oh, ow) maps a[s·istride_s + ch·istride_c + ...], + bias, ReLU.

    out[s·ostride_s + ch·ostride_c + py·(ow/2) + px] gets the result; ``arg``
    (same indexing) gets the window position of the maximum (0..3), or -1
    where the ReLU is off.  The bias is theta[boff + ch].
    """
    ph = oh // 2
    pw = ow // 2
    for ch in range(nch):
        bias = theta[boff + ch]
        for s in range(b):
            ibase = s * istride_s + ch * istride_c
            obase = s * ostride_s + ch * ostride_c
            for py in range(ph):
                for px in range(pw):
                    i0 = ibase + 2 * py * ow + 2 * px
                    m = a[i0]
                    k = 0
                    v = a[i0 + 1]
                    if v > m:
                        m = v
                        k = 1
                    v = a[i0 + ow]
                    if v > m:
                        m = v
                        k = 2
                    v = a[i0 + ow + 1]
                    if v > m:
                        m = v
                        k = 3
                    m = m + bias
                    o = obase + py * pw + px
                    if m > 0:
                        out[o] = m
                        arg[o] = k
                    else:
                        out[o] = 0
                        arg[o] = -1


@njit(nogil=True)
def _pool_relu_back(dout, arg, nch, b, oh, ow, ostride_s, ostride_c, da, istride_s, istride_c,
                    grad, gboff):
    """Adjoint of :func:`_pool_relu`: writes every (oh, ow) map of ``da`` (indexed like
    ``a`` there) and adds the bias gradient into grad[gboff + ch]."""
    ph = oh // 2
    pw = ow // 2
    for ch in range(nch):
        gsum = 0.0
        for s in range(b):
            abase = s * istride_s + ch * istride_c
            obase = s * ostride_s + ch * ostride_c
            for py in range(ph):
                for px in range(pw):
                    i = obase + py * pw + px
                    k = arg[i]
                    g = dout[i] if k >= 0 else 0
                    gsum += g
                    o = abase + 2 * py * ow + 2 * px
                    da[o] = g if k == 0 else 0
                    da[o + 1] = g if k == 1 else 0
                    da[o + ow] = g if k == 2 else 0
                    da[o + ow + 1] = g if k == 3 else 0
        grad[gboff + ch] += gsum


@njit(nogil=True)
def _dense_relu(theta, ow, ob, hin, b, nin, nout, hout):
    """hout = relu(hin @ Wᵀ + bias) for W = theta[ow:...] of shape (nout, nin)."""
    w = theta[ow : ow + nout * nin].reshape((nout, nin))
    np.dot(hin.reshape((b, nin)), w.T, hout.reshape((b, nout)))
    for s in range(b):
        for j in range(nout):
            v = hout[s * nout + j] + theta[ob + j]
            hout[s * nout + j] = v if v > 0 else 0


@njit(nogil=True)
def _gemm_into(a, bmat, out, tmp, first):
    """out = a @ bmat when ``first``, else out += a @ bmat (through ``tmp``); no allocation."""
    if first:
        np.dot(a, bmat, out)
    else:
        m, n = out.shape
        t = tmp[: m * n].reshape((m, n))
        np.dot(a, bmat, t)
        for i in range(m):
            for j in range(n):
                out[i, j] += t[i, j]


@njit(nogil=True)
def _dense_back(theta, grad, ow, ob, hin, dout, din, b, nin, nout, tmp, first):
    """Gradients of a dense layer: accumulate dW, db; write din = dout @ W, masked by hin > 0.

    Every dense input here is a ReLU output (h0 is pooled then ReLU'd), so the mask applies.
    """
    d2 = dout.reshape((b, nout))
    h2 = hin.reshape((b, nin))
    gw = grad[ow : ow + nout * nin].reshape((nout, nin))
    _gemm_into(d2.T, h2, gw, tmp, first)
    for s in range(b):
        for j in range(nout):
            grad[ob + j] += dout[s * nout + j]
    w = theta[ow : ow + nout * nin].reshape((nout, nin))
    np.dot(d2, w, din.reshape((b, nin)))
    for i in range(b * nin):
        if hin[i] <= 0:
            din[i] = 0


@njit(nogil=True)
def _softmax_xent(z, y, idx, start, b, scale):
    """Summed cross-entropy of the logits ``z`` (b×10, flat) and number correct.

    With ``scale > 0``, ``z`` is overwritten by ``scale · (softmax(z) − onehot(y))``.
    Log-sum-exp is evaluated in float64 with the row maximum subtracted.
    """
    loss = 0.0
    correct = 0
    for s in range(b):
        label = y[idx[start + s]]
        if label < 0 or label >= N_CLASSES:
            raise ValueError("lenet: label outside 0..9")
        base = s * N_CLASSES
        zmax = np.float64(z[base])
        arg = 0
        for j in range(1, N_CLASSES):
            if z[base + j] > zmax:
                zmax = np.float64(z[base + j])
                arg = j
        tot = 0.0
        for j in range(N_CLASSES):
            tot += np.exp(np.float64(z[base + j]) - zmax)
        lse = zmax + np.log(tot)
        loss += lse - np.float64(z[base + label])
        if arg == label:
            correct += 1
        if scale > 0:
            for j in range(N_CLASSES):
                p = np.exp(np.float64(z[base + j]) - lse)
                if j == label:
                    p -= 1.0
                z[base + j] = p * scale
    return loss, correct


# --------------------------------------------------------------------------- forward / backward


@njit(nogil=True)
def _forward(theta, X, idx, start, b, ws, dims):
    """Forward pass of rows ``idx[start:start+b]``; leaves logits and activations in ``ws``."""
    C = dims[_D_C]
    H = dims[_D_H]
    W = dims[_D_W]
    OH1 = dims[_D_OH1]
    OW1 = dims[_D_OW1]
    P1 = dims[_D_PH1] * dims[_D_PW1]
    OH2 = dims[_D_OH2]
    OW2 = dims[_D_OW2]
    FEAT = dims[_D_FEAT]
    FL = dims[_D_FLAST]
    KK = _K * _K
    CHW = C * H * W
    L = _layout(dims, b)
    S1 = OH1 * OW1
    n1 = b * S1
    n2 = b * OH2 * OW2

    # gather the chunk's rows
    xs = ws[L[_L_X] : L[_L_X] + b * CHW]
    for s in range(b):
        copy_row(X, idx[start + s], xs[s * CHW : (s + 1) * CHW])
    # conv1 one sample at a time: its im2col block stays in cache (measured 1.3-1.9x
    # faster than one GEMM over the chunk); a1 is sample-major (b, 6, S1).
    col1 = ws[L[_L_COL1] : L[_L_COL1] + C * KK * S1]
    a1 = ws[L[_L_A1] : L[_L_A1] + _N1 * n1]
    w1 = theta[dims[_D_C1W] : dims[_D_C1W] + _N1 * C * KK].reshape((_N1, C * KK))
    for s in range(b):
        _conv1_cols(xs[s * CHW : (s + 1) * CHW], W, col1)
        np.dot(w1, col1.reshape((C * KK, S1)), a1[s * _N1 * S1 : (s + 1) * _N1 * S1]
               .reshape((_N1, S1)))

    # pool1 + bias + ReLU -> p1 (6, b, PH1, PW1)
    p1 = ws[L[_L_P1] : L[_L_P1] + _N1 * b * P1]
    m1 = ws[L[_L_M1] : L[_L_M1] + _N1 * b * P1]
    _pool_relu(a1, _N1 * S1, S1, theta, dims[_D_C1B], _N1, b, OH1, OW1, p1, m1, P1, b * P1)

    # conv2
    col2 = ws[L[_L_COL2] : L[_L_COL2] + _N1 * KK * n2]
    if W == 28:
        _im2col(p1, 144, b * P1, 6, 12, b, 8, 8, col2)
    else:
        _im2col(p1, 196, b * P1, 6, 14, b, 10, 10, col2)
    a2 = ws[L[_L_A2] : L[_L_A2] + _N2 * n2]
    w2 = theta[dims[_D_C2W] : dims[_D_C2W] + _N2 * _N1 * KK].reshape((_N2, _N1 * KK))
    np.dot(w2, col2.reshape((_N1 * KK, n2)), a2.reshape((_N2, n2)))

    # pool2 + bias + ReLU -> sample-major features h0[s, co·P2 + p] (PyTorch flatten order)
    h0 = ws[L[_L_H0] : L[_L_H0] + b * FEAT]
    m2 = ws[L[_L_M2] : L[_L_M2] + b * FEAT]
    S2 = OH2 * OW2
    P2 = dims[_D_PH2] * dims[_D_PW2]
    _pool_relu(a2, S2, b * S2, theta, dims[_D_C2B], _N2, b, OH2, OW2, h0, m2, FEAT, P2)

    # fully connected layers
    h1 = ws[L[_L_H1] : L[_L_H1] + b * _F1]
    f1 = dims[_D_NF1]
    _dense_relu(theta, dims[_D_F1W], dims[_D_F1B], h0, b, FEAT, f1, h1)
    if dims[_D_FC84] != 0:
        h2 = ws[L[_L_H2] : L[_L_H2] + b * _F2]
        _dense_relu(theta, dims[_D_F2W], dims[_D_F2B], h1, b, f1, dims[_D_NF2], h2)
        hl = h2
    else:
        hl = h1
    z = ws[L[_L_Z] : L[_L_Z] + b * N_CLASSES]
    wo = theta[dims[_D_OW] : dims[_D_OW] + N_CLASSES * FL].reshape((N_CLASSES, FL))
    np.dot(hl.reshape((b, FL)), wo.T, z.reshape((b, N_CLASSES)))
    ob = dims[_D_OB]
    for s in range(b):
        for j in range(N_CLASSES):
            z[s * N_CLASSES + j] += theta[ob + j]


@njit(nogil=True)
def _backward(theta, grad, b, ws, dims, first):
    """Backward pass for the chunk whose forward pass is in ``ws``; accumulates into ``grad``.

    Expects the logits' gradient in the ``z`` region.  Biases of ``grad`` must
    be zeroed by the caller before the first chunk; weights are overwritten
    when ``first`` and accumulated otherwise.
    """
    C = dims[_D_C]
    W = dims[_D_W]
    OH1 = dims[_D_OH1]
    OW1 = dims[_D_OW1]
    P1 = dims[_D_PH1] * dims[_D_PW1]
    OH2 = dims[_D_OH2]
    OW2 = dims[_D_OW2]
    FEAT = dims[_D_FEAT]
    FL = dims[_D_FLAST]
    KK = _K * _K
    L = _layout(dims, b)
    n1 = b * OH1 * OW1
    n2 = b * OH2 * OW2
    tmp = ws[L[_L_TMP] : L[_L_END]]

    h0 = ws[L[_L_H0] : L[_L_H0] + b * FEAT]
    h1 = ws[L[_L_H1] : L[_L_H1] + b * _F1]
    h2 = ws[L[_L_H2] : L[_L_H2] + b * _F2]
    dz = ws[L[_L_Z] : L[_L_Z] + b * N_CLASSES]
    d0 = ws[L[_L_D0] : L[_L_D0] + b * FEAT]
    d1 = ws[L[_L_D1] : L[_L_D1] + b * _F1]
    d2 = ws[L[_L_D2] : L[_L_D2] + b * _F2]

    # dense layers (sizes passed as run-time ints so Numba compiles one specialisation)
    ncls = dims[_D_NCLS]
    f1 = dims[_D_NF1]
    if dims[_D_FC84] != 0:
        f2 = dims[_D_NF2]
        _dense_back(theta, grad, dims[_D_OW], dims[_D_OB], h2, dz, d2, b, f2, ncls, tmp, first)
        _dense_back(theta, grad, dims[_D_F2W], dims[_D_F2B], h1, d2, d1, b, f1, f2, tmp, first)
    else:
        _dense_back(theta, grad, dims[_D_OW], dims[_D_OB], h1, dz, d1, b, FL, ncls, tmp, first)
    _dense_back(theta, grad, dims[_D_F1W], dims[_D_F1B], h0, d1, d0, b, FEAT, f1, tmp, first)

    # pool2 backward into dA2 (overwrites a2)
    a2 = ws[L[_L_A2] : L[_L_A2] + _N2 * n2]
    m2 = ws[L[_L_M2] : L[_L_M2] + b * FEAT]
    S2 = OH2 * OW2
    P2 = dims[_D_PH2] * dims[_D_PW2]
    _pool_relu_back(d0, m2, _N2, b, OH2, OW2, FEAT, P2, a2, S2, b * S2, grad, dims[_D_C2B])

    # conv2: dW2 = dA2 @ col2ᵀ, then dcol2 = W2ᵀ @ dA2 (overwrites col2), col2im -> dp1
    col2 = ws[L[_L_COL2] : L[_L_COL2] + _N1 * KK * n2]
    da2 = a2.reshape((_N2, n2))
    o2 = dims[_D_C2W]
    gw2 = grad[o2 : o2 + _N2 * _N1 * KK].reshape((_N2, _N1 * KK))
    # computed transposed, dW2ᵀ = col2 @ dA2ᵀ: OpenBLAS runs this shape 1.5-3x faster
    t2 = tmp[: _N1 * KK * _N2].reshape((_N1 * KK, _N2))
    np.dot(col2.reshape((_N1 * KK, n2)), da2.T, t2)
    for i in range(_N2):
        for j in range(_N1 * KK):
            gw2[i, j] = t2[j, i] if first else gw2[i, j] + t2[j, i]
    w2 = theta[o2 : o2 + _N2 * _N1 * KK].reshape((_N2, _N1 * KK))
    np.dot(w2.T, da2, col2.reshape((_N1 * KK, n2)))
    dp1 = ws[L[_L_P1] : L[_L_P1] + _N1 * b * P1]  # overwrites p1
    dp1[:] = 0
    if W == 28:
        _col2im(col2, 6, b, 8, 8, 12, 144, b * P1, dp1)
    else:
        _col2im(col2, 6, b, 10, 10, 14, 196, b * P1, dp1)

    # pool1 backward into dA1 (overwrites a1), then dW1 = dA1 @ col1ᵀ
    a1 = ws[L[_L_A1] : L[_L_A1] + _N1 * n1]
    m1 = ws[L[_L_M1] : L[_L_M1] + _N1 * b * P1]
    S1 = OH1 * OW1
    _pool_relu_back(dp1, m1, _N1, b, OH1, OW1, P1, b * P1, a1, _N1 * S1, S1, grad, dims[_D_C1B])
    # per sample, as in the forward pass: rebuild the sample's im2col block (cheaper
    # than keeping the chunk's, which falls out of cache) and accumulate dA1_s @ col1_sᵀ
    CHW = C * dims[_D_H] * W
    xs = ws[L[_L_X] : L[_L_X] + b * CHW]
    col1 = ws[L[_L_COL1] : L[_L_COL1] + C * KK * S1]
    o1 = dims[_D_C1W]
    gw1 = grad[o1 : o1 + _N1 * C * KK].reshape((_N1, C * KK))
    for s in range(b):
        _conv1_cols(xs[s * CHW : (s + 1) * CHW], W, col1)
        da1 = a1[s * _N1 * S1 : (s + 1) * _N1 * S1].reshape((_N1, S1))
        _gemm_into(da1, col1.reshape((C * KK, S1)).T, gw1, tmp, first and s == 0)


# --------------------------------------------------------------------------- public kernels


@njit(nogil=True)
def grad_kernel(theta, X, y, idx, grad, ws, dims):
    """Mean softmax cross-entropy over ``X[idx]``; its gradient is written into ``grad``.

    Follows :mod:`stalesgd.problems.base`: no allocation, callable from other
    ``@njit(nogil=True)`` code; ``ws`` needs ``LeNet5.workspace_size(len(idx))``
    elements.  Returns the mean loss as float64.
    """
    n = idx.shape[0]
    # biases are accumulated; weights are overwritten by the first chunk
    grad[dims[_D_C1B] : dims[_D_C1B] + _N1] = 0
    grad[dims[_D_C2B] : dims[_D_C2B] + _N2] = 0
    grad[dims[_D_F1B] : dims[_D_F1B] + _F1] = 0
    if dims[_D_FC84] != 0:
        grad[dims[_D_F2B] : dims[_D_F2B] + _F2] = 0
    grad[dims[_D_OB] : dims[_D_OB] + N_CLASSES] = 0
    if n == 0:
        grad[:] = 0
        return 0.0
    scale = 1.0 / n
    loss = 0.0
    start = idx.shape[0] - n  # 0, typed as a run-time int (no literal specialisation)
    while start < n:
        b = min(CHUNK, n - start)
        _forward(theta, X, idx, start, b, ws, dims)
        L = _layout(dims, b)
        z = ws[L[_L_Z] : L[_L_Z] + b * N_CLASSES]
        lsum, _ = _softmax_xent(z, y, idx, start, b, scale)
        loss += lsum
        _backward(theta, grad, b, ws, dims, start == 0)
        start += b
    return loss / n


@njit(nogil=True)
def loss_kernel(theta, X, y, idx, ws, dims):
    """Summed softmax cross-entropy over ``X[idx]`` and the number of correct predictions.

    Same rules as :func:`grad_kernel`; rows are processed in chunks of
    :data:`CHUNK`.  Returns ``(loss_sum: float64, n_correct: int64)``.
    """
    n = idx.shape[0]
    loss = 0.0
    correct = 0
    start = idx.shape[0] - n  # 0, typed as a run-time int (no literal specialisation)
    while start < n:
        b = min(CHUNK, n - start)
        _forward(theta, X, idx, start, b, ws, dims)
        L = _layout(dims, b)
        z = ws[L[_L_Z] : L[_L_Z] + b * N_CLASSES]
        lsum, c = _softmax_xent(z, y, idx, start, b, 0.0)
        loss += lsum
        correct += c
        start += b
    return loss, correct


# --------------------------------------------------------------------------- the model


class LeNet5(Model):
    """LeNet-5 (conv 5×5→6, pool, conv 5×5→16, pool, FC 120, [FC 84], FC 10), ReLU.

    ``input_shape`` is (C, H, W): (1, 28, 28) for MNIST-like data or
    (3, 32, 32) for CIFAR-10.  ``fc84=False`` omits the 84-unit layer, as the
    reference C++ experiments did.  ``dtype`` is ``"float32"`` or ``"float64"``.
    See the module docstring for the exact layout and kernels.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int] = (1, 28, 28),
        fc84: bool = True,
        dtype: str | type | np.dtype = "float64",
    ) -> None:
        try:
            shape = tuple(int(v) for v in input_shape)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"input_shape {input_shape!r} is not allowed; use one of {ALLOWED_INPUT_SHAPES}"
            ) from exc
        if shape not in ALLOWED_INPUT_SHAPES:
            raise ValueError(
                f"input_shape {input_shape!r} is not allowed; use one of {ALLOWED_INPUT_SHAPES}"
            )
        fc84 = flag(fc84, "fc84")
        self.dtype = resolve_dtype(dtype)
        self.input_shape = shape
        self.fc84 = bool(fc84)
        self.name = "lenet"
        self.is_classifier = True

        C, H, W = shape
        oh1, ow1 = H - _K + 1, W - _K + 1
        ph1, pw1 = oh1 // 2, ow1 // 2
        oh2, ow2 = ph1 - _K + 1, pw1 - _K + 1
        ph2, pw2 = oh2 // 2, ow2 // 2
        feat = _N2 * ph2 * pw2
        flast = _F2 if self.fc84 else _F1

        specs: list[tuple[str, tuple[int, ...]]] = [
            ("conv1.w", (_N1, C, _K, _K)),
            ("conv1.b", (_N1,)),
            ("conv2.w", (_N2, _N1, _K, _K)),
            ("conv2.b", (_N2,)),
            ("fc1.w", (_F1, feat)),
            ("fc1.b", (_F1,)),
        ]
        if self.fc84:
            specs += [("fc2.w", (_F2, _F1)), ("fc2.b", (_F2,))]
        specs += [("out.w", (N_CLASSES, flast)), ("out.b", (N_CLASSES,))]
        layers: dict[str, tuple[int, tuple[int, ...]]] = {}
        offset = 0
        for lname, lshape in specs:
            layers[lname] = (offset, lshape)
            offset += int(np.prod(lshape))
        self.layers = layers
        self.n_params = offset

        dims = np.zeros(_D_LEN, dtype=np.int64)
        dims[[_D_C, _D_H, _D_W, _D_FC84]] = (C, H, W, int(self.fc84))
        dims[[_D_OH1, _D_OW1, _D_PH1, _D_PW1]] = (oh1, ow1, ph1, pw1)
        dims[[_D_OH2, _D_OW2, _D_PH2, _D_PW2]] = (oh2, ow2, ph2, pw2)
        dims[[_D_FEAT, _D_FLAST, _D_NPAR]] = (feat, flast, offset)
        dims[[_D_C1W, _D_C1B, _D_C2W, _D_C2B]] = (
            layers["conv1.w"][0], layers["conv1.b"][0],
            layers["conv2.w"][0], layers["conv2.b"][0],
        )
        dims[[_D_F1W, _D_F1B]] = (layers["fc1.w"][0], layers["fc1.b"][0])
        if self.fc84:
            dims[[_D_F2W, _D_F2B]] = (layers["fc2.w"][0], layers["fc2.b"][0])
        dims[[_D_OW, _D_OB]] = (layers["out.w"][0], layers["out.b"][0])
        dims[[_D_NF1, _D_NF2, _D_NCLS]] = (_F1, _F2, N_CLASSES)
        self.dims = dims

    def __repr__(self) -> str:
        return (f"LeNet5(input_shape={self.input_shape}, fc84={self.fc84}, "
                f"dtype='{self.dtype.name}', n_params={self.n_params})")

    @property
    def grad_kernel(self) -> Any:
        """The module-level Numba :func:`grad_kernel` (shared by every LeNet5)."""
        return grad_kernel

    @property
    def loss_kernel(self) -> Any:
        """The module-level Numba :func:`loss_kernel` (shared by every LeNet5)."""
        return loss_kernel

    @property
    def n_features(self) -> int:
        """Length of one flattened input row, C·H·W."""
        C, H, W = self.input_shape
        return C * H * W

    def workspace_size(self, batch: int) -> int:
        """Scratch elements for ``batch`` rows (bounded: batches are processed in chunks)."""
        if int(batch) < 0:
            raise ValueError(f"batch {batch!r} is not allowed; use a non-negative integer")
        b = max(1, min(int(batch), CHUNK))
        return int(_layout(self.dims, b)[-1])

    def init_params(self, seed: int, scheme: str = "default") -> np.ndarray:
        """A fresh parameter vector drawn from ``numpy.random.default_rng(seed)``.

        Schemes: ``default`` — He normal, N(0, 2/fan_in), for the ReLU layers
        (conv1, conv2, fc1, fc2) and Glorot uniform, U(±√(6/(fan_in+fan_out))),
        for the output layer; ``he`` — He normal everywhere; ``glorot`` —
        Glorot uniform everywhere; ``normal`` — N(0, 0.01²) everywhere, as
        the reference C++ implementation.  For a convolution fan_in = C_in·25
        and fan_out = C_out·25.  Biases are zero.  Values are drawn in
        float64, layer by layer in ``layers`` order, then cast, so the same
        seed gives the same parameters (up to rounding) in both precisions.

        He scaling keeps the second moment of ReLU layers, but each max-pool
        raises it, so the default logits start wide: on standardised MNIST the
        initial loss is about 8 (fc84 on) rather than ln 10 ≈ 2.3; ``normal``
        starts at ≈ 2.30 like the reference, ``glorot`` at ≈ 2.36.
        """
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"scheme {scheme!r} is not allowed; use one of {INIT_SCHEMES}")
        rng = np.random.default_rng(seed)
        theta = np.zeros(self.n_params, dtype=np.float64)
        for lname, (offset, shape) in self.layers.items():
            if not lname.endswith(".w"):
                continue
            size = int(np.prod(shape))
            fan_in = int(np.prod(shape[1:]))
            fan_out = shape[0] * (int(np.prod(shape[2:])) if len(shape) > 2 else 1)
            rule = scheme
            if scheme == "default":
                rule = "glorot" if lname == "out.w" else "he"
            if rule == "he":
                w = rng.normal(0.0, np.sqrt(2.0 / fan_in), size)
            elif rule == "glorot":
                lim = np.sqrt(6.0 / (fan_in + fan_out))
                w = rng.uniform(-lim, lim, size)
            else:
                w = rng.normal(0.0, 0.01, size)
            theta[offset : offset + size] = w
        return theta.astype(self.dtype)

    def flops(self, batch: int) -> tuple[int, int]:
        """Floating-point operations (forward, backward) of one gradient on ``batch`` rows.

        Multiply-adds count 2.  Forward: each convolution 2·outputs·C_in·25,
        each dense layer 2·in·out, per sample.  Backward: the weight gradient
        of every layer (same count as its forward) plus the input gradient of
        every layer but conv1 (its input is the data).  Pooling, ReLU, bias
        and softmax are not counted.
        """
        C, _, _ = self.input_shape
        d = self.dims
        conv1 = 2 * _N1 * d[_D_OH1] * d[_D_OW1] * C * _K * _K
        conv2 = 2 * _N2 * d[_D_OH2] * d[_D_OW2] * _N1 * _K * _K
        dense = 2 * d[_D_FEAT] * _F1
        if self.fc84:
            dense += 2 * _F1 * _F2
        dense += 2 * d[_D_FLAST] * N_CLASSES
        fwd = int(conv1 + conv2 + dense)
        bwd = int(2 * (conv2 + dense) + conv1)
        return int(batch) * fwd, int(batch) * bwd
