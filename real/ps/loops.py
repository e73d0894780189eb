"""The worker loops of the distributed engine, one per algorithm (parameter-server
semantics, DESIGN §10); the algorithm registry names them for engine ``ray``.

Each takes a :class:`~stalesgd.real.ps.worker.Worker` and runs until a server reply says
the run has ended.  Messages go through the worker's :class:`~stalesgd.real.ps.link.Link`
(an added delay per message with ``--net-delay``); the divergence notice does not.  Times
are seconds on the driver's clock: ``t_read`` when the worker asks for θ, ``t_pulled`` when
θ has arrived, ``t_pushed`` when its gradient (or new θ) leaves; the server adds
``t_apply``.
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import publish_step

__all__ = ["hogwild_loop", "leashed_loop", "lock_loop", "sync_loop"]


def _ray():
    import ray

    return ray


def lock_loop(w) -> None:
    """``lock`` (and ``seq``): pull (θ, v = t0), compute, push (g, t0); the server applies
    pushes one at a time in arrival order, τ = v − t0 at apply."""
    ray = _ray()
    link = w.link
    server = w.servers[0]
    while True:
        if not w.wait_while_parked():
            return
        w.draw()
        t_read = w.now()
        theta, t0, stopped, _ = link.call(server.pull)
        if stopped:
            return
        w.theta[:] = theta
        t_pulled = w.now()
        if not math.isfinite(w.gradient()):
            ray.get(server.diverged.remote(w.index))
            return
        link.send(server.push, w.index, w.grad, t0, t_read, t_pulled, w.now())


def sync_loop(w) -> None:
    """``sync``: every worker pulls θ of round v, computes, pushes (g, v); the m-th gradient
    of the round makes the server apply their mean (τ = 0); the next pull waits for it."""
    ray = _ray()
    link = w.link
    server = w.servers[0]
    after = 0
    while True:
        t_read = w.now()
        theta, v, stopped, _ = link.call(server.pull_round, after)
        if stopped:
            return
        w.theta[:] = theta
        t_pulled = w.now()
        w.draw()
        if not math.isfinite(w.gradient()):
            ray.get(server.diverged.remote(w.index))
            return
        link.send(server.push_round, w.index, w.grad, v, t_read, t_pulled, w.now())
        after = v + 1


def leashed_loop(w) -> None:
    """``leashed``: compute g on θ_t0, then push θ' = θ_t1 − η(t1 − t0)·g conditioned on
    the server still being at t1 (first t1 = t0); a refused push brings the newer θ back
    and g is applied to it again, up to the persistence bound, then dropped."""
    ray = _ray()
    link = w.link
    server = w.servers[0]
    persistence = w.setup.persistence
    while True:
        if not w.wait_while_parked():
            return
        w.draw()
        t_read = w.now()
        theta, t0, stopped, news = link.call(server.pull, w.table_version)
        if stopped:
            return
        w.take_table(news)
        w.theta[:] = theta
        t_pulled = w.now()
        if not math.isfinite(w.gradient()):
            ray.get(server.diverged.remote(w.index))
            return
        base, t1, attempts = w.theta, t0, 0
        while True:
            attempts += 1
            tau = t1 - t0
            eta = w.eta(tau)
            publish_step(w.new, base, w.grad, eta)
            ok, v, newer, stopped, news = link.call(
                server.publish, w.index, w.new, t1, t0, eta, attempts, t_read, t_pulled, w.now(),
                w.table_version)
            if ok:
                break
            if stopped:
                return
            w.failed += 1
            w.take_table(news)
            if 0 <= persistence < attempts:
                link.send(server.drop, w.index, tau, attempts, t_read, t_pulled, w.now())
                break
            base, t1 = np.asarray(newer), v
        if stopped:
            return


def hogwild_loop(w) -> None:
    """``hogwild``: pull every shard's slice of θ (as each shard has it: the slices may
    belong to different versions), t0 = shard 0's update count; compute; claim k from shard
    0 (τ = k − t0, η from its table); send each shard its slice of the gradient, which it
    applies on arrival."""
    ray = _ray()
    link = w.link
    shards = w.servers
    bounds = w.setup.bounds
    while True:
        if not w.wait_while_parked():
            return
        w.draw()
        t_read = w.now()
        parts = link.call_all([(s.pull, ()) for s in shards])
        if parts[0][2]:
            return
        t0 = parts[0][1]
        for s, part in enumerate(parts):
            w.theta[bounds[s]:bounds[s + 1]] = part[0]
        t_pulled = w.now()
        if not math.isfinite(w.gradient()):
            ray.get(shards[0].diverged.remote(w.index))
            return
        k, eta, stopped = link.call(shards[0].claim, w.index, t0, t_read, t_pulled, w.now())
        if stopped:
            return
        for s, shard in enumerate(shards):
            link.send(shard.apply, w.grad[bounds[s]:bounds[s + 1]], eta)
