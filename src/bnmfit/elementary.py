"""Elementary functions that XLA's CPU code computes slowly, as vectorisable polynomials.

On CPU, XLA evaluates a float64 ``log`` by calling the C library once per element, an
``expm1`` as an exp, a log and a division, and ``erf_inv`` through log1p. The simulation
loop calls these once or twice per region and step, so each costs a measurable share of a
run. Here each is
a polynomial plus, where needed, one exp or log, accurate to a few units in the last place
(the tests compare them with numpy / scipy over their whole working range). Only jax.numpy
operations and ``jax.custom_jvp`` are used: the same code on every backend, under jit, vmap
and grad.

One switch, :data:`FAST_MATH` (default True), turns them all on or off; off, each function is
jax.numpy's / XLA's own. It is read when a function is traced, so set it before the first
simulation is compiled (``bnmfit.elementary.FAST_MATH = False``). What each buys, W1 (80
regions, 60 s at dt = 4 ms) on a shared 2-core AVX-512 Xeon, medians of interleaved runs,
forward / gradient: erfinv 1.26× / 1.18× (float32), log 1.16× / 1.09× (float64 only), expm1
1.04× / 1.02× (float32; it is also the more accurate: 2 ulp, XLA's 5); all together 1.36× /
1.19× in float32. Switching them off changes results by float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

__all__ = ["FAST_MATH", "erfinv", "expm1", "log", "polynomial"]

#: the polynomial stand-ins below (True) or jax.numpy's own functions (False); read at trace time
FAST_MATH = True

#: 1/(2k + 1), k = 11…0: log m = 2·atanh(s) = 2 Σ s^(2k+1)/(2k + 1), s = (m − 1)/(m + 1)
_ATANH_SERIES = tuple(1.0 / (2 * k + 1) for k in range(11, -1, -1))
#: Giles (2010), "Approximating the erfinv function", single precision: erfinv(x) = x·p(w)
#: with w = −log(1 − x²), p a polynomial in w − 2.5 for w < 5, else in √w − 3
_ERFINV_CENTRAL = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
)
_ERFINV_TAIL = (
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
)


def polynomial(coefficients: Sequence[float], x: Array) -> Array:
    """Σ c_k x^k by Horner's rule, coefficients from the highest power down."""
    p = coefficients[0]
    for c in coefficients[1:]:
        p = c + x * p
    return p


@jax.custom_jvp
def log(x: Array) -> Array:
    """Natural logarithm; in float64 evaluated here so that it vectorises (float32: XLA's).

    x = m·2^e with m in [√½, √2), and log m = 2·atanh(s) summed to s^23 (|s| ≤ 0.172:
    truncation < 1e-19); within 3 units in the last place of ``numpy.log``, with log 0 = −inf
    (also for subnormal x, as XLA's log on CPU), log ∞ = ∞ and NaN for negative or NaN x, so
    a diverging simulation still shows.
    """
    if x.dtype != jnp.float64 or not FAST_MATH:
        return jnp.log(x)
    m, e = jnp.frexp(x)  # m in [0.5, 1)
    low = m < np.sqrt(0.5)
    m = jnp.where(low, 2.0 * m, m)
    e = jnp.where(low, e - 1, e).astype(x.dtype)
    s = (m - 1.0) / (m + 1.0)
    y = e * np.log(2.0) + 2.0 * s * polynomial(_ATANH_SERIES, s * s)
    tiny = np.finfo(np.float64).tiny  # below it XLA's CPU code reads numbers as 0 anyway
    special = jnp.where(x >= 0.0, jnp.where(x < tiny, -jnp.inf, jnp.inf), jnp.nan)
    return jnp.where((x >= tiny) & (x < jnp.inf), y, special)


@log.defjvp
def _log_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return log(x), dx / x


@jax.custom_jvp
def expm1(z: Array) -> Array:
    """exp(z) − 1, accurate near 0, for the cost of one exp.

    |z| < ½ is a Taylor polynomial, cut where its remainder is below a quarter of the dtype's
    epsilon; elsewhere exp(z) − 1 loses at most a few units in the last place. Within 2 ulp
    of numpy's expm1 in float32 and 3 in float64 (XLA's: 5 and 4); ±∞ and NaN map as expm1's.
    """
    if not FAST_MATH:
        return jnp.expm1(z)
    small = jnp.abs(z) < 0.5
    zs = jnp.where(small, z, 0.0)  # keeps the polynomial finite where it is not used
    eps = float(jnp.finfo(z.dtype).eps)
    degree = next(n for n in range(1, 30) if 0.5**n / math.factorial(n + 1) < eps / 4)
    taylor = [1.0 / math.factorial(k) for k in range(degree, 0, -1)]
    return jnp.where(small, zs * polynomial(taylor, zs), jnp.exp(z) - 1.0)


@expm1.defjvp
def _expm1_jvp(primals, tangents):
    # exp(z) again rather than expm1(z) + 1: that residual made the W1 gradient 10 % slower
    (z,), (dz,) = primals, tangents
    return expm1(z), dz * jnp.exp(z)


def erfinv(u: Array) -> Array:
    """The inverse error function of float32 u in (−1, 1), Giles' polynomials: within
    4.4 ulp over every uniform the noise generator draws (XLA's erf_inv: 91, near ±1)."""
    if not FAST_MATH:
        return jax.lax.erf_inv(u)
    w = -jnp.log((1.0 - u) * (1.0 + u))
    p = polynomial(_ERFINV_CENTRAL, w - 2.5)
    q = polynomial(_ERFINV_TAIL, jnp.sqrt(w) - 3.0)
    return jnp.where(w < 5.0, p, q) * u
