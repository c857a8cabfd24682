"""Hopf normal form (Stuart–Landau oscillator) per region."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from bnmfit.models.base import NeuralMass, neural_mass

__all__ = ["Hopf"]


@neural_mass
class Hopf(NeuralMass):
    r"""Supercritical Hopf oscillator (Deco et al. 2017, Sci Rep 7:3095).

    .. math::
        \dot x_k &= (a_k - x_k^2 - y_k^2) x_k - \omega_k y_k + c_{x,k} \\
        \dot y_k &= (a_k - x_k^2 - y_k^2) y_k + \omega_k x_k + c_{y,k}

    Both x and y are coupled; with ``coupling="difference"`` the loop gives
    :math:`c_{x,k} = G \sum_j w_{kj} (x_j - x_k)` as in Deco 2017. ``a`` (bifurcation
    parameter, per region) < 0: noisy fixed point, > 0: limit cycle of radius √a; ``omega``
    is the angular frequency in rad/ms. Defaults are TVB's ``SupHopf``. x drives BOLD.
    """

    a: float | Array = -0.5
    omega: float | Array = 1.0

    state_names = ("x", "y")
    cvar = (0, 1)
    bold_var = 0
    bounds = (None, None)
    init_range = ((-5.0, 5.0), (-5.0, 5.0))
    max_dt = 0.5

    def dfun(self, x: Array, c: Array) -> Array:
        X, Y = x[0], x[1]
        r = self.a - X * X - Y * Y
        return jnp.stack([r * X - self.omega * Y + c[0], r * Y + self.omega * X + c[1]])
