"""Exploration: spaces and samplers, chunks, batched evaluation, top-k starts."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnmfit import explore, results
from bnmfit.errors import ConfigError, DataError
from bnmfit.explore import Axis, Space, chunk, evaluate, top_k
from bnmfit.losses import LossSpec, Observed
from bnmfit.models import ReducedWongWang
from bnmfit.problem import Observation, Problem
from bnmfit.simulate import SimSpec


@functools.cache
def small_problem(n: int = 6, n_tr: int = 30, truth: tuple = (("G", 0.3), ("w", 0.4))):
    """A small RWW subject whose empirical FC is simulated from ``truth`` (shared by the
    exploration and refinement tests, so compiled functions are reused)."""
    rng = np.random.default_rng(1)
    w = rng.random((n, n)) * (rng.random((n, n)) < 0.7)
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0.0)
    w /= w.max()
    spec = SimSpec(dt=10.0, tr=800.0, n_tr=n_tr, n_transient=5)
    base = Problem(
        ReducedWongWang(I_o=0.32),
        jnp.asarray(w),
        spec,
        Observation(tr=0.8),
        Observed(jnp.eye(n)),
        G=0.3,
        sigma=0.01,
    )
    empirical = base.observe(dict(truth), jax.random.PRNGKey(12345))
    return Problem(
        ReducedWongWang(I_o=0.32),
        jnp.asarray(w),
        spec,
        Observation(tr=0.8),
        empirical,
        G=0.3,
        sigma=0.01,
    )


# ------------------------------------------------------------------------- spaces


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lo": 1.0, "hi": 0.5}, "need finite lo < hi"),
        ({"lo": 0.0, "hi": 1.0, "n": 0}, "n must be a whole number ≥ 1"),
        ({"lo": 0.0, "hi": 1.0, "scale": "log"}, "a log scale needs lo > 0"),
        ({"lo": 0.1, "hi": 1.0, "scale": "sqrt"}, "unknown scale"),
    ],
)
def test_axis_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Axis("G", **kwargs)


def test_space_validation():
    g, w = Axis("G", 0, 1, 3), Axis("w", 0, 1, 4)
    with pytest.raises(ConfigError, match="same n"):
        Space((g, w), sampler="zip")
    with pytest.raises(ConfigError, match="n_samples ≥ 1"):
        Space((g, w), sampler="sobol")
    with pytest.raises(ConfigError, match="unknown sampler"):
        Space((g, w), sampler="random")
    with pytest.raises(ConfigError, match="more than once"):
        Space((g, g))


def test_grid_is_the_product_of_the_axes():
    space = Space((Axis("G", 0.0, 1.0, 3), Axis("w", 0.01, 1.0, 3, scale="log")))
    pts = space.points()
    assert pts.shape == (9, 2) and space.n_points == 9
    np.testing.assert_allclose(pts[:3, 0], 0.0)  # first axis slowest
    np.testing.assert_allclose(pts[:3, 1], [0.01, 0.1, 1.0])  # log axis: geometric
    np.testing.assert_allclose(np.unique(pts[:, 0]), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(space.to_unit(pts)[:3, 1], [0.0, 0.5, 1.0])


def test_zip_walks_the_axes_together():
    pts = Space((Axis("G", 0, 1, 5), Axis("sigma", 1e-3, 1e-1, 5, scale="log")), "zip").points()
    assert pts.shape == (5, 2)
    np.testing.assert_allclose(pts[:, 0], np.linspace(0, 1, 5))
    np.testing.assert_allclose(np.diff(np.log10(pts[:, 1])), 0.5)


def test_sobol_covers_the_box():
    """64 scrambled Sobol points in 2-D: one point in each of the 8 × 8 cells (a (0, m, 2)
    net), all inside the box, log axes in log space; deterministic per seed."""
    space = Space((Axis("G", 0.1, 3.0), Axis("w", 1e-3, 1.0, scale="log")), "sobol", 64, 7)
    pts = space.points()
    assert pts.shape == (64, 2)
    assert np.all((pts[:, 0] >= 0.1) & (pts[:, 0] <= 3.0))
    assert np.all((pts[:, 1] >= 1e-3) & (pts[:, 1] <= 1.0))
    cells = np.floor(space.to_unit(pts) * 8).astype(int)
    assert len({tuple(c) for c in cells}) == 64
    np.testing.assert_array_equal(pts, space.points())
    assert not np.array_equal(pts, Space(space.axes, "sobol", 64, 8).points())


def test_latin_hypercube_stratifies_every_axis():
    space = Space((Axis("G", 0, 1), Axis("w", 0, 1), Axis("sigma", 0.001, 0.1)), "lhs", 20, 3)
    unit = space.to_unit(space.points())
    for d in range(3):
        np.testing.assert_array_equal(np.sort(np.floor(unit[:, d] * 20)), np.arange(20))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 500), k=st.integers(1, 40))
def test_chunks_partition_the_space_exactly(n, k):
    parts = [chunk(n, i, k) for i in range(k)]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(n))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(np.all(np.diff(p) == 1) for p in parts)  # contiguous


def test_chunk_validation():
    with pytest.raises(ConfigError, match="chunk index 3 out of range"):
        chunk(10, 3, 3)
    with pytest.raises(ConfigError, match="≥ 1"):
        chunk(10, 0, 0)


# ------------------------------------------------------------------------- top-k


def test_top_k_takes_distinct_basins():
    """Two wells: the deep one at (0.2, 0.2), a shallower one at (0.8, 0.7). The best two
    starts are their bottoms, not two neighbours in the deep well."""
    space = Space((Axis("G", 0, 1, 21), Axis("w", 0, 1, 21)))
    p = space.points()
    loss = np.minimum(((p - [0.2, 0.2]) ** 2).sum(1), 0.05 + ((p - [0.8, 0.7]) ** 2).sum(1))
    idx = top_k(p, loss, 2, space=space)
    np.testing.assert_allclose(p[idx], [[0.2, 0.2], [0.8, 0.7]])
    # more starts than basins: filled with the best points at least min_separation apart
    idx = top_k(p, loss, 4, min_separation=0.15, space=space)
    assert len(idx) == 4 and list(idx[:1]) == [int(np.argmin(loss))]
    d = np.linalg.norm(p[idx][:, None] - p[idx][None], axis=-1)
    assert d[np.triu_indices(4, 1)].min() >= 0.15 - 1e-12


def test_top_k_never_takes_diverged_points():
    p = np.array([[0.0], [0.5], [1.0]])
    assert list(top_k(p, np.array([np.inf, 0.3, np.nan]), 3)) == [1]
    assert top_k(p, np.full(3, np.inf), 2).size == 0


# ------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_shapes_and_chunk_independence():
    problem = small_problem()
    space = Space((Axis("G", 0.1, 0.5, 3), Axis("w", 0.2, 0.6, 2)))
    pts = space.points()
    seen = []
    full = evaluate(
        problem,
        space.names,
        pts,
        [0, 1],
        batch_size=6,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert full.loss.shape == (6, 2) and full.mean_loss.shape == (6,)
    assert seen[-1] == (6, 6) and len(seen) == 2  # 3 points per batch
    assert np.all(np.isfinite(full.loss)) and not full.diverged.any()
    np.testing.assert_allclose(full.mean_loss, full.loss.mean(1))
    np.testing.assert_allclose(full.std_loss, full.loss.std(1))
    assert np.all((full.fc_r > -1) & (full.fc_r < 1))
    # the same points as chunks: identical results, whatever the batch they fell in
    parts = [
        evaluate(problem, space.names, pts[chunk(6, k, 2)], [0, 1], batch_size=6) for k in range(2)
    ]
    joined = np.concatenate([p.loss for p in parts])
    np.testing.assert_allclose(joined, full.loss, rtol=1e-12)
    # a seed is a noise realisation: two seeds differ
    assert not np.allclose(full.loss[:, 0], full.loss[:, 1])


@pytest.mark.slow
def test_a_diverging_point_is_flagged_and_not_fatal():
    """tau_s = 0 makes dS/dt = -S/0: that point's simulation turns NaN. It gets loss inf and
    the diverged flag; the other points of the same batch are unaffected."""
    problem = small_problem()
    pts = np.array([[0.3, 100.0], [0.3, 0.0], [0.5, 100.0]])
    res = evaluate(problem, ("G", "tau_s"), pts, [0], batch_size=8)
    assert list(res.diverged) == [False, True, False]
    assert np.isinf(res.loss[1, 0]) and np.isinf(res.mean_loss[1]) and np.isnan(res.fc_r[1])
    alone = evaluate(problem, ("G", "tau_s"), pts[[0, 2]], [0], batch_size=8)
    np.testing.assert_allclose(res.loss[[0, 2]], alone.loss, rtol=1e-12)
    assert list(top_k(pts, res.mean_loss, 3)) != [] and 1 not in top_k(pts, res.mean_loss, 3)


@pytest.mark.slow
def test_evaluate_validation():
    problem = small_problem()
    with pytest.raises(ConfigError, match="unknown free parameter"):
        evaluate(problem, ("nope",), np.zeros((1, 1)), [0])
    with pytest.raises(ConfigError, match=r"points must be \(P, 2\)"):
        evaluate(problem, ("G", "w"), np.zeros((3, 1)), [0])
    with pytest.raises(ConfigError, match="at least one noise seed"):
        evaluate(problem, ("G",), np.zeros((3, 1)), [])
    with pytest.raises(ConfigError, match="cannot be an exploration axis"):
        evaluate(problem, ("weights",), np.zeros((3, 1)), [0])
    with pytest.raises(ConfigError, match="NaN or inf"):
        evaluate(problem, ("G",), np.array([[math.nan]]), [0])


SHARDED = """
import os, json, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax
jax.config.update("jax_enable_x64", True)
from tests.test_explore import small_problem
from bnmfit.explore import evaluate, _sharding
import numpy as np
assert len(jax.devices()) == 2 and _sharding() is not None
pts = np.array([[0.1, 0.3], [0.2, 0.4], [0.3, 0.5]])
res = evaluate(small_problem(), ("G", "w"), pts, [0, 1], batch_size=6)
json.dump(res.loss.tolist(), sys.stdout)
"""


@pytest.mark.slow
def test_evaluation_is_sharded_over_devices_with_the_same_result(tmp_path):
    """With two (virtual CPU) devices the batch is split between them; the losses equal
    those of a single device."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-c", SHARDED],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
        timeout=300,
    )
    sharded = np.array(json.loads(out.stdout))
    assert explore._sharding() is None  # this process: one device
    pts = np.array([[0.1, 0.3], [0.2, 0.4], [0.3, 0.5]])
    single = evaluate(small_problem(), ("G", "w"), pts, [0, 1], batch_size=6)
    np.testing.assert_allclose(sharded, single.loss, rtol=1e-10)


# ------------------------------------------------------------------------- box extension

OFFSET_SPEC = LossSpec((("fc_corr", 1.0),), 0.5, "1 - correlation(fc, empirical_fc) + 0.5")


def _result(names, points, f, seeds=(0,)):
    """An ExploreResult whose loss on every seed is ``f(points)`` (a cheap objective)."""
    loss = np.repeat(f(points)[:, None], len(seeds), axis=1)
    return explore.ExploreResult(
        names=tuple(names),
        points=points,
        seeds=np.asarray(seeds),
        loss=loss,
        mean_loss=loss.mean(1),
        std_loss=loss.std(1),
        fc_r=1 - loss.mean(1),
        diverged=np.zeros(len(points), bool),
    )


def _gathered(space, result, tmp_path, starts=2):
    """The landscape the workflow gathers from one chunk holding ``result``."""
    path = tmp_path / "chunk-0.h5"
    n = len(result.points)
    results.ExploreChunk.of(
        result,
        subject="01",
        space=space,
        index=np.arange(n),
        chunk=0,
        n_chunks=1,
        spec=OFFSET_SPEC,
        provenance={"config_hash": "0123456789abcdef"},
    ).write(path)
    chunk_ = results.ExploreChunk.read(path)
    return results.Landscape.gather(
        [chunk_], [path], starts=starts, min_separation=0.1, config_hash="fedcba9876543210"
    )


def _extend_cheaply(space, f, tmp_path, domains, rounds=2):
    """The gathered landscape of ``f`` over ``space``, extended with ``f`` as the evaluator
    (what :func:`explore.extend_landscape` does with simulations)."""
    land = _gathered(space, _result(space.names, space.points(), f), tmp_path)
    seen = []

    def run(points, progress):
        progress(len(points), len(points))
        return _result(space.names, points, f)

    out = explore._extend(land, domains, rounds, run, lambda *a: seen.append(a))
    return land, out, seen


UNBOUNDED = {"G": (-math.inf, math.inf), "w": (-math.inf, math.inf)}


def test_no_extension_when_the_best_point_is_inside_the_box(tmp_path):
    for sampler, kw in (("grid", {}), ("sobol", {"n_samples": 64}), ("zip", {})):
        space = Space((Axis("G", 0.0, 1.0, 5), Axis("w", 0.0, 1.0, 5)), sampler=sampler, **kw)
        land, out, seen = _extend_cheaply(
            space, lambda p: ((p - 0.5) ** 2).sum(1), tmp_path, UNBOUNDED
        )
        np.testing.assert_array_equal(out.points, land.points)
        assert out.extensions == [] and out.edge == [] and seen == [], sampler
        assert out.extend == 2 and out.edge_warning() is None
        assert land.edge is None  # gathered: not checked yet


def test_a_minimum_outside_the_grid_draws_the_box_toward_it(tmp_path):
    """The minimum at w = 1.4 lies past the w = 1 face: round 1 adds w = 1.2 and 1.4 (n // 2
    = 2 values at the grid's spacing) with every G value; the best point moves to 1.4, on the
    new face, so round 2 adds 1.6 and 1.8, and the best point is inside the box."""
    space = Space((Axis("G", 0.1, 0.5, 5), Axis("w", 0.2, 1.0, 5)))
    f = lambda p: (p[:, 0] - 0.3) ** 2 + (p[:, 1] - 1.4) ** 2  # noqa: E731
    land, out, seen = _extend_cheaply(space, f, tmp_path, UNBOUNDED)
    new = out.points[out.extension_round == 1]
    np.testing.assert_allclose(sorted(set(new[:, 1])), [1.2, 1.4])
    np.testing.assert_array_equal(np.unique(new[:, 0]), np.unique(land.points[:, 0]))
    assert len(new) == 10 and (out.extension_round[: land.n_points] == 0).all()
    best = out.points[out.top[0]]
    np.testing.assert_allclose(best, [0.3, 1.4])
    assert land.points[land.top[0]][1] == 1.0  # the gathered best: on the face
    # round 2 found the best on the new face and went on (nothing bounds it here)
    assert [e["round"] for e in out.extensions] == [1, 2]
    faces = out.extensions[0]["faces"]
    assert faces == [
        {"axis": "w", "side": "hi", "from": 1.0, "to": faces[0]["to"], "domain": False}
    ]
    assert faces[0]["to"] == pytest.approx(1.4)
    assert out.edge == [] and out.edge_warning() is None
    assert seen[0][:2] == (1, faces) and seen[0][2:] == (10, 10)
    # the loss constant of the configured loss is added to the new points too
    np.testing.assert_allclose(out.mean_loss, f(out.points) + 0.5)


def test_a_corner_grows_along_both_axes_with_the_corner_filled(tmp_path):
    space = Space((Axis("G", 0.0, 1.0, 3), Axis("w", 0.0, 1.0, 3)))
    land, out, _ = _extend_cheaply(
        space, lambda p: -p.sum(1), tmp_path, {"G": (0, 1.5), "w": (0, 1.5)}, rounds=1
    )
    new = out.points[land.n_points :]
    assert len(new) == 16 - 9  # the 4 x 4 grid less the 3 x 3 explored
    assert [0.0, 1.5] in new.tolist() and [1.5, 1.5] in new.tolist()
    assert {f["axis"] for f in out.extensions[0]["faces"]} == {"G", "w"}
    # the corner is the domain's end on both axes: flagged, and the box cannot grow further
    assert out.edge == [
        {"axis": "G", "side": "hi", "at": 1.5, "domain": True},
        {"axis": "w", "side": "hi", "at": 1.5, "domain": True},
    ]


def test_the_extension_stops_at_the_domain_and_says_so(tmp_path):
    """The refinement stage frees w within [0.2, 1.1]: the box grows to 1.1, not past it,
    and the best point on that face is flagged as the domain's end."""
    from bnmfit.fit import Stage
    from bnmfit.params import FreeParameter

    stages = [
        Stage(
            "global",
            (FreeParameter("w", 0.2, 1.1), FreeParameter("sigma", 0.0, 1.0, transform="softplus")),
        ),
        Stage("regional", (FreeParameter("w", 0.0, 5.0, scope="regional"),)),
    ]
    domains = explore.extension_domains(stages, ("G", "w", "sigma", "I_o"))
    assert domains == {
        "G": (0.0, math.inf),  # no stage frees it: ≥ 0 by nature
        "w": (0.2, 1.1),  # the first stage that frees it
        "sigma": (0.0, math.inf),  # softplus: no upper bound
        "I_o": (-math.inf, math.inf),
    }
    space = Space((Axis("G", 0.1, 0.5, 5), Axis("w", 0.2, 1.0, 5)))
    land, out, _ = _extend_cheaply(
        space, lambda p: (p[:, 0] - 0.3) ** 2 - p[:, 1], tmp_path, domains, rounds=3
    )
    assert out.points[:, 1].max() == 1.1 and len(out.extensions) == 1
    assert out.extensions[0]["faces"][0]["to"] == 1.1
    assert out.extensions[0]["faces"][0]["domain"] is True
    assert out.edge == [{"axis": "w", "side": "hi", "at": 1.1, "domain": True}]
    assert out.edge_warning() == (
        "best explored point on the edge of the explored box after 1 extension(s): "
        "w hi (1.1, the domain’s end)"
    )
    # a box that already ends at the domain is not extended, only flagged
    _, flat, _ = _extend_cheaply(
        space, lambda p: p[:, 1] + (p[:, 0] - 0.3) ** 2, tmp_path, {"G": (0, 1), "w": (0.2, 1)}
    )
    assert flat.extensions == [] and flat.edge == [
        {"axis": "w", "side": "lo", "at": 0.2, "domain": True}
    ]


def test_a_log_axis_grows_in_log_steps(tmp_path):
    space = Space((Axis("G", 0.01, 0.1, 3, scale="log"), Axis("w", 0.2, 1.0, 3)))
    f = lambda p: np.log(p[:, 0]) ** 2 + (p[:, 1] - 0.6) ** 2  # noqa: E731  minimum at G = 1
    _, out, _ = _extend_cheaply(space, f, tmp_path, explore.extension_domains([], ("G", "w")), 5)
    g = np.unique(out.points[:, 0])
    np.testing.assert_allclose(g, np.logspace(-2, 0.5, 6))  # 10^-2 ... 10^0.5, ratio √10
    assert out.points[out.top[0]][0] == pytest.approx(1.0) and out.edge == []


def test_zip_and_sobol_spaces_grow_their_own_way(tmp_path):
    f = lambda p: (p[:, 0] - 1.3) ** 2 + (p[:, 1] - 1.3) ** 2  # noqa: E731
    zipped = Space((Axis("G", 0.1, 0.5, 5), Axis("w", 0.2, 1.0, 5)), sampler="zip")
    _, out, _ = _extend_cheaply(zipped, f, tmp_path, {"G": (0.0, 0.65), "w": (0.0, 9.0)})
    # the walk goes on together (G + 0.1, w + 0.2 per step) until G's domain ends at 0.65
    np.testing.assert_allclose(out.points[5:], [[0.6, 1.2], [0.65, 1.3]])
    assert out.edge == [
        {"axis": "G", "side": "hi", "at": 0.65, "domain": True},
        {"axis": "w", "side": "hi", "at": 1.3, "domain": False},
    ]
    sobol = Space((Axis("G", 0.0, 1.0), Axis("w", 0.0, 1.0)), sampler="sobol", n_samples=128)
    _, out, _ = _extend_cheaply(
        sobol, lambda p: -p[:, 1], tmp_path, {"G": (0, 1), "w": (0, 1.5)}, rounds=1
    )
    new = out.points[128:]
    # a strip w in (1, 1.5] sampled at the box's density: about 64 points
    assert (new[:, 1] > 1.0).all() and (new[:, 1] <= 1.5).all() and 48 <= len(new) <= 80
    assert out.edge[0]["axis"] == "w" and out.edge[0]["domain"] is True


@pytest.mark.slow
def test_the_box_extension_simulates_like_the_exploration(tmp_path):
    """A real problem whose loss falls with G past the box's G = 0.4 face: two rounds add
    G = 0.425 and 0.45 (one value per round: n = 3), the best point moves there, its loss is
    the batched evaluator's on the same seeds (loss constant added), and the box is still
    flagged (the rounds ran out, not the domain). The file reads back, and a repeat writes
    the same bytes."""
    problem = small_problem()
    space = Space((Axis("G", 0.35, 0.4, 3), Axis("w", 0.3, 0.5, 1)))  # w: 0.4, not explored
    seeds = [0]
    res = evaluate(problem, space.names, space.points(), seeds, batch_size=3)
    land = _gathered(space, res, tmp_path, starts=1)
    domains = explore.extension_domains([], space.names)
    steps = []
    out = explore.extend_landscape(
        problem, land, domains, rounds=2, batch_size=3, progress=lambda *a: steps.append(a)
    )
    np.testing.assert_allclose(out.points[3:], [[0.425, 0.4], [0.45, 0.4]])
    assert list(out.extension_round) == [0, 0, 0, 1, 2] and [s[0] for s in steps] == [1, 2]
    alone = evaluate(problem, space.names, out.points[3:], seeds, batch_size=3, n_total=3)
    np.testing.assert_array_equal(out.mean_loss[3:], alone.mean_loss + 0.5)
    assert out.mean_loss[4] < out.mean_loss[3] < out.mean_loss[:3].min()
    assert list(out.top) == [4]
    assert out.start_points() == [{"G": out.points[4, 0], "w": 0.4}]
    assert out.edge == [{"axis": "G", "side": "hi", "at": out.points[4, 0], "domain": False}]
    out.write(tmp_path / "a.h5")
    back = results.Landscape.read(tmp_path / "a.h5")
    np.testing.assert_array_equal(back.points, out.points)
    assert (back.extensions, back.edge, back.extend) == (out.extensions, out.edge, 2)
    np.testing.assert_array_equal(back.extension_round, out.extension_round)
    again = explore.extend_landscape(problem, land, domains, rounds=2, batch_size=3)
    again.write(tmp_path / "b.h5")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


# ------------------------------------------------------------------------- evolution (cmaes, nsga2)


def _analytic(names, points, f, terms=None, seeds=(0,)):
    """An ExploreResult of a cheap objective, diverged (loss inf) where ``f`` is not finite;
    ``terms``: name → function of the points (NSGA-II's objectives)."""
    with np.errstate(invalid="ignore"):  # the spread of inf
        res = _result(names, points, f, seeds)
    bad = ~np.isfinite(res.mean_loss)
    res.diverged, res.fc_r = bad, np.where(bad, np.nan, res.fc_r)
    res.terms = {
        k: np.repeat(np.where(bad, np.inf, g(points))[:, None], len(seeds), 1)
        for k, g in (terms or {}).items()
    }
    return res


def _search(space, f, *, checkpoint=None, terms=None, fail_at=None, n_seeds=1, seen=None):
    """:func:`explore._evolve` with ``f`` as the evaluator (what :func:`explore.evolve`
    does with simulations); ``fail_at``: the run is killed while evaluating that generation."""
    calls = []

    def run(points):
        calls.append(len(points))
        if len(calls) - 1 == fail_at:
            raise KeyboardInterrupt  # a killed job
        return _analytic(space.names, points, f, terms, seeds=tuple(range(n_seeds)))

    ckpt = explore._Checkpoint(checkpoint, "fingerprint")
    progress = None if seen is None else lambda *a: seen.append(a)
    return explore._evolve(space, n_seeds, run, ckpt, progress)


def _bowl(p):
    """Minimum 0 at G = 0.7, w = 0.3 (a log axis), I_o = 0.33."""
    return (p[:, 0] - 0.7) ** 2 + np.log10(p[:, 1] / 0.3) ** 2 + 4 * (p[:, 2] - 0.33) ** 2


BOX3 = (Axis("G", 0.0, 2.0), Axis("w", 0.01, 10.0, scale="log"), Axis("I_o", 0.2, 0.5))


def test_strategy_settings_are_checked():
    with pytest.raises(ConfigError, match=r"evolution.population must be a whole number ≥ 2"):
        explore.Strategy(population=1)
    with pytest.raises(ConfigError, match=r"evolution.generations must be a whole number ≥ 1"):
        explore.Strategy(generations=0)
    with pytest.raises(ConfigError, match=r"evolution.sigma must be a finite number > 0"):
        explore.Strategy(sigma=0.0)
    with pytest.raises(ConfigError, match=r"evolution.tolerance must be a finite number ≥ 0"):
        explore.Strategy(tolerance=-1.0)
    with pytest.raises(ConfigError, match="at least two distinct loss terms"):
        explore.Strategy(objectives=("fc_corr",))
    with pytest.raises(ConfigError, match="unknown loss"):
        explore.Strategy(objectives=("fc_corr", "nope"))
    space = Space(BOX3, "cmaes")
    assert space.evolutionary and space.strategy == explore.Strategy()
    assert space.strategy.size("cmaes", 3) == 7 and space.strategy.size("nsga2", 3) == 100
    with pytest.raises(ConfigError, match="chooses its points as it goes"):
        space.points()
    with pytest.raises(ConfigError, match="a fixed list of points"):
        _search(Space(BOX3, "sobol", 8), _bowl)
    small = Space(BOX3, "cmaes", strategy=explore.Strategy(population=8, budget=15))
    with pytest.raises(ConfigError, match=r"budget = 15 simulations is less than one generation"):
        _search(small, _bowl, n_seeds=2)


def test_the_recipe_builds_the_strategy_from_the_config():
    from bnmfit import config as bconfig
    from bnmfit import recipe

    cfg = bconfig.load_yaml("config/config.yaml")
    cfg["exploration"].update(sampler="cmaes", evolution={"population": 12, "budget": 600})
    space = recipe.build_space(bconfig.validate_config(cfg, where="test"))
    assert space.sampler == "cmaes" and space.seed == cfg["noise"].get("seed", 0)
    assert space.strategy == explore.Strategy(population=12, budget=600)
    cfg["exploration"].update(sampler="nsga2", evolution={"objectives": ["fc_corr", "fcd_ks"]})
    cfg["observation"]["fcd_window"] = 0
    cfg["loss"] = {"terms": {"fc_corr": 1.0}}
    with pytest.raises(ConfigError, match="objectives has fcd_ks but observation.fcd_window"):
        bconfig.validate_config(cfg, where="test")


def test_cmaes_finds_a_known_optimum_inside_the_box():
    """A bowl over three axes (one log): CMA-ES (evosax) finds its minimum and stops on the
    tolerance; every candidate lies in the box; the record says what each generation did."""
    space = Space(BOX3, "cmaes", seed=3, strategy=explore.Strategy(tolerance=1e-10))
    seen = []
    res = _search(space, _bowl, seen=seen)
    gen = res.generations
    best = res.points[np.argmin(res.mean_loss)]
    np.testing.assert_allclose(best, [0.7, 0.3, 0.33], rtol=1e-4)
    assert gen.stop == "tolerance" and gen.population == 7 and len(gen.best_loss) < 100
    lo, hi = np.array([a.lo for a in BOX3]), np.array([a.hi for a in BOX3])
    assert np.all((res.points >= lo) & (res.points <= hi))
    n_gen = len(gen.best_loss)
    np.testing.assert_array_equal(gen.generation, np.repeat(np.arange(n_gen), 7))
    per_gen = res.mean_loss.reshape(n_gen, 7)
    np.testing.assert_array_equal(gen.best_loss, per_gen.min(1))
    np.testing.assert_allclose(gen.mean_loss, per_gen.mean(1))
    assert gen.sigma[0] == 1.0 and gen.sigma[-1] < 1e-3  # the step size contracted
    assert gen.objectives.shape == (len(res.points), 0) and gen.front.size == 0
    assert [s[:2] for s in seen] == [(g + 1, 100) for g in range(n_gen)]
    assert seen[-1][2] == res.mean_loss.min()


def test_cmaes_stays_in_the_box_when_the_optimum_is_outside(tmp_path):
    """The bowl's minimum lies past G = 2 (the box's hi): the candidates approach that face
    and never cross it; the gathered landscape flags its best point on the face."""
    space = Space(BOX3, "cmaes", seed=1, strategy=explore.Strategy(population=10, generations=60))
    f = lambda p: _bowl(p) + (p[:, 0] - 3.0) ** 2 - (p[:, 0] - 0.7) ** 2  # noqa: E731
    res = _search(space, f)
    assert res.points[:, 0].max() <= 2.0 and res.generations.stop == "tolerance"
    assert res.points[np.argmin(res.mean_loss), 0] > 2.0 - 0.01 * 2.0
    land = _gathered(space, res, tmp_path)
    domains = {"G": (0.0, math.inf), "w": (0.0, math.inf), "I_o": (-math.inf, math.inf)}
    out = explore._extend(land, domains, 2, None, None)  # never extended: no evaluator
    assert out.extend == 0 and out.extensions == [] and len(out.points) == len(res.points)
    assert out.edge == [{"axis": "G", "side": "hi", "at": 2.0, "domain": False}]


def test_diverged_candidates_are_recorded_and_do_not_stop_the_run():
    """Where G > 1 the "simulation" diverges (loss inf): those candidates are recorded as
    diverged, ranked last, and the search still finds the minimum next to that region."""
    space = Space(BOX3, "cmaes", seed=0, strategy=explore.Strategy(population=12))
    f = lambda p: np.where(p[:, 0] > 1.0, np.inf, _bowl(p))  # noqa: E731
    res = _search(space, f)
    assert res.diverged.any() and np.all(res.diverged == (res.points[:, 0] > 1.0))
    assert np.all(np.isinf(res.mean_loss[res.diverged]))
    np.testing.assert_allclose(res.points[np.argmin(res.mean_loss)], [0.7, 0.3, 0.33], rtol=1e-3)
    # a generation where every candidate diverged still counts and is recorded
    every = _search(
        Space(BOX3, "cmaes", strategy=explore.Strategy(generations=3)), lambda p: p[:, 0] * np.inf
    )
    assert every.diverged.all() and np.isinf(every.generations.best_loss).all()
    assert np.isnan(every.generations.mean_loss).all() and every.generations.stop == "generations"


def test_the_budget_of_simulations_stops_the_search():
    space = Space(BOX3, "cmaes", strategy=explore.Strategy(population=8, budget=40))
    res = _search(space, _bowl, n_seeds=2)  # 16 simulations per generation: 2 fit in 40
    assert res.generations.stop == "budget" and len(res.points) == 16


def _zdt1(p):
    """ZDT1 in two variables: f1 = x, f2 = g (1 - sqrt(x / g)), g = 1 + 9 y; its Pareto
    front is y = 0, f2 = 1 - sqrt(f1)."""
    g = 1 + 9 * p[:, 1]
    return p[:, 0], g * (1 - np.sqrt(p[:, 0] / g))


# fcd_ks undefined (a window of constant BOLD) where x > 0.97, the loss still finite there
ZDT1 = {
    "fc_corr": lambda p: _zdt1(p)[0],
    "fcd_ks": lambda p: np.where(p[:, 0] > 0.97, np.inf, _zdt1(p)[1]),
}


def test_nsga2_returns_a_non_dominated_front_of_a_known_problem():
    """ZDT1 through NSGA-II (pymoo): the front it returns is non-dominated among every
    evaluated point, sorted by the first objective, close to the true front and spread along
    it; candidates that diverge (y > 0.9) or whose objective is undefined (x > 0.97) are
    recorded and never on the front."""
    space = Space(
        (Axis("G", 0.0, 1.0), Axis("w", 0.0, 1.0)),
        "nsga2",
        seed=5,
        strategy=explore.Strategy(population=40, generations=60),
    )
    f = lambda p: np.where(p[:, 1] > 0.9, np.inf, sum(_zdt1(p)))  # noqa: E731
    res = _search(space, f, terms=ZDT1)
    gen = res.generations
    assert gen.objective_names == ("fc_corr", "fcd_ks") and gen.stop == "generations"
    assert len(res.points) == 60 * 40 and res.diverged.any()
    obj, front = gen.objectives, gen.front
    np.testing.assert_array_equal(obj[:, 0], res.terms["fc_corr"][:, 0])
    assert not res.diverged[front].any() and np.all(np.diff(obj[front, 0]) >= 0)
    undefined = ~res.diverged & np.isinf(obj[:, 1])
    assert undefined.any() and np.isfinite(res.mean_loss[undefined]).all()
    assert not np.isin(front, np.flatnonzero(undefined)).any()
    for i in front:  # no evaluated point dominates a front point
        dominated = np.all(obj <= obj[i], axis=1) & np.any(obj < obj[i], axis=1)
        assert not dominated.any()
    for j in np.setdiff1d(np.flatnonzero(np.isfinite(obj).all(1)), front):  # the rest are
        assert (np.all(obj <= obj[j], 1) & np.any(obj < obj[j], 1)).any()  # dominated
    gap = obj[front, 1] - (1 - np.sqrt(obj[front, 0]))
    assert np.median(gap) < 0.01 and np.ptp(obj[front, 0]) > 0.9


@pytest.mark.parametrize("sampler", ["cmaes", "nsga2"])
def test_a_killed_search_resumes_to_the_same_result(tmp_path, sampler):
    """Killed while evaluating generation 4, the search resumes from the checkpoint of
    generation 3 and ends bitwise as the uninterrupted one; a finished search reruns nothing;
    a checkpoint of another search is refused."""
    space = Space(BOX3, sampler, seed=2, strategy=explore.Strategy(population=8, generations=7))
    terms = {"fc_corr": lambda p: p[:, 0], "fcd_ks": _bowl} if sampler == "nsga2" else None
    whole = _search(space, _bowl, terms=terms)
    with pytest.raises(KeyboardInterrupt):
        _search(space, _bowl, terms=terms, checkpoint=tmp_path, fail_at=4)
    saved = explore._Checkpoint(tmp_path, "fingerprint").load()
    assert len(saved["parts"]) == 4 and saved["stop"] is None
    resumed = _search(space, _bowl, terms=terms, checkpoint=tmp_path)
    again = _search(space, _bowl, terms=terms, checkpoint=tmp_path, fail_at=0)  # nothing run
    for res in (resumed, again):
        for k in ("points", "loss", "mean_loss", "diverged"):
            np.testing.assert_array_equal(getattr(res, k), getattr(whole, k))
        for f in dataclasses.fields(whole.generations):
            a, b = getattr(res.generations, f.name), getattr(whole.generations, f.name)
            np.testing.assert_array_equal(a, b)
    other = Space(BOX3, sampler, seed=3, strategy=space.strategy)
    with pytest.raises(ConfigError, match="belongs to another exploration"):
        explore._evolve(other, 1, None, explore._Checkpoint(tmp_path, "other"))
    # the same seed gives the same search; another seed another one
    assert not np.array_equal(_search(other, _bowl, terms=terms).points, whole.points)


def test_an_evolution_is_written_gathered_and_read_back(tmp_path):
    """The chunk of a CMA-ES search keeps its generations (loss constant added to the
    per-generation losses); the landscape gathers it with the starts in distinct basins and
    reads back the same; several chunks of one search are refused."""
    strategy = explore.Strategy(population=10, generations=4, objectives=("fc_corr", "fc_rmse"))
    space = Space(BOX3, "nsga2", seed=1, strategy=strategy)
    res = _search(space, _bowl, terms={"fc_corr": _bowl, "fc_rmse": lambda p: p[:, 0]})
    land = _gathered(space, res, tmp_path, starts=3)
    gen = land.evolution
    np.testing.assert_array_equal(gen.best_loss, res.generations.best_loss + 0.5)
    np.testing.assert_array_equal(gen.front, res.generations.front)
    assert land.n_points == 40 and land.sampler == "nsga2" and len(land.top) == 3
    assert land.mean_loss[land.top[0]] == land.mean_loss.min()
    land.write(tmp_path / "land.h5")
    back = results.Landscape.read(tmp_path / "land.h5")
    for f in dataclasses.fields(gen):
        np.testing.assert_array_equal(getattr(back.evolution, f.name), getattr(gen, f.name))
    assert back.space().evolutionary and back.evolution.objective_names == ("fc_corr", "fc_rmse")
    chunk_ = results.ExploreChunk.read(tmp_path / "chunk-0.h5")
    with pytest.raises(DataError, match="a nsga2 search is one chunk file, got 2"):
        results.Landscape.gather(
            [chunk_, chunk_], ["a.h5", "b.h5"], starts=1, min_separation=0.1, config_hash="x"
        )
    sobol = Space(BOX3[:2], "sobol", 8)
    fixed = _gathered(sobol, _result(sobol.names, sobol.points(), lambda p: p[:, 0]), tmp_path)
    assert fixed.evolution is None and not fixed.space().evolutionary


@pytest.mark.slow
def test_evolution_simulates_like_the_exploration(tmp_path):
    """CMA-ES and NSGA-II over G and w of a small real problem: every generation is one
    batch of the batched evaluator (a point's losses equal :func:`evaluate`'s on the same
    seeds and batch shape), NSGA-II's objectives are the loss terms asked of it, a finished
    checkpoint returns the same result without simulating, and the checkpoint of another
    problem is refused."""
    problem = small_problem()
    axes = (Axis("G", 0.1, 0.6), Axis("w", 0.2, 0.6))
    space = Space(axes, "cmaes", strategy=explore.Strategy(population=4, generations=2))
    ckpt = tmp_path / "ckpt"
    res = explore.evolve(problem, space, [0], batch_size=4, checkpoint_dir=ckpt)
    assert len(res.points) == 8 and list(res.generations.generation) == [0] * 4 + [1] * 4
    alone = evaluate(problem, space.names, res.points[4:], [0], batch_size=4, n_total=4)
    np.testing.assert_array_equal(res.loss[4:], alone.loss)
    again = explore.evolve(problem, space, [0], batch_size=4, checkpoint_dir=ckpt)
    np.testing.assert_array_equal(again.loss, res.loss)
    with pytest.raises(ConfigError, match="belongs to another exploration"):
        explore.evolve(
            dataclasses.replace(problem, G=0.31), space, [0], batch_size=4, checkpoint_dir=ckpt
        )
    two = explore.Strategy(population=4, generations=2, objectives=("fc_corr", "fc_rmse"))
    res = explore.evolve(problem, Space(axes, "nsga2", strategy=two), [0, 1], batch_size=8)
    assert set(res.terms) == {"fc_corr", "fc_rmse"} and res.terms["fc_rmse"].shape == (8, 2)
    np.testing.assert_allclose(res.terms["fc_corr"], res.loss, rtol=1e-12)  # loss: fc_corr
    np.testing.assert_allclose(res.generations.objectives[:, 1], res.terms["fc_rmse"].mean(1))
    assert res.generations.front.size >= 1
    with pytest.raises(ConfigError, match="fcd_ks needs an FCD"):
        explore.evolve(problem, Space(axes, "nsga2"), [0])
