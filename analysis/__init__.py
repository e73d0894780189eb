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
