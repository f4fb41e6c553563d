"""tljax.objectives."""
