"""Problem as a JAX pytree: arrays are leaves, settings are static, so one compilation serves
every subject whose problem has the same settings and shapes."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnmfit import explore
from bnmfit.losses import Observed
from bnmfit.models import ReducedWongWang
from bnmfit.problem import Observation, Problem
from bnmfit.simulate import SimSpec

N = 5
KEY = jax.random.key(7)
PARAMS = {"G": jnp.asarray(0.6), "w": jnp.asarray(0.55)}


def subject(seed: int, *, n: int = N, delays: bool = False, spec: SimSpec | None = None):
    """A problem with its own random SC, delays and empirical FC (same shapes per n)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.0, 1.0, (n, n))
    np.fill_diagonal(w, 0.0)
    x = rng.normal(size=(60, n))
    x[:, 1] += x[:, 0]
    d = rng.integers(1, 4, (n, n)) if delays else None
    spec = spec or SimSpec(dt=1.0, tr=100.0, n_tr=12, max_delay=3 if delays else 0)
    return Problem(
        ReducedWongWang(I_o=0.32), jnp.asarray(w), spec, Observation(tr=0.1),
        Observed(jnp.asarray(np.corrcoef(x.T))), G=0.4 + 0.1 * seed, sigma=0.01,
        delays=None if d is None else jnp.asarray(d, jnp.int32),
    )


def test_arrays_are_leaves_and_settings_are_static():
    p = subject(0, delays=True)
    leaves, treedef = jax.tree.flatten(p)
    assert any(leaf is p.weights for leaf in leaves)
    assert any(leaf is p.delays for leaf in leaves)
    assert any(leaf is p.empirical.fc for leaf in leaves)
    assert not any(isinstance(leaf, SimSpec | Observation) for leaf in leaves)
    back = jax.tree.unflatten(treedef, leaves)
    for f in dataclasses.fields(Problem):  # every field survives the round trip
        got, want = getattr(back, f.name), getattr(p, f.name)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        assert all(x is y for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                                          strict=True))
    doubled = jax.tree.map(lambda a: 2 * a, p)
    assert doubled.spec is p.spec and doubled.loss_weights == p.loss_weights
    np.testing.assert_array_equal(doubled.weights, 2 * p.weights)
    # a problem with other arrays of the same shapes has the same structure
    assert jax.tree.structure(subject(1, delays=True)) == treedef
    # other settings are another structure (another compilation)
    other = subject(0, delays=True, spec=SimSpec(dt=1.0, tr=100.0, n_tr=13, max_delay=3))
    assert jax.tree.structure(other) != treedef


@pytest.mark.parametrize("delays", [False, True], ids=["no-delays", "delays"])
def test_second_subject_reuses_the_compiled_loss(delays):
    """jax.jit(Problem.loss) compiles once for two subjects of the same shapes, and each gets
    its own loss: that of its own problem evaluated without the shared compilation."""
    loss = jax.jit(Problem.loss)  # (jit objects of one function share their cache)
    a, b = subject(1, delays=delays), subject(2, delays=delays)
    la = loss(a, PARAMS, KEY)
    compiled = loss._cache_size()
    lb = loss(b, PARAMS, KEY)
    assert loss._cache_size() == compiled
    np.testing.assert_allclose(la, jax.jit(a.loss)(PARAMS, KEY), rtol=1e-12)
    np.testing.assert_allclose(lb, jax.jit(b.loss)(PARAMS, KEY), rtol=1e-12)
    assert abs(float(la) - float(lb)) > 1e-6  # different subjects, different losses
    loss(subject(3, n=N + 1, delays=delays), PARAMS, KEY)  # another shape compiles again
    assert loss._cache_size() == compiled + 1


def test_exploring_a_second_subject_does_not_compile_again():
    names = ("G", "w")
    points = np.array([[0.3, 0.5], [0.7, 0.6], [0.9, 0.4]])
    explore._evaluator.cache_clear()
    a, b = subject(4), subject(5)
    ra = explore.evaluate(a, names, points, [0, 1], batch_size=4)
    rb = explore.evaluate(b, names, points, [0, 1], batch_size=4)
    assert explore._evaluator.cache_info().currsize == 1
    fn = explore._evaluator(names, None, explore._sharding())
    assert fn._cache_size() == 1
    for problem, res in ((a, ra), (b, rb)):
        want = [
            [problem.loss({"G": jnp.asarray(g), "w": jnp.asarray(w)}, jax.random.PRNGKey(s))
             for s in (0, 1)]
            for g, w in points
        ]
        np.testing.assert_allclose(res.loss, np.asarray(want), rtol=1e-10)
    assert not np.allclose(ra.loss, rb.loss)
