"""tljax.io."""
