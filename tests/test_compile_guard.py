"""Ctrl-C during a Numba compilation takes effect once it is over (stalesgd.compile_guard)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from stalesgd.compile_guard import NOTICE

# Compiles a function whose typing sends SIGINT to the process five times (from the main
# thread, in the middle of the compilation: deterministic, whatever the load), then prints
# what happened.  ``handler``: an engine-like handler that counts; ``ignored``: as in a job
# started in the background.
_SCRIPT = r"""
import os, signal, sys
import numpy as np
import stalesgd.jitcache  # (installs the guard)
from numba import njit
from numba.extending import overload

def poke():
    pass

@overload(poke)
def _poke():
    for _ in range(5):
        os.kill(os.getpid(), signal.SIGINT)
    return lambda: None

@njit
def f(a):
    poke()
    s = 0.0
    for i in range(a.shape[0]):
        s += np.sin(a[i]) + 2.5 * a[i]
    return s

counted = []
handler = signal.default_int_handler
# (a process started in the background by a non-interactive shell, as CI may be, inherits
# an ignored SIGINT, and Python then installs no handler of its own)
signal.signal(signal.SIGINT, handler)
if sys.argv[1] == "handler":
    handler = lambda signum, frame: counted.append(signum)
    signal.signal(signal.SIGINT, handler)
elif sys.argv[1] == "ignored":
    handler = signal.SIG_IGN
    counted.append(None)
    signal.signal(signal.SIGINT, handler)
try:
    value = f(np.ones(3))
    print("returned", value, len(counted), signal.getsignal(signal.SIGINT) is handler)
except KeyboardInterrupt:
    print("interrupted", len(f.overloads), f(np.ones(3)))
"""


@pytest.mark.parametrize("mode", ["default", "handler", "ignored"])
def test_ctrl_c_during_a_compilation_is_delivered_once_it_is_over(mode):
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    words = out.stdout.split()
    want = 3 * (np.sin(1.0) + 2.5)
    if mode == "default":  # KeyboardInterrupt, after the function was compiled (it works)
        assert words[:2] == ["interrupted", "1"]
        assert float(words[2]) == pytest.approx(want)
    else:  # the engine's handler was called once after the compilation and is in place
        # again (ignored: nothing happened, and Ctrl-C is still ignored)
        assert words[0] == "returned" and words[2:] == ["1", "True"]
        assert float(words[1]) == pytest.approx(want)
    # said once, however many times Ctrl-C came (not when Ctrl-C is ignored anyway)
    assert out.stderr.count(NOTICE) == (0 if mode == "ignored" else 1)
    assert "Exception ignored" not in out.stderr
