"""tljax.interpret."""
