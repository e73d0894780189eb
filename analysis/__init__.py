"""Comparison of simulated and measured runs, theory checks and reports."""
