"""LeNet-5: loss and gradient against a plain NumPy LeNet and finite differences, the kernel
contract, init, training smoke test."""

from __future__ import annotations

import numpy as np
import pytest
from lenet_numpy import loss_and_gradient
from numba import njit

from stalesgd.problems.lenet import CHUNK, LeNet5

SHAPES = [(1, 28, 28), (3, 32, 32)]
CONFIGS = [(s, f) for s in SHAPES for f in (True, False)]


BATCHES = [1, 16, 128]


def _data(model: LeNet5, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random inputs and labels in the model's dtype.

    Like the digits of MNIST, every image has a blank band (its top 8 rows are exactly 0),
    so whole pooling windows of conv1 and conv2 tie; elsewhere values are random (no ties).
    """
    rng = np.random.default_rng(seed)
    C, H, W = model.input_shape
    X = rng.uniform(-1.0, 1.0, (n, C, H, W))
    X[:, :, :8, :] = 0.0
    y = rng.integers(0, 10, n).astype(np.int64)
    return X.reshape(n, -1).astype(model.dtype), y


def _params(model: LeNet5, seed: int) -> np.ndarray:
    """Initial weights with random biases (about half positive), so that the blank parts
    of the images carry gradient through tied pooling windows."""
    theta = model.init_params(seed).astype(np.float64)
    rng = np.random.default_rng(seed + 1000)
    for name, (off, shape) in model.layers.items():
        if name.endswith(".b"):
            theta[off : off + shape[0]] = rng.normal(0.0, 0.1, shape[0])
    return theta.astype(model.dtype)


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


def _batch(n_rows: int, batch: int, seed: int) -> np.ndarray:
    """``batch`` distinct row indices in random order."""
    return np.random.default_rng(seed).permutation(n_rows)[:batch].astype(np.int64)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape,fc84", CONFIGS)
def test_loss_and_gradient_match_a_plain_numpy_lenet(shape, fc84, dtype, batch):
    """The kernels compute LeNet-5 itself: loss, gradient and predictions agree with a
    NumPy forward and backward pass (float64 to 1e-10, float32 to its precision)."""
    model = LeNet5(shape, fc84=fc84, dtype=dtype)
    theta = _params(model, seed=batch)
    X, y = _data(model, batch + 7, seed=batch + 1)
    idx = _batch(len(X), batch, seed=batch + 2)
    expect_loss, expect, z = loss_and_gradient(model, theta, X[idx], y[idx])
    ws = model.workspace(batch)
    grad = np.full_like(theta, np.nan)
    loss = model.grad_kernel(theta, X, y, idx, grad, ws, model.dims)
    loss_sum, correct = model.loss_kernel(theta, X, y, idx, ws, model.dims)

    tol = 1e-10 if dtype == "float64" else 1e-4
    assert loss == pytest.approx(expect_loss, rel=tol)
    assert loss_sum / batch == pytest.approx(expect_loss, rel=tol)
    if dtype == "float64":
        assert correct == int(np.sum(np.argmax(z, axis=1) == y[idx]))
    for name in model.layers:
        got = model.view(grad, name).astype(np.float64)
        want = model.view(expect, name)
        assert np.linalg.norm(want) > 0, name
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert rel < tol, f"{name}: relative error {rel:.2e} against NumPy"


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape,fc84", CONFIGS)
def test_gradient_matches_finite_differences_float64(shape, fc84, batch):
    model = LeNet5(shape, fc84=fc84, dtype="float64")
    theta = _params(model, seed=3)
    X, y = _data(model, batch + 5, seed=4)
    idx = _batch(len(X), batch, seed=batch)
    ws = model.workspace(len(idx))
    grad = np.full_like(theta, np.nan)
    loss = model.grad_kernel(theta, X, y, idx, grad, ws, model.dims)
    assert np.all(np.isfinite(grad))
    assert loss == pytest.approx(_mean_loss(model, theta, X, y, idx, ws), rel=1e-12)

    rng = np.random.default_rng(5)
    for name, k in _coords(model, rng, per_layer=4):
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


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_gradient_matches_finite_differences_along_it(shape, batch):
    """float32: the directional derivative along the gradient, by central differences of
    the float32 loss kernel, is the gradient's squared norm."""
    model = LeNet5(shape, fc84=True, dtype="float32")
    theta = _params(model, seed=6)
    X, y = _data(model, batch + 3, seed=7)
    idx = _batch(len(X), batch, seed=batch + 8)
    ws = model.workspace(batch)
    grad = np.zeros_like(theta)
    model.grad_kernel(theta, X, y, idx, grad, ws, model.dims)
    g = grad.astype(np.float64)
    v = g / np.linalg.norm(g)
    h = 1e-3  # small against the curvature, large against float32 rounding
    up = _mean_loss(model, (theta + h * v).astype(np.float32), X, y, idx, ws)
    down = _mean_loss(model, (theta - h * v).astype(np.float32), X, y, idx, ws)
    assert (up - down) / (2 * h) == pytest.approx(np.linalg.norm(g), rel=1e-2)


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_packed_pixels_give_the_same_loss_and_gradient_as_dense_inputs(dtype):
    """Kernels read uint8 pixels + per-channel coefficients (``Dataset.inputs`` of image sets)
    as the very floats the dense inputs hold: same loss and gradient, bit for bit."""
    from stalesgd.data import load_dataset

    ds = load_dataset("synthetic", kind="images", dtype=dtype, n_train=40, n_test=8,
                      input_shape=(3, 32, 32), seed=3)
    assert ds.packed
    model = LeNet5((3, 32, 32), dtype=dtype)
    theta = _params(model, seed=2)
    idx = _batch(ds.n_train, 21, seed=4)  # a chunk and a part
    ws = model.workspace(len(idx))
    out = []
    for X in (ds.inputs("train"), ds.features("train")):
        grad = np.zeros_like(theta)
        loss = model.grad_kernel(theta, X, ds.y_train, idx, grad, ws, model.dims)
        out.append((loss, grad, model.loss_kernel(theta, X, ds.y_train, idx, ws, model.dims)))
    (l_packed, g_packed, e_packed), (l_dense, g_dense, e_dense) = out
    assert l_packed == l_dense and e_packed == e_dense
    assert g_packed.tobytes() == g_dense.tobytes()


def test_row_index_out_of_range_raises():
    model = LeNet5((1, 28, 28), dtype="float32")
    theta = model.init_params(0)
    X, y = _data(model, 5, seed=0)
    ws = model.workspace(2)
    with pytest.raises(IndexError, match="out of range"):
        model.grad_kernel(theta, X, y, np.array([0, 5], np.int64), np.zeros_like(theta), ws,
                          model.dims)
