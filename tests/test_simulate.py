"""The one simulation loop: integrator convergence orders, noise statistics, delays,
coupling, and the settings of ``SimSpec``.

A linear neural mass (dx/dt = -k·x + c + drive per region, so the network obeys
dx/dt = (-k·I + G·W)·x + drive) gives exact solutions through ``scipy.linalg.expm`` and exact
noise statistics.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from jax import Array

from bnmfit.connectome import Connectome, delay_steps
from bnmfit.errors import ConfigError
from bnmfit.models import Hopf, ReducedWongWang
from bnmfit.models.base import NeuralMass, neural_mass
from bnmfit.simulate import SimSpec, _standard_normal, max_delay_steps, simulate


@neural_mass
class Linear(NeuralMass):
    """dx/dt = -k·x + c + drive (one state variable, coupled through x)."""

    k: float | Array = 0.5
    drive: float | Array = 0.0

    state_names = ("x",)
    cvar = (0,)
    bold_var = 0
    bounds = (None,)
    init_range = ((0.0, 1.0),)
    max_dt = 1.0

    def dfun(self, x, c):
        return -self.k * x + c + self.drive


@neural_mass
class Free2(NeuralMass):
    """Two state variables that only move by noise: dx/dt = 0."""

    state_names = ("u", "v")
    cvar = (0,)
    bold_var = 0
    bounds = (None, None)
    init_range = ((0.0, 0.0), (0.0, 0.0))
    max_dt = 1.0

    def dfun(self, x, c):
        return jnp.zeros_like(x)


@functools.partial(jax.jit, static_argnames=("spec",))
def _run(model, weights, key, spec, G, sigma, x0, delays):
    return simulate(model, weights, key, spec, G=G, sigma=sigma, x0=x0, delays=delays)


def run(model, weights, spec, *, G=1.0, sigma=0.0, x0=None, delays=None, seed=0):
    n = weights.shape[0]
    x0 = np.zeros((model.n_state, n)) if x0 is None else x0
    d = None if delays is None else jnp.asarray(delays, jnp.int32)
    return _run(
        model,
        jnp.asarray(weights),
        jax.random.key(seed),
        spec,
        G,
        jnp.asarray(sigma),
        jnp.asarray(x0, jnp.float64),
        d,
    )


def spec_steps(dt, n_steps, **kw):
    """A spec of one TR of ``n_steps`` steps that records the state every step."""
    kw = {"record_every": 1, "checkpoint": False, "unroll": 1} | kw
    return SimSpec(dt=dt, tr=dt * n_steps, n_tr=1, **kw)


def lag_corr(x: np.ndarray, lag: int) -> float:
    """Pooled autocorrelation at ``lag`` along axis 0 of a (T, N) array."""
    x = x - x.mean(axis=0)
    return float((x[lag:] * x[:-lag]).sum() / (x * x).sum())


def var_tolerance(var: float, n: int, rho: float, n_sd: float = 5.0) -> float:
    """n_sd standard errors of a sample variance from n Gaussian AR(1) samples of lag-one
    correlation rho (effective sample size n·(1 − ρ²)/(1 + ρ²))."""
    n_eff = n * (1.0 - rho**2) / (1.0 + rho**2)
    return n_sd * var * np.sqrt(2.0 / n_eff)


# --------------------------------------------------------------------------------------------
# SimSpec
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dt": 0.0}, "dt must be > 0 ms"),
        ({"dt": -0.1}, "dt must be > 0 ms"),
        ({"tr": 1.05}, r"TR \(1.05 ms\) must be a whole multiple of dt \(0.1 ms\)"),
        ({"tr": 0.05}, "must be a whole multiple of dt"),
        ({"n_tr": 0}, "need n_tr ≥ 1 and n_transient ≥ 0"),
        ({"n_transient": -1}, "need n_tr ≥ 1 and n_transient ≥ 0"),
        ({"integrator": "rk4"}, "unknown integrator 'rk4': use one of heun, euler"),
        ({"noise": "pink"}, "unknown noise 'pink': use one of additive, ou"),
        ({"coupling": "sigmoid"}, "unknown coupling 'sigmoid': use one of linear, difference"),
        (
            {"heun_coupling": "never"},
            "unknown heun_coupling 'never': use one of per_step, per_stage",
        ),
        ({"record_every": 3}, r"record_every \(3 steps\) must divide the steps per TR \(10\)"),
        ({"bold_dt": 0.25}, r"bold_dt \(0.25 ms\) must be a whole multiple of dt \(0.1 ms\)"),
        ({"bold_dt": 0.3}, r"that divides the TR \(1.0 ms\)"),
        ({"bold_dt": 0.05}, "must be a whole multiple of dt"),
    ],
)
def test_simspec_rejects_bad_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        SimSpec(**({"dt": 0.1, "tr": 1.0, "n_tr": 5} | kw))


def test_simspec_steps_and_from_duration():
    spec = SimSpec(dt=0.1, tr=720.0, n_tr=3)
    assert spec.steps_per_tr == 7200
    s = SimSpec.from_duration(dt=0.5, tr=2000.0, duration=61_000.0, transient=5_000.0)
    assert (s.n_tr, s.n_transient, s.steps_per_tr) == (30, 2, 4000)
    assert hash(s) == hash(
        SimSpec.from_duration(dt=0.5, tr=2000.0, duration=61_000.0, transient=5_000.0)
    )


def test_max_delay_steps():
    assert max_delay_steps(None) == 0
    assert max_delay_steps(np.array([[0, 3], [7, 0]])) == 7


def test_delays_required_when_max_delay_positive():
    spec = spec_steps(0.1, 10, max_delay=3)
    with pytest.raises(ConfigError, match="max_delay > 0 but no delays were given"):
        simulate(Linear(), jnp.eye(2), jax.random.key(0), spec, G=1.0, sigma=0.0)


@pytest.mark.parametrize("delays", [[[0, 4], [1, 0]], [[0, -1], [1, 0]], [[0, 1, 2]]])
def test_delays_outside_the_ring_buffer_are_a_config_error(delays):
    """A delay the ring buffer does not hold would read another state silently."""
    spec = spec_steps(0.1, 10, max_delay=3)
    with pytest.raises(
        ConfigError,
        match=r"delays must be an \(2, 2\) array of steps in "
        r"\[0, 3\]",
    ):
        simulate(
            Linear(),
            jnp.eye(2),
            jax.random.key(0),
            spec,
            G=1.0,
            sigma=0.0,
            delays=jnp.asarray(delays, jnp.int32),
        )


# --------------------------------------------------------------------------------------------
# Integrators: convergence order on a linear network with an exact solution
# --------------------------------------------------------------------------------------------

W4 = np.array(
    [[0.0, 0.8, 0.1, 0.3], [0.5, 0.0, 0.9, 0.0], [0.2, 0.4, 0.0, 0.7], [0.6, 0.0, 0.3, 0.0]]
)


@pytest.mark.parametrize(
    ("integrator", "heun_coupling", "order"),
    [("euler", "per_stage", 1.0), ("heun", "per_stage", 2.0), ("heun", "per_step", 1.0)],
)
@pytest.mark.slow
def test_convergence_order(integrator, heun_coupling, order):
    """Error at T = 8 ms against expm((-k·I + G·W)·T)·x0 + drive term, for three step sizes;
    the slope of log(error) against log(dt) is the order (Euler 1, Heun 2; Heun with the
    coupling frozen per step, as TVB's, is first order in the coupling term)."""
    model = Linear(k=0.6, drive=jnp.array([0.2, 0.0, -0.1, 0.0]))
    G, T = 0.4, 8.0
    x0 = np.array([[1.0, -0.5, 0.3, 0.8]])
    A = -model.k * np.eye(4) + G * W4
    b = np.asarray(model.drive)
    # x(T) = e^{AT} x0 + A^{-1}(e^{AT} − I) b
    eAT = scipy.linalg.expm(A * T)
    exact = eAT @ x0[0] + np.linalg.solve(A, (eAT - np.eye(4)) @ b)
    dts = np.array([0.2, 0.1, 0.05])
    errors = []
    for dt in dts:
        n = round(T / dt)
        spec = SimSpec(
            dt=dt,
            tr=T,
            n_tr=1,
            integrator=integrator,
            record_every=n,
            heun_coupling=heun_coupling,
            checkpoint=False,
            unroll=1,
        )
        x_T = np.asarray(run(model, W4, spec, G=G, x0=x0).states)[-1, 0]
        errors.append(np.abs(x_T - exact).max())
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert slope == pytest.approx(order, abs=0.2), (slope, errors)
    assert errors[-1] < (1e-4 if order == 2.0 else 5e-3) * np.abs(exact).max()


# --------------------------------------------------------------------------------------------
# Noise statistics
# --------------------------------------------------------------------------------------------


def test_standard_normals_are_independent_standard_normals():
    """2²¹ draws: mean 0, variance 1, kurtosis 3, the normal CDF (KS), and no correlation
    between neighbours or between the two words of one Threefry hash (i and i + n/2);
    another key gives other draws, the same key the same ones."""
    n = 2**21
    x = np.asarray(_standard_normal(jax.random.key(11), (n,)), np.float64)
    assert x.dtype == np.float64 and np.all(np.isfinite(x))
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert x.var() == pytest.approx(1.0, abs=5 * np.sqrt(2 / n))
    assert scipy.stats.kurtosis(x, fisher=False) == pytest.approx(3.0, abs=5 * np.sqrt(24 / n))
    assert scipy.stats.kstest(x, "norm").pvalue > 1e-3
    assert abs(lag_corr(x, 1)) < 5 / np.sqrt(n)
    assert abs(np.corrcoef(x[: n // 2], x[n // 2 :])[0, 1]) < 5 / np.sqrt(n / 2)
    again = np.asarray(_standard_normal(jax.random.key(11), (n,)), np.float64)
    np.testing.assert_array_equal(x, again)
    other = np.asarray(_standard_normal(jax.random.key(12), (n,)), np.float64)
    assert abs(np.corrcoef(x, other)[0, 1]) < 5 / np.sqrt(n)


def test_additive_noise_increments():
    """With dx/dt = 0 every step adds sigma·√dt·ξ (Heun and Euler alike): independent,
    mean 0, variance σ_v²·dt, one sigma per state variable when sigma is (n_state, 1)."""
    dt, n_steps, n = 0.1, 2000, 32
    sigma = np.array([[0.3], [1.5]])
    spec = spec_steps(dt, n_steps)
    x = np.asarray(run(Free2(), np.zeros((n, n)), spec, sigma=sigma).states)  # (T, 2, N)
    inc = np.diff(np.concatenate([np.zeros((1, 2, n)), x]), axis=0)
    m = inc.shape[0] * n
    for v in range(2):
        want = sigma[v, 0] ** 2 * dt
        assert inc[:, v].var() == pytest.approx(want, abs=var_tolerance(want, m, 0.0))
        assert abs(inc[:, v].mean()) < 5 * np.sqrt(want / m)
        assert abs(lag_corr(inc[:, v], 1)) < 5 / np.sqrt(m)
    # the two state variables and the regions get independent noise
    z = inc / sigma[None]
    assert abs(np.corrcoef(z[:, 0].ravel(), z[:, 1].ravel())[0, 1]) < 5 / np.sqrt(m)
    assert abs(np.corrcoef(z[:, 0, 0], z[:, 0, 1])[0, 1]) < 5 / np.sqrt(n_steps)


@pytest.mark.parametrize("integrator", ["euler", "heun"])
def test_additive_noise_stationary_variance(integrator):
    """dx = −x/τ dt + σ dW: the scheme is the AR(1) x' = a·x + b·ξ with
    Euler a = 1 − h, b = σ√dt and Heun a = 1 − h + h²/2, b = σ√dt (1 − h/2), h = dt/τ;
    its stationary variance b²/(1 − a²) → σ²τ/2 as dt → 0."""
    tau, sigma, dt = 10.0, 0.5, 0.2
    h = dt / tau
    a, b = (
        (1 - h, sigma * np.sqrt(dt))
        if integrator == "euler"
        else (1 - h + h * h / 2, sigma * np.sqrt(dt) * (1 - h / 2))
    )
    var = b * b / (1 - a * a)
    assert var == pytest.approx(sigma**2 * tau / 2, rel=0.02)
    n, every = 256, 5
    spec = SimSpec(
        dt=dt,
        tr=100.0,
        n_tr=20,
        n_transient=2,
        integrator=integrator,
        record_every=every,
        checkpoint=False,
        unroll=1,
    )
    x = np.asarray(run(Linear(k=1 / tau), np.zeros((n, n)), spec, sigma=sigma).states)[:, 0]
    rho = a**every
    assert lag_corr(x, 1) == pytest.approx(rho, abs=0.01)
    assert x.var() == pytest.approx(var, abs=var_tolerance(var, x.size, rho))


def test_ou_noise_reaches_its_stationary_statistics():
    """With dx/dt = 0 + η, x_{n+1} − x_n = dt·η_n exactly, so η can be read off the states:
    it starts at 0 and after a transient has mean 0, variance sigma² (per state variable) and
    the autocorrelation exp(−lag·dt/noise_tau) of the Ornstein–Uhlenbeck process."""
    dt, tau, n = 0.1, 2.0, 32
    sigma = np.array([[0.4], [2.0]])
    spec = SimSpec(
        dt=dt,
        tr=50.0,
        n_tr=9,
        noise="ou",
        noise_tau=tau,
        integrator="heun",
        record_every=1,
        checkpoint=False,
        unroll=1,
    )
    x = np.asarray(run(Free2(), np.zeros((n, n)), spec, sigma=sigma).states)
    # η starts at 0, so the first step does not move the state at all
    np.testing.assert_array_equal(x[0], 0.0)
    assert np.all(np.abs(x[1]) > 0.0)
    eta = np.diff(x[500:], axis=0) / dt  # after 50 ms = 25 τ: stationary
    rho = np.exp(-dt / tau)
    m = eta.shape[0] * n
    for v in range(2):
        e = eta[:, v]
        want = sigma[v, 0] ** 2
        assert e.var() == pytest.approx(want, abs=var_tolerance(want, m, rho))
        for lag in (1, 10, 20):
            assert lag_corr(e, lag) == pytest.approx(rho**lag, abs=0.05)
    assert abs(eta.mean()) < 0.1


# --------------------------------------------------------------------------------------------
# Delays and coupling
# --------------------------------------------------------------------------------------------


def reference_loop(
    model, w, x0, delays, G, dt, n_steps, integrator, coupling, heun_coupling="per_stage"
):
    """Plain numpy integration with a full history; x(t ≤ 0) = x0. Heun's corrector sees the
    coupling at the predictor (per_stage) or the predictor's own coupling (per_step)."""
    cv = list(model.cvar)
    hist = [np.asarray(x0, float)]  # hist[n] = state at step n
    n = w.shape[0]

    def coup(t, x_now, pending=None):
        def past(s):
            if s == t and pending is not None:
                return pending
            return hist[max(s, 0)]

        c = np.zeros((len(cv), n))
        for i in range(n):
            for j in range(n):
                c[:, i] += w[i, j] * past(t - delays[i, j])[cv, j]
        if coupling == "difference":
            c -= w.sum(axis=1) * x_now[cv]
        return G * c

    f = lambda x, c: np.asarray(model.dfun(jnp.asarray(x), jnp.asarray(c)))  # noqa: E731
    for t in range(n_steps):
        x = hist[t]
        f0 = f(x, coup(t, x))
        if integrator == "euler":
            hist.append(x + dt * f0)
        else:
            pred = x + dt * f0
            if heun_coupling == "per_step":
                f1 = f(pred, coup(t, x))
            else:
                f1 = f(pred, coup(t + 1, pred, pending=pred))
            hist.append(x + 0.5 * dt * (f0 + f1))
    return np.stack(hist[1:])


@pytest.mark.parametrize(
    ("integrator", "coupling", "heun_coupling"),
    [
        ("euler", "linear", "per_stage"),
        ("heun", "difference", "per_stage"),
        ("heun", "linear", "per_step"),
        ("heun", "difference", "per_step"),
    ],
)
def test_heterogeneous_delays_match_reference_loop(integrator, coupling, heun_coupling):
    """The ring buffer gives every edge its own delay (including zero) like a naive loop over
    the full history; two coupled variables (Hopf) exercise the gather over cvar."""
    n, n_steps, dt = 5, 60, 0.05
    rng = np.random.default_rng(1)
    w = rng.uniform(0, 1, (n, n))
    np.fill_diagonal(w, 0.0)
    delays = rng.integers(0, 8, (n, n))
    delays[0, 1] = delays[2, 3] = 0
    x0 = rng.uniform(-1, 1, (2, n))
    model = Hopf(a=jnp.linspace(-0.3, 0.3, n), omega=jnp.linspace(0.5, 1.0, n))
    spec = spec_steps(
        dt,
        n_steps,
        integrator=integrator,
        coupling=coupling,
        heun_coupling=heun_coupling,
        max_delay=int(delays.max()),
    )
    got = np.asarray(run(model, w, spec, G=0.8, x0=x0, delays=delays).states)
    want = reference_loop(
        model, w, x0, delays, 0.8, dt, n_steps, integrator, coupling, heun_coupling
    )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)


def _count_gathers(jaxpr, shape) -> int:
    """Gathers with output ``shape`` in a jaxpr and every jaxpr nested in it."""
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "gather" and eqn.outvars[0].aval.shape == shape
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                sub = getattr(sub, "jaxpr", sub)
                if hasattr(sub, "eqns"):
                    count += _count_gathers(sub, shape)
    return count


@pytest.mark.parametrize("integrator", ["heun", "euler"])
@pytest.mark.parametrize("heun_coupling", ["per_stage", "per_step"])
def test_each_step_gathers_the_delayed_states_once(integrator, heun_coupling):
    """Both Heun schemes read the (N, N, ncv) delayed states once per step: the per-stage
    corrector shares its gather with the next step's predictor."""
    n, delays = 5, np.arange(25).reshape(5, 5) % 4
    spec = spec_steps(0.1, 10, integrator=integrator, heun_coupling=heun_coupling, max_delay=3)
    model = Hopf()
    jaxpr = jax.make_jaxpr(functools.partial(simulate, model, spec=spec, G=0.5, sigma=0.0))(
        jnp.ones((n, n)), jax.random.key(0), delays=jnp.asarray(delays, jnp.int32)
    )
    assert _count_gathers(jaxpr.jaxpr, (n, n, len(model.cvar))) == 1


@pytest.fixture(scope="module")
def two_node():
    """Node 0 is driven from t = 0; node 1 receives only from node 0, 3 ms later."""
    w = np.array([[0.0, 0.0], [1.0, 0.0]])
    lengths = np.array([[0.0, 12.0], [12.0, 0.0]])
    con = Connectome.from_arrays(w, lengths, normalise="none")
    dt = 0.1
    d = delay_steps(con.delays(4.0), dt)  # 12 mm at 4 mm/ms = 3 ms = 30 steps
    assert d[1, 0] == 30
    return con, d, dt, Linear(k=0.2, drive=jnp.array([1.0, 0.0]))


def _first_nonzero(x: np.ndarray) -> int:
    return int(np.flatnonzero(x)[0])


def test_delayed_response_arrives_exactly_d_ms_later(two_node):
    con, d, dt, model = two_node
    spec = spec_steps(dt, 100, max_delay=int(d.max()))
    x = np.asarray(run(model, con.weights, spec, delays=d).states)[:, 0]
    n0, n1 = _first_nonzero(x[:, 0]), _first_nonzero(x[:, 1])
    assert n0 == 0  # the driven node moves in the first step
    assert (n1 - n0) * dt == pytest.approx(3.0)  # Heun: exactly the 3 ms conduction delay
    # explicit Euler adds its own one-step lag, with or without delay
    e = spec_steps(dt, 100, integrator="euler", max_delay=int(d.max()))
    xe = np.asarray(run(model, con.weights, e, delays=d).states)[:, 0]
    assert _first_nonzero(xe[:, 1]) - _first_nonzero(xe[:, 0]) == 30 + 1


def test_delay_shifts_the_response_in_time(two_node):
    """Euler: the receiving node's trajectory with a D-step delay is the trajectory without
    delay, shifted by exactly D steps."""
    con, d, dt, model = two_node
    spec = spec_steps(dt, 100, integrator="euler", max_delay=int(d.max()))
    delayed = np.asarray(run(model, con.weights, spec, delays=d).states)[:, 0, 1]
    zero = np.zeros_like(d)
    instant = np.asarray(run(model, con.weights, spec, delays=zero).states)[:, 0, 1]
    D = int(d[1, 0])
    np.testing.assert_array_equal(delayed[:D], 0.0)
    np.testing.assert_allclose(delayed[D:], instant[:-D], rtol=1e-14, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("heun_coupling", ["per_stage", "per_step"])
def test_zero_delays_equal_the_fast_path(heun_coupling):
    """With every delay zero, the ring-buffer path equals the path without delays (noise on)."""
    n = 6
    rng = np.random.default_rng(2)
    w = rng.uniform(0, 1, (n, n))
    np.fill_diagonal(w, 0.0)
    x0 = rng.uniform(0, 1, (1, n))
    common = {
        "dt": 0.5,
        "tr": 50.0,
        "n_tr": 4,
        "record_every": 10,
        "checkpoint": False,
        "unroll": 1,
        "heun_coupling": heun_coupling,
    }
    fast = run(ReducedWongWang(), w, SimSpec(**common), G=0.5, sigma=0.02, x0=x0)
    slow = run(
        ReducedWongWang(),
        w,
        SimSpec(**common, max_delay=5),
        G=0.5,
        sigma=0.02,
        x0=x0,
        delays=np.zeros((n, n), int),
    )
    np.testing.assert_allclose(slow.states, fast.states, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(slow.bold, fast.bold, rtol=1e-12, atol=1e-16)
    assert np.ptp(np.asarray(fast.states)) > 0.01


# --------------------------------------------------------------------------------------------
# Recording, transients, unrolling, bounds, divergence
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rww_network():
    n = 5
    rng = np.random.default_rng(3)
    w = rng.uniform(0, 1, (n, n))
    np.fill_diagonal(w, 0.0)
    return w, rng.uniform(0, 1, (1, n))


BASE = SimSpec(dt=0.5, tr=20.0, n_tr=6, record_every=1, checkpoint=False, unroll=1)


@pytest.mark.slow
def test_record_every_and_unroll(rww_network):
    """States are recorded at the end of every record_every steps; unrolling the step loop
    changes nothing."""
    w, x0 = rww_network
    every1 = run(ReducedWongWang(), w, BASE, G=0.6, sigma=0.01, x0=x0)
    every5 = run(
        ReducedWongWang(),
        w,
        dataclasses.replace(BASE, record_every=5, unroll=4),
        G=0.6,
        sigma=0.01,
        x0=x0,
    )
    assert every1.states.shape == (6 * 40, 1, 5) and every5.states.shape == (6 * 8, 1, 5)
    np.testing.assert_allclose(every5.states, every1.states[4::5], rtol=1e-14, atol=0)
    np.testing.assert_allclose(every5.bold, every1.bold, rtol=1e-13, atol=0)


@pytest.mark.slow
def test_transient_is_simulated_then_discarded(rww_network):
    """n_transient TRs + n_tr TRs give the last n_tr TRs of one run of both (same key);
    record_every = 0 records no states."""
    w, x0 = rww_network
    full = run(ReducedWongWang(), w, BASE, G=0.6, sigma=0.01, x0=x0)
    split = run(
        ReducedWongWang(),
        w,
        dataclasses.replace(BASE, n_tr=4, n_transient=2, record_every=0),
        G=0.6,
        sigma=0.01,
        x0=x0,
    )
    assert split.states is None and split.bold.shape == (4, 5)
    np.testing.assert_allclose(split.bold, full.bold[2:], rtol=1e-13)


def test_state_is_clipped_to_the_model_bounds(rww_network):
    w, x0 = rww_network
    x = np.asarray(run(ReducedWongWang(), w, BASE, G=0.6, sigma=1.0, x0=x0).states)
    assert x.min() == 0.0 and x.max() == 1.0  # strong noise hits both bounds
    assert np.all((x >= 0.0) & (x <= 1.0))


def test_divergence_gives_non_finite_output_not_an_error():
    spec = SimSpec(dt=1.0, tr=10.0, n_tr=3, checkpoint=False, unroll=1)
    out = run(Hopf(), np.ones((3, 3)) - np.eye(3), spec, G=1.0, x0=np.full((2, 3), 50.0))
    assert not np.all(np.isfinite(np.asarray(out.bold)))
