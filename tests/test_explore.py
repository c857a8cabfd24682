"""Exploration: spaces and samplers, chunks, batched evaluation, top-k starts."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnmfit import explore
from bnmfit.errors import ConfigError
from bnmfit.explore import Axis, Space, chunk, evaluate, top_k
from bnmfit.losses import Observed
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
