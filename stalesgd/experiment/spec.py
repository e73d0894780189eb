"""The experiment's parts as frozen dataclasses, and the error every check raises.

:class:`Experiment` is a resolved experiment (defaults filled in), :class:`RunSpec` one run of
it (what an engine receives).  Their parts (:class:`ProblemSpec`, :class:`StopSpec`, …) mirror
the tables of an experiment file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from stalesgd.validation import OptionError

__all__ = [
    "DEFAULT_PS_COSTS", "DEFAULT_SHARDS", "DEFAULT_SIM_COMPUTE", "DEFAULT_TIME_SLICE",
    "PER_PARAM", "SAMPLING", "SPLITS", "TOPOLOGIES", "uses_servers",
    "AlgorithmSpec", "ControllerSpec", "DistSpec", "EvalSpec", "Experiment", "ExperimentError",
    "ProblemSpec", "RecordSpec", "RunSpec", "SimSpec", "StepsizeSpec", "StopSpec", "drop_none",
    "plain", "server_shards",
]

SPLITS = ("train", "test")
PER_PARAM = "per-param"


class ExperimentError(OptionError):
    """An invalid experiment: ``key`` (dotted path), offending ``value`` and what is
    ``allowed``; ``source`` (a file name, 'command line') prefixes the message."""

    def __init__(self, key: str, value: Any, allowed: str, problem: str = "is not allowed",
                 source: str | None = None) -> None:
        super().__init__(key, value, allowed, problem)
        self.source = source
        if source:
            self.args = (f"{source}: {self.args[0]}",)

    @classmethod
    def of(cls, error: OptionError, source: str | None = None) -> ExperimentError:
        """``error`` as an experiment error (keeping its ``source`` if it has one)."""
        if isinstance(error, ExperimentError) and (error.source or not source):
            return error
        return cls(error.key, error.value, error.allowed, error.problem, source)


def plain(value: Any) -> Any:
    """Tuples to lists, recursively, so that a spec compares and writes like its TOML."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def drop_none(value: Any) -> Any:
    """A nested dict without its None values (TOML has no null)."""
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    return value


#: how workers draw their minibatches (:mod:`stalesgd.real.sampling`), the default first:
#: rows uniformly with replacement, or a reshuffled permutation of the rows every epoch
SAMPLING = ("replacement", "epochs")


@dataclass(frozen=True)
class ProblemSpec:
    """The problem: ``name`` = MODEL-DATA, minibatch size, parameter dtype, problem options,
    and how each worker samples its minibatches (:data:`SAMPLING`)."""

    name: str = "logreg-synthetic"
    batch: int = 16
    dtype: str = "float64"
    options: dict[str, Any] = field(default_factory=dict)
    sampling: str = "replacement"

    @property
    def model(self) -> str:
        """The model part of the name (``logreg`` in ``logreg-synthetic``)."""
        return self.name.split("-", 1)[0]

    @property
    def data(self) -> str:
        """The data-set part of the name (``fashion-mnist`` in ``mlp-fashion-mnist``)."""
        return self.name.split("-", 1)[1]


@dataclass(frozen=True)
class AlgorithmSpec:
    """The synchronisation scheme and its parameters (``persistence`` is used by ``leashed``)."""

    name: str = "lock"
    persistence: int | float = math.inf
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepsizeSpec:
    """The step-size rule η(τ) = lr · s(τ) (DESIGN §5) and rule options."""

    rule: str = "constant"
    lr: float = 0.05
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StopSpec:
    """When a run stops: after ``updates``, after ``seconds``, or at ``target_loss``.

    At least one of ``updates`` and ``seconds`` is set.  With ``at_target = False`` the target
    is only recorded (time and updates to target), not used to stop.
    """

    updates: int | None = None
    seconds: float | None = None
    target_loss: float | None = None
    at_target: bool = True


@dataclass(frozen=True)
class EvalSpec:
    """Evaluation cadence (exactly one of ``every_seconds``/``every_updates`` once resolved),
    split and the number of rows evaluated."""

    every_seconds: float | None = None
    every_updates: int | None = None
    split: str = "test"
    max_rows: int = 2000


#: The simulator's gradient-time distribution and scheduler time slice when neither the
#: experiment nor a calibration file sets them.
DEFAULT_SIM_COMPUTE = "exp:2ms"
DEFAULT_TIME_SLICE = "4ms"
#: the simulator's topologies: threads sharing θ in memory, or workers and parameter servers
#: exchanging messages (the model of the distributed engine, ``sim/psmodel.py``)
TOPOLOGIES = ("shared", "ps")
#: topology ``ps``: one-way seconds per message, seconds per byte carried, seconds a server
#: spends per message besides its work, when neither the experiment nor a calibration says
#: (about what a local Ray instance on one machine costs)
DEFAULT_PS_COSTS = {"latency": "500us", "per_byte": "2ns", "server_time": "100us"}


@dataclass(frozen=True)
class SimSpec:
    """Simulator settings: cores (None = one per worker), timing distributions, time slice.

    ``compute`` and ``time_slice`` are None when not given: the simulator then takes them from
    the calibration file, if any, else :data:`DEFAULT_SIM_COMPUTE` / :data:`DEFAULT_TIME_SLICE`
    (so a value given explicitly, even equal to the default, always wins over a calibration).
    """

    cores: int | None = None
    compute: str | None = None
    read: str = PER_PARAM
    update: str = PER_PARAM
    time_slice: str | None = None
    timing_only: bool = False
    calibration: str | None = None
    #: with ``calibration = "auto"``: fit only to the real runs of at most this many workers
    #: (the simulations of more workers are then out-of-sample predictions)
    calibration_max_workers: int | None = None
    #: ``shared`` (threads, shared θ) or ``ps`` (parameter servers; ``[dist]`` then sets the
    #: shards and the added message delay, as for the distributed engine)
    topology: str = "shared"
    #: topology ``ps``: one-way time per message, time per byte carried, a server's time per
    #: message besides its work (durations; None: the calibration's, else
    #: :data:`DEFAULT_PS_COSTS`)
    latency: str | None = None
    per_byte: str | None = None
    server_time: str | None = None


def uses_servers(engine: str, sim: SimSpec) -> bool:
    """Whether a run of ``engine`` with simulator settings ``sim`` has parameter servers, so
    that ``[dist]``'s shards and message delay apply: engine ``ray``, or ``sim`` with
    topology ``ps``."""
    return engine == "ray" or (engine == "sim" and sim.topology == "ps")


#: hogwild's parameter shards on the distributed engine when the experiment does not say
DEFAULT_SHARDS = 2


@dataclass(frozen=True)
class DistSpec:
    """Distributed-engine settings (engine ``ray``): the cluster to join (``None``: start a
    local instance for the run and stop it after; ``"auto"`` or ``"HOST:PORT"``: a running
    cluster), the number of server shards θ is split over for ``hogwild``, and an added
    delay per message (``net_delay``, :mod:`stalesgd.real.ps.link`)."""

    address: str | None = None
    shards: int = DEFAULT_SHARDS
    #: an added delay per message, a distribution such as ``"exp:2ms"`` (None: none)
    net_delay: str | None = None


def server_shards(spec: RunSpec, n_params: int) -> int:
    """Parameter servers of a run on servers (engine ``ray``, or simulated with topology
    ``ps``): ``hogwild`` splits θ over ``[dist] shards`` of them, at most one per parameter;
    the other algorithms have one."""
    return min(int(spec.dist.shards), int(n_params)) if spec.algorithm.name == "hogwild" else 1


@dataclass(frozen=True)
class ControllerSpec:
    """Elastic parallelism control: the controller ``name`` (:mod:`stalesgd.elastic`) and its
    ``options``; ``static`` (all workers, always) by default."""

    name: str = "static"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordSpec:
    """What a run's record keeps: ``rows`` of the per-update table (``all``, ``none`` or
    ``every:N``; the ``staleness`` table counts every update's τ whatever is kept)."""

    rows: str = "all"


@dataclass(frozen=True)
class Experiment:
    """A resolved experiment: the base run, the seeds and the sweep (dotted key -> values)."""

    name: str
    engine: str = "real"
    workers: int = 1
    seeds: tuple[int, ...] = (0,)
    problem: ProblemSpec = field(default_factory=ProblemSpec)
    algorithm: AlgorithmSpec = field(default_factory=AlgorithmSpec)
    stepsize: StepsizeSpec = field(default_factory=StepsizeSpec)
    stop: StopSpec = field(default_factory=lambda: StopSpec(updates=20000))
    eval: EvalSpec = field(default_factory=lambda: EvalSpec(every_updates=400))
    sim: SimSpec = field(default_factory=SimSpec)
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    record: RecordSpec = field(default_factory=RecordSpec)
    dist: DistSpec = field(default_factory=DistSpec)
    #: workers that compute slower on purpose (:mod:`stalesgd.slowdown`), e.g. ``"1=3"``
    slowdown: str | None = None
    sweep: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    exclude: tuple[dict[str, Any], ...] = ()
    """Sweep points left out: each entry maps swept keys to one of their values; a point that
    matches every pair of an entry is not run (e.g. ``{engine = "real", workers = 64}``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the TOML layout); None values are left out."""
        return drop_none(plain(asdict(self)))


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs: what an engine receives.

    ``run_id`` is unique within the experiment (``r0000``, ``r0001``, …), ``index`` its position,
    ``point`` the values of the swept keys for this run (dotted key -> value).
    """

    experiment: str
    run_id: str
    index: int
    engine: str
    workers: int
    seed: int
    problem: ProblemSpec
    algorithm: AlgorithmSpec
    stepsize: StepsizeSpec
    stop: StopSpec
    eval: EvalSpec
    sim: SimSpec
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    record: RecordSpec = field(default_factory=RecordSpec)
    dist: DistSpec = field(default_factory=DistSpec)
    #: workers that compute slower on purpose (:mod:`stalesgd.slowdown`), e.g. ``"1=3"``
    slowdown: str | None = None
    point: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the run (None values left out)."""
        return drop_none(plain(asdict(self)))
