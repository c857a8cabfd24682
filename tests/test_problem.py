"""Problem as a JAX pytree: arrays are leaves, settings are static, so one compilation serves
every subject whose problem has the same settings and shapes (exploration and refinement)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnmfit import explore, fit
from bnmfit.fit import Stage
from bnmfit.losses import Observed
from bnmfit.models import ReducedWongWang
from bnmfit.params import FreeParameter
from bnmfit.problem import Observation, Problem
from bnmfit.simulate import SimSpec
from tests.test_fit import assert_same_fit

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
        ReducedWongWang(I_o=0.32),
        jnp.asarray(w),
        spec,
        Observation(tr=0.1),
        Observed(jnp.asarray(np.corrcoef(x.T))),
        G=0.4 + 0.1 * seed,
        sigma=0.01,
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
        assert all(x is y for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))
    doubled = jax.tree.map(lambda a: 2 * a, p)
    assert doubled.spec is p.spec and doubled.loss_weights == p.loss_weights
    np.testing.assert_array_equal(doubled.weights, 2 * p.weights)
    # a problem with other arrays of the same shapes has the same structure
    assert jax.tree.structure(subject(1, delays=True)) == treedef
    # other settings are another structure (another compilation)
    other = subject(0, delays=True, spec=SimSpec(dt=1.0, tr=100.0, n_tr=13, max_delay=3))
    assert jax.tree.structure(other) != treedef


@pytest.mark.slow
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


@pytest.mark.slow
def test_exploring_a_second_subject_does_not_compile_again():
    names = ("G", "w")
    points = np.array([[0.3, 0.5], [0.7, 0.6], [0.9, 0.4]])
    explore._evaluator.cache_clear()
    a, b = subject(4), subject(5)
    ra = explore.evaluate(a, names, points, [0, 1], batch_size=4)
    rb = explore.evaluate(b, names, points, [0, 1], batch_size=4)
    assert explore._evaluator.cache_info().currsize == 1
    fn = explore._evaluator(names, None, explore._sharding(), ())  # as evaluate() keys it
    assert fn._cache_size() == 1
    for problem, res in ((a, ra), (b, rb)):
        want = [
            [
                problem.loss({"G": jnp.asarray(g), "w": jnp.asarray(w)}, jax.random.PRNGKey(s))
                for s in (0, 1)
            ]
            for g, w in points
        ]
        np.testing.assert_allclose(res.loss, np.asarray(want), rtol=1e-10)
    assert not np.allclose(ra.loss, rb.loss)


@pytest.mark.slow
def test_refining_a_second_subject_does_not_compile_again():
    """fit.refine compiles its segments, evaluator and SciPy objective once for two subjects
    with the same stages and shapes (dense SCs: the same number of edges too), and each
    subject gets its own fit: its first step's loss and its held-out start loss are those of
    its own problem, and refining the first subject again gives bitwise the same result."""
    stages = [
        Stage(
            "global",
            (FreeParameter("G", 0.05, 1.0), FreeParameter("w", 0.05, 1.0)),
            steps=2,
            n_noise=2,
            patience=0,
        ),
        Stage(
            "sc",
            (FreeParameter("weights", 0.0, 2.0, scope="edges", symmetric=True),),
            steps=2,
            patience=0,
        ),
        Stage("scipy", (FreeParameter("G", 0.05, 1.0),), optimizer="scipy-lbfgsb", steps=1),
    ]
    heldout = (10, 11)

    def run(problem):
        return fit.refine(
            problem,
            stages,
            [{"G": 0.6, "w": 0.55}],
            seed=1,
            heldout_seeds=heldout,
            checkpoint_every=2,
        )

    def compiled():
        """Programs compiled by refine's jitted functions, and its cached jitted functions."""
        segments = [fit._segment_fn(fit._structural(s), 2)[0] for s in stages if s.uses_optax]
        jitted = (fit._evaluate, *segments, fit._scipy_fns("loss")[1])
        return [f._cache_size() for f in jitted], (
            fit._segment_fn.cache_info().currsize,
            fit._scipy_fns.cache_info().currsize,
        )

    a, b = subject(6), subject(7)
    unused, _ = compiled()
    ra = run(a)
    after_a = compiled()
    assert all(n > m for n, m in zip(after_a[0], unused, strict=True))  # refine uses them
    rb = run(b)
    assert compiled() == after_a
    loss = jax.jit(Problem.loss)
    step_keys = fit._step_keys(fit._root_key(1), 0, 0, 2, fresh=True)
    for problem, res in ((a, ra), (b, rb)):
        first = res.stages[0]
        start = {"G": jnp.asarray(0.6), "w": jnp.asarray(0.55)}
        np.testing.assert_allclose(
            first.history["loss"][0, 0],
            np.mean([loss(problem, start, k) for k in step_keys]),
            rtol=1e-10,
        )
        np.testing.assert_allclose(
            first.heldout["start_loss"],
            np.mean([loss(problem, start, jax.random.PRNGKey(s)) for s in heldout]),
            rtol=1e-10,
        )
    assert abs(ra.stages[0].history["loss"][0, 0] - rb.stages[0].history["loss"][0, 0]) > 1e-6
    assert_same_fit(run(a), ra)
