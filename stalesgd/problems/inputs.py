"""Reading a kernel's inputs ``X`` whatever form they come in: for model authors.

A kernel receives ``X`` as :meth:`stalesgd.data.Dataset.inputs` gives it, in one of three
forms: a 2-D float array (synthetic sets, ``.npz``/``.csv`` files); packed images, the tuple
``(uint8 pixels, per-channel table)`` of MNIST, Fashion-MNIST and CIFAR-10 (a quarter of the
memory of float32 rows, the same values bit for bit once read); or the CSR tuple
``(indptr, indices, values, n_cols)`` of a sparse set (the ``sparse`` set, LIBSVM files).
Indexing ``X[row]`` works for the first form only.  The functions below work for all three
inside ``@njit`` code, compiled to the right loop for the form at hand (no cost over
indexing a float array):

``n_rows(X)``, ``n_cols(X)``
    examples and features per example;
``copy_row(X, r, out)``
    example ``r`` as floats into the 1-D array ``out`` (length ``n_cols(X)``; zeros where a
    sparse row has no entry);
``gather_rows(X, idx, out)``
    the examples ``idx`` into the rows of the 2-D array ``out``;
``row_span(X, r)`` and ``row_entry(X, r, p)``
    walk an example's stored entries: ``for p in range(*row_span(X, r))``, then
    ``j, v = row_entry(X, r, p)`` is a column and its value (every column of a dense or
    packed row, the non-zeros of a sparse one) -- the way to touch only a sparse row's
    non-zeros.

The example plug-in (``examples/plugin_tanh_mlp``) copies each row into its workspace with
``copy_row`` and so runs on every data set.
"""

from stalesgd.problems._kernels import copy_row, gather_rows, n_cols, n_rows, row_entry, row_span

__all__ = ["copy_row", "gather_rows", "n_cols", "n_rows", "row_entry", "row_span"]
