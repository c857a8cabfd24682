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

Scopes: ``global`` (one scalar), ``regional`` (one value per region, shape (N,)), ``map`` and
``group`` (regional values from few free numbers, below) and ``edges`` (the SC weights, only
on the edges that exist in the subject's connectome; the full (N, N) matrix is rebuilt by
:meth:`ParameterSet.constrain`, optionally symmetric). The unconstrained values form a plain
``dict`` pytree, so they vmap, differentiate and checkpoint as they are.

Heterogeneity with few parameters (the regional data come from :mod:`bnmfit.maps`, bound
with :meth:`ParameterSet.bind`):

* ``map``: x_i = T(η_i), η_i = a + Σ_j c_j z_j(i), where T is the parameter's transform
  (table above), z_j are its k maps, each z-scored over regions (mean 0, SD 1), and a,
  c_1..c_k are the k + 1 free numbers (unconstrained, in η units). Wang et al. 2019 (Sci.
  Adv. 5:eaat7854) and Kong et al. 2021 (Nat. Commun. 12:6373) write the parameter linear in
  the maps, x_i = a + Σ c_j m_j(i); cuBNM writes bias × (1 + Σ coef_j m_j(i)). Both can
  leave the parameter's domain for some region, and then need a clip or a penalty. The
  linear predictor under T keeps every region inside the domain by construction, for any
  coefficients, and equals the linear form to first order where T is near linear. On
  z-scored maps, the intercept a is T⁻¹ of a typical region's value and c_j the change in
  η per SD of map j, so coefficients compare across maps, and (z orthogonal to the
  constant) a and c are separately identifiable. A scalar start gives a = T⁻¹(start),
  c = 0; a regional start (N,) the least-squares fit of T⁻¹(x) on [1, z].
* ``group``: x_i = T(u[g_i]): one value per group of regions (a column of the labels file,
  e.g. networks, or left/right homologues). A regional start gives each group T of the
  mean of T⁻¹(x) over its regions.

Both hand on regional (N,) values (:meth:`ParameterSet.constrain`), so the next stage starts
from them as from a regional stage.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from bnmfit.errors import ConfigError, DataError, unknown_choice

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.maps import RegionalMaps
    from bnmfit.problem import Problem

__all__ = [
    "SCOPES",
    "TRANSFORMS",
    "FreeParameter",
    "ParameterSet",
    "current_value",
]

SCOPES: tuple[str, ...] = ("global", "regional", "map", "group", "edges")
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
        scope: ``global``, ``regional``, ``map``, ``group`` or ``edges`` (edges: only for
            ``weights``).
        transform: ``sigmoid``, ``softplus``, ``log`` or ``identity``.
        init: the start value when the start gives none (None: the problem's current value).
        symmetric: edges only: one value per connected pair, used for w_ij and w_ji.
        maps: scope map only (and required there): the names of its k regional maps.
        groups: scope group only (and required there): the name of its grouping.
    """

    name: str
    lo: float
    hi: float
    scope: Literal["global", "regional", "edges"] = "global"
    transform: Literal["sigmoid", "softplus", "log", "identity"] = "sigmoid"
    init: float | None = None
    symmetric: bool = False
    maps: tuple[str, ...] = ()
    groups: str | None = None

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
        maps = (self.maps,) if isinstance(self.maps, str) else tuple(self.maps or ())
        object.__setattr__(self, "maps", tuple(str(m) for m in maps))
        if self.scope == "map":
            if not self.maps:
                raise ConfigError(
                    f"free parameter {self.name!r}: scope 'map' needs maps, the names of its "
                    "regional maps (e.g. [strength, fc_gradient])"
                )
            dup = sorted({m for m in self.maps if self.maps.count(m) > 1})
            if dup:
                raise ConfigError(
                    f"free parameter {self.name!r}: map {', '.join(dup)} named twice in maps"
                )
        elif self.maps:
            raise ConfigError(f"free parameter {self.name!r}: maps applies to scope 'map' only")
        if self.scope == "group":
            if not isinstance(self.groups, str) or not self.groups:
                raise ConfigError(
                    f"free parameter {self.name!r}: scope 'group' needs groups, the name of a "
                    "grouping (a column of the labels file, e.g. network, or homologues)"
                )
        elif self.groups is not None:
            raise ConfigError(f"free parameter {self.name!r}: groups applies to scope 'group' only")

    @property
    def bounded(self) -> bool:
        """Whether both bounds are enforced by the transform."""
        return self.transform in ("sigmoid", "log")

    @property
    def scipy_bounds(self) -> tuple[float | None, float | None]:
        """(lo, hi) for scipy.optimize, None where the transform enforces no bound (scope
        map: its compact values are the unconstrained coefficients, never bounded)."""
        if self.scope == "map":
            return (None, None)
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
    data_fields=["edge_index", "designs", "group_index"],
    meta_fields=["free", "n_regions", "group_names"],
)
@dataclasses.dataclass(frozen=True, eq=False)
class ParameterSet:
    """The free parameters of one fitting stage.

    ``init`` maps start values to the unconstrained pytree (a dict of arrays) that the
    optimiser updates; ``constrain`` maps it back to the values :meth:`Problem.loss` takes.
    Parameters with scope ``edges`` need the connectome's edge pattern: :meth:`bind` a set to
    its problem (``init`` does not need it; ``constrain`` takes ``problem=`` otherwise).
    Parameters with scope ``map`` or ``group`` need the subject's regional maps: bind the set
    with ``regions=`` (a :class:`bnmfit.maps.RegionalMaps`) before anything else.

    A ParameterSet is a JAX pytree: the edge pattern's arrays, the z-scored maps and the
    group indices are leaves; the free parameters, the region count and the group names are
    static. Passed as an argument to a jitted function (as the problem is), a bound set
    compiles once per free parameters, region count, number of edges and groups, not once
    per connectome or maps.
    """

    free: tuple[FreeParameter, ...]
    n_regions: int | None = None
    #: (rows, cols, forward exists, backward exists) of the SC's edges (:func:`_edge_index`)
    edge_index: tuple[np.ndarray, ...] | None = dataclasses.field(default=None, repr=False)
    #: scope map: parameter name → (N, k) its maps, each z-scored over regions
    designs: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False)
    #: scope group: parameter name → (N,) the group of each region (int32)
    group_index: Mapping[str, np.ndarray] | None = dataclasses.field(default=None, repr=False)
    #: scope group: (parameter name, its group names) pairs
    group_names: tuple[tuple[str, tuple[str, ...]], ...] = ()

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

    @property
    def needs_regions(self) -> bool:
        """Whether a parameter has scope map or group (bind needs ``regions=``)."""
        return any(p.scope in ("map", "group") for p in self.free)

    def bind(self, problem: Problem, regions: RegionalMaps | None = None) -> ParameterSet:
        """This set, checked against ``problem`` and holding its region count and edges, and
        (scope map and group) the maps and groupings its parameters name, taken from
        ``regions`` (None: those it already holds).

        Raises:
            ConfigError: a map or grouping is missing or unusable (see
                :meth:`bnmfit.maps.RegionalMaps.design`), or the set needs regions and none
                were given.
            DataError: ``regions`` has another number of regions than ``problem``.
        """
        problem.check_names(self.names)
        n = problem.n_regions
        index = None
        if self.has_edges:
            index = _edge_index(np.asarray(problem.weights), self._symmetric)
        bound = dataclasses.replace(self, n_regions=n, edge_index=index)
        if regions is not None and self.needs_regions:
            bound = bound._with_regions(regions)
        if self.needs_regions and bound.designs is None:
            scoped = [p.name for p in self.free if p.scope in ("map", "group")]
            raise ConfigError(
                f"free parameter {', '.join(map(repr, scoped))} has scope map or group, which "
                "needs the subject's regional maps: bind(problem, regions=RegionalMaps) (the "
                "workflow's sub-X_desc-maps.tsv)"
            )
        for a in jax.tree.leaves((bound.designs, bound.group_index)):
            if np.shape(a)[0] != n:
                raise DataError(
                    f"the regional maps have {np.shape(a)[0]} regions but the connectome has "
                    f"{n}: make the maps from this subject's connectome"
                )
        return bound

    def _with_regions(self, regions: RegionalMaps) -> ParameterSet:
        """This set holding the z-scored maps and group indices its parameters name."""
        if regions.n_regions != self.n_regions:
            raise DataError(
                f"the regional maps have {regions.n_regions} regions but the connectome has "
                f"{self.n_regions}: make the maps from this subject's connectome"
            )
        designs, index, names = {}, {}, []
        for p in self.free:
            where = f"free parameter {p.name!r}"
            if p.scope == "map":
                designs[p.name] = regions.design(p.maps, where)
            elif p.scope == "group":
                index[p.name], groups = regions.grouping(p.groups, where)
                names.append((p.name, groups))
        return dataclasses.replace(
            self, designs=designs, group_index=index, group_names=tuple(names)
        )

    def n_groups(self, name: str) -> int:
        """The number of groups of group parameter ``name`` (bound sets)."""
        return len(dict(self.group_names)[name])

    @property
    def _symmetric(self) -> bool:
        return any(p.symmetric for p in self.free if p.scope == "edges")

    def _bound(self, problem: Problem | None) -> ParameterSet:
        if problem is not None:
            return self.bind(problem)
        if (
            self.n_regions is None
            or (self.has_edges and self.edge_index is None)
            or (self.needs_regions and self.designs is None)
        ):
            raise ConfigError(
                "this ParameterSet is not bound to a problem: call bind(problem) first "
                "(scope map or group: bind(problem, regions=...)) or pass problem="
            )
        return self

    def start_values(self, problem: Problem, start: Mapping[str, object]) -> dict[str, np.ndarray]:
        """Start values in compact form (global: scalar, regional: (N,), edges: (E,), group:
        (groups,), moved inside their domain, see :meth:`FreeParameter.interior`; map: the
        k + 1 coefficients, see the module docstring)."""
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
            elif p.scope in ("regional", "map", "group"):
                if x.size == 1:
                    x = np.full(n, float(x.reshape(())))
                elif x.shape != (n,):
                    raise ConfigError(
                        f"the start value of {p.scope} {p.name!r} has shape {x.shape}: give a "
                        f"scalar or one value per region ({n})"
                    )
                if p.scope != "regional":
                    out[p.name] = bound._start_of(p, p.interior(x))
                    continue
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
        return self.from_values({k: jnp.asarray(v, dtype) for k, v in values.items()})

    def _start_of(self, p: FreeParameter, x: np.ndarray) -> np.ndarray:
        """The compact start of map or group parameter ``p`` from regional values ``x``
        (N,): the least-squares coefficients of T⁻¹(x) on [1, z] (map), or T of each
        group's mean of T⁻¹(x) (group)."""
        eta = np.asarray(p.to_unconstrained(jnp.asarray(x)), np.float64)
        if p.scope == "map":
            z = np.asarray(self.designs[p.name], np.float64)
            a = np.column_stack([np.ones(len(eta)), z])
            return np.linalg.lstsq(a, eta, rcond=None)[0]
        g = np.asarray(self.group_index[p.name])
        sums = np.bincount(g, eta, minlength=self.n_groups(p.name))
        means = sums / np.bincount(g, minlength=self.n_groups(p.name))
        return np.asarray(p.to_constrained(jnp.asarray(means)), np.float64)

    def to_values(self, u: Mapping[str, Array]) -> dict[str, Array]:
        """Values in compact form: constrained values (edges as a vector over the existing
        edges, group: one per group), except scope map: its coefficients as they are."""
        return {
            p.name: u[p.name] if p.scope == "map" else p.to_constrained(u[p.name])
            for p in self.free
        }

    def from_values(self, values: Mapping[str, Array]) -> dict[str, Array]:
        """The inverse of :meth:`to_values`."""
        return {
            p.name: jnp.asarray(values[p.name])
            if p.scope == "map"
            else p.to_unconstrained(values[p.name])
            for p in self.free
        }

    def expand(self, values: Mapping[str, Array], problem: Problem | None = None) -> dict:
        """Compact values → the values :meth:`Problem.loss` takes (edges → (N, N) weights;
        map and group → (N,) regional values)."""
        out = dict(values)
        if self.needs_regions:
            bound = self._bound(problem)
            for p in self.free:
                v = jnp.asarray(values[p.name])
                if p.scope == "map":
                    z = jnp.asarray(bound.designs[p.name], v.dtype)
                    out[p.name] = p.to_constrained(v[0] + z @ v[1:])
                elif p.scope == "group":
                    out[p.name] = v[bound.group_index[p.name]]
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

    def free_values(self, u: Mapping[str, Array]) -> dict[str, Array]:
        """The fitted numbers in reporting units, name → array in the order of the
        free parameters; flattened in that order (each array raveled), one number per
        :meth:`free_labels` entry. Global, regional and edge parameters report their values
        (:meth:`to_values`)."""
        return self.to_values(u)

    def free_labels(self, labels: Sequence[str] | None = None) -> list[str]:
        """One label per flattened number of :meth:`free_values`: ``G``, ``w[label]`` (or
        ``w[i]`` without region ``labels``), ``weights[a,b]`` for the SC edge a → b (a
        symmetric set: the pair), ``w:intercept`` and ``w:<map>`` (scope map), ``w[<group>]``
        (scope group)."""
        bound = self._bound(None) if self.has_edges or self.needs_regions else self
        n = bound.n_regions if labels is None else len(labels)
        if n is None and any(p.scope == "regional" for p in self.free):
            raise ConfigError(
                "region labels are needed for regional parameters: bind(problem) the "
                "ParameterSet or pass labels="
            )
        names = [str(i) for i in range(n or 0)] if labels is None else [str(x) for x in labels]
        out: list[str] = []
        for p in self.free:
            if p.scope == "global":
                out.append(p.name)
            elif p.scope == "regional":
                out.extend(f"{p.name}[{x}]" for x in names)
            elif p.scope == "map":
                out.extend([f"{p.name}:intercept", *(f"{p.name}:{m}" for m in p.maps)])
            elif p.scope == "group":
                out.extend(f"{p.name}[{g}]" for g in dict(bound.group_names)[p.name])
            else:
                rows, cols = bound.edge_index[:2]
                pairs = zip(rows, cols, strict=True)
                out.extend(f"{p.name}[{names[i]},{names[j]}]" for i, j in pairs)
        return out

    def free_scales(self, u: Mapping[str, Array]) -> Array:
        """Per flattened number of :meth:`free_values`, the width against which its standard
        error is judged: the domain's hi − lo where the transform enforces both bounds, else
        the number's magnitude |value|. A map coefficient (η units) is judged against that
        width divided by the mean slope mean_i |dx_i/dη_i| at the current values (so
        SE × slope is compared with the domain; unbounded: with the mean |x_i|)."""
        values = self.free_values(u)
        parts = []
        for p in self.free:
            v = jnp.ravel(values[p.name])
            if p.scope == "map":
                z = jnp.asarray(self._bound(None).designs[p.name], v.dtype)
                eta = v[0] + z @ v[1:]
                x, slope = jax.jvp(p.to_constrained, (eta,), (jnp.ones_like(eta),))
                width = p.hi - p.lo if p.bounded else jnp.mean(jnp.abs(x))
                parts.append(jnp.full_like(v, width / jnp.mean(jnp.abs(slope))))
                continue
            parts.append(jnp.full_like(v, p.hi - p.lo) if p.bounded else jnp.abs(v))
        return jnp.concatenate(parts)


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
