"""Balloon–Windkessel hemodynamics: reference integration, steady state, rest, and the BOLD
signal that the simulation loop samples online."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from bnmfit.bold import BalloonWindkessel
from bnmfit.models import Hopf, ReducedWongWang
from bnmfit.simulate import SimSpec, simulate

BW = BalloonWindkessel()


def ref_dfun(h, z, p: BalloonWindkessel = BW):
    """Friston et al. 2003 / Stephan et al. 2007, written with plain powers."""
    s, f, v, q = h
    ds = z - p.kappa * s - p.gamma * (f - 1.0)
    dv = (f - v ** (1.0 / p.alpha)) / p.tau
    dq = (f * (1.0 - (1.0 - p.rho) ** (1.0 / f)) / p.rho - q * v ** (1.0 / p.alpha) / v) / p.tau
    return np.array([ds, s, dv, dq])


def ref_signal(h, p: BalloonWindkessel = BW):
    v, q = h[2], h[3]
    return p.V0 * (7.0 * p.rho * (1.0 - q) + 2.0 * (1.0 - q / v) + (2.0 * p.rho - 0.2) * (1.0 - v))


@functools.partial(jax.jit, static_argnames=("dt_s",))
def euler_bold(z: jax.Array, dt_s: float, bw: BalloonWindkessel = BW):
    """Integrate BW from rest with one Euler step per input sample; BOLD after every step."""

    def step(h, zk):
        h = bw.step(h, zk, dt_s)
        return h, bw.signal(h)

    h_last, y = jax.lax.scan(step, bw.initial_state(z.shape[1], z.dtype), z)
    return y, h_last


def test_rest_is_a_fixed_point_with_zero_signal():
    rest = BW.initial_state(3)
    np.testing.assert_array_equal(rest, [[0.0] * 3, [1.0] * 3, [1.0] * 3, [1.0] * 3])
    assert np.all(BW.signal(rest) == 0.0)
    assert np.abs(BW.dfun(rest, jnp.zeros(3))).max() < 1e-15


def test_zero_input_gives_zero_bold_through_the_loop():
    """A network resting at the Hopf origin (noise off) produces exactly flat, zero BOLD."""
    spec = SimSpec(dt=0.5, tr=500.0, n_tr=10, checkpoint=False, unroll=1)
    out = simulate(
        Hopf(), jnp.ones((3, 3)), jax.random.key(0), spec, G=0.5, sigma=0.0, x0=jnp.zeros((2, 3))
    )
    assert out.bold.shape == (10, 3)
    assert np.abs(np.asarray(out.bold)).max() < 1e-14


def test_signal_formula():
    h = np.array([[0.0], [1.2], [1.1], [0.9]])
    want = 0.02 * (2.38 * 0.1 + 2.0 * (1.0 - 0.9 / 1.1) + 0.48 * (1.0 - 1.1))
    assert float(BW.signal(jnp.asarray(h))[0]) == pytest.approx(want, rel=1e-14)
    assert float(ref_signal(h)[0]) == pytest.approx(want, rel=1e-14)


def test_dfun_matches_reference():
    rng = np.random.default_rng(0)
    h = np.stack(
        [
            rng.normal(0, 0.5, 50),
            rng.uniform(0.5, 2, 50),
            rng.uniform(0.5, 2, 50),
            rng.uniform(0.5, 2, 50),
        ]
    )
    z = rng.uniform(-1, 1, 50)
    np.testing.assert_allclose(
        BW.dfun(jnp.asarray(h), jnp.asarray(z)), ref_dfun(h, z), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("z", [0.0, 0.1, 0.5, 2.0])
def test_steady_state_is_the_fixed_point(z):
    zs = jnp.full(2, z)
    h = BW.steady_state(zs)
    assert np.abs(ref_dfun(np.asarray(h), np.asarray(zs))).max() < 1e-13
    np.testing.assert_allclose(h[1], 1.0 + z / BW.gamma)  # flow from ds/dt = 0
    # a long constant drive ends there (Euler keeps the exact fixed point)
    _, h_end = euler_bold(jnp.full((100_000, 2), z), 1e-3)
    np.testing.assert_allclose(h_end, h, rtol=1e-9, atol=1e-12)
    assert (float(BW.signal(h)[0]) > 0.0) == (z > 0.0)


def _reference_response(box_end: float | None, amplitude: float, t_eval):
    """solve_ivp of the reference equations for z = amplitude on [0, box_end) (or a step)."""
    rest = np.array([0.0, 1.0, 1.0, 1.0])

    def rhs(z):
        return lambda _t, h: ref_dfun(h, z)

    kw = {"method": "DOP853", "rtol": 1e-10, "atol": 1e-12}
    if box_end is None:
        sol = solve_ivp(rhs(amplitude), (0, t_eval[-1]), rest, t_eval=t_eval, **kw)
        return ref_signal(sol.y)
    on = t_eval[t_eval <= box_end]
    s1 = solve_ivp(rhs(amplitude), (0, box_end), rest, t_eval=on, dense_output=True, **kw)
    s2 = solve_ivp(rhs(0.0), (box_end, t_eval[-1]), s1.sol(box_end), t_eval=t_eval[len(on) :], **kw)
    return ref_signal(np.concatenate([s1.y, s2.y], axis=1))


@pytest.mark.parametrize(("box_end", "amplitude"), [(None, 0.5), (0.5, 2.0)], ids=["step", "box"])
def test_response_matches_solve_ivp_with_first_order_convergence(box_end, amplitude):
    """Step and short-box (impulse-like) responses over 20 s: the loop's Euler steps converge
    to the reference at first order and agree to < 1e-3 of the peak at dt = 0.1 ms."""
    T = 20.0
    errors = []
    dts = [4e-4, 2e-4, 1e-4]
    for dt in dts:
        n = round(T / dt)
        t = dt * np.arange(1, n + 1)
        # step k integrates over (t_{k-1}, t_k] with the input sampled at t_k, as in the loop
        on = np.ones_like(t) if box_end is None else (t <= box_end + 1e-12)
        z = jnp.asarray(amplitude * on[:, None])
        y, _ = euler_bold(z, dt)
        every = round(0.1 / dt)  # compare every 100 ms
        want = _reference_response(box_end, amplitude, t[every - 1 :: every])
        got = np.asarray(y)[every - 1 :: every, 0]
        errors.append(np.abs(got - want).max() / np.abs(want).max())
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert slope == pytest.approx(1.0, abs=0.15)
    assert errors[-1] < 1e-3


@pytest.mark.parametrize(("bold_dt", "unroll"), [(None, 1), (5.0, 1), (5.0, 8)])
def test_loop_samples_bold_at_the_end_of_each_tr(bold_dt, unroll):
    """The BOLD leaving the loop equals an offline Balloon–Windkessel integration (reference
    equations, Euler, step bold_dt in seconds) driven by the recorded neural state at the end
    of every bold_dt, read at every TR."""
    n = 4
    rng = np.random.default_rng(4)
    w = rng.uniform(0, 1, (n, n))
    np.fill_diagonal(w, 0.0)
    spec = SimSpec(
        dt=1.0, tr=200.0, n_tr=15, record_every=1, checkpoint=False, unroll=unroll, bold_dt=bold_dt
    )
    bw = BalloonWindkessel(kappa=0.7, tau=1.1)
    out = simulate(
        ReducedWongWang(), jnp.asarray(w), jax.random.key(1), spec, G=0.5, sigma=0.02, bold=bw
    )
    s = np.asarray(out.states)[:, 0]  # (steps, N): the state after each step
    every = spec.bold_every
    h = np.array([[0.0] * n, [1.0] * n, [1.0] * n, [1.0] * n])
    y = []
    for k in range(every - 1, s.shape[0], every):
        h = h + every * 1e-3 * ref_dfun(h, s[k], bw)
        if (k + 1) % spec.steps_per_tr == 0:
            y.append(ref_signal(h, bw))
    np.testing.assert_allclose(out.bold, np.array(y), rtol=1e-10, atol=1e-14)
    assert np.abs(np.asarray(out.bold)).max() > 1e-3


@pytest.mark.slow
def test_a_coarser_bold_step_changes_bold_far_less_than_the_noise():
    """dt = 0.1 ms with the hemodynamics stepped every 1 ms (cuBNM's scheme) against every
    0.1 ms, same noise: the BOLD differ by < 0.3 % of their spread and give the same FC
    (5 ms would differ by 0.45 %)."""
    from bnmfit import observables
    from bnmfit.models import WongWangEI

    n = 6
    rng = np.random.default_rng(5)
    w = rng.uniform(0, 1, (n, n))
    np.fill_diagonal(w, 0.0)
    spec = SimSpec(dt=0.1, tr=500.0, n_tr=40, checkpoint=False, unroll=1)
    runs = [
        np.asarray(
            simulate(
                WongWangEI(),
                jnp.asarray(w),
                jax.random.key(2),
                SimSpec(**{**spec.__dict__, "bold_dt": bold_dt}),
                G=0.6,
                sigma=0.01,
            ).bold
        )
        for bold_dt in (None, 1.0)
    ]
    fine, coarse = runs
    assert np.abs(coarse - fine).max() < 0.003 * fine.std()
    fcs = [observables.fc(jnp.asarray(b[10:])) for b in runs]
    np.testing.assert_allclose(fcs[1], fcs[0], atol=5e-4)
