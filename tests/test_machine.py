"""Machine facts recorded with every run."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from stalesgd.machine import machine_info, peak_rss_bytes


def test_peak_rss_is_the_process_own_not_its_parents():
    """A child started from a large parent reports its own peak (ru_maxrss would not)."""
    ballast = np.ones(400 * 2**20 // 8)  # 400 MB, touched: in this process's RSS
    assert peak_rss_bytes() >= ballast.nbytes
    code = "from stalesgd.machine import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout)
    assert 10 * 2**20 < child < 300 * 2**20
    del ballast


def test_machine_info_names_cpu_cores_and_versions():
    info = machine_info()
    assert info["usable_cores"] >= 1
    assert "numba" in str(info) and "numpy" in str(info)
