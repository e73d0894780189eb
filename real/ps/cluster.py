"""Ray for the distributed engine: whether it is installed, joining or starting a cluster,
and the clocks of the processes a run spans.

A run with no address starts a local Ray instance on this machine the first time it is
needed and keeps it for the other runs of the same command (starting one takes seconds);
it is shut down when the process exits.  ``auto`` or ``HOST:PORT`` joins a running cluster
(``ray start --head`` on one machine, ``ray start --address=…`` on the others) and leaves
it running.
"""

from __future__ import annotations

import atexit
import logging
import signal
import socket
import threading
import time
from importlib.util import find_spec
from typing import Any

from stalesgd.engines import EngineNotAvailable

__all__ = ["INSTALL_HINT", "ConnectionFailed", "check_address", "clock_offset", "connect",
           "import_ray", "node_name", "ray_installed"]

INSTALL_HINT = "pip install 'stalesgd[ray]'"
#: how long joining a cluster may take before the run is given up
CONNECT_SECONDS = 30.0
#: ping exchanges per process for its clock offset (the one with the shortest round trip
#: counts)
PINGS = 7

_session: dict[str, Any] = {"address": None, "started": False, "label": ""}


class ConnectionFailed(EngineNotAvailable):
    """The cluster named by the address cannot be reached."""


def ray_installed() -> bool:
    """Whether Ray can be imported."""
    return find_spec("ray") is not None


def import_ray() -> Any:
    """The ``ray`` module, or :class:`EngineNotAvailable` saying how to install it."""
    if not ray_installed():
        raise EngineNotAvailable(f"the distributed engine (ray) needs Ray, which is not "
                                 f"installed; install it with: {INSTALL_HINT}")
    import ray

    return ray


def check_address(address: str) -> None:
    """Raise :class:`ConnectionFailed` unless HOST:PORT accepts a connection."""
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ConnectionFailed(f"--address {address!r} is not allowed; use 'auto' or "
                               "HOST:PORT of a running Ray cluster") from None
    try:
        with socket.create_connection((host or "127.0.0.1", number), timeout=5.0):
            pass
    except OSError as exc:
        raise ConnectionFailed(f"no Ray cluster answers at {address} ({exc.strerror or exc}); "
                               "start one with `ray start --head`, or leave out --address to "
                               "run on a local instance") from None


def connect(address: str | None) -> str:
    """Join the cluster at ``address`` (None: a local instance, started now if this process
    has none) and return how the run ran: ``local``, ``attached`` (Ray was already running
    in this process, e.g. a test cluster) or the address."""
    ray = import_ray()
    if ray.is_initialized():
        if _session["started"] and _session["address"] != address:
            ray.shutdown()
            _session.update(started=False, label="")
        else:
            return _session["label"] or "attached"
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False,
                                  logging_level=logging.ERROR, configure_logging=True)
    if address is None:
        _start_local(ray, kwargs)
        label = "local"
    else:
        if address != "auto":
            check_address(address)
        t = time.monotonic()
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConnectionFailed(f"cannot join the Ray cluster at {address!r} "
                                   f"({time.monotonic() - t:.0f} s): {exc}") from None
        label = address
    _session.update(address=address, started=True, label=label)
    return label


def _start_local(ray: Any, kwargs: dict[str, Any]) -> None:
    """Start a local Ray instance of our own (``address="local"``: a bare ``ray.init()``
    would join the cluster ``RAY_ADDRESS`` names or the last one ``ray start`` started on
    this machine, and leave it running); Ctrl-C while it starts takes effect once it has started
    (then it is stopped at once): an interrupted start leaves Ray's helper processes
    running on their own for a minute."""
    if threading.current_thread() is not threading.main_thread():
        ray.init(address="local", **kwargs)
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        ray.init(address="local", **kwargs)
    except BaseException:
        _shutdown_quietly(ray)
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        _shutdown_quietly(ray)
        raise KeyboardInterrupt


def _shutdown_quietly(ray: Any) -> None:
    """Stop a local Ray instance that did not finish starting (its helper processes too)."""
    try:
        ray.shutdown()
    except Exception:  # noqa: BLE001 - nothing more can be done on the way out
        pass


@atexit.register
def _shutdown() -> None:
    if _session["started"]:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        _session.update(started=False, label="")


def node_name() -> str:
    """The node the calling Ray process runs on: ``IP/ID`` (its address and the first 8
    characters of Ray's node id, which tell apart nodes that share an address)."""
    import ray

    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"


def clock_offset(actor: Any) -> float:
    """``actor``'s monotonic clock minus this process's (seconds), from the ping with the
    shortest round trip (the remote reading is taken to be at its midpoint)."""
    import ray

    best_rtt, offset = float("inf"), 0.0
    for _ in range(PINGS):
        before = time.monotonic()
        remote = ray.get(actor.clock.remote())
        after = time.monotonic()
        if after - before < best_rtt:
            best_rtt, offset = after - before, remote - (before + after) / 2
    return offset
