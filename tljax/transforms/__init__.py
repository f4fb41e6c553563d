"""tljax.transforms."""
