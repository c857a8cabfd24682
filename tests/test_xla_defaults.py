"""bnmfit's XLA settings: importing bnmfit changes nothing; a script's command (or an explicit
``xla_defaults.apply()``) adds them to XLA_FLAGS before JAX starts, unless the user chose
otherwise, and they change results by float rounding at most."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bnmfit import xla_defaults

ALL = " ".join(f"--{k}={v}" for k, v in xla_defaults.FLAGS.items())
WIDTH = f"--xla_cpu_prefer_vector_width={xla_defaults.FLAGS['xla_cpu_prefer_vector_width']}"


@pytest.mark.parametrize(
    ("env", "added", "flags"),
    [
        ({}, True, ALL),
        (
            {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
            True,
            f"--xla_force_host_platform_device_count=2 {ALL}",
        ),
        # a flag the user set is theirs; the others are still added
        (
            {"XLA_FLAGS": "--xla_backend_extra_options=x=1"},
            True,
            f"--xla_backend_extra_options=x=1 {WIDTH}",
        ),
        (
            {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256 --xla_backend_extra_options=x=1"},
            False,
            "--xla_cpu_prefer_vector_width=256 --xla_backend_extra_options=x=1",
        ),
        ({xla_defaults.OPT_OUT: "0"}, False, None),
    ],
)
def test_apply_adds_each_flag_unless_the_user_chose(env, added, flags):
    assert xla_defaults.apply(env) is added
    assert env.get("XLA_FLAGS") == flags


#: a child process, as a script of scripts/ runs: import every module of bnmfit (the
#: environment, JAX's settings and its backend must stay untouched), then run a command whose
#: function records XLA_FLAGS and whether JAX had started before it simulates a small
#: network and its gradient
CHILD = """
import importlib, json, os, pkgutil, sys
before = dict(os.environ)
import jax
settings = dict(jax.config.values)
import bnmfit
for m in pkgutil.walk_packages(bnmfit.__path__, "bnmfit."):
    importlib.import_module(m.name)
from jax._src.xla_bridge import backends_are_initialized
imported = {"environ_unchanged": dict(os.environ) == before,
            "settings_unchanged": dict(jax.config.values) == settings,
            "jax_started": backends_are_initialized()}
from bnmfit import cli

@cli.command()
def main():
    seen = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "jax_started": backends_are_initialized()}
    import jax.numpy as jnp
    import numpy as np
    from bnmfit import SimSpec, simulate
    from bnmfit.models import get_model
    jax.config.update("jax_enable_x64", True)
    w = np.random.default_rng(0).random((12, 12)); np.fill_diagonal(w, 0.0)
    spec = SimSpec(dt=7.2, tr=720.0, n_tr=20, n_transient=4)
    model = get_model("reduced_wong_wang")
    def bold(G):
        return simulate(model, jnp.asarray(w), jax.random.PRNGKey(1), spec, G=G, sigma=0.003).bold
    y, g = jax.jit(lambda G: (bold(G), jax.grad(lambda x: bold(x).sum())(G)))(0.3)
    print(json.dumps({"imported": imported, "command": seen,
                      "values": np.concatenate([np.ravel(y), [g]]).tolist()}))

main(args=[], standalone_mode=False)
"""


def _child(**env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.slow
def test_import_changes_nothing_and_a_script_applies_the_settings_before_jax_starts():
    user = "--xla_force_host_platform_device_count=1"
    on = _child(XLA_FLAGS=user)
    off = _child(XLA_FLAGS=user, **{xla_defaults.OPT_OUT: "0"})
    for run in (on, off):
        assert run["imported"] == {
            "environ_unchanged": True,
            "settings_unchanged": True,
            "jax_started": False,
        }
        assert run["command"]["jax_started"] is False
    assert on["command"]["xla_flags"] == f"{user} {ALL}"  # the user's flag is kept
    assert off["command"]["xla_flags"] == user
    # XLA accepted the flags (it aborts on unknown ones) and they change no result beyond
    # float rounding
    assert np.all(np.isfinite(on["values"]))
    np.testing.assert_allclose(on["values"], off["values"], rtol=1e-12, atol=0)
