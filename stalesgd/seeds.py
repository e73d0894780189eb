"""Per-worker seeds derived from a run's seed, the same in every engine.

Worker ``w`` of a run with seed ``s`` draws its minibatches from the seed
``SeedSequence(s).spawn(m)[w]`` (the first 32-bit word of its state), so a simulated worker
draws the same minibatches as the real worker with the same index, and a run record can
name the seeds it used (``worker_seeds`` in the runs table).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_SEED", "worker_seeds"]

#: the largest run seed: run records store seeds as signed 64-bit integers
MAX_SEED = 2**63 - 1


def worker_seeds(seed: int, workers: int) -> list[int]:
    """The minibatch seed of each of ``workers`` workers of a run seeded ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not (
            0 <= seed <= MAX_SEED):
        raise ValueError(f"seed {seed!r} must be an integer in 0..{MAX_SEED}")
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise ValueError(f"workers {workers!r} must be an integer >= 1")
    children = np.random.SeedSequence(int(seed)).spawn(int(workers))
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in children]
