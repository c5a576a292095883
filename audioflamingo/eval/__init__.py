"""Evaluation: metrics (pure functions), tasks as data, the runner, baselines and reports."""
