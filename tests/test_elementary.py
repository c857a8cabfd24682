"""The vectorised elementary functions of bnmfit.elementary against numpy / scipy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from bnmfit import elementary
from bnmfit.elementary import erfinv, expm1, log, polynomial


def test_polynomial_is_horners_rule_from_the_highest_power():
    x = jnp.asarray([-2.0, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(polynomial((2.0, -1.0, 0.5), x), 2 * x**2 - x + 0.5)
    assert polynomial((4.0,), x) == 4.0


def test_float64_log_is_numpys_to_a_few_ulp_with_its_special_values():
    """The hemodynamics' vectorised float64 log (elementary.log): ≤ 3 ulp from numpy over the
    normal range, its edge values, gradient 1/x; in float32 it is XLA's own log."""
    x = np.concatenate(
        [
            np.geomspace(np.finfo(np.float64).tiny, 1e308, 200_001),
            np.linspace(0.5, 2.0, 200_001),
            1.0 + np.linspace(-1e-9, 1e-9, 2001),
        ]
    )
    want = np.log(x)
    got = np.asarray(jax.jit(log)(jnp.asarray(x)))
    assert np.max(np.abs(got - want) / np.spacing(np.abs(want) + (want == 0))) <= 3
    edges = jnp.asarray([0.0, 1e-310, 1.0, np.inf, -1.0, -np.inf, np.nan])
    np.testing.assert_array_equal(
        log(edges), [-np.inf, -np.inf, 0.0, np.inf, np.nan, np.nan, np.nan]
    )
    v = jnp.asarray([0.3, 1.0, 7.5])
    np.testing.assert_allclose(jax.vmap(jax.grad(log))(v), 1.0 / v, rtol=1e-15)
    x32 = jnp.asarray(x[200_001:400_002], jnp.float32)
    np.testing.assert_array_equal(log(x32), jnp.log(x32))


@pytest.mark.parametrize("dtype, max_ulp", [(np.float32, 2), (np.float64, 3)])
def test_expm1_is_numpys_to_a_few_ulp_with_its_special_values(dtype, max_ulp):
    """The transfer function's expm1 (one exp on CPU): close to numpy's on both sides of the
    switch at |z| = 1/2, down to tiny arguments, with expm1's limits and gradient exp(z)."""
    z = np.concatenate(
        [
            np.linspace(-80, 80, 100_001),
            np.linspace(-0.6, 0.6, 100_001),
            np.geomspace(1e-30, 1, 2001),
            -np.geomspace(1e-30, 1, 2001),
        ]
    ).astype(dtype)
    want = np.expm1(z.astype(np.float64))
    got = np.asarray(jax.jit(expm1)(jnp.asarray(z)), np.float64)
    ulp = np.spacing(np.abs(want).astype(dtype)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= max_ulp
    edges = jnp.asarray([np.inf, -np.inf, np.nan, 0.0, 1e3], dtype)
    np.testing.assert_array_equal(expm1(edges), [np.inf, -1.0, np.nan, 0.0, np.inf])
    v = jnp.asarray([-3.0, -0.4, 0.0, 1e-8, 0.45, 0.55, 5.0], dtype)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(expm1))(v), np.exp(np.asarray(v)), rtol=4 * np.finfo(dtype).eps
    )


def test_erfinv_is_exact_to_a_few_ulp_up_to_the_largest_uniform():
    """The noise's erfinv (Giles' polynomials) on every uniform the generator can produce,
    k·2⁻²³ mapped onto [−1 + 2⁻²⁴, 1), within 5 float32 ulp of the exact value (XLA's own
    erf_inv is off by tens of ulp next to ±1, 65 here)."""
    low = np.nextafter(np.float32(-1), np.float32(0))
    u = (np.arange(2**23) / 2**23 * (1 - np.float64(low)) + low).astype(np.float32)
    want = scipy.special.erfinv(u.astype(np.float64))
    got = np.asarray(jax.jit(erfinv)(jnp.asarray(u)), np.float64)
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_switch_turns_every_stand_in_into_jax_numpys_own(dtype, monkeypatch):
    """FAST_MATH off: log, expm1 and erfinv are jax.numpy's / XLA's, value for value; on, they
    agree with those to rounding, batched (vmap) as unbatched (XLA's vectorised exp may round
    a batch differently by an ulp)."""
    x = jnp.asarray(np.geomspace(1e-3, 1e3, 4001), dtype)
    z = jnp.asarray(np.linspace(-30.0, 3.0, 4001), dtype)
    u = jnp.asarray(np.linspace(-0.999, 0.999, 4001), dtype)
    cases = [
        (elementary.log, jnp.log, x),
        (elementary.expm1, jnp.expm1, z),
        (elementary.erfinv, jax.scipy.special.erfinv, u),
    ]
    fast = [np.asarray(jax.jit(f)(a)) for f, _, a in cases]
    batched = [np.asarray(jax.jit(jax.vmap(f))(a.reshape(-1, 1)))[:, 0] for f, _, a in cases]
    monkeypatch.setattr(elementary, "FAST_MATH", False)
    for (f, own, a), got, got_batched in zip(cases, fast, batched, strict=True):
        want = np.asarray(jax.jit(own)(a))
        # a new function: jit's cache keeps what was traced before the switch (documented)
        np.testing.assert_array_equal(np.asarray(jax.jit(lambda a, f=f: f(a))(a)), want)
        np.testing.assert_allclose(got_batched, got, rtol=4 * np.finfo(dtype).eps, atol=0)
        # erfinv is a single-precision polynomial (the noise is drawn in float32)
        eps = np.finfo(np.float32 if f is elementary.erfinv else dtype).eps
        np.testing.assert_allclose(got, want, rtol=64 * eps, atol=0)
