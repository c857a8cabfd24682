"""The structural connectome: validation, normalisation, symmetrisation and delays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnmfit.connectome import NORMALISATIONS, Connectome, delay_steps
from bnmfit.errors import ConfigError, DataError


def raw(n=5, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.0, 100.0, (n, n))
    w[rng.uniform(size=(n, n)) < 0.3] = 0.0
    w[0, 1] = 50.0  # at least one off-diagonal connection
    return w


def lengths(n=5, seed=1):
    ln = np.random.default_rng(seed).uniform(10.0, 150.0, (n, n))
    return 0.5 * (ln + ln.T)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _with(value, at=(1, 2), n=4):
    w = np.ones((n, n))
    w[at] = value
    return w


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": np.ones((3, 4))}, r"weights must be a square matrix .* got shape \(3, 4\)"),
        ({"weights": np.ones(4)}, r"weights must be a square matrix .* got shape \(4,\)"),
        (
            {"weights": np.ones((4, 4)), "lengths": np.ones((3, 3))},
            "lengths has 3 regions but the weights have 4: give both matrices for the same",
        ),
        (
            {"weights": np.ones((4, 4)), "lengths": np.ones((4, 5))},
            r"lengths must be a square matrix .* got shape \(4, 5\)",
        ),
        (
            {"weights": _with(np.nan)},
            r"weights has 1 non-finite entries \(first at row 1, column 2\): replace NaN/inf by 0",
        ),
        (
            {"weights": _with(np.inf, at=(3, 0))},
            r"weights has 1 non-finite entries \(first at row 3, column 0\)",
        ),
        ({"weights": np.ones((4, 4)), "lengths": _with(np.nan)}, "lengths has 1 non-finite"),
        (
            {"weights": _with(-2.5)},
            r"weights has 1 negative entries \(first -2.5 at row 1, column 2\): structural weights",
        ),
        ({"weights": np.ones((4, 4)), "lengths": _with(-1.0)}, "lengths has 1 negative entries"),
        (
            {"weights": np.ones((3, 3)), "labels": ["a", "b", "a"]},
            "region labels must be unique, duplicated: a",
        ),
        (
            {"weights": np.ones((3, 3)), "labels": ["a", "b"]},
            "2 labels given for 3 regions: give one label per region",
        ),
        ({"weights": np.eye(3)}, "the weights are all zero off the diagonal"),
    ],
)
def test_validation_errors(kwargs, match):
    with pytest.raises(DataError, match=match):
        Connectome.from_arrays(**kwargs)


def test_unknown_normalisation_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown normalisation 'sum': use one of none, max"):
        Connectome.from_arrays(raw(), normalise="sum")


def test_defaults_labels_lengths_and_immutability():
    c = Connectome.from_arrays(raw(3), normalise="none")
    assert c.labels == ("region-001", "region-002", "region-003")
    np.testing.assert_array_equal(c.lengths, np.zeros((3, 3)))
    assert c.n_regions == 3 and c.normalisation == "none" and not c.symmetric
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.labels = ("x",)  # type: ignore[misc]
    labelled = Connectome.from_arrays(raw(3), labels=[1, 2, 3])
    assert labelled.labels == ("1", "2", "3")


# --------------------------------------------------------------------------------------------
# Normalisation, diagonal, symmetrisation
# --------------------------------------------------------------------------------------------


def _off_diagonal(w):
    w = np.array(w, float)
    np.fill_diagonal(w, 0.0)
    return w


def test_normalisation_none_only_zeroes_the_diagonal():
    w = raw()
    c = Connectome.from_arrays(w, normalise="none")
    np.testing.assert_array_equal(c.weights, _off_diagonal(w))


def test_normalisation_max():
    w = raw()
    c = Connectome.from_arrays(w, normalise="max")
    off = _off_diagonal(w)
    np.testing.assert_allclose(c.weights, off / off.max(), rtol=1e-15)
    assert c.weights.max() == 1.0


def test_normalisation_in_strength():
    w = raw()
    w[3, :] = 0.0  # a region receiving nothing stays at zero (no division by zero)
    c = Connectome.from_arrays(w, normalise="in-strength")
    sums = c.weights.sum(axis=1)
    np.testing.assert_allclose(np.delete(sums, 3), 1.0, rtol=1e-14)
    assert sums[3] == 0.0 and np.all(np.isfinite(c.weights))
    off = _off_diagonal(w)
    np.testing.assert_allclose(c.weights[0], off[0] / off[0].sum(), rtol=1e-14)


def test_normalisation_log1p():
    w = raw()
    c = Connectome.from_arrays(w, normalise="log1p")
    want = np.log1p(_off_diagonal(w))
    np.testing.assert_allclose(c.weights, want / want.max(), rtol=1e-14)


@pytest.mark.parametrize("normalise", NORMALISATIONS)
@pytest.mark.parametrize("symmetrise", [False, True])
def test_diagonal_is_zero_and_weights_non_negative(normalise, symmetrise):
    w = raw() + 30.0 * np.eye(5)
    c = Connectome.from_arrays(w, lengths(), normalise=normalise, symmetrise=symmetrise)
    np.testing.assert_array_equal(np.diag(c.weights), 0.0)
    assert np.all(c.weights >= 0.0) and c.normalisation == normalise
    assert c.symmetric is symmetrise


def test_symmetrise_averages_both_matrices_with_their_transpose():
    w, ln = raw(), np.random.default_rng(3).uniform(1, 9, (5, 5))
    c = Connectome.from_arrays(w, ln, normalise="none", symmetrise=True)
    off = _off_diagonal(w)
    np.testing.assert_allclose(c.weights, 0.5 * (off + off.T), rtol=1e-15)
    np.testing.assert_allclose(c.lengths, 0.5 * (ln + ln.T), rtol=1e-15)
    np.testing.assert_array_equal(c.weights, c.weights.T)
    # symmetrise before normalising: max-normalised result is symmetric too
    m = Connectome.from_arrays(w, ln, normalise="max", symmetrise=True)
    np.testing.assert_array_equal(m.weights, m.weights.T)
    assert m.weights.max() == 1.0


def test_inputs_are_not_modified():
    w, ln = raw(), lengths()
    w0, ln0 = w.copy(), ln.copy()
    Connectome.from_arrays(w, ln, normalise="log1p", symmetrise=True)
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(ln, ln0)


def test_isolated_regions():
    w = raw(4)
    w[2, :] = 0.0
    w[:, 2] = 0.0
    c = Connectome.from_arrays(w, labels=["a", "b", "c", "d"])
    assert c.isolated == ("c",)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3), st.sampled_from(["max", "in-strength"]))
def test_scale_invariant_normalisations(seed, scale, normalise):
    w = raw(6, seed)
    a = Connectome.from_arrays(w, normalise=normalise).weights
    b = Connectome.from_arrays(scale * w, normalise=normalise).weights
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32 - 1), st.permutations(range(6)), st.sampled_from(list(NORMALISATIONS)))
def test_normalisation_commutes_with_relabelling(seed, perm, normalise):
    w, ln = raw(6, seed), lengths(6, seed)
    p = np.array(perm)
    a = Connectome.from_arrays(w, ln, normalise=normalise)
    b = Connectome.from_arrays(w[np.ix_(p, p)], ln[np.ix_(p, p)], normalise=normalise)
    np.testing.assert_allclose(b.weights, a.weights[np.ix_(p, p)], rtol=1e-14)


# --------------------------------------------------------------------------------------------
# Delays
# --------------------------------------------------------------------------------------------


def test_delays_are_lengths_over_speed():
    ln = lengths()
    c = Connectome.from_arrays(raw(), ln)
    np.testing.assert_allclose(c.delays(5.0), ln / 5.0, rtol=1e-15)  # mm / (mm/ms) = ms
    np.testing.assert_array_equal(c.delays(np.inf), np.zeros((5, 5)))
    np.testing.assert_array_equal(c.delays(float("inf")), np.zeros((5, 5)))


@pytest.mark.parametrize("speed", [0.0, -3.0, float("nan")])
def test_delays_reject_non_positive_speed(speed):
    c = Connectome.from_arrays(raw())
    with pytest.raises(ConfigError, match="conduction speed must be > 0 mm/ms"):
        c.delays(speed)


def test_delay_steps_round_to_the_nearest_step():
    d = np.array([[0.0, 0.26, 0.24], [1.04, 0.149, 0.151], [2.0, 0.05 - 1e-9, 12.345]])
    got = delay_steps(d, 0.1)
    np.testing.assert_array_equal(got, [[0, 3, 2], [10, 1, 2], [20, 0, 123]])
    assert got.dtype == np.int32
