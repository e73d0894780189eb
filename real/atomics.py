"""Sequentially consistent atomics on slots of NumPy arrays, usable from nopython code.

The engines share counters (the version counter t, update counts, reference
counts, version-tagged pointers) between worker threads that run
``@njit(nogil=True)`` loops at the same time.  Plain loads and stores are not
enough there: the compiler may hoist a plain load out of a spin-wait (an
endless loop, measured on this machine) and a plain ``a[i] += 1`` loses
updates.  These functions emit LLVM ``atomicrmw`` / ``cmpxchg`` /
``load atomic`` / ``store atomic`` / ``fence`` instructions, all ``seq_cst``,
through :func:`numba.extending.intrinsic`, all ``seq_cst`` except the pair
:func:`store_release` / :func:`load_acquire`, which publish data written with plain stores
(a record row: its fields first, then its stamp) at the price of a plain ``mov`` on x86.

Every function takes a 1-D NumPy array and an integer index and works on the
slot ``arr[i]``.  Slots are ``int64`` (all operations) or ``float64``
(load, store, exchange, add, sub; a float add is lowered by LLVM to a
compare-and-swap loop on the bit pattern).  The array must be aligned and
writable (``atomic_load`` also accepts read-only arrays); any stride is
allowed.  Wrong types raise a :class:`numba.core.errors.TypingError` naming
the argument when the caller is compiled.  The index is always bounds-checked
(one unsigned compare, far cheaper than the atomic instruction): an index
outside ``[0, len(arr))`` raises ``IndexError`` (negative indices are *not*
wrapped around).

The public functions can be called from nopython code, where they compile to the
instruction itself, and from plain Python (for tests and for a monitor thread reading
counters); see the note above their definitions for how and why.
"""

from __future__ import annotations

from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from stalesgd.jitcache import cached

__all__ = [
    "atomic_add",
    "atomic_sub",
    "atomic_cas",
    "atomic_load",
    "atomic_store",
    "atomic_xchg",
    "fence",
    "load_acquire",
    "store_release",
]

_ORDER = "seq_cst"
_INT = types.int64
_FLOAT = types.float64
# Operations and the element types they accept.
_ALLOWED = {
    "atomic_add": (_INT, _FLOAT),
    "atomic_sub": (_INT, _FLOAT),
    "atomic_xchg": (_INT, _FLOAT),
    "atomic_load": (_INT, _FLOAT),
    "atomic_store": (_INT, _FLOAT),
    "atomic_cas": (_INT,),
    "load_acquire": (_INT, _FLOAT),
    "store_release": (_INT, _FLOAT),
}


def _check_array(op: str, arr: types.Type, *, write: bool) -> None:
    """Raise a TypingError unless ``arr`` is a 1-D aligned array of a dtype ``op`` accepts."""
    allowed = _ALLOWED[op]
    names = " or ".join(str(t) for t in allowed)
    if not isinstance(arr, types.Array):
        raise TypingError(f"{op}: argument 'arr' must be a 1-D {names} NumPy array, got {arr}")
    if arr.ndim != 1 or arr.dtype not in allowed:
        raise TypingError(
            f"{op}: argument 'arr' must be a 1-D {names} NumPy array, got {arr.ndim}-D "
            f"{arr.dtype} ({arr})"
        )
    if not arr.aligned:
        raise TypingError(f"{op}: argument 'arr' must be aligned for atomic access, got {arr}")
    if write and not arr.mutable:
        raise TypingError(f"{op}: argument 'arr' is read-only ({arr}); atomics need a writable one")


def _check_index(op: str, i: types.Type) -> None:
    """Raise a TypingError unless ``i`` is an integer."""
    if not isinstance(i, types.Integer):
        raise TypingError(f"{op}: argument 'i' must be an integer index, got {i}")


def _check_value(op: str, name: str, v: types.Type, dtype: types.Type) -> None:
    """Raise a TypingError unless ``v`` converts safely to the slot type ``dtype``."""
    ok = isinstance(v, (types.Integer, types.Boolean))
    if dtype == _FLOAT:
        ok = ok or isinstance(v, types.Float)
    if not ok:
        raise TypingError(f"{op}: argument '{name}' must be a number storable in {dtype}, got {v}")


def _slot_pointer(context, builder, arrty, arr, ity, idx):
    """Return the LLVM pointer to ``arr[idx]``, raising IndexError when out of bounds."""
    ary = context.make_array(arrty)(context, builder, arr)
    ind = context.cast(builder, idx, ity, types.intp)
    (n,) = cgutils.unpack_tuple(builder, ary.shape, count=1)
    # Unsigned compare: a negative index becomes huge and fails too.
    out = builder.icmp_unsigned(">=", ind, n)
    with cgutils.if_unlikely(builder, out):
        context.call_conv.return_user_exc(
            builder, IndexError, ("atomic operation: index out of bounds",)
        )
    (stride,) = cgutils.unpack_tuple(builder, ary.strides, count=1)
    return cgutils.get_item_pointer2(
        context,
        builder,
        data=ary.data,
        shape=[n],
        strides=[stride],
        layout=arrty.layout,
        inds=[ind],
    )


def _value(context, builder, vty, v, dtype):
    """Cast the value ``v`` of Numba type ``vty`` to the slot type ``dtype``."""
    return context.cast(builder, v, vty, dtype)


def _rmw_intrinsic(op: str, int_op: str, float_op: str):
    """Build an intrinsic ``(arr, i, v) -> old`` doing an atomic read-modify-write."""

    def typer(typingctx, arr, i, v):
        _check_array(op, arr, write=True)
        _check_index(op, i)
        _check_value(op, "v", v, arr.dtype)
        sig = arr.dtype(arr, i, v)

        def codegen(context, builder, signature, args):
            arrty, ity, vty = signature.args
            a, ind, val = args
            ptr = _slot_pointer(context, builder, arrty, a, ity, ind)
            val = _value(context, builder, vty, val, arrty.dtype)
            llop = float_op if arrty.dtype == _FLOAT else int_op
            return builder.atomic_rmw(llop, ptr, val, _ORDER)

        return sig, codegen

    typer.__name__ = f"_{op}_intrinsic"
    return intrinsic(typer)


_add = _rmw_intrinsic("atomic_add", "add", "fadd")
_sub = _rmw_intrinsic("atomic_sub", "sub", "fsub")
_xchg = _rmw_intrinsic("atomic_xchg", "xchg", "xchg")


@intrinsic
def _cas(typingctx, arr, i, expected, new):
    """Intrinsic: ``cmpxchg seq_cst seq_cst`` on ``arr[i]``; returns the old value."""
    op = "atomic_cas"
    _check_array(op, arr, write=True)
    _check_index(op, i)
    _check_value(op, "expected", expected, arr.dtype)
    _check_value(op, "new", new, arr.dtype)
    sig = arr.dtype(arr, i, expected, new)

    def codegen(context, builder, signature, args):
        arrty, ity, ety, nty = signature.args
        a, ind, exp, nv = args
        ptr = _slot_pointer(context, builder, arrty, a, ity, ind)
        exp = _value(context, builder, ety, exp, arrty.dtype)
        nv = _value(context, builder, nty, nv, arrty.dtype)
        pair = builder.cmpxchg(ptr, exp, nv, _ORDER, _ORDER)
        return builder.extract_value(pair, 0)

    return sig, codegen


def _load_intrinsic(op: str, order: str):
    """Build an intrinsic ``(arr, i) -> arr[i]``: ``load atomic`` with ``order``."""

    def typer(typingctx, arr, i):
        _check_array(op, arr, write=False)
        _check_index(op, i)
        sig = arr.dtype(arr, i)

        def codegen(context, builder, signature, args):
            arrty, ity = signature.args
            a, ind = args
            ptr = _slot_pointer(context, builder, arrty, a, ity, ind)
            llty = context.get_data_type(arrty.dtype)
            return builder.load_atomic(ptr, order, align=8, typ=llty)

        return sig, codegen

    typer.__name__ = f"_{op}_intrinsic"
    return intrinsic(typer)


def _store_intrinsic(op: str, order: str):
    """Build an intrinsic ``(arr, i, v) -> None``: ``store atomic`` with ``order``."""

    def typer(typingctx, arr, i, v):
        _check_array(op, arr, write=True)
        _check_index(op, i)
        _check_value(op, "v", v, arr.dtype)
        sig = types.none(arr, i, v)

        def codegen(context, builder, signature, args):
            arrty, ity, vty = signature.args
            a, ind, val = args
            ptr = _slot_pointer(context, builder, arrty, a, ity, ind)
            val = _value(context, builder, vty, val, arrty.dtype)
            builder.store_atomic(val, ptr, order, align=8)
            return context.get_dummy_value()

        return sig, codegen

    typer.__name__ = f"_{op}_intrinsic"
    return intrinsic(typer)


_load = _load_intrinsic("atomic_load", _ORDER)
_store = _store_intrinsic("atomic_store", _ORDER)
_load_acq = _load_intrinsic("load_acquire", "acquire")
_store_rel = _store_intrinsic("store_release", "release")


@intrinsic
def _fence(typingctx):
    """Intrinsic: a ``fence seq_cst`` (full memory barrier)."""
    sig = types.none()

    def codegen(context, builder, signature, args):
        builder.fence(_ORDER)
        return context.get_dummy_value()

    return sig, codegen


# The public functions: plain Python functions that Python code (tests, the monitor) calls
# through a compiled wrapper, and that compiled code calls directly as the intrinsic (the
# ``overload`` registered for each).  An ``@njit(inline="always")`` wrapper would do both, but
# inlining it gives its array argument a reference count to raise and drop around every use:
# a spin-lock acquisition measured 11 ns that way and 2.3 ns through the overload.  Overloads
# are typed without literal values, so a constant slot index compiles no specialisation of
# its own.


def atomic_add(arr, i, v):
    """Atomically add ``v`` to ``arr[i]`` and return the value it had before (fetch-add).

    int64 slots wrap around on overflow; float64 slots use a CAS loop (LLVM ``fadd``).
    """
    return _py_add(arr, i, v)


def atomic_sub(arr, i, v):
    """Atomically subtract ``v`` from ``arr[i]`` and return the value it had before."""
    return _py_sub(arr, i, v)


def atomic_xchg(arr, i, v):
    """Atomically replace ``arr[i]`` by ``v`` and return the value it had before."""
    return _py_xchg(arr, i, v)


def atomic_cas(arr, i, expected, new):
    """Compare-and-swap on an int64 slot: if ``arr[i] == expected`` set it to ``new``.

    Returns the value ``arr[i]`` had before; the swap happened iff it equals
    ``expected``.  Strong CAS: it never fails spuriously.
    """
    return _py_cas(arr, i, expected, new)


def atomic_load(arr, i):
    """Read ``arr[i]`` atomically; never hoisted out of a loop, so safe for spin-waits."""
    return _py_load(arr, i)


def atomic_store(arr, i, v):
    """Write ``v`` into ``arr[i]`` atomically, visible to every later atomic load."""
    _py_store(arr, i, v)


def load_acquire(arr, i):
    """Read ``arr[i]`` with acquire ordering: every plain store the writer made before its
    :func:`store_release` of this value is visible to this thread's later loads."""
    return _py_load_acq(arr, i)


def store_release(arr, i, v):
    """Write ``v`` into ``arr[i]`` with release ordering: this thread's earlier plain stores
    become visible no later than ``v`` (to a reader that uses :func:`load_acquire`)."""
    _py_store_rel(arr, i, v)


def _binary(op):
    """The nopython implementation ``(arr, i, v) -> op(arr, i, v)``."""
    return lambda arr, i, v: (lambda arr, i, v: op(arr, i, v))


def _unary(op):
    """The nopython implementation ``(arr, i) -> op(arr, i)``."""
    return lambda arr, i: (lambda arr, i: op(arr, i))


overload(atomic_add)(_binary(_add))
overload(atomic_sub)(_binary(_sub))
overload(atomic_xchg)(_binary(_xchg))
overload(atomic_store)(_binary(_store))
overload(store_release)(_binary(_store_rel))
overload(atomic_load)(_unary(_load))
overload(load_acquire)(_unary(_load_acq))
overload(atomic_cas)(lambda arr, i, expected, new: (
    lambda arr, i, expected, new: _cas(arr, i, expected, new)))

# The compiled wrappers Python calls (cached on disk: the monitor calls them in every run).


@cached
@njit(nogil=True)
def _py_add(arr, i, v):
    return _add(arr, i, v)


@cached
@njit(nogil=True)
def _py_sub(arr, i, v):
    return _sub(arr, i, v)


@cached
@njit(nogil=True)
def _py_xchg(arr, i, v):
    return _xchg(arr, i, v)


@cached
@njit(nogil=True)
def _py_store(arr, i, v):
    _store(arr, i, v)


@cached
@njit(nogil=True)
def _py_store_rel(arr, i, v):
    _store_rel(arr, i, v)


@cached
@njit(nogil=True)
def _py_load(arr, i):
    return _load(arr, i)


@cached
@njit(nogil=True)
def _py_load_acq(arr, i):
    return _load_acq(arr, i)


@cached
@njit(nogil=True)
def _py_cas(arr, i, expected, new):
    return _cas(arr, i, expected, new)


@njit(nogil=True)
def fence():
    """Full sequentially consistent memory barrier (orders plain loads and stores too)."""
    _fence()
