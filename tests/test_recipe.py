"""bnmfit.recipe: the library objects built from a validated configuration (problem,
exploration space, refinement stages)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bnmfit import recipe
from bnmfit.config import load_config, validate_config
from bnmfit.errors import ConfigError, DataError
from bnmfit.losses import loss_spec

DATA = Path(__file__).resolve().parent / "data"


def _synthetic(n=5, t=100, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.random((n, n))
    w = (w + w.T) / 2
    np.fill_diagonal(w, 0)
    lengths = 10 + 90 * rng.random((n, n))
    lengths = (lengths + lengths.T) / 2
    return w / w.max(), lengths, np.corrcoef(rng.standard_normal((t, n)).T)


def test_build_problem_defaults_to_the_subjects_length_and_tr():
    w, ln, fc = _synthetic()
    cfg = validate_config(
        {"simulation": {"dt": 10.0, "transient": 1440.0}, "observation": {"fcd_window": 0}}
    )
    p = recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=0.72, n_tr=90)
    assert p.spec.tr == pytest.approx(720.0) and p.spec.dt == 10.0
    assert p.spec.n_tr == 90 and p.spec.n_transient == 2
    assert p.observation.tr == pytest.approx(0.72) and p.observation.discard == 0
    assert p.spec.max_delay == 0 and p.delays is None
    assert p.spec.heun_coupling == "per_stage" and p.spec.unroll == 1
    assert p.spec.bold_dt is None and p.spec.bold_every == 1
    assert p.loss_weights == (("fc_corr", 1.0),)
    assert p.weights.dtype == np.float32
    assert p.G == cfg["coupling"]["G"] and p.sigma == cfg["noise"]["sigma"]
    assert float(p.model.w) == pytest.approx(0.6)  # the model's default


def test_build_problem_duration_tr_delays_and_model_parameters():
    w, ln, fc = _synthetic()
    cfg = validate_config(
        {
            "model": {"parameters": {"w": [0.1, 0.2, 0.3, 0.4, 0.5], "I_o": 0.3}},
            "coupling": {"speed": 5.0, "G": 0.7},
            "simulation": {
                "dt": 4.0,
                "duration": 36000.0,
                "heun_coupling": "per_step",
                "bold_dt": 8.0,
            },
            "observation": {"tr": 2.0, "fcd_window": 0},
            "loss": {"expression": "rmse(fc, empirical_fc) + 1 - correlation(fc, empirical_fc)"},
        }
    )
    p = recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=0.72, n_tr=1000)
    assert p.spec.tr == 2000.0 and p.spec.n_tr == 18  # 36 s at TR 2 s
    assert p.spec.heun_coupling == "per_step" and p.spec.bold_every == 2
    assert p.spec.max_delay == int(np.rint(ln.max() / 5.0 / 4.0)) and p.delays is not None
    np.testing.assert_allclose(np.asarray(p.model.w), [0.1, 0.2, 0.3, 0.4, 0.5])
    assert dict(p.loss_weights) == {"fc_corr": 1.0, "fc_rmse": 1.0} and p.G == 0.7
    cfg["simulation"]["duration"] = None  # same duration as the data at the other TR
    p = recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=0.72, n_tr=1000)
    assert p.spec.n_tr == 360


@pytest.mark.parametrize(
    ("overrides", "kw", "error", "pattern"),
    [
        (
            {"model": {"parameters": {"w": [0.1, 0.2]}}},
            {},
            ConfigError,
            r"model.parameters.w has 2 values but the connectome has 5 regions",
        ),
        (
            {"observation": {"fcd_window": 50}},
            {"n_tr": 52},
            ConfigError,
            r"too few for two FCD windows of 50 TRs",
        ),
        (
            {"simulation": {"dt": 7.0}},
            {},
            ConfigError,
            r"simulation.dt = 7 ms does not divide the TR \(720 ms\)",
        ),
        (
            {"observation": {"fcd_window": 0}},
            {"n_tr": None},
            ConfigError,
            r"set simulation.duration",
        ),
        (
            {"loss": {"terms": {"fcd_ks": 1.0}}},
            {"fcd": None},
            DataError,
            r"the loss uses fcd_ks but the subject has no empirical FCD",
        ),
    ],
)
def test_build_problem_errors(overrides, kw, error, pattern):
    w, ln, fc = _synthetic()
    cfg = validate_config({"simulation": {"dt": 10.0}, **overrides})
    args = dict(weights=w, lengths=ln, fc=fc, fcd=np.eye(10), tr=0.72, n_tr=100)
    args.update(kw)
    with pytest.raises(error, match=pattern):
        recipe.build_problem(cfg, **args)


def test_build_space_and_stages():
    cfg = validate_config(
        {
            "noise": {"seed": 7},
            "exploration": {
                "seeds": 3,
                "parameters": [
                    {"name": "G", "lo": 0.1, "hi": 1.0, "n": 3},
                    {"name": "w", "domain": {"lo": 0.2, "hi": 0.8}, "n": 2, "scale": "log"},
                ],
            },
            "refinement": {
                "stages": [
                    {
                        "name": "g",
                        "free_parameters": [{"name": "G", "domain": {"lo": 0, "hi": 2}}],
                        "n_epochs": 7,
                        "optimizer": "sgd",
                        "schedule": "cosine",
                    },
                    {
                        "name": "r",
                        "free_parameters": [
                            {
                                "name": "w",
                                "scope": "regional",
                                "transform": "softplus",
                                "domain": {"lo": 0, "hi": 1},
                            }
                        ],
                        "l2_regional": 0.1,
                        "n_noise": 4,
                        "noise_average": "fc",
                    },
                ]
            },
        }
    )
    space = recipe.build_space(cfg)
    assert space.names == ("G", "w") and space.points().shape == (6, 2)
    assert space.axes[1].scale == "log" and space.axes[1].lo == 0.2
    assert recipe.noise_seeds(cfg) == [7, 8, 9]
    stages = recipe.build_stages(cfg)
    assert [s.name for s in stages] == ["g", "r"]
    assert stages[0].steps == 7 and stages[0].optimizer == "sgd"
    assert stages[0].schedule == "cosine" and stages[1].steps == 100
    fp = stages[1].free[0]
    assert (fp.name, fp.scope, fp.transform, fp.lo, fp.hi) == (
        "w",
        "regional",
        "softplus",
        0.0,
        1.0,
    )
    assert stages[1].l2_regional == 0.1
    assert (stages[0].noise_average, stages[1].noise_average) == ("loss", "fc")
    assert stages[1].n_noise == 4


def test_a_map_stage_screens_its_starts_when_configured():
    w_map = {"name": "w", "scope": "map", "maps": ["strength"], "domain": {"lo": 0.001, "hi": 1}}
    screened = {"name": "m", "free_parameters": [w_map], "map_screen": 0.5, "map_screen_keep": 2}
    cfg = validate_config({"refinement": {"stages": [screened, {**screened, "name": "n"}]}})
    stage = recipe.build_stages(cfg)[0]
    assert (stage.map_screen, stage.map_screen_keep) == (0.5, 2)
    defaults = recipe.build_stages(validate_config({}))
    assert {(s.map_screen, s.map_screen_keep) for s in defaults} == {(None, 1)}
    plain = {"name": "m", "free_parameters": [w_map], "map_screen_keep": 2}
    with pytest.raises(ConfigError, match="stage 'm': map_screen_keep must be"):
        recipe.build_stages(validate_config({"refinement": {"stages": [plain]}}))
    with pytest.raises(ConfigError, match="map_screen"):
        validate_config({"refinement": {"stages": [{**screened, "map_screen": -1}]}})


def test_the_tvboptim_rww_tutorial_is_expressible():
    cfg = load_config(DATA / "tvboptim_rww.yaml")
    space = recipe.build_space(cfg)
    assert space.names == ("w", "G") and len(space.points()) == 32 * 32
    assert space.points().min() == pytest.approx(0.001) and space.points().max() == 0.7
    g, r = recipe.build_stages(cfg)
    assert {p.name for p in g.free} == {"G", "w"} and g.learning_rate == 0.01
    assert g.steps == 300 and g.optimizer == "adam"
    assert [(p.name, p.scope) for p in r.free] == [("w", "regional"), ("I_o", "regional")]
    assert r.learning_rate == 0.004 and r.steps == 200
    assert "G" not in {p.name for p in r.free}  # G stays at the global fit
    assert loss_spec(cfg).terms == (("fc_rmse", 1.0),)
    w, ln, fc = _synthetic(n=4)
    p = recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=0.72, n_tr=1000)
    assert p.spec.dt == 4.0 and p.spec.tr == 1000.0 and p.spec.n_tr == 120
    assert p.spec.integrator == "heun"


def test_tvbo_style_free_parameters_n_epochs_and_loss_expression():
    cfg = load_config(DATA / "tvbo_style.yaml")
    (st,) = recipe.build_stages(cfg)
    assert st.steps == 50 and st.learning_rate == 0.01
    assert [(p.name, p.lo, p.hi, p.transform) for p in st.free] == [
        ("G", 0.1, 1.0, "sigmoid"),
        ("sigma", 0.001, 0.01, "log"),
    ]
    assert dict(loss_spec(cfg).terms) == {"fcd_ks": 0.5, "fc_rmse": 1.0}
    space = recipe.build_space(cfg)
    assert space.sampler == "sobol" and space.points().shape == (16, 2)


# =========================================================================== any TR


@pytest.mark.parametrize(
    ("tr_ms", "cap", "dt"),
    [
        (720.0, 10.0, 10.0),  # 72 steps per TR
        (720.0, 7.2, 7.2),  # the recipe's cap: the bundled cohort's step
        (1000.0, 10.0, 10.0),
        (2000.0, 10.0, 10.0),
        (800.0, 10.0, 10.0),
        (2000.0, 7.2, 6.25),  # 320 steps per TR
        (735.0, 10.0, 9.8),
        (720.0, 0.5, 0.5),  # Hopf
        (2000.0, 1.0, 1.0),  # Wong-Wang E-I, Wilson-Cowan
    ],
)
def test_choose_dt_is_the_largest_step_under_the_cap_that_divides_the_tr(tr_ms, cap, dt):
    got = recipe.choose_dt(tr_ms, cap)
    assert got == dt
    assert (tr_ms / got) == round(tr_ms / got)


def test_choose_dt_without_a_divisor_names_simulation_dt():
    with pytest.raises(
        ConfigError,
        match=r"divides the TR \(1000\.003 ms\) exactly; set "
        r"simulation.dt",
    ):
        recipe.choose_dt(1000.003, 10.0)  # 1000003 µs is prime
    with pytest.raises(ConfigError, match="set simulation.dt"):
        recipe.choose_dt(720.0004, 10.0)  # not a whole number of µs


@pytest.mark.parametrize(
    ("model", "params", "tr", "dt"),
    [
        ("reduced_wong_wang", {}, 0.72, 10.0),
        ("reduced_wong_wang", {}, 1.0, 10.0),
        ("reduced_wong_wang", {}, 2.0, 10.0),
        ("reduced_wong_wang", {}, 0.8, 10.0),
        ("hopf", {}, 0.72, 0.5),
        ("wong_wang_ei", {}, 2.0, 1.0),
    ],
)
def test_a_null_dt_is_chosen_per_tr_within_the_models_limit(model, params, tr, dt):
    w, ln, fc = _synthetic()
    cfg = validate_config(
        {
            "model": {"name": model},
            "exploration": {"parameters": [{"name": "G", "lo": 0.1, "hi": 1.0, "n": 2}]},
            "refinement": {"stages": []},
            "observation": {"fcd_window": 0},
            "simulation": {"n_tr": 20, "transient_tr": 1},
            "coupling": {"speed": 5.0},
        }
    )
    assert cfg["simulation"]["dt"] is None
    p = recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=tr, n_tr=100)
    assert p.spec.dt == dt and p.spec.tr == pytest.approx(tr * 1000)
    assert p.spec.max_delay == int(np.rint(ln.max() / 5.0 / dt))  # delays in chosen steps


def test_an_explicit_dt_that_does_not_divide_the_tr_is_an_error():
    w, ln, fc = _synthetic()
    cfg = validate_config({"simulation": {"dt": 7.2, "n_tr": 20}, "observation": {"fcd_window": 0}})
    with pytest.raises(
        ConfigError,
        match=r"simulation.dt = 7.2 ms does not divide the TR "
        r"\(2000 ms\)",
    ):
        recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=2.0, n_tr=100)


def test_dt_max_above_the_models_limit_is_an_error():
    with pytest.raises(
        ConfigError,
        match=r"simulation.dt_max = 12 ms exceeds the largest "
        r"stable step of reduced_wong_wang \(10 ms\)",
    ):
        validate_config({"simulation": {"dt_max": 12.0}})


def test_the_bundled_recipe_simulates_what_it_did_before_at_tr_072():
    """config/config.yaml (dt null, dt_max 7.2, 300 TRs, 30 transient TRs) gives the SimSpec
    of the former recipe (dt 7.2 ms, duration 216000 ms, transient 21600 ms)."""
    root = Path(__file__).resolve().parents[1]
    new = load_config(root / "config" / "config.yaml")
    old = validate_config(
        {
            **new,
            "simulation": {
                **{
                    k: v
                    for k, v in new["simulation"].items()
                    if k not in ("dt_max", "n_tr", "transient_tr")
                },
                "dt": 7.2,
                "duration": 216000.0,
                "transient": 21600.0,
                "n_tr": None,
            },
        }
    )
    spec = recipe.build_spec(new, 0.72, 1200)
    assert (spec.dt, spec.tr, spec.n_tr, spec.n_transient) == (7.2, 720.0, 300, 30)
    assert spec == recipe.build_spec(old, 0.72, 1200)
    # a TR-2 s subject gets its step and as many volumes as the recipe says
    spec2 = recipe.build_spec(new, 2.0, 355)
    assert (spec2.dt, spec2.n_tr, spec2.n_transient) == (6.25, 300, 30)


@pytest.mark.parametrize(
    ("simulation", "n_tr", "n_transient"),
    [
        ({}, 100, 10),  # all, 20000 ms
        ({"n_tr": "all", "transient_tr": 5}, 100, 5),
        ({"n_tr": 40}, 40, 10),
        ({"duration": 36000.0, "transient": 7200.0}, 18, 3),  # ms, whole TRs
        ({"n_tr": None, "duration": 36000.0, "transient_tr": 4}, 18, 4),
    ],
)
def test_lengths_in_trs_all_or_ms(simulation, n_tr, n_transient):
    w, ln, fc = _synthetic()
    cfg = validate_config({"simulation": simulation, "observation": {"fcd_window": 0}})
    p = recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=2.0, n_tr=100)
    assert (p.spec.n_tr, p.spec.n_transient) == (n_tr, n_transient)


@pytest.mark.parametrize("pair", [("n_tr", "duration"), ("transient_tr", "transient")])
def test_a_length_in_trs_and_in_ms_together_is_an_error(pair):
    in_tr, in_ms = pair
    with pytest.raises(
        ConfigError,
        match=rf"simulation.{in_tr} = 30 and simulation.{in_ms} "
        rf"= 1000.0 ms both set the same length; give one",
    ):
        validate_config({"simulation": {in_tr: 30, in_ms: 1000.0}})
    cfg = validate_config({"simulation": {in_tr: 30, in_ms: None}})
    assert cfg["simulation"][in_tr] == 30


def test_a_simulation_shorter_than_the_data_is_warned():
    w, ln, fc = _synthetic()
    cfg = validate_config(
        {"simulation": {"n_tr": 300, "transient_tr": 30}, "observation": {"fcd_window": 0}}
    )
    p = recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=2.0, n_tr=355)
    (msg,) = recipe.length_warnings(p.spec, 2.0, 355)
    assert msg.startswith(
        "the simulated BOLD (300 TRs, 600 s) is shorter than the empirical one (355 TRs, 710 s)"
    )
    assert "simulation.n_tr: all" in msg
    assert recipe.length_warnings(p.spec, 2.0, 300) == []
    assert recipe.length_warnings(p.spec, 2.0, None) == []  # FC only: nothing to compare
    cfg = validate_config({"observation": {"fcd_window": 0}})  # n_tr: all
    p = recipe.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=2.0, n_tr=355)
    assert p.spec.n_tr == 355 and recipe.length_warnings(p.spec, 2.0, 355) == []


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        ("al", r"simulation.n_tr = 'al' does not match the pattern '\^all\$'"),
        (0, r"simulation.n_tr = 0; expected a value >= 1"),
        (3.5, r"simulation.n_tr: expected integer or string or null, got 3.5"),
    ],
)
def test_a_bad_n_tr_names_the_key(value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_config({"simulation": {"n_tr": value}})
