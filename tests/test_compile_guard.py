"""Ctrl-C during a Numba compilation takes effect once it is over (stalesgd.compile_guard)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stalesgd.compile_guard import NOTICE

# Compiles a fresh function (a second or two) while a thread sends SIGINT to the process 20
# times, 2 ms apart, once the guard holds it (``ignored``: at once; the guard never holds an
# ignored Ctrl-C); prints what happened.  ``handler``: an engine-like handler that counts.
# (Sending only while the guard holds keeps a later Ctrl-C from landing in the script's own
# except clause.)
_SCRIPT = r"""
import os, signal, sys, threading, time
import numpy as np
import stalesgd.jitcache  # (installs the guard)
from numba import njit

src = "def f(a):\n    s = 0.0\n" + "".join(
    f"    for i in range(a.shape[0]):\n        s += a[i] * {k}.5 + np.sin(a[i] + {k})\n"
    for k in range(60)) + "    return s\n"
ns = {"np": np}
exec(src, ns)
f = njit(ns["f"])
counted = []
handler = signal.default_int_handler
if sys.argv[1] == "handler":
    handler = lambda signum, frame: counted.append(signum)
    signal.signal(signal.SIGINT, handler)
elif sys.argv[1] == "ignored":  # (as in a job started in the background)
    handler = signal.SIG_IGN
    counted.append(None)
    signal.signal(signal.SIGINT, handler)
stop = threading.Event()

def holding():
    held = signal.getsignal(signal.SIGINT)
    return type(getattr(held, "__self__", None)).__name__ == "_HoldCtrlC"

def pester():
    sent = 0
    while not stop.is_set() and sent < 20:
        if sys.argv[1] == "ignored" or holding():
            os.kill(os.getpid(), signal.SIGINT)
            sent += 1
        time.sleep(0.002)

threading.Thread(target=pester, daemon=True).start()
try:
    value = f(np.ones(3))
    stop.set()
    time.sleep(0.05)
    print("returned", value, len(counted) > 0, signal.getsignal(signal.SIGINT) is handler)
except KeyboardInterrupt:
    stop.set()
    print("interrupted", len(f.overloads), f(np.ones(3)))
"""


@pytest.mark.parametrize("mode", ["default", "handler", "ignored"])
def test_ctrl_c_during_a_compilation_is_delivered_once_it_is_over(mode):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    words = out.stdout.split()
    if mode == "default":  # KeyboardInterrupt, after the function was compiled (it works)
        assert words[:2] == ["interrupted", "1"]
    else:  # the engine's handler was called after the compilation, and is in place again
        # (ignored: nothing happens, and it is still ignored)
        assert words[0] == "returned" and words[2:] == ["True", "True"]
    assert float(words[-1 if mode == "default" else 1]) == pytest.approx(5404.903586050889)
    # said once, however many times Ctrl-C came (not when Ctrl-C is ignored anyway)
    assert out.stderr.count(NOTICE) == (0 if mode == "ignored" else 1)
    assert "Exception ignored" not in out.stderr
