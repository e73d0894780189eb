"""The ``sim`` engine's contract: settings refused before anything runs, rows streamed while
the run goes on, nothing computed lost on Ctrl-C, every update counted, one divergence rule."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fakes import INTERRUPTIBLE
from stalesgd.app.cli import main
from stalesgd.sim import buffers, run_iid_staleness
from stalesgd.sim.run import SimRun, validate

from stalesgd.engines import get_engine
from stalesgd.experiment import AlgorithmSpec, ExperimentError, expand, experiment_from_flags
from stalesgd.problems.registry import make_problem
from stalesgd.records import UpdateLog, load_results, runs_table


def spec(algorithm="lock", workers=2, updates=2000, seconds=None, timing_only=True, **kw):
    sim = {"compute": kw.pop("compute", "exp:1ms"), "timing_only": timing_only,
           **kw.pop("sim", {})}
    exp = experiment_from_flags("sim", problem=kw.pop("problem", "logreg-synthetic"),
                                algorithm=algorithm, workers=workers, updates=updates,
                                seconds=seconds, sim=sim, **kw)
    return expand(exp)[0]


# ------------------------------------------------------------------ settings refused up front


@pytest.mark.parametrize("algorithm,sim,key", [
    ("lock", {"compute": "det:0", "read": "det:0", "update": "det:0"}, "sim.compute"),
    ("sync", {"compute": "det:0", "read": "det:0", "update": "det:0", "cores": 1}, "sim.compute"),
    ("lock", {"time_slice": "500ns", "cores": 1}, "sim.time_slice"),
    ("hogwild", {"time_slice": "1ns"}, "sim.time_slice"),
])
def test_the_engine_refuses_runs_that_cannot_make_progress(algorithm, sim, key):
    bad = spec(algorithm, workers=3, sim=sim)
    with pytest.raises(ExperimentError, match=key.replace(".", r"\.")):
        get_engine("sim").check(bad)  # the check the runner makes before any run starts
    with pytest.raises(ExperimentError, match=key.replace(".", r"\.")):
        SimRun(bad, progress=False)


@pytest.mark.parametrize("controller", ["window", "ternary", "model"])
def test_a_controller_that_measures_the_loss_is_refused_with_timing_only(controller):
    bad = spec(controller=controller, workers=3)
    with pytest.raises(ExperimentError, match="controller.name.*needs numeric replay"):
        get_engine("sim").check(bad)
    get_engine("sim").check(spec(controller="schedule", workers=3,  # needs no loss
                                 controller_options={"steps": [[0, 3], [100, 1]]}))
    get_engine("sim").check(spec(controller=controller, workers=3, timing_only=False))


def test_a_compare_and_swap_cost_is_a_cycle_of_its_own():
    zero = {"compute": "det:0", "read": "det:0", "update": "det:0"}
    costly = AlgorithmSpec(name="hogwild", options={"cas_cost": "50ns"})
    validate(replace(spec("hogwild", sim=zero), algorithm=costly))  # moves: no error
    with pytest.raises(ExperimentError, match="sim.compute"):  # lock pays no CAS
        validate(replace(spec("lock", sim=zero),
                         algorithm=AlgorithmSpec(name="lock", options={"cas_cost": "50ns"})))


def test_unknown_algorithm_options_are_refused_before_the_run():
    bad = replace(spec(), algorithm=AlgorithmSpec(name="lock", options={"handover": "1us"}))
    with pytest.raises(ExperimentError, match="algorithm.options.handover"):
        validate(bad)
    ok = replace(spec(updates=10), algorithm=AlgorithmSpec(name="lock",
                                                           options={"lock_handover": "5us"}))
    validate(ok)
    assert SimRun(ok, progress=False).run().summary["updates"] == 10


def test_zero_cycles_on_the_command_line_exit_2_without_a_folder(tmp_path, capsys):
    code = main(["sim", "--problem", "logreg-synthetic", "--algorithm", "lock", "--workers", "3",
                 "--cores", "2", "--compute", "det:0", "--read", "det:0", "--update", "det:0",
                 "--updates", "10", "--timing-only", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "--compute" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ the record


def test_rows_reach_the_update_log_while_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(buffers, "ROW_CHUNK", 500)
    log = UpdateLog("all", folder=tmp_path, run_id="r", chunk_rows=1000)
    files_seen = []
    add = log.add

    def counting_add(cols):
        add(cols)
        files_seen.append(len(log.files))

    monkeypatch.setattr(log, "add", counting_add)
    rec = SimRun(spec("leashed", workers=4, updates=5000, sim={"cores": 2}), progress=False,
                 updates=log).run()
    assert rec.summary["updates"] == 5000 and rec.summary["event_loop"] == "compiled"
    assert files_seen[:4] == [0, 1, 1, 2]  # chunk files written before the run ended
    k = rec.updates["k"][~rec.updates["dropped"]]
    assert np.array_equal(np.sort(k), np.arange(5000))


def test_every_zero_step_update_is_counted():
    """TAIL-τ with A = 1 gives η = 0 beyond its window's largest τ (timing only: η is looked
    up chunk by chunk as the rows leave the simulation)."""
    rec = SimRun(spec("hogwild", workers=8, updates=6000, stepsize="tail",
                      stepsize_options={"A": 1}), progress=False).run()
    eta = rec.updates["eta"]
    zero = int(np.count_nonzero(eta[~rec.updates["dropped"]] == 0.0))
    assert zero > 0 and rec.summary["zero_step_updates"] == zero
    assert rec.summary["stepsize_tables"] >= 1


def test_the_summary_says_which_loop_ran():
    s = spec("lock", workers=8, updates=500, sim={"cores": 3, "update": "det:100us"})
    compiled = SimRun(s, progress=False).run().summary
    simpy = SimRun(s, progress=False, fast=False).run().summary
    assert compiled["event_loop"] == "compiled" and simpy["event_loop"] == "simpy"
    assert compiled["preemptions"] == simpy["preemptions"] > 0
    assert compiled["lock_contended"] == simpy["lock_contended"] > 0


def test_a_loss_ten_thousand_times_the_first_is_divergence():
    """Numeric replay stops at the first evaluation that blew up, before any overflow."""
    rec = SimRun(spec("lock", workers=2, updates=20000, timing_only=False, lr=1.0,
                      problem="linreg-synthetic", sim={"compute": "exp:1ms"}),
                 progress=False).run()
    s, loss = rec.summary, rec.evals["loss"]
    assert s["diverged"] and s["stop_reason"] == "diverged" and s["updates"] < 20000
    first = max(abs(loss[0]), 1.0)
    assert np.isfinite(loss[-1]) and loss[-1] > 1e4 * first
    assert np.all(loss[:-1] <= 1e4 * first)


def test_the_iid_mode_writes_declared_columns_only():
    problem = make_problem("linreg-synthetic")
    rec = run_iid_staleness(problem, [0.5, 0.25, 0.25], updates=300, lr=0.05, seed=4)
    table = runs_table([rec.summary])
    s = rec.summary
    assert s["engine"] == "iid" and s["updates"] == 300
    assert json.loads(s["pdf"]) == [0.5, 0.25, 0.25]
    assert s["mean_tau"] == pytest.approx(rec.updates["tau"].mean())
    assert table.num_rows == 1 and "pdf" in table.column_names


def _iid_by_hand(problem, pdf, updates, lr, rule, options, seed, eval_every, batch=16):
    """The i.i.d.-staleness loop written out update by update in Python (the module
    docstring's recursion, with every iterate kept whole and the dense gradient kernel):
    final θ, η of each applied update, tables, evaluated losses."""
    from stalesgd.sim.batches import BatchStream
    from stalesgd.sim.iid import TAU_STREAM_KEY
    from stalesgd.sim.stepsizes import StepSizes

    from stalesgd.seeds import worker_seeds
    from stalesgd.stepsize import make_rule

    p = np.asarray(pdf, float)
    tau_max = p.size - 1
    step = StepSizes(make_rule(rule, workers=1, lr=lr, **options), tau_max, lr)
    stream = BatchStream(worker_seeds(seed, 1)[0], problem.dataset.n_train, batch)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        seed, spawn_key=(TAU_STREAM_KEY,))))
    tau = np.minimum(rng.choice(p.size, size=updates, p=p), np.arange(updates))
    iterates = [problem.init_params(seed)]
    grad, ws = np.zeros_like(iterates[0]), problem.workspace(batch)
    model, d = problem.model, problem.dataset
    etas, losses = [], [problem.evaluate(iterates[0])[0]]
    for k in range(updates):
        loss = model.grad_kernel(iterates[k - tau[k]], d.inputs("train"), d.y_train,
                                 stream.next(), grad, ws, model.dims)
        if not np.isfinite(loss):
            break
        etas.append(step.eta(int(tau[k]), 0))
        nxt = iterates[k] - etas[-1] * grad  # (element by element: two roundings each)
        iterates.append(nxt)
        if (k + 1) % eval_every == 0:
            losses.append(problem.evaluate(nxt)[0])
    return iterates[-1], np.array(etas), step.n_tables, losses


@pytest.mark.parametrize("lr,updates", [(0.02, 5000), (1e4, 5000)])
def test_the_iid_mode_equals_its_recursion_written_out_by_hand(lr, updates):
    """The compiled loop (chunks of updates, η of a chunk computed before it) gives the same
    bits as the loop written out per update, also when a minibatch loss overflows part-way
    through a chunk while an online rule refreshes its table (only tables from the samples
    fed before that update count)."""
    problem = make_problem("linreg-synthetic")
    pdf, options, eval_every = [0.2] * 5, {"refresh_every": 7}, 1000
    out = np.zeros(problem.model.n_params, problem.model.dtype)
    with np.errstate(all="ignore"):
        rec = run_iid_staleness(problem, pdf, updates=updates, lr=lr, stepsize="tail",
                                stepsize_options=options, seed=3, eval_every=eval_every,
                                final_params=out)
        theta, etas, tables, losses = _iid_by_hand(problem, pdf, updates, lr, "tail", options,
                                                   3, eval_every)
    assert np.array_equal(out, theta)
    assert np.array_equal(rec.updates["eta"], etas)
    assert rec.summary["stepsize_tables"] == tables
    assert np.array_equal(rec.evals["loss"][:len(losses)], losses)
    if lr > 1:  # (diverged mid-chunk, long before the first evaluation)
        assert rec.summary["diverged"] and 10 < etas.size < 200 and tables > 2
    else:
        assert not rec.summary["diverged"] and etas.size == updates


@pytest.mark.parametrize("batch", [16, 5000, 100_000])
def test_the_iid_mode_draws_a_bounded_number_of_minibatch_rows_at_once(monkeypatch, batch):
    """A compiled stretch draws its minibatches at once: at most CHUNK_ROWS rows (one
    minibatch when a batch is larger), so a large batch does not multiply memory by 4096."""
    from stalesgd.sim import iid
    from stalesgd.sim.batches import BatchStream

    taken = []
    take = BatchStream.take

    def recording(self, n):
        taken.append(int(n) * self._batch)
        return take(self, n)

    monkeypatch.setattr(BatchStream, "take", recording)
    problem = make_problem("linreg-synthetic", n_train=1000)
    run_iid_staleness(problem, [0.5, 0.5], updates=40, lr=1e-4, batch=batch, seed=1,
                      eval_every=10**6)
    assert sum(taken) == 40 * batch
    assert max(taken) == (batch if batch > iid.CHUNK_ROWS else
                          min(40, iid.CHUNK_ROWS // batch) * batch)


# ------------------------------------------------------------------ Ctrl-C


SIGINT_SCRIPT = """
import sys
from pathlib import Path
from stalesgd.sim import buffers
from stalesgd.sim.run import SimRun, validate
from stalesgd import engines
from stalesgd.app.cli import main

marker, fast = Path(sys.argv[1]), sys.argv[2] == "compiled"
handover = buffers.RowBuffer.handover

def handover_and_mark(self):  # the first rows left the simulation: it is running
    handover(self)
    marker.write_text("running")

buffers.RowBuffer.handover = handover_and_mark
engines.register_engine(
    "sim", lambda spec, progress, updates=None: SimRun(spec, progress, updates=updates,
                                                       fast=fast).run(), validate=validate)
sys.exit(main(["sim", "--problem", "logreg-synthetic", "--algorithm", "lock", "--workers", "4",
               "--cores", "3", "--compute", "exp:2ms", "--seconds", "1e30", "--timing-only",
               "--out", sys.argv[3], "--no-progress"]))
"""


@pytest.mark.parametrize("loop", ["compiled", "simpy"])
def test_ctrl_c_keeps_what_was_simulated(tmp_path, loop):
    """A real SIGINT in a run that would never end: exit 130, the record kept as interrupted,
    every simulated update on disk exactly once."""
    marker, out = tmp_path / "running", tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE + SIGINT_SCRIPT, str(marker),
                             loop, str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate(timeout=10)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    (folder,) = [p for p in Path(out).iterdir() if p.is_dir()]
    res = load_results(folder)
    run = res.runs.iloc[0]
    assert bool(run["interrupted"]) and run["stop_reason"] == "interrupted"
    assert run["event_loop"] == loop
    n = int(run["updates"])
    assert n > buffers.ROW_CHUNK  # at least one chunk had left the simulation
    k = np.sort(res.updates["k"].to_numpy())
    assert np.array_equal(k, np.arange(n))
    assert int(res.staleness["count"].sum()) == n
