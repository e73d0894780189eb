"""The algorithms of DESIGN §4 as SimPy processes: the simulator's definition of each.

State is the version counter ``v`` (number of updates applied).  A worker reads
at version ``t0``, computes, and applies at ``t1``; the record holds
``tau = t1 - t0`` for every update, and dropped gradients (``leashed``) as rows
with ``k = -1``.  Numerics are not simulated here: a
:class:`~stalesgd.sim.simulation.ReplayHook` is called at every read and apply with
``(worker, version)`` so that numeric replay can evaluate the real gradient kernels at
the θ each simulated read saw.

Timing per algorithm (``r`` read/copy, ``c`` compute, ``u`` update/apply,
``h`` lock hand-over, ``a`` atomic/compare-and-swap cost):

* ``seq``: one worker; ``t0 = v`` at the read, ``r + c + u``, then ``v += 1``.
* ``sync``: all active workers read the same θ (``r + c`` each), wait at a
  barrier; the last to arrive applies the mean gradient (``u``), one version per
  round, ``tau = 0``.
* ``lock``: under the lock ``t0 = v`` and copy (``r``); compute outside (``c``);
  under the lock apply (``u``), ``tau = v - t0``, ``v += 1``.  A released lock
  wakes its longest waiter, who retries ``h`` later; whoever asks first gets it
  (see :class:`~stalesgd.sim.machine.Lock`).
* ``hogwild``: ``t0 = v`` at the read start, ``r + c + u`` with no waiting, then an
  atomic fetch-add (``a``) gives ``t1`` and increments ``v``.
* ``leashed``: take the latest published version ``t0`` (``a``), compute on it
  (``c``); then per attempt copy the latest (``t1``, ``r``), apply (``u``) and
  publish by compare-and-swap (``a``), which fails if another publish landed since
  the copy; retry up to ``persistence`` times, then drop (``persistence=0`` drops
  at the first failure, ``None`` never drops).

When workers outnumber cores, CPU work goes through the machine's scheduler
(:class:`~stalesgd.sim.machine.Machine`); a worker that waits (lock, barrier, parking)
gives up its core.  The compiled loop (:mod:`~stalesgd.sim.faststeps`) runs these same
processes step for step; a change here must be made there too, or the algorithm's
compiled step removed (the tests comparing both loops say which).
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

import simpy

if TYPE_CHECKING:
    from .simulation import Simulation

__all__ = ["hogwild_process", "leashed_process", "lock_process", "sync_process"]


def _take_lock(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """Worker ``w`` takes the lock, waiting without a core while it is held."""
    ev = sim.lock.try_acquire()
    while ev is not None:
        yield from sim.block(w, ev)
        ev = sim.lock.retry()


def hogwild_process(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """Hogwild! (and ``seq``): read, compute, claim the next version, write in place."""
    env, rows, hook = sim.env, sim.rows, sim.hook
    comp, rd, upd = sim.samplers[w]
    cas = sim.cas_cost
    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        t_read = env.now
        t0 = sim.v
        if hook is not None:
            hook.read(w, t0)
        d = rd.next() + comp.next()
        u = upd.next()
        d += cas
        yield from sim.work(w, d)
        # As the real worker: the update index is claimed (fetch-add) before the
        # element-wise update, so τ counts the claims between the read and this claim,
        # not those made while this worker writes.
        t1 = sim.v
        sim.v = t1 + 1
        eta = math.nan if hook is None else hook.apply(w, t0, t1)
        rows.add(t1, w, t_read, env.now + u, t1 - t0, eta, 1, False)
        sim.applied()
        if u > 0.0:
            yield from sim.work(w, u)


def lock_process(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """AsyncSGD with one lock: copy θ under the lock, compute, apply under the lock."""
    env, rows, hook, lock = sim.env, sim.rows, sim.hook, sim.lock
    comp, rd, upd = sim.samplers[w]

    def release_cb(_event: simpy.Event) -> None:
        lock.release()

    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        yield from _take_lock(sim, w)  # read under the lock
        t_read = env.now
        t0 = sim.v
        if hook is not None:
            hook.read(w, t0)
        r = rd.next()
        c = comp.next()
        if not sim.oversubscribed:
            # the release at the end of the copy is a callback, not a process step:
            # the worker sleeps once for copy + compute (same timing, fewer events)
            if r > 0.0:
                env.timeout(r).callbacks.append(release_cb)
            else:
                lock.release()
            if r + c > 0.0:
                yield env.timeout(r + c)
        else:
            if r > 0.0:
                yield from sim.machine.run(w, r)
            lock.release()
            if c > 0.0:  # compute outside the lock
                yield from sim.machine.run(w, c)
        yield from _take_lock(sim, w)  # apply under the lock
        t1 = sim.v
        d = upd.next()
        if d > 0.0:
            yield from sim.work(w, d)
        sim.v = t1 + 1
        eta = math.nan if hook is None else hook.apply(w, t0, t1)
        rows.add(t1, w, t_read, env.now, t1 - t0, eta, 1, False)
        lock.release()
        sim.applied()


def leashed_process(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """Leashed-SGD: compute on the latest published θ, publish by compare-and-swap."""
    env, rows, hook = sim.env, sim.rows, sim.hook
    comp, rd, upd = sim.samplers[w]
    cas = sim.cas_cost
    bound = sim.persistence
    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        # take a reference to the latest published θ and compute on it
        t_read = env.now
        t0 = sim.v
        if hook is not None:
            hook.read(w, t0)
        yield from sim.work(w, cas + comp.next())
        attempts = 0
        while True:
            attempts += 1
            t1 = sim.v  # copy the latest published version
            d = rd.next() + upd.next() + cas
            if d > 0.0:
                yield from sim.work(w, d)
            if sim.v == t1:  # compare-and-swap succeeds
                sim.v = t1 + 1
                eta = math.nan if hook is None else hook.apply(w, t0, t1)
                rows.add(t1, w, t_read, env.now, t1 - t0, eta, attempts, False)
                sim.applied()
                break
            if bound is not None and attempts > bound:
                if hook is not None:
                    hook.drop(w, t0)
                rows.add(-1, w, t_read, env.now, t1 - t0, math.nan, attempts, True)
                break


def sync_process(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """Synchronous SGD: all workers compute on the same θ; the last applies the mean."""
    env, rows, hook = sim.env, sim.rows, sim.hook
    comp, rd, upd = sim.samplers[w]
    while True:
        t0 = sim.v
        if hook is not None:
            hook.read(w, t0)
        yield from sim.work(w, rd.next() + comp.next())
        sim.arrived.append(w)
        if len(sim.arrived) < sim.workers:
            yield from sim.block(w, sim.round_event)
            continue
        # the last worker to arrive applies the averaged update
        d = upd.next()
        if d > 0.0:
            yield from sim.work(w, d)
        k = sim.v
        sim.v = k + 1
        eta = math.nan if hook is None else hook.apply_mean(tuple(sim.arrived), k)
        rows.add(k, w, sim.round_start, env.now, 0, eta, 1, False)
        sim.arrived = []
        sim.round_start = env.now
        ev, sim.round_event = sim.round_event, env.event()
        ev.succeed()
        sim.applied()
