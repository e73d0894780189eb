"""General matrix product on strided blocks of flat arrays, callable from nopython code.

``np.dot`` in Numba multiplies whole contiguous matrices and overwrites its output.  The
convolution kernels need more of BLAS: operands that are blocks of a larger buffer (a
leading dimension larger than the row length), and accumulation (``C += A @ B``) without
a temporary.  :func:`gemm` gives them that by calling the same BLAS ``?gemm`` Numba's
``np.dot`` calls (SciPy's), with row-major conventions, no allocation and no GIL.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

ensure_blas()  # makes Numba's BLAS entry point (numba_xxgemm) available to compiled code

_KIND = {types.float32: ord("s"), types.float64: ord("d")}


@intrinsic
def _xgemm(typingctx, trans_a, trans_b, m, n, k, alpha, a, oa, lda, b, ob, ldb, beta, c, oc,
           ldc):
    """Column-major ``?gemm`` on ``a[oa:]``, ``b[ob:]``, ``c[oc:]`` (1-D arrays of one dtype)."""
    if not all(isinstance(t, types.Array) and t.ndim == 1 for t in (a, b, c)):
        raise TypingError("gemm: the operands must be 1-D arrays")
    if not (a.dtype == b.dtype == c.dtype) or c.dtype not in _KIND:
        raise TypingError("gemm: the operands must all be float32 or all float64")
    dtype = c.dtype
    sig = types.intc(trans_a, trans_b, m, n, k, alpha, a, oa, lda, b, ob, ldb, beta, c, oc, ldc)

    def codegen(context, builder, signature, args):
        (ta, tb, m_, n_, k_, al, av, oav, lda_, bv, obv, ldb_, be, cv, ocv, ldc_) = args
        ll_char = ir.IntType(8)
        ll_void_p = ir.IntType(8).as_pointer()
        intp = context.get_value_type(types.intp)
        fnty = ir.FunctionType(ir.IntType(32), [
            ll_char, ll_char, ll_char, intp, intp, intp, ll_void_p, ll_void_p, intp,
            ll_void_p, intp, ll_void_p, ll_void_p, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")

        def char_of(flag):  # 't' when the flag is true, else 'n'
            return builder.select(builder.icmp_unsigned("!=", flag, flag.type(0)),
                                  ll_char(ord("t")), ll_char(ord("n")))

        def pointer(arr_ty, arr, offset, offset_ty):
            data = context.make_array(arr_ty)(context, builder, arr).data
            off = context.cast(builder, offset, offset_ty, types.intp)
            return builder.bitcast(builder.gep(data, [off]), ll_void_p)

        def slot(value, value_ty):
            v = context.cast(builder, value, value_ty, dtype)
            return builder.bitcast(cgutils.alloca_once_value(builder, v), ll_void_p)

        def as_intp(value, value_ty):
            return context.cast(builder, value, value_ty, types.intp)

        s = signature.args
        return builder.call(fn, (
            ll_char(_KIND[dtype]), char_of(ta), char_of(tb),
            as_intp(m_, s[2]), as_intp(n_, s[3]), as_intp(k_, s[4]),
            slot(al, s[5]), pointer(s[6], av, oav, s[7]), as_intp(lda_, s[8]),
            pointer(s[9], bv, obv, s[10]), as_intp(ldb_, s[11]),
            slot(be, s[12]), pointer(s[13], cv, ocv, s[14]), as_intp(ldc_, s[15])))

    return sig, codegen


@njit(nogil=True)
def gemm(trans_a, trans_b, m, n, k, alpha, a, oa, lda, b, ob, ldb, beta, c, oc, ldc):
    """C = alpha·op(A)·op(B) + beta·C on row-major blocks of the flat arrays ``a, b, c``.

    ``C`` is the m×n block starting at ``c[oc]`` with rows ``ldc`` apart; ``op(A)`` is m×k:
    the block at ``a[oa]`` (rows ``lda`` apart) is m×k, or k×m read transposed when
    ``trans_a``; likewise ``op(B)`` (k×n, or n×k when ``trans_b``).  ``beta = 0`` overwrites
    C (its old contents are never read), ``beta = 1`` accumulates.  Bounds are not checked:
    the caller's layout guarantees them.
    """
    if m == 0 or n == 0:
        return
    if k == 0:
        raise ValueError("gemm: k must be positive")
    # Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ: swap the operands.
    if _xgemm(trans_b, trans_a, n, m, k, alpha, b, ob, ldb, a, oa, lda, beta, c, oc, ldc) != 0:
        raise RuntimeError("gemm: BLAS is not available")
