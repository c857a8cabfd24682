"""Losses between simulated and empirical observables."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bnmfit import losses, observables
from bnmfit.config import validate_config
from bnmfit.errors import ConfigError
from bnmfit.losses import (
    LossSpec,
    Observed,
    combined,
    fc_corr,
    fc_rmse,
    fcd_ks,
    ks_distance,
    loss_spec,
    parse_loss,
)
from bnmfit.models import ReducedWongWang
from bnmfit.observables import upper
from bnmfit.problem import Observation, Problem
from bnmfit.simulate import SimSpec

# jitted once per input shape (the width of the smooth KS is traced, not static)
ks_exact = jax.jit(ks_distance)
ks_smooth = jax.jit(lambda a, b, s: ks_distance(a, b, s))


def random_fc(n=8, t=50, seed=0):
    return np.corrcoef(np.random.default_rng(seed).normal(size=(t, n)).T)


def symmetric_from_upper(u, n):
    m = np.eye(n)
    i, j = np.triu_indices(n, 1)
    m[i, j] = u
    m[j, i] = u
    return m


# --------------------------------------------------------------------------------------------
# FC losses
# --------------------------------------------------------------------------------------------


def test_fc_corr_identical_is_zero_and_anticorrelated_is_two():
    emp = random_fc()
    assert float(fc_corr(jnp.asarray(emp), jnp.asarray(emp))) == pytest.approx(0.0, abs=1e-14)
    anti = symmetric_from_upper(0.1 - 0.5 * upper(emp), 8)  # upper triangle: affine, slope < 0
    assert float(fc_corr(jnp.asarray(anti), jnp.asarray(emp))) == pytest.approx(2.0, abs=1e-14)
    # the diagonal and the lower triangle are ignored
    other = emp.copy()
    other[np.tril_indices(8)] = 7.0
    assert float(fc_corr(jnp.asarray(other), jnp.asarray(emp))) == pytest.approx(0.0, abs=1e-14)


def test_fc_corr_equals_one_minus_pearson_of_upper_triangles():
    a, b = random_fc(seed=1), random_fc(seed=2)
    r = scipy.stats.pearsonr(upper(a), upper(b)).statistic
    assert float(fc_corr(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(1 - r, rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_numerically_constant_fc_has_no_correlation(dtype):
    """A saturated network: every region's BOLD the same up to rounding. Its FC is 1 up to
    rounding noise, and correlating that noise with the data would give a finite, meaningless
    loss near 1. It is NaN (a diverged point) instead, while a strongly but genuinely
    synchronised FC keeps its finite loss."""
    rng = np.random.default_rng(0)
    emp = jnp.asarray(random_fc(), dtype)
    t = rng.normal(size=(200, 1))
    ulp = np.finfo(dtype).eps
    same = jnp.asarray(t + 3 * ulp * rng.normal(size=(200, 8)) * np.abs(t), dtype)
    sim = observables.fc(same)
    assert np.isnan(float(fc_corr(sim, emp)))
    jittered = jnp.asarray(np.ones((8, 8)) - 4 * ulp * rng.random((8, 8)), dtype)
    assert np.isnan(float(fc_corr(jittered, emp)))
    synchronised = jnp.asarray(t + 0.05 * rng.normal(size=(200, 8)), dtype)
    fc = observables.fc(synchronised)
    assert float(upper(fc).min()) > 0.99 and np.isfinite(float(fc_corr(fc, emp)))
    # the gradient of a resolved loss is untouched by the check
    g = jax.grad(lambda x: fc_corr(observables.fc(x), emp))(synchronised)
    assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).max()) > 0


def test_fc_rmse():
    emp = random_fc()
    shifted = emp + 0.1 * (1 - np.eye(8))
    assert float(fc_rmse(jnp.asarray(shifted), jnp.asarray(emp))) == pytest.approx(0.1, rel=1e-12)
    a, b = random_fc(seed=3), random_fc(seed=4)
    want = np.sqrt(np.mean((upper(a) - upper(b)) ** 2))
    assert float(fc_rmse(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(want, rel=1e-12)
    assert float(fc_rmse(jnp.asarray(a), jnp.asarray(a))) == 0.0


# --------------------------------------------------------------------------------------------
# KS distance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("na", "nb", "shift", "seed"),
    [(20, 15, 0.5, 0), (100, 100, 0.0, 1), (7, 300, -1.0, 2), (1, 1, 1.0, 3)],
)
def test_ks_distance_equals_scipy(na, nb, shift, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=na), rng.normal(shift, size=nb)
    want = scipy.stats.ks_2samp(a, b).statistic
    assert float(ks_exact(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(want, abs=1e-15)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, st.sampled_from([1, 4, 13]), elements=st.integers(-5, 5).map(float)),
    hnp.arrays(np.float64, st.sampled_from([2, 13]), elements=st.integers(-5, 5).map(float)),
)
def test_ks_distance_equals_scipy_with_ties(a, b):
    want = scipy.stats.ks_2samp(a, b, method="asymp").statistic  # the method sets the p-value
    assert float(ks_exact(jnp.asarray(a), jnp.asarray(b))) == pytest.approx(want, abs=1e-12)


def test_smooth_ks_tends_to_the_exact_distance():
    rng = np.random.default_rng(0)
    for a, b in [
        (np.array([0.0]), np.array([1.0])),
        (rng.normal(size=20), rng.normal(0.5, size=15)),
        (np.round(rng.normal(size=40), 1), np.round(rng.normal(0.3, size=25), 1)),
    ]:
        a, b = jnp.asarray(a), jnp.asarray(b)
        exact = float(ks_exact(a, b))
        gaps = [abs(float(ks_smooth(a, b, s)) - exact) for s in (1e-1, 1e-2, 1e-3, 1e-5, 1e-7)]
        assert gaps[-1] < 1e-5
        assert gaps[-1] <= gaps[-2] <= gaps[-3] + 1e-12
        # and the smooth version is never above the exact one
        assert float(ks_smooth(a, b, 1e-2)) <= exact + 1e-12
    # the eager (unjitted) call gives the same
    assert float(ks_distance(a, b, 1e-3)) == pytest.approx(float(ks_smooth(a, b, 1e-3)), rel=1e-14)


def test_smooth_ks_has_gradients():
    rng = np.random.default_rng(1)
    a, b = jnp.asarray(rng.normal(size=30)), jnp.asarray(rng.normal(0.5, size=30))
    g = jax.jit(jax.grad(lambda x: ks_distance(x, b, 0.05)))(a)
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 1e-3
    # shifting a towards b reduces the distance: the gradient points that way on average
    assert float(g.sum()) < 0.0


def test_fcd_ks_compares_upper_triangles():
    s, e = random_fc(12, seed=5), random_fc(12, seed=6)
    want = scipy.stats.ks_2samp(upper(s), upper(e)).statistic
    assert float(fcd_ks(jnp.asarray(s), jnp.asarray(e))) == pytest.approx(want, abs=1e-15)


# --------------------------------------------------------------------------------------------
# Combined objective
# --------------------------------------------------------------------------------------------


def test_combined_weighs_the_named_terms():
    sim = Observed(jnp.asarray(random_fc(seed=7)), jnp.asarray(random_fc(10, seed=8)))
    emp = Observed(jnp.asarray(random_fc(seed=9)), jnp.asarray(random_fc(10, seed=10)))
    got = combined({"fc_corr": 2.0, "fc_rmse": 0.5, "fcd_ks": 3.0}, sim, emp)
    want = (
        2.0 * fc_corr(sim.fc, emp.fc)
        + 0.5 * fc_rmse(sim.fc, emp.fc)
        + 3.0 * fcd_ks(sim.fcd, emp.fcd)
    )
    assert float(got) == pytest.approx(float(want), rel=1e-14)
    assert float(combined({"fc_corr": 1.0}, sim, emp)) == pytest.approx(
        float(fc_corr(sim.fc, emp.fc)), rel=1e-15
    )
    smooth = combined({"fcd_ks": 1.0}, sim, emp, smooth=0.01)
    assert float(smooth) == pytest.approx(float(fcd_ks(sim.fcd, emp.fcd, 0.01)), rel=1e-14)
    assert set(losses.LOSSES) == {"fc_corr", "fc_rmse", "fcd_ks"}


def test_debiased_fc_terms_remove_the_noise_of_the_mean():
    """K noisy copies of an expected FC μ (edge noise of SD 0.1, correlated across edges
    through a common component, as a run's FC is): over 400 draws the loss of their mean
    is biased (1 − r and RMSE² larger than μ's, by more than 10 standard errors of the
    mean), the debiased 1 − r and RMSE² equal μ's within 3 standard errors, for K = 2 and
    8 (RMSE itself keeps the small bias of a square root of an unbiased estimate)."""
    n, draws = 12, 400
    rng = np.random.default_rng(3)
    mu = symmetric_from_upper(0.4 * upper(random_fc(n, t=30, seed=4)) + 0.2, n)
    emp = symmetric_from_upper(upper(mu) + 0.15 * rng.normal(size=n * (n - 1) // 2), n)
    want = [float(fc_corr(mu, emp)), float(fc_rmse(mu, emp)) ** 2]
    terms = jax.jit(losses.debiased_fc_terms)
    for k in (2, 8):
        plain, debiased = [], []
        for _ in range(draws):
            noise = 0.1 * rng.normal(size=(k, n * (n - 1) // 2))
            noise += 0.05 * rng.normal(size=(k, 1))
            fcs = np.stack([symmetric_from_upper(upper(mu) + e, n) for e in noise])
            m = fcs.mean(axis=0)
            plain.append([float(fc_corr(m, emp)), float(fc_rmse(m, emp)) ** 2])
            got = terms(jnp.asarray(fcs), jnp.asarray(emp))
            debiased.append([float(got["fc_corr"]), float(got["fc_rmse"]) ** 2])
        for values, biased in ((np.array(plain), True), (np.array(debiased), False)):
            se = values.std(axis=0, ddof=1) / np.sqrt(draws)
            z = (values.mean(axis=0) - want) / se
            if biased:
                assert np.all(z > 10), (k, z)
            else:
                assert np.all(np.abs(z) < 3), (k, z)
    o = Observed(jnp.asarray(emp))
    with pytest.raises(ConfigError, match="fcd_ks has no noise-debiased form"):
        losses.combined_debiased({"fc_corr": 1.0, "fcd_ks": 1.0}, jnp.stack([mu, mu]), o)
    fcs = jnp.asarray(np.stack([mu, emp]))
    got = losses.combined_debiased({"fc_corr": 2.0, "fc_rmse": 0.5}, fcs, o)
    parts = losses.debiased_fc_terms(fcs, o.fc)
    assert float(got) == pytest.approx(float(2.0 * parts["fc_corr"] + 0.5 * parts["fc_rmse"]))


def test_fc_residual_blocks_square_to_the_weighted_terms():
    """Each block's squared norm is weight · term (what Gauss–Newton fits and the standard
    errors' curvature uses); FCD has no residual form."""
    sim, emp = jnp.asarray(random_fc(seed=11)), jnp.asarray(random_fc(seed=12))
    weights = {"fc_corr": 2.0, "fc_rmse": 0.3}
    blocks = losses.fc_residual_blocks(weights, upper(sim), upper(emp))
    assert list(blocks) == ["fc_corr", "fc_rmse"]
    assert float(jnp.sum(blocks["fc_corr"] ** 2)) == pytest.approx(2.0 * float(fc_corr(sim, emp)))
    assert float(jnp.sum(blocks["fc_rmse"] ** 2)) == pytest.approx(0.3 * float(fc_rmse(sim, emp)))
    with pytest.raises(ConfigError, match="fcd_ks has no residual form"):
        losses.fc_residual_blocks({"fcd_ks": 1.0}, upper(sim), upper(emp))


def test_unknown_loss_name_is_a_config_error():
    o = Observed(jnp.eye(3))
    with pytest.raises(
        ConfigError,
        match=r"unknown loss 'fc_corrr' \(did you mean 'fc_corr'\?\): "
        "use one of fc_corr, fc_rmse, fcd_ks",
    ):
        combined({"fc_corrr": 1.0, "fc_corr": 1.0}, o, o)
    # a Problem checks its loss terms when it is made, before anything runs
    kw = {
        "model": ReducedWongWang(),
        "weights": jnp.ones((3, 3)),
        "spec": SimSpec(dt=1.0, tr=100.0, n_tr=10),
        "observation": Observation(tr=0.1),
        "empirical": o,
    }
    with pytest.raises(ConfigError, match="unknown loss 'fcd'.*: use one of fc_corr, fc_rmse"):
        Problem(**kw, loss_weights=(("fcd", 1.0),))
    with pytest.raises(ConfigError, match="the loss uses fcd_ks but no FCD is available"):
        Problem(**kw, loss_weights=(("fcd_ks", 1.0),))


# --------------------------------------------------------------------------------------------
# The configured loss: expressions, terms, offset
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "terms", "offset"),
    [
        ("1 - correlation(fc, empirical_fc)", {"fc_corr": 1.0}, 0.0),
        ("1 - corr(empirical_fc, fc)", {"fc_corr": 1.0}, 0.0),
        ("fc_corr(fc, empirical_fc)", {"fc_corr": 1.0}, 0.0),
        ("rmse(fc, empirical_fc)", {"fc_rmse": 1.0}, 0.0),
        (
            "0.5 * fcd_ks(fcd, empirical_fcd) + rmse(fc, empirical_fc)",
            {"fcd_ks": 0.5, "fc_rmse": 1.0},
            0.0,
        ),
        ("2 * (1 - correlation(fc, empirical_fc)) / 4 + 0.1", {"fc_corr": 0.5}, 0.1),
        ("-(-rmse(fc, empirical_fc)) * 3e-1", {"fc_rmse": 0.3}, 0.0),
        (
            "rmse(fc,empirical_fc) + rmse(fc, empirical_fc) - 0*ks(fcd, empirical_fcd)",
            {"fc_rmse": 2.0},
            0.0,
        ),
        (
            "2 - correlation(fc, empirical_fc) - correlation(fc, empirical_fc)",
            {"fc_corr": 2.0},
            0.0,
        ),
        ("1 - correlation(fc, empirical_fc) + 1", {"fc_corr": 1.0}, 1.0),
    ],
)
def test_loss_expressions(expression, terms, offset):
    spec = parse_loss(expression)
    assert dict(spec.terms) == pytest.approx(terms)
    assert spec.offset == pytest.approx(offset)
    assert spec.expression == expression
    assert set(dict(spec.terms)) <= set(losses.LOSSES)


@pytest.mark.parametrize(
    ("expression", "pattern"),
    [
        ("", r"the loss expression is empty"),
        (
            "correlation(fc, empirical_fc)",
            r"gives the term fc_corr the weight -1; a loss is minimised.*"
            r"write 1 - correlation\(fc, empirical_fc\)",
        ),
        ("rmse(fc, empirical_fc) * rmse(fc, empirical_fc)", r"product of two loss terms"),
        ("1 / rmse(fc, empirical_fc)", r"division by a loss term"),
        ("rmse(fc, empirical_fc) / 0", r"division by zero"),
        (
            "rmse(fc, empirical_fcd)",
            r"rmse\(\) at column 1 compares fc and empirical_fc, got fc, empirical_fcd",
        ),
        ("rmse(fc)", r"compares fc and empirical_fc, got fc"),
        ("fcd_ks(fc, empirical_fc)", r"compares fcd and empirical_fcd"),
        ("fc", r"the observable 'fc' at column 1 must be an argument of a function"),
        ("rmse(bold, empirical_fc)", r"unknown observable 'bold' at column 6"),
        ("__import__('os')", r"unexpected character \"'\" at column 12"),
        ("1 -", r"expected a number, a function or '\(' at column 4, got the end"),
        ("(1 - correlation(fc, empirical_fc)", r"expected '\)' at column 35, got the end"),
        ("1 - correlation(fc, empirical_fc))", r"unexpected '\)' at column 34"),
        ("3 $ 4", r"unexpected character '\$' at column 3"),
        ("0.5", r"has no loss term \(it is the constant 0.5\)"),
        ("exp(rmse(fc, empirical_fc))", r"unknown function 'exp'"),
    ],
)
def test_loss_expression_errors(expression, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        parse_loss(expression)
    assert str(e.value).startswith("loss.expression: ")


def test_loss_spec_from_config():
    assert loss_spec(validate_config({})) == LossSpec((("fc_corr", 1.0),))
    cfg = validate_config({"loss": {"terms": {"fc_corr": 1.0, "fc_rmse": 0.0}}})
    assert loss_spec(cfg).terms == (("fc_corr", 1.0),)
    cfg = validate_config({"loss": {"expression": "1 - correlation(fc, empirical_fc) + 0.2"}})
    spec = loss_spec(cfg)
    assert spec.terms == (("fc_corr", 1.0),) and spec.offset == pytest.approx(0.2)
    assert spec.describe() == "1·fc_corr + 0.2"


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

# few distinct shapes: every new shape costs a compilation
series = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([3, 6]), st.integers(10, 60))


def _fc_pair(seed, n, t):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(t, n))
    return (
        np.corrcoef((base + rng.normal(size=(t, n))).T),
        np.corrcoef((base + 2 * rng.normal(size=(t, n))).T),
    )


@settings(max_examples=30, deadline=None)
@given(series, st.randoms(use_true_random=False))
def test_losses_invariant_to_region_permutation(params, rnd):
    seed, n, t = params
    sim, emp = _fc_pair(seed, n, t)
    p = np.array(rnd.sample(range(n), n))
    ps, pe = sim[np.ix_(p, p)], emp[np.ix_(p, p)]
    for loss in (fc_corr, fc_rmse, fcd_ks):
        assert float(loss(jnp.asarray(ps), jnp.asarray(pe))) == pytest.approx(
            float(loss(jnp.asarray(sim), jnp.asarray(emp))), abs=1e-12
        )


@settings(max_examples=30, deadline=None)
@given(series)
def test_fc_corr_is_in_zero_two(params):
    sim, emp = _fc_pair(*params)
    assume(np.ptp(upper(sim)) > 1e-9 and np.ptp(upper(emp)) > 1e-9)
    v = float(fc_corr(jnp.asarray(sim), jnp.asarray(emp)))
    assert -1e-12 <= v <= 2.0 + 1e-12
    for loss in (fc_rmse, fcd_ks):
        assert float(loss(jnp.asarray(sim), jnp.asarray(emp))) >= 0.0
    assert float(fcd_ks(jnp.asarray(sim), jnp.asarray(emp))) <= 1.0
