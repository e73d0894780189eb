"""The algorithms on a parameter server (DESIGN §10) as SimPy processes: the simulator's
topology ``ps``, the model of the distributed engine (``stalesgd dist``).

Workers share no memory: they exchange messages with one server (``hogwild``: ``shards``
servers, each holding a slice of θ) over the network of :mod:`~stalesgd.sim.network`.  A
server handles one message at a time, in arrival order (its queue): ``serve`` seconds per
message plus the message's work, a copy of θ (the ``read`` duration) for a pull or a
refused publish, an apply (``update``) for a gradient, a copy of the new θ in for an
accepted publish.  The version counter v and τ = t1 − t0 keep their meaning; a row's
``t_apply`` is when the server has applied (or, ``hogwild``, granted) the update.

* ``lock`` (and ``seq``): pull (θ, v = t0) — a round trip carrying θ back —, compute, push
  (g, t0) one way and pull again at once; the server applies pushes in arrival order,
  τ = v − t0 at the apply.
* ``sync``: each worker pulls θ of round v (waiting at the server until it exists),
  computes and pushes g; the round's m-th gradient makes the server apply their mean, τ = 0.
* ``leashed``: pull θ_t0, compute, apply g locally to θ_t1 (first t1 = t0; ``update``) and
  publish the whole new θ, which the server accepts only if v is still t1; a refusal sends
  back the newer θ (and t1 = v) to re-apply g to, up to ``persistence`` times, then g is
  dropped (a one-way note to the server, which logs the dropped row).
* ``hogwild``: pull every shard's slice in parallel (each as that shard has it: they may
  mix versions; t0 = the update count of shard 0), compute, claim k from shard 0 (a small
  round trip; τ = k − t0, the row), then send each shard its slice of g, applied on arrival.

A message's bytes are the sender's work (:mod:`~stalesgd.sim.network`): a worker sending a
gradient or θ is busy serialising it before it goes on (lock's worker then pulls again), a
server answering with θ holds itself as long.  With ``Network.cores`` (one machine, as a
local Ray instance is) the workers' compute and serialising, every message's latency and
the servers' work share that many cores by processor sharing; without,
messages and servers take time but no core, and workers compute on the simulation's cores
(time-sliced when they outnumber them).  A worker waiting for a reply gives up its core.
Numeric replay sees each read when the server copies θ (``hook.read`` with the version
then) and each apply when the server applies it, in the server's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import simpy

from .network import Network
from .timing import Sampler

if TYPE_CHECKING:
    from .simulation import Simulation

__all__ = ["Network", "hogwild_ps", "leashed_ps", "lock_ps", "sync_ps"]


def _pull(sim: Simulation, w: int, s: int, rd: Sampler, share: float = 1.0,
          after: int = 0) -> simpy.Event:
    """Worker ``w`` asks server ``s`` for its θ (``share`` of it) and the version v (for
    ``hogwild`` the update count of shard 0); the event fires with v when θ has arrived.
    Numeric replay reads when server 0 copies θ.  ``after``: the server answers once
    v >= ``after`` (``sync``: the next round)."""
    ps, hook = sim.ps, sim.hook

    def handle():
        if sim.v < after:
            ev = sim.env.event()
            ps.waiting.append(ev)
            return ev

        def done():
            v = sim.v
            if hook is not None and s == 0:
                hook.read(w, v)
            return v, ps.net.theta_bytes * share
        return rd.next() * share, done

    return ps.send(w, s, handle, reply=True)


def _post(sim: Simulation, w: int, s: int, nbytes: float, handle: Callable[[], Any],
          reply: bool = False) -> Generator[simpy.Event, None, simpy.Event | None]:
    """(SimPy) Worker ``w`` serialises ``nbytes`` (its own work: it is busy that long), then
    sends them to server ``s`` (:meth:`~.network.PS.send`; returns its event)."""
    yield from sim.work(w, sim.ps.serialise_time(w, nbytes))
    return sim.ps.send(w, s, handle, reply)


def _log(sim: Simulation, k: int, w: int, t_read: float, tau: int, eta: float,
         attempts: int = 1, dropped: bool = False) -> None:
    sim.rows.add(k, w, t_read, sim.env.now, tau, eta, attempts, dropped)


def _apply(sim: Simulation, w: int, t0: int, t1: int, t_read: float,
           attempts: int = 1) -> None:
    """The server applies ``w``'s gradient (read at ``t0``) as update ``t1``: v moves on,
    numeric replay applies it, the row is logged and the stop rules look."""
    sim.v = t1 + 1
    eta = math.nan if sim.hook is None else sim.hook.apply(w, t0, t1)
    _log(sim, t1, w, t_read, t1 - t0, eta, attempts)
    sim.applied()


def lock_ps(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """``lock`` (and ``seq``): pull, compute, push the gradient one way; the server applies
    pushes in arrival order."""
    ps, env = sim.ps, sim.env
    comp, rd, upd = sim.samplers[w]
    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        t_read = env.now
        t0 = yield from sim.block(w, _pull(sim, w, 0, rd))
        yield from sim.work(w, comp.next())

        def push(t0=t0, t_read=t_read):
            return upd.next(), lambda: _apply(sim, w, t0, sim.v, t_read)

        yield from _post(sim, w, 0, ps.net.theta_bytes, push)


def sync_ps(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """``sync``: pull θ of the round, compute, push; the m-th gradient of a round makes the
    server apply their mean and answer the pulls waiting for it."""
    ps, hook, env = sim.ps, sim.hook, sim.env
    comp, rd, upd = sim.samplers[w]
    after = 0
    while True:
        version = yield from sim.block(w, _pull(sim, w, 0, rd, after=after))
        yield from sim.work(w, comp.next())

        def push(version=version):
            if version != sim.v:
                return 0.0, lambda: None
            ps.round.append(w)
            if len(ps.round) < sim.workers:
                return 0.0, lambda: None

            def done():
                k = sim.v
                sim.v = k + 1
                eta = math.nan if hook is None else hook.apply_mean(tuple(ps.round), k)
                sim.rows.add(k, 0, ps.round_start, env.now, 0, eta, 1, False)
                ps.round, ps.round_start = [], env.now
                waiting, ps.waiting = ps.waiting, []
                for ev in waiting:
                    ev.succeed()
                sim.applied()
            return upd.next(), done

        yield from _post(sim, w, 0, ps.net.theta_bytes, push)
        after = version + 1


def leashed_ps(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """``leashed``: pull, compute, publish the whole new θ conditioned on the version;
    re-apply to the newer θ a refusal brings back, up to the persistence bound."""
    ps, hook, env = sim.ps, sim.hook, sim.env
    comp, rd, upd = sim.samplers[w]
    nbytes = ps.net.theta_bytes
    bound = sim.persistence
    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        t_read = env.now
        t0 = yield from sim.block(w, _pull(sim, w, 0, rd))
        yield from sim.work(w, comp.next())
        t1, attempts = t0, 0
        while True:
            attempts += 1
            yield from sim.work(w, upd.next())  # θ' = θ_t1 − η g, on the worker

            def publish(t0=t0, t1=t1, t_read=t_read, attempts=attempts):
                ok = sim.v == t1

                def done():
                    if not ok:  # the newer θ goes back
                        return (False, sim.v), nbytes
                    _apply(sim, w, t0, t1, t_read, attempts)
                    return (True, t1 + 1), 0.0
                return rd.next(), done  # the new θ copied in, or the newer one out

            sent = yield from _post(sim, w, 0, nbytes, publish, reply=True)
            ok, v = yield from sim.block(w, sent)
            if ok:
                break
            if bound is not None and attempts > bound:
                if hook is not None:
                    hook.drop(w, t0)

                def drop(tau=t1 - t0, t_read=t_read, attempts=attempts):
                    return 0.0, lambda: _log(sim, -1, w, t_read, tau, math.nan, attempts,
                                             True)

                ps.send(w, 0, drop)
                break
            t1 = v


def hogwild_ps(sim: Simulation, w: int) -> Generator[simpy.Event, None, None]:
    """``hogwild``: pull every shard's slice, compute, claim k from shard 0, send each shard
    its slice of the gradient."""
    ps, env = sim.ps, sim.env
    comp, rd, upd = sim.samplers[w]
    shards = int(ps.net.shards)
    share = 1.0 / shards
    while True:
        if w >= sim.active:
            yield from sim.park(w)
            continue
        t_read = env.now
        pulls = [_pull(sim, w, s, rd, share) for s in range(shards)]
        yield from sim.block(w, simpy.AllOf(env, pulls))
        t0 = pulls[0].value
        yield from sim.work(w, comp.next())

        def claim(t0=t0, t_read=t_read):
            def granted():  # k = the count so far; the reply carries no θ
                _apply(sim, w, t0, sim.v, t_read)
                return None, 0.0
            return 0.0, granted

        yield from sim.block(w, ps.send(w, 0, claim, reply=True))
        u = upd.next() * share
        for s in range(shards):
            yield from _post(sim, w, s, ps.net.theta_bytes * share,
                             lambda u=u: (u, lambda: None))
