"""Observables: FC, FCD, detrending, band-pass filtering and preprocessing."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bnmfit import observables as obs
from bnmfit.errors import ConfigError
from bnmfit.models import ReducedWongWang
from bnmfit.problem import Observation
from bnmfit.simulate import SimSpec, simulate


def rng_data(t=300, n=6, seed=0):
    return np.random.default_rng(seed).normal(size=(t, n)).cumsum(
        axis=0
    ) * 0.1 + np.random.default_rng(seed + 1).normal(size=(t, n))


# --------------------------------------------------------------------------------------------
# FC
# --------------------------------------------------------------------------------------------


def test_fc_equals_numpy_corrcoef():
    x = rng_data()
    np.testing.assert_allclose(obs.fc(jnp.asarray(x)), np.corrcoef(x.T), rtol=1e-12, atol=1e-14)
    # numpy in, same values
    np.testing.assert_allclose(obs.fc(x), np.corrcoef(x.T), rtol=1e-12, atol=1e-14)


def test_fc_recovers_a_known_correlation():
    """Samples of a multivariate normal with correlation R give FC ≈ R within sampling error
    (standard error of r: (1 − r²)/√T)."""
    R = np.array(
        [[1.0, 0.8, -0.3, 0.0], [0.8, 1.0, -0.1, 0.2], [-0.3, -0.1, 1.0, 0.5], [0.0, 0.2, 0.5, 1.0]]
    )
    sd = np.array([1.0, 3.0, 0.5, 10.0])  # FC does not depend on the scale of a region
    T = 20_000
    x = np.random.default_rng(5).multivariate_normal(np.ones(4), R * np.outer(sd, sd), size=T)
    got = np.asarray(obs.fc(jnp.asarray(x)))
    se = (1.0 - R**2) / np.sqrt(T)
    assert np.all(np.abs(got - R) <= 5 * se + 1e-12)


@settings(max_examples=40, deadline=None)
@given(
    # few distinct shapes: every new shape costs a compilation
    hnp.arrays(
        np.float64,
        st.tuples(st.sampled_from([3, 25]), st.sampled_from([2, 7])),
        elements=st.floats(-1e3, 1e3, allow_nan=False, width=64),
    ),
)
def test_fc_properties(x):
    centred = x - x.mean(axis=0)
    assume(np.all(np.sqrt((centred**2).sum(axis=0)) > 1e-3 * (1 + np.abs(x).max())))
    c = np.asarray(obs.fc(jnp.asarray(x)))
    np.testing.assert_allclose(c, c.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(c), 1.0, rtol=0, atol=1e-12)
    assert np.all(np.abs(c) <= 1.0 + 1e-12)


def test_upper_triangle():
    m = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(obs.upper(m), [1, 2, 3, 6, 7, 11])
    np.testing.assert_array_equal(obs.upper(m, 0), [0, 1, 2, 3, 5, 6, 7, 10, 11, 15])
    np.testing.assert_array_equal(obs.upper(np.stack([m, -m]))[1], [-1, -2, -3, -6, -7, -11])


# --------------------------------------------------------------------------------------------
# FCD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t", "window", "step", "w"),
    [(100, 30, 5, 15), (100, 30, 7, 11), (30, 30, 1, 1), (29, 30, 1, 0)],
)
def test_n_windows(t, window, step, w):
    assert obs.n_windows(t, window, step) == w


def test_fcd_matches_sliding_window_definition():
    x = rng_data(200, 5, seed=3)
    window, step = 40, 8
    got = np.asarray(obs.fcd(jnp.asarray(x), window, step))
    w = obs.n_windows(200, window, step)
    assert got.shape == (w, w) == (21, 21)
    iu = np.triu_indices(5, 1)
    vecs = np.array(
        [np.corrcoef(x[s : s + window].T)[iu] for s in range(0, 200 - window + 1, step)]
    )
    np.testing.assert_allclose(got, np.corrcoef(vecs), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, got.T, atol=1e-14)
    np.testing.assert_allclose(np.diag(got), 1.0, atol=1e-14)
    assert np.all(np.abs(got) <= 1 + 1e-12)


def test_fcd_needs_two_windows():
    with pytest.raises(ConfigError, match="FCD needs at least two windows: 30 TRs give 1"):
        obs.fcd(jnp.ones((30, 3)), 30, 1)


# --------------------------------------------------------------------------------------------
# Detrend, z-score, band-pass
# --------------------------------------------------------------------------------------------


def test_detrend_removes_lines_exactly():
    t = np.arange(500.0)[:, None]
    lines = 3.0 + np.array([[0.5, -2.0, 0.0]]) * t
    noise = rng_data(500, 3, seed=7)
    np.testing.assert_allclose(obs.detrend(jnp.asarray(lines)), 0.0, atol=1e-10)
    np.testing.assert_allclose(
        obs.detrend(jnp.asarray(lines + noise)), obs.detrend(jnp.asarray(noise)), atol=1e-10
    )
    np.testing.assert_allclose(
        obs.detrend(jnp.asarray(noise)),
        scipy.signal.detrend(noise, axis=0, type="linear"),
        atol=1e-12,
    )


def test_zscore():
    z = np.asarray(obs.zscore(jnp.asarray(rng_data() * 5 + 2)))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-13)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-13)


def _amplitude(y, t, f):
    """Least-squares amplitude of the sinusoid of frequency f in y (per column)."""
    basis = np.stack([np.sin(2 * np.pi * f * t), np.cos(2 * np.pi * f * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return np.hypot(coef[0], coef[1])


def _gain(tr, low, high, f, order=2):
    sos = scipy.signal.butter(order, [low, high], btype="bandpass", fs=1 / tr, output="sos")
    return np.abs(scipy.signal.sosfreqz(sos, worN=[f], fs=1 / tr)[1][0]) ** 2


@pytest.mark.parametrize(
    ("f", "passes"), [(0.05, True), (0.03, True), (0.004, False), (0.25, False), (0.4, False)]
)
def test_bandpass_keeps_in_band_and_removes_out_of_band_sinusoids(f, passes):
    tr, low, high = 1.0, 0.01, 0.1
    t = tr * np.arange(1200.0)
    x = np.stack([np.sin(2 * np.pi * f * t + p) for p in (0.0, 1.0)], axis=1)
    y = np.asarray(obs.bandpass(jnp.asarray(x), tr, low, high))
    inner = slice(200, 1000)  # away from the edges
    ratio = _amplitude(y[inner], t[inner], f) / _amplitude(x[inner], t[inner], f)
    # the amplitude is scaled by the forward–backward gain |H(f)|²
    np.testing.assert_allclose(ratio, _gain(tr, low, high, f), rtol=0.02, atol=2e-3)
    if passes:
        assert np.all(ratio > 0.85)
    else:
        assert np.all(ratio < 0.05)


def test_bandpass_approximates_filtfilt_in_the_interior():
    tr, low, high = 0.72, 0.01, 0.1
    x = rng_data(1000, 4, seed=9)
    y = np.asarray(obs.bandpass(jnp.asarray(x), tr, low, high))
    sos = scipy.signal.butter(2, [low, high], btype="bandpass", fs=1 / tr, output="sos")
    ref = scipy.signal.sosfiltfilt(sos, x, axis=0)
    inner = slice(150, 850)
    err = np.sqrt(((y - ref)[inner] ** 2).mean()) / np.sqrt((ref[inner] ** 2).mean())
    assert err < 0.03
    # numpy and JAX inputs give the same result, and it is differentiable
    np.testing.assert_allclose(obs.bandpass(x, tr, low, high), y, rtol=1e-12, atol=1e-14)
    g = jax.grad(lambda v: obs.bandpass(v, tr, low, high)[500].sum())(jnp.asarray(x))
    assert np.all(np.isfinite(g)) and np.abs(g).max() > 0


@pytest.mark.parametrize(("low", "high"), [(0.0, 0.1), (0.1, 0.05), (0.01, 0.5), (-1, 0.1)])
def test_bandpass_rejects_bad_edges(low, high):
    with pytest.raises(
        ConfigError,
        match="band-pass edges must satisfy 0 < low < high < "
        r"Nyquist \(0.5 Hz",
    ):
        obs.bandpass(jnp.ones((50, 2)), 1.0, low, high)


def test_preprocess_composes_the_steps():
    x = jnp.asarray(rng_data(400, 3, seed=11) + 5.0)
    y = obs.preprocess(x, 0.8, discard=10, bandpass=(0.01, 0.1))
    want = obs.zscore(obs.bandpass(obs.detrend(x[10:]), 0.8, 0.01, 0.1))
    assert y.shape == (390, 3)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    raw = obs.preprocess(x, 0.8, detrend=False, zscore=False)
    np.testing.assert_array_equal(raw, x)


@pytest.mark.slow
def test_fc_of_simulated_bold_equals_fc_computed_afterwards():
    """The observation computed on the simulated BOLD (JAX, as in the loss) equals the same
    processing done afterwards in numpy/scipy on the BOLD array."""
    n = 5
    rng = np.random.default_rng(12)
    w = rng.uniform(0, 1, (n, n))
    np.fill_diagonal(w, 0.0)
    spec = SimSpec(dt=2.0, tr=500.0, n_tr=60, checkpoint=False, unroll=1)
    bold = jax.jit(
        lambda w: simulate(ReducedWongWang(), w, jax.random.key(2), spec, G=0.5, sigma=0.02).bold
    )(jnp.asarray(w))
    observation = Observation(tr=0.5, discard=5, bandpass=(0.01, 0.2), fcd_window=20, fcd_step=5)
    seen = observation.observe(bold)
    b = np.asarray(bold)[5:]
    b = scipy.signal.detrend(b, axis=0)
    b = np.asarray(obs.bandpass(b, 0.5, 0.01, 0.2))
    np.testing.assert_allclose(seen.fc, np.corrcoef(b.T), rtol=1e-9, atol=1e-10)
    iu = np.triu_indices(n, 1)
    vecs = np.array([np.corrcoef(b[s : s + 20].T)[iu] for s in range(0, 55 - 20 + 1, 5)])
    np.testing.assert_allclose(seen.fcd, np.corrcoef(vecs), rtol=1e-9, atol=1e-10)
