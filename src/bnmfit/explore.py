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
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree
from scipy.stats import qmc

from bnmfit.errors import ConfigError, unknown_choice
from bnmfit.losses import pearson
from bnmfit.observables import upper

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.fit import Stage
    from bnmfit.problem import Problem
    from bnmfit.results import Landscape

__all__ = [
    "SAMPLERS",
    "Axis",
    "ExploreResult",
    "Space",
    "chunk",
    "describe_faces",
    "evaluate",
    "extend_landscape",
    "extension_domains",
    "top_k",
]

SAMPLERS: tuple[str, ...] = ("grid", "zip", "sobol", "lhs")
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
class Space:
    """A parameter space: axes and how to sample them.

    Attributes:
        axes: the explored parameters (distinct names).
        sampler: ``grid`` (product of every axis's values, first axis slowest), ``zip``
            (the i-th value of every axis together; all axes need the same n), ``sobol``
            (scrambled Sobol sequence) or ``lhs`` (Latin hypercube).
        n_samples: number of points for ``sobol``/``lhs`` (a power of two keeps Sobol
            balanced).
        seed: scrambling seed for ``sobol``/``lhs``.
    """

    axes: tuple[Axis, ...]
    sampler: Literal["grid", "zip", "sobol", "lhs"] = "grid"
    n_samples: int = 0
    seed: int = 0

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

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def n_points(self) -> int:
        if self.sampler == "grid":
            return math.prod(a.n for a in self.axes)
        if self.sampler == "zip":
            return self.axes[0].n
        return int(self.n_samples)

    def unit_points(self) -> np.ndarray:
        """The points in the unit cube, (P, D), deterministic."""
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

    def __len__(self) -> int:
        return len(self.points)

    def starts(self, k: int, *, min_separation: float = 0.1, space: Space | None = None):
        """The top-k starts as parameter dicts (see :func:`top_k`)."""
        idx = top_k(self.points, self.mean_loss, k, min_separation=min_separation, space=space)
        return [{n: float(self.points[i, d]) for d, n in enumerate(self.names)} for i in idx]


@functools.lru_cache(maxsize=32)
def _evaluator(names: tuple[str, ...], hook: PointHook | None, sharding):
    """The jitted (problem, points (B, D), keys (R, 2)) → (loss, r, bad, extras).

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
            ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(sim.bold)) & jnp.isfinite(r)
            return jnp.where(ok, loss, jnp.inf), jnp.where(ok, r, jnp.nan), ~ok

        loss, r, bad = jax.vmap(one)(keys)
        return loss, r, bad, {n: jnp.asarray(v) for n, v in extras.items()}

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
    n_points, n_seeds = len(points), len(seeds)
    sharding = _sharding()
    n_dev = 1 if sharding is None else len(jax.devices())
    per_batch = max(1, batch_size // n_seeds)
    per_batch = min(per_batch, max(n_points if n_total is None else int(n_total), 1))
    per_batch = -(-per_batch // n_dev) * n_dev
    fn = _evaluator(names, hook, sharding)
    dtype = problem.weights.dtype
    keys = jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])

    loss = np.empty((n_points, n_seeds))
    r = np.empty((n_points, n_seeds))
    bad = np.empty((n_points, n_seeds), dtype=bool)
    extras: dict[str, np.ndarray] = {}
    for start in range(0, n_points, per_batch):
        stop = min(start + per_batch, n_points)
        xb = np.empty((per_batch, len(names)))
        xb[: stop - start] = points[start:stop]
        xb[stop - start :] = points[start]  # padding, discarded
        lb, rb, bb, eb = fn(problem, jnp.asarray(xb, dtype), keys)
        loss[start:stop] = np.asarray(lb)[: stop - start]
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
    (the D-th root of the box's volume per point, in the unit box of the axes)."""
    b = _best(mean_loss)
    scattered = space.sampler in ("sobol", "lhs")
    if scattered:
        ubox = space.to_unit(box.T).T
        ubest = space.to_unit(points[b : b + 1])[0]
        tol = 0.5 * (float(np.prod(ubox[:, 1] - ubox[:, 0])) / len(points)) ** (
            1.0 / len(space.axes)
        )
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
    for r in range(1, int(rounds) + 1):
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
        extend=int(rounds),
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
    the best point is inside the box or only on faces where the domain ends.

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
