"""Wilson–Cowan excitatory–inhibitory population model (TVB formulation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from bnmfit.models.base import NeuralMass, neural_mass

__all__ = ["WilsonCowan"]


@neural_mass
class WilsonCowan(NeuralMass):
    r"""Wilson & Cowan 1972/1973, in the form and with the defaults of TVB's ``WilsonCowan``.

    .. math::
        \tau_e \dot E &= -E + (k_e - r_e E)\,
            S_e(\alpha_e (c_{ee} E - c_{ei} I + P - \theta_e + c)) \\
        \tau_i \dot I &= -I + (k_i - r_i I)\, S_i(\alpha_i (c_{ie} E - c_{ii} I + Q - \theta_i))

    with the shifted sigmoid :math:`S(x) = c\,[\sigma(a(x - b)) - \sigma(-a b)]` (so S(0) = 0)
    and :math:`c_k = G \sum_j w_{kj} E_j(t - d_{kj})`. Time constants in ms; the rest
    dimensionless. E drives BOLD. With Ornstein–Uhlenbeck noise this is the coloured-noise
    Wilson–Cowan network of brainmass's example.
    """

    c_ee: float | Array = 12.0
    c_ei: float | Array = 4.0
    c_ie: float | Array = 13.0
    c_ii: float | Array = 11.0
    tau_e: float | Array = 10.0
    tau_i: float | Array = 10.0
    a_e: float | Array = 1.2
    b_e: float | Array = 2.8
    c_e: float | Array = 1.0
    theta_e: float | Array = 0.0
    a_i: float | Array = 1.0
    b_i: float | Array = 4.0
    c_i: float | Array = 1.0
    theta_i: float | Array = 0.0
    r_e: float | Array = 1.0
    r_i: float | Array = 1.0
    k_e: float | Array = 1.0
    k_i: float | Array = 1.0
    P: float | Array = 0.0
    Q: float | Array = 0.0
    alpha_e: float | Array = 1.0
    alpha_i: float | Array = 1.0

    state_names = ("E", "I")
    cvar = (0,)
    bold_var = 0
    bounds = (None, None)
    init_range = ((0.0, 1.0), (0.0, 1.0))
    max_dt = 1.0

    def dfun(self, x: Array, c: Array) -> Array:
        E, I = x[0], x[1]
        x_e = self.alpha_e * (self.c_ee * E - self.c_ei * I + self.P - self.theta_e + c[0])
        x_i = self.alpha_i * (self.c_ie * E - self.c_ii * I + self.Q - self.theta_i)
        s_e = self.c_e * (
            jax.nn.sigmoid(self.a_e * (x_e - self.b_e)) - jax.nn.sigmoid(-self.a_e * self.b_e)
        )
        s_i = self.c_i * (
            jax.nn.sigmoid(self.a_i * (x_i - self.b_i)) - jax.nn.sigmoid(-self.a_i * self.b_i)
        )
        dE = (-E + (self.k_e - self.r_e * E) * s_e) / self.tau_e
        dI = (-I + (self.k_i - self.r_i * I) * s_i) / self.tau_i
        return jnp.stack([dE, dI])
