"""Reports on a finished run beyond report.json: ``render_html`` writes one self-contained page
(funnel, drop reasons, signal histograms with thresholds, languages, dedup examples, run facts)."""

from refine.report.html import render_html

__all__ = ["render_html"]
