"""Test-wide settings, set once: float64 available, CPU only, deterministic XLA."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
