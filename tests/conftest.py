"""Test-wide settings, set once: float64 available, CPU only, bnmfit's XLA settings, a
persistent compilation cache; and the one real workflow run shared by the test modules that
inspect it."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from bnmfit import xla_defaults  # noqa: E402

# bnmfit's XLA settings, before JAX starts: the tests run what the workflow's scripts run
xla_defaults.apply()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
# JAX's persistent compilation cache: $JAX_COMPILATION_CACHE_DIR (.ci/run sets one), else one
# under .pytest_cache, so that the edit-test loop's next run reuses what this one compiled
# (entries are keyed by the compiled program: a changed program compiles anew)
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update(
        "jax_compilation_cache_dir", str(Path(__file__).parents[1] / ".pytest_cache" / "jax")
    )
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def jax_cache(tmp_path_factory) -> Path:
    """JAX's persistent compilation cache of this session's workflow runs (their
    ``compute.compilation_cache``): $JAX_COMPILATION_CACHE_DIR (.ci/run sets one), else a
    session folder. Later runs reuse what the first one compiled, which changes no number
    (a cached executable is the one that would be compiled)."""
    shared = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return Path(shared) if shared else tmp_path_factory.mktemp("jax_cache")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory, jax_cache):
    """The tiny config of tests/data run by snakemake once per session (minutes): shared by
    test_workflow.py, test_robustness.py and test_slurm.py (the local run the SLURM run must
    equal). Tests that change results/ regenerate it."""
    from tests.test_workflow import run_workflow

    return run_workflow(tmp_path_factory.mktemp("workflow"), jax_cache)
