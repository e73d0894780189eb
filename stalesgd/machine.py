"""What machine and software a run ran on, written to ``machine.json`` in every results folder.

Timings and staleness depend on the CPU, the core count and the library versions, so every
results folder records them.  No user paths are recorded (the hostname is).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("numpy", "numba", "simpy", "scipy", "pandas", "pyarrow", "matplotlib", "llvmlite",
             "tqdm", "threadpoolctl")
"""Distributions whose versions are recorded (None when not installed)."""

MACHINE_KEYS = ("stalesgd", "git_commit", "git_dirty", "hostname", "os", "platform", "machine",
                "cpu_model", "logical_cores", "physical_cores", "usable_cores", "memory_bytes",
                "python", "python_implementation", "libraries", "blas_env", "recorded_at")
"""The keys of :func:`machine_info` (documented here so that readers can rely on them)."""


def _cpuinfo() -> tuple[str | None, int | None]:
    """CPU model and physical core count from /proc/cpuinfo (Linux); (None, None) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None, None
    model = None
    cores: set[tuple[str, str]] = set()
    phys = core = None
    for line in text.splitlines() + [""]:
        if not line.strip():
            if core is not None:
                cores.add((phys or "0", core))
            phys = core = None
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
    return model, (len(cores) or None)


def _cpu_model_fallback() -> str | None:
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, timeout=5, check=False)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or None


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def usable_cores() -> int | None:
    """The CPUs this process may run on (its affinity mask), or the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def git_state(source_dir: Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout holding the stalesgd source, or (None, None).

    Only a checkout whose top level contains this very package counts, so that an installed
    copy inside some unrelated repository is not mistaken for ours; never raises.
    """
    pkg = (source_dir or Path(__file__).resolve().parent).resolve()

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(pkg), *args], capture_output=True, text=True,
                                 timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or not (Path(top) / pkg.name / "__init__.py").exists() or \
            (Path(top) / pkg.name).resolve() != pkg:
        return None, None
    commit = git("rev-parse", "HEAD")
    if not commit:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (None if status is None else bool(status))


def machine_info() -> dict[str, Any]:
    """A JSON-ready description of this machine and software (keys: :data:`MACHINE_KEYS`).

    CPU model, logical/physical/usable cores, memory, OS, Python and library versions, the
    stalesgd version and git commit (None outside a git checkout), the BLAS thread settings.
    """
    from stalesgd import __version__

    model, physical = _cpuinfo()
    commit, dirty = git_state()
    return {
        "stalesgd": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model or _cpu_model_fallback(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "usable_cores": usable_cores(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "blas_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                     "MKL_NUM_THREADS")},
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def peak_rss_bytes() -> int | None:
    """The peak resident set size of this process's address space, in bytes.

    Read from ``VmHWM`` in ``/proc/self/status``.  ``getrusage().ru_maxrss`` is not used where
    this is available: Linux carries ``ru_maxrss`` over ``execve``, so a process started by a
    large parent (e.g. ``subprocess`` from a test runner holding a data set) reports the
    parent's peak, not its own.  Falls back to ``ru_maxrss`` elsewhere; None if neither exists.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):
        return None
