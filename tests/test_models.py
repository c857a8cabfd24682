"""The four neural masses: vector fields against TVB and the published equations, fixed
points against analytic values, trajectories against scipy's solve_ivp and TVB's Simulator.

Every check that applies to all models is one parametrised test run over the table ``CASES``.
The reference equations below are written out from the papers with plain numpy; they share no
code with ``bnmfit.models``.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq, fsolve

from bnmfit.errors import ConfigError
from bnmfit.models import (
    MODELS,
    Hopf,
    NeuralMass,
    ReducedWongWang,
    WilsonCowan,
    WongWangEI,
    get_model,
)
from bnmfit.models.base import wong_wang_rate
from bnmfit.simulate import SimSpec, simulate

# --------------------------------------------------------------------------------------------
# Reference equations (numpy, from the papers), x: (n_state, N), c: (n_cvar, N)
# --------------------------------------------------------------------------------------------


def _abbott_chance(y, d):
    return y / (1.0 - np.exp(-d * y))


def ref_rww(m, x, c):
    """Deco et al. 2013, J Neurosci 33:11239, eqs. (2)–(4)."""
    S = x[0]
    xk = m.w * m.J_N * S + m.I_o + m.J_N * c[0]
    H = _abbott_chance(m.a * xk - m.b, m.d)
    return np.array([-S / m.tau_s + (1.0 - S) * m.gamma * H])


def ref_wwei(m, x, c):
    """Deco et al. 2014, J Neurosci 34:7886, eqs. (1)–(6), with long-range input J_N·c."""
    Se, Si = x
    xe = m.W_e * m.I_o + m.w_p * m.J_N * Se + m.J_N * c[0] - m.J_i * Si + m.I_ext
    xi = m.W_i * m.I_o + m.J_N * Se - Si + m.lamda * m.J_N * c[0]
    He = _abbott_chance(m.a_e * xe - m.b_e, m.d_e)
    Hi = _abbott_chance(m.a_i * xi - m.b_i, m.d_i)
    return np.array([-Se / m.tau_e + (1.0 - Se) * m.gamma_e * He, -Si / m.tau_i + m.gamma_i * Hi])


def ref_hopf(m, x, c):
    """Stuart–Landau normal form, Deco et al. 2017, Sci Rep 7:3095."""
    X, Y = x
    z = X + 1j * Y
    dz = (m.a + 1j * m.omega - np.abs(z) ** 2) * z + (c[0] + 1j * c[1])
    return np.array([dz.real, dz.imag])


def ref_wc(m, x, c):
    """Wilson & Cowan 1972 eqs. (11)–(12) with TVB's shifted logistic (S(0) = 0)."""
    E, I = x

    def S(u, a, b, cc):
        return cc * (1.0 / (1.0 + np.exp(-a * (u - b))) - 1.0 / (1.0 + np.exp(a * b)))

    ue = m.alpha_e * (m.c_ee * E - m.c_ei * I + m.P - m.theta_e + c[0])
    ui = m.alpha_i * (m.c_ie * E - m.c_ii * I + m.Q - m.theta_i)
    dE = (-E + (m.k_e - m.r_e * E) * S(ue, m.a_e, m.b_e, m.c_e)) / m.tau_e
    dI = (-I + (m.k_i - m.r_i * I) * S(ui, m.a_i, m.b_i, m.c_i)) / m.tau_i
    return np.array([dE, dI])


# --------------------------------------------------------------------------------------------
# The table: one row per model
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    model: NeuralMass  # parameters used in the network checks
    tvb_name: str  # class in tvb.simulator.models
    tvb_extra: dict  # settings TVB needs to match (G = 1: bnmfit's coupling already has G)
    ref: Callable  # numpy reference vector field
    state_range: tuple[tuple[float, float], ...]  # random states for the dfun check
    c_range: tuple[float, float]  # random coupling inputs
    G: float  # global coupling in network checks
    x0_scale: float  # initial state = scale × random state in the model's init range
    dt: float  # Heun step for the solve_ivp check, ms
    n_steps: int
    perturb: dict  # regional parameter values for the dfun check: name -> (lo, hi)


CASES = [
    Case(
        "reduced_wong_wang",
        ReducedWongWang(),
        "ReducedWongWang",
        {},
        ref_rww,
        ((0.0, 1.0),),
        (0.0, 1.0),
        G=0.5,
        x0_scale=1.0,
        dt=0.05,
        n_steps=1000,
        perturb={"w": (0.4, 1.0), "I_o": (0.2, 0.4), "J_N": (0.2, 0.3)},
    ),
    Case(
        "wong_wang_ei",
        WongWangEI(J_i=1.2, lamda=0.3),
        "ReducedWongWangExcInh",
        {"G": np.array([1.0])},
        ref_wwei,
        ((0.0, 1.0), (0.0, 1.0)),
        (0.0, 1.0),
        G=0.7,
        x0_scale=1.0,
        dt=0.01,
        n_steps=2000,
        perturb={"J_i": (0.5, 2.0), "lamda": (0.0, 1.0), "I_ext": (0.0, 0.1), "w_p": (1.2, 1.6)},
    ),
    Case(
        "hopf",
        Hopf(a=0.2, omega=0.3),
        "SupHopf",
        {},
        ref_hopf,
        ((-2.0, 2.0), (-2.0, 2.0)),
        (-1.0, 1.0),
        G=0.2,
        x0_scale=0.2,
        dt=0.0025,
        n_steps=4000,
        perturb={"a": (-1.0, 1.0), "omega": (0.1, 1.0)},
    ),
    Case(
        "wilson_cowan",
        WilsonCowan(P=1.25),
        "WilsonCowan",
        {},
        ref_wc,
        ((0.0, 1.0), (0.0, 1.0)),
        (0.0, 2.0),
        G=0.5,
        x0_scale=1.0,
        dt=0.01,
        n_steps=2000,
        perturb={"P": (0.0, 2.0), "Q": (0.0, 1.0), "c_ee": (10.0, 14.0), "theta_i": (0.0, 1.0)},
    ),
]
IDS = [c.name for c in CASES]

N = 4  # regions of the small network used in trajectory checks


def network_weights(n: int = N, seed: int = 7) -> np.ndarray:
    w = np.random.default_rng(seed).uniform(0.0, 1.0, (n, n))
    np.fill_diagonal(w, 0.0)
    return w  # deliberately asymmetric: row i receives from column j


def initial_state(case: Case, n: int = N) -> np.ndarray:
    return case.x0_scale * np.asarray(case.model.initial_state(jax.random.key(3), n))


@functools.partial(jax.jit, static_argnames=("spec",))
def _run(model, weights, x0, G, spec):
    return simulate(model, weights, jax.random.key(0), spec, G=G, sigma=0.0, x0=x0)


def trajectory(model, weights, x0, G, *, dt, n_steps, integrator="heun", coupling="linear"):
    """Neural states after every step, shape (n_steps, n_state, N); noise off."""
    spec = SimSpec(
        dt=dt,
        tr=dt * n_steps,
        n_tr=1,
        integrator=integrator,
        coupling=coupling,
        record_every=1,
        checkpoint=False,
    )
    out = _run(model, jnp.asarray(weights), jnp.asarray(x0), G, spec)
    return np.asarray(out.states)


def rel_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


def params_of(model) -> dict:
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}


# --------------------------------------------------------------------------------------------
# Registry, pytree behaviour, shapes
# --------------------------------------------------------------------------------------------


def test_registry_lists_the_four_models():
    assert set(MODELS) == set(IDS)
    assert isinstance(get_model("hopf", a=0.1), Hopf)
    assert get_model("hopf", a=0.1).a == 0.1


def test_get_model_rejects_unknown_name_and_parameter():
    with pytest.raises(ConfigError, match="unknown model 'hopff'.*hopf"):
        get_model("hopff")
    with pytest.raises(ConfigError, match="model 'hopf' has no parameter G.*a, omega"):
        get_model("hopf", G=1.0)


def test_replace_rejects_unknown_parameter():
    with pytest.raises(KeyError, match="Hopf has no parameter b"):
        Hopf().replace(b=1.0)
    assert Hopf().replace(a=0.3).a == 0.3


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_model_is_a_pytree_of_its_parameters(case):
    m = case.model
    leaves, treedef = jax.tree_util.tree_flatten(m)
    assert len(leaves) == len(m.parameter_names())
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt == m
    # a model can cross jit and vmap as an argument: vmap over one parameter
    name = m.parameter_names()[0]
    values = jnp.array([0.9, 1.0, 1.1]) * getattr(m, name)
    x = jnp.asarray(initial_state(case))
    c = jnp.full((len(m.cvar), N), 0.1)
    batched = jax.jit(jax.vmap(lambda v: m.replace(**{name: v}).dfun(x, c)))(values)
    for k, v in enumerate(values):
        np.testing.assert_allclose(batched[k], m.replace(**{name: v}).dfun(x, c), rtol=1e-14)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_layout_and_initial_state(case):
    m = case.model
    assert m.n_state == len(m.state_names) == len(m.bounds) == len(m.init_range)
    assert all(0 <= v < m.n_state for v in m.cvar) and 0 <= m.bold_var < m.n_state
    x = m.initial_state(jax.random.key(0), 50)
    assert x.shape == (m.n_state, 50) and x.dtype == jnp.float64
    for i, (lo, hi) in enumerate(m.init_range):
        assert float(x[i].min()) >= lo and float(x[i].max()) <= hi
    assert m.dfun(x, jnp.zeros((len(m.cvar), 50))).shape == (m.n_state, 50)
    x32 = m.initial_state(jax.random.key(0), 5, jnp.float32)
    assert x32.dtype == jnp.float32


def test_clip_applies_bounds():
    x = jnp.array([[-0.5, 0.3, 1.7]])
    np.testing.assert_array_equal(ReducedWongWang().clip(x), [[0.0, 0.3, 1.0]])
    y = jnp.array([[-9.0, 9.0], [3.0, -3.0]])
    assert Hopf().clip(y) is y  # unbounded: identity


def test_wong_wang_rate_removable_singularity():
    d = 154.0
    assert float(wong_wang_rate(jnp.array(0.0), d)) == pytest.approx(1.0 / d, rel=1e-15)
    ys = jnp.array([-1e-3, -1e-7, -1e-9, 1e-9, 1e-7, 1e-3])
    np.testing.assert_allclose(wong_wang_rate(ys, d), _abbott_chance(np.asarray(ys), d), rtol=1e-7)
    # continuous, with the analytic slope 1/2 at 0 and finite gradients on both branches
    g = jax.vmap(jax.grad(lambda y: wong_wang_rate(y, d)))(jnp.array([0.0, 1e-9, 1e-5, 0.1]))
    assert np.all(np.isfinite(g))
    assert float(g[0]) == pytest.approx(0.5, rel=1e-12)
    assert float(g[1]) == pytest.approx(0.5, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Vector fields: the reference equations and TVB
# --------------------------------------------------------------------------------------------


def _random_point(case: Case, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = np.stack([rng.uniform(lo, hi, n) for lo, hi in case.state_range])
    c = rng.uniform(*case.c_range, (len(case.model.cvar), n))
    params = {k: rng.uniform(lo, hi, n) for k, (lo, hi) in case.perturb.items()}
    return x, c, case.model.replace(**params)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dfun_matches_published_equations(case):
    for seed in range(3):
        x, c, m = _random_point(case, 64, seed)
        got = np.asarray(m.dfun(jnp.asarray(x), jnp.asarray(c)))
        want = case.ref(m, x, c)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


def _tvb_model(case: Case, model: NeuralMass):
    models = pytest.importorskip("tvb.simulator.models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = {k: np.atleast_1d(np.asarray(v, float)) for k, v in params_of(model).items()}
        tm = getattr(models, case.tvb_name)(**params, **case.tvb_extra)
        tm.variables_of_interest = tuple(tm.state_variables)
        tm.configure()
    return tm


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_dfun_matches_tvb(case):
    """bnmfit's dfun equals TVB's own dfun (numba and numpy versions) at random states,
    couplings and regional parameters, to 1e-10 relative in float64."""
    n = 32
    for seed in range(3):
        x, c, m = _random_point(case, n, 10 + seed)
        tm = _tvb_model(case, m)
        # TVB couples through its own cvar; for Wilson–Cowan that is (E, I) but only E enters
        c_tvb = np.zeros((len(tm.cvar), n, 1))
        c_tvb[: c.shape[0], :, 0] = c
        want = tm.dfun(x[..., None], c_tvb)[..., 0]
        got = np.asarray(m.dfun(jnp.asarray(x), jnp.asarray(c)))
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())


# --------------------------------------------------------------------------------------------
# Fixed points and analytic solutions
# --------------------------------------------------------------------------------------------


def test_rww_uncoupled_steady_state_equals_root_of_published_equation():
    """brentq on dS/dt = 0 (Deco 2013) gives the unique steady state; a long noise-free
    simulation of uncoupled regions from different initial states ends there."""
    m = ReducedWongWang()

    def f(S):
        return ref_rww(m, np.array([[S]]), np.zeros((1, 1)))[0, 0]

    grid = np.linspace(0.0, 1.0, 10001)
    assert np.sum(np.diff(np.sign([f(s) for s in grid])) != 0) == 1  # a unique root
    S_star = brentq(f, 0.0, 1.0, xtol=1e-15, rtol=1e-15)
    x0 = np.array([[0.0, 0.3, 0.7, 1.0]])
    traj = trajectory(m, np.zeros((4, 4)), x0, 0.0, dt=2.0, n_steps=3000)
    np.testing.assert_allclose(traj[-1, 0], S_star, rtol=1e-10)
    # and the steady state is also a fixed point of bnmfit's vector field
    assert abs(float(m.dfun(jnp.array([[S_star]]), jnp.zeros((1, 1)))[0, 0])) < 1e-15


def test_wwei_uncoupled_steady_state_equals_root_of_published_equations():
    m = WongWangEI()

    def F(s):
        return ref_wwei(m, np.asarray(s)[:, None], np.zeros((1, 1)))[:, 0]

    roots = [fsolve(F, guess, xtol=1e-13) for guess in [(0.1, 0.1), (0.5, 0.5), (0.9, 0.9)]]
    np.testing.assert_allclose(roots, [roots[0]] * 3, rtol=1e-9)  # the same from everywhere
    s_star = roots[0]
    x0 = np.array([[0.0, 0.3, 0.7, 1.0], [0.0, 0.8, 0.2, 1.0]])
    traj = trajectory(m, np.zeros((4, 4)), x0, 0.0, dt=1.0, n_steps=6000)
    np.testing.assert_allclose(traj[-1], np.repeat(s_star[:, None], 4, axis=1), rtol=1e-8)
    # the excitatory rate there (Hz) is the ≈3 Hz low-activity state of Deco 2014
    H_e, _ = m.rates(jnp.asarray(traj[-1]), jnp.zeros((1, 4)))
    assert 2.5 < float(H_e[0]) < 3.5


@pytest.mark.parametrize("a", [-0.4, 0.25])
def test_hopf_uncoupled_matches_analytic_solution(a):
    """Stuart–Landau: with u = 1/r², u' = 2 − 2a·u, so r(t)² = 1 / (1/a + (1/r0² − 1/a)
    e^{−2at}) and the phase turns at omega. a < 0: decays to the origin; a > 0: to √a."""
    omega = 0.3
    m = Hopf(a=a, omega=omega)
    r0 = np.array([0.1, 0.3, 0.6, 0.9])
    th0 = np.array([0.0, 1.0, 2.0, 3.0])
    x0 = np.stack([r0 * np.cos(th0), r0 * np.sin(th0)])
    dt, n_steps = 0.0025, 4000
    traj = trajectory(m, np.zeros((4, 4)), x0, 0.0, dt=dt, n_steps=n_steps)
    t = dt * np.arange(1, n_steps + 1)[:, None]
    r = 1.0 / np.sqrt(1.0 / a + (1.0 / r0**2 - 1.0 / a) * np.exp(-2.0 * a * t))
    th = th0 + omega * t
    exact = np.stack([r * np.cos(th), r * np.sin(th)], axis=1)
    assert rel_err(traj, exact) < 1e-6
    # linear stability of the origin: eigenvalues a ± iω
    J = jax.jacfwd(lambda v: m.dfun(v.reshape(2, 1), jnp.zeros((2, 1))).ravel())(jnp.zeros(2))
    ev = np.linalg.eigvals(np.asarray(J))
    np.testing.assert_allclose(sorted(ev, key=np.imag), [a - 1j * omega, a + 1j * omega])


def test_wilson_cowan_origin_is_a_stable_fixed_point_without_input():
    m = WilsonCowan(P=0.0, Q=0.0)
    zero = jnp.zeros((2, 3))
    np.testing.assert_array_equal(m.dfun(zero, jnp.zeros((1, 3))), 0.0)
    J = jax.jacfwd(lambda v: m.dfun(v.reshape(2, 1), jnp.zeros((1, 1))).ravel())(jnp.zeros(2))

    # analytic Jacobian at 0: S'(0) = c a σ(−ab)(1 − σ(−ab))
    def slope(a, b, c):
        s = 1.0 / (1.0 + np.exp(a * b))
        return c * a * s * (1.0 - s)

    se, si = slope(m.a_e, m.b_e, m.c_e), slope(m.a_i, m.b_i, m.c_i)
    J_exact = np.array(
        [
            [(-1.0 + m.k_e * se * m.c_ee) / m.tau_e, -m.k_e * se * m.c_ei / m.tau_e],
            [m.k_i * si * m.c_ie / m.tau_i, (-1.0 - m.k_i * si * m.c_ii) / m.tau_i],
        ]
    )
    np.testing.assert_allclose(J, J_exact, rtol=1e-12)
    assert np.all(np.linalg.eigvals(J_exact).real < 0)
    # a coupled network started at the origin stays there exactly; perturbed, it returns
    w = network_weights()
    at_rest = trajectory(m, w, np.zeros((2, N)), 0.3, dt=0.1, n_steps=3000)
    np.testing.assert_array_equal(at_rest, 0.0)
    kicked = trajectory(m, w, np.full((2, N), 0.01), 0.3, dt=0.1, n_steps=3000)
    assert np.abs(kicked[-1]).max() < 1e-4 * 0.01


# --------------------------------------------------------------------------------------------
# Trajectories of a small coupled network: solve_ivp and TVB's Simulator
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_network_trajectory_matches_solve_ivp(case):
    """Deterministic Heun at a small dt against an rtol 1e-10 solve_ivp of the reference
    equations on a 4-region network with random asymmetric weights and no delays."""
    m, w, x0 = case.model, network_weights(), initial_state(case)
    ncv = len(m.cvar)
    cv = list(m.cvar)

    def rhs(_t, y):
        x = y.reshape(m.n_state, N)
        c = case.G * x[cv] @ w.T
        return case.ref(m, x, c.reshape(ncv, N)).ravel()

    t_eval = case.dt * np.arange(1, case.n_steps + 1)
    sol = solve_ivp(
        rhs,
        (0.0, t_eval[-1]),
        x0.ravel(),
        method="DOP853",
        t_eval=t_eval,
        rtol=1e-10,
        atol=1e-12,
    )
    assert sol.success
    want = sol.y.T.reshape(-1, m.n_state, N)
    got = trajectory(m, w, x0, case.G, dt=case.dt, n_steps=case.n_steps)
    # the network must actually move for the comparison to mean something
    assert np.abs(want[-1] - want[0]).max() > 1e-2 * np.abs(want).max()
    assert rel_err(got, want) < 1e-6


def _tvb_trajectory(case: Case, w, x0, G, dt, n_steps, coupling_kind="Linear"):
    pytest.importorskip("tvb")
    n = w.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TVB warns about optional modules it lacks
        from tvb.datatypes.connectivity import Connectivity
        from tvb.simulator import coupling, integrators, monitors, simulator

        conn = Connectivity(
            weights=w.copy(),
            tract_lengths=np.zeros((n, n)),
            centres=np.zeros((n, 3)),
            region_labels=np.array([f"r{i}" for i in range(n)]),
            speed=np.array([np.inf]),
        )
        conn.configure()
        sim = simulator.Simulator(
            model=_tvb_model(case, case.model),
            connectivity=conn,
            coupling=getattr(coupling, coupling_kind)(a=np.array([G])),
            integrator=integrators.EulerDeterministic(dt=dt),
            monitors=(monitors.Raw(),),
            # one history sample = the state at t = 0 (TVB's history is (time, var, node, mode))
            initial_conditions=x0[None, :, :, None].copy(),
            simulation_length=n_steps * dt,
        )
        sim.configure()
        ((t, y),) = sim.run()
    # Raw records after every step: sample k is the state at t = (k + 1)·dt
    np.testing.assert_allclose(t, dt * np.arange(1, n_steps + 1))
    return y[..., 0]


TVB_RUNS = [(c, "Linear") for c in CASES] + [(CASES[2], "Difference")]


@pytest.mark.parametrize(
    ("case", "coupling_kind"), TVB_RUNS, ids=[f"{c.name}-{k}" for c, k in TVB_RUNS]
)
def test_network_trajectory_matches_tvb_simulator(case, coupling_kind):
    """bnmfit's Euler against TVB's EulerDeterministic with Linear (or Difference) coupling:
    both compute the coupling once per step from the current state. TVB keeps its coupling
    history in float32, which limits the agreement to ~1e-8 relative."""
    w, x0 = network_weights(), initial_state(case)
    dt, n_steps = 0.1, 500
    want = _tvb_trajectory(case, w, x0, case.G, dt, n_steps, coupling_kind)
    got = trajectory(
        case.model,
        w,
        x0,
        case.G,
        dt=dt,
        n_steps=n_steps,
        integrator="euler",
        coupling=coupling_kind.lower(),
    )
    assert np.abs(want[-1] - want[0]).max() > 1e-2 * np.abs(want).max()
    assert rel_err(got, want) < 1e-6
