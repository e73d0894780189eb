"""The simulated scheduler (:class:`stalesgd.sim.machine.Machine`): preemption at ticks."""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from stalesgd.sim.engine import simulate_timing
from stalesgd.sim.machine import Machine, tick_index

MS = 1e-3


def test_a_worker_given_a_core_between_ticks_keeps_it_only_until_the_next_tick():
    """One core, ticks every 1 ms.  Worker 0 computes 0.3 ms and blocks; worker 1, queued,
    gets the core at 0.3 ms; worker 0 wakes at 0.5 ms and queues.  At the tick of 1 ms
    worker 1 steps aside (it does not keep the core for a slice of its own, to 1.3 ms, as
    real lock waiters show: they wait whole ticks), and worker 0 runs again from 1 ms."""
    env = simpy.Environment()
    machine = Machine(env, cores=1, time_slice=1 * MS, workers=2)
    got_core_again: list[float] = []

    def worker0():
        yield from machine.run(0, 0.3 * MS)
        machine.release(0)  # blocks (a lock wait)
        yield env.timeout(0.2 * MS)
        yield from machine.acquire(0)
        got_core_again.append(env.now)
        yield from machine.run(0, 0.1 * MS)

    def worker1():
        yield from machine.acquire(1)
        yield from machine.run(1, 5 * MS)

    env.process(worker0())
    env.process(worker1())
    env.run()
    assert got_core_again == [pytest.approx(1 * MS)]
    assert machine.preemptions == 1


def test_work_that_ends_on_a_tick_is_not_preempted_and_ticks_fall_on_multiples():
    assert tick_index(0.0, 4 * MS) == 0 and tick_index(5 * MS, 4 * MS) == 1
    # a clock a rounding error short of a tick is at that tick
    assert tick_index(8 * MS - 1e-18, 4 * MS) == 2 and tick_index(0.3 * 7 * MS, 7 * MS) == 0
    env = simpy.Environment()
    machine = Machine(env, cores=1, time_slice=1 * MS, workers=2)

    def worker(w, d):
        yield from machine.acquire(w)
        yield from machine.run(w, d)
        machine.release(w)

    env.process(worker(0, 1 * MS))
    env.process(worker(1, 1 * MS))
    env.run()
    assert machine.preemptions == 0 and env.now == pytest.approx(2 * MS)


def _started_and_ended(env, machine, jobs):
    """Run ``jobs`` (worker -> CPU seconds, then it blocks for good); per worker, when it
    first held a core and when its work was done."""
    times = {}

    def worker(w, d):
        yield from machine.acquire(w)
        start = env.now
        yield from machine.run(w, d)
        times[w] = (start, env.now)
        machine.release(w)

    for w, d in jobs.items():
        env.process(worker(w, d))
    env.run()
    return times


def test_each_core_has_its_own_run_queue():
    """Three workers on two cores, spread in turn: workers 0 and 2 share core 0 and take
    turns at its ticks (1 and 2 ms), worker 1 has core 1 to itself and is never preempted
    (with one queue for both cores, it would step aside at the first tick for worker 0).
    When worker 1 is done (3 ms), core 1 takes worker 2 from core 0's queue."""
    env = simpy.Environment()
    machine = Machine(env, cores=2, time_slice=1 * MS, workers=3)
    times = _started_and_ended(env, machine, {0: 3 * MS, 1: 3 * MS, 2: 3 * MS})
    assert times[1] == (0.0, pytest.approx(3 * MS))
    assert times[2][0] == pytest.approx(1 * MS)  # after worker 0's first tick
    assert times[0][1] == pytest.approx(4 * MS) and times[2][1] == pytest.approx(5 * MS)
    assert machine.preemptions == 2 and machine.core_of[2] == 1


def test_a_core_left_idle_takes_the_head_of_the_other_queue_at_once():
    """Worker 1 leaves core 1 after 0.2 ms with nobody queued there: core 1 takes worker 2,
    queued on core 0, at 0.2 ms, not at the next tick."""
    env = simpy.Environment()
    machine = Machine(env, cores=2, time_slice=1 * MS, workers=3)
    times = _started_and_ended(env, machine, {0: 3 * MS, 1: 0.2 * MS, 2: 3 * MS})
    assert times[2] == (pytest.approx(0.2 * MS), pytest.approx(3.2 * MS))
    assert machine.core_of[2] == 1 and machine.preemptions == 0


@pytest.mark.parametrize("fast", [True, False])
def test_work_that_ends_on_ticks_still_meets_them(fast):
    """Two workers on one core, gradients of exactly a quarter tick: every run ends on a tick
    now and then, and the tick still counts (a tick at the very end of a run was skipped:
    one worker got 3,505 of 4,000 updates and the other waited 3 s)."""
    res = simulate_timing("hogwild", 2, cores=1, compute="det:1ms", read="det:0",
                          update="det:0", updates=4000, seed=0, time_slice="4ms", fast=fast)
    counts = np.bincount(np.asarray(res.updates["worker"]), minlength=2)
    assert counts.min() >= 0.45 * counts.sum()
    assert res.preemptions >= 900  # about one per tick of the ~1 s simulated


@pytest.mark.parametrize("fast", [True, False])
def test_crowded_run_queues_are_balanced_after_parking(fast):
    """Eight Hogwild! workers on four cores, six parked for a while: the workers woken back
    queue on their last cores, unevenly; at ticks, a core takes a waiting worker from a
    queue two longer than its own, so every worker soon gets its share again (without it:
    649 vs 149 updates between workers)."""
    res = simulate_timing("hogwild", 8, cores=4, compute="exp:1ms", read="exp:0.1ms",
                          update="exp:0.1ms", updates=3000, seed=466, time_slice="4ms",
                          active_schedule=[(0.05, 2), (0.1, 8)], fast=fast)
    u = res.updates
    late = np.asarray(u["t_apply"]) > 0.15
    counts = np.bincount(np.asarray(u["worker"])[late], minlength=8)
    assert counts.min() >= 0.6 * counts.max(), counts
