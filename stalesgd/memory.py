"""Arrays that own whole cache lines.

Data that one worker thread writes on every update must not share a 64-byte cache line
with data another thread writes: each write would then take the line away from the other
core (false sharing), a coherence miss of 60–500 ns on this kind of machine, every update.
NumPy places small arrays wherever ``malloc`` puts them (16-byte alignment), so two
workers' statistics rows, or one worker's row and another's clock scratch, can sit on one
line.  :func:`line_zeros` gives arrays that start on a line and whose allocation is padded
to whole lines; :func:`line_width` pads a row so that every row of a 2-D array starts on a
line too.

Starting on a line also aligns an array for the processor's widest vector loads: a kernel
workspace that starts 16 bytes past a 32-byte boundary (where ``malloc`` puts half of all
arrays) made LeNet-5's gradient 13–18 % slower on this kind of machine, in float32 and
float64 alike; the models' :meth:`~stalesgd.problems.base.Model.workspace` uses
:func:`line_zeros` for that reason.

:func:`prefetch` asks the processor, from compiled code, to start loading a line that will
be needed soon: the worker loops use it for the next minibatch's rows of a sparse data set,
which sit at random places in memory (a miss to main memory per row otherwise).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["LINE_BYTES", "line_copy", "line_width", "line_zeros", "prefetch"]

#: bytes per cache line (x86-64 and most ARM cores)
LINE_BYTES = 64


def line_width(elements: int, dtype: np.typing.DTypeLike) -> int:
    """``elements`` rounded up so that a row of them fills whole cache lines."""
    per_line = max(LINE_BYTES // np.dtype(dtype).itemsize, 1)
    return -(-int(elements) // per_line) * per_line


def line_zeros(shape: int | tuple[int, ...], dtype: np.typing.DTypeLike) -> np.ndarray:
    """Zeros of ``shape`` and ``dtype`` starting on a cache-line boundary (unless empty),
    alone on the lines they occupy (C order; with :func:`line_width` rows, each row on its
    own lines)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    padded = -(-nbytes // LINE_BYTES) * LINE_BYTES
    raw = np.zeros(padded + LINE_BYTES, dtype=np.uint8)
    skip = -raw.ctypes.data % LINE_BYTES
    return raw[skip : skip + nbytes].view(dtype).reshape(shape)


def line_copy(arr: np.ndarray) -> np.ndarray:
    """A copy of ``arr`` (C order) alone on cache lines of its own, as :func:`line_zeros`."""
    out = line_zeros(arr.shape, arr.dtype)
    out[...] = arr
    return out


@intrinsic
def prefetch(typingctx, arr, index):
    """``prefetch(arr, i)`` (compiled code only): start loading the cache line of ``arr[i]``
    (1-D, C-contiguous: other layouts are refused) for a read soon.  A hint: it changes no
    value, never faults, and an index outside the array costs nothing but the hint."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"
            and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        byte_ptr = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [byte_ptr], ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32]))
        address = builder.bitcast(builder.gep(data, [i]), byte_ptr)
        # (read, keep in all cache levels, data cache)
        builder.call(fn, [address, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, index), codegen
