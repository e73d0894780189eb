"""The distributed engine ``ray``: parameter-server asynchronous SGD on Ray (DESIGN §10).

Importing this package registers the engine; Ray itself is imported only when a run
starts (it is an optional extra: ``pip install 'stalesgd[ray]'``).
"""

from stalesgd.engines import register_engine

from .engine import run_ray, validate_ray

register_engine("ray", run_ray, validate=validate_ray)

__all__ = ["run_ray", "validate_ray"]
