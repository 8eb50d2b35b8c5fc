"""Reports on a finished run beyond report.json: ``render_html`` writes one self-contained page
(funnel, drop reasons, signal histograms with thresholds, languages, dedup examples, run facts)."""

from refine.report.html import html_page, render_html

__all__ = ["html_page", "render_html"]
