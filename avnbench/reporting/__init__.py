"""Stage 4 of the data path: results out of the runner and into MLflow, leaderboards and plots.

``tracking`` (the MLflow layout of DESIGN.md), ``leaderboard`` (boards built from MLflow only)
and ``plots`` (figures logged as artifacts).
"""
