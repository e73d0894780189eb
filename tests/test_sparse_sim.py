"""The simulator's numeric replay on a sparse problem (through the dense kernel contract)."""

from __future__ import annotations

import numpy as np
from test_sim_replay import replay, sequential_sgd

from stalesgd.experiment import expand, experiment_from_flags
from stalesgd.problems.registry import make_problem

OPTIONS = {"n_train": 1000, "n_test": 200, "n_features": 3000, "nnz": 20}


def sparse_sim_spec(algorithm: str, workers: int, updates: int, lr: float, seed: int):
    exp = experiment_from_flags("sim", problem="logreg-sparse", algorithm=algorithm,
                                workers=workers, lr=lr, updates=updates, seed=seed,
                                problem_options=dict(OPTIONS))
    return expand(exp)[0]


def test_one_worker_sparse_replay_is_sequential_sgd_bit_for_bit():
    spec = sparse_sim_spec("lock", 1, 300, 1.0, 3)
    rec, theta = replay(spec)
    problem = make_problem("logreg-sparse", seed=0, **OPTIONS)
    want_theta, want_losses = sequential_sgd(problem, 300, 1.0, 16, 3, spec.eval.every_updates)
    assert np.array_equal(theta, want_theta)
    assert np.array_equal(rec.evals["loss"], want_losses)


def test_hogwild_replay_on_many_workers_learns():
    rec, _ = replay(sparse_sim_spec("hogwild", 8, 1500, 2.0, 0))
    assert rec.summary["mean_tau"] > 1
    assert rec.evals["loss"][-1] < rec.evals["loss"][0] - 0.01
