"""Wong-Wang excitatory–inhibitory model with per-region inhibitory weight (FIC)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from bnmfit.models.base import NeuralMass, neural_mass, wong_wang_rate

__all__ = ["WongWangEI"]


@neural_mass
class WongWangEI(NeuralMass):
    r"""Wong-Wang E–I model of Deco et al. 2014 (J Neurosci 34:7886).

    .. math::
        x_e &= W_e I_o + w_p J_N S_e - J_i S_i + J_N c + I_{ext} \\
        H_e &= \frac{a_e x_e - b_e}{1 - \exp(-d_e (a_e x_e - b_e))} \\
        \dot S_e &= -S_e / \tau_e + (1 - S_e) \gamma_e H_e \\
        x_i &= W_i I_o + J_N S_e - S_i + \lambda J_N c \\
        H_i &= \frac{a_i x_i - b_i}{1 - \exp(-d_i (a_i x_i - b_i))} \\
        \dot S_i &= -S_i / \tau_i + \gamma_i H_i

    with :math:`c_k = G \sum_j w_{kj} S_{e,j}(t - d_{kj})` from the simulation loop (TVB's
    model-level G is the loop's G here). Defaults are TVB's ``ReducedWongWangExcInh``:
    a in n/C, b in Hz, d in s, so H is in Hz and gamma = 0.641/1000 turns it into per-ms;
    tau in ms; currents in nA. ``J_i`` (per region) is what feedback inhibition control
    tunes. ``rate_e``/``rate_i`` give the firing rates in Hz.
    """

    a_e: float | Array = 310.0
    b_e: float | Array = 125.0
    d_e: float | Array = 0.160
    gamma_e: float | Array = 0.641 / 1000
    tau_e: float | Array = 100.0
    w_p: float | Array = 1.4
    J_N: float | Array = 0.15
    W_e: float | Array = 1.0
    a_i: float | Array = 615.0
    b_i: float | Array = 177.0
    d_i: float | Array = 0.087
    gamma_i: float | Array = 1.0 / 1000
    tau_i: float | Array = 10.0
    J_i: float | Array = 1.0
    W_i: float | Array = 0.7
    I_o: float | Array = 0.382
    I_ext: float | Array = 0.0
    lamda: float | Array = 0.0

    state_names = ("S_e", "S_i")
    cvar = (0,)
    bold_var = 0
    bounds = ((0.0, 1.0), (0.0, 1.0))
    init_range = ((0.0, 1.0), (0.0, 1.0))
    max_dt = 1.0

    def rates(self, x: Array, c: Array) -> tuple[Array, Array]:
        """Excitatory and inhibitory firing rates H_e, H_i in Hz."""
        S_e, S_i = x[0], x[1]
        coupling = self.J_N * c[0]
        x_e = (
            self.W_e * self.I_o + self.w_p * self.J_N * S_e - self.J_i * S_i + coupling + self.I_ext
        )
        x_i = self.W_i * self.I_o + self.J_N * S_e - S_i + self.lamda * coupling
        H_e = wong_wang_rate(self.a_e * x_e - self.b_e, self.d_e)
        H_i = wong_wang_rate(self.a_i * x_i - self.b_i, self.d_i)
        return H_e, H_i

    def dfun(self, x: Array, c: Array) -> Array:
        S_e, S_i = x[0], x[1]
        H_e, H_i = self.rates(x, c)
        dS_e = -S_e / self.tau_e + (1.0 - S_e) * H_e * self.gamma_e
        dS_i = -S_i / self.tau_i + H_i * self.gamma_i
        return jnp.stack([dS_e, dS_i])
