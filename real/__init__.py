"""Asynchronous SGD run for real: multithreaded Numba engines."""
