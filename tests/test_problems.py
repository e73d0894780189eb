"""Dense models (linreg, logreg, softmax, MLP): gradients, stability, init, kernels, registry.

Gradient checks
---------------
float64: central differences with step h = 1e-6 on every parameter (the public
helper ``stalesgd.problems.testing.check_gradient``, which plug-in authors use too); the
error of a central difference is O(h²·f''') + O(eps·|f|/h) ≈ 1e-10, so a
tolerance of 1e-7 (relative to the largest gradient entry) is tight and
still robust.  Biases are drawn at random so that no ReLU sits exactly at
its kink (with zero biases an input row whose hidden units are all dead
gives pre-activations of exactly 0 downstream, where the one-sided slopes
differ and a finite difference sees half of each).

float32: a finite difference in single precision is dominated by rounding
(eps32·|f|/h ≈ 1e-4 at h = 1e-3), so it cannot check a gradient tightly.
Instead the float32 kernel is compared with the float64 kernel evaluated at
the *same* point (parameters and data rounded to float32 first, then
widened), whose correctness the float64 test established.  What remains is
the float32 rounding of the kernel itself: dot products of length d carry a
relative error of about sqrt(d)·eps32 ≈ 2e-6 for d ≤ 100, so the tolerance
is 5e-5 of the largest gradient entry — about 20× the expected rounding, and
far below the O(1) error of any wrong formula.  Smooth models also get a
directional float32 finite difference at h = 1e-2 (near the optimal step
cbrt(eps32)), checked at 1e-3 relative.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from numba import njit

from stalesgd.problems._kernels import sgd_step
from stalesgd.problems.linreg import LinearRegression
from stalesgd.problems.logreg import LogisticRegression
from stalesgd.problems.mlp import MLP
from stalesgd.problems.softmax import SoftmaxRegression
from stalesgd.problems.testing import check_gradient

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def _case(kind: str, dtype: str, hidden=(5,), d: int = 7, k: int = 3, n: int = 40, seed: int = 0):
    """A model, random data (in ``dtype``) and a point with non-zero biases."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if kind == "linreg":
        model = LinearRegression(n_features=d, dtype=dtype)
        y = rng.normal(size=n).astype(dtype)
    elif kind == "logreg":
        model = LogisticRegression(n_features=d, dtype=dtype)
        y = rng.integers(0, 2, size=n).astype(np.int64)
    elif kind == "softmax":
        model = SoftmaxRegression(n_features=d, n_classes=k, dtype=dtype)
        y = rng.integers(0, k, size=n).astype(np.int64)
    else:
        model = MLP(n_features=d, n_classes=k, hidden=hidden, dtype=dtype)
        y = rng.integers(0, k, size=n).astype(np.int64)
    theta = model.init_params(seed + 1).astype(np.float64)
    for name, (off, shape) in model.layers.items():
        if name.startswith("b"):
            theta[off : off + int(np.prod(shape))] = rng.normal(0.0, 0.3, size=shape).ravel()
    return model, np.ascontiguousarray(X.astype(dtype)), y, theta.astype(dtype)


def _grad(model, theta, X, y, idx):
    grad = np.full_like(theta, np.nan)  # the kernel must overwrite every entry
    loss = model.grad_kernel(theta, X, y, idx, grad, model.workspace(len(idx)), model.dims)
    return loss, grad


def _loss(model, theta, X, y, idx):
    return model.grad_kernel(
        theta, X, y, idx, np.empty_like(theta), model.workspace(len(idx)), model.dims
    )


CASES = [
    ("linreg", (), 8),
    ("logreg", (), 8),
    ("softmax", (), 8),
    ("mlp", (5,), 8),
    ("mlp", (6, 5), 5),  # 2 hidden layers, odd sizes
    ("mlp", (7, 3, 4), 3),  # 3 hidden layers
    ("mlp", (5, 4), 1),  # batch 1
]


@pytest.mark.parametrize("kind,hidden,batch", CASES)
def test_gradient_matches_central_differences_float64(kind, hidden, batch):
    model, X, y, theta = _case(kind, "float64", hidden=hidden)
    idx = np.random.default_rng(5).integers(0, X.shape[0], size=batch).astype(np.int64)
    result = check_gradient(model, (X, y), theta=theta, idx=idx, steps=(1e-6,), tol=1e-7)
    assert result.n_checked == model.n_params and np.isfinite(result.loss)


def test_gradient_with_repeated_rows_counts_them_twice():
    model, X, y, theta = _case("mlp", "float64", hidden=(4,))
    _, g_twice = _grad(model, theta, X, y, np.array([3, 3], dtype=np.int64))
    _, g_once = _grad(model, theta, X, y, np.array([3], dtype=np.int64))
    np.testing.assert_allclose(g_twice, g_once, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind,hidden,batch", CASES)
def test_float32_gradient_matches_float64_at_same_point(kind, hidden, batch):
    model32, X32, y, theta32 = _case(kind, "float32", hidden=hidden)
    model64, _, _, _ = _case(kind, "float64", hidden=hidden)
    y64 = y.astype(np.float64) if kind == "linreg" else y
    idx = np.random.default_rng(5).integers(0, X32.shape[0], size=batch).astype(np.int64)
    loss32, g32 = _grad(model32, theta32, X32, y, idx)
    loss64, g64 = _grad(model64, theta32.astype(np.float64), X32.astype(np.float64), y64, idx)
    assert g32.dtype == np.float32 and isinstance(loss32, float)
    assert abs(loss32 - loss64) <= 5e-5 * max(abs(loss64), 1.0)
    np.testing.assert_allclose(g32, g64, rtol=0, atol=5e-5 * np.abs(g64).max())


@pytest.mark.parametrize("kind", ["linreg", "logreg", "softmax"])
def test_float32_directional_finite_difference(kind):
    model, X, y, theta = _case(kind, "float32")
    idx = np.arange(16, dtype=np.int64)
    _, g = _grad(model, theta, X, y, idx)
    v = np.random.default_rng(9).normal(size=theta.size).astype(np.float32)
    v /= np.linalg.norm(v)
    h = np.float32(1e-2)
    fd = (_loss(model, theta + h * v, X, y, idx) - _loss(model, theta - h * v, X, y, idx)) / (2 * h)
    exact = float(np.dot(g.astype(np.float64), v.astype(np.float64)))
    assert abs(fd - exact) <= 1e-3 * max(np.linalg.norm(g), 1e-3)


@pytest.mark.parametrize("kind", ["linreg", "logreg", "softmax", "mlp"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_kernel_agrees_with_grad_kernel(kind, dtype):
    model, X, y, theta = _case(kind, dtype, hidden=(6, 5))
    idx = np.arange(X.shape[0], dtype=np.int64)
    loss, _ = _grad(model, theta, X, y, idx)
    loss_sum, correct = model.loss_kernel(theta, X, y, idx, model.workspace(len(idx)), model.dims)
    assert loss_sum / len(idx) == pytest.approx(loss, rel=1e-5 if dtype == "float32" else 1e-12)
    if kind == "linreg":
        assert correct == 0
    else:
        assert 0 <= correct <= len(idx)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_softmax_loss_is_stable_for_huge_logits(kind, dtype):
    model, X, y, theta = _case(kind, dtype, hidden=(5,))
    theta = (theta * 1e3).astype(dtype)  # logits of order 1e3..1e5: exp would overflow
    X = (X * 30).astype(dtype)
    idx = np.arange(X.shape[0], dtype=np.int64)
    loss, grad = _grad(model, theta, X, y, idx)
    loss_sum, _ = model.loss_kernel(theta, X, y, idx, model.workspace(len(idx)), model.dims)
    assert np.isfinite(loss) and np.isfinite(loss_sum) and loss > 10.0
    assert np.all(np.isfinite(grad))


def test_softmax_loss_value_for_known_logits():
    # one example, logits (1000, 0, -1000) via the bias; label 1 -> loss = 1000 + log(1+e^-1000+..)
    model = SoftmaxRegression(n_features=1, n_classes=3, dtype="float64")
    theta = np.array([0.0, 0.0, 0.0, 1000.0, 0.0, -1000.0])
    X = np.zeros((1, 1))
    for label, expected in [(0, 0.0), (1, 1000.0), (2, 2000.0)]:
        y = np.array([label], dtype=np.int64)
        loss, grad = _grad(model, theta, X, y, np.array([0], dtype=np.int64))
        assert loss == pytest.approx(expected, abs=1e-9)
        assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logistic_loss_is_stable_for_huge_margins(dtype):
    model = LogisticRegression(n_features=1, dtype=dtype)
    X = np.array([[1.0], [1.0], [-1.0], [-1.0]], dtype=dtype)
    y = np.array([0, 1, 0, 1], dtype=np.int64)
    theta = np.array([1e4, 0.0], dtype=dtype)  # z = ±1e4
    loss, grad = _grad(model, theta, X, y, np.arange(4, dtype=np.int64))
    # rows 0 and 3 are wrong by a margin of 1e4, rows 1 and 2 are right: mean loss = 2e4/4
    assert loss == pytest.approx(5e3, rel=1e-6)
    np.testing.assert_allclose(grad, [0.5, 0.0], atol=1e-6)
    loss_sum, correct = model.loss_kernel(
        theta, X, y, np.arange(4, dtype=np.int64), model.workspace(4), model.dims
    )
    assert loss_sum == pytest.approx(2e4, rel=1e-6) and correct == 2


def test_logistic_rejects_labels_outside_0_1():
    model = LogisticRegression(n_features=2)
    X = np.ones((2, 2))
    with pytest.raises(ValueError, match="0 or 1"):
        _grad(model, model.init_params(0), X, np.array([0, 2]), np.arange(2, dtype=np.int64))


def test_out_of_range_row_index_raises():
    model, X, y, theta = _case("mlp", "float64")
    with pytest.raises(IndexError):
        _grad(model, theta, X, y, np.array([0, X.shape[0]], dtype=np.int64))


# --- initialisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [
        LinearRegression(n_features=9),
        LogisticRegression(n_features=9),
        SoftmaxRegression(n_features=9, n_classes=4),
        MLP(n_features=9, n_classes=4, hidden=(8, 6)),
    ],
    ids=lambda m: m.name,
)
def test_init_is_seeded_and_reproducible(model):
    for scheme in ("default", "he", "glorot", "normal"):
        a, b, c = model.init_params(3, scheme), model.init_params(3, scheme), model.init_params(4)
        assert a.dtype == model.dtype and a.shape == (model.n_params,)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_init_float32_is_float64_rounded():
    m32 = MLP(n_features=9, n_classes=4, hidden=(8,), dtype="float32")
    m64 = MLP(n_features=9, n_classes=4, hidden=(8,), dtype="float64")
    np.testing.assert_array_equal(m32.init_params(7), m64.init_params(7).astype(np.float32))


def test_init_schemes_have_documented_scale():
    model = MLP(n_features=784, n_classes=10, hidden=(256, 64), dtype="float64")
    theta = model.init_params(0)
    w1, w2, w3 = (model.view(theta, k) for k in ("W1", "W2", "W3"))
    assert w1.std() == pytest.approx(np.sqrt(2 / 784), rel=0.03)  # He, ReLU follows
    assert w2.std() == pytest.approx(np.sqrt(2 / 256), rel=0.03)  # He, ReLU follows
    assert w3.std() == pytest.approx(np.sqrt(2 / (64 + 10)), rel=0.1)  # Glorot, 640 entries
    assert np.abs(w3).max() <= np.sqrt(6 / (64 + 10))  # Glorot uniform bound
    for b in ("b1", "b2", "b3"):
        assert not model.view(theta, b).any()
    he = model.init_params(0, "he")
    assert model.view(he, "W3").std() == pytest.approx(np.sqrt(2 / 64), rel=0.1)
    glorot = model.init_params(0, "glorot")
    assert model.view(glorot, "W1").std() == pytest.approx(np.sqrt(2 / (784 + 256)), rel=0.03)
    normal = model.init_params(0, "normal")
    assert normal[: model.layers["b1"][0]].std() == pytest.approx(0.01, rel=0.03)
    with pytest.raises(ValueError, match="xavier"):
        model.init_params(0, "xavier")


def test_layer_views_share_memory_with_theta():
    model = MLP(n_features=5, n_classes=3, hidden=(4, 2), dtype="float32")
    theta = model.init_params(0)
    covered = 0
    for name, (off, shape) in model.layers.items():
        v = model.view(theta, name)
        assert v.shape == shape and np.shares_memory(v, theta)
        v[...] = 7.0
        assert np.all(theta[off : off + v.size] == 7.0)
        covered += v.size
    assert covered == model.n_params == theta.size


def test_bad_model_arguments_raise():
    with pytest.raises(ValueError, match="hidden"):
        MLP(n_features=4, n_classes=3, hidden=(4, 0))
    with pytest.raises(ValueError, match="n_classes"):
        MLP(n_features=4, n_classes=1)
    with pytest.raises(ValueError, match="dtype"):
        LinearRegression(n_features=3, dtype="float16")
    with pytest.raises(ValueError, match="batch"):
        MLP(n_features=4, n_classes=3).workspace_size(0)


# --- kernels as first-class arguments in engine-like loops ---------------------------------


@njit(nogil=True)
def _sgd_loop(grad_kernel, theta, X, y, idx_all, batch, grad, ws, dims, eta, steps):
    """An engine-like worker loop: the kernel is a plain argument."""
    first = 0.0
    last = 0.0
    n = idx_all.shape[0] // batch
    for k in range(steps):
        j = k % n
        loss = grad_kernel(theta, X, y, idx_all[j * batch : (j + 1) * batch], grad, ws, dims)
        if k == 0:
            first = loss
        last = loss
        sgd_step(theta, grad, eta)
    return first, last


@pytest.mark.parametrize("kind", ["linreg", "logreg", "softmax", "mlp"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_runs_as_argument_in_njit_loop(kind, dtype):
    model, X, y, theta0 = _case(kind, dtype, hidden=(6, 5), n=64)
    batch = 8
    idx_all = np.random.default_rng(2).permutation(64).astype(np.int64)
    ws, grad = model.workspace(batch), np.empty_like(theta0)
    theta = theta0.copy()
    first, last = _sgd_loop(model.grad_kernel, theta, X, y, idx_all, batch, grad, ws, model.dims,
                            0.05, 1000)
    assert np.isfinite(last) and last < first
    # the same 1000 steps driven from Python give the same parameters
    ref = theta0.copy()
    for k in range(1000):
        j = k % 8
        model.grad_kernel(ref, X, y, idx_all[j * batch : (j + 1) * batch], grad, ws, model.dims)
        sgd_step(ref, grad, 0.05)
    np.testing.assert_array_equal(theta, ref)


def _nrt_stats():
    try:
        from numba.core.runtime import _nrt_python, rtsys
    except ImportError:  # pragma: no cover
        pytest.skip("numba NRT statistics are not available in this numba version")
    if not hasattr(_nrt_python, "memsys_enable_stats"):  # pragma: no cover
        pytest.skip("numba NRT statistics are not available in this numba version")
    return _nrt_python, rtsys


@pytest.mark.parametrize("kind", ["linreg", "logreg", "softmax", "mlp"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grad_kernel_does_not_allocate(kind, dtype):
    """NRT allocation count of 10 vs 1000 in-kernel steps: an allocation per step would differ.

    This covers ``np.dot(a, b, out)`` on workspace views (GEMM and GEMV, with
    transposed operands) in both precisions.
    """
    nrt, rtsys = _nrt_stats()
    model, X, y, theta = _case(kind, dtype, hidden=(6, 5), n=64)
    idx_all = np.arange(64, dtype=np.int64)
    ws, grad = model.workspace(8), np.empty_like(theta)
    args = (model.grad_kernel, theta, X, y, idx_all, 8, grad, ws, model.dims, 1e-3)
    _sgd_loop(*args, 1)  # compile
    was_on = nrt.memsys_stats_enabled()
    nrt.memsys_enable_stats()
    try:
        s0 = rtsys.get_allocation_stats()
        _sgd_loop(*args, 10)
        s1 = rtsys.get_allocation_stats()
        _sgd_loop(*args, 1000)
        s2 = rtsys.get_allocation_stats()
    finally:
        if not was_on:
            nrt.memsys_disable_stats()
    assert s2.alloc - s1.alloc == s1.alloc - s0.alloc
    assert s2.mi_alloc - s1.mi_alloc == s1.mi_alloc - s0.mi_alloc


# --- registry ------------------------------------------------------------------------------


def test_unknown_problem_names_list_what_is_allowed():
    from stalesgd.problems.registry import make_problem

    for bad in ("resnet-mnist", "mlp-imagenet", "mlp", "mnist-mlp"):
        with pytest.raises(ValueError, match="linreg.*synthetic"):
            make_problem(bad)
    with pytest.raises(ValueError, match="init"):
        make_problem("mlp-synthetic", init="lecun")
    with pytest.raises(ValueError, match="dtype"):
        make_problem("mlp-synthetic", dtype="int8")
    with pytest.raises(ValueError, match="hidden"):
        make_problem("logreg-synthetic", hidden=(3,))


def _load_dataset_or_skip():
    try:
        from stalesgd.data import load_dataset  # noqa: F401
    except ImportError:
        pytest.skip("stalesgd.data.load_dataset is not available yet")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linreg_problem_exposes_exact_constants(dtype):
    _load_dataset_or_skip()
    from stalesgd.problems.registry import make_problem

    p = make_problem("linreg-synthetic", dtype=dtype, seed=3)
    assert p.model.name == "linreg" and p.model.dtype == np.dtype(dtype)
    assert 0 < p.mu <= p.L
    X = p.dataset.X_train.astype(np.float64)
    eig = np.linalg.eigvalsh(X.T @ X / len(X))
    assert p.L == pytest.approx(eig[-1]) and p.mu == pytest.approx(eig[0])
    # the gradient at theta_star vanishes (float64 kernel on float64 data)
    p64 = make_problem("linreg-synthetic", dtype="float64", seed=3)
    theta = p64.theta_star.copy()
    grad = np.empty_like(theta)
    n = p64.dataset.X_train.shape[0]
    loss = p64.loss_grad(theta, np.arange(n), grad, p64.workspace(n))
    assert np.abs(grad).max() <= 1e-9 * max(1.0, p64.L * np.abs(theta).max())
    assert loss == pytest.approx(p64.f_star, rel=1e-9, abs=1e-12)
    other = p64.init_params(0)
    assert p64.loss_grad(other, np.arange(n), grad, p64.workspace(n)) > p64.f_star
    with pytest.raises(ValueError, match="linreg"):
        _ = make_problem("softmax-synthetic").L


@pytest.mark.parametrize("name", ["logreg-synthetic", "softmax-synthetic", "mlp-synthetic"])
def test_classification_problem_evaluates_in_one_call(name):
    _load_dataset_or_skip()
    from stalesgd.problems.registry import make_problem

    p = make_problem(name, dtype="float32", seed=1)
    theta = p.init_params(0)
    loss, acc = p.evaluate(theta, "test")
    Xt, yt = p.dataset.inputs("test"), p.dataset.y_test
    idx = np.arange(p.dataset.n_test, dtype=np.int64)
    ref_sum, ref_correct = p.model.loss_kernel(theta, Xt, yt, idx, p.workspace(len(idx)),
                                               p.model.dims)
    assert loss == pytest.approx(ref_sum / len(idx), rel=1e-5)
    assert acc == pytest.approx(ref_correct / len(idx))
    loss5, _ = p.evaluate(theta, "train", max_rows=5)
    ref5, _ = p.model.loss_kernel(theta, p.dataset.inputs("train"), p.dataset.y_train,
                                  np.arange(5, dtype=np.int64), p.workspace(5), p.model.dims)
    assert loss5 == pytest.approx(ref5 / 5, rel=1e-5)
    with pytest.raises(ValueError, match="split"):
        p.evaluate(theta, "validation")


def test_mlp_problem_options_and_training_step():
    _load_dataset_or_skip()
    from stalesgd.problems.registry import make_problem

    p = make_problem("mlp-synthetic", dtype="float64", seed=0, hidden=(16, 8))
    assert p.model.sizes[1:-1] == (16, 8)
    theta = p.init_params(0)
    assert np.array_equal(theta, p.init_params(0))
    grad = np.empty_like(theta)
    ws = p.workspace(32)
    rng = np.random.default_rng(0)
    n = p.dataset.X_train.shape[0]
    before, _ = p.evaluate(theta, "train")
    for _ in range(200):
        p.loss_grad(theta, rng.integers(0, n, 32), grad, ws)
        theta -= 0.1 * grad
    after, _ = p.evaluate(theta, "train")
    assert after < 0.8 * before


def test_mlp_mnist_from_shared_data():
    _load_dataset_or_skip()
    if not (DATA_DIR / "mnist").is_dir():
        pytest.skip(f"shared MNIST not found under {DATA_DIR}")
    from stalesgd.problems.registry import make_problem

    p = make_problem("mlp-mnist", dtype="float32", data_dir=DATA_DIR)
    assert p.model.sizes == (784, 128, 10)
    loss, acc = p.evaluate(p.init_params(0), "test", max_rows=1000)
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0


def test_lenet_problem_is_built_through_the_registry():
    _load_dataset_or_skip()
    try:
        from stalesgd.problems.lenet import LeNet5  # noqa: F401
    except ImportError:
        pytest.skip("stalesgd.problems.lenet is not available yet")
    from stalesgd.problems.registry import make_problem

    with_fc84 = make_problem("lenet-synthetic", dtype="float32", n_train=64, n_test=32)
    without = make_problem("lenet-synthetic", dtype="float32", fc84=False, n_train=64, n_test=32)
    assert with_fc84.model.name == without.model.name == "lenet"
    assert with_fc84.model.n_params > without.model.n_params
    with pytest.raises(ValueError, match="fc84"):
        make_problem("mlp-synthetic", fc84=False)


@pytest.mark.slow
def test_lenet_problem_evaluates():
    """Compiles LeNet's kernels (about 10 s), hence slow."""
    _load_dataset_or_skip()
    try:
        from stalesgd.problems.lenet import LeNet5  # noqa: F401
    except ImportError:
        pytest.skip("stalesgd.problems.lenet is not available yet")
    from stalesgd.problems.registry import make_problem

    p = make_problem("lenet-synthetic", dtype="float32", fc84=False, n_train=64, n_test=300)
    loss, acc = p.evaluate(p.init_params(0), "test")
    Xt, yt = p.dataset.inputs("test"), p.dataset.y_test
    idx = np.arange(p.dataset.n_test, dtype=np.int64)
    ref, correct = p.model.loss_kernel(p.init_params(0), Xt, yt, idx, p.workspace(len(idx)),
                                       p.model.dims)
    assert loss == pytest.approx(ref / len(idx), rel=1e-5)
    assert acc == pytest.approx(correct / len(idx))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_workspaces_start_on_a_cache_line(dtype):
    """A workspace 16 bytes off a 32-byte boundary made LeNet-5's gradient 13-18 % slower:
    every model's workspace starts on a 64-byte line (malloc gives 16-byte alignment, so
    unaligned ones show up among these 45 allocations with near certainty)."""
    from stalesgd.problems.lenet import LeNet5

    models = [LinearRegression(n_features=9, dtype=dtype),
              MLP(n_features=9, n_classes=4, hidden=(8, 6), dtype=dtype),
              LeNet5((1, 28, 28), dtype=dtype)]
    for model in models:
        for batch in (1, 3, 16, 17, 128):
            for _ in range(3):
                ws = model.workspace(batch)
                assert ws.ctypes.data % 64 == 0, (model.name, batch)
                assert ws.size >= model.workspace_size(batch) and not ws.any()
                assert ws.dtype == np.dtype(dtype) and ws.flags.c_contiguous


def test_sigmoid_softplus_equals_the_two_textbook_formulas():
    """One exponential for both: the logistic function and log(1 + e^z), stable at the
    extremes, equal to the separate formulas to the last bit where those are stable."""
    from stalesgd.problems._kernels import sigmoid_softplus

    z = np.concatenate([np.linspace(-40, 40, 2001), [-800.0, -1e-300, 0.0, 1e-300, 800.0]])
    got = np.array([sigmoid_softplus(v) for v in z])
    # the separate stable formulas, with the C library's exp and log1p (as compiled code)
    sig = [1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
           for v in z]
    np.testing.assert_array_equal(got[:, 0], sig)
    np.testing.assert_array_equal(got[:, 1], [max(v, 0.0) + math.log1p(math.exp(-abs(v)))
                                              for v in z])
    np.testing.assert_allclose(got[:2001, 0], 1 / (1 + np.exp(-z[:2001])), rtol=1e-15)
    np.testing.assert_allclose(got[:2001, 1], np.log1p(np.exp(z[:2001])), rtol=1e-14)
    assert got[-5, 0] == 0.0 and got[-1, 0] == 1.0 and got[-1, 1] == 800.0
