"""The neural-mass interface: what one model supplies to the one simulation loop.

A model is an immutable pytree whose fields are its parameters in physical units (time in
ms). Each field is a scalar or an (N,) array of regional values; the simulation broadcasts.
A model supplies only its vector field, its state layout, the variables it couples through,
the variable that drives BOLD, bounds on its state, and the largest stable time step.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax import Array

from bnmfit import elementary

__all__ = ["NeuralMass", "neural_mass", "wong_wang_rate"]


class NeuralMass:
    """Abstract base of every neural mass.

    Class attributes a concrete model sets:
        state_names: names of the state variables, in state-array order.
        cvar: indices of the state variables that the long-range coupling carries.
        bold_var: index of the state variable that drives the hemodynamics.
        bounds: (lo, hi) per state variable (``None`` for unbounded); the integrator clips
            the state to them after every step, as TVB does.
        init_range: (lo, hi) per state variable for random initial conditions.
        max_dt: the largest integration step (ms) for which the defaults are stable.
    """

    state_names: ClassVar[tuple[str, ...]]
    cvar: ClassVar[tuple[int, ...]]
    bold_var: ClassVar[int]
    bounds: ClassVar[tuple[tuple[float, float] | None, ...]]
    init_range: ClassVar[tuple[tuple[float, float], ...]]
    max_dt: ClassVar[float]

    @property
    def n_state(self) -> int:
        return len(self.state_names)

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **values) -> NeuralMass:
        """A copy with some parameters changed (unknown names are an error)."""
        unknown = set(values) - set(self.parameter_names())
        if unknown:
            raise KeyError(
                f"{type(self).__name__} has no parameter {', '.join(sorted(unknown))}; "
                f"it has {', '.join(self.parameter_names())}"
            )
        return dataclasses.replace(self, **values)

    def dfun(self, x: Array, c: Array) -> Array:
        """Time derivative (per ms) of the state.

        Args:
            x: state, shape (n_state, N).
            c: long-range coupling input, shape (len(cvar), N).
        Returns:
            dx/dt, shape (n_state, N).
        """
        raise NotImplementedError

    def initial_state(self, key: Array, n_regions: int, dtype=jnp.float64) -> Array:
        """Random initial state, uniform in ``init_range``; shape (n_state, N).

        Drawn in float32 in every precision, like the noise (:mod:`bnmfit.simulate`)."""
        lo = jnp.array([r[0] for r in self.init_range], dtype)[:, None]
        hi = jnp.array([r[1] for r in self.init_range], dtype)[:, None]
        u = jax.random.uniform(key, (self.n_state, n_regions), jnp.float32).astype(dtype)
        return lo + (hi - lo) * u

    def clip(self, x: Array) -> Array:
        """Clip the state to the model's bounds (identity for unbounded models)."""
        if all(b is None for b in self.bounds):
            return x
        rows = [
            x[i] if b is None else jnp.clip(x[i], b[0], b[1]) for i, b in enumerate(self.bounds)
        ]
        return jnp.stack(rows)


def neural_mass(cls):
    """Make a model class a frozen dataclass and a pytree whose leaves are its parameters."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])


def wong_wang_rate(y: Array, d) -> Array:
    """The Abbott–Chance transfer function H = y / (1 - exp(-d·y)), with y = a·x - b.

    Its removable singularity at y = 0 (limit 1/d) is evaluated exactly, so values and
    gradients stay finite there.
    """
    small = jnp.abs(d * y) < 1e-6
    y_safe = jnp.where(small, 1.0, y)
    return jnp.where(small, 1.0 / d + 0.5 * y, y_safe / -elementary.expm1(-d * y_safe))
