"""The passes of LeNet-5's kernels over one chunk of rows, layer by layer.

Each pass reads what the previous one left in the workspace ``ws`` (regions of
:func:`stalesgd.problems.lenet_layout.layout`, sample-last) and writes its own regions;
:mod:`stalesgd.problems.lenet` chains them into the loss and gradient kernels.  Forward:
:func:`gather`, :func:`conv1_forward`, :func:`conv2_forward`, :func:`dense_forward`;
backward, from the logits' gradient: :func:`dense_backward`, :func:`conv2_backward`,
:func:`conv1_backward`.  A convolution runs band by band, one pooled row at a time: im2col
of the band for all samples of the chunk, one GEMM, then pooling, bias and ReLU in one
pass; backward the same bands give the weight gradient (accumulated in place by BLAS)
and, for conv2, the input gradient through ``Wᵀ @ dA`` and col2im.  Bands keep every GEMM
operand in cache and every GEMM small enough for BLAS's fast path for small matrices.
Weight gradients are overwritten when ``first`` (the batch's first chunk) and accumulated
otherwise; bias gradients are always accumulated.
"""

from __future__ import annotations

from numba import njit

from stalesgd.problems.gemm import gemm
from stalesgd.problems.lenet_conv import conv_band, conv_band_weight_grad
from stalesgd.problems.lenet_layers import (
    add_row_sums,
    bias_relu,
    col2im_band,
    gather_sample_last,
    pool_band,
    relu_mask,
    unpool_band,
)
from stalesgd.problems.lenet_layout import (
    BAND,
    D_C,
    D_C1B,
    D_C1W,
    D_C2B,
    D_C2W,
    D_F1B,
    D_F1W,
    D_F2B,
    D_F2W,
    D_FC84,
    D_FEAT,
    D_FLAST,
    D_H,
    D_OB,
    D_OW,
    D_OW1,
    D_OW2,
    D_PH1,
    D_PH2,
    D_PW1,
    D_PW2,
    D_W,
    F1,
    F2,
    L_A1,
    L_A2,
    L_COL2,
    L_D0,
    L_D1,
    L_D2,
    L_DP1,
    L_END,
    L_H0,
    L_H1,
    L_H2,
    L_LANES,
    L_M1,
    L_M2,
    L_P1,
    L_ROW,
    L_X,
    L_Z,
    N1,
    N2,
    N_CLASSES,
    K,
    layout,
)


@njit(nogil=True)
def gather(X, idx, start, b, ws, dims):
    """The inputs of rows ``idx[start:start+b]``, sample-last, into the ``x`` region."""
    L = layout(dims, b)
    gather_sample_last(X, idx, start, b, ws[L[L_ROW] : L[L_X]], ws[L[L_X] : L[L_A1]])


@njit(nogil=True)
def conv_pool_forward(theta, woff, boff, nout, src, cin, hin, win, b, a, out, code):
    """A 5×5 'valid' convolution of the map ``src`` (cin×hin×win, sample-last) with the
    weights theta[woff:] (nout × cin·25), then 2×2 max-pool, bias theta[boff:] and ReLU into
    ``out`` and the maxima's positions into ``code`` (nout × pooled rows × pooled columns).

    One pooled row at a time: the convolution of its band of two output rows into ``a``,
    then pooling.
    """
    ow = win - K + 1
    ph = (hin - K + 1) // 2
    pw = ow // 2
    for r in range(ph):
        conv_band(src, cin, hin, win, BAND * r, ow, b, theta, woff, nout, a)
        pool_band(a, nout, ow, b, theta, boff, out, code, r * pw * b, ph * pw * b)


@njit(nogil=True)
def conv1_forward(theta, b, ws, dims):
    """conv1 on the inputs ``x`` -> pooled maps ``p1`` and their positions ``m1``."""
    L = layout(dims, b)
    conv_pool_forward(theta, dims[D_C1W], dims[D_C1B], N1, ws[L[L_X] : L[L_A1]], dims[D_C],
                      dims[D_H], dims[D_W], b, ws[L[L_A1] : L[L_P1]], ws[L[L_P1] : L[L_M1]],
                      ws[L[L_M1] : L[L_DP1]])


@njit(nogil=True)
def conv2_forward(theta, b, ws, dims):
    """conv2 on ``p1`` -> the features ``h0`` (FEAT = (channel, row, column): PyTorch's
    flatten order) and their positions ``m2``."""
    L = layout(dims, b)
    conv_pool_forward(theta, dims[D_C2W], dims[D_C2B], N2, ws[L[L_P1] : L[L_M1]], N1,
                      dims[D_PH1], dims[D_PW1], b, ws[L[L_A2] : L[L_H0]],
                      ws[L[L_H0] : L[L_M2]], ws[L[L_M2] : L[L_D0]])


@njit(nogil=True)
def dense_forward(theta, b, ws, dims):
    """Dense layers, (units, b) = W @ (inputs, b), and the logits, sample-major (b, 10)."""
    L = layout(dims, b)
    FEAT, FL = dims[D_FEAT], dims[D_FLAST]
    h0 = ws[L[L_H0] : L[L_M2]]
    h1 = ws[L[L_H1] : L[L_D1]]
    gemm(False, False, F1, b, FEAT, 1.0, theta, dims[D_F1W], FEAT, h0, 0, b, 0.0, h1, 0, b)
    bias_relu(h1, F1, b, theta, dims[D_F1B])
    hl = h1
    if dims[D_FC84] != 0:
        hl = ws[L[L_H2] : L[L_D2]]
        gemm(False, False, F2, b, F1, 1.0, theta, dims[D_F2W], F1, h1, 0, b, 0.0, hl, 0, b)
        bias_relu(hl, F2, b, theta, dims[D_F2B])
    # logits sample-major, (b, 10) = hlᵀ @ Woᵀ
    z = ws[L[L_Z] : L[L_LANES]]
    gemm(True, True, b, N_CLASSES, FL, 1.0, hl, 0, b, theta, dims[D_OW], FL, 0.0, z, 0,
         N_CLASSES)
    ob = dims[D_OB]
    for s in range(b):
        for j in range(N_CLASSES):
            z[s * N_CLASSES + j] += theta[ob + j]


@njit(nogil=True)
def dense_backward(theta, grad, b, ws, dims, first):
    """From the logits' gradient (in ``z``) to the features' (``d0``): output layer
    dWo (+)= dzᵀ @ hlᵀ, dbo += Σ dz, dhl = Woᵀ @ dzᵀ masked by the ReLU; the same for fc2, fc1."""
    L = layout(dims, b)
    FEAT, FL = dims[D_FEAT], dims[D_FLAST]
    beta = 0.0 if first else 1.0
    z = ws[L[L_Z] : L[L_LANES]]
    h0 = ws[L[L_H0] : L[L_M2]]
    h1 = ws[L[L_H1] : L[L_D1]]
    d0 = ws[L[L_D0] : L[L_H1]]
    d1 = ws[L[L_D1] : L[L_H2]]
    hl = h1
    dl = d1
    if dims[D_FC84] != 0:
        hl = ws[L[L_H2] : L[L_D2]]
        dl = ws[L[L_D2] : L[L_Z]]
    gemm(True, True, N_CLASSES, FL, b, 1.0, z, 0, N_CLASSES, hl, 0, b, beta, grad, dims[D_OW],
         FL)
    ob = dims[D_OB]
    for s in range(b):
        for j in range(N_CLASSES):
            grad[ob + j] += z[s * N_CLASSES + j]
    gemm(True, True, FL, b, N_CLASSES, 1.0, theta, dims[D_OW], FL, z, 0, N_CLASSES, 0.0, dl, 0,
         b)
    relu_mask(dl, hl)
    if dims[D_FC84] != 0:
        gemm(False, True, F2, F1, b, 1.0, dl, 0, b, h1, 0, b, beta, grad, dims[D_F2W], F1)
        add_row_sums(dl, F2, b, grad, dims[D_F2B])
        gemm(True, False, F1, b, F2, 1.0, theta, dims[D_F2W], F1, dl, 0, b, 0.0, d1, 0, b)
        relu_mask(d1, h1)
    gemm(False, True, F1, FEAT, b, 1.0, d1, 0, b, h0, 0, b, beta, grad, dims[D_F1W], FEAT)
    add_row_sums(d1, F1, b, grad, dims[D_F1B])
    gemm(True, False, FEAT, b, F1, 1.0, theta, dims[D_F1W], FEAT, d1, 0, b, 0.0, d0, 0, b)


@njit(nogil=True)
def conv2_backward(theta, grad, b, ws, dims, first):
    """conv2, band by band: dA2 from the pooling; dW2 (+)= the band's weight gradient;
    dcol2 = W2ᵀ @ dA2, col2im into dp1."""
    L = layout(dims, b)
    PH1, PW1 = dims[D_PH1], dims[D_PW1]
    OW2, PH2, PW2 = dims[D_OW2], dims[D_PH2], dims[D_PW2]
    lanes = ws[L[L_LANES] : L[L_END]]
    d0 = ws[L[L_D0] : L[L_H1]]
    p1 = ws[L[L_P1] : L[L_M1]]
    dp1 = ws[L[L_DP1] : L[L_COL2]]
    col2 = ws[L[L_COL2] : L[L_A2]]
    da2 = ws[L[L_A2] : L[L_H0]]
    m2 = ws[L[L_M2] : L[L_D0]]
    k2 = N1 * K * K
    n2 = BAND * OW2 * b
    for i in range(dp1.shape[0]):
        dp1[i] = 0
    for r in range(PH2):
        unpool_band(d0, m2, r * PW2 * b, PH2 * PW2 * b, N2, OW2, b, da2, lanes, grad,
                    dims[D_C2B])
        conv_band_weight_grad(p1, N1, PH1, PW1, BAND * r, OW2, b, da2, N2, grad, dims[D_C2W],
                              first and r == 0)
        gemm(True, False, k2, n2, N2, 1.0, theta, dims[D_C2W], k2, da2, 0, n2, 0.0, col2, 0, n2)
        col2im_band(col2, N1, PH1, PW1, BAND * r, OW2, b, dp1)


@njit(nogil=True)
def conv1_backward(grad, b, ws, dims, first):
    """conv1, band by band: dA1 from the pooling, dW1 (+)= the band's weight gradient (its
    input is the data: no input gradient)."""
    L = layout(dims, b)
    C, H, W = dims[D_C], dims[D_H], dims[D_W]
    OW1, PH1, PW1 = dims[D_OW1], dims[D_PH1], dims[D_PW1]
    lanes = ws[L[L_LANES] : L[L_END]]
    dp1 = ws[L[L_DP1] : L[L_COL2]]
    x = ws[L[L_X] : L[L_A1]]
    da1 = ws[L[L_A1] : L[L_P1]]
    m1 = ws[L[L_M1] : L[L_DP1]]
    for r in range(PH1):
        unpool_band(dp1, m1, r * PW1 * b, PH1 * PW1 * b, N1, OW1, b, da1, lanes, grad,
                    dims[D_C1B])
        conv_band_weight_grad(x, C, H, W, BAND * r, OW1, b, da1, N1, grad, dims[D_C1W],
                              first and r == 0)
