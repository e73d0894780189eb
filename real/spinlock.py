"""A spin lock on an int64 array slot, and scheduler yields, for nopython worker loops.

The ``lock`` engine protects the shared parameter vector with one lock that
worker threads take from inside ``@njit(nogil=True)`` loops, where Python's
``threading.Lock`` is not available.  The lock is one int64 slot of a NumPy
array: 0 = free, 1 = held.  Acquire is test-and-test-and-set: spin on atomic
loads (cheap, the cache line stays shared) and try a compare-and-swap only
when the lock looks free.  After ``SPINS_BEFORE_YIELD`` failed spins the
waiter calls ``sched_yield()`` so that, with more workers than cores
(oversubscription), the holder gets the CPU back instead of being starved by
spinners.

Not re-entrant and not fair; release by a thread that does not hold the lock
is not detected, but releasing a free lock raises ``RuntimeError``.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .atomics import atomic_cas, atomic_load, atomic_xchg
from .libc import c_sched_yield

__all__ = [
    "SPINS_BEFORE_YIELD",
    "cpu_relax",
    "sched_yield",
    "spin_lock_acquire",
    "spin_lock_acquire_unless",
    "spin_lock_release",
    "spin_lock_try_acquire",
]

#: Failed spins after which a waiting thread yields the CPU to the scheduler.
SPINS_BEFORE_YIELD = 64


@njit(nogil=True)
def sched_yield() -> int:
    """Give the CPU to another runnable thread (libc ``sched_yield``); returns 0 on success.

    Callable from nopython code, where it is the C call itself.
    """
    return c_sched_yield()


_MACHINE = platform.machine().lower()


@intrinsic
def _pause(typingctx):
    """Intrinsic: the CPU's spin-wait hint (x86 ``pause``, ARM ``yield``), else nothing."""
    sig = types.none()

    def codegen(context, builder, signature, args):
        mod = builder.module
        if _MACHINE in ("x86_64", "amd64", "i386", "i686"):
            fn = cgutils.get_or_insert_function(
                mod, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause"
            )
            builder.call(fn, [])
        elif _MACHINE in ("aarch64", "arm64"):
            fn = cgutils.get_or_insert_function(
                mod, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]), "llvm.aarch64.hint"
            )
            builder.call(fn, [ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True)
def cpu_relax() -> None:
    """Tell the CPU we are in a spin-wait (saves power, frees the sibling hyper-thread)."""
    _pause()


@njit(nogil=True)
def spin_lock_try_acquire(lock, i) -> bool:
    """Take the lock in slot ``lock[i]`` if it is free right now; return whether we got it."""
    return atomic_load(lock, i) == 0 and atomic_cas(lock, i, 0, 1) == 0


@njit(nogil=True)
def spin_lock_acquire(lock, i) -> int:
    """Take the lock in slot ``lock[i]``, waiting as long as needed.

    Spins on atomic loads and yields to the scheduler every
    ``SPINS_BEFORE_YIELD`` spins.  Returns the number of spins it waited
    (0 when the lock was free), a cheap contention measure.
    """
    spins = 0
    while True:
        if atomic_load(lock, i) == 0 and atomic_cas(lock, i, 0, 1) == 0:
            return spins
        spins += 1
        if spins % SPINS_BEFORE_YIELD == 0:
            sched_yield()
        else:
            _pause()


@njit(nogil=True)
def spin_lock_acquire_unless(lock, i, stop) -> bool:
    """Take the lock in slot ``lock[i]`` unless ``lock[stop]`` becomes non-zero first;
    return whether it was taken.

    Workers wait this way so that a run that has stopped ends at once, even with thousands
    of them queued for the lock (each would otherwise take it once on its way out, and with
    far more threads than cores every hand-over waits for the holder's next time slice).
    """
    spins = 0
    while True:
        if atomic_load(lock, i) == 0 and atomic_cas(lock, i, 0, 1) == 0:
            return True
        if atomic_load(lock, stop) != 0:
            return False
        spins += 1
        if spins % SPINS_BEFORE_YIELD == 0:
            sched_yield()
        else:
            _pause()


@njit(nogil=True)
def spin_lock_release(lock, i) -> None:
    """Release the lock in slot ``lock[i]``; raises RuntimeError if it was not held."""
    if atomic_xchg(lock, i, 0) != 1:
        raise RuntimeError("spin_lock_release: the lock was not held")
