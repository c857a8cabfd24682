"""Free parameters: bounded transforms, scopes, validation."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnmfit.errors import ConfigError
from bnmfit.losses import Observed
from bnmfit.models import ReducedWongWang
from bnmfit.params import FreeParameter, ParameterSet
from bnmfit.problem import Observation, Problem
from bnmfit.simulate import SimSpec

N = 5


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    w = rng.random((N, N)) * (rng.random((N, N)) < 0.6)
    np.fill_diagonal(w, 0.0)
    w[0, 1], w[1, 0], w[2, 3], w[3, 2] = 0.5, 0.0, 0.0, 0.0  # one one-way edge, one absent pair
    return Problem(
        ReducedWongWang(),
        jnp.asarray(w),
        SimSpec(dt=10.0, tr=100.0, n_tr=5),
        Observation(tr=0.1),
        Observed(jnp.eye(N)),
        G=0.4,
        sigma=0.01,
    )


BOUNDED = [
    FreeParameter("G", 0.01, 3.0),
    FreeParameter("G", 0.01, 3.0, transform="log"),
    FreeParameter("sigma", 0.0, math.inf, transform="softplus"),
    FreeParameter("w", -2.0, 5.0, transform="identity"),
]


@pytest.mark.parametrize("p", BOUNDED, ids=lambda p: p.transform)
@settings(max_examples=60, deadline=None)
@given(frac=st.floats(0.0005, 0.9995))
def test_transforms_round_trip(p, frac):
    hi = p.lo + 10.0 if math.isinf(p.hi) else p.hi
    x = p.lo + frac * (hi - p.lo)
    if p.transform == "log":
        x = p.lo * (p.hi / p.lo) ** frac
    u = p.to_unconstrained(jnp.float64(x))
    assert np.isfinite(u)
    np.testing.assert_allclose(p.to_constrained(u), x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p", BOUNDED[:3], ids=lambda p: p.transform)
@settings(max_examples=60, deadline=None)
@given(u=st.floats(-30.0, 30.0))
def test_any_unconstrained_value_stays_in_the_domain(p, u):
    x = float(p.to_constrained(jnp.float64(u)))
    assert p.lo <= x <= p.hi
    if p.transform == "softplus":
        assert x > p.lo or u < -25  # strictly inside until softplus underflows


def test_bounds_are_finite_at_the_edges():
    p = FreeParameter("G", 0.0, 1.0)
    u = p.to_unconstrained(jnp.array([0.0, 1.0]))
    assert np.all(np.isfinite(u))
    np.testing.assert_allclose(p.to_constrained(u), [0.0, 1.0], atol=1e-9)


def test_gradient_flows_through_the_transform():
    p = FreeParameter("G", 0.5, 2.0)
    g = jax.grad(lambda u: p.to_constrained(u))(0.0)
    assert g == pytest.approx(1.5 * 0.25)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lo": 1.0, "hi": 1.0}, "need lo < hi"),
        ({"lo": 2.0, "hi": 1.0}, "'G': need lo < hi"),
        ({"lo": 0.0, "hi": math.inf}, "needs finite bounds"),
        ({"lo": 0.0, "hi": 1.0, "transform": "log"}, "needs lo > 0"),
        ({"lo": 0.0, "hi": 1.0, "transform": "tanh"}, "unknown transform 'tanh'"),
        ({"lo": 0.0, "hi": 1.0, "scope": "local"}, "unknown scope 'local'"),
        ({"lo": 0.0, "hi": 1.0, "scope": "edges"}, "scope 'edges' is for the SC"),
        ({"lo": 0.0, "hi": 1.0, "symmetric": True}, "symmetric applies"),
    ],
)
def test_invalid_parameters_name_the_problem(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FreeParameter("G", **kwargs)


def test_duplicate_and_unknown_names(problem):
    with pytest.raises(ConfigError, match="given more than once"):
        ParameterSet((FreeParameter("G", 0, 1), FreeParameter("G", 0, 2)))
    with pytest.raises(ConfigError, match="unknown free parameter 'nope'"):
        ParameterSet((FreeParameter("nope", 0, 1),)).init(problem, {})


def test_init_scopes_and_defaults(problem):
    ps = ParameterSet(
        (
            FreeParameter("G", 0.0, 1.0),
            FreeParameter("w", 0.0, 1.0, scope="regional"),
            FreeParameter("sigma", 0.0, 1.0, init=0.02),
        )
    )
    u = ps.init(problem, {"w": 0.3})
    assert u["G"].shape == () and u["w"].shape == (N,) and u["sigma"].shape == ()
    v = ps.constrain(u)
    assert float(v["G"]) == pytest.approx(0.4)  # the problem's value
    np.testing.assert_allclose(v["w"], 0.3)  # a scalar start broadcast per region
    assert float(v["sigma"]) == pytest.approx(0.02)  # the parameter's init
    # a start on a bound is moved inside, so the first gradient is not vanishing
    assert float(ps.constrain(ps.init(problem, {"G": 1.0}))["G"]) == pytest.approx(0.99)
    with pytest.raises(ConfigError, match="one value per region"):
        ps.init(problem, {"w": np.ones(N + 1)})


@pytest.mark.parametrize("symmetric", [False, True])
def test_edges_only_existing_and_non_negative(problem, symmetric):
    w0 = np.asarray(problem.weights)
    ps = ParameterSet(
        (
            FreeParameter(
                "weights", 0.0, math.inf, scope="edges", transform="softplus", symmetric=symmetric
            ),
        )
    ).bind(problem)
    u = ps.init(problem, {})
    n_pairs = np.count_nonzero(np.triu((w0 > 0) | (w0.T > 0), 1))
    assert u["weights"].shape == ((n_pairs,) if symmetric else (np.count_nonzero(w0),))
    # random unconstrained values: the weights keep the SC's zero pattern and stay ≥ 0
    u = {"weights": jax.random.normal(jax.random.PRNGKey(0), u["weights"].shape) * 3}
    w = np.asarray(ps.constrain(u)["weights"])
    assert w.shape == (N, N)
    assert np.all(w[w0 == 0] == 0) and np.all(w >= 0) and np.all(w[w0 > 0] > 0)
    both = (w0 > 0) & (w0.T > 0)
    if symmetric:
        np.testing.assert_array_equal(w[both], w.T[both])
    # the default start is the subject's SC (symmetric: mean of the directions that exist)
    expected = w0.copy()
    if symmetric:
        expected = np.where(both, (w0 + w0.T) / 2, np.where(w0 > 0, w0 + w0.T, 0.0))
    np.testing.assert_allclose(ps.constrain(ps.init(problem, {}))["weights"], expected, rtol=1e-6)


def test_edges_need_a_bound_set(problem):
    ps = ParameterSet((FreeParameter("weights", 0, 2, scope="edges"),))
    u = ps.init(problem, {})
    with pytest.raises(ConfigError, match="bind"):
        ps.constrain(u)
    assert ps.constrain(u, problem)["weights"].shape == (N, N)


# ------------------------------------------------------------------------- map and group


def regions_of(problem):
    from bnmfit.maps import RegionalMaps, homologue_groups

    labels = ("A_L", "A_R", "B_L", "B_R", "C")
    rng = np.random.default_rng(3)
    return RegionalMaps(
        labels,
        {"m1": rng.normal(size=N), "m2": rng.normal(size=N) * 5 + 2, "flat": np.ones(N)},
        {"network": ("vis", "vis", "dmn", "dmn", "dmn"), "homologues": homologue_groups(labels)},
    )


MAP_W = FreeParameter("w", 0.1, 0.9, scope="map", maps=("m1", "m2"))
GROUP_W = FreeParameter("w", 0.1, 0.9, scope="group", groups="homologues")


@pytest.mark.parametrize("transform", ["sigmoid", "log"])
def test_map_values_stay_in_the_domain_for_extreme_coefficients(problem, transform):
    p = dataclasses.replace(MAP_W, transform=transform)
    ps = ParameterSet((p,)).bind(problem, regions=regions_of(problem))
    for c in ([40.0, -60.0, 80.0], [-40.0, 60.0, -80.0], [0.0, 1e3, -1e3]):
        w = np.asarray(ps.constrain({"w": jnp.asarray(c)})["w"])
        assert w.shape == (N,) and np.all(np.isfinite(w))
        assert np.all((w >= 0.1) & (w <= 0.9))
    # a moderate pattern is inside (not on) the bounds and follows the maps
    w = np.asarray(ps.constrain({"w": jnp.asarray([0.0, 1.0, 0.0])})["w"])
    assert np.all((w > 0.1) & (w < 0.9))
    z = ps.designs["w"][:, 0]
    assert np.array_equal(np.argsort(w), np.argsort(z))


def test_group_values_are_equal_within_a_group_and_in_the_domain(problem):
    ps = ParameterSet((GROUP_W,)).bind(problem, regions=regions_of(problem))
    assert dict(ps.group_names)["w"] == ("A", "B", "C")  # pairs by name; C unpaired
    w = np.asarray(ps.constrain({"w": jnp.asarray([-50.0, 0.0, 50.0])})["w"])
    assert w[0] == w[1] and w[2] == w[3] and len({w[0], w[2], w[4]}) == 3
    assert np.all((w >= 0.1) & (w <= 0.9))
    by_network = dataclasses.replace(GROUP_W, groups="network")
    ps = ParameterSet((by_network,)).bind(problem, regions=regions_of(problem))
    w = np.asarray(ps.constrain({"w": jnp.asarray([0.3, -0.3])})["w"])
    np.testing.assert_array_equal(w[:2], w[0])
    np.testing.assert_array_equal(w[2:], w[2])


def test_map_and_group_starts_round_trip(problem):
    regions = regions_of(problem)
    ps = ParameterSet((MAP_W,)).bind(problem, regions=regions)
    # a scalar start: intercept T^-1(start), no slope
    u = ps.init(problem, {"w": 0.3})
    np.testing.assert_allclose(u["w"], [MAP_W.to_unconstrained(0.3), 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(ps.constrain(u)["w"], 0.3)
    # a regional start that is exactly a map pattern is reproduced
    truth = jnp.asarray([-0.4, 0.7, -0.5])
    pattern = np.asarray(ps.constrain({"w": truth})["w"])
    u = ps.init(problem, {"w": pattern})
    np.testing.assert_allclose(u["w"], truth, atol=1e-9)
    np.testing.assert_allclose(ps.constrain(u)["w"], pattern, rtol=1e-9)
    # a regional start becomes the group means of T^-1(x); equal within groups: reproduced
    pg = ParameterSet((GROUP_W,)).bind(problem, regions=regions)
    x = np.array([0.2, 0.2, 0.7, 0.7, 0.5])
    np.testing.assert_allclose(pg.constrain(pg.init(problem, {"w": x}))["w"], x, rtol=1e-9)
    x = np.array([0.2, 0.4, 0.7, 0.7, 0.5])
    mean = float(
        GROUP_W.to_constrained((GROUP_W.to_unconstrained(0.2) + GROUP_W.to_unconstrained(0.4)) / 2)
    )
    assert float(pg.constrain(pg.init(problem, {"w": x}))["w"][0]) == pytest.approx(mean)


def test_gradients_flow_to_map_coefficients_and_group_values():
    from bnmfit.maps import RegionalMaps
    from tests.test_explore import small_problem

    prob = small_problem()
    n = prob.n_regions
    labels = tuple(f"R{i}" for i in range(n))
    regions = RegionalMaps(
        labels,
        {"m": np.linspace(0.0, 1.0, n), "s": np.asarray(prob.weights).sum(axis=1)},
        {"half": tuple("a" if i < n // 2 else "b" for i in range(n))},
    )
    for p in (
        FreeParameter("w", 0.05, 1.0, scope="map", maps=("m", "s")),
        FreeParameter("w", 0.05, 1.0, scope="group", groups="half"),
    ):
        ps = ParameterSet((p, FreeParameter("G", 0.05, 1.0))).bind(prob, regions=regions)
        u = ps.init(prob, {"w": 0.4, "G": 0.3})
        g = jax.jit(jax.grad(lambda u, ps: prob.loss(ps.constrain(u), jax.random.PRNGKey(0))))(
            u, ps
        )
        assert g["w"].shape == (3 if p.scope == "map" else 2,)
        assert np.all(np.isfinite(g["w"])) and np.any(g["w"] != 0)


def test_free_numbers_of_map_and_group(problem):
    regions = regions_of(problem)
    ps = ParameterSet((MAP_W, FreeParameter("G", 0.0, 1.0))).bind(problem, regions=regions)
    u = ps.init(problem, {"w": 0.5, "G": 0.4})
    assert ps.free_labels() == ["w:intercept", "w:m1", "w:m2", "G"]
    values = ps.free_values(u)
    np.testing.assert_allclose(values["w"], [0.0, 0.0, 0.0], atol=1e-12)  # T^-1(0.5) = 0
    # at the centre the sigmoid's slope is (hi - lo) / 4: scale = (hi - lo) / slope = 4
    np.testing.assert_allclose(ps.free_scales(u), [4.0, 4.0, 4.0, 1.0])
    pg = ParameterSet((GROUP_W,)).bind(problem, regions=regions)
    assert pg.free_labels() == ["w[A]", "w[B]", "w[C]"]
    np.testing.assert_allclose(pg.free_scales(pg.init(problem, {"w": 0.5})), 0.8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scope": "map"}, "scope 'map' needs maps"),
        ({"scope": "map", "maps": ("a", "a")}, "map a named twice"),
        ({"scope": "regional", "maps": ("a",)}, "maps applies to scope 'map' only"),
        ({"scope": "group"}, "scope 'group' needs groups"),
        ({"scope": "global", "groups": "network"}, "groups applies to scope 'group' only"),
    ],
)
def test_map_and_group_settings_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        FreeParameter("w", 0.0, 1.0, **kwargs)


@pytest.mark.parametrize(
    ("p", "message"),
    [
        (
            FreeParameter("w", 0, 1, scope="map", maps=("m3",)),
            "free parameter 'w': unknown map 'm3': use one of flat, m1, m2",
        ),
        (
            FreeParameter("w", 0, 1, scope="map", maps=("flat",)),
            "map 'flat' has the same value for every region",
        ),
        (
            FreeParameter("w", 0, 1, scope="map", maps=("network",)),
            "map 'network' holds text",
        ),
        (
            FreeParameter("w", 0, 1, scope="group", groups="yeo7"),
            "unknown grouping 'yeo7'.*use one of flat, homologues, m1, m2, network",
        ),
        (
            FreeParameter("w", 0, 1, scope="group", groups="flat"),
            "puts every region in one group",
        ),
    ],
)
def test_unknown_or_unusable_maps_and_groupings(problem, p, message):
    with pytest.raises(ConfigError, match=message):
        ParameterSet((p,)).bind(problem, regions=regions_of(problem))


def test_map_parameters_need_regions(problem):
    from bnmfit.errors import DataError
    from bnmfit.maps import RegionalMaps

    ps = ParameterSet((MAP_W,))
    with pytest.raises(ConfigError, match="needs the subject's regional maps"):
        ps.bind(problem)
    with pytest.raises(ConfigError, match="not bound"):
        ps.constrain({"w": jnp.zeros(3)})
    nan = RegionalMaps(tuple("abcde"), {"m1": [1.0, np.nan, 2.0, 3.0, 4.0], "m2": np.arange(5)})
    with pytest.raises(ConfigError, match="no finite value for 1 region.*: b"):
        ps.bind(problem, regions=nan)
    with pytest.raises(DataError, match="3 regions but the connectome has 5"):
        ps.bind(problem, regions=RegionalMaps(("a", "b", "c")))
