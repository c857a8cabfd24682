"""Differentiability and reproducibility of the whole chain: simulate → BOLD → FC → loss.

Gradients are checked against finite differences with ``jax.test_util.check_grads`` through
:meth:`bnmfit.problem.Problem.loss` on a small network, in float64.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from bnmfit.errors import ConfigError
from bnmfit.losses import Observed
from bnmfit.models import ReducedWongWang
from bnmfit.problem import Observation, Problem
from bnmfit.simulate import SimSpec, simulate

N = 4
KEY = jax.random.key(42)


def _weights():
    w = np.random.default_rng(0).uniform(0.1, 1.0, (N, N))
    np.fill_diagonal(w, 0.0)
    return w


def _empirical_fc(dtype=jnp.float64):
    x = np.random.default_rng(1).normal(size=(40, N))
    x[:, 1] += x[:, 0]
    return jnp.asarray(np.corrcoef(x.T), dtype)


def make_problem(checkpoint=True, dtype=jnp.float64, bold_dt=None, spec_kw=(), **kw) -> Problem:
    # 3000 steps of 2 ms; S stays well inside its bounds
    spec = SimSpec(
        dt=2.0, tr=200.0, n_tr=30, checkpoint=checkpoint, unroll=1, bold_dt=bold_dt, **dict(spec_kw)
    )
    return Problem(
        model=ReducedWongWang(),
        weights=jnp.asarray(_weights(), dtype),
        spec=spec,
        observation=Observation(tr=0.2),
        empirical=Observed(_empirical_fc(dtype)),
        loss_weights=(("fc_corr", 1.0), ("fc_rmse", 0.5)),
        G=0.5,
        sigma=0.01,
        **kw,
    )


@pytest.fixture(scope="module")
def problem():
    return make_problem()


@pytest.fixture(scope="module")
def loss_fn(problem):
    """The jitted loss of a dict of free parameters (one compilation per parameter layout)."""
    return jax.jit(lambda params: problem.loss(params, KEY))


def _grad(f, params):
    """Gradient through jax.vjp of the jitted f: the same compiled program check_grads uses."""
    value, vjp = jax.vjp(f, params)
    return value, vjp(jnp.ones_like(value))[0]


@pytest.mark.slow
def test_gradient_of_global_parameters_matches_finite_differences(loss_fn):
    params = {"G": jnp.asarray(0.5), "w": jnp.asarray(0.6)}
    check_grads(loss_fn, (params,), order=1, modes=["rev"], eps=1e-4)
    value, g = _grad(loss_fn, params)
    assert np.isfinite(float(value)) and 0.0 < float(value) < 3.0
    assert float(loss_fn({"G": jnp.asarray(0.3), "w": jnp.asarray(0.6)})) != float(value)
    assert all(np.isfinite(float(v)) and abs(float(v)) > 1e-6 for v in g.values())


REGIONAL = {"G": jnp.asarray(0.5), "w": jnp.array([0.55, 0.6, 0.65, 0.7])}


@pytest.mark.slow
def test_gradient_of_regional_parameter_matches_finite_differences(loss_fn):
    check_grads(loss_fn, (REGIONAL,), order=1, modes=["rev"], eps=1e-4)
    _, g = _grad(loss_fn, REGIONAL)
    assert g["w"].shape == (N,) and np.all(np.isfinite(g["w"])) and np.abs(g["w"]).min() > 0


@pytest.mark.slow
def test_checkpointing_does_not_change_the_gradient(loss_fn):
    plain = make_problem(checkpoint=False)
    v_ck, g_ck = _grad(loss_fn, REGIONAL)
    v_no, g_no = _grad(jax.jit(lambda p: plain.loss(p, KEY)), REGIONAL)
    # the two programs are compiled separately (each loop as one function): equal up to the
    # order of float64 operations, summed over the gradient's 3000 steps (up to 1.2e-12
    # relative with this key)
    np.testing.assert_allclose(float(v_ck), float(v_no), rtol=1e-14)
    for k in REGIONAL:
        np.testing.assert_allclose(g_no[k], g_ck[k], rtol=1e-11, atol=1e-14)


@pytest.mark.slow
@pytest.mark.parametrize("heun_coupling", ["per_stage", "per_step"])
def test_gradient_through_conduction_delays_matches_finite_differences(heun_coupling):
    """Delays of 0–5 steps, some edges without delay: the gathered history, the delayed input
    carried from step to step and the edges coupled to the predictor all differentiate."""
    delays = np.random.default_rng(3).integers(0, 6, (N, N))
    delays[0, 1] = delays[2, 3] = 0
    problem = make_problem(
        delays=jnp.asarray(delays, jnp.int32),
        spec_kw={"max_delay": 5, "heun_coupling": heun_coupling},
    )
    f = jax.jit(lambda params: problem.loss(params, KEY))
    check_grads(f, (REGIONAL,), order=1, modes=["rev"], eps=1e-4)
    _, g = _grad(f, REGIONAL)
    assert abs(float(g["G"])) > 1e-6 and np.abs(g["w"]).min() > 0


@pytest.mark.slow
def test_gradient_through_a_coarser_bold_step():
    """With the hemodynamics stepped every 2 integration steps (bold_dt = 4 ms) the gradient
    matches finite differences, checkpointing leaves it unchanged, and it differs from the
    every-step gradient by the small change of BOLD."""
    problems = {ck: make_problem(checkpoint=ck, bold_dt=4.0) for ck in (True, False)}
    fns = {ck: jax.jit(lambda p, pr=pr: pr.loss(p, KEY)) for ck, pr in problems.items()}
    check_grads(fns[True], (REGIONAL,), order=1, modes=["rev"], eps=1e-4)
    (v_ck, g_ck), (v_no, g_no) = (_grad(fns[ck], REGIONAL) for ck in (True, False))
    np.testing.assert_allclose(float(v_ck), float(v_no), rtol=1e-14)
    np.testing.assert_allclose(g_no["w"], g_ck["w"], rtol=1e-12, atol=1e-14)
    _, g_fine = _grad(jax.jit(lambda p: make_problem().loss(p, KEY)), REGIONAL)
    assert not np.array_equal(g_fine["w"], g_ck["w"])
    # relative to the gradient's norm (its smallest element is 10× below the others), measured:
    # 1.7 % (a 20 ms step: 15 %)
    change = np.linalg.norm(g_ck["w"] - g_fine["w"]) / np.linalg.norm(g_fine["w"])
    assert change < 0.05


def test_unknown_free_parameter_is_a_config_error(problem):
    with pytest.raises(
        ConfigError,
        match="unknown free parameter 'J_i' of ReducedWongWang.*: "
        "use one of G, sigma, weights, a, b",
    ):
        problem.loss({"J_i": 1.0}, KEY)


def test_same_key_same_result_different_key_different_bold(problem):
    bold = jax.jit(lambda k: problem.simulate({}, k).bold)
    a, b = bold(KEY), bold(jax.random.key(42))
    np.testing.assert_array_equal(a, b)  # bitwise
    c = bold(jax.random.key(43))
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3 * np.abs(np.asarray(a)).max()


@functools.partial(jax.jit, static_argnames=("spec",))
def _bold(weights, x0, spec):
    return simulate(ReducedWongWang(), weights, KEY, spec, G=0.5, sigma=0.0, x0=x0).bold


@pytest.mark.slow
def test_float32_runs_and_is_close_to_float64_without_noise():
    spec = SimSpec(dt=1.0, tr=500.0, n_tr=12, checkpoint=False, unroll=1)
    x0 = np.random.default_rng(3).uniform(0, 1, (1, N))
    out = {
        dtype: _bold(jnp.asarray(_weights(), dtype), jnp.asarray(x0, dtype), spec)
        for dtype in (jnp.float32, jnp.float64)
    }
    b32, b64 = np.asarray(out[jnp.float32]), np.asarray(out[jnp.float64])
    assert b32.dtype == np.float32 and b64.dtype == np.float64
    assert np.all(np.isfinite(b32))
    assert np.abs(b32 - b64).max() < 1e-4 * np.abs(b64).max()
    assert np.abs(b64).max() > 1e-3
    # the whole problem in float32 gives a finite float32 loss
    p32 = make_problem(dtype=jnp.float32)
    loss = jax.jit(lambda G: p32.loss({"G": G}, KEY))(jnp.float32(0.5))
    assert loss.dtype == jnp.float32 and np.isfinite(loss) and 0.0 < float(loss) < 3.0


@pytest.mark.slow
def test_float32_and_float64_with_one_key_see_the_same_noise():
    """ξ is drawn in float32 in both precisions: the noisy BOLD differs by rounding only."""
    b32, b64 = (
        np.asarray(make_problem(dtype=dtype).simulate({}, KEY).bold)
        for dtype in (jnp.float32, jnp.float64)
    )
    assert b32.dtype == np.float32 and b64.dtype == np.float64
    spread = b64.std(axis=0).min()  # the noise-driven fluctuation of the quietest region
    assert spread > 1e-5
    assert np.abs(b32 - b64).max() < 1e-3 * spread
