"""Comparison of simulated and measured runs, theory checks and reports.

The analysis layer reads results folders only; nothing in the engines or the core depends on
it.  Its modules, by job:

* reading: :mod:`.load` (results folders into one set of tables, keyed by configuration);
* computing: :mod:`.tables` (:func:`analyse`: everything a report shows),
  :mod:`.staleness_report` (PDF(τ) summaries, fitted laws, distances between engines),
  :mod:`.speedup` (throughput, time to target, speedup), :mod:`.headline`;
* theory: :mod:`.theory` (exact recursion for least squares under i.i.d. staleness),
  :mod:`.bounds` (published convergence bounds as envelopes), :mod:`.theory_report`;
* writing: :mod:`.report` (Markdown and self-contained HTML), :mod:`.figures` (every figure,
  drawn by the topic modules ``*_figures`` with the helpers of :mod:`.plotting`);
* calibration: :mod:`.calibrate` (fits the simulator's timing model to real runs; the file
  format is :mod:`stalesgd.calibration`).
"""

from .bounds import EnvelopeCheck, check_envelope, lstsq_constants
from .figures import make_figures
from .load import AnalysisError, Loaded, config_key, config_slug, load_folders
from .plotting import FigureFile
from .report import ReportFiles, comparison_text, write_report
from .speedup import nonconvergence, speedup_table
from .staleness_report import StalenessTables, engine_distances, staleness_tables
from .tables import Analysis, analyse
from .theory import TheoryCurve, expected_curve, expected_loss, expected_suboptimality

__all__ = [
    "Analysis",
    "AnalysisError",
    "EnvelopeCheck",
    "FigureFile",
    "Loaded",
    "ReportFiles",
    "StalenessTables",
    "TheoryCurve",
    "analyse",
    "check_envelope",
    "comparison_text",
    "config_key",
    "config_slug",
    "engine_distances",
    "expected_curve",
    "expected_loss",
    "expected_suboptimality",
    "load_folders",
    "lstsq_constants",
    "make_figures",
    "nonconvergence",
    "speedup_table",
    "staleness_tables",
    "write_report",
]
