"""Asynchronous SGD run for real: multithreaded Numba engines.

Importing this package registers the ``real`` engine with :mod:`stalesgd.engines`.
"""

from stalesgd.engines import register_engine

from .engine import run_real, validate_real

register_engine("real", run_real, validate=validate_real)

__all__ = ["run_real", "validate_real"]
