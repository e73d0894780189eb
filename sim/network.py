"""The network and the parameter servers of the simulator's topology ``ps``: what a message
costs and how a server queues and handles messages (the algorithms' processes that use them
are in :mod:`~stalesgd.sim.psmodel`).

A message takes ``latency + bytes · per_byte`` (times a seeded random factor of mean 1 with
``jitter``) plus a seeded draw of the added delay to arrive; messages from one worker to one
server arrive in the order they were sent (as Ray delivers one caller's calls to an actor).
A server handles one message at a time, in arrival order, for ``serve`` seconds plus the
message's work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from .timing import Gamma, Sampler, Timing

__all__ = ["Network", "PS"]


@dataclass(frozen=True)
class Network:
    """The costs of the parameter-server topology (see the module doc): seconds per message
    (``latency``), per byte (``per_byte``), per message handled by a server (``serve``); the
    bytes of θ (``theta_bytes``; a gradient is as large), the server shards of ``hogwild``,
    the added per-message delay (``delay``, None: none), and ``jitter``: the coefficient of
    variation of a gamma factor (mean 1) drawn per message on its ``latency + bytes ·
    per_byte`` (0: every message of a size takes the same time)."""

    latency: float
    per_byte: float
    serve: float
    theta_bytes: int
    shards: int = 1
    delay: Timing | None = None
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.jitter) and 0 <= self.jitter <= 10):
            raise ValueError(f"network jitter {self.jitter!r} must be a coefficient of "
                             "variation in 0..10")
        for name in ("latency", "per_byte", "serve"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"network {name} {value!r} must be a finite number of "
                                 "seconds >= 0")
        if int(self.theta_bytes) < 0:
            raise ValueError(f"theta_bytes {self.theta_bytes!r} must be >= 0")
        if int(self.shards) < 1:
            raise ValueError(f"shards {self.shards!r} must be >= 1")


class PS:
    """The servers and the network of one simulation (built by
    :class:`~stalesgd.sim.simulation.Simulation` for topology ``ps``).

    ``rngs``: each worker's generator of the added message delays (its messages and the
    replies to them), needed when the network has a ``delay`` or ``jitter`` (the jitter is
    drawn from a stream spawned from it, so it changes no delay)."""

    def __init__(self, env: simpy.Environment, net: Network, workers: int,
                 rngs: Sequence[np.random.Generator] | None) -> None:
        self.env = env
        self.net = net
        self.servers = [simpy.Resource(env, capacity=1) for _ in range(int(net.shards))]
        #: per (worker, server): when that channel's last message arrives (FIFO channels)
        self._last = np.zeros((int(workers), int(net.shards)))
        random = net.delay is not None or net.jitter > 0
        if random and (rngs is None or len(rngs) != int(workers)):
            raise ValueError("a network with an added delay or jitter needs one generator per "
                             "worker")
        self._delays = None if net.delay is None else [Sampler(net.delay, r) for r in rngs]
        self._jitter = None if net.jitter <= 0 else [
            Sampler(Gamma(1.0, net.jitter), r.spawn(1)[0]) for r in rngs]
        # sync: the workers whose gradients of the round arrived, the round's first read,
        # and the pulls waiting for the round to be applied
        self.round: list[int] = []
        self.round_start = 0.0
        self.waiting: list[simpy.Event] = []

    def transit(self, w: int, nbytes: float) -> float:
        """Seconds a message of ``nbytes`` between worker ``w`` and a server takes."""
        d = self.net.latency + nbytes * self.net.per_byte
        if self._jitter is not None:
            d *= self._jitter[w].next()
        if self._delays is not None:
            d += self._delays[w].next()
        return d

    def send(self, w: int, s: int, nbytes: float, handle: Callable[[], Any],
             reply: bool = False) -> simpy.Event | None:
        """Worker ``w`` sends ``nbytes`` to server ``s``; on arrival the server queues it and,
        when it takes it, calls ``handle()``, which returns ``(work, done)``: the seconds it
        works on the message besides :attr:`Network.serve`, and the function that ends it
        (returning, for a request, its result and the reply's bytes).  ``handle`` may return
        an event instead: the message then waits for it without holding the server, and
        queues again (a ``sync`` pull of a round not yet applied).  With ``reply``, returns
        the event that fires with the result when the reply has arrived at the worker."""
        env = self.env
        arrive = max(env.now + self.transit(w, nbytes), self._last[w, s])
        self._last[w, s] = arrive
        answered = env.event() if reply else None
        env.process(self._deliver(w, s, arrive, handle, answered))
        return answered

    def _deliver(self, w: int, s: int, arrive: float, handle: Callable[[], Any],
                 answered: simpy.Event | None) -> Generator[simpy.Event, None, None]:
        env = self.env
        if arrive > env.now:
            yield env.timeout(arrive - env.now)
        while True:
            with self.servers[s].request() as turn:
                yield turn
                got = handle()
                if not isinstance(got, simpy.Event):
                    work, done = got
                    d = self.net.serve + work
                    if d > 0.0:
                        yield env.timeout(d)
                    out = done()
                    break
            yield got
        if answered is not None:
            result, nbytes = out
            back = self.transit(w, nbytes)
            if back > 0.0:
                yield env.timeout(back)
            answered.succeed(result)
