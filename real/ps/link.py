"""The network between one worker and the servers, with an added delay per message.

``--net-delay DIST`` (``[dist] net_delay``) adds a delay drawn from ``DIST`` (the
simulator's distribution syntax, ``exp:2ms``, ``det:500us``, ``gamma:1ms:0.5``, …) to every
message, so that network studies run on one machine:

* a request and its reply (pull, publish, claim) are two messages: the worker sends the
  request one delay late and takes the reply one delay after it came (it waits for the
  reply either way, so the server sees the request, and the worker the reply, as late as a
  slower network would make them);
* a one-way message (a pushed gradient or slice) leaves at once and is delivered one delay
  later by the worker's sender thread while the worker goes on computing; messages of one
  worker arrive in the order sent (a later one, a request too, waits for an earlier one
  still in flight).

Every wait is cut short once the run has ended (the worker's ``over``), so a stop or Ctrl-C
is not held up by long delays.

Requests to several shards at once (Hogwild!'s pull) leave together after the shortest of
their delays and the replies are taken after the longest: an approximation that keeps the
worker's wait, not each shard's view, exact.  Delays are drawn from the worker's own
generator (seeded from its seed), so a run's delays are the same from one run to the next.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from stalesgd.units import Distribution

__all__ = ["Link", "wait_until"]

#: below this many seconds a wait spins instead of sleeping (a sleep overshoots by ~0.1 ms)
SPIN_BELOW = 2e-4


#: the longest single sleep of a wait, so that a stop is seen within it
MAX_NAP = 0.01


def wait_until(deadline: float, over: Callable[[], bool] | None = None) -> None:
    """Return when ``time.monotonic()`` has passed ``deadline`` (or ``over()`` says the run
    ended): sleep most of the way, in naps of at most :data:`MAX_NAP`, spin the rest."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (over is not None and over()):
            return
        if left > SPIN_BELOW:
            time.sleep(min(left - SPIN_BELOW, MAX_NAP))


def _ray() -> Any:
    import ray

    return ray


class Link:
    """A worker's messages to its servers: ``call`` (request and reply) and ``send``
    (one-way), each message ``delay`` late (``None``: no added delay)."""

    def __init__(self, delay: Distribution | None, seed: int,
                 over: Callable[[], bool] | None = None) -> None:
        self.delay = delay
        self.over = over  # True once the run ended: delays are cut short
        self.rng = np.random.default_rng([int(seed), 0x6E6574])  # its own stream ("net")
        self._queue: list[tuple[float, int, Any, tuple]] = []
        self._order = 0
        self._last = 0.0
        self._cv = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def _draw(self) -> float:
        return float(self.delay.sample(self.rng)) if self.delay is not None else 0.0

    def call(self, method: Any, *args: Any) -> Any:
        """``method.remote(*args)`` and its reply, each message one delay late."""
        ray = _ray()
        if self.delay is None:
            return ray.get(method.remote(*args))
        self._after_sent(time.monotonic() + self._draw())
        reply = ray.get(method.remote(*args))
        wait_until(time.monotonic() + self._draw(), self.over)
        return reply

    def _after_sent(self, due: float) -> None:
        """Wait until ``due`` and until every earlier one-way message has left (a request
        must not overtake them: messages arrive in the order sent)."""
        due = max(due, self._last)
        self._last = due
        wait_until(due, self.over)
        with self._cv:
            while self._queue and not self._closed:
                self._cv.wait(MAX_NAP)
                if self.over is not None and self.over():
                    break

    def call_all(self, calls: list[tuple[Any, tuple]]) -> list[Any]:
        """Several requests at once (one per server) and all their replies."""
        ray = _ray()
        if self.delay is None:
            return ray.get([m.remote(*a) for m, a in calls])
        out = [self._draw() for _ in calls]
        back = [self._draw() for _ in calls]
        self._after_sent(time.monotonic() + min(out))
        replies = ray.get([m.remote(*a) for m, a in calls])
        wait_until(time.monotonic() + max(back), self.over)
        return replies

    def send(self, method: Any, *args: Any) -> None:
        """``method.remote(*args)`` delivered one delay from now (after any earlier message
        of this worker); arrays are copied, as the worker reuses its buffers."""
        if self.delay is None:
            method.remote(*args)
            return
        args = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
        due = max(time.monotonic() + self._draw(), self._last)
        self._last = due
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._deliver, name="net-delay",
                                                daemon=True)
                self._thread.start()
            self._order += 1
            heapq.heappush(self._queue, (due, self._order, method, args))
            self._cv.notify()

    def _deliver(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                due, _, method, args = self._queue[0]
            wait_until(due, self.over)
            with self._cv:
                if self._closed:
                    return
                heapq.heappop(self._queue)
                method.remote(*args)  # (before a waiting request sees the queue empty)
                self._cv.notify_all()

    def close(self) -> None:
        """Stop delivering: messages still in flight when the run ended are dropped."""
        with self._cv:
            self._closed = True
            self._queue.clear()
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
