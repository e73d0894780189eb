"""Every column of the run record, declared once with its type and meaning (DESIGN §3).

A results folder holds five tables (:data:`TABLES`): ``runs`` (one row per run),
``updates`` (one row per logged update), ``evals`` (one row per evaluation), ``control``
(the m(t) trace of elastic runs) and ``staleness`` (the exact τ histogram of each run's
applied updates, kept even when only a sample of update rows is).  Their columns are
declared below; other tools read them by name.  The ``runs`` table takes no column that is
not declared here, except the values of swept experiment keys, which keep their dotted
names (``problem.options.hidden``).

pyarrow is imported on first use, not with this module: engines import the record types,
and a real run's peak memory (compiling its kernels) comes before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "COLUMNS",
    "Column",
    "RecordError",
    "TABLES",
    "arrow_schema",
    "declared",
    "is_swept_key",
]


class RecordError(ValueError):
    """A run record that does not fit the schema; the message names the column and the rule."""


@dataclass(frozen=True)
class Column:
    """One declared column: its name, Arrow type name, meaning, and whether every engine must
    give it (``required``) or it may be absent (null, or ``default`` in the row tables)."""

    name: str
    type: str
    doc: str
    required: bool = False
    default: Any = None


def _c(name: str, type_: str, doc: str, *, required: bool = False, default: Any = None
       ) -> Column:
    return Column(name, type_, doc, required, default)


_RUN_ID = _c("run_id", "string", "the run's id within its experiment (r0000, r0001, ...)",
             required=True)

UPDATES = (
    _RUN_ID,
    _c("k", "int64", "global update index (the version the update produced minus one); -1 "
       "for a dropped gradient", required=True),
    _c("worker", "int32", "the worker that computed the gradient", required=True),
    _c("t_read", "float64", "seconds since the start when the worker read θ (version t0)",
       required=True),
    _c("t_apply", "float64", "seconds since the start when the update was applied (or the "
       "gradient dropped)", required=True),
    _c("tau", "int64", "staleness τ = t1 − t0", required=True),
    _c("eta", "float64", "the step size η the update was applied with (0 for dropped)",
       required=True),
    _c("attempts", "int32", "publish tries (Leashed-SGD); 1 where there are none",
       default=1),
    _c("dropped", "bool", "the gradient was dropped after failed publishes", default=False),
    _c("t_pulled", "float64", "ray: seconds since the start when the worker had θ (the pull "
       "arrived); null for the other engines"),
    _c("t_pushed", "float64", "ray: seconds since the start when the worker sent its gradient "
       "(or its new θ); null for the other engines"),
)

EVALS = (
    _RUN_ID,
    _c("t", "float64", "seconds since the start of the evaluation", required=True),
    _c("k", "int64", "updates applied when the evaluated snapshot was taken", required=True),
    _c("loss", "float64", "loss on the evaluation split (NaN/inf: diverged)", required=True),
    _c("accuracy", "float64", "accuracy where it means something, else NaN",
       default=float("nan")),
    _c("active_workers", "int32", "workers active at the evaluation", required=True),
)

CONTROL = (
    _RUN_ID,
    _c("t", "float64", "from this time on (seconds since the start) ...", required=True),
    _c("k", "int64", "... and this update on,", required=True),
    _c("m", "int32", "m workers are active", required=True),
    _c("probing", "bool", "the phase probes a level (elastic controllers)", default=False),
    _c("rate", "float64", "progress rate of the phase that ended here; NaN if none",
       default=float("nan")),
    _c("loss", "float64", "the loss the controller saw; NaN if none", default=float("nan")),
    _c("t_set", "float64", "real engine: when the new m was published (seconds)",
       default=float("nan")),
)

STALENESS = (
    _RUN_ID,
    _c("tau", "int64", "a staleness value τ", required=True),
    _c("count", "int64", "how many applied updates of the run had it (exact, every update)",
       required=True),
)

RUNS = (
    # identity and the contract columns every engine fills (DESIGN §3)
    _RUN_ID,
    _c("engine", "string", "the engine that ran it (real, sim, ...)", required=True),
    _c("algorithm", "string", "the algorithm (stalesgd.algorithms)", required=True),
    _c("problem", "string", "MODEL-DATA", required=True),
    _c("workers", "int64", "worker threads (or simulated workers) M", required=True),
    _c("stepsize", "string", "the step-size rule", required=True),
    _c("lr", "float64", "the base step size η0", required=True),
    _c("batch", "int64", "minibatch size", required=True),
    _c("seed", "int64", "the run's seed", required=True),
    _c("updates", "int64", "applied updates (dropped gradients not counted)", required=True),
    _c("seconds", "float64", "length of the run (wall seconds, or simulated seconds for sim)",
       required=True),
    _c("updates_per_s", "float64", "updates / seconds", required=True),
    _c("target_loss", "float64", "the target loss; NaN without one", required=True),
    _c("time_to_target", "float64", "seconds to the first evaluation at or below the "
       "target; NaN if not reached", required=True),
    _c("updates_to_target", "int64", "updates at that evaluation; null if not reached",
       required=True),
    _c("peak_param_bytes", "int64", "peak bytes of parameter-sized buffers; null if not "
       "known", required=True),
    _c("peak_rss_bytes", "int64", "peak resident memory of the process; null if not "
       "measured", required=True),
    _c("converged", "bool", "reached the target (or, without one, ended finite)",
       required=True),
    _c("diverged", "bool", "an evaluated loss was NaN or infinite, or the run overflowed",
       required=True),
    _c("interrupted", "bool", "Ctrl-C (or a fault) ended it early", required=True),
    # outcome and record
    _c("final_loss", "float64", "the last evaluated loss"),
    _c("stop_reason", "string", "what ended it: updates, seconds, target, diverged, "
       "interrupted, error, stopped"),
    _c("error", "string", "the error that ended the run, if one did"),
    _c("mean_tau", "float64", "mean τ of the applied updates"),
    _c("dropped", "int64", "dropped gradients"),
    _c("updates_by_worker", "string", "asynchronous runs of m > 1: each worker's applied "
       "updates, comma-separated"),
    _c("mean_tau_by_worker", "string", "... and each worker's mean τ"),
    _c("zero_step_updates", "int64", "applied updates whose step size η was 0 (s(τ) = 0)"),
    _c("log_rows", "string", "which update rows were kept: all, none or every:N (the "
       "staleness table always counts every update)"),
    _c("logged_rows", "int64", "update rows kept in the updates table"),
    # the run's configuration as resolved
    _c("index", "int64", "position of the run in its experiment"),
    _c("dtype", "string", "parameter dtype (float32, float64)"),
    _c("sampling", "string", "how workers drew minibatches: replacement (rows uniformly with "
       "replacement) or epochs (a reshuffled permutation every epoch); null in older folders"),
    _c("data_file", "string", "the data set 'file': the absolute path of the file it read"),
    _c("data_sha256", "string", "the data set 'file': the SHA-256 of the file it read"),
    _c("persistence", "float64", "Leashed-SGD: publish retries before a drop (inf: never)"),
    _c("worker_seeds", "string", "the workers' minibatch seeds, comma-separated"),
    _c("slowdown", "string", "workers slowed down on purpose, WORKER=FACTOR comma-separated "
       "(stalesgd.slowdown); null: none"),
    _c("stepsize_tables", "int64", "step-size tables an online rule produced"),
    # Leashed-SGD
    _c("failed_publishes", "int64", "failed compare-and-swap publishes"),
    _c("failed_publishes_at_stop", "int64", "failed publishes of gradients still retrying "
       "when the run ended"),
    _c("tries_per_update", "float64", "publish attempts per applied update"),
    _c("pool_high_water", "int64", "most pool vectors in use at once (null: not modelled)"),
    _c("pool_high_water_bytes", "int64", "pool_high_water in bytes"),
    _c("pool_claim_waits", "int64", "real: claims of a pool vector that found none free on a "
       "full pass over the pool (momentary: the pool is sized so one is always free)"),
    # sparse problems
    _c("sparse", "bool", "updates wrote only the coordinates their gradient touched"),
    _c("coords_per_update", "float64", "sparse: mean coordinates an applied update wrote "
       "(sim: the number the timing model charges an update for)"),
    _c("collision_rate", "float64", "sparse: share of the coordinates updates wrote that an "
       "update with index >= the writer's read version had written first (see "
       "stalesgd.real.sparse_workers; sim: stalesgd.sim.collisions)"),
    # the machine the real engine ran on
    _c("core_round_trip_ns_start", "float64", "cache-line round trip between the run's two "
       "CPUs at its start (ns; real runs with m > 1)"),
    _c("core_round_trip_ns_end", "float64", "... and at its end"),
    _c("other_cpu_share", "float64", "real: share of the time of the CPUs the run could use "
       "that other processes took during it (Linux /proc/stat; NaN for runs shorter than 50 "
       "clock ticks; stalesgd.real.load)"),
    _c("steal_share", "float64", "real: share of the time of those CPUs that the hypervisor "
       "took (steal)"),
    _c("cpu_seconds", "float64", "CPU-seconds of the run (real: the process; sim: the active "
       "workers' cores)"),
    _c("worker_cpu_seconds", "float64", "real: the worker threads' own CPU-seconds"),
    _c("worker_cpu", "string", "real: CPU-seconds per worker, comma-separated"),
    _c("workers_applied", "int64", "real: workers that applied at least one update (with "
       "more workers than cores, those the scheduler let run)"),
    _c("record_waits", "int64", "real: times a worker waited for room in the update record "
       "(the monitor had not yet drained it)"),
    # elastic parallelism
    _c("controller", "string", "the elastic parallelism controller"),
    _c("mean_active", "float64", "time-averaged number of active workers"),
    _c("controller_changes", "int64", "changes of m the controller made"),
    # the distributed engine
    _c("cluster", "string", "ray: 'local' (a Ray instance started for the run) or the "
       "address of the cluster joined"),
    _c("shards", "int64", "ray, sim with topology ps: server actors θ was split over "
       "(hogwild), else 1"),
    _c("worker_nodes", "string", "ray: the node of each worker (IP/node id), comma-separated"),
    _c("server_nodes", "string", "ray: the node of each server shard, comma-separated"),
    _c("clock_offsets", "string", "ray: each worker's clock minus the driver's (seconds, "
       "estimated by a ping exchange at start), comma-separated"),
    _c("net_delay", "string", "ray, sim with topology ps: the added delay per message (a "
       "distribution such as "
       "exp:2ms); null: none"),
    _c("workers_lost", "int64", "ray: worker actors that died during the run"),
    # the simulator
    _c("cores", "int64", "simulated cores"),
    _c("timing_only", "bool", "sim: timing only, no numeric replay"),
    _c("topology", "string", "sim: 'shared' (threads sharing θ) or 'ps' (parameter servers)"),
    _c("latency", "float64", "sim, topology ps: one-way seconds per message"),
    _c("per_byte", "float64", "sim, topology ps: seconds per byte a message carries"),
    _c("server_time", "float64", "sim, topology ps: a server's seconds per message besides "
       "its work"),
    _c("network_jitter", "float64", "sim, topology ps: the coefficient of variation of the "
       "random factor on every message's time (a calibration's; else 0)"),
    _c("network_cores", "float64", "sim, topology ps: the cores of the one machine that "
       "workers, messages and servers share by processor sharing (0: none shared)"),
    _c("compute", "string", "sim: the gradient-time distribution"),
    _c("read", "string", "sim: the read (copy) time distribution"),
    _c("update", "string", "sim: the apply time distribution"),
    _c("time_slice", "string", "sim: the scheduler time slice"),
    _c("preemptions", "int64", "sim: workers descheduled at the end of a slice"),
    _c("lock_contended", "int64", "sim: lock acquisitions that had to wait"),
    _c("wall_seconds", "float64", "sim: the simulation's own run time"),
    _c("sim_updates_per_wall_s", "float64", "sim: simulated updates per wall second"),
    _c("event_loop", "string", "sim: which event loop ran (compiled or simpy)"),
    _c("replay_threads", "int64", "sim: the threads numeric replay could use (1: one core; "
       "absent for timing-only runs)"),
    _c("replay_parallel_batches", "int64", "sim: numeric replay's batches run on the "
       "parallel loop, when the automatic choice picked between it and one core"),
    _c("replay_one_core_batches", "int64", "sim: numeric replay's batches run on one core, "
       "when the automatic choice picked between it and the parallel loop"),
    _c("calibrated", "bool", "sim: timing from a calibration file"),
    _c("calibration", "string", "sim: the calibration file"),
    _c("calibration_match", "string", "sim: exact (this configuration was measured; 'exact "
       "configuration, measured on C cores, simulated on D' when the cores differ, a "
       "prediction), 'nearest (m=K)' (the same algorithm's measured K workers) or pooled"),
    _c("calibration_model", "string", "sim: empirical or parametric compute times"),
    _c("calibration_overrides", "string", "sim: timing settings given explicitly over the "
       "calibration"),
    _c("prediction", "bool", "sim: a configuration the calibration did not measure"),
    _c("calibration_scope", "string", "sim: 'm<=N' when the calibration was fitted only to "
       "runs of at most N workers and this run has more (an out-of-sample prediction; "
       "reports show it as engine sim[m<=N])"),
    # i.i.d.-staleness replay (stalesgd.sim.iid)
    _c("clock", "string", "iid: what 'seconds' counts (updates)"),
    _c("pdf", "string", "iid: the PDF(τ) the staleness was drawn from (JSON)"),
    _c("tau_max", "int64", "iid: largest τ drawn"),
)

#: table name -> its declared columns, in file order
COLUMNS: dict[str, tuple[Column, ...]] = {
    "runs": RUNS, "updates": UPDATES, "evals": EVALS, "control": CONTROL,
    "staleness": STALENESS,
}
#: the tables of a results folder, in the order a run's parts are written (runs last: the
#: commit mark of a finished run)
TABLES = ("updates", "evals", "control", "staleness", "runs")


def declared(table: str) -> dict[str, Column]:
    """The columns of ``table`` by name."""
    return {c.name: c for c in COLUMNS[table]}


def is_swept_key(name: str) -> bool:
    """A ``runs`` column that holds a swept experiment key's value (a dotted key path)."""
    return "." in name and all(part for part in name.split("."))


@cache
def arrow_schema(table: str) -> pa.Schema:
    """The pyarrow schema of ``table`` (pyarrow imported on first call)."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(),
             "float64": pa.float64(), "bool": pa.bool_()}
    return pa.schema([(c.name, types[c.type]) for c in COLUMNS[table]])
