"""Test-wide settings, set once: float64 available, CPU only, bnmfit's XLA settings; and the one
real workflow run shared by the test modules that inspect it."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

import bnmfit  # noqa: E402,F401  (its XLA settings, before JAX starts: the tests run as users do)

jax.config.update("jax_enable_x64", True)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """The tiny config of tests/data run by snakemake once per session (minutes): shared by
    test_workflow.py and test_robustness.py. Tests that change results/ regenerate it."""
    from tests.test_workflow import run_workflow

    return run_workflow(tmp_path_factory.mktemp("workflow"))
