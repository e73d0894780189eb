"""The algorithm registry: every algorithm's facts in one entry, read by every engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stalesgd.algorithms import (
    ALGORITHMS,
    COSTS,
    algorithm_names,
    asynchronous_names,
    get_algorithm,
)
from stalesgd.experiment import ExperimentError, loads_experiment


def test_names_and_lookup():
    assert algorithm_names() == ("seq", "sync", "lock", "hogwild", "leashed")
    assert asynchronous_names() == ("lock", "hogwild", "leashed")
    assert get_algorithm("leashed").options == ("persistence",)
    with pytest.raises(LookupError, match="allowed: seq, sync, lock, hogwild, leashed"):
        get_algorithm("locked")


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_implementation_resolves_to_a_callable(name):
    alg = get_algorithm(name)
    assert set(alg.implementations) >= {"real", "sim"}
    for engine in alg.implementations:
        assert callable(alg.implementation(engine)), (name, engine)
    with pytest.raises(LookupError, match="no implementation in engine 'nowhere'"):
        alg.implementation("nowhere")


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_cycle_costs_name_known_costs_and_tau_is_described(name):
    alg = get_algorithm(name)
    assert set(alg.cycle.once) | set(alg.cycle.per_attempt) <= set(COSTS)
    assert alg.tau.strip() and alg.title.strip()


def test_param_bytes_formulas():
    theta, m = 800, 4
    # θ, 2 buffers per worker (copy, gradient), the monitor's snapshot
    assert get_algorithm("lock").param_bytes(theta, m) == theta * (1 + 2 * m + 1)
    assert get_algorithm("seq").param_bytes(theta, 1) == theta * 4
    assert get_algorithm("hogwild").param_bytes(theta, m) == theta * (1 + m + 1)
    assert get_algorithm("sync").param_bytes(theta, m) == theta * (1 + m + 1)
    # pooled: the pool's high-water mark of vectors replaces θ; unknown without it
    assert get_algorithm("leashed").param_bytes(theta, m) is None
    assert get_algorithm("leashed").param_bytes(theta, m, pool_high_water=6) == \
        theta * (6 + m + 1)


def test_sim_costs_and_cycle_overhead_agree():
    per = dict(read_per_param=1e-9, update_per_param=2e-9, fused_per_param=2.5e-9, cas=7e-9)
    n = 1000
    lock = get_algorithm("lock").sim_costs(n, *per.values())
    assert lock == pytest.approx({"read": 1e-6, "update": 2e-6, "cas": 7e-9})
    hog = get_algorithm("hogwild").sim_costs(n, *per.values())
    assert hog["read"] == 0.0 and hog["update"] == pytest.approx(2e-6)
    lea = get_algorithm("leashed").sim_costs(n, *per.values())
    assert lea["read"] == pytest.approx(1e-6) and lea["update"] == pytest.approx(1.5e-6)
    attempts = np.array([1, 2, 3])
    assert get_algorithm("lock").cycle.overhead(attempts, lock) == pytest.approx(
        np.full(3, 3e-6))
    assert get_algorithm("hogwild").cycle.overhead(attempts, hog) == pytest.approx(
        np.full(3, 2e-6 + 7e-9))
    want = 7e-9 + attempts * (1e-6 + 1.5e-6 + 7e-9)
    assert get_algorithm("leashed").cycle.overhead(attempts, lea) == pytest.approx(want)


def test_experiments_read_the_registry():
    base = '[problem]\nname = "logreg-synthetic"\n[stop]\nupdates = 10\n'
    with pytest.raises(ExperimentError, match="allowed: seq, sync, lock, hogwild, leashed"):
        loads_experiment(base + '[algorithm]\nname = "locked"\n')
    with pytest.raises(ExperimentError, match="asynchronous algorithm: lock, hogwild, leashed"):
        loads_experiment('workers = 2\n' + base + '[algorithm]\nname = "sync"\n'
                         '[controller]\nname = "window"\n')


def test_divergence_rule():
    from stalesgd.divergence import BLOWUP_FACTOR, diverged

    assert diverged(math.nan, 0.7) and diverged(math.inf, None) and diverged(-math.inf, 1.0)
    assert not diverged(0.9, 0.7) and not diverged(1e3, None)
    assert diverged(1.9e9, 0.69)  # logistic regression with lr = 1e10
    assert not diverged(0.5 * BLOWUP_FACTOR, 1e-8)  # a first loss near 0 counts as 1
    assert diverged(2.0 * BLOWUP_FACTOR, 1e-8)
    assert not diverged(1e9, 1e6) and diverged(1e11, 1e6)
