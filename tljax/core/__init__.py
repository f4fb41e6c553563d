"""tljax.core."""
