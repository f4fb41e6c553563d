"""tljax.diffusion."""
