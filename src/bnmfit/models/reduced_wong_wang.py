"""Reduced Wong-Wang: one NMDA-gated excitatory population per region."""

from __future__ import annotations

from jax import Array

from bnmfit.models.base import NeuralMass, neural_mass, wong_wang_rate

__all__ = ["ReducedWongWang"]


@neural_mass
class ReducedWongWang(NeuralMass):
    r"""Reduced Wong-Wang model (Wong & Wang 2006; Deco et al. 2013, J Neurosci 33:11239).

    .. math::
        x_k &= w J_N S_k + I_o + J_N c_k \\
        H(x_k) &= \frac{a x_k - b}{1 - \exp(-d (a x_k - b))} \\
        \dot S_k &= -S_k / \tau_s + (1 - S_k) \gamma H(x_k)

    with :math:`c_k = G \sum_j w_{kj} S_j(t - d_{kj})` from the simulation loop.
    Defaults are TVB's ``ReducedWongWang``. Units: a in n/C (0.270 nC⁻¹ → kHz per nA),
    b in kHz, d in ms, tau_s in ms, J_N and I_o in nA, gamma and w dimensionless.
    State: S (NMDA gating, bounded to [0, 1]); it drives the BOLD signal.
    """

    a: float | Array = 0.270
    b: float | Array = 0.108
    d: float | Array = 154.0
    gamma: float | Array = 0.641
    tau_s: float | Array = 100.0
    w: float | Array = 0.6
    J_N: float | Array = 0.2609
    I_o: float | Array = 0.33

    state_names = ("S",)
    cvar = (0,)
    bold_var = 0
    bounds = ((0.0, 1.0),)
    init_range = ((0.0, 1.0),)
    max_dt = 10.0

    def dfun(self, x: Array, c: Array) -> Array:
        S = x[0]
        xk = self.w * self.J_N * S + self.I_o + self.J_N * c[0]
        H = wong_wang_rate(self.a * xk - self.b, self.d)
        return (-S / self.tau_s + (1.0 - S) * H * self.gamma)[None]
