"""Feedback inhibition control: both methods reach the target rate; FIC per grid point."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnmfit import fic
from bnmfit.errors import ConfigError
from bnmfit.explore import evaluate
from bnmfit.losses import Observed
from bnmfit.models import ReducedWongWang, WongWangEI
from bnmfit.problem import Observation, Problem
from bnmfit.simulate import SimSpec

N = 6
FAST = dict(dt=1.0, duration=600.0)  # coarser than the defaults, to keep the tests quick


@functools.cache
def weights():
    rng = np.random.default_rng(3)
    w = rng.random((N, N)) * (rng.random((N, N)) < 0.7)
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0.0)
    return w / w.max()  # numpy: safe to cache (a jnp array made under jit would be a tracer)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "kw"),
    [(fic.fic_iterative, {"n_iter": 60}), (fic.fic_gradient, {"n_iter": 40})],
    ids=["iterative", "gradient"],
)
def test_fic_reaches_the_target_rate(method, kw):
    model, G = WongWangEI(), 0.4
    J, rates = jax.jit(lambda g: method(model, weights(), g, target_rate=3.0, **FAST, **kw))(G)
    J, rates = np.asarray(J), np.asarray(rates)
    np.testing.assert_allclose(rates, 3.0, atol=0.05)
    # regions that receive more input need more inhibition
    strength = np.asarray(weights()).sum(axis=1)
    assert np.corrcoef(strength, J)[0, 1] > 0.9
    # without FIC (J_i = 1) the same network is far from the target
    spec = fic._spec(FAST["dt"], 2 * FAST["duration"])
    x0 = fic._initial(model, N, jnp.float64, None)[1]
    untuned, _ = fic.excitatory_rates(model, weights(), G, x0, spec)
    assert np.max(np.abs(np.asarray(untuned) - 3.0)) > 1.0


def test_fic_without_coupling_is_homogeneous():
    J, rates = fic.fic_iterative(WongWangEI(), weights(), 0.0, n_iter=40, **FAST)
    np.testing.assert_allclose(J, J[0])
    np.testing.assert_allclose(rates, 3.0, atol=0.05)


def test_fic_needs_the_ei_model():
    with pytest.raises(ConfigError, match="wong_wang_ei"):
        fic.fic_iterative(ReducedWongWang(), weights(), 0.5)
    with pytest.raises(ConfigError, match="target rate must be > 0"):
        fic.fic_gradient(WongWangEI(), weights(), 0.5, target_rate=0.0)
    with pytest.raises(ConfigError, match="unknown FIC method"):
        fic.hook("newton")


@pytest.mark.slow
@pytest.mark.parametrize(("method", "n_iter"), [("iterative", 60), ("gradient", 40)])
def test_fic_per_grid_point(method, n_iter):
    """FIC inside the exploration (either method): J_i tuned for every point's G before its
    simulation, the achieved rates reported per point."""
    spec = SimSpec(dt=1.0, tr=800.0, n_tr=8)
    problem = Problem(
        WongWangEI(),
        weights(),
        spec,
        Observation(tr=0.8, detrend=False),
        Observed(jnp.asarray(weights() + np.eye(N))),
        sigma=0.001,
    )
    hook = fic.hook(method, n_iter=n_iter, **FAST)
    res = evaluate(problem, ("G",), np.array([[0.1], [0.4]]), [0], hook=hook)
    assert not res.diverged.any()
    assert np.all(res.extras["fic_rate_max_error"] < 0.05)
    np.testing.assert_allclose(res.extras["fic_rate_mean"], 3.0, atol=0.05)
    assert np.all(np.isfinite(res.loss))
    assert hook == fic.hook(method, n_iter=n_iter, **FAST)  # hashable config: one compile
