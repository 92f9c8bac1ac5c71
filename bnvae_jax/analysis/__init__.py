"""Analyses of trained runs: the synthetic lagging study and training dynamics."""
