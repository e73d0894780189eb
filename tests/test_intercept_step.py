"""The linear models' intercept step: the bias moves with a fraction of the step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from stalesgd.real.engine import RealRun, final_params
from stalesgd.sim.run import SimRun

from stalesgd.data import load_dataset
from stalesgd.experiment import ExperimentError, expand, experiment_from_flags
from stalesgd.problems.linear import LinearClassifier


def _models(loss: str, k: int, step: float, dtype: str):
    data = load_dataset("sparse", dtype=dtype, seed=0, n_train=50, n_test=10,
                        n_features=40, nnz=6, n_classes=k)
    kw = dict(loss=loss, n_features=40, n_classes=k, max_row_nnz=data.max_row_nnz,
              dtype=dtype)
    plain, scaled = LinearClassifier(**kw), LinearClassifier(**kw, intercept_step=step)
    theta = plain.init_params(1) * 3
    theta[plain.layers["b"][0]:] = 0.2
    return plain, scaled, data.inputs("train"), data.y_train, theta


@pytest.mark.parametrize(("loss", "k"), [("logreg", 2), ("svm", 2), ("softmax", 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch", [1, 8])
def test_only_the_bias_entries_are_scaled(loss, k, dtype, batch):
    plain, scaled, X, y, theta = _models(loss, k, 0.01, dtype)
    idx = np.random.default_rng(3).integers(0, 50, size=batch).astype(np.int64)
    b0 = plain.layers["b"][0]
    out = {}
    for name, model in (("plain", plain), ("scaled", scaled)):
        grad = np.zeros_like(theta)
        f = model.grad_kernel(theta, X, y, idx, grad, model.workspace(batch), model.dims)
        cap = model.sparse_capacity(batch)
        gidx, gval = np.zeros(cap, np.int64), np.zeros(cap, theta.dtype)
        fs, nnz = model.sparse_grad_kernel(theta, X, y, idx, gidx, gval,
                                           model.workspace(batch), model.dims)
        sparse = np.zeros_like(theta)
        sparse[gidx[:nnz]] = gval[:nnz]
        np.testing.assert_array_equal(sparse, grad)  # the sparse kernel agrees
        assert f == fs
        out[name] = (f, grad)
    (f1, g1), (f2, g2) = out["plain"], out["scaled"]
    assert f1 == f2  # the loss is the model's own
    np.testing.assert_array_equal(g2[:b0], g1[:b0])
    assert np.any(g1[b0:] != 0)
    want = g1[b0:] * theta.dtype.type(0.01)
    if batch == 1:
        np.testing.assert_array_equal(g2[b0:], want)
    else:  # (a sum of scaled terms: the same up to rounding)
        np.testing.assert_allclose(g2[b0:], want, rtol=1e-5 if dtype == "float32" else 1e-13)
    assert not np.allclose(g2[b0:], g1[b0:])


def _spec(engine, dtype, step):
    options = {"n_train": 400, "n_features": 200, "nnz": 6, "n_test": 100}
    if step is not None:
        options["intercept_step"] = step
    exp = experiment_from_flags(engine, problem="logreg-sparse", algorithm="seq", workers=1,
                                updates=600, lr=0.7, seed=2, batch=1, dtype=dtype,
                                problem_options=options)
    spec = expand(exp)[0]
    return dataclasses.replace(spec, eval=dataclasses.replace(
        spec.eval, every_updates=None, every_seconds=1e9))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_real_runs_and_the_replay_move_the_bias_alike(dtype):
    real = RealRun(_spec("real", dtype, 0.01), progress=False)
    real.run()
    sim = SimRun(_spec("sim", dtype, 0.01), progress=False)
    sim.run()
    np.testing.assert_array_equal(sim.hook.theta, final_params(real))
    plain = RealRun(_spec("real", dtype, None), progress=False)
    plain.run()
    bias = plain.problem.model.layers["b"][0]
    assert abs(final_params(real)[bias]) < abs(final_params(plain)[bias])


def test_the_option_is_checked():
    with pytest.raises(ExperimentError, match="intercept_step = 0 is out of range"):
        _spec("real", "float64", 0)
    with pytest.raises(ExperimentError, match="not an option of logreg on dense data"):
        expand(experiment_from_flags("real", problem="logreg-synthetic", algorithm="seq",
                                     workers=1, updates=10,
                                     problem_options={"intercept_step": 0.01}))
    with pytest.raises(ValueError, match="must be a finite number > 0"):
        LinearClassifier(loss="svm", n_features=3, intercept_step=float("nan"))
