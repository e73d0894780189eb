"""Direct 5×5 convolutions of one band of output rows, for maps with few channels.

A LeNet-5 convolution as a GEMM has a short side of 6 (conv1's output channels) or
25·C (its patches): BLAS ran conv1 that way at 11–14 GFLOP/s on an AVX2 core, a sixth
of its float32 peak, plus the im2col copy.  On sample-last maps (see
:mod:`stalesgd.problems.lenet_layout`) a convolution needs no patches: for one output row
and one kernel row ``ki``, output line ``(x, s)`` is the sum over ``kj`` of five input
lines ``(x + kj, s)``, each a contiguous stretch of ``ow·b`` elements shifted by ``kj·b``.
The loops below keep the weights of two output channels (forward) or the gradients of
two channels' five taps (backward) in registers and stream those lines, one vectorised
pass per kernel row: 1.2–7× the im2col + GEMM path per pass (largest for conv1 and
float32; ``bench/lenet_phases.py``, ``bench/lenet_roofline.py``).

Both take a band of :data:`BAND` output rows starting at row ``row0``; ``nout`` must be
even.  Weights are ``theta[woff + (co·cin + c)·25 + ki·5 + kj]`` as in PyTorch.
"""

from __future__ import annotations

from numba import njit

from stalesgd.problems.lenet_layout import BAND, K


@njit(nogil=True, fastmath={"contract"})
def conv_band(src, cin, hin, win, row0, ow, b, theta, woff, nout, a):
    """a[co, r, x, s] = Σ_{c,ki,kj} W[co, c, ki, kj] · src[c, row0 + r + ki, x + kj, s]
    for co < nout, r < BAND, x < ow (``a`` sample-last, (nout, BAND, ow), no bias)."""
    run = ow * b
    kk = cin * K * K
    for i in range(nout * BAND * run):
        a[i] = 0
    for co in range(0, nout, 2):
        w0 = woff + co * kk
        w1 = w0 + kk
        for c in range(cin):
            for r in range(BAND):
                o = (co * BAND + r) * run
                out0 = a[o : o + run]
                out1 = a[o + BAND * run : o + (BAND + 1) * run]
                for ki in range(K):
                    t = (c * K + ki) * K
                    u0, u1, u2, u3, u4 = (theta[w0 + t], theta[w0 + t + 1], theta[w0 + t + 2],
                                          theta[w0 + t + 3], theta[w0 + t + 4])
                    v0, v1, v2, v3, v4 = (theta[w1 + t], theta[w1 + t + 1], theta[w1 + t + 2],
                                          theta[w1 + t + 3], theta[w1 + t + 4])
                    line = (c * hin + row0 + r + ki) * win * b
                    s0 = src[line : line + run]
                    s1 = src[line + b : line + b + run]
                    s2 = src[line + 2 * b : line + 2 * b + run]
                    s3 = src[line + 3 * b : line + 3 * b + run]
                    s4 = src[line + 4 * b : line + 4 * b + run]
                    for i in range(run):
                        x0, x1, x2, x3, x4 = s0[i], s1[i], s2[i], s3[i], s4[i]
                        out0[i] += u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3 + u4 * x4
                        out1[i] += v0 * x0 + v1 * x1 + v2 * x2 + v3 * x3 + v4 * x4


@njit(nogil=True, fastmath={"contract", "reassoc"})
def conv_band_weight_grad(src, cin, hin, win, row0, ow, b, da, nout, grad, goff, overwrite):
    """grad[goff + (co·cin + c)·25 + ki·5 + kj] (+)= Σ_{r,x,s} da[co, r, x, s] ·
    src[c, row0 + r + ki, x + kj, s]: the weight gradient of :func:`conv_band`'s band
    (overwritten when ``overwrite``, else accumulated).  Sums are reassociated."""
    run = ow * b
    kk = cin * K * K
    zero = da.dtype.type(0)
    if overwrite:
        for j in range(nout * kk):
            grad[goff + j] = 0
    for co in range(0, nout, 2):
        g0 = goff + co * kk
        g1 = g0 + kk
        for c in range(cin):
            for ki in range(K):
                p0 = p1 = p2 = p3 = p4 = zero
                q0 = q1 = q2 = q3 = q4 = zero
                for r in range(BAND):
                    o = (co * BAND + r) * run
                    d0 = da[o : o + run]
                    d1 = da[o + BAND * run : o + (BAND + 1) * run]
                    line = (c * hin + row0 + r + ki) * win * b
                    s0 = src[line : line + run]
                    s1 = src[line + b : line + b + run]
                    s2 = src[line + 2 * b : line + 2 * b + run]
                    s3 = src[line + 3 * b : line + 3 * b + run]
                    s4 = src[line + 4 * b : line + 4 * b + run]
                    for i in range(run):
                        x0, x1, x2, x3, x4 = s0[i], s1[i], s2[i], s3[i], s4[i]
                        e0, e1 = d0[i], d1[i]
                        p0 += e0 * x0
                        p1 += e0 * x1
                        p2 += e0 * x2
                        p3 += e0 * x3
                        p4 += e0 * x4
                        q0 += e1 * x0
                        q1 += e1 * x1
                        q2 += e1 * x2
                        q3 += e1 * x3
                        q4 += e1 * x4
                t = (c * K + ki) * K
                grad[g0 + t] += p0
                grad[g0 + t + 1] += p1
                grad[g0 + t + 2] += p2
                grad[g0 + t + 3] += p3
                grad[g0 + t + 4] += p4
                grad[g1 + t] += q0
                grad[g1 + t + 1] += q1
                grad[g1 + t + 2] += q2
                grad[g1 + t + 3] += q3
                grad[g1 + t + 4] += q4
