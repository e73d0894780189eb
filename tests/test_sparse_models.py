"""The linear models on sparse rows (logreg, softmax, svm): gradients by finite differences,
agreement with the dense models, and the sparse gradient contract."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from stalesgd.data import load_dataset
from stalesgd.problems import LogisticRegression, SoftmaxRegression, make_problem
from stalesgd.problems.linear import LinearClassifier

LOSSES = [("logreg", 2), ("svm", 2), ("softmax", 4)]


def _case(loss: str, k: int, dtype: str = "float64", d: int = 60, seed: int = 0):
    """A model on a small sparse set and a point with non-zero biases."""
    data = load_dataset("sparse", dtype=dtype, seed=seed, n_train=50, n_test=10,
                        n_features=d, nnz=6, n_classes=k)
    model = LinearClassifier(loss=loss, n_features=d, n_classes=k,
                             max_row_nnz=data.max_row_nnz, dtype=dtype)
    theta = model.init_params(seed + 1).astype(np.float64) * 3.0
    off, shape = model.layers["b"]
    theta[off:] = np.random.default_rng(seed).normal(0.0, 0.3, size=shape)
    return model, data.inputs("train"), data.y_train, theta.astype(dtype), data


def _grad(model, theta, X, y, idx):
    grad = np.full_like(theta, np.nan)  # the kernel must overwrite every entry
    loss = model.grad_kernel(theta, X, y, idx, grad, model.workspace(len(idx)), model.dims)
    return loss, grad


def _sparse(model, theta, X, y, idx, ws=None):
    cap = model.sparse_capacity(len(idx))
    gidx, gval = np.full(cap, -1, dtype=np.int64), np.zeros(cap, dtype=theta.dtype)
    ws = model.workspace(len(idx)) if ws is None else ws
    loss, nnz = model.sparse_grad_kernel(theta, X, y, idx, gidx, gval, ws, model.dims)
    return loss, gidx[:nnz], gval[:nnz], ws


@pytest.mark.parametrize(("loss", "k"), LOSSES)
@pytest.mark.parametrize("batch", [1, 7])
def test_gradient_matches_central_differences(loss, k, batch):
    model, X, y, theta, _ = _case(loss, k)
    idx = np.random.default_rng(5).integers(0, 50, size=batch).astype(np.int64)
    f, grad = _grad(model, theta, X, y, idx)
    assert np.isfinite(f) and np.all(np.isfinite(grad))
    h = 1e-6
    fd = np.empty_like(theta)
    for i in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[i] += h
        tm[i] -= h
        fd[i] = (_grad(model, tp, X, y, idx)[0] - _grad(model, tm, X, y, idx)[0]) / (2 * h)
    assert np.abs(fd).max() > 1e-3  # the point is not at a flat spot
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize(("loss", "k"), LOSSES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 16])
def test_sparse_gradient_is_the_dense_one_on_its_support(loss, k, dtype, batch):
    model, X, y, theta, _ = _case(loss, k, dtype)
    ws = model.workspace(batch)
    for seed in range(5):  # repeated rows and shared (Zipf) features within a batch
        idx = np.random.default_rng(seed).integers(0, 50, size=batch).astype(np.int64)
        f_dense, g = _grad(model, theta, X, y, idx)
        f, gidx, gval, ws = _sparse(model, theta, X, y, idx, ws)
        assert f == f_dense
        assert len(np.unique(gidx)) == len(gidx) and np.all(gval != 0)
        assert not ws[: model.n_params].any()  # the accumulator is left at zero
        scattered = np.zeros_like(theta)
        scattered[gidx] = gval
        np.testing.assert_array_equal(scattered, g)  # same sums in the same order
        assert len(gidx) == np.count_nonzero(g)


def test_gradients_touch_only_the_features_of_the_batch():
    model, X, y, theta, data = _case("softmax", 4)
    idx = np.array([3, 17], dtype=np.int64)
    _, gidx, _, _ = _sparse(model, theta, X, y, idx)
    cols = set(data.X_train.indices[data.X_train.indptr[3]:data.X_train.indptr[4]]) | set(
        data.X_train.indices[data.X_train.indptr[17]:data.X_train.indptr[18]])
    d, K = 60, 4
    assert {int(c) // K for c in gidx} == cols | {d}  # features of the two rows, and the bias
    assert len(gidx) == K * (len(cols) + 1)


def test_hinge_rows_beyond_the_margin_contribute_nothing():
    model, X, y, _, _ = _case("svm", 2)
    theta = np.zeros(model.n_params)
    theta[-1] = 5.0  # every score is 5: rows of class 1 are beyond the margin
    ones = np.flatnonzero(y == 1)[:3].astype(np.int64)
    f, gidx, gval, _ = _sparse(model, theta, X, y, ones)
    assert f == 0.0 and len(gidx) == 0
    zero = np.flatnonzero(y == 0)[:1].astype(np.int64)
    f, gidx, gval, _ = _sparse(model, theta, X, y, zero)
    assert f == pytest.approx(6.0) and gval[-1] == 1.0  # bias gradient +1 for class 0


@pytest.mark.parametrize("batch", [[0, 1], [0, 1, 0], [0, 1, 0, 1], [1, 0, 0]])
def test_a_coordinate_whose_sum_cancels_is_dropped_or_listed_once(batch):
    """Rows 0 and 1 hold feature 2 with values +1 and −1 and the same score and label, so
    their gradients cancel there exactly: a sum that returns to zero is not listed, and one
    that leaves zero again is listed once (it was seen as new twice)."""
    X = (np.array([0, 1, 2]), np.array([2, 2], dtype=np.int32), np.array([1.0, -1.0]), 4)
    y = np.array([1, 1])
    model = LinearClassifier(loss="logreg", n_features=4, max_row_nnz=1)
    theta = np.zeros(model.n_params)
    idx = np.array(batch, dtype=np.int64)
    f, gidx, gval, ws = _sparse(model, theta, X, y, idx)
    net = batch.count(0) - batch.count(1)
    expected = {4: -0.5} if net == 0 else {2: -0.5 * net / len(batch), 4: -0.5}
    assert dict(zip(gidx.tolist(), gval.tolist(), strict=True)) == pytest.approx(expected)
    assert len(gidx) == len(expected) and not ws[: model.n_params].any()
    assert f == pytest.approx(np.log(2.0))


def test_sparse_logreg_and_softmax_agree_with_the_dense_models():
    _, X, y, theta, data = _case("logreg", 2)
    dense = np.ascontiguousarray(data.X_train.toarray())
    idx = np.arange(0, 50, 3, dtype=np.int64)
    sparse_model = LinearClassifier(loss="logreg", n_features=60)
    ref = LogisticRegression(n_features=60)
    np.testing.assert_array_equal(sparse_model.init_params(4), ref.init_params(4))
    f1, g1 = _grad(sparse_model, theta, X, y, idx)
    f2, g2 = _grad(ref, theta, dense, y, idx)
    assert f1 == pytest.approx(f2, rel=1e-13)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)

    _, X, y, theta, data = _case("softmax", 4)
    dense = np.ascontiguousarray(data.X_train.toarray())
    ref = SoftmaxRegression(n_features=60, n_classes=4)
    model = LinearClassifier(loss="softmax", n_features=60, n_classes=4)
    assert model.n_params == ref.n_params
    f1, g1 = _grad(model, theta, X, y, idx)
    f2, g2 = _grad(ref, theta, dense, y, idx)
    assert f1 == pytest.approx(f2, rel=1e-13)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("loss", "k"), LOSSES)
def test_loss_kernel_agrees_with_grad_kernel(loss, k):
    model, X, y, theta, _ = _case(loss, k)
    idx = np.arange(50, dtype=np.int64)
    f, _ = _grad(model, theta, X, y, idx)
    total, correct = model.loss_kernel(theta, X, y, idx, model.workspace(50), model.dims)
    assert total / 50 == pytest.approx(f, rel=1e-13)
    z = np.asarray(load_dataset("sparse", seed=0, n_train=50, n_test=10, n_features=60, nnz=6,
                                n_classes=k).X_train.toarray()) @ theta[:-model.outputs].reshape(
        60, -1) + theta[-model.outputs:]
    pred = (z[:, 0] > 0).astype(int) if model.outputs == 1 else z.argmax(axis=1)
    assert correct == int(np.sum(pred == y))


@pytest.mark.parametrize(("loss", "k"), LOSSES)
def test_support_copy_is_all_a_gradient_reads(loss, k):
    model, X, y, theta, _ = _case(loss, k)
    idx = np.array([4, 9, 4, 30], dtype=np.int64)
    local = np.full_like(theta, np.nan)  # stale everywhere else
    copied = model.support_copy_kernel(theta, local, X, idx, model.dims)
    assert copied >= np.count_nonzero(~np.isnan(local))
    f_local, gidx, gval, _ = _sparse(model, local, X, y, idx)
    f, gidx2, gval2, _ = _sparse(model, theta, X, y, idx)
    assert f_local == f
    np.testing.assert_array_equal(gidx, gidx2)
    np.testing.assert_array_equal(gval, gval2)


def test_capacity_is_checked_and_labels_too():
    model, X, y, theta, _ = _case("logreg", 2)
    idx = np.arange(4, dtype=np.int64)
    small = np.zeros(2, dtype=np.int64)
    with pytest.raises(IndexError, match="capacity"):
        model.sparse_grad_kernel(theta, X, y, idx, small, np.zeros(2), model.workspace(4),
                                 model.dims)
    with pytest.raises(IndexError, match="capacity"):  # one row: its own path
        model.sparse_grad_kernel(theta, X, y, idx[:1], small, np.zeros(2), model.workspace(1),
                                 model.dims)
    cap = model.sparse_capacity(4)
    for rows, bad_y, error in [([0, 1, 2, 3], y, None), ([0, 1, 99, 2], y, IndexError),
                               ([0, 1, 2, 3], np.where(np.arange(len(y)) == 2, 3, y), ValueError)]:
        ws = model.workspace(4)  # an error leaves the workspace at zero for the next call
        small = np.zeros(cap if error else 3, dtype=np.int64)
        with pytest.raises(error or IndexError):
            model.sparse_grad_kernel(theta, X, bad_y, np.array(rows, dtype=np.int64), small,
                                     np.zeros(len(small)), ws, model.dims)
        assert not ws.any()
    bad = y.copy()
    bad[2] = 3
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        _grad(model, theta, X, bad, idx)
    with pytest.raises(ValueError, match="loss"):
        LinearClassifier(loss="huber", n_features=3)
    with pytest.raises(ValueError, match="n_classes"):
        LinearClassifier(loss="svm", n_features=3, n_classes=3)


@njit(nogil=True)
def _sparse_sgd(kernel, theta, X, y, batch, gidx, gval, ws, dims, eta, steps):
    idx = np.empty(batch, dtype=np.int64)
    n = X[0].shape[0] - 1
    first = last = 0.0
    for s in range(steps):
        for i in range(batch):
            idx[i] = (s * batch + i * 7) % n
        last, nnz = kernel(theta, X, y, idx, gidx, gval, ws, dims)
        if s == 0:
            first = last
        for p in range(nnz):
            theta[gidx[p]] -= eta * gval[p]
    return first, last


@pytest.mark.parametrize(("loss", "k"), LOSSES)
def test_sparse_sgd_learns_and_does_not_allocate(loss, k):
    from numba.core.runtime import _nrt_python as nrt
    from numba.core.runtime import rtsys

    data = load_dataset("sparse", seed=0, n_train=2000, n_test=10, n_features=500, nnz=20,
                        n_classes=k, noise=0.0)
    model = LinearClassifier(loss=loss, n_features=500, n_classes=k,
                             max_row_nnz=data.max_row_nnz)
    theta = model.init_params(0)
    cap = model.sparse_capacity(8)
    bufs = (np.zeros(cap, dtype=np.int64), np.zeros(cap), model.workspace(8))
    X, y = data.inputs("train"), data.y_train
    args = (model.sparse_grad_kernel, theta, X, y, 8, *bufs, model.dims, 0.5)
    before = model.loss_kernel(theta, X, y, np.arange(2000), model.workspace(1), model.dims)
    _sparse_sgd(*args, 1)
    was_on = nrt.memsys_stats_enabled()
    nrt.memsys_enable_stats()
    try:
        s0 = rtsys.get_allocation_stats()
        _sparse_sgd(*args, 10)
        s1 = rtsys.get_allocation_stats()
        _sparse_sgd(*args, 3000)
        s2 = rtsys.get_allocation_stats()
    finally:
        if not was_on:
            nrt.memsys_disable_stats()
    assert s2.alloc - s1.alloc == s1.alloc - s0.alloc
    after = model.loss_kernel(theta, X, y, np.arange(2000), model.workspace(1), model.dims)
    assert after[0] < 0.7 * before[0] and after[1] > before[1]


def test_problems_pick_the_linear_models_for_sparse_data():
    kw = {"n_train": 100, "n_test": 20, "n_features": 200, "nnz": 5}
    for name in ("logreg-sparse", "svm-sparse", "softmax-sparse"):
        p = make_problem(name, **kw)
        assert p.sparse and isinstance(p.model, LinearClassifier)
        assert p.model.max_row_nnz <= 5
    svm = make_problem("svm-synthetic", n_train=100, n_test=20)
    assert not svm.sparse and svm.model.n_params == 21
    theta = svm.init_params(0)
    loss, acc = svm.evaluate(theta)
    assert loss > 0 and 0 <= acc <= 1
    with pytest.raises(ValueError, match="svm needs 2 classes"):
        make_problem("svm-sparse", n_classes=3, **kw)
    soft = make_problem("softmax-sparse", n_classes=5, **kw)
    assert soft.model.n_params == 201 * 5
