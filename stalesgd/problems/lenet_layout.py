"""LeNet-5's architecture vector and workspace layout, shared by its kernels and its model.

The kernels receive the architecture as an int64 vector ``dims`` (positions ``D_*``) and
find every intermediate in one flat workspace ``ws`` at the offsets :func:`layout` returns
(positions ``L_*``).  Activations are stored *sample-last*: element ``(f, s)`` of a chunk of
``b`` samples lies at ``f·b + s``, where ``f`` runs over (channel, row, column) of a map or
over the units of a dense layer.  With that order a line of a map (its columns for all
samples) is one contiguous stretch, so a convolution streams whole shifted lines, pooling
and masking run along contiguous samples, and the dense layers are plain matrix products
with the batch as the short side.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from stalesgd.jitcache import cached

#: Rows processed at once; larger batches run chunk after chunk, accumulating the gradient.
CHUNK = 16

N_CLASSES = 10
K = 5  # convolution kernel size
N1 = 6  # conv1 output channels
N2 = 16  # conv2 output channels
F1 = 120  # fc1 units
F2 = 84  # fc2 units
BAND = 2  # convolution output rows per GEMM: one pooled row

# Positions in the int64 ``dims`` vector.
D_C, D_H, D_W, D_FC84 = 0, 1, 2, 3
D_OH1, D_OW1, D_PH1, D_PW1 = 4, 5, 6, 7
D_OH2, D_OW2, D_PH2, D_PW2 = 8, 9, 10, 11
D_FEAT, D_FLAST = 12, 13
D_C1W, D_C1B, D_C2W, D_C2B = 14, 15, 16, 17
D_F1W, D_F1B, D_F2W, D_F2B = 18, 19, 20, 21
D_OW, D_OB = 22, 23
D_LEN = 24


def make_dims(input_shape: tuple[int, int, int], fc84: bool,
              offsets: dict[str, int]) -> np.ndarray:
    """The ``dims`` vector for an input of shape (C, H, W); ``offsets`` maps each layer name
    (``conv1.w`` ...) to its offset in ``theta``."""
    C, H, W = input_shape
    oh1, ow1 = H - K + 1, W - K + 1
    ph1, pw1 = oh1 // 2, ow1 // 2
    oh2, ow2 = ph1 - K + 1, pw1 - K + 1
    ph2, pw2 = oh2 // 2, ow2 // 2
    dims = np.zeros(D_LEN, dtype=np.int64)
    dims[[D_C, D_H, D_W, D_FC84]] = (C, H, W, int(fc84))
    dims[[D_OH1, D_OW1, D_PH1, D_PW1]] = (oh1, ow1, ph1, pw1)
    dims[[D_OH2, D_OW2, D_PH2, D_PW2]] = (oh2, ow2, ph2, pw2)
    dims[[D_FEAT, D_FLAST]] = (N2 * ph2 * pw2, F2 if fc84 else F1)
    for pos, name in ((D_C1W, "conv1.w"), (D_C1B, "conv1.b"), (D_C2W, "conv2.w"),
                      (D_C2B, "conv2.b"), (D_F1W, "fc1.w"), (D_F1B, "fc1.b"),
                      (D_OW, "out.w"), (D_OB, "out.b")):
        dims[pos] = offsets[name]
    if fc84:
        dims[D_F2W], dims[D_F2B] = offsets["fc2.w"], offsets["fc2.b"]
    return dims


# Positions in the tuple returned by layout().
(L_ROW, L_X, L_A1, L_P1, L_M1, L_DP1, L_COL2, L_A2, L_H0, L_M2, L_D0, L_H1, L_D1, L_H2, L_D2,
 L_Z, L_LANES, L_END) = range(18)


@cached
@njit(nogil=True)
def layout(dims: np.ndarray, b: int) -> tuple:
    """Offsets in ``ws`` of every region for a chunk of ``b`` rows (last entry: total size).

    Regions (shapes sample-last, ``·b`` omitted):
    ``row`` the chunk's input rows as read, sample-major; ``x`` the chunk's inputs (C, H, W);
    ``a1`` one band of conv1's output (6, BAND, OW1), later its gradient; ``p1`` pooled +
    ReLU (6, PH1, PW1), ``m1`` the window position of each maximum (0..3, -1 where the ReLU
    is off), ``dp1`` the gradient of p1; ``a2`` a band of conv2 (16, BAND, OW2), later its
    gradient; ``col2`` the gradient of that band's patches (150, BAND, OW2), before col2im;
    ``h0``, ``m2``, ``d0`` features, positions, gradient (FEAT); ``h1``, ``d1`` (120);
    ``h2``, ``d2`` (84); ``z`` the logits, sample-major (b, 10), then their gradient;
    ``lanes`` b partial sums.
    """
    chw = dims[D_C] * dims[D_H] * dims[D_W]
    n1 = BAND * dims[D_OW1] * b
    n2 = BAND * dims[D_OW2] * b
    p1 = N1 * dims[D_PH1] * dims[D_PW1] * b
    feat = dims[D_FEAT] * b
    o_row = 0
    o_x = o_row + chw * b
    o_a1 = o_x + chw * b
    o_p1 = o_a1 + N1 * n1
    o_m1 = o_p1 + p1
    o_dp1 = o_m1 + p1
    o_col2 = o_dp1 + p1
    o_a2 = o_col2 + N1 * K * K * n2
    o_h0 = o_a2 + N2 * n2
    o_m2 = o_h0 + feat
    o_d0 = o_m2 + feat
    o_h1 = o_d0 + feat
    o_d1 = o_h1 + F1 * b
    o_h2 = o_d1 + F1 * b
    o_d2 = o_h2 + F2 * b
    o_z = o_d2 + F2 * b
    o_lanes = o_z + N_CLASSES * b
    end = o_lanes + b
    return (o_row, o_x, o_a1, o_p1, o_m1, o_dp1, o_col2, o_a2, o_h0, o_m2, o_d0, o_h1, o_d1,
            o_h2, o_d2, o_z, o_lanes, end)
