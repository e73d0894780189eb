"""Comparison of simulated and measured runs, theory checks and reports."""

from .figures import FigureFile, make_figures
from .load import AnalysisError, Loaded, config_key, load_folders
from .report import Analysis, ReportFiles, analyse, comparison_text, write_report
from .speedup import nonconvergence, speedup_table
from .staleness_report import StalenessTables, engine_distances, staleness_tables

__all__ = [
    "Analysis",
    "AnalysisError",
    "FigureFile",
    "Loaded",
    "ReportFiles",
    "StalenessTables",
    "analyse",
    "comparison_text",
    "config_key",
    "engine_distances",
    "load_folders",
    "make_figures",
    "nonconvergence",
    "speedup_table",
    "staleness_tables",
    "write_report",
]

# appended (issue 6, theory): exact i.i.d.-staleness recursion and published bounds
from .bounds import EnvelopeCheck, check_envelope, lstsq_constants  # noqa: E402
from .theory import TheoryCurve, expected_curve, expected_loss, expected_suboptimality  # noqa: E402

__all__ += ["EnvelopeCheck", "TheoryCurve", "check_envelope", "expected_curve", "expected_loss",
            "expected_suboptimality", "lstsq_constants"]
