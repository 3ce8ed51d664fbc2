"""Core-set baseline (placeholder module: filled in by the baselines work)."""
