"""bnmfit's XLA settings: added to XLA_FLAGS on import unless the user chose otherwise, and
they make XLA compile the simulation loop as one function without changing its results."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bnmfit import xla_defaults

ALL = " ".join(f"--{k}={v}" for k, v in xla_defaults.FLAGS.items())
WIDTH = f"--xla_cpu_prefer_vector_width={xla_defaults.FLAGS['xla_cpu_prefer_vector_width']}"


@pytest.mark.parametrize(("env", "added", "flags"), [
    ({}, True, ALL),
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, True,
     f"--xla_force_host_platform_device_count=2 {ALL}"),
    # a flag the user set is theirs; the others are still added
    ({"XLA_FLAGS": "--xla_backend_extra_options=x=1"}, True,
     f"--xla_backend_extra_options=x=1 {WIDTH}"),
    ({"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256 --xla_backend_extra_options=x=1"},
     False, "--xla_cpu_prefer_vector_width=256 --xla_backend_extra_options=x=1"),
    ({xla_defaults.OPT_OUT: "0"}, False, None),
])
def test_apply_adds_each_flag_unless_the_user_chose(env, added, flags):
    assert xla_defaults.apply(env) is added
    assert env.get("XLA_FLAGS") == flags


#: a child process: compile a small network's simulation + gradient; report its while loops,
#: how many of them XLA compiled as one function ("small call"), and the numbers
CHILD = """
import json, re
import numpy as np
import bnmfit, jax, jax.numpy as jnp
from bnmfit import SimSpec, simulate
from bnmfit.models import get_model
jax.config.update("jax_enable_x64", True)
w = np.random.default_rng(0).random((12, 12)); np.fill_diagonal(w, 0.0)
spec = SimSpec(dt=7.2, tr=720.0, n_tr=20, n_transient=4)
model = get_model("reduced_wong_wang")
def bold(G):
    return simulate(model, jnp.asarray(w), jax.random.PRNGKey(1), spec, G=G, sigma=0.003).bold
f = jax.jit(lambda G: (bold(G), jax.grad(lambda g: bold(g).sum())(G)))
compiled = f.lower(0.3).compile()
y, g = compiled(0.3)
text = compiled.as_text()
print(json.dumps({"loops": len(re.findall(r"= .*\\bwhile\\(", text)),
                  "small_calls": text.count("xla_cpu_small_call"),
                  "values": np.concatenate([np.ravel(y), [g]]).tolist()}))
"""


def _child(**env) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**environ, **env},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_the_simulation_loop_compiles_whole_with_the_same_results():
    on, off = _child(), _child(**{xla_defaults.OPT_OUT: "0"})
    assert on["loops"] == off["loops"] > 2
    assert on["small_calls"] == on["loops"]  # every loop, forward and reverse
    assert off["small_calls"] < off["loops"] / 2  # XLA's default: hardly any
    assert np.all(np.isfinite(on["values"]))
    np.testing.assert_allclose(on["values"], off["values"], rtol=1e-12, atol=0)
