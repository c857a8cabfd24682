"""Free parameters: which values a fit may change, where (global, per region, per SC edge),
and within which bounds.

A bound is a transform, not a clip: the optimiser works on an unconstrained value ``u`` and
the model sees ``x = transform(u)``, which can never leave the parameter's domain.

================  ======================================  ======================================
transform         x(u)                                    domain
================  ======================================  ======================================
``sigmoid``       lo + (hi − lo)·σ(u)                     (lo, hi), both finite
``log``           exp(log lo + (log hi − log lo)·σ(u))    (lo, hi), 0 < lo < hi < ∞ (log scale)
``softplus``      lo + softplus(u)                        (lo, ∞); hi is not enforced
``identity``      u                                       unbounded (lo and hi are not enforced)
================  ======================================  ======================================

Scopes: ``global`` (one scalar), ``regional`` (one value per region, shape (N,)) and ``edges``
(the SC weights, only on the edges that exist in the subject's connectome; the full (N, N)
matrix is rebuilt by :meth:`ParameterSet.constrain`, optionally symmetric). The unconstrained
values form a plain ``dict`` pytree, so they vmap, differentiate and checkpoint as they are.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from bnmfit.errors import ConfigError, unknown_choice

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.problem import Problem

__all__ = [
    "SCOPES",
    "TRANSFORMS",
    "FreeParameter",
    "ParameterSet",
    "current_value",
]

SCOPES: tuple[str, ...] = ("global", "regional", "edges")
TRANSFORMS: tuple[str, ...] = ("sigmoid", "softplus", "log", "identity")

#: starts are moved at least this fraction of the range inside (lo, hi) (sigmoid and log
#: transforms), so that a start on a bound (a grid corner) does not begin with a vanishing
#: gradient
START_MARGIN = 0.01


def _logit(p):
    return jnp.log(p) - jnp.log1p(-p)


def _tiny(x) -> float:
    """A small positive number for the dtype of x (keeps inverses finite at the bounds)."""
    dtype = jnp.result_type(x)
    return 1e-12 if dtype == jnp.float64 else 1e-6


@dataclasses.dataclass(frozen=True)
class FreeParameter:
    """One free parameter of a fit.

    Attributes:
        name: ``G``, ``sigma``, ``weights`` or a parameter of the model (``w``, ``J_i``, ...).
        lo, hi: the bounds (see the module docstring for which transform enforces what).
        scope: ``global``, ``regional`` or ``edges`` (edges: only for ``weights``).
        transform: ``sigmoid``, ``softplus``, ``log`` or ``identity``.
        init: the start value when the start gives none (None: the problem's current value).
        symmetric: edges only: one value per connected pair, used for w_ij and w_ji.
    """

    name: str
    lo: float
    hi: float
    scope: Literal["global", "regional", "edges"] = "global"
    transform: Literal["sigmoid", "softplus", "log", "identity"] = "sigmoid"
    init: float | None = None
    symmetric: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a free parameter needs a name, got {self.name!r}")
        try:
            lo, hi = float(self.lo), float(self.hi)
        except (TypeError, ValueError):
            raise ConfigError(
                f"free parameter {self.name!r}: lo and hi must be numbers, got {self.lo!r}, "
                f"{self.hi!r}"
            ) from None
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        if self.scope not in SCOPES:
            raise ConfigError(
                f"free parameter {self.name!r}: " + unknown_choice("scope", self.scope, SCOPES)
            )
        if self.transform not in TRANSFORMS:
            raise ConfigError(
                f"free parameter {self.name!r}: "
                + unknown_choice("transform", self.transform, TRANSFORMS)
            )
        if math.isnan(lo) or math.isnan(hi) or not lo < hi:
            raise ConfigError(
                f"free parameter {self.name!r}: need lo < hi, got lo={lo:g}, hi={hi:g}: "
                "swap or widen the bounds"
            )
        if self.transform in ("sigmoid", "log") and not (math.isfinite(lo) and math.isfinite(hi)):
            raise ConfigError(
                f"free parameter {self.name!r}: the {self.transform} transform needs finite "
                f"bounds, got [{lo:g}, {hi:g}]: give both, or use softplus for (lo, inf)"
            )
        if self.transform == "softplus" and not math.isfinite(lo):
            raise ConfigError(
                f"free parameter {self.name!r}: softplus needs a finite lower bound, got {lo:g}"
            )
        if self.transform == "log" and not lo > 0:
            raise ConfigError(
                f"free parameter {self.name!r}: the log transform needs lo > 0, got {lo:g}: "
                "use sigmoid, or a positive lower bound"
            )
        if (self.scope == "edges") != (self.name == "weights"):
            raise ConfigError(
                f"free parameter {self.name!r}: scope 'edges' is for the SC 'weights' and "
                "'weights' must have scope 'edges'"
            )
        if self.symmetric and self.scope != "edges":
            raise ConfigError(
                f"free parameter {self.name!r}: symmetric applies to scope 'edges' only"
            )
        if self.init is not None:
            object.__setattr__(self, "init", float(self.init))

    @property
    def bounded(self) -> bool:
        """Whether both bounds are enforced by the transform."""
        return self.transform in ("sigmoid", "log")

    @property
    def scipy_bounds(self) -> tuple[float | None, float | None]:
        """(lo, hi) for scipy.optimize, None where the transform enforces no bound."""
        if self.bounded:
            return (self.lo, self.hi)
        if self.transform == "softplus":
            return (self.lo, None)
        return (None, None)

    def to_constrained(self, u) -> Array:
        """The parameter value for an unconstrained value ``u`` (any shape)."""
        u = jnp.asarray(u)
        if self.transform == "sigmoid":
            return self.lo + (self.hi - self.lo) * jax.nn.sigmoid(u)
        if self.transform == "log":
            a, b = math.log(self.lo), math.log(self.hi)
            return jnp.exp(a + (b - a) * jax.nn.sigmoid(u))
        if self.transform == "softplus":
            return self.lo + jax.nn.softplus(u)
        return u

    def to_unconstrained(self, value) -> Array:
        """The inverse of :meth:`to_constrained` (values on a bound map to a large finite u)."""
        x = jnp.asarray(value)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        eps = _tiny(x)
        if self.transform == "sigmoid":
            p = (x - self.lo) / (self.hi - self.lo)
            return _logit(jnp.clip(p, eps, 1.0 - eps))
        if self.transform == "log":
            a, b = math.log(self.lo), math.log(self.hi)
            p = (jnp.log(jnp.maximum(x, self.lo * (1 - eps))) - a) / (b - a)
            return _logit(jnp.clip(p, eps, 1.0 - eps))
        if self.transform == "softplus":
            y = jnp.maximum(x - self.lo, eps)
            return y + jnp.log(-jnp.expm1(-y))
        return x

    def interior(self, value) -> np.ndarray:
        """``value`` moved inside the domain by :data:`START_MARGIN` of the range (starts)."""
        x = np.asarray(value, dtype=np.float64)
        if self.transform == "sigmoid":
            m = START_MARGIN * (self.hi - self.lo)
            return np.clip(x, self.lo + m, self.hi - m)
        if self.transform == "log":
            a, b = math.log(self.lo), math.log(self.hi)
            m = START_MARGIN * (b - a)
            return np.exp(np.clip(np.log(np.maximum(x, self.lo)), a + m, b - m))
        if self.transform == "softplus":  # one-sided: no scale for a margin, stay just inside
            return np.maximum(x, self.lo + 1e-9)
        return x


def current_value(problem: Problem, name: str):
    """The value a parameter has in ``problem`` when it is not free."""
    if name == "G":
        return problem.G
    if name == "sigma":
        return problem.sigma
    if name == "weights":
        return problem.weights
    return getattr(problem.model, name)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["edge_index"],
    meta_fields=["free", "n_regions"],
)
@dataclasses.dataclass(frozen=True, eq=False)
class ParameterSet:
    """The free parameters of one fitting stage.

    ``init`` maps start values to the unconstrained pytree (a dict of arrays) that the
    optimiser updates; ``constrain`` maps it back to the values :meth:`Problem.loss` takes.
    Parameters with scope ``edges`` need the connectome's edge pattern: :meth:`bind` a set to
    its problem (``init`` does not need it; ``constrain`` takes ``problem=`` otherwise).

    A ParameterSet is a JAX pytree: the edge pattern's arrays are leaves, the free parameters
    and the region count are static. Passed as an argument to a jitted function (as the
    problem is), a bound set compiles once per free parameters, region count and number of
    edges, not once per connectome.
    """

    free: tuple[FreeParameter, ...]
    n_regions: int | None = None
    #: (rows, cols, forward exists, backward exists) of the SC's edges (:func:`_edge_index`)
    edge_index: tuple[np.ndarray, ...] | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        free = tuple(self.free)
        object.__setattr__(self, "free", free)
        if not free:
            raise ConfigError("no free parameters: give at least one (name, lo, hi)")
        for p in free:
            if not isinstance(p, FreeParameter):
                raise ConfigError(f"free parameters must be FreeParameter, got {p!r}")
        names = [p.name for p in free]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"free parameter {', '.join(map(repr, dup))} given more than once")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.free)

    def __getitem__(self, name: str) -> FreeParameter:
        for p in self.free:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def has_edges(self) -> bool:
        return any(p.scope == "edges" for p in self.free)

    def bind(self, problem: Problem) -> ParameterSet:
        """This set, checked against ``problem`` and holding its region count and edges."""
        problem.check_names(self.names)
        n = problem.n_regions
        index = None
        if self.has_edges:
            index = _edge_index(np.asarray(problem.weights), self._symmetric)
        return dataclasses.replace(self, n_regions=n, edge_index=index)

    @property
    def _symmetric(self) -> bool:
        return any(p.symmetric for p in self.free if p.scope == "edges")

    def _bound(self, problem: Problem | None) -> ParameterSet:
        if problem is not None:
            return self.bind(problem)
        if self.n_regions is None or (self.has_edges and self.edge_index is None):
            raise ConfigError(
                "this ParameterSet is not bound to a problem: call bind(problem) first "
                "or pass problem="
            )
        return self

    def start_values(self, problem: Problem, start: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Constrained start values (global: scalar, regional: (N,), edges: (E,)), moved
        inside their domain (see :meth:`FreeParameter.interior`)."""
        bound = self._bound(problem)
        n = bound.n_regions
        out = {}
        for p in self.free:
            if p.name in start and start[p.name] is not None:
                raw = start[p.name]
            elif p.init is not None:
                raw = p.init
            else:
                raw = current_value(problem, p.name)
            x = np.asarray(raw, dtype=np.float64)
            if not np.all(np.isfinite(x)):
                raise ConfigError(f"the start value of {p.name!r} is not finite: {raw!r}")
            if p.scope == "global":
                if x.size != 1:
                    x = np.asarray(x.mean())  # a regional value becomes its mean
                x = x.reshape(())
            elif p.scope == "regional":
                if x.size == 1:
                    x = np.full(n, float(x.reshape(())))
                elif x.shape != (n,):
                    raise ConfigError(
                        f"the start value of regional {p.name!r} has shape {x.shape}: give a "
                        f"scalar or one value per region ({n})"
                    )
            else:
                if x.size == 1:
                    x = np.full(len(bound.edge_index[0]), float(x.reshape(())))
                elif x.shape == (n, n):
                    x = x[bound.edge_index[0], bound.edge_index[1]]
                    if bound._symmetric:  # symmetric: mean of both directions
                        xt = np.asarray(raw, dtype=np.float64)[
                            bound.edge_index[1], bound.edge_index[0]
                        ]
                        both = bound.edge_index[2] & bound.edge_index[3]
                        x = np.where(both, 0.5 * (x + xt), np.where(bound.edge_index[2], x, xt))
                else:
                    raise ConfigError(
                        f"the start value of 'weights' has shape {x.shape}: give an (N, N) "
                        f"matrix with N = {n}"
                    )
            out[p.name] = p.interior(x)
        return out

    def init(self, problem: Problem, start: Mapping[str, object] | None = None) -> dict[str, Array]:
        """The unconstrained pytree for a start: values from ``start``, else each parameter's
        ``init``, else the problem's current value; regional scalars are broadcast to (N,),
        SC weights are taken on the existing edges only. Dtype follows the problem."""
        problem.check_names(self.names)
        dtype = problem.weights.dtype
        values = self.start_values(problem, start or {})
        return {p.name: p.to_unconstrained(jnp.asarray(values[p.name], dtype)) for p in self.free}

    def to_values(self, u: Mapping[str, Array]) -> dict[str, Array]:
        """Constrained values in compact form (edges as a vector over the existing edges)."""
        return {p.name: p.to_constrained(u[p.name]) for p in self.free}

    def from_values(self, values: Mapping[str, Array]) -> dict[str, Array]:
        """The inverse of :meth:`to_values`."""
        return {p.name: p.to_unconstrained(values[p.name]) for p in self.free}

    def expand(self, values: Mapping[str, Array], problem: Problem | None = None) -> dict:
        """Compact values → the values :meth:`Problem.loss` takes (edges → (N, N) weights)."""
        out = dict(values)
        if self.has_edges:
            bound = self._bound(problem)
            rows, cols, fwd, bwd = bound.edge_index
            v = jnp.asarray(values["weights"])
            n = bound.n_regions
            w = jnp.zeros((n, n), v.dtype).at[rows, cols].set(jnp.where(fwd, v, 0.0))
            if bound._symmetric:
                w = w.at[cols, rows].set(jnp.where(bwd, v, 0.0))
            out["weights"] = w
        return out

    def constrain(self, u: Mapping[str, Array], problem: Problem | None = None) -> dict:
        """Unconstrained pytree → the parameter values (edges → full (N, N) weights)."""
        return self.expand(self.to_values(u), problem)

    def regional_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.free if p.scope == "regional")


def _edge_index(w: np.ndarray, symmetric: bool) -> tuple:
    """(rows, cols, forward exists, backward exists) of the existing edges.

    Not symmetric: every (i, j) with w_ij ≠ 0. Symmetric: every pair i < j connected in at
    least one direction; its value is used for each direction that exists (no new edges).
    """
    exists = w != 0
    np.fill_diagonal(exists, False)
    if not symmetric:
        rows, cols = np.nonzero(exists)
        ones = np.ones(rows.size, bool)
        return rows, cols, ones, ones
    rows, cols = np.nonzero(np.triu(exists | exists.T, 1))
    return rows, cols, exists[rows, cols], exists[cols, rows]
