"""LeNet-5 written plainly in NumPy (float64): forward pass, mean loss and its gradient.

Independent of the kernels' layouts and BLAS calls, for the tests to compare them with.
It follows the model's definition: 'valid' 5×5 cross-correlations, 2×2 max-pool of the
pre-activation with the gradient routed to the window's first maximum (row-major), then
bias and ReLU (ReLU'(0) = 0), dense layers, softmax cross-entropy.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import logsumexp


def _windows(x: np.ndarray) -> np.ndarray:
    """(n, C, H, W) -> (n, C, H-4, W-4, 5, 5) views of every 5×5 window."""
    return sliding_window_view(x, (5, 5), axis=(2, 3))


def _conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("nchwij,ocij->nohw", _windows(x), w, optimize=True)


def _pool(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2×2 max-pool: the maxima and the window position (0..3, row-major) of the first one."""
    n, c, h, w = a.shape
    win = a.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, c, h // 2, w // 2, 4)
    k = np.argmax(win, axis=-1)
    return np.take_along_axis(win, k[..., None], axis=-1)[..., 0], k


def _unpool(d: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Adjoint of :func:`_pool`: ``d`` routed to the positions ``k``."""
    n, c, ph, pw = d.shape
    win = np.zeros((n, c, ph, pw, 4))
    np.put_along_axis(win, k[..., None], d[..., None], axis=-1)
    win = win.reshape(n, c, ph, pw, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return win.reshape(n, c, 2 * ph, 2 * pw)


def _conv_input_grad(da: np.ndarray, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    dx = np.zeros(shape)
    oh, ow = da.shape[2:]
    for i in range(5):
        for j in range(5):
            dx[:, :, i : i + oh, j : j + ow] += np.einsum("nohw,oc->nchw", da, w[:, :, i, j])
    return dx


def loss_and_gradient(model, theta: np.ndarray, X: np.ndarray, y: np.ndarray
                      ) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean cross-entropy over the rows of ``X``, its gradient (float64, ``theta``'s layout)
    and the logits."""
    t = theta.astype(np.float64)
    p = {name: t[off : off + int(np.prod(shape))].reshape(shape)
         for name, (off, shape) in model.layers.items()}
    n = len(X)
    x = X.astype(np.float64).reshape((n,) + model.input_shape)

    a1 = _conv(x, p["conv1.w"])
    m1, k1 = _pool(a1)
    m1 = m1 + p["conv1.b"][:, None, None]
    h1 = np.maximum(m1, 0.0)
    a2 = _conv(h1, p["conv2.w"])
    m2, k2 = _pool(a2)
    m2 = m2 + p["conv2.b"][:, None, None]
    h2 = np.maximum(m2, 0.0)
    dense_in = [h2.reshape(n, -1)]  # channel-major flatten, as PyTorch
    names = ["fc1", "fc2", "out"] if model.fc84 else ["fc1", "out"]
    for name in names[:-1]:
        dense_in.append(np.maximum(dense_in[-1] @ p[name + ".w"].T + p[name + ".b"], 0.0))
    z = dense_in[-1] @ p["out.w"].T + p["out.b"]

    lse = logsumexp(z, axis=1)
    loss = float(np.mean(lse - z[np.arange(n), y]))
    dz = np.exp(z - lse[:, None])
    dz[np.arange(n), y] -= 1.0
    dz /= n

    g = {}
    d = dz
    for name, h in zip(reversed(names), reversed(dense_in), strict=True):
        g[name + ".w"] = d.T @ h
        g[name + ".b"] = d.sum(axis=0)
        d = (d @ p[name + ".w"]) * (h > 0)
    d2 = d.reshape(h2.shape) * (m2 > 0)
    g["conv2.b"] = d2.sum(axis=(0, 2, 3))
    da2 = _unpool(d2, k2)
    g["conv2.w"] = np.einsum("nohw,nchwij->ocij", da2, _windows(h1), optimize=True)
    d1 = _conv_input_grad(da2, p["conv2.w"], h1.shape) * (m1 > 0)
    g["conv1.b"] = d1.sum(axis=(0, 2, 3))
    da1 = _unpool(d1, k1)
    g["conv1.w"] = np.einsum("nohw,nchwij->ocij", da1, _windows(x), optimize=True)

    grad = np.zeros(model.n_params)
    for name, (off, shape) in model.layers.items():
        grad[off : off + int(np.prod(shape))] = g[name].ravel()
    return loss, grad, z
