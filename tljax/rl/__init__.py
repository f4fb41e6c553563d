"""tljax.rl."""
