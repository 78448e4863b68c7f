"""`subnet report`: report.md + PNG figures from the metrics.json of extractions and baselines.

runs.py reads the runs, stats.py computes what the report states, plots.py draws the figures,
document.py writes report.md.
"""
from .document import write_report
from .runs import load_runs

__all__ = ["load_runs", "write_report"]
