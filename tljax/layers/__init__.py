"""tljax.layers."""
