"""Errors of a run that the command line reports in one line (kept light: ``main`` imports it
before it knows which command runs)."""

from __future__ import annotations

from typing import Any

__all__ = ["OutOfMemory", "memory_text"]


def memory_text(exc: MemoryError) -> str:
    """What a MemoryError says, on one line (NumPy's names the array it could not allocate)."""
    return " ".join(str(exc).split())[:300] or "MemoryError"


class OutOfMemory(RuntimeError):
    """A run that asked for more memory than the machine could give (the checks before a
    run count the data and the parameter vectors only): one line naming the run and what
    needs less, not a traceback."""

    def __init__(self, spec: Any, exc: MemoryError, kept: bool) -> None:
        super().__init__(
            f"run {spec.run_id} ({spec.problem.name}, {spec.engine}, {spec.algorithm.name}, "
            f"{spec.workers} worker{'s' if spec.workers != 1 else ''}) ran out of memory "
            f"({memory_text(exc)}); with more memory free the same experiment can go on, while "
            "fewer workers, float32 or a smaller problem need less (another experiment) (the "
            "sweep stopped" + ("; the runs before it are kept)" if kept else ")"))
