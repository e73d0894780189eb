"""Models over one flat parameter vector, with Numba loss and gradient kernels."""
