"""Exploration: parameter spaces, their batched evaluation, and the best distinct starts.

A :class:`Space` is a set of :class:`Axis` (any model, coupling or noise parameter by name,
linear or log scale) and a sampler: the product ``grid``, ``zip`` (the axes walked together),
``sobol`` or ``lhs`` (Latin hypercube) from :mod:`scipy.stats.qmc`. ``Space.points()`` is
deterministic, so chunk k of K (:func:`chunk`, a contiguous slice) is the same slice in every
process, and Snakemake can scatter the chunks and gather them in any order.

:func:`evaluate` runs every point on R noise realisations (``seeds``) with ``jax.vmap`` over
points and seeds, in batches sized by ``batch_size`` simulations, sharded over devices when
more than one is visible. Seed s is the key ``jax.random.PRNGKey(s)`` for every point, so the
result for a point does not depend on the chunk or batch it was evaluated in. A point whose
simulation diverges gets ``loss = inf`` for that seed and ``diverged = True``; the rest of the
batch is unaffected. :func:`top_k` picks starts for refinement in distinct basins.

:func:`extend_landscape` grows the explored box while its best point lies on an edge: it
evaluates points beyond that edge (within the parameter's domain, :func:`extension_domains`)
the same way and adds them to the :class:`~bnmfit.results.Landscape`, for up to a given
number of rounds, and records which faces were extended and which face the final best point
is on (if any).

The ``cmaes`` and ``nsga2`` samplers choose their points as they go (:func:`evolve`): each
generation is one :func:`evaluate` batch of candidates (the same seeds for every candidate),
and the strategy's next generation depends on its losses. CMA-ES (Hansen 2016,
arXiv:1604.00772; evosax's ``CMA_ES``) minimises the configured loss over unconstrained values
``u`` mapped into each axis' box by the refinement's own transforms
(:meth:`bnmfit.params.FreeParameter.to_constrained`: ``sigmoid`` on a linear axis, ``log`` on
a log axis), so every candidate lies in the box. NSGA-II (Deb et al. 2002; pymoo's ``NSGA2``)
minimises several named loss terms together in the unit cube of the axes and returns their
Pareto front. A diverged candidate is recorded (loss inf, ``diverged``) and ranked last
(the score SciPy's optimisers see for one, :data:`bnmfit.fit.SCIPY_PENALTY`), as is, for
NSGA-II, one whose objective is undefined (inf in ``Generations.objectives``). The run stops
after ``Strategy.generations``, before a generation that would pass ``Strategy.budget``
simulations, or (CMA-ES) when the losses stall within ``Strategy.tolerance``. With a
checkpoint directory every generation is saved atomically; a killed run resumes from the
last one and ends with bitwise the same result.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import qmc

from bnmfit.errors import ConfigError, unknown_choice
from bnmfit.losses import LOSSES, check_terms, pearson
from bnmfit.observables import upper
from bnmfit.params import START_MARGIN, FreeParameter
from bnmfit.results import Checkpoint

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.fit import Stage
    from bnmfit.problem import Problem
    from bnmfit.results import Landscape

__all__ = [
    "EVOLUTIONARY",
    "SAMPLERS",
    "Axis",
    "ExploreResult",
    "Generations",
    "Space",
    "Strategy",
    "chunk",
    "describe_faces",
    "evaluate",
    "evolve",
    "extend_landscape",
    "extension_domains",
    "top_k",
]

SAMPLERS: tuple[str, ...] = ("grid", "zip", "sobol", "lhs", "cmaes", "nsga2")
#: samplers that evolve a population generation by generation (:func:`evolve`), in one job
EVOLUTIONARY: tuple[str, ...] = ("cmaes", "nsga2")
SCALES: tuple[str, ...] = ("linear", "log")

#: a hook run on every point before its simulation (e.g. FIC): (problem, params) →
#: (params to simulate with, named scalar diagnostics)
PointHook = Callable[["Problem", dict], tuple[dict, dict]]


@dataclasses.dataclass(frozen=True)
class Axis:
    """One explored parameter: ``n`` values from ``lo`` to ``hi`` (grid and zip samplers),
    evenly spaced on a ``linear`` or ``log`` scale; samplers draw in the same box."""

    name: str
    lo: float
    hi: float
    n: int = 8
    scale: Literal["linear", "log"] = "linear"

    def __post_init__(self):
        try:
            lo, hi = float(self.lo), float(self.hi)
        except (TypeError, ValueError):
            raise ConfigError(
                f"axis {self.name!r}: lo and hi must be numbers, got {self.lo!r}, {self.hi!r}"
            ) from None
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)
        if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
            raise ConfigError(f"axis {self.name!r}: need finite lo < hi, got lo={lo:g}, hi={hi:g}")
        if isinstance(self.n, bool) or int(self.n) != self.n or self.n < 1:
            raise ConfigError(f"axis {self.name!r}: n must be a whole number ≥ 1, got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))
        if self.scale not in SCALES:
            raise ConfigError(
                f"axis {self.name!r}: unknown scale {self.scale!r}: use linear or log"
            )
        if self.scale == "log" and lo <= 0:
            raise ConfigError(
                f"axis {self.name!r}: a log scale needs lo > 0, got {lo:g}: use a positive "
                "lower bound or scale: linear"
            )

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map [0, 1] to the axis (log axes: geometrically)."""
        u = np.asarray(u, dtype=np.float64)
        if self.scale == "log":
            a, b = math.log(self.lo), math.log(self.hi)
            return np.exp(a + (b - a) * u)
        return self.lo + (self.hi - self.lo) * u

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Map axis values to [0, 1] (the inverse of :meth:`from_unit`)."""
        x = np.asarray(x, dtype=np.float64)
        if self.scale == "log":
            a, b = math.log(self.lo), math.log(self.hi)
            return (np.log(np.maximum(x, np.finfo(float).tiny)) - a) / (b - a)
        return (x - self.lo) / (self.hi - self.lo)

    def values(self) -> np.ndarray:
        """The ``n`` grid values, lo and hi included (one value: the middle of the axis)."""
        if self.n == 1:
            return self.from_unit(np.array([0.5]))
        return self.from_unit(np.linspace(0.0, 1.0, self.n))


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How the ``cmaes`` and ``nsga2`` samplers evolve their population (:func:`evolve`).

    Attributes:
        population: candidates per generation; None: CMA-ES's 4 + ⌊3 ln D⌋ (Hansen 2016)
            for D axes, NSGA-II's 100 (pymoo's default).
        generations: at most this many generations.
        sigma: CMA-ES's initial step size, in the unconstrained values (logit units: the
            first generation spreads over the middle ~70 % of each axis for sigma 1).
        tolerance: CMA-ES stops once the best losses of the last 10 + ⌈30·D/population⌉
            generations and every finite loss of the newest span less than this (Hansen's
            ``tolfun``); 0: never.
        budget: at most this many simulations (candidates × seeds); None: no limit.
        objectives: NSGA-II's objectives, terms of :data:`bnmfit.losses.LOSSES` (each the
            mean over the seeds).
    """

    population: int | None = None
    generations: int = 100
    sigma: float = 1.0
    tolerance: float = 1e-4
    budget: int | None = None
    objectives: tuple[str, ...] = ("fc_corr", "fcd_ks")

    def __post_init__(self):
        object.__setattr__(self, "objectives", tuple(self.objectives))
        for key, least in (("population", 2), ("generations", 1), ("budget", 1)):
            v = getattr(self, key)
            if v is None and key != "generations":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
                raise ConfigError(
                    f"exploration.evolution.{key} must be a whole number ≥ {least}, got {v!r}"
                )
        for key in ("sigma", "tolerance"):
            v = getattr(self, key)
            if (
                not (isinstance(v, (int, float)) and math.isfinite(v))
                or v < 0
                or (key == "sigma" and v == 0)
            ):
                raise ConfigError(
                    f"exploration.evolution.{key} must be a finite number "
                    f"{'> 0' if key == 'sigma' else '≥ 0'}, got {v!r}"
                )
        check_terms(self.objectives)
        if len(set(self.objectives)) < 2 or len(set(self.objectives)) < len(self.objectives):
            raise ConfigError(
                "exploration.evolution.objectives: NSGA-II needs at least two distinct loss "
                f"terms, got {list(self.objectives)}"
            )

    def size(self, sampler: str, n_axes: int) -> int:
        """The population of ``sampler`` over ``n_axes`` axes (the default when None)."""
        if self.population is not None:
            return int(self.population)
        return 4 + int(3 * math.log(n_axes)) if sampler == "cmaes" else 100


@dataclasses.dataclass(frozen=True)
class Space:
    """A parameter space: axes and how to sample them.

    Attributes:
        axes: the explored parameters (distinct names).
        sampler: ``grid`` (product of every axis's values, first axis slowest), ``zip``
            (the i-th value of every axis together; all axes need the same n), ``sobol``
            (scrambled Sobol sequence), ``lhs`` (Latin hypercube), or ``cmaes``/``nsga2``
            (:data:`EVOLUTIONARY`: points chosen as the search goes, :func:`evolve`; the
            axes' lo/hi bound the search, their n is unused).
        n_samples: number of points for ``sobol``/``lhs`` (a power of two keeps Sobol
            balanced).
        seed: scrambling seed for ``sobol``/``lhs``, the strategy's seed for
            ``cmaes``/``nsga2``.
        strategy: how ``cmaes``/``nsga2`` evolve (None: :class:`Strategy` defaults).
    """

    axes: tuple[Axis, ...]
    sampler: Literal["grid", "zip", "sobol", "lhs", "cmaes", "nsga2"] = "grid"
    n_samples: int = 0
    seed: int = 0
    strategy: Strategy | None = None

    def __post_init__(self):
        axes = tuple(self.axes)
        object.__setattr__(self, "axes", axes)
        if not axes:
            raise ConfigError("a parameter space needs at least one axis")
        names = [a.name for a in axes]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"axis {', '.join(dup)} given more than once")
        if self.sampler not in SAMPLERS:
            raise ConfigError(unknown_choice("sampler", self.sampler, SAMPLERS))
        if self.sampler == "zip" and len({a.n for a in axes}) > 1:
            raise ConfigError(
                "the zip sampler walks the axes together, so every axis needs the same n; got "
                + ", ".join(f"{a.name}: {a.n}" for a in axes)
            )
        if self.sampler in ("sobol", "lhs") and (
            isinstance(self.n_samples, bool) or int(self.n_samples) < 1
        ):
            raise ConfigError(
                f"the {self.sampler} sampler needs n_samples ≥ 1, got {self.n_samples!r}"
            )
        if self.sampler in EVOLUTIONARY and self.strategy is None:
            object.__setattr__(self, "strategy", Strategy())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def evolutionary(self) -> bool:
        """Whether the points are chosen as the search goes (:func:`evolve`)."""
        return self.sampler in EVOLUTIONARY

    @property
    def n_points(self) -> int:
        self._fixed()
        if self.sampler == "grid":
            return math.prod(a.n for a in self.axes)
        if self.sampler == "zip":
            return self.axes[0].n
        return int(self.n_samples)

    def _fixed(self) -> None:
        if self.evolutionary:
            raise ConfigError(
                f"the {self.sampler} sampler chooses its points as it goes: run "
                "bnmfit.explore.evolve, not a fixed list of points"
            )

    def unit_points(self) -> np.ndarray:
        """The points in the unit cube, (P, D), deterministic."""
        self._fixed()
        d = len(self.axes)
        if self.sampler == "grid":
            units = [np.array([0.5]) if a.n == 1 else np.linspace(0.0, 1.0, a.n) for a in self.axes]
            return np.array(list(itertools.product(*units)), dtype=np.float64).reshape(-1, d)
        if self.sampler == "zip":
            n = self.axes[0].n
            u = np.array([0.5]) if n == 1 else np.linspace(0.0, 1.0, n)
            return np.repeat(u[:, None], d, axis=1)
        n = int(self.n_samples)
        if self.sampler == "sobol":
            engine = _qmc(qmc.Sobol, d, self.seed)
            m = n.bit_length() - 1
            if n == 1 << m:
                return engine.random_base2(m)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # balance warning: documented
                return engine.random(n)
        return _qmc(qmc.LatinHypercube, d, self.seed).random(n)

    def points(self) -> np.ndarray:
        """The points (P, D) in the axes' units, deterministic for a given space."""
        u = self.unit_points()
        return np.stack([a.from_unit(u[:, i]) for i, a in enumerate(self.axes)], axis=1)

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        """Points (P, D) → unit cube, per axis and scale (for distances between points)."""
        points = np.asarray(points, dtype=np.float64)
        return np.stack([a.to_unit(points[:, i]) for i, a in enumerate(self.axes)], axis=1)


def _qmc(cls, d: int, seed: int):
    try:
        return cls(d, scramble=True, rng=int(seed))
    except TypeError:  # pragma: no cover - scipy < 1.15
        return cls(d, scramble=True, seed=int(seed))


def chunk(n_points: int, k: int, n_chunks: int) -> np.ndarray:
    """Indices of chunk ``k`` (0-based) of ``n_chunks``: contiguous, sizes differing by at
    most one, together exactly ``range(n_points)`` (chunks may be empty when
    ``n_chunks > n_points``)."""
    if n_chunks < 1:
        raise ConfigError(f"the number of chunks must be ≥ 1, got {n_chunks}")
    if not 0 <= k < n_chunks:
        raise ConfigError(f"chunk index {k} out of range: use 0 ≤ k < {n_chunks}")
    if n_points < 0:
        raise ConfigError(f"the number of points must be ≥ 0, got {n_points}")
    base, extra = divmod(n_points, n_chunks)
    start = k * base + min(k, extra)
    stop = start + base + (1 if k < extra else 0)
    return np.arange(start, stop)


@dataclasses.dataclass
class ExploreResult:
    """Losses of P points on R seeds.

    Attributes:
        names: the parameter of each column of ``points``.
        points: (P, D) the evaluated points.
        seeds: (R,) the noise seeds.
        loss: (P, R) the problem's loss per seed (inf where the simulation diverged).
        mean_loss, std_loss: (P,) over seeds (mean inf if any seed diverged).
        fc_r: (P,) mean over finite seeds of the Pearson r between simulated and empirical FC
            upper triangles (NaN when every seed diverged).
        diverged: (P,) whether any seed of the point diverged (non-finite BOLD or loss).
        extras: named (P,) diagnostics of a point hook (e.g. FIC's achieved rates).
        terms: named loss terms asked of :func:`evaluate`, (P, R) each (inf where the
            simulation diverged or the term is undefined, e.g. the FCD KS of a window of
            constant BOLD).
        generations: what :func:`evolve` did per generation (None for a fixed space).
    """

    names: tuple[str, ...]
    points: np.ndarray
    seeds: np.ndarray
    loss: np.ndarray
    mean_loss: np.ndarray
    std_loss: np.ndarray
    fc_r: np.ndarray
    diverged: np.ndarray
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    terms: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    generations: Generations | None = None

    def __len__(self) -> int:
        return len(self.points)

    def starts(self, k: int, *, min_separation: float = 0.1, space: Space | None = None):
        """The top-k starts as parameter dicts (see :func:`top_k`)."""
        idx = top_k(self.points, self.mean_loss, k, min_separation=min_separation, space=space)
        return [{n: float(self.points[i, d]) for d, n in enumerate(self.names)} for i in idx]


@functools.lru_cache(maxsize=32)
def _evaluator(names: tuple[str, ...], hook: PointHook | None, sharding, terms: tuple = ()):
    """The jitted (problem, points (B, D), keys (R, 2)) → (loss, r, bad, extras, terms).

    The problem is an argument (a pytree), not a constant: one compilation serves every
    subject with the same settings and number of regions."""

    def point(problem, x, keys):
        params = {n: x[i] for i, n in enumerate(names)}
        extras = {}
        if hook is not None:  # once per point, before its R simulations
            params, extras = hook(problem, params)
        emp = upper(problem.empirical.fc)

        def one(k):
            sim = problem.simulate(params, k)
            observed = problem.observation.observe(sim.bold)
            loss = problem.loss_of(observed)
            r = pearson(upper(observed.fc), emp)
            named = {t: LOSSES[t](observed, problem.empirical, problem.ks_smooth) for t in terms}
            ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(sim.bold)) & jnp.isfinite(r)
            named = {t: jnp.where(ok & jnp.isfinite(v), v, jnp.inf) for t, v in named.items()}
            return jnp.where(ok, loss, jnp.inf), jnp.where(ok, r, jnp.nan), ~ok, named

        loss, r, bad, named = jax.vmap(one)(keys)
        return loss, r, bad, {n: jnp.asarray(v) for n, v in extras.items()}, named

    fn = jax.vmap(point, (None, 0, None))
    if sharding is None:
        return jax.jit(fn)
    batch, replicated = sharding
    return jax.jit(fn, in_shardings=(replicated, batch, replicated), out_shardings=batch)


def _sharding():
    """(batch sharding, replicated sharding) over all devices, or None for one device."""
    devices = jax.devices()
    if len(devices) < 2:
        return None
    mesh = jax.sharding.Mesh(np.array(devices), ("points",))
    P = jax.sharding.PartitionSpec
    return (
        jax.sharding.NamedSharding(mesh, P("points")),
        jax.sharding.NamedSharding(mesh, P()),
    )


def evaluate(
    problem: Problem,
    names: Sequence[str],
    points: np.ndarray,
    seeds: Sequence[int],
    *,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    hook: PointHook | None = None,
    n_total: int | None = None,
    terms: Sequence[str] = (),
) -> ExploreResult:
    """The loss of every point on every seed.

    Args:
        problem: the subject's fitting problem.
        names: the parameter of each column of ``points`` (``G``, ``sigma`` or a model
            parameter; a scalar per point, broadcast over regions).
        points: (P, D) parameter values.
        seeds: R noise seeds; seed s is ``jax.random.PRNGKey(s)`` for every point.
        batch_size: simulations per compiled call (points × seeds), sized to memory; a
            batch holds ``max(1, batch_size // R)`` points (a multiple of the device count),
            and the last batch is padded, so one compilation serves every batch.
        progress: called as ``progress(points_done, points_total)`` after every batch.
        hook: run on every point before its simulation, e.g. :func:`bnmfit.fic.hook`
            (FIC per grid point); its named diagnostics land in ``ExploreResult.extras``.
        n_total: points of the whole space when ``points`` is one chunk of it. A batch
            holds at most this many points (default: ``len(points)``), so every chunking
            of a space runs the same compiled batch shape and gives bitwise the same
            losses (XLA may round a batch of one point differently from a batch of two).
        terms: loss terms of :data:`bnmfit.losses.LOSSES` to report one by one as well
            (``ExploreResult.terms``; ``fcd_ks`` needs the problem's FCD).
    Returns:
        :class:`ExploreResult`.
    """
    names = tuple(str(n) for n in names)
    problem.check_names(names)
    if "weights" in names:
        raise ConfigError(
            "'weights' cannot be an exploration axis (it is a matrix): explore G instead"
        )
    if len(set(names)) != len(names):
        raise ConfigError(f"parameter names repeat: {', '.join(names)}")
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != len(names):
        raise ConfigError(
            f"points must be (P, {len(names)}) for the parameters {', '.join(names)}, got "
            f"shape {points.shape}"
        )
    if not np.all(np.isfinite(points)):
        raise ConfigError("the points contain NaN or inf: give finite parameter values")
    seeds = np.asarray([int(s) for s in seeds], dtype=np.int64)
    if seeds.size == 0:
        raise ConfigError("give at least one noise seed")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be ≥ 1, got {batch_size}")
    terms = tuple(str(t) for t in terms)
    check_terms(terms)
    if "fcd_ks" in terms and (problem.empirical.fcd is None or not problem.observation.fcd_window):
        raise ConfigError(
            "the loss term fcd_ks needs an FCD: set observation.fcd_window and give the subject "
            "BOLD (not a precomputed FC), or drop fcd_ks from exploration.evolution.objectives"
        )
    n_points, n_seeds = len(points), len(seeds)
    sharding = _sharding()
    n_dev = 1 if sharding is None else len(jax.devices())
    per_batch = max(1, batch_size // n_seeds)
    per_batch = min(per_batch, max(n_points if n_total is None else int(n_total), 1))
    per_batch = -(-per_batch // n_dev) * n_dev
    fn = _evaluator(names, hook, sharding, terms)
    dtype = problem.weights.dtype
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])

    loss = np.empty((n_points, n_seeds))
    r = np.empty((n_points, n_seeds))
    bad = np.empty((n_points, n_seeds), dtype=bool)
    named = {t: np.empty((n_points, n_seeds)) for t in terms}
    extras: dict[str, np.ndarray] = {}
    for start in range(0, n_points, per_batch):
        stop = min(start + per_batch, n_points)
        xb = np.empty((per_batch, len(names)))
        xb[: stop - start] = points[start:stop]
        xb[stop - start :] = points[start]  # padding, discarded
        lb, rb, bb, eb, tb = fn(problem, jnp.asarray(xb, dtype), keys)
        loss[start:stop] = np.asarray(lb)[: stop - start]
        for t in terms:
            named[t][start:stop] = np.asarray(tb[t])[: stop - start]
        r[start:stop] = np.asarray(rb)[: stop - start]
        bad[start:stop] = np.asarray(bb)[: stop - start]
        for name, v in eb.items():
            v = np.asarray(v)[: stop - start]
            if name not in extras:
                extras[name] = np.empty((n_points,) + v.shape[1:], v.dtype)
            extras[name][start:stop] = v
        if progress is not None:
            progress(stop, n_points)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = loss.mean(axis=1)
        std = np.where(np.isfinite(mean), loss.std(axis=1), np.inf)
        fc_r = np.nanmean(r, axis=1) if n_points else np.empty(0)
    return ExploreResult(
        names=names,
        points=points,
        seeds=seeds,
        loss=loss,
        mean_loss=mean,
        std_loss=std,
        fc_r=fc_r,
        diverged=bad.any(axis=1),
        extras=extras,
        terms=named,
    )


def top_k(
    points: np.ndarray,
    loss: np.ndarray,
    k: int,
    *,
    min_separation: float = 0.1,
    space: Space | None = None,
) -> np.ndarray:
    """Indices of the best ``k`` points in distinct basins, best first.

    Distances are Euclidean in the unit cube of the axes (``space`` given: per axis and
    scale; else each column scaled by the range of ``points``). A point is a basin's bottom
    when no point within its neighbourhood (radius: the larger of ``min_separation`` and 1.5
    median nearest-neighbour distances, i.e. the grid's diagonal neighbours) has a lower
    loss. The bottoms are taken best first, each at least ``min_separation`` from those
    taken; when fewer than ``k`` basins exist, the best other points at least
    ``min_separation`` from every point taken fill up. Non-finite losses are never taken, so
    fewer than ``k`` indices come back when fewer points qualify.
    """
    points = np.asarray(points, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if k < 1:
        raise ConfigError(f"k must be ≥ 1, got {k}")
    if points.ndim != 2 or loss.shape != (points.shape[0],):
        raise ConfigError(
            f"points must be (P, D) and loss (P,), got {points.shape} and {loss.shape}"
        )
    finite = np.flatnonzero(np.isfinite(loss))
    if finite.size == 0:
        return np.zeros(0, dtype=np.int64)
    if space is not None:
        unit = space.to_unit(points)
    else:
        lo, hi = points.min(axis=0), points.max(axis=0)
        unit = (points - lo) / np.where(hi > lo, hi - lo, 1.0)
    unit, fl = unit[finite], loss[finite]
    tree = cKDTree(unit)
    if len(unit) > 1:
        nn = tree.query(unit, k=2)[0][:, 1]
        radius = max(min_separation, 1.5 * float(np.median(nn)))
    else:
        radius = min_separation
    neighbours = tree.query_ball_point(unit, radius)
    bottom = np.array([fl[i] <= fl[nb].min() for i, nb in enumerate(neighbours)])
    order = np.argsort(fl, kind="stable")
    chosen: list[int] = []
    for pool in (order[bottom[order]], order):
        for i in pool:
            if len(chosen) == k:
                break
            if i not in chosen and all(
                np.linalg.norm(unit[i] - unit[j]) >= min_separation for j in chosen
            ):
                chosen.append(int(i))
    chosen.sort(key=lambda i: (fl[i], i))
    return finite[np.array(chosen, dtype=np.int64)]


# ------------------------------------------------------------------------- box extension

#: parameters that are ≥ 0 by nature: their domain when no refinement stage frees them
NONNEGATIVE: tuple[str, ...] = ("G", "sigma")

#: how close (in units of an axis' explored range) a value must be to a domain's end to
#: count as on it
_EPS = 1e-9

#: ``progress(round, faces, points_done, points_total)`` of :func:`extend_landscape`
ExtendProgress = Callable[[int, list, int, int], None]


def extension_domains(
    stages: Sequence[Stage], names: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """How far the explored box may grow along each parameter of ``names``: the bounds of
    the first refinement stage that frees it, as its transform enforces them (sigmoid, log:
    ``(lo, hi)``; softplus: ``(lo, inf)``; identity: unbounded), since refinement cannot
    start outside them; a parameter no stage frees: ``[0, inf)`` for G and sigma
    (:data:`NONNEGATIVE`), else unbounded. A log-scale axis grows in geometric steps, so it
    stays above 0 whatever its domain."""
    out = {}
    for name in names:
        fp = next((p for st in stages for p in st.free if p.name == name), None)
        if fp is None:
            out[name] = (0.0 if name in NONNEGATIVE else -math.inf, math.inf)
        else:
            lo, hi = fp.scipy_bounds
            out[name] = (-math.inf if lo is None else lo, math.inf if hi is None else hi)
    return out


def describe_faces(faces: Sequence[Mapping]) -> str:
    """``w hi (1)``-style text of box faces (``to`` where a face moved: ``G hi 0.7 → 0.9``);
    ``, the domain's end`` marks a face where the parameter's domain ends."""
    parts = []
    for f in faces:
        where = f"{f['from']:.4g} → {f['to']:.4g}" if "to" in f else f"{f['at']:.4g}"
        parts.append(
            f"{f['axis']} {f['side']} ({where}{', the domain’s end' if f['domain'] else ''})"
        )
    return ", ".join(parts)


def _best(mean_loss: np.ndarray) -> int:
    return int(np.argmin(np.where(np.isfinite(mean_loss), mean_loss, np.inf)))


def _box(space: Space, points: np.ndarray, extensions: Sequence[Mapping]) -> np.ndarray:
    """The explored box (D, 2) in the axes' units: grid/zip: each axis' smallest and largest
    value; sobol/lhs: the axes' lo/hi moved by every recorded extension."""
    if space.sampler in ("grid", "zip"):
        return np.stack([points.min(axis=0), points.max(axis=0)], axis=1)
    box = np.array([[a.lo, a.hi] for a in space.axes])
    col = {n: i for i, n in enumerate(space.names)}
    for ext in extensions:
        for f in ext["faces"]:
            box[col[f["axis"]], 0 if f["side"] == "lo" else 1] = f["to"]
    return box


def _unit_domain(axis: Axis, domain: tuple[float, float]) -> np.ndarray:
    return axis.to_unit(np.asarray(domain, dtype=np.float64))


def _faces(
    space: Space, points: np.ndarray, mean_loss: np.ndarray, box: np.ndarray, domains: Mapping
) -> list[dict]:
    """The faces of ``box`` the best point (lowest finite mean loss) lies on, as dicts
    ``axis``, ``side`` (lo/hi), ``at`` (the face's value), ``domain`` (the parameter's
    domain ends there). Grid/zip: the best value is the axis' smallest or largest (axes of
    one value have no faces); sobol/lhs: it lies within half a typical spacing of the face
    (the D-th root of the box's volume per point, in the unit box of the axes);
    cmaes/nsga2: within :data:`bnmfit.params.START_MARGIN` of the axis' range (refinement
    would move such a start inside), since their points crowd where the loss is low."""
    b = _best(mean_loss)
    scattered = space.sampler not in ("grid", "zip")
    if scattered:
        ubox = space.to_unit(box.T).T
        ubest = space.to_unit(points[b : b + 1])[0]
        tol = 0.5 * (float(np.prod(ubox[:, 1] - ubox[:, 0])) / len(points)) ** (
            1.0 / len(space.axes)
        )
        if space.evolutionary:
            tol = START_MARGIN
    faces = []
    for i, a in enumerate(space.axes):
        if not scattered and a.n == 1:
            continue
        ud, ub = _unit_domain(a, domains[a.name]), a.to_unit(box[i])
        for s, side in enumerate(("lo", "hi")):
            on = abs(ubest[i] - ubox[i, s]) <= tol if scattered else points[b, i] == box[i, s]
            if on:
                end = ub[0] <= ud[0] + _EPS if s == 0 else ub[1] >= ud[1] - _EPS
                faces.append({"axis": a.name, "side": side, "at": float(box[i, s]), "domain": end})
    return [{**f, "domain": bool(f["domain"])} for f in faces]


def _grow(axis: Axis, face: float, side: str, domain, step: float, count: int):
    """Up to ``count`` values beyond ``face`` (toward ``side``), ``step`` apart in the axis'
    unit (so a log axis steps geometrically); the first past the domain's end is replaced by
    that end and the rest dropped. Returns the values and whether the end was reached."""
    s = 0 if side == "lo" else 1
    sign = 2 * s - 1
    end = _unit_domain(axis, domain)[s]
    u = axis.to_unit(np.array([face]))[0] + sign * step * np.arange(1, count + 1)
    past = sign * (u - end) >= -_EPS
    values = axis.from_unit(u[~past])
    if past.any():
        values = np.append(values, domain[s])
    return values, bool(past.any())


def _extension(
    space: Space,
    points: np.ndarray,
    box: np.ndarray,
    faces: Sequence[Mapping],
    domains: Mapping,
    round_: int,
) -> tuple[np.ndarray, list[dict]]:
    """The points beyond ``faces`` and one record per face (``axis``, ``side``, ``from``,
    ``to``, ``domain``: whether the face reached the domain's end).

    Grid: up to half the axis' n more values at its spacing, in product with every value the
    other axes have so far (corners included). Zip: the walk continued the same way, all
    axes together, until the first axis' domain ends. Sobol/lhs: the face moves out by half
    the axis' explored range, and a sample of the same sampler (seed ``round_``) and density
    fills what the box gained."""
    col = {n: i for i, n in enumerate(space.names)}
    records = []
    if space.sampler == "zip":
        side = faces[0]["side"]
        s = 0 if side == "lo" else 1
        ends = np.array([_unit_domain(a, domains[a.name])[s] for a in space.axes])
        k = int(np.argmin((2 * s - 1) * ends))  # the axis whose domain ends first on the walk
        lead, n = space.axes[k], space.axes[k].n
        walk, end = _grow(lead, box[k, s], side, domains[lead.name], 1 / (n - 1), n // 2)
        u = lead.to_unit(walk)
        new = np.stack([a.from_unit(u) for a in space.axes], axis=1)
        new[:, k] = walk
        for i, a in enumerate(space.axes):
            at_end = end and abs(ends[i] - ends[k]) <= _EPS
            if at_end:
                new[-1, i] = domains[a.name][s]
            records.append(
                {
                    "axis": a.name,
                    "side": side,
                    "from": float(box[i, s]),
                    "to": float(new[-1, i]),
                    "domain": bool(at_end),
                }
            )
        return new, records
    if space.sampler == "grid":
        added = [np.empty(0) for _ in space.axes]
        for f in faces:
            i = col[f["axis"]]
            a = space.axes[i]
            added[i], end = _grow(a, f["at"], f["side"], domains[a.name], 1 / (a.n - 1), a.n // 2)
            records.append({**_moved(f, added[i][-1]), "domain": end})
        axes_values = [
            np.sort(np.concatenate([np.unique(points[:, i]), added[i]]))
            for i in range(len(space.axes))
        ]
        grid = np.array(list(itertools.product(*axes_values)), dtype=np.float64)
        fresh = np.zeros(len(grid), dtype=bool)
        for i, x in enumerate(added):
            fresh |= np.isin(grid[:, i], x)
        return grid[fresh], records
    grown = box.copy()
    for f in faces:
        i = col[f["axis"]]
        a = space.axes[i]
        (to,), end = _grow(a, f["at"], f["side"], domains[a.name], 0.5, 1)
        grown[i, 0 if f["side"] == "lo" else 1] = to
        records.append({**_moved(f, to), "domain": end})
    volume = float(np.prod(np.diff(space.to_unit(grown.T).T, axis=1)))
    sample = Space(
        tuple(
            Axis(a.name, lo, hi, n=a.n, scale=a.scale)
            for a, (lo, hi) in zip(space.axes, grown, strict=True)
        ),
        sampler=space.sampler,
        n_samples=math.ceil(space.n_samples * volume),
        seed=round_,
    ).points()
    return sample[((sample < box[:, 0]) | (sample > box[:, 1])).any(axis=1)], records


def _moved(face: Mapping, to: float) -> dict:
    return {"axis": face["axis"], "side": face["side"], "from": face["at"], "to": float(to)}


def _extend(
    landscape: Landscape,
    domains: Mapping[str, tuple[float, float]],
    rounds: int,
    run: Callable[[np.ndarray, Callable[[int, int], None] | None], ExploreResult],
    progress: ExtendProgress | None,
) -> Landscape:
    """:func:`extend_landscape` with ``run(points, progress)`` evaluating the points."""
    if isinstance(rounds, bool) or int(rounds) != rounds or rounds < 0:
        raise ConfigError(f"exploration.extend must be a whole number ≥ 0, got {rounds!r}")
    missing = [n for n in landscape.names if n not in domains]
    if missing:
        raise ConfigError(f"no extension domain for {', '.join(missing)}: give one per axis")
    space = landscape.space()
    land = landscape
    rounds = 0 if space.evolutionary else int(rounds)  # their search had the whole box
    for r in range(1, rounds + 1):
        box = _box(space, land.points, land.extensions)
        faces = _faces(space, land.points, land.mean_loss, box, domains)
        grow = [f for f in faces if not f["domain"]]
        if not grow or (space.sampler == "zip" and len(grow) < len(faces)):
            break
        new, records = _extension(space, land.points, box, grow, domains, r)
        if not len(new):
            break
        step = None if progress is None else functools.partial(progress, r, records)
        land = land.extended(run(new, step), round_=r, faces=records)
    box = _box(space, land.points, land.extensions)
    return dataclasses.replace(
        land,
        extend=rounds,
        edge=_faces(space, land.points, land.mean_loss, box, domains),
    )


def extend_landscape(
    problem: Problem | None,
    landscape: Landscape,
    domains: Mapping[str, tuple[float, float]],
    *,
    rounds: int,
    batch_size: int = 64,
    progress: ExtendProgress | None = None,
) -> Landscape:
    """Grow the explored box while its best point lies on an edge, then record where it is.

    Each round finds the faces of the box that the best point (lowest finite mean loss)
    lies on (grid/zip: the axis' first or last value; sobol/lhs: within half a typical
    point spacing of the face), evaluates points beyond those faces (see
    :func:`_extension`: grid axes at their spacing, up to half their n more values; log
    axes in geometric steps; never past the parameter's domain) on the landscape's seeds
    with :func:`evaluate` (the same batch shape as the exploration's chunks), and adds them
    to the landscape (:meth:`~bnmfit.results.Landscape.extended`: the refinement starts
    are chosen again among all points). It stops after ``rounds`` rounds, or earlier when
    the best point is inside the box or only on faces where the domain ends. A cmaes/nsga2
    landscape is never extended (``extend`` 0: the search could go anywhere in the box),
    only checked for its best point on a face.

    Args:
        problem: the subject's problem (unused when nothing is evaluated, e.g.
            ``rounds=0``).
        landscape: the gathered exploration.
        domains: parameter → (lo, hi) beyond which the box does not grow
            (:func:`extension_domains`; ±inf for none), one per axis.
        rounds: at most this many extensions (``exploration.extend``; 0: none).
        batch_size: as in :func:`evaluate`.
        progress: ``progress(round, faces, points_done, points_total)`` after every batch,
            ``faces`` as recorded in ``Landscape.extensions``.
    Returns:
        The landscape with the new points (``extension_round`` ≥ 1), ``extensions`` (per
        round: the faces moved and the points added), ``extend`` and ``edge``: the faces
        the final best point lies on (empty: inside the box), each saying whether the
        parameter's domain ends there.
    """

    def run(points, step):
        return evaluate(
            problem,
            landscape.names,
            points,
            landscape.seeds,
            batch_size=batch_size,
            progress=step,
            n_total=landscape.n_points,
        )

    return _extend(landscape, domains, rounds, run, progress)


# ------------------------------------------------------------------------- evolution

#: name of the checkpoint file of :func:`evolve` in its checkpoint directory
CHECKPOINT_NAME = "explore-checkpoint.pkl"
CHECKPOINT_VERSION = 1
#: why :func:`evolve` stopped
STOPS: tuple[str, ...] = ("generations", "budget", "tolerance")

#: ``progress(generation, generations, best_loss)`` of :func:`evolve`, after every generation
EvolveProgress = Callable[[int, int, float], None]


@dataclasses.dataclass(frozen=True)
class Generations:
    """What :func:`evolve` did, generation by generation.

    Attributes:
        generation: (P,) the generation (0-based) of each evaluated point.
        best_loss: (G,) the generation's lowest mean loss (inf when all diverged).
        mean_loss: (G,) the mean of the generation's finite mean losses (NaN when none).
        sigma: (G,) CMA-ES's step size (unconstrained units) that sampled the generation;
            NaN for NSGA-II.
        population: candidates asked per generation.
        stop: why the search ended (:data:`STOPS`): ``generations`` (all run),
            ``budget`` (one more would pass it) or ``tolerance`` (CMA-ES stalled).
        objective_names: NSGA-II's objectives (empty for CMA-ES).
        objectives: (P, K) each point's objectives, means over the seeds (inf where a
            seed diverged).
        front: indices of the Pareto front, the non-dominated points among every point
            evaluated with finite objectives, by the first objective (empty for CMA-ES).
    """

    generation: np.ndarray
    best_loss: np.ndarray
    mean_loss: np.ndarray
    sigma: np.ndarray
    population: int
    stop: str
    objective_names: tuple[str, ...] = ()
    objectives: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    front: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))


def _box_parameters(space: Space) -> list[FreeParameter]:
    """Each axis as a free parameter over its box: ``sigmoid`` on a linear axis, ``log`` on
    a log axis (the transforms refinement bounds its parameters with)."""
    return [
        FreeParameter(a.name, a.lo, a.hi, transform="log" if a.scale == "log" else "sigmoid")
        for a in space.axes
    ]


class _CMAES:
    """evosax's CMA-ES over u in R^D, mean 0 (the box's middle), step ``strategy.sigma``;
    candidate x_d = to_constrained_d(u_d). The state is a pytree of NumPy arrays (saved as
    it is); generation g draws with the key fold_in(PRNGKey(seed), g)."""

    def __init__(self, space: Space, size: int):
        from evosax.algorithms import CMA_ES

        self.bounds = _box_parameters(space)
        self.es = CMA_ES(population_size=size, solution=jnp.zeros(len(space.axes)))
        self.params = self.es.default_params.replace(std_init=jnp.asarray(space.strategy.sigma))
        self.key = jax.random.PRNGKey(int(space.seed))

    def init(self):
        mean = jnp.zeros(len(self.bounds))
        return jax.tree.map(np.asarray, self.es.init(self.key, mean, self.params))

    def sigma(self, state) -> float:
        return float(state.std)

    def ask(self, state, g: int):
        key = jax.random.fold_in(jax.random.fold_in(self.key, g), 0)
        u, asked = self.es.ask(key, state, self.params)
        x = np.stack([np.asarray(p.to_constrained(u[:, d])) for d, p in enumerate(self.bounds)], 1)
        lo, hi = [np.array([getattr(p, k) for p in self.bounds]) for k in ("lo", "hi")]
        return np.clip(x, lo, hi), (u, asked)  # clip: rounding of exp(log hi) only

    def tell(self, state, g: int, pending, scores: np.ndarray):
        u, asked = pending
        key = jax.random.fold_in(jax.random.fold_in(self.key, g), 1)
        told, _ = self.es.tell(key, u, jnp.asarray(scores, u.dtype), asked, self.params)
        return jax.tree.map(np.asarray, told)


class _NSGA2:
    """pymoo's NSGA-II in the unit cube of the axes (its operators work in a box); the
    state is the pymoo algorithm with its own random generator (seeded)."""

    def __init__(self, space: Space, size: int):
        self.space, self.size = space, size

    def init(self):
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.problem import Problem as Box
        from pymoo.core.termination import NoTermination

        d, k = len(self.space.axes), len(self.space.strategy.objectives)
        box = Box(n_var=d, n_obj=k, xl=np.zeros(d), xu=np.ones(d))
        return NSGA2(pop_size=self.size).setup(
            box, seed=int(self.space.seed), termination=NoTermination()
        )

    def sigma(self, state) -> float:
        return math.nan

    def ask(self, algorithm, g: int):
        asked = algorithm.ask()
        u = np.clip(asked.get("X"), 0.0, 1.0)
        return np.stack([a.from_unit(u[:, d]) for d, a in enumerate(self.space.axes)], 1), asked

    def tell(self, algorithm, g: int, asked, scores: np.ndarray):
        asked.set("F", scores)
        algorithm.tell(infills=asked)
        return algorithm


#: the checkpoint of :func:`evolve` in a directory (None: no checkpoints) for a fingerprint
_Checkpoint = functools.partial(
    Checkpoint,
    name=CHECKPOINT_NAME,
    version=CHECKPOINT_VERSION,
    run="exploration",
    other="another exploration (other data, space, strategy, seeds or batch_size)",
)


_RESULT_ARRAYS = ("points", "loss", "mean_loss", "std_loss", "fc_r", "diverged")


def _joined(parts: Sequence[ExploreResult]) -> ExploreResult:
    """The results of several batches of points as one (same names and seeds)."""
    first = parts[0]
    return ExploreResult(
        names=first.names,
        seeds=first.seeds,
        **{k: np.concatenate([getattr(p, k) for p in parts]) for k in _RESULT_ARRAYS},
        extras={k: np.concatenate([p.extras[k] for p in parts]) for k in first.extras},
        terms={k: np.concatenate([p.terms[k] for p in parts]) for k in first.terms},
    )


def _term_means(result: ExploreResult, names: Sequence[str]) -> np.ndarray:
    """(P, K) each named term's mean over the seeds (inf where a seed diverged)."""
    if not names:
        return np.zeros((len(result.points), 0))
    return np.stack([result.terms[n].mean(axis=1) for n in names], axis=1)


def _front(objectives: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows among the finite ones, by the first objective."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    finite = np.flatnonzero(np.isfinite(objectives).all(axis=1))
    if finite.size == 0:
        return np.zeros(0, np.int64)
    idx = finite[NonDominatedSorting().do(objectives[finite], only_non_dominated_front=True)]
    return np.array(sorted(idx, key=lambda i: (objectives[i, 0], i)), dtype=np.int64)


def _stalled(parts: Sequence[ExploreResult], window: int, tolerance: float) -> bool:
    """Hansen's ``tolfun``: the best losses of the last ``window`` generations and every
    loss of the newest span less than ``tolerance`` (all finite)."""
    if tolerance <= 0 or len(parts) < window:
        return False
    best = [p.mean_loss.min() for p in parts[-window:]]
    values = np.concatenate([best, parts[-1].mean_loss])
    return bool(np.isfinite(values).all() and np.ptp(values) < tolerance)


def _require_evolutionary(space: Space) -> None:
    if not space.evolutionary:
        raise ConfigError(
            f"the {space.sampler} sampler has a fixed list of points: use evaluate, or "
            f"exploration.sampler {' or '.join(EVOLUTIONARY)}"
        )


def _evolve(
    space: Space,
    n_seeds: int,
    run: Callable[[np.ndarray], ExploreResult],
    checkpoint: _Checkpoint,
    progress: EvolveProgress | None = None,
) -> ExploreResult:
    """:func:`evolve` with ``run(points)`` evaluating each generation's candidates."""
    from bnmfit.fit import SCIPY_PENALTY

    _require_evolutionary(space)
    st = space.strategy
    size = st.size(space.sampler, len(space.axes))
    cost = size * int(n_seeds)
    if st.budget is not None and st.budget < cost:
        raise ConfigError(
            f"exploration.evolution.budget = {st.budget} simulations is less than one "
            f"generation ({size} candidates × {n_seeds} seeds = {cost}); raise the budget or "
            "lower exploration.evolution.population"
        )
    strategy = _CMAES(space, size) if space.sampler == "cmaes" else _NSGA2(space, size)
    objectives = st.objectives if space.sampler == "nsga2" else ()
    window = 10 + math.ceil(30 * len(space.axes) / size)
    saved = checkpoint.load() or {"state": strategy.init(), "parts": [], "sigma": [], "stop": None}
    state, parts, sigma, stop = saved["state"], saved["parts"], saved["sigma"], saved["stop"]
    while stop is None:
        g = len(parts)
        points, pending = strategy.ask(state, g)
        res = run(points)
        scores = _term_means(res, objectives) if objectives else res.mean_loss[:, None]
        scores = np.where(np.isfinite(scores), scores, SCIPY_PENALTY)
        sigma.append(strategy.sigma(state))
        state = strategy.tell(state, g, pending, scores if objectives else scores[:, 0])
        parts.append(res)
        spent = sum(len(p.points) for p in parts) * int(n_seeds)
        if space.sampler == "cmaes" and _stalled(parts, window, st.tolerance):
            stop = "tolerance"
        elif g + 1 >= st.generations:
            stop = "generations"
        elif st.budget is not None and spent + cost > st.budget:
            stop = "budget"
        checkpoint.save({"state": state, "parts": parts, "sigma": sigma, "stop": stop})
        if progress is not None:
            progress(g + 1, st.generations, float(min(p.mean_loss.min() for p in parts)))
    result = _joined(parts)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a generation that all diverged
        means = [np.nanmean(np.where(np.isfinite(p.mean_loss), p.mean_loss, np.nan)) for p in parts]
    obj = _term_means(result, objectives)
    result.generations = Generations(
        generation=np.concatenate([np.full(len(p.points), g) for g, p in enumerate(parts)]),
        best_loss=np.array([p.mean_loss.min() for p in parts]),
        mean_loss=np.array(means),
        sigma=np.array(sigma, dtype=np.float64),
        population=size,
        stop=stop,
        objective_names=tuple(objectives),
        objectives=obj,
        front=_front(obj) if objectives else np.zeros(0, np.int64),
    )
    return result


def evolve(
    problem: Problem,
    space: Space,
    seeds: Sequence[int],
    *,
    batch_size: int = 64,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: EvolveProgress | None = None,
) -> ExploreResult:
    """Search ``space`` (sampler ``cmaes`` or ``nsga2``) generation by generation.

    Each generation's candidates are one :func:`evaluate` call on ``seeds`` (the batch
    shape of a whole generation, so every generation compiles once). CMA-ES minimises the
    mean loss over the seeds; NSGA-II the means of ``space.strategy.objectives``. A
    diverged candidate keeps loss inf and ``diverged`` in the result and is ranked last,
    as is one with an undefined objective (inf; e.g. FCD KS of windows of constant BOLD).
    The search stops after ``strategy.generations``, before passing ``strategy.budget``
    simulations, or (CMA-ES) when stalled within ``strategy.tolerance``.

    Args:
        problem: the subject's problem.
        space: the axes (their lo/hi bound the search), the sampler, its seed and
            :class:`Strategy`.
        seeds: the noise seeds of every candidate.
        batch_size: as in :func:`evaluate`.
        checkpoint_dir: where the state is saved after every generation and resumed from
            (None: no checkpoints); a checkpoint of another problem, space or settings is
            refused. A resumed run ends bitwise as an uninterrupted one.
        progress: ``progress(generation, generations, best_loss)`` after every generation.
    Returns:
        An :class:`ExploreResult` of every evaluated point in order of generation, with
        ``generations`` (:class:`Generations`) and, for NSGA-II, ``terms``.
    """
    from bnmfit.fit import _fingerprint

    _require_evolutionary(space)
    size = space.strategy.size(space.sampler, len(space.axes))
    terms = space.strategy.objectives if space.sampler == "nsga2" else ()
    h = hashlib.sha256(_fingerprint(problem, (), (), 0, (), 0).encode())
    h.update(repr((space, [int(s) for s in seeds], int(batch_size))).encode())

    def run(points):
        return evaluate(
            problem, space.names, points, seeds, batch_size=batch_size, n_total=size, terms=terms
        )

    return _evolve(space, len(seeds), run, _Checkpoint(checkpoint_dir, h.hexdigest()), progress)
