"""A fake engine for tests of the runner and the command line: it records the specs it is
called with and returns small records that depend on them (registered by the ``fake``
fixture of ``conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stalesgd import engines
from stalesgd.experiment import RunSpec
from stalesgd.records import RunRecord

#: a sweep of 8 runs (2 workers × 2 algorithms × 2 seeds) on the fake engine
SWEEP = """
name = "fake-sweep"
engine = "fake"
seeds = [0, 1]

[problem]
name = "logreg-synthetic"

[stop]
updates = 200
target_loss = 0.5

[sweep]
workers = [1, 2]
"algorithm.name" = ["lock", "hogwild"]
"sim.cores" = [3]
"""


#: first lines of a script a test interrupts with SIGINT: Ctrl-C raises KeyboardInterrupt
#: even when the suite was started in the background by a non-interactive shell
#: (``make test &``, ``nohup``), which ignores SIGINT for it and, by inheritance, its children
INTERRUPTIBLE = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"


def only_folder(root: Path) -> Path:
    """The one folder in ``root``."""
    folders = [p for p in root.iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def fake_record(spec: RunSpec, n: int | None = None) -> RunRecord:
    """A small record that depends on the spec: n updates by spec.workers workers."""
    n = (spec.stop.updates or 100) if n is None else n
    rng = np.random.default_rng(spec.seed)
    t = np.cumsum(rng.exponential(1e-3 / spec.workers, n))
    ks = np.arange(0, n, max(1, n // 10))
    return RunRecord(
        summary={"peak_param_bytes": 8 * 21 * spec.workers},
        updates={"k": np.arange(n), "worker": np.arange(n) % spec.workers, "t_read": t - 1e-4,
                 "t_apply": t, "tau": rng.integers(0, spec.workers, n),
                 "eta": np.full(n, spec.stepsize.lr)},
        evals={"t": t[ks], "k": ks, "loss": 0.7 * np.exp(-ks / (n / 3)),
               "active_workers": np.full(len(ks), spec.workers)},
    )


class FakeEngine:
    """Records the specs it is called with; can raise on a given call."""

    def __init__(self, fail_on: int | None = None, exc: BaseException | None = None):
        self.calls: list[RunSpec] = []
        self.fail_on, self.exc = fail_on, exc

    def __call__(self, spec: RunSpec, progress: bool, updates=None) -> RunRecord:
        self.calls.append(spec)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise self.exc
        return fake_record(spec)


@pytest.fixture
def exp_file(tmp_path):
    """:data:`SWEEP` in a file."""
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP)
    return path


@pytest.fixture
def fake():
    """Register a fake engine under a name for the test; the name's engine before (a built-in
    one, say) is registered again afterwards."""
    before: dict[str, engines.Engine | None] = {}

    def install(engine, name: str = "fake", validate=None):
        if name not in before:
            try:
                before[name] = engines.get_engine(name)
            except engines.EngineNotAvailable:
                before[name] = None
        engines.register_engine(name, engine, validate)
        return engine
    yield install
    for name, old in before.items():
        engines.unregister_engine(name)
        if old is not None:
            engines.register_engine(old.name, old.run, old.validate)


@pytest.fixture
def interrupted_simulations(monkeypatch):
    """Every timing-only simulation reports itself cut short by Ctrl-C (as
    :func:`stalesgd.sim.engine.simulate_timing` does when SIGINT arrives): for the fits that
    simulate and must then stop."""
    import stalesgd.sim.engine as engine

    real = engine.simulate_timing

    def interrupted(*args, **kwargs):
        res = real(*args, **kwargs)
        res.interrupted = True
        return res

    monkeypatch.setattr(engine, "simulate_timing", interrupted)
