"""LeNet-5: gradients against finite differences, kernel contract, init, training smoke test."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from stalesgd.problems.lenet import CHUNK, LeNet5

SHAPES = [(1, 28, 28), (3, 32, 32)]
CONFIGS = [(s, f) for s in SHAPES for f in (True, False)]


def _data(model: LeNet5, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs (no exact pooling ties) and labels in the model's dtype."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n, model.n_features)).astype(model.dtype)
    y = rng.integers(0, 10, n).astype(np.int64)
    return X, y


def _mean_loss(model, theta, X, y, idx, ws) -> float:
    loss_sum, _ = model.loss_kernel(theta, X, y, idx, ws, model.dims)
    return loss_sum / len(idx)


def _coords(model: LeNet5, rng: np.random.Generator, per_layer: int) -> list[tuple[str, int]]:
    """A random subset of parameter indices, ``per_layer`` from every layer."""
    out = []
    for name, (offset, shape) in model.layers.items():
        size = int(np.prod(shape))
        for j in rng.choice(size, min(size, per_layer), replace=False):
            out.append((name, offset + int(j)))
    return out


@pytest.mark.parametrize("shape,fc84", CONFIGS)
def test_gradient_matches_finite_differences_float64(shape, fc84):
    model = LeNet5(shape, fc84=fc84, dtype="float64")
    theta = model.init_params(seed=3)
    X, y = _data(model, 12, seed=4)
    idx = np.array([7, 2, 9, 0], dtype=np.int64)
    ws = model.workspace(len(idx))
    grad = np.full_like(theta, np.nan)
    loss = model.grad_kernel(theta, X, y, idx, grad, ws, model.dims)
    assert np.all(np.isfinite(grad))
    assert loss == pytest.approx(_mean_loss(model, theta, X, y, idx, ws), rel=1e-12)

    rng = np.random.default_rng(5)
    for name, k in _coords(model, rng, per_layer=5):
        # The loss is piecewise smooth (ReLU, max-pool): if the step straddles a
        # kink, the central difference at a 100x smaller step still converges.
        for h, tol in ((1e-6, 2e-8), (1e-8, 1e-6)):
            tp = theta.copy()
            tp[k] += h
            tm = theta.copy()
            tm[k] -= h
            fd = (_mean_loss(model, tp, X, y, idx, ws) - _mean_loss(model, tm, X, y, idx, ws))
            fd /= 2 * h
            if abs(fd - grad[k]) <= tol + 1e-6 * abs(grad[k]):
                break
        else:
            pytest.fail(f"{name}[{k}]: analytic {grad[k]!r} vs finite difference {fd!r}")


@pytest.mark.parametrize("shape,fc84", CONFIGS)
def test_float32_gradient_matches_float64(shape, fc84):
    m64 = LeNet5(shape, fc84=fc84, dtype="float64")
    m32 = LeNet5(shape, fc84=fc84, dtype="float32")
    th32 = m32.init_params(seed=11)
    th64 = th32.astype(np.float64)  # the same point in both precisions
    X32, y = _data(m32, 10, seed=12)
    X64 = X32.astype(np.float64)
    idx = np.arange(10, dtype=np.int64)
    g32 = np.zeros_like(th32)
    g64 = np.zeros_like(th64)
    l32 = m32.grad_kernel(th32, X32, y, idx, g32, m32.workspace(10), m32.dims)
    l64 = m64.grad_kernel(th64, X64, y, idx, g64, m64.workspace(10), m64.dims)
    assert l32 == pytest.approx(l64, rel=1e-5)
    for name in m64.layers:
        a = m32.view(g32, name).astype(np.float64)
        b = m64.view(g64, name)
        rel = np.linalg.norm(a - b) / np.linalg.norm(b)
        assert np.linalg.norm(b) > 0, name
        assert rel < 1e-4, f"{name}: float32 vs float64 relative error {rel:.2e}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_kernel_agrees_with_grad_kernel_and_chunks(dtype):
    model = LeNet5((1, 28, 28), dtype=dtype)
    theta = model.init_params(seed=1)
    n = CHUNK + 13  # more than one chunk
    X, y = _data(model, n, seed=2)
    idx = np.random.default_rng(3).permutation(n).astype(np.int64)
    ws = model.workspace(n)
    grad = np.zeros_like(theta)
    mean = model.grad_kernel(theta, X, y, idx, grad, ws, model.dims)
    loss_sum, correct = model.loss_kernel(theta, X, y, idx, ws, model.dims)
    assert mean == pytest.approx(loss_sum / n, rel=1e-6 if dtype == "float32" else 1e-12)
    assert 0 <= correct <= n

    # the gradient of a chunked batch is the weighted mean of per-part gradients
    a, b = idx[:CHUNK], idx[CHUNK:]
    ga = np.zeros_like(theta)
    gb = np.zeros_like(theta)
    la = model.grad_kernel(theta, X, y, a, ga, ws, model.dims)
    lb = model.grad_kernel(theta, X, y, b, gb, ws, model.dims)
    expect = (len(a) * ga.astype(np.float64) + len(b) * gb) / n
    tol = 1e-4 if dtype == "float32" else 1e-10
    assert np.linalg.norm(grad - expect) <= tol * np.linalg.norm(expect)
    assert mean == pytest.approx((len(a) * la + len(b) * lb) / n, rel=tol)

    # n_correct adds up over rows: one row at a time gives the same count
    one = np.zeros(1, dtype=np.int64)
    hits = 0
    for i in idx:
        one[0] = i
        hits += model.loss_kernel(theta, X, y, one, ws, model.dims)[1]
    assert hits == correct


def test_n_params_and_layers_match_architecture():
    m = LeNet5((1, 28, 28), fc84=True)
    conv = (6 * 25 + 6) + (16 * 6 * 25 + 16)
    assert m.n_params == conv + (256 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    m = LeNet5((1, 28, 28), fc84=False)
    assert m.n_params == conv + (256 * 120 + 120) + (120 * 10 + 10)
    m = LeNet5((3, 32, 32), fc84=True)
    conv = (6 * 75 + 6) + (16 * 6 * 25 + 16)
    assert m.n_params == conv + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert m.layers["fc1.w"][1] == (120, 400)
    assert m.layers["conv1.w"][1] == (6, 3, 5, 5)
    # layers tile theta exactly, in order, and views share memory with theta
    offset = 0
    for off, shape in m.layers.values():
        assert off == offset
        offset += int(np.prod(shape))
    assert offset == m.n_params
    theta = m.init_params(0)
    v = m.view(theta, "fc2.w")
    v[0, 0] = 42.0
    assert theta[m.layers["fc2.w"][0]] == 42.0


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="input_shape"):
        LeNet5((1, 32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        LeNet5((28, 28))
    with pytest.raises(ValueError, match="dtype"):
        LeNet5(dtype="float16")
    with pytest.raises(ValueError, match="fc84"):
        LeNet5(fc84="yes")
    with pytest.raises(ValueError, match="scheme"):
        LeNet5().init_params(0, scheme="xavier")


@pytest.mark.parametrize("scheme", ["default", "he", "glorot", "normal"])
def test_init_is_seeded_and_scaled(scheme):
    m = LeNet5((1, 28, 28), dtype="float64")
    a = m.init_params(7, scheme)
    assert np.array_equal(a, m.init_params(7, scheme))
    assert not np.array_equal(a, m.init_params(8, scheme))
    f32 = LeNet5((1, 28, 28), dtype="float32").init_params(7, scheme)
    assert f32.dtype == np.float32 and np.allclose(f32, a, rtol=1e-6, atol=0)
    for name, (_, shape) in m.layers.items():
        v = m.view(a, name)
        if name.endswith(".b"):
            assert not v.any(), name
            continue
        fan_in = int(np.prod(shape[1:]))
        fan_out = shape[0] * (int(np.prod(shape[2:])) if len(shape) > 2 else 1)
        rule = scheme if scheme != "default" else ("glorot" if name == "out.w" else "he")
        std = {
            "he": np.sqrt(2.0 / fan_in),
            "glorot": np.sqrt(2.0 / (fan_in + fan_out)),  # uniform ±sqrt(6/(in+out))
            "normal": 0.01,
        }[rule]
        assert v.std() == pytest.approx(std, rel=0.25 if v.size < 1000 else 0.06), name


@njit(nogil=True)
def _sgd(kernel, theta, X, y, idx_all, batch, grad, ws, dims, eta, steps):
    """``steps`` SGD updates inside njit, the gradient kernel passed as an argument, on
    consecutive minibatches of ``idx_all`` (wrapping); returns the summed minibatch losses."""
    per_pass = idx_all.shape[0] // batch
    total = 0.0
    for k in range(steps):
        j = k % per_pass
        total += kernel(theta, X, y, idx_all[j * batch : (j + 1) * batch], grad, ws, dims)
        for i in range(theta.shape[0]):
            theta[i] -= eta * grad[i]
    return total


def test_kernel_callable_inside_njit_loop():
    m = LeNet5((3, 32, 32), fc84=False, dtype="float32")
    theta = m.init_params(0)
    X, y = _data(m, 16, seed=1)
    idx = np.arange(16, dtype=np.int64)
    ws = m.workspace(16)
    g_ref = np.zeros_like(theta)
    ref = m.grad_kernel(theta, X, y, idx, g_ref, ws, m.dims)
    grad = np.zeros_like(theta)
    before = theta.copy()
    total = _sgd(m.grad_kernel, theta, X, y, idx, 16, grad, ws, m.dims, 0.0, 100)
    assert total == pytest.approx(100 * ref, rel=1e-9)
    assert np.array_equal(grad, g_ref)
    assert np.array_equal(theta, before)


def _synthetic_images(model: LeNet5, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten smooth random class templates plus pixel noise: an easy 10-class image set."""
    rng = np.random.default_rng(seed)
    C, H, W = model.input_shape
    coarse = rng.normal(0.0, 1.0, (10, C, H // 4, W // 4))
    templates = coarse.repeat(4, axis=2).repeat(4, axis=3).reshape(10, -1)
    y = rng.integers(0, 10, n).astype(np.int64)
    X = templates[y] + rng.normal(0.0, 1.0, (n, C * H * W))
    return np.ascontiguousarray(X, dtype=model.dtype), y


def test_sgd_training_lowers_loss():
    # float32, the precision the engines run; float64 is covered by the gradient checks
    m = LeNet5((1, 28, 28), fc84=True, dtype="float32")
    X, y = _synthetic_images(m, 512, seed=0)
    theta = m.init_params(seed=0)
    ws = m.workspace(len(X))
    grad = np.zeros_like(theta)
    all_idx = np.arange(len(X), dtype=np.int64)
    before, _ = m.loss_kernel(theta, X, y, all_idx, ws, m.dims)
    order = np.random.default_rng(1).permutation(len(X)).astype(np.int64)
    _sgd(m.grad_kernel, theta, X, y, order, 16, grad, ws, m.dims, 0.02, 200)
    after, correct = m.loss_kernel(theta, X, y, all_idx, ws, m.dims)
    assert np.isfinite(after)
    assert after / len(X) < 0.5 * before / len(X), (before / len(X), after / len(X))
    assert correct > 0.8 * len(X)


def _reference_logits(model: LeNet5, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    """LeNet-5 written plainly in NumPy (float64), independent of the kernels' layout tricks."""
    from numpy.lib.stride_tricks import sliding_window_view

    t = theta.astype(np.float64)

    def layer(name):
        off, shape = model.layers[name]
        return t[off : off + int(np.prod(shape))].reshape(shape)

    def conv(x, w, b):  # x (n, C, H, W), w (O, C, 5, 5): cross-correlation, 'valid'
        win = sliding_window_view(x, (5, 5), axis=(2, 3))  # (n, C, H-4, W-4, 5, 5)
        return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]

    def pool(a):  # 2×2 max-pool, stride 2
        n, c, h, w = a.shape
        return a[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(
            axis=(3, 5)
        )

    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    x = X.astype(np.float64).reshape((-1,) + model.input_shape)
    h = relu(pool(conv(x, layer("conv1.w"), layer("conv1.b"))))
    h = relu(pool(conv(h, layer("conv2.w"), layer("conv2.b"))))
    h = h.reshape(len(x), -1)  # channel-major flatten, as PyTorch
    h = relu(h @ layer("fc1.w").T + layer("fc1.b"))
    if model.fc84:
        h = relu(h @ layer("fc2.w").T + layer("fc2.b"))
    return h @ layer("out.w").T + layer("out.b")


@pytest.mark.parametrize("shape,fc84", CONFIGS)
def test_loss_matches_a_plain_numpy_lenet(shape, fc84):
    """The kernels compute LeNet-5 itself: loss and predictions agree with a NumPy forward pass."""
    from scipy.special import logsumexp

    model = LeNet5(shape, fc84=fc84, dtype="float64")
    theta = model.init_params(seed=4)
    X, y = _data(model, 70, seed=5)
    idx = np.arange(len(X), dtype=np.int64)
    z = _reference_logits(model, theta, X)
    expect = float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(y)), y]))
    loss_sum, correct = model.loss_kernel(theta, X, y, idx, model.workspace(len(X)), model.dims)
    assert loss_sum / len(X) == pytest.approx(expect, rel=1e-12)
    assert correct == int(np.sum(np.argmax(z, axis=1) == y))
