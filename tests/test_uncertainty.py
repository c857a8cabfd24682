"""Standard errors from the Fisher information of the expected FC: against a finite-difference
Fisher information, the sandwich of the fit that is run, the pairing of seeds that removes
J's noise, the delta method, identifiability flags, correlations, storage."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnmfit import uncertainty
from bnmfit.errors import ConfigError
from bnmfit.observables import upper
from bnmfit.params import FreeParameter, ParameterSet
from tests.test_explore import small_problem

N_JACOBIAN, N_NOISE, RUNS, SEED = 2, 8, 4.0, 5
FREE = (FreeParameter("G", 0.05, 1.0), FreeParameter("w", 0.05, 1.0))
POINT = {"G": 0.3, "w": 0.4}


@pytest.fixture(scope="module")
def problem():
    """5 regions, 120 TRs of 0.8 s, float64 (finite differences need the precision)."""
    p = small_problem(n=5, n_tr=120)
    assert p.weights.dtype == jnp.float64
    return p


def errors(problem, free, point=POINT, n_jacobian=N_JACOBIAN, **kw):
    pset = ParameterSet(free).bind(problem)
    u = pset.init(problem, point)
    fixed = {k: jnp.asarray(v) for k, v in point.items() if k not in pset.names}
    res = uncertainty.standard_errors(
        problem, pset, u, fixed, seed=SEED, runs=RUNS, n_jacobian=n_jacobian, n_noise=N_NOISE, **kw
    )
    return res, pset, u, fixed


def test_fisher_information_matches_finite_differences(problem):
    """Each seed's J by central differences (h = 1e-6 in u) of the same simulation's FC
    (common random numbers), the same noise sample, the same Woodbury inverse and pairing
    of seeds: J and F agree with forward mode to 1e-6, the standard error of G to 1e-5.
    Justification: with a fixed key the simulated FC is smooth in u and the differences'
    error falls as h² (measured: J's relative error 0.5, 9e-3, 9e-5, 9e-7, 9e-9 at
    h = 1e-2 ... 1e-6: a short simulation's FC is very curved in u), so ~1e-8 at h = 1e-6,
    with float64 rounding ~1e-16 / h = 1e-10."""
    pset = ParameterSet(FREE).bind(problem)
    u = pset.init(problem, POINT)
    jkeys, nkeys = uncertainty.noise_keys(SEED, 0, N_JACOBIAN, N_NOISE)
    flat, unravel = jax.flatten_util.ravel_pytree(u)

    @jax.jit
    def fc(x, key):
        return upper(problem.observe(pset.constrain(unravel(x)), key).fc)

    h = 1e-6
    eye = np.eye(flat.size)
    J_fd = np.stack(  # (seed, entry, parameter)
        [
            np.stack([(fc(flat + h * e, k) - fc(flat - h * e, k)) / (2 * h) for e in eye], -1)
            for k in jkeys
        ]
    )
    J, noise = uncertainty.fc_information(problem, pset, u, {}, jkeys, nkeys)
    assert J.shape == J_fd.shape
    np.testing.assert_allclose(J, J_fd, rtol=0, atol=1e-6 * np.abs(J).max())
    F = uncertainty.fisher_information(J, noise, RUNS)
    F_fd = uncertainty.fisher_information(J_fd, noise, RUNS)
    np.testing.assert_allclose(F, F_fd, rtol=1e-6)
    # G alone (w fixed): its standard error through the delta method, D = dG/du
    res, *_ = errors(problem, FREE[:1])
    s = float(jax.nn.sigmoid(u["G"]))
    D = np.array([[(FREE[0].hi - FREE[0].lo) * s * (1 - s)]])
    cov = uncertainty.covariance(uncertainty.fisher_information(J_fd[..., :1], noise, RUNS), D)
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(cov)), rtol=1e-5)
    assert res.labels == ("G",) and res.values[0] == pytest.approx(POINT["G"], rel=1e-12)
    assert res.n_simulations == N_JACOBIAN * (1 + 1) + N_NOISE


def test_the_sandwich_is_the_covariance_of_the_fit_that_is_run(problem):
    """n_fit given: the sandwich H⁻¹ B̄ᵀ Σ_δ B̄ H⁻¹ of the configured loss (fc_rmse +
    0.1 fc_corr here: FC's level is what tells G on this short run), recomputed from the
    same J and noise sample with the Gauss–Newton curvature W = RᵀR written out (R:
    jax.jacfwd of the loss's residuals over the FC upper triangle at the sample's mean
    FC), H over the two Jacobian seeds' pairs, B̄ = W J̄ and
    Σ_δ = (1/runs + 1/n_fit) Σ: equal to 1e-6; the fit's own noise scales the variance by
    (1/runs + 1/n_fit) / (1/runs + 1/(100 n_fit)); with an FCD term in the loss the
    Cramér–Rao bound is reported instead, and says so."""
    from bnmfit.losses import Observed, fc_residual_blocks
    from bnmfit.problem import Observation

    weights = {"fc_rmse": 1.0, "fc_corr": 0.1}
    both = dataclasses.replace(problem, loss_weights=tuple(weights.items()))
    free = FREE[:1]
    res, pset, u, fixed = errors(both, free, n_fit=8)
    assert res.method == "sandwich" and res.n_fit == 8
    jkeys, nkeys = uncertainty.noise_keys(SEED, 0, N_JACOBIAN, N_NOISE)
    J, noise = uncertainty.fc_information(both, pset, u, fixed, jkeys, nkeys)
    params = {**fixed, **pset.constrain(u)}
    expected = np.mean([np.asarray(upper(both.observe(params, k).fc)) for k in nkeys], 0)
    emp = upper(both.empirical.fc)

    def residuals(v):
        return jnp.concatenate(list(fc_residual_blocks(weights, v, emp).values()))

    R = np.asarray(jax.jacfwd(residuals)(jnp.asarray(expected)))
    W = R.T @ R
    J1, J2 = J[0, :, 0], J[1, :, 0]  # two seeds, one parameter
    H = J1 @ W @ J2
    assert H > 0  # the two seeds agree on G's effect
    B = W @ (J1 + J2) / 2
    middle = (1 / RUNS + 1 / 8) * B @ (noise.T @ noise / (N_NOISE - 1)) @ B
    s = float(jax.nn.sigmoid(u["G"]))
    slope = (free[0].hi - free[0].lo) * s * (1 - s)
    np.testing.assert_allclose(res.se[0], slope * np.sqrt(middle) / H, rtol=1e-6)
    many, *_ = errors(both, free, n_fit=800)
    ratio = (1 / RUNS + 1 / 8) / (1 / RUNS + 1 / 800)
    np.testing.assert_allclose((res.se[0] / many.se[0]) ** 2, ratio, rtol=1e-10)
    with_fcd = dataclasses.replace(
        problem,
        observation=Observation(tr=0.8, fcd_window=5),
        empirical=Observed(problem.empirical.fc, jnp.eye(4)),
        loss_weights=(("fc_corr", 1.0), ("fcd_ks", 0.5)),
    )
    bound, *_ = errors(with_fcd, free, n_fit=8)
    plain, *_ = errors(with_fcd, free)
    assert (bound.method, bound.n_fit, plain.method) == ("cramer-rao", 0, "cramer-rao")
    np.testing.assert_array_equal(bound.se, plain.se)


def test_pairing_seeds_removes_the_noise_of_the_jacobians():
    """With J_k = J ± E (noise of zero mean over two seeds) the paired information is
    F(J) − F(E): the square of the mean Jacobian, F(J), counts E's noise as information;
    identical Jacobians give F(J) itself."""
    rng = np.random.default_rng(0)
    J, E = rng.normal(size=(40, 3)), 0.3 * rng.normal(size=(40, 3))
    noise = rng.normal(size=(16, 40))
    noise -= noise.mean(axis=0)
    F = uncertainty.fisher_information
    np.testing.assert_allclose(
        F(np.stack([J + E, J - E]), noise, 2.0), F(J, noise, 2.0) - F(E, noise, 2.0)
    )
    np.testing.assert_allclose(F(np.stack([J, J, J]), noise, 2.0), F(J, noise, 2.0))
    np.testing.assert_allclose(F(J[None], noise, 2.0), F(J, noise, 2.0))


def test_what_the_seeds_cannot_resolve_is_not_identified(problem):
    """G and w act on FC through one combination (the distance to instability, see fit.py):
    on this short simulation the paired information along the other is negative (noise),
    so neither is identified, while the square of the mean Jacobian would have made the
    ridge look informative; G alone is identified."""
    res, pset, u, fixed = errors(problem, FREE)
    assert res.se.tolist() == [np.inf, np.inf] and not res.identified.any()
    jkeys, nkeys = uncertainty.noise_keys(SEED, 0, N_JACOBIAN, N_NOISE)
    J, noise = uncertainty.fc_information(problem, pset, u, fixed, jkeys, nkeys)
    assert np.linalg.eigvalsh(uncertainty.fisher_information(J, noise, RUNS))[0] < 0
    assert np.linalg.eigvalsh(uncertainty.fisher_information(J.mean(0), noise, RUNS))[0] > 0
    alone, *_ = errors(problem, FREE[:1])
    assert alone.identified[0] and alone.se[0] < 0.1 * alone.scale[0]


def test_correlation_matrix_is_a_correlation_matrix(problem):
    """One Jacobian seed (no pairing): both standard errors finite, the correlation matrix
    symmetric, unit diagonal, within [-1, 1], and G and w strongly anticorrelated."""
    res, *_ = errors(problem, FREE, n_jacobian=1)
    corr = res.corr
    assert np.isfinite(res.se).all() and corr.shape == (2, 2)
    np.testing.assert_allclose(corr, corr.T)
    np.testing.assert_array_equal(np.diag(corr), 1.0)
    assert np.all(np.abs(corr) <= 1.0)
    assert corr[0, 1] < -0.5


def test_delta_method_scales_the_unconstrained_error_by_the_transform_slope(problem):
    """se(x) = |dx/du| · se(u) for a sigmoid-transformed parameter, se(u) from the same J
    and noise sample."""
    free = (FreeParameter("G", 0.05, 1.0),)
    res, pset, u, fixed = errors(problem, free)
    jkeys, nkeys = uncertainty.noise_keys(SEED, 0, N_JACOBIAN, N_NOISE)
    J, noise = uncertainty.fc_information(problem, pset, u, fixed, jkeys, nkeys)
    se_u = np.sqrt(uncertainty.least_error_var(J, noise, RUNS))
    s = float(jax.nn.sigmoid(u["G"]))
    slope = (free[0].hi - free[0].lo) * s * (1 - s)
    np.testing.assert_allclose(res.se, slope * se_u, rtol=1e-10)
    assert res.scale[0] == pytest.approx(0.95)


def test_a_parameter_without_effect_is_not_identified(problem):
    """With no structural connections G multiplies zero: its Jacobian column is exactly zero,
    F has a null direction, and G gets an infinite standard error, no correlations and the
    flag; fraction decides for the others."""
    unplugged = dataclasses.replace(problem, weights=jnp.zeros_like(problem.weights))
    res, *_ = errors(unplugged, FREE, n_jacobian=1)
    assert res.se[0] == np.inf and not res.identified[0]
    assert np.isnan(res.corr[0, 1]) and np.isnan(res.corr[1, 0]) and res.corr[0, 0] == 1.0
    assert np.isfinite(res.se[1]) and res.se[1] > 0
    loose, *_ = errors(unplugged, FREE, n_jacobian=1, fraction=1e6)
    assert loose.identified.tolist() == [False, True]


def test_storage_round_trip_and_json(problem):
    res, *_ = errors(problem, FREE, n_jacobian=1)
    back = uncertainty.Uncertainty.from_dict(json.loads(json.dumps(res.to_dict())))
    for f in dataclasses.fields(res):
        a, b = getattr(res, f.name), getattr(back, f.name)
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype
        else:
            assert a == b
    np.testing.assert_allclose(res.relative_se, res.se / res.scale)


def test_labels_and_scales_per_number(problem):
    n = problem.n_regions
    free = (
        FreeParameter("G", 0.05, 1.0),
        FreeParameter("w", 0.05, 1.0, scope="regional"),
        FreeParameter("sigma", 0.0, 1.0, transform="softplus"),
        FreeParameter("weights", 0.0, 2.0, scope="edges", symmetric=True),
    )
    pset = ParameterSet(free).bind(problem)
    labels = [f"R{i}" for i in range(n)]
    names = pset.free_labels(labels)
    rows, cols = pset.edge_index[:2]
    assert names[: 2 + n] == ["G"] + [f"w[R{i}]" for i in range(n)] + ["sigma"]
    assert names[2 + n :] == [f"weights[R{i},R{j}]" for i, j in zip(rows, cols, strict=True)]
    assert pset.free_labels()[1] == "w[0]"
    u = pset.init(problem, {"G": 0.3, "w": 0.4, "sigma": 0.02})
    scales = np.asarray(pset.free_scales(u))
    assert scales.shape == (len(names),)
    np.testing.assert_allclose(scales[: 1 + n], 0.95)
    assert scales[1 + n] == pytest.approx(0.02, rel=1e-6)  # softplus: |value|
    np.testing.assert_allclose(scales[2 + n :], 2.0)
    with pytest.raises(ConfigError, match="region labels are needed"):
        ParameterSet(free[:2]).free_labels()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"n_noise": 3}, "n_noise must be ≥ 4"),
        ({"n_jacobian": 0}, "n_jacobian must be ≥ 1"),
        ({"runs": 0.0}, "runs must be > 0"),
        ({"fraction": -1.0}, "fraction must be > 0"),
        ({"n_fit": 0}, "n_fit must be ≥ 1"),
    ],
)
def test_settings_are_checked(problem, kw, message):
    pset = ParameterSet(FREE).bind(problem)
    args = {"seed": 0, "runs": 1.0, **kw}
    with pytest.raises(ConfigError, match=message):
        uncertainty.standard_errors(problem, pset, pset.init(problem, POINT), {}, **args)
