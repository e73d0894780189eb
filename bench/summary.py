"""Print one table of benchmark ratios from a pytest-benchmark JSON file.

Usage: ``python bench/summary.py results/bench.json``

Reads each benchmark's ``extra_info`` (keys used by every bench file here):
``updates_per_s``, ``gflops``, ``gemm_gflops`` (single-core GEMM of the same
precision, same run) and ``numpy_updates_per_s`` (a plain NumPy reference),
and prints name, median seconds per timed call, updates/s, GFLOP/s,
GFLOP/s ÷ GEMM GFLOP/s, updates/s ÷ NumPy updates/s and the ratios of
:data:`RATIO_KEYS` a benchmark measured.  Missing values print as ``-``.
When ``updates_per_s`` is absent but ``updates_per_call`` is given, updates/s
is derived from the median time; benchmarks that are not about updates (fits,
memory) show only their median time.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

#: Ratios measured inside one benchmark (same run, same load), shown in the last column.
RATIO_KEYS = ("scaling_2v1", "scaling_2v1_min", "scaling_2v1_max", "scaling_2v1_near",
              "scaling_2v1_far", "packed_vs_dense",
              "engine_vs_bare_1w", "tau_p99_over_mean", "failed_per_update_2w",
              "vs_cpp_reference_791mb", "sim_vs_bare_simpy", "replay_overhead",
              "replay_parallel_vs_serial",
              "stalesgd_vs_torch_updates_per_s", "stalesgd_vs_torch_time_to_target",
              "rss_long_over_short")


def _num(info: dict[str, Any], key: str) -> float | None:
    v = info.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per benchmark: name and the derived rates and ratios (None where unknown)."""
    out = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {}) or {}
        median = _num(b.get("stats") or {}, "median")
        ups = _num(info, "updates_per_s")
        per_call = _num(info, "updates_per_call")
        if ups is None and per_call is not None and median:
            ups = per_call / median
        gflops = _num(info, "gflops")
        gemm = _num(info, "gemm_gflops")
        ref = _num(info, "numpy_updates_per_s")
        ratios = [f"{key}={info[key]:.3g}" for key in RATIO_KEYS if _num(info, key) is not None]
        out.append(
            {
                "ratios": ", ".join(ratios) or "-",
                "name": b.get("fullname") or b.get("name", "?"),
                "median_s": median,
                "updates_per_s": ups,
                "gflops": gflops,
                "gemm_gflops": gemm,
                "vs_gemm": gflops / gemm if gflops is not None and gemm else None,
                "numpy_updates_per_s": ref,
                "vs_numpy": ups / ref if ups is not None and ref else None,
            }
        )
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(table: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table."""
    head = ("benchmark", "median s", "updates/s", "GFLOP/s", "GEMM GFLOP/s", "/GEMM",
            "NumPy upd/s", "/NumPy", "ratios")
    body = []
    for r in table:
        vs_gemm, vs_numpy = r["vs_gemm"], r["vs_numpy"]
        body.append((
            r["name"].split("::")[-1],
            _fmt(r["median_s"], ".4g"),
            _fmt(r["updates_per_s"], ",.0f"),
            _fmt(r["gflops"], ".1f"),
            _fmt(r["gemm_gflops"], ".1f"),
            "-" if vs_gemm is None else f"{100 * vs_gemm:.0f}%",
            _fmt(r["numpy_updates_per_s"], ",.0f"),
            "-" if vs_numpy is None else f"{vs_numpy:.2f}x",
            r["ratios"],
        ))
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *map(line, body)])


def main(argv: list[str] | None = None) -> int:
    """Entry point: print the table for the JSON file named on the command line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python bench/summary.py BENCH.json", file=sys.stderr)
        return 2
    path = Path(args[0])
    if not path.is_file():
        print(f"no benchmark results at {path}", file=sys.stderr)
        return 1
    data = json.loads(path.read_text())
    table = rows(data)
    if not table:
        print(f"{path} holds no benchmarks")
        return 0
    print(format_table(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
