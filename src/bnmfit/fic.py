"""Feedback inhibition control (FIC) for the excitatory–inhibitory Wong-Wang model.

Deco et al. 2014 (J Neurosci 34:7886) tune the inhibitory weight J_i of every region so that
its excitatory population fires at about 3 Hz whatever the long-range input it receives: a
network with FIC keeps every region in the same operating regime as G grows.

Two ways to find J_i, both pure JAX functions of fixed iteration count (jit- and vmap-able,
so FIC can run per grid point inside :func:`bnmfit.explore.evaluate` via :func:`hook`):

* :func:`fic_iterative` — the rule of Deco 2014: simulate, measure each region's mean
  excitatory rate, raise J_i where it is above the target and lower it where below, until
  every region is within ``tol`` of the target. The step of each region grows (×1.2) while
  its error keeps its sign and halves when it flips (Rprop), so regions far from their J_i
  get there fast and every region then bisects onto it.
* :func:`fic_gradient` — damped Newton steps on log(H_e / target), the derivative with
  respect to J_i from forward-mode autodiff through the simulation.

Both simulate noise-free by default (``sigma=0``) through the one loop of
:mod:`bnmfit.simulate`, starting from a low-activity state, each run continuing from where
the previous one ended (so the network settles onto its fixed point as J_i converges);
they compute H_e with :meth:`WongWangEI.rates` from the recorded states averaged over the
second half of each run, and return the tuned J_i with the rates it achieves over one more
run. At strong coupling the E–I network can be bistable (a low state and a ~100 Hz state);
FIC tunes the low state, and a coupling so strong that no J_i holds it at the target shows
as achieved rates far from the target.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Literal

import jax
import jax.numpy as jnp
from jax import Array

from bnmfit.errors import ConfigError
from bnmfit.models.wong_wang_ei import WongWangEI
from bnmfit.simulate import FULL, SimSpec, simulate

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.problem import Problem

__all__ = ["FicHook", "excitatory_rates", "fic_gradient", "fic_iterative", "hook"]

#: how often (ms) the state is recorded to average the rates
RECORD_MS = 10.0


def _check(model, target_rate: float, dt: float, duration: float, n_iter: int) -> None:
    if not isinstance(model, WongWangEI):
        raise ConfigError(
            f"FIC tunes the inhibition of the E–I Wong-Wang model; got "
            f"{type(model).__name__}: use model wong_wang_ei or switch FIC off"
        )
    if not (isinstance(target_rate, int | float) and target_rate > 0):
        raise ConfigError(f"the FIC target rate must be > 0 Hz, got {target_rate!r}")
    if not dt > 0 or not duration > 0:
        raise ConfigError(f"FIC needs dt > 0 and duration > 0 ms, got {dt}, {duration}")
    if n_iter < 1:
        raise ConfigError(f"FIC needs n_iter ≥ 1, got {n_iter}")


def _spec(dt: float, duration: float) -> SimSpec:
    every = max(1, round(RECORD_MS / dt))
    tr = every * dt
    return SimSpec(
        dt=dt,
        tr=tr,
        n_tr=max(2, math.ceil(duration / tr)),
        checkpoint=False,
        record_every=every,
        unroll=1,
    )


def excitatory_rates(
    model: WongWangEI,
    weights: Array,
    G,
    x0: Array,
    spec: SimSpec,
    *,
    sigma=0.0,
    key: Array | None = None,
) -> tuple[Array, Array]:
    """Mean excitatory rate H_e (Hz) of every region over the second half of a run of
    ``spec`` from state ``x0`` (linear coupling, no delays), and the final state."""
    key = jax.random.PRNGKey(0) if key is None else key
    out = simulate(model, weights, key, spec, G=G, sigma=sigma, x0=x0)
    states = out.states  # (T, 2, N)
    half = states[states.shape[0] // 2 :]
    c = G * jnp.einsum("ij,tj->ti", weights, half[:, 0], precision=FULL)  # coupling through S_e
    rates = jax.vmap(lambda x, ci: model.rates(x, ci[None])[0])(half, c)
    return rates.mean(axis=0), states[-1]


#: the low-activity state every FIC run starts from (S_e at 3 Hz is ≈ 0.16)
X0 = (0.16, 0.05)


def _initial(model: WongWangEI, n: int, dtype, J_init) -> tuple[Array, Array]:
    J = jnp.broadcast_to(jnp.asarray(model.J_i if J_init is None else J_init, dtype), (n,))
    x0 = jnp.stack([jnp.full((n,), X0[0], dtype), jnp.full((n,), X0[1], dtype)])
    return J, x0


def fic_iterative(
    model: WongWangEI,
    weights: Array,
    G,
    *,
    target_rate: float = 3.0,
    n_iter: int = 100,
    dt: float = 0.5,
    duration: float = 1000.0,
    tol: float = 0.01,
    delta: float = 0.05,
    delta_max: float = 0.5,
    J_init=None,
    sigma=0.0,
    key: Array | None = None,
) -> tuple[Array, Array]:
    """Tune J_i by the iterative rule of Deco et al. 2014.

    Args:
        model: the E–I Wong-Wang model (its other parameters as they will be simulated).
        weights: (N, N) SC weights; ``G`` the global coupling (linear coupling, no delays).
        target_rate: excitatory rate to reach, Hz.
        n_iter: iterations (fixed, so the function is jit/vmap-able).
        dt, duration: step and length (ms) of each iteration's run.
        tol: regions within ``tol`` Hz of the target are left alone.
        delta, delta_max: first and largest step of J_i (nA).
        J_init: start values (None: the model's J_i).
        sigma, key: noise of the runs (default noise-free).
    Returns:
        (J_i (N,), achieved excitatory rates (N,) in Hz).
    """
    _check(model, target_rate, dt, duration, n_iter)
    weights = jnp.asarray(weights)
    n, dtype = weights.shape[0], weights.dtype
    spec = _spec(dt, duration)
    J, x0 = _initial(model, n, dtype, J_init)
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, n_iter + 1)

    def body(carry, k):
        J, x, step, last_sign = carry
        rates, x = excitatory_rates(model.replace(J_i=J), weights, G, x, spec, sigma=sigma, key=k)
        err = rates - target_rate
        sign = jnp.sign(err)
        step = jnp.where(
            sign * last_sign < 0,
            0.5 * step,
            jnp.where(sign * last_sign > 0, jnp.minimum(1.2 * step, delta_max), step),
        )
        move = jnp.abs(err) > tol
        J = jnp.where(move, jnp.maximum(J + step * sign, 0.0), J)
        return (J, x, step, jnp.where(move, sign, 0.0)), None

    carry = (J, x0, jnp.full((n,), delta, dtype), jnp.zeros((n,), dtype))
    (J, x, _, _), _ = jax.lax.scan(body, carry, keys[:-1])
    return J, _achieved(model, J, weights, G, x, spec, sigma, keys[-1])


def _achieved(model, J, weights, G, x, spec, sigma, key) -> Array:
    """The rates J_i gives over one more run from state x."""
    return excitatory_rates(model.replace(J_i=J), weights, G, x, spec, sigma=sigma, key=key)[0]


def fic_gradient(
    model: WongWangEI,
    weights: Array,
    G,
    *,
    target_rate: float = 3.0,
    n_iter: int = 100,
    dt: float = 0.5,
    duration: float = 1000.0,
    damping: float = 0.5,
    max_step: float = 0.2,
    J_init=None,
    sigma=0.0,
    key: Array | None = None,
) -> tuple[Array, Array]:
    """Tune J_i with derivatives through the simulation: damped Newton on log(H_e / target).

    Each iteration runs the network, and forward-mode autodiff (one ``jax.jvp``) gives how
    every region's log rate changes when all J_i rise together (d log H_e,i / dJ summed over
    the regions, which bounds the region's own derivative from above in magnitude, so the step
    undershoots rather than overshoots); J_i moves by ``damping`` · (−error / derivative), at
    most ``max_step`` nA per iteration (damping keeps the network, which responds to all
    regions at once and is still settling from the previous step, from oscillating).
    Arguments as :func:`fic_iterative`.

    Returns:
        (J_i (N,), achieved excitatory rates (N,) in Hz).
    """
    _check(model, target_rate, dt, duration, n_iter)
    weights = jnp.asarray(weights)
    n, dtype = weights.shape[0], weights.dtype
    spec = _spec(dt, duration)
    J, x0 = _initial(model, n, dtype, J_init)
    keys = jax.random.split(jax.random.PRNGKey(0) if key is None else key, n_iter + 1)

    def log_rates(J, x, k):
        rates, x_end = excitatory_rates(
            model.replace(J_i=J), weights, G, x, spec, sigma=sigma, key=k
        )
        return jnp.log(jnp.maximum(rates, 1e-3) / target_rate), x_end

    def body(carry, k):
        J, x = carry
        x = jax.lax.stop_gradient(x)
        err, slope, x_end = jax.jvp(
            lambda j: log_rates(j, x, k), (J,), (jnp.ones_like(J),), has_aux=True
        )
        ok = jnp.isfinite(slope) & (slope < 0)
        step = jnp.where(ok, -damping * err / jnp.where(ok, slope, -1.0), max_step * jnp.sign(err))
        J = jnp.maximum(J + jnp.clip(step, -max_step, max_step), 0.0)
        return (J, x_end), None

    (J, x), _ = jax.lax.scan(body, (J, x0), keys[:-1])
    return J, _achieved(model, J, weights, G, x, spec, sigma, keys[-1])


@dataclasses.dataclass(frozen=True)
class FicHook:
    """FIC per point of an exploration: ``evaluate(..., hook=FicHook())`` tunes J_i for
    every point's G and model parameters before its simulations, and reports the achieved
    rates (``fic_rate_mean``, ``fic_rate_max_error`` in ``ExploreResult.extras``)."""

    method: Literal["iterative", "gradient"] = "iterative"
    target_rate: float = 3.0
    options: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        if self.method not in ("iterative", "gradient"):
            raise ConfigError(f"unknown FIC method {self.method!r}: use iterative or gradient")

    def __call__(self, problem: Problem, params: dict) -> tuple[dict, dict]:
        if "J_i" in params:
            raise ConfigError("J_i is set by FIC: do not explore or fit it with FIC on")
        names = set(problem.model.parameter_names())
        model = problem.model.replace(**{k: v for k, v in params.items() if k in names})
        if problem.spec.max_delay or problem.spec.coupling != "linear":
            raise ConfigError("FIC assumes linear coupling without delays")
        fn = fic_iterative if self.method == "iterative" else fic_gradient
        J, rates = fn(
            model,
            problem.weights,
            params.get("G", problem.G),
            target_rate=self.target_rate,
            **dict(self.options),
        )
        return {**params, "J_i": J}, {
            "fic_rate_mean": rates.mean(),
            "fic_rate_max_error": jnp.max(jnp.abs(rates - self.target_rate)),
        }


def hook(
    method: Literal["iterative", "gradient"] = "iterative", target_rate: float = 3.0, **options
) -> FicHook:
    """A :class:`FicHook` (options are passed to :func:`fic_iterative`/:func:`fic_gradient`)."""
    return FicHook(method, float(target_rate), tuple(sorted(options.items())))
