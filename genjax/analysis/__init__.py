"""Mode analysis: change points, regimes, hops, universality, attribution, checkpoint advice."""

from genjax.analysis.analyze import AnalysisOptions, analyze
from genjax.analysis.changepoints import change_points
from genjax.analysis.regimes import find_hops, regimes_from_items, regimes_from_window
from genjax.analysis.report import analyze_workdir, write_report

__all__ = ["AnalysisOptions", "analyze", "analyze_workdir", "change_points", "find_hops",
           "regimes_from_items", "regimes_from_window", "write_report"]
