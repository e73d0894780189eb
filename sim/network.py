"""The network and the parameter servers of the simulator's topology ``ps``: what a message
costs and how a server queues and handles messages (the algorithms' processes that use them
are in :mod:`~stalesgd.sim.psmodel`).

A message's bytes cost ``bytes · per_byte`` to its **sender**, who serialises them before
the message leaves: a worker sending a gradient or θ is busy that long (as Ray serialises a
call's arguments in the caller), a server answering with θ holds itself that long (as an
actor serialises its return value before it takes its next call).  Then the message takes
``latency`` plus a seeded draw of the added delay to arrive (each of ``bytes · per_byte``
and ``latency`` times its own seeded random factor of mean 1 with ``jitter``); messages from
one worker to one server arrive in the order they were sent (as Ray delivers one caller's
calls to an actor).  A server handles one message at a time, in arrival order, for
``serve`` seconds plus the message's work.
"""

from __future__ import annotations

import heapq
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
    (``latency``), per byte, paid by the sender (``per_byte``), per message handled by a
    server (``serve``); the
    bytes of θ (``theta_bytes``; a gradient is as large), the server shards of ``hogwild``,
    the added per-message delay (``delay``, None: none), ``jitter``: the coefficient of
    variation of a gamma factor (mean 1) drawn per message on its ``latency`` and another on
    its ``bytes · per_byte`` (0: every message of a size takes the same time), and
    ``cores``: with ``cores > 0`` everything runs on one machine of that many cores (a
    fraction is allowed), shared by processor sharing among the workers' compute and
    serialising, every message's ``latency`` and the servers' work (:class:`SharedCPU`);
    0: messages and servers take time but no core."""

    latency: float
    per_byte: float
    serve: float
    theta_bytes: int
    shards: int = 1
    delay: Timing | None = None
    jitter: float = 0.0
    cores: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cores) and 0 <= self.cores <= 1e6):
            raise ValueError(f"network cores {self.cores!r} must be a number >= 0 (0: the "
                             "messages and servers take no core)")
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
        #: the machine's cores when everything shares one (``Network.cores``), else None
        self.cpu = SharedCPU(env, net.cores) if net.cores > 0 else None
        #: per (worker, server): the arrival of that channel's last message (FIFO channels)
        self._last: list[list[simpy.Event | None]] = [[None] * int(net.shards)
                                                      for _ in range(int(workers))]
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

    def _factor(self, w: int) -> float:
        return self._jitter[w].next() if self._jitter is not None else 1.0

    def serialise_time(self, w: int, nbytes: float) -> float:
        """Seconds the sender of ``nbytes`` (worker ``w``, or a server answering it) spends
        on them before the message leaves (times the jitter factor; 0 without bytes)."""
        if nbytes <= 0.0:
            return 0.0
        return nbytes * self.net.per_byte * self._factor(w)

    def transit(self, w: int) -> tuple[float, float]:
        """A message between worker ``w`` and a server, once sent: its ``latency`` (times the
        jitter factor), which takes a core on a shared machine, and its added delay, which
        does not."""
        cost = self.net.latency * self._factor(w)
        return cost, (self._delays[w].next() if self._delays is not None else 0.0)

    def work(self, seconds: float) -> Generator[simpy.Event, None, None]:
        """``seconds`` of work by a process of the machine (on a core when shared)."""
        if self.cpu is not None:
            yield from self.cpu.run(seconds)
        elif seconds > 0.0:
            yield self.env.timeout(seconds)

    def _carry(self, w: int) -> Generator[simpy.Event, None, None]:
        cost, delay = self.transit(w)
        if self.cpu is None:
            cost, delay = 0.0, cost + delay
        yield from self.work(cost)
        if delay > 0.0:
            yield self.env.timeout(delay)

    def send(self, w: int, s: int, handle: Callable[[], Any],
             reply: bool = False) -> simpy.Event | None:
        """Worker ``w`` sends a message to server ``s`` (its bytes already serialised: see
        :meth:`serialise_time`); on arrival the server queues it and, when it takes it,
        calls ``handle()``, which returns ``(work, done)``: the seconds it works on the
        message besides :attr:`Network.serve`, and the function that ends it (returning,
        for a request, its result and the reply's bytes, which the server serialises before
        it takes its next message).  ``handle`` may return an event instead: the message
        then waits for it without holding the server, and queues again (a ``sync`` pull of
        a round not yet applied).  With ``reply``, returns the event that fires with the
        result when the reply has arrived at the worker."""
        env = self.env
        before, arrived = self._last[w][s], env.event()
        self._last[w][s] = arrived
        answered = env.event() if reply else None
        env.process(self._deliver(w, s, before, arrived, handle, answered))
        return answered

    def _deliver(self, w: int, s: int, before: simpy.Event | None, arrived: simpy.Event,
                 handle: Callable[[], Any],
                 answered: simpy.Event | None) -> Generator[simpy.Event, None, None]:
        yield from self._carry(w)
        if before is not None and not before.processed:  # after the channel's earlier one
            yield before
        arrived.succeed()
        while True:
            with self.servers[s].request() as turn:
                yield turn
                got = handle()
                if not isinstance(got, simpy.Event):
                    work, done = got
                    yield from self.work(self.net.serve + work)
                    out = done()
                    if answered is not None:
                        yield from self.work(self.serialise_time(w, out[1]))
                    break
            yield got
        if answered is not None:
            yield from self._carry(w)
            answered.succeed(out[0])


class SharedCPU:
    """``cores`` cores (a fraction allowed) shared by processor sharing: with n jobs running,
    each progresses at min(1, cores / n) seconds of work per second.  The model of one
    machine on which the workers, Ray's message handling and the servers all compute.

    Kept in *virtual time* (the work each running job has received so far): a job ends when
    virtual time reaches its start plus its work, so one timer, for the next job to end, is
    all that is scheduled."""

    def __init__(self, env: simpy.Environment, cores: float) -> None:
        self.env = env
        self.cores = float(cores)
        self._virtual = 0.0
        self._at = 0.0
        self._jobs: list[tuple[float, int, simpy.Event]] = []  # (end in virtual time, seq, ev)
        self._seq = 0
        self._timer: object | None = None

    def _rate(self) -> float:
        n = len(self._jobs)
        return 1.0 if n <= self.cores else self.cores / n

    def _advance(self) -> None:
        now = self.env.now
        if self._jobs:
            self._virtual += (now - self._at) * self._rate()
        self._at = now

    def _arm(self) -> None:
        """A timer for the job that ends next (an earlier timer is superseded)."""
        if not self._jobs:
            self._timer = None
            return
        token = self._timer = object()
        delay = max(self._jobs[0][0] - self._virtual, 0.0) / self._rate()
        self.env.timeout(delay).callbacks.append(lambda _event: self._end(token))

    def _end(self, token: object) -> None:
        if token is not self._timer:
            return
        self._advance()
        while self._jobs and self._jobs[0][0] <= self._virtual * (1 + 1e-12) + 1e-18:
            heapq.heappop(self._jobs)[2].succeed()
        self._arm()

    def run(self, seconds: float) -> Generator[simpy.Event, None, None]:
        """Do ``seconds`` of work, sharing the cores with the other jobs."""
        if seconds <= 0.0:
            return
        self._advance()
        done = self.env.event()
        heapq.heappush(self._jobs, (self._virtual + float(seconds), self._seq, done))
        self._seq += 1
        self._arm()
        yield done
