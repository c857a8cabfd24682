"""bnmfit.config: schema validation and its messages, the subjects sheet, the loss-expression
parser, rule-specific config, and the library objects built from a config."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from bnmfit import config as bconfig
from bnmfit.config import (
    LossSpec,
    load_config,
    load_subjects,
    parse_loss,
    rule_config,
    validate_config,
)
from bnmfit.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
SUBJECT_SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/subjects.schema.yaml").read_text())


# =========================================================================== the schema


def _walk(schema, path="#"):
    """Every object schema inside ``schema`` with its JSON pointer."""
    if isinstance(schema, dict):
        yield path, schema
        for k, v in schema.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(schema, list):
        for i, v in enumerate(schema):
            yield from _walk(v, f"{path}/{i}")


@pytest.mark.parametrize("schema", [SCHEMA, SUBJECT_SCHEMA], ids=["config", "subjects"])
def test_schema_is_draft_2020_12_and_closed_everywhere(schema):
    import jsonschema

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    for path, node in _walk(schema):
        if node.get("type") == "object" or "properties" in node:
            if re.search(r"/(if|then)(/|$)", path):
                continue  # the per-model conditions narrow an already closed object
            assert "additionalProperties" in node, f"{path} is open"
            if node["additionalProperties"] is not False:  # a map of values
                assert isinstance(node["additionalProperties"], dict), path


def test_every_config_property_has_a_description_and_a_default():
    for path, node in _walk(SCHEMA):
        if re.search(r"/(if|then)(/|$)", path):
            continue
        for name, sub in (node.get("properties") or {}).items():
            if "$ref" in sub and len(sub) <= 2:
                continue
            assert "description" in sub, f"{path}/properties/{name} has no description"
    # top-level sections and their keys have defaults (so an empty config is complete)
    for name, sub in SCHEMA["properties"].items():
        assert "default" in sub, name
        for key, leaf in (sub.get("properties") or {}).items():
            if name == "refinement" and key == "stages":
                continue
            assert "default" in leaf or "$ref" in leaf, f"{name}.{key} has no default"


def test_model_parameter_names_in_the_schema_are_the_models():
    from bnmfit.models import MODELS

    assert SCHEMA["properties"]["model"]["properties"]["name"]["enum"] == list(MODELS)
    branches = SCHEMA["properties"]["model"]["allOf"]
    by_model = {
        b["if"]["properties"]["name"]["const"]:
            list(b["then"]["properties"]["parameters"]["properties"])
        for b in branches
    }
    assert by_model == {name: list(cls.parameter_names()) for name, cls in MODELS.items()}


def test_enums_match_the_library():
    import importlib

    from bnmfit import explore, fit, params
    from bnmfit.connectome import NORMALISATIONS
    from bnmfit.io._matrix import MISSING_MODES

    simulate = importlib.import_module("bnmfit.simulate")

    p = SCHEMA["properties"]
    d = SCHEMA["$defs"]
    assert p["connectome"]["properties"]["normalise"]["enum"] == list(NORMALISATIONS)
    assert p["connectome"]["properties"]["missing"]["enum"] == list(MISSING_MODES)
    assert p["simulation"]["properties"]["integrator"]["enum"] == list(simulate.INTEGRATORS)
    assert p["noise"]["properties"]["kind"]["enum"] == list(simulate.NOISES)
    assert p["coupling"]["properties"]["function"]["enum"] == list(simulate.COUPLINGS)
    assert p["exploration"]["properties"]["sampler"]["enum"] == list(explore.SAMPLERS)
    assert d["stage"]["properties"]["optimizer"]["enum"] == list(fit.OPTIMIZERS)
    assert d["stage"]["properties"]["schedule"]["enum"] == [None, *fit.SCHEDULES]
    assert d["free_parameter"]["properties"]["scope"]["enum"] == list(params.SCOPES)
    assert d["free_parameter"]["properties"]["transform"]["enum"] == list(params.TRANSFORMS)
    assert set(p["loss"]["properties"]["terms"]["properties"]) == set(
        __import__("bnmfit.losses", fromlist=["LOSSES"]).LOSSES
    )


def test_defaults_of_the_schema_validate():
    cfg = validate_config({})
    assert cfg["model"]["name"] == "reduced_wong_wang"
    assert cfg["refinement"]["stages"][0]["free_parameters"][0]["scope"] == "global"
    assert validate_config(cfg) == cfg  # idempotent


# =========================================================================== config.yaml


def test_the_default_config_is_valid_and_is_the_tutorial_recipe():
    cfg = load_config(ROOT / "config/config.yaml")
    assert cfg["model"]["name"] == "reduced_wong_wang"
    assert [a["name"] for a in cfg["exploration"]["parameters"]] == ["G", "w"]
    stages = cfg["refinement"]["stages"]
    assert [s["name"] for s in stages] == ["global", "regional"]
    assert {f["name"] for f in stages[0]["free_parameters"]} == {"G", "w"}
    assert [(f["name"], f["scope"]) for f in stages[1]["free_parameters"]] == [("w", "regional")]
    assert stages[0]["optimizer"] == "adam"


def test_every_key_of_the_default_config_is_commented():
    lines = (ROOT / "config/config.yaml").read_text().splitlines()
    key = re.compile(r"^\s*(- )?\{?([A-Za-z_]+):")
    for i, line in enumerate(lines):
        m = key.match(line)
        if not m or line.lstrip().startswith("#"):
            continue
        prev = lines[i - 1].strip() if i else ""
        inline = "#" in line.split(":", 1)[1]
        after = lines[i + 1].strip() if i + 1 < len(lines) else ""
        block = prev.startswith("#") or after.startswith("#")
        nested = line.rstrip().endswith(":") or "{" in line  # a section or an inline mapping
        assert inline or block or nested, f"config.yaml line {i + 1} has no comment: {line}"


# =========================================================================== messages


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"refinment": {}},
         r"unknown key 'refinment' \(did you mean 'refinement'\?\) at the top level; "
         r"allowed keys: subjects, connectome, .*refinement"),
        ({"model": {"name": "rww"}},
         r"model.name = 'rww' is not allowed; allowed values: reduced_wong_wang, "
         r"wong_wang_ei, hopf, wilson_cowan"),
        ({"model": {"parameters": {"ww": 0.5}}},
         r"unknown key 'ww' \(did you mean 'w'\?\) in model.parameters; allowed keys: a, b, "
         r"d, gamma, tau_s, w, J_N, I_o"),
        ({"model": {"name": "hopf", "parameters": {"w": 0.5}}, "simulation": {"dt": 0.1}},
         r"unknown key 'w' in model.parameters; allowed keys: a, omega"),
        ({"simulation": {"integrater": "heun"}},
         r"unknown key 'integrater' \(did you mean 'integrator'\?\) in simulation"),
        ({"simulation": {"dt": "4"}}, r"simulation.dt: expected number, got '4' \(str\)"),
        ({"exploration": {"chunks": 0}}, r"exploration.chunks = 0; expected a value >= 1"),
        ({"coupling": {"speed": 0}}, r"coupling.speed = 0; expected a value > 0"),
        ({"simulation": {"integrator": "rk4"}},
         r"simulation.integrator = 'rk4' is not allowed; allowed values: heun, euler"),
        ({"refinement": {"stages": [{"name": "a", "free_parameters": [
            {"name": "w", "domian": {"lo": 0, "hi": 1}}]}]}},
         r"unknown key 'domian' \(did you mean 'domain'\?\) in "
         r"refinement.stages\[0\].free_parameters\[0\]"),
        ({"refinement": {"stages": [{"name": "a", "optimizer": "adamm", "free_parameters": [
            {"name": "w", "domain": {"lo": 0, "hi": 1}}]}]}},
         r"refinement.stages\[0\].optimizer = 'adamm' is not allowed \(did you mean "
         r"'adam'\?\); allowed values: adam, adamw"),
    ],
)
def test_schema_errors_name_the_key_and_the_allowed_values(config, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        validate_config(config)
    assert "\n" not in str(e.value)


def _stage(**kw):
    st = {"name": "s", "free_parameters": [{"name": "w", "domain": {"lo": 0.0, "hi": 1.0}}]}
    st.update(kw)
    return {"refinement": {"stages": [st]}}


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"simulation": {"dt": 12.0}},
         r"simulation.dt = 12 ms exceeds the largest stable step of reduced_wong_wang \(10 ms\)"),
        ({"model": {"name": "hopf"}},  # default dt 4 ms > Hopf's 0.5 ms
         r"exceeds the largest stable step of hopf"),
        ({"exploration": {"parameters": [{"name": "W", "lo": 0, "hi": 1}]}},
         r"exploration.parameters\[0\]: 'W' is not a parameter of reduced_wong_wang "
         r"\(did you mean 'w'\?\); choose from G, sigma, weights, a, b"),
        ({"exploration": {"parameters": [{"name": "G", "lo": 1, "hi": 0.5}]}},
         r"expected lo < hi, got lo=1, hi=0.5"),
        ({"exploration": {"parameters": [{"name": "G", "lo": 0, "hi": 1, "scale": "log"}]}},
         r"a log axis needs lo > 0"),
        ({"exploration": {"parameters": [{"name": "G"}]}}, r"missing bounds"),
        ({"exploration": {"parameters": [{"name": "G", "lo": 0, "hi": 1,
                                           "domain": {"lo": 0, "hi": 1}}]}},
         r"either lo/hi or domain"),
        ({"exploration": {"sampler": "sobol"}}, r"needs exploration.n_samples >= 1"),
        ({"exploration": {"chunks": 100}}, r"exploration.chunks = 100 but the space has only 64"),
        ({"exploration": {"sampler": "zip", "parameters": [
            {"name": "G", "lo": 0, "hi": 1, "n": 3}, {"name": "w", "lo": 0, "hi": 1, "n": 4}]}},
         r"every axis needs the same n"),
        (_stage(steps=10, n_epochs=20), r"steps \(10\) and n_epochs \(20\) disagree"),
        (_stage(free_parameters=[{"name": "G", "scope": "regional",
                                  "domain": {"lo": 0, "hi": 1}}]),
         r"G is a single network value; use scope: global"),
        (_stage(free_parameters=[{"name": "weights", "domain": {"lo": 0, "hi": 1}}]),
         r"the SC weights are fitted with scope: edges"),
        (_stage(free_parameters=[{"name": "w", "init": 2.0, "domain": {"lo": 0, "hi": 1}}]),
         r"init 2 is outside \[0, 1\]"),
        ({"refinement": {"stages": [_stage()["refinement"]["stages"][0]] * 2}},
         r"stage name 's' is used twice"),
        ({"loss": {"expression": "rmse(fc, empirical_fc)", "terms": {"fc_corr": 1}}},
         r"loss has both expression and terms"),
        ({"loss": {"terms": {"fcd_ks": 1.0}}, "observation": {"fcd_window": 0}},
         r"the loss uses fcd_ks but observation.fcd_window is 0"),
        ({"loss": {"expression": "corelation(fc, empirical_fc)"}},
         r"unknown function 'corelation' at column 1 \(did you mean 'correlation'\?\)"),
        ({"bold": {"bandpass": [0.1, 0.01]}}, r"expected \[low, high\] with low < high"),
    ],
)
def test_semantic_errors(config, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_config(config)


def test_load_config_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: invalid YAML at line \d+"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("modle: {}\n")
    with pytest.raises(ConfigError, match=r"wrong.yaml: unknown key 'modle'"):
        load_config(wrong)


# =========================================================================== loss parser


@pytest.mark.parametrize(
    ("expression", "terms", "offset"),
    [
        ("1 - correlation(fc, empirical_fc)", {"fc_corr": 1.0}, 0.0),
        ("1 - corr(empirical_fc, fc)", {"fc_corr": 1.0}, 0.0),
        ("fc_corr(fc, empirical_fc)", {"fc_corr": 1.0}, 0.0),
        ("rmse(fc, empirical_fc)", {"fc_rmse": 1.0}, 0.0),
        ("0.5 * fcd_ks(fcd, empirical_fcd) + rmse(fc, empirical_fc)",
         {"fcd_ks": 0.5, "fc_rmse": 1.0}, 0.0),
        ("2 * (1 - correlation(fc, empirical_fc)) / 4 + 0.1", {"fc_corr": 0.5}, 0.1),
        ("-(-rmse(fc, empirical_fc)) * 3e-1", {"fc_rmse": 0.3}, 0.0),
        ("rmse(fc,empirical_fc) + rmse(fc, empirical_fc) - 0*ks(fcd, empirical_fcd)",
         {"fc_rmse": 2.0}, 0.0),
        ("2 - correlation(fc, empirical_fc) - correlation(fc, empirical_fc)",
         {"fc_corr": 2.0}, 0.0),
        ("1 - correlation(fc, empirical_fc) + 1", {"fc_corr": 1.0}, 1.0),
    ],
)
def test_loss_expressions(expression, terms, offset):
    spec = parse_loss(expression)
    assert dict(spec.terms) == pytest.approx(terms)
    assert spec.offset == pytest.approx(offset)
    assert spec.expression == expression
    from bnmfit.losses import LOSSES

    assert set(dict(spec.terms)) <= set(LOSSES)


@pytest.mark.parametrize(
    ("expression", "pattern"),
    [
        ("", r"the loss expression is empty"),
        ("correlation(fc, empirical_fc)",
         r"gives the term fc_corr the weight -1; a loss is minimised.*"
         r"write 1 - correlation\(fc, empirical_fc\)"),
        ("rmse(fc, empirical_fc) * rmse(fc, empirical_fc)", r"product of two loss terms"),
        ("1 / rmse(fc, empirical_fc)", r"division by a loss term"),
        ("rmse(fc, empirical_fc) / 0", r"division by zero"),
        ("rmse(fc, empirical_fcd)",
         r"rmse\(\) at column 1 compares fc and empirical_fc, got fc, empirical_fcd"),
        ("rmse(fc)", r"compares fc and empirical_fc, got fc"),
        ("fcd_ks(fc, empirical_fc)", r"compares fcd and empirical_fcd"),
        ("fc", r"the observable 'fc' at column 1 must be an argument of a function"),
        ("rmse(bold, empirical_fc)", r"unknown observable 'bold' at column 6"),
        ("__import__('os')", r"unexpected character \"'\" at column 12"),
        ("1 -", r"expected a number, a function or '\(' at column 4, got the end"),
        ("(1 - correlation(fc, empirical_fc)", r"expected '\)' at column 35, got the end"),
        ("1 - correlation(fc, empirical_fc))", r"unexpected '\)' at column 34"),
        ("3 $ 4", r"unexpected character '\$' at column 3"),
        ("0.5", r"has no loss term \(it is the constant 0.5\)"),
        ("exp(rmse(fc, empirical_fc))", r"unknown function 'exp'"),
    ],
)
def test_loss_expression_errors(expression, pattern):
    with pytest.raises(ConfigError, match=pattern) as e:
        parse_loss(expression)
    assert str(e.value).startswith("loss.expression: ")


def test_loss_spec_from_config():
    assert bconfig.loss_spec(validate_config({})) == LossSpec((("fc_corr", 1.0),))
    cfg = validate_config({"loss": {"terms": {"fc_corr": 1.0, "fc_rmse": 0.0}}})
    assert bconfig.loss_spec(cfg).terms == (("fc_corr", 1.0),)
    cfg = validate_config({"loss": {"expression": "1 - correlation(fc, empirical_fc) + 0.2"}})
    spec = bconfig.loss_spec(cfg)
    assert spec.terms == (("fc_corr", 1.0),) and spec.offset == pytest.approx(0.2)
    assert spec.describe() == "1·fc_corr + 0.2"


# =========================================================================== subjects


def test_the_bundled_subjects_sheet():
    rows = load_subjects(ROOT / "config/subjects.tsv")
    assert [r["subject"] for r in rows] == ["01", "02", "03", "04", "05", "06", "07"]
    for r in rows:
        assert (ROOT / r["sc_weights"]).is_file() and (ROOT / r["bold"]).is_file()


def _sheet(tmp_path, text):
    p = tmp_path / "subjects.tsv"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("subject\tsc_weights\tbold\n01\tw.tsv\tb.tsv\n01\tw.tsv\tb.tsv\n",
         r"subject '01' is listed twice \(rows 1 and 2\)"),
        ("sc_weights\tbold\nw.tsv\tb.tsv\n", r"needs a 'subject' column"),
        ("subject\tsc_weights\tbold\n0_1\tw.tsv\tb.tsv\n",
         r"row 1 \(subject 0_1\): subject = '0_1' does not match the pattern"),
        ("subject\tsc_weights\tbold\tsc_weigths\n01\tw.tsv\tb.tsv\tx\n",
         r"unknown key 'sc_weigths' \(did you mean 'sc_weights'\?\)"),
        ("subject\tsc_weights\tbold\ttr\n01\tw.tsv\tb.tsv\tfast\n",
         r"tr = 'fast'; expected a number of seconds"),
        ("subject\tsc_weights\tbold\ttr\n01\tw.tsv\tb.tsv\t720\n",
         r"tr = 720.0; expected a value <= 100"),
        ("subject\tsc_weights\n01\tw.tsv\n", r"expected one of the keys bold / fc"),
        ("subject\tsc_weights\tbold\n", r"no subjects"),
        ("", r"the subjects sheet is empty"),
        ("subject\tsc_weights\tbold\tsc_format\n01\tw\tb\txlsx\n",
         r"sc_format = 'xlsx' is not allowed; allowed values: tsv, csv"),
    ],
)
def test_subjects_sheet_errors(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_subjects(_sheet(tmp_path, text))


def test_subjects_sheet_optional_columns(tmp_path):
    rows = load_subjects(_sheet(
        tmp_path,
        "subject\tsc_weights\tsc_lengths\tbold\ttr\n"
        "sub-01\tw.tsv\t\tb.npy\t2.0\n"
        "# a comment line\n"
        "A2\tw.tsv\tl.tsv\tb.npy\t\n",
    ))
    assert rows[0] == {"subject": "01", "sc_weights": "w.tsv", "bold": "b.npy", "tr": 2.0}
    assert rows[1]["subject"] == "A2" and "tr" not in rows[1]


# =========================================================================== rule config


def test_rule_config_selects_what_a_rule_depends_on():
    cfg = validate_config({})
    ex = rule_config(cfg, "explore")
    assert "refinement" not in ex and "report" not in ex and "resources" not in ex
    assert ex["exploration"] == cfg["exploration"]
    ref = rule_config(cfg, "refine")
    assert "exploration" not in ref and ref["refinement"] == cfg["refinement"]
    g = rule_config(cfg, "gather_explore")
    assert g["refinement"] == {"starts": cfg["refinement"]["starts"],
                               "min_separation": cfg["refinement"]["min_separation"]}
    assert rule_config(cfg, "cohort_report") == cfg
    assert set(rule_config(cfg, "report")) == set(cfg) - {"resources", "compute"}
    # a sub-config validates again (scripts re-validate what the workflow passes)
    assert validate_config(ex)["exploration"] == cfg["exploration"]
    # a refinement change leaves the upstream rules' config alone
    cfg2 = validate_config({"refinement": {"starts": 2, "stages": [
        {**cfg["refinement"]["stages"][0], "learning_rate": 0.5}]}})
    for rule in ("ingest_connectome", "empirical_fc", "explore", "gather_explore"):
        assert rule_config(cfg2, rule) == rule_config(cfg, rule), rule
    assert rule_config(cfg2, "refine") != rule_config(cfg, "refine")


def test_config_hash_is_stable_and_order_free():
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert bconfig.config_hash(a) == bconfig.config_hash(b)
    assert len(bconfig.config_hash(a)) == 16
    assert bconfig.config_hash(a) != bconfig.config_hash({**a, "x": 2})


# =========================================================================== builders


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
    cfg = validate_config({"simulation": {"dt": 10.0, "transient": 1440.0},
                           "observation": {"fcd_window": 0}})
    p = bconfig.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=0.72, n_tr=90)
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
    cfg = validate_config({
        "model": {"parameters": {"w": [0.1, 0.2, 0.3, 0.4, 0.5], "I_o": 0.3}},
        "coupling": {"speed": 5.0, "G": 0.7},
        "simulation": {"dt": 4.0, "duration": 36000.0, "heun_coupling": "per_step",
                       "bold_dt": 8.0},
        "observation": {"tr": 2.0, "fcd_window": 0},
        "loss": {"expression": "rmse(fc, empirical_fc) + 1 - correlation(fc, empirical_fc)"},
    })
    p = bconfig.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=0.72, n_tr=1000)
    assert p.spec.tr == 2000.0 and p.spec.n_tr == 18  # 36 s at TR 2 s
    assert p.spec.heun_coupling == "per_step" and p.spec.bold_every == 2
    assert p.spec.max_delay == int(np.rint(ln.max() / 5.0 / 4.0)) and p.delays is not None
    np.testing.assert_allclose(np.asarray(p.model.w), [0.1, 0.2, 0.3, 0.4, 0.5])
    assert dict(p.loss_weights) == {"fc_corr": 1.0, "fc_rmse": 1.0} and p.G == 0.7
    cfg["simulation"]["duration"] = None  # same duration as the data at the other TR
    p = bconfig.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=0.72, n_tr=1000)
    assert p.spec.n_tr == 360


@pytest.mark.parametrize(
    ("overrides", "kw", "error", "pattern"),
    [
        ({"model": {"parameters": {"w": [0.1, 0.2]}}}, {}, ConfigError,
         r"model.parameters.w has 2 values but the connectome has 5 regions"),
        ({"observation": {"fcd_window": 50}}, {"n_tr": 52}, ConfigError,
         r"too few for two FCD windows of 50 TRs"),
        ({"simulation": {"dt": 7.0}}, {}, ConfigError,
         r"simulation.dt = 7 ms does not divide the TR \(720 ms\)"),
        ({"observation": {"fcd_window": 0}}, {"n_tr": None}, ConfigError,
         r"set simulation.duration"),
        ({"loss": {"terms": {"fcd_ks": 1.0}}}, {"fcd": None}, DataError,
         r"the loss uses fcd_ks but the subject has no empirical FCD"),
    ],
)
def test_build_problem_errors(overrides, kw, error, pattern):
    w, ln, fc = _synthetic()
    cfg = validate_config({"simulation": {"dt": 10.0}, **overrides})
    args = dict(weights=w, lengths=ln, fc=fc, fcd=np.eye(10), tr=0.72, n_tr=100)
    args.update(kw)
    with pytest.raises(error, match=pattern):
        bconfig.build_problem(cfg, **args)


def test_build_space_and_stages():
    cfg = validate_config({
        "noise": {"seed": 7},
        "exploration": {"seeds": 3, "parameters": [
            {"name": "G", "lo": 0.1, "hi": 1.0, "n": 3},
            {"name": "w", "domain": {"lo": 0.2, "hi": 0.8}, "n": 2, "scale": "log"}]},
        "refinement": {"stages": [
            {"name": "g", "free_parameters": [{"name": "G", "domain": {"lo": 0, "hi": 2}}],
             "n_epochs": 7, "optimizer": "sgd", "schedule": "cosine"},
            {"name": "r", "free_parameters": [
                {"name": "w", "scope": "regional", "transform": "softplus",
                 "domain": {"lo": 0, "hi": 1}}], "l2_regional": 0.1,
             "n_noise": 4, "noise_average": "fc"}]},
    })
    space = bconfig.build_space(cfg)
    assert space.names == ("G", "w") and space.points().shape == (6, 2)
    assert space.axes[1].scale == "log" and space.axes[1].lo == 0.2
    assert bconfig.noise_seeds(cfg) == [7, 8, 9]
    stages = bconfig.build_stages(cfg)
    assert [s.name for s in stages] == ["g", "r"]
    assert stages[0].steps == 7 and stages[0].optimizer == "sgd"
    assert stages[0].schedule == "cosine" and stages[1].steps == 100
    fp = stages[1].free[0]
    assert (fp.name, fp.scope, fp.transform, fp.lo, fp.hi) == ("w", "regional", "softplus",
                                                                0.0, 1.0)
    assert stages[1].l2_regional == 0.1
    assert (stages[0].noise_average, stages[1].noise_average) == ("loss", "fc")
    assert stages[1].n_noise == 4


def test_the_tvboptim_rww_tutorial_is_expressible():
    cfg = load_config(DATA / "tvboptim_rww.yaml")
    space = bconfig.build_space(cfg)
    assert space.names == ("w", "G") and len(space.points()) == 32 * 32
    assert space.points().min() == pytest.approx(0.001) and space.points().max() == 0.7
    g, r = bconfig.build_stages(cfg)
    assert {p.name for p in g.free} == {"G", "w"} and g.learning_rate == 0.01
    assert g.steps == 300 and g.optimizer == "adam"
    assert [(p.name, p.scope) for p in r.free] == [("w", "regional"), ("I_o", "regional")]
    assert r.learning_rate == 0.004 and r.steps == 200
    assert "G" not in {p.name for p in r.free}  # G stays at the global fit
    assert bconfig.loss_spec(cfg).terms == (("fc_rmse", 1.0),)
    w, ln, fc = _synthetic(n=4)
    p = bconfig.build_problem(cfg, weights=w, lengths=ln, fc=fc, tr=0.72, n_tr=1000)
    assert p.spec.dt == 4.0 and p.spec.tr == 1000.0 and p.spec.n_tr == 120
    assert p.spec.integrator == "heun"


def test_tvbo_style_free_parameters_n_epochs_and_loss_expression():
    cfg = load_config(DATA / "tvbo_style.yaml")
    (st,) = bconfig.build_stages(cfg)
    assert st.steps == 50 and st.learning_rate == 0.01
    assert [(p.name, p.lo, p.hi, p.transform) for p in st.free] == [
        ("G", 0.1, 1.0, "sigmoid"), ("sigma", 0.001, 0.01, "log")]
    assert dict(bconfig.loss_spec(cfg).terms) == {"fcd_ks": 0.5, "fc_rmse": 1.0}
    space = bconfig.build_space(cfg)
    assert space.sampler == "sobol" and space.points().shape == (16, 2)


def test_the_workflow_test_config_is_valid():
    cfg = load_config(DATA / "config.yaml")
    assert cfg["subjects"] == "tests/data/subjects.tsv"
    assert [r["subject"] for r in load_subjects(ROOT / cfg["subjects"])] == ["01", "02"]
