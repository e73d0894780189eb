"""Calls into the C library from nopython code, by symbol name.

The worker loops read the clock, sleep and yield the CPU through the C library.  A ctypes
function called from ``@njit`` code is compiled in as its address in this process, so Numba
cannot keep such code in its on-disk cache and every process compiled the worker loops
afresh.  These intrinsics declare the C function by name instead; the name is resolved
when the machine code is loaded, so code calling them can be cached
(:mod:`stalesgd.jitcache`).  POSIX only (Linux, macOS), like the engine's clock.

A ``timespec`` is an int64 array of two elements (seconds, nanoseconds): the layout of
``struct timespec`` on the 64-bit platforms the engine runs on.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

__all__ = ["c_clock_gettime", "c_nanosleep", "c_sched_yield"]

_INT = ir.IntType(32)  # C int
_VOIDP = ir.IntType(8).as_pointer()


def _check_timespec(name: str, ts: types.Type) -> None:
    if not (isinstance(ts, types.Array) and ts.ndim == 1 and ts.dtype == types.int64
            and ts.layout == "C"):
        raise TypingError(f"{name}: the timespec must be a contiguous 1-D int64 array, "
                          f"got {ts}")


def _data_pointer(context, builder, arrty, arr):
    """The array's data as a ``void *``."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(data, _VOIDP)


def _declare(builder, name: str, args: list) -> ir.Function:
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(_INT, args), name)


@intrinsic
def c_clock_gettime(typingctx, clock, ts):
    """``clock_gettime(clock, ts)``: the time of clock ``clock`` into the timespec ``ts``;
    returns 0 on success."""
    _check_timespec("c_clock_gettime", ts)
    if not isinstance(clock, types.Integer):
        raise TypingError(f"c_clock_gettime: the clock must be an integer, got {clock}")
    sig = types.int32(clock, ts)

    def codegen(context, builder, signature, args):
        clock_id = context.cast(builder, args[0], signature.args[0], types.int32)
        fn = _declare(builder, "clock_gettime", [_INT, _VOIDP])
        return builder.call(fn, [clock_id, _data_pointer(context, builder, ts, args[1])])

    return sig, codegen


@intrinsic
def c_nanosleep(typingctx, ts):
    """``nanosleep(ts, NULL)``: sleep for the timespec ``ts``; returns 0 unless a signal
    woke the thread early."""
    _check_timespec("c_nanosleep", ts)
    sig = types.int32(ts)

    def codegen(context, builder, signature, args):
        fn = _declare(builder, "nanosleep", [_VOIDP, _VOIDP])
        return builder.call(fn, [_data_pointer(context, builder, ts, args[0]),
                                 ir.Constant(_VOIDP, None)])

    return sig, codegen


@intrinsic
def c_sched_yield(typingctx):
    """``sched_yield()``: give the CPU to another runnable thread; returns 0 on success."""
    sig = types.int32()

    def codegen(context, builder, signature, args):
        return builder.call(_declare(builder, "sched_yield", []), [])

    return sig, codegen
