"""tljax.bounds."""
