"""Run K ``@njit(nogil=True)`` kernels in K Python threads, truly in parallel.

Every engine needs the same scaffolding: compile each kernel for its exact
argument types *before* any thread starts (compiling inside a thread takes the
GIL for seconds and skews timings), refuse kernels that would hold the GIL
(they would run one after another, or deadlock on a spin-wait), start all
threads together, join them with an optional timeout, and re-raise a
worker's exception in the caller instead of losing it in a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numba
from numba.core.registry import CPUDispatcher

__all__ = ["ThreadRun", "WorkerTimeout", "compile_for", "run_threads"]


class WorkerTimeout(TimeoutError):
    """Raised by :func:`run_threads` when workers are still running after the timeout."""

    def __init__(self, alive: list[int], timeout: float) -> None:
        super().__init__(f"workers {alive} still running after timeout={timeout} s")
        self.alive = alive
        self.timeout = timeout


@dataclass
class ThreadRun:
    """Outcome of :func:`run_threads`: each worker's return value and the wall time.

    ``seconds`` runs from the moment all threads were released together to
    the moment the last one finished.
    """

    results: list[Any] = field(default_factory=list)
    seconds: float = 0.0


def compile_for(kernel: Any, args: Sequence[Any], *, require_nogil: bool = True) -> None:
    """Compile the Numba dispatcher ``kernel`` for the types of ``args`` now, in this thread.

    Kernels given explicit signatures were compiled eagerly and are left as
    they are.  Raises TypeError if ``kernel`` is not an ``@njit`` function, or, when
    ``require_nogil``, if it was not compiled with ``nogil=True``.
    """
    if not isinstance(kernel, CPUDispatcher):
        raise TypeError(
            f"kernel {kernel!r} is not a Numba @njit function; only those can run without the GIL"
        )
    if require_nogil and not kernel.targetoptions.get("nogil", False):
        raise TypeError(
            f"kernel {kernel.py_func.__name__!r} was compiled without nogil=True; "
            "its threads would hold the GIL and run one at a time"
        )
    if not getattr(kernel, "_can_compile", True):
        return  # eagerly compiled from explicit signatures: nothing left to compile
    sig = tuple(numba.typeof(a) for a in args)
    kernel.compile(sig)


def run_threads(
    calls: Sequence[tuple[Callable[..., Any], Sequence[Any]]],
    *,
    timeout: float | None = None,
    on_timeout: Callable[[], None] | None = None,
    grace: float = 5.0,
    require_nogil: bool = True,
) -> ThreadRun:
    """Run ``kernel(*args)`` for each ``(kernel, args)`` in ``calls``, one thread each.

    All kernels are compiled first (see :func:`compile_for`); the threads
    then wait on a barrier and start together.  Returns a :class:`ThreadRun`
    with the return values in the order of ``calls``.

    If a worker raised, the exception of the first failing worker is
    re-raised here (with a note naming the worker; other failures are noted
    too).  If ``timeout`` (seconds) passes with workers still running,
    ``on_timeout`` is called (e.g. to set a stop flag the kernels poll), the
    workers get ``grace`` more seconds, and :class:`WorkerTimeout` is raised;
    threads are daemons, so a stuck worker cannot keep the process alive.
    """
    if not calls:
        raise ValueError("calls is empty; give at least one (kernel, args) pair")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout={timeout!r} must be positive seconds or None")
    for k, call in enumerate(calls):
        if len(call) != 2:
            raise ValueError(f"calls[{k}] must be a (kernel, args) pair, got {call!r}")
        compile_for(call[0], call[1], require_nogil=require_nogil)

    n = len(calls)
    results: list[Any] = [None] * n
    errors: list[BaseException | None] = [None] * n
    barrier = threading.Barrier(n + 1)

    def work(k: int, kernel: Callable[..., Any], args: Sequence[Any]) -> None:
        try:
            barrier.wait()
            results[k] = kernel(*args)
        except BaseException as exc:  # noqa: BLE001 - propagated to the caller below
            errors[k] = exc

    threads = [
        threading.Thread(target=work, args=(k, kern, tuple(a)), name=f"worker-{k}", daemon=True)
        for k, (kern, a) in enumerate(calls)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    deadline = None if timeout is None else t0 + timeout
    for t in threads:
        t.join(None if deadline is None else max(0.0, deadline - time.perf_counter()))
    alive = [k for k, t in enumerate(threads) if t.is_alive()]
    if alive:
        if on_timeout is not None:
            on_timeout()
        for t in threads:
            t.join(grace)
        raise WorkerTimeout(alive, float(timeout))  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0

    failed = [k for k, e in enumerate(errors) if e is not None]
    if failed:
        first = errors[failed[0]]
        assert first is not None
        first.add_note(f"raised in worker {failed[0]} of {n}")
        for k in failed[1:]:
            first.add_note(f"worker {k} also failed: {errors[k]!r}")
        raise first
    return ThreadRun(results=results, seconds=seconds)
