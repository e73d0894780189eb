"""Ctrl-C while Numba compiles takes effect once the compilation is over.

While llvmlite emits machine code it calls back into Python; a ``KeyboardInterrupt`` raised
in that callback is swallowed ("Exception ignored on calling ctypes callback function") and
leaves the library being built without code, so the next step of the compilation fails with
a ``RuntimeError`` traceback instead of the clean stop a user expects (seen on a cold cache:
Ctrl-C a few seconds into ``stalesgd real`` gave such a traceback and exit 1 in two tries of
two).  So a listener on Numba's compiler lock holds SIGINT back from the moment the main
thread enters a compilation until it leaves the outermost one, then calls the handler that
was in place before (the default one: ``KeyboardInterrupt`` is raised there; an engine's own
handler stops its run).  A compilation takes at most a few seconds; the first Ctrl-C
held back says so on standard error.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from numba.core import event

__all__ = ["deliver", "install"]

#: what a held-back Ctrl-C prints (once per compilation)
NOTICE = "stalesgd: Ctrl-C: stopping once the compilation under way is done"


class _HoldCtrlC(event.Listener):
    """Holds SIGINT back while the main thread holds Numba's compiler lock (see the module
    docstring)."""

    def __init__(self) -> None:
        self.depth = 0
        self.caught = 0
        self.previous: Any = None
        self.holding = False

    def _hold(self, signum: int, frame: Any) -> None:
        self.caught += 1
        if self.caught == 1:
            print(NOTICE, file=sys.stderr, flush=True)

    def on_start(self, ev: event.Event) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self.depth += 1
        if self.depth == 1:
            self.caught = 0
            previous = signal.getsignal(signal.SIGINT)
            # (None: a handler not set from Python, which could not be put back; SIG_IGN:
            # Ctrl-C is ignored anyway, as in a job started in the background)
            self.holding = previous is not None and previous != signal.SIG_IGN
            if self.holding:
                self.previous = signal.signal(signal.SIGINT, self._hold)

    def on_end(self, ev: event.Event) -> None:
        if threading.current_thread() is not threading.main_thread() or self.depth == 0:
            return
        self.depth -= 1
        if self.depth == 0 and self.holding:
            self.holding = False
            previous = self.previous
            signal.signal(signal.SIGINT, previous)
            if self.caught:
                deliver(previous)


def deliver(previous: Any) -> None:
    """Hand a Ctrl-C that was held back to ``previous`` (a SIGINT handler as
    ``signal.signal`` returns it), here and now: call it (Python's default one raises
    ``KeyboardInterrupt``), or take the default action."""
    if callable(previous):
        previous(signal.SIGINT, None)
    elif previous == signal.SIG_DFL:
        signal.raise_signal(signal.SIGINT)


_listener: list[_HoldCtrlC] = []


def install() -> None:
    """Hold Ctrl-C back during Numba compilations in this process (once; later calls do
    nothing)."""
    if not _listener:
        _listener.append(_HoldCtrlC())
        event.register("numba:compiler_lock", _listener[0])
