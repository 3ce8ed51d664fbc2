"""MC-dropout uncertainty baselines (placeholder module: filled in by the baselines work)."""
