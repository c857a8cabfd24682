"""Losses between simulated and empirical observables.

Each loss compares one observable of the simulation with the same observable of the data and
returns a scalar; the reductions are explicit (upper triangle with k = 1 for matrices).
:func:`combined` weighs named terms into one objective.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from bnmfit.errors import ConfigError
from bnmfit.observables import unresolved, upper

__all__ = [
    "LOSSES",
    "Observed",
    "combined",
    "fc_corr",
    "fc_rmse",
    "fcd_ks",
    "ks_distance",
    "pearson",
]


class Observed(NamedTuple):
    """The observables a loss can compare: FC (N, N) and optionally FCD (W, W)."""

    fc: Array
    fcd: Array | None = None


def pearson(a: Array, b: Array) -> Array:
    """Pearson correlation of two vectors; NaN when either is numerically constant
    (:func:`bnmfit.observables.unresolved`)."""
    flat = unresolved(a) | unresolved(b)
    a = a - a.mean()
    b = b - b.mean()
    return jnp.where(flat, jnp.nan, (a * b).sum() / jnp.sqrt((a * a).sum() * (b * b).sum()))


def fc_corr(sim: Array, emp: Array) -> Array:
    """1 − Pearson r between the upper triangles (k = 1) of two FC matrices; in [0, 2]."""
    return 1.0 - pearson(upper(sim), upper(emp))


def fc_rmse(sim: Array, emp: Array) -> Array:
    """Root mean square difference of the upper triangles (k = 1) of two FC matrices."""
    d = upper(sim) - upper(emp)
    return jnp.sqrt((d * d).mean())


def ks_distance(a: Array, b: Array, smooth: float | None = None) -> Array:
    """Kolmogorov–Smirnov distance between the value distributions of two samples.

    Exact (``smooth=None``): the largest gap between the empirical CDFs, evaluated at every
    sample point. Smooth: each step of the CDFs becomes a logistic of width ``smooth``, so
    the distance (then a soft maximum) has useful gradients. The smooth CDFs are compared
    midway between consecutive pooled sample values, where the exact CDFs are constant (at a
    sample point itself a logistic step is only half-way up), so the smooth distance tends
    to the exact one as ``smooth`` → 0.
    """
    grid = jnp.concatenate([a, b])
    if smooth is None:
        cdf_a = jnp.searchsorted(jnp.sort(a), grid, side="right").astype(grid.dtype) / a.size
        cdf_b = jnp.searchsorted(jnp.sort(b), grid, side="right").astype(grid.dtype) / b.size
        return jnp.abs(cdf_a - cdf_b).max()
    pooled = jnp.sort(grid)
    grid = 0.5 * (pooled[1:] + pooled[:-1])
    cdf_a = jax.nn.sigmoid((grid[:, None] - a[None, :]) / smooth).mean(axis=1)
    cdf_b = jax.nn.sigmoid((grid[:, None] - b[None, :]) / smooth).mean(axis=1)
    gap = jnp.abs(cdf_a - cdf_b)
    return smooth * jax.nn.logsumexp(gap / smooth) - smooth * jnp.log(gap.size)


def fcd_ks(sim: Array, emp: Array, smooth: float | None = None) -> Array:
    """KS distance between the FCD value distributions (upper triangles, k = 1)."""
    return ks_distance(upper(sim), upper(emp), smooth)


LOSSES = {
    "fc_corr": lambda s, e, smooth=None: fc_corr(s.fc, e.fc),
    "fc_rmse": lambda s, e, smooth=None: fc_rmse(s.fc, e.fc),
    "fcd_ks": lambda s, e, smooth=None: fcd_ks(s.fcd, e.fcd, smooth),
}


def combined(
    weights: Mapping[str, float], sim: Observed, emp: Observed, smooth: float | None = None
) -> Array:
    """Σ weight · loss over named terms of :data:`LOSSES` (``smooth`` for the KS terms)."""
    unknown = set(weights) - set(LOSSES)
    if unknown:
        raise ConfigError(f"unknown loss {', '.join(sorted(unknown))}: use {', '.join(LOSSES)}")
    return sum(w * LOSSES[name](sim, emp, smooth) for name, w in weights.items())
