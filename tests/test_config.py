"""bnmfit.config: the schemas (package data), schema validation and its messages, the
subjects sheet, and rule-specific config."""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import yaml

from bnmfit import config as bconfig
from bnmfit.config import load_config, load_subjects, rule_config, validate_config
from bnmfit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SCHEMA = bconfig.schema("config")
SUBJECT_SCHEMA = bconfig.schema("subjects")


# =========================================================================== the schema


def test_the_schemas_are_package_data_read_through_importlib_resources(tmp_path, monkeypatch):
    package = resources.files("bnmfit") / "schemas"
    for name in ("config", "subjects"):
        text = (package / f"{name}.schema.yaml").read_text(encoding="utf-8")
        assert bconfig.schema(name) == yaml.safe_load(text)
    # a wheel carries them, and the workflow's schemas are these files (a link, not a copy)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "schemas/*.schema.yaml" in pyproject["tool"]["setuptools"]["package-data"]["bnmfit"]
    assert (ROOT / "workflow/schemas").resolve() == Path(str(package)).resolve()
    # read from wherever the package is, never from a path of the source tree
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas/config.schema.yaml").write_text("title: installed elsewhere\n")
    monkeypatch.setattr(
        bconfig.resources,
        "files",
        lambda pkg: tmp_path if pkg == "bnmfit" else resources.files(pkg),
    )
    monkeypatch.setattr(bconfig, "_SCHEMAS", {})
    assert bconfig.schema("config") == {"title": "installed elsewhere"}


def test_schema_default_and_choices_read_one_key():
    from bnmfit.connectome import NORMALISATIONS

    assert bconfig.schema_default("observation.fcd_window") == 40
    assert bconfig.schema_default("bold.bandpass") is None
    assert bconfig.schema_choices("connectome.normalise") == list(NORMALISATIONS)
    with pytest.raises(KeyError, match="no key 'observation.fcd_windw'"):
        bconfig.schema_default("observation.fcd_windw")


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
            if re.search(r"/(if|then|dependentSchemas)(/|$)", path):
                continue  # conditions (per model, per scope) narrow an already closed object
            assert "additionalProperties" in node, f"{path} is open"
            if node["additionalProperties"] is not False:  # a map of values
                assert isinstance(node["additionalProperties"], dict), path


def test_every_config_property_has_a_description_and_a_default():
    for path, node in _walk(SCHEMA):
        if re.search(r"/(if|then|dependentSchemas)(/|$)", path):
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
        b["if"]["properties"]["name"]["const"]: list(
            b["then"]["properties"]["parameters"]["properties"]
        )
        for b in branches
    }
    assert by_model == {name: list(cls.parameter_names()) for name, cls in MODELS.items()}


def test_enums_match_the_library():
    import importlib

    from bnmfit import explore, fit, params
    from bnmfit.connectome import NORMALISATIONS
    from bnmfit.io._matrix import MISSING_MODES
    from bnmfit.losses import LOSSES

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
    assert set(p["loss"]["properties"]["terms"]["properties"]) == set(LOSSES)
    evolution = p["exploration"]["properties"]["evolution"]["properties"]
    assert evolution["objectives"]["items"]["enum"] == list(LOSSES)


def test_defaults_of_the_schema_validate():
    cfg = validate_config({})
    assert cfg["model"]["name"] == "reduced_wong_wang"
    assert cfg["refinement"]["stages"][0]["free_parameters"][0]["scope"] == "global"
    assert validate_config(cfg) == cfg  # idempotent


# =========================================================================== config.yaml


def test_the_publication_recipe_is_a_valid_override_with_few_identifiable_numbers():
    from bnmfit.recipe import build_stages

    cfg = load_config(ROOT / "config/publication.yaml")
    assert cfg["simulation"]["n_tr"] == "all" and "fcd_ks" in cfg["loss"]["expression"]
    *_, maps = build_stages(cfg)
    assert [(p.name, p.scope, p.maps) for p in maps.free] == [
        ("w", "map", ("strength", "fc_gradient")),
        ("I_o", "map", ("strength", "fc_gradient")),
    ]  # 2 × (1 + 2) = 6 coefficients, not the base recipe's 160 regional values


def test_the_default_config_is_valid_and_is_the_tutorial_recipe():
    cfg = load_config(ROOT / "config/config.yaml")
    assert cfg["model"]["name"] == "reduced_wong_wang"
    assert [a["name"] for a in cfg["exploration"]["parameters"]] == ["G", "w"]
    stages = cfg["refinement"]["stages"]
    assert [s["name"] for s in stages] == ["global", "regional"]
    assert {f["name"] for f in stages[0]["free_parameters"]} == {"G", "w"}
    regional = [(f["name"], f["scope"]) for f in stages[1]["free_parameters"]]
    assert regional == [("w", "regional"), ("I_o", "regional")]  # as the tutorial
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
        (
            {"refinment": {}},
            r"unknown key 'refinment' \(did you mean 'refinement'\?\) at the top level; "
            r"allowed keys: subjects, connectome, .*refinement",
        ),
        (
            {"model": {"name": "rww"}},
            r"model.name = 'rww' is not allowed; allowed values: reduced_wong_wang, "
            r"wong_wang_ei, hopf, wilson_cowan",
        ),
        (
            {"model": {"parameters": {"ww": 0.5}}},
            r"unknown key 'ww' \(did you mean 'w'\?\) in model.parameters; allowed keys: a, b, "
            r"d, gamma, tau_s, w, J_N, I_o",
        ),
        (
            {"model": {"name": "hopf", "parameters": {"w": 0.5}}, "simulation": {"dt": 0.1}},
            r"unknown key 'w' in model.parameters; allowed keys: a, omega",
        ),
        (
            {"simulation": {"integrater": "heun"}},
            r"unknown key 'integrater' \(did you mean 'integrator'\?\) in simulation",
        ),
        ({"simulation": {"dt": "4"}}, r"simulation.dt: expected number or null, got '4' \(str\)"),
        ({"exploration": {"chunks": 0}}, r"exploration.chunks = 0; expected a value >= 1"),
        ({"coupling": {"speed": 0}}, r"coupling.speed = 0; expected a value > 0"),
        (
            {"simulation": {"integrator": "rk4"}},
            r"simulation.integrator = 'rk4' is not allowed; allowed values: heun, euler",
        ),
        (
            {
                "refinement": {
                    "stages": [
                        {
                            "name": "a",
                            "free_parameters": [{"name": "w", "domian": {"lo": 0, "hi": 1}}],
                        }
                    ]
                }
            },
            r"unknown key 'domian' \(did you mean 'domain'\?\) in "
            r"refinement.stages\[0\].free_parameters\[0\]",
        ),
        (
            {
                "refinement": {
                    "stages": [
                        {
                            "name": "a",
                            "optimizer": "adamm",
                            "free_parameters": [{"name": "w", "domain": {"lo": 0, "hi": 1}}],
                        }
                    ]
                }
            },
            r"refinement.stages\[0\].optimizer = 'adamm' is not allowed \(did you mean "
            r"'adam'\?\); allowed values: adam, adamw",
        ),
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
        (
            {"simulation": {"dt": 12.0}},
            r"simulation.dt = 12 ms exceeds the largest stable step of reduced_wong_wang \(10 ms\)",
        ),
        (
            {"model": {"name": "hopf"}, "simulation": {"dt": 4.0}},  # > Hopf's 0.5 ms
            r"exceeds the largest stable step of hopf",
        ),
        (
            {"exploration": {"parameters": [{"name": "W", "lo": 0, "hi": 1}]}},
            r"exploration.parameters\[0\]: unknown parameter 'W' of reduced_wong_wang "
            r"\(did you mean 'w'\?\): use one of G, sigma, weights, a, b",
        ),
        (
            {"exploration": {"parameters": [{"name": "G", "lo": 1, "hi": 0.5}]}},
            r"expected lo < hi, got lo=1, hi=0.5",
        ),
        (
            {"exploration": {"parameters": [{"name": "G", "lo": 0, "hi": 1, "scale": "log"}]}},
            r"a log axis needs lo > 0",
        ),
        ({"exploration": {"parameters": [{"name": "G"}]}}, r"missing bounds"),
        (
            {
                "exploration": {
                    "parameters": [{"name": "G", "lo": 0, "hi": 1, "domain": {"lo": 0, "hi": 1}}]
                }
            },
            r"either lo/hi or domain",
        ),
        ({"exploration": {"sampler": "sobol"}}, r"needs exploration.n_samples >= 1"),
        ({"exploration": {"chunks": 100}}, r"exploration.chunks = 100 but the space has only 64"),
        (
            {
                "exploration": {
                    "sampler": "zip",
                    "parameters": [
                        {"name": "G", "lo": 0, "hi": 1, "n": 3},
                        {"name": "w", "lo": 0, "hi": 1, "n": 4},
                    ],
                }
            },
            r"every axis needs the same n",
        ),
        (_stage(steps=10, n_epochs=20), r"steps \(10\) and n_epochs \(20\) disagree"),
        (
            _stage(
                free_parameters=[{"name": "G", "scope": "regional", "domain": {"lo": 0, "hi": 1}}]
            ),
            r"G is a single network value; use scope: global",
        ),
        (
            _stage(free_parameters=[{"name": "weights", "domain": {"lo": 0, "hi": 1}}]),
            r"the SC weights are fitted with scope: edges",
        ),
        (
            _stage(free_parameters=[{"name": "w", "init": 2.0, "domain": {"lo": 0, "hi": 1}}]),
            r"init 2 is outside \[0, 1\]",
        ),
        (
            {"refinement": {"stages": [_stage()["refinement"]["stages"][0]] * 2}},
            r"stage name 's' is used twice",
        ),
        (
            {"loss": {"expression": "rmse(fc, empirical_fc)", "terms": {"fc_corr": 1}}},
            r"loss has both expression and terms",
        ),
        (
            {"loss": {"terms": {"fcd_ks": 1.0}}, "observation": {"fcd_window": 0}},
            r"the loss uses fcd_ks but observation.fcd_window is 0",
        ),
        (
            {"loss": {"expression": "corelation(fc, empirical_fc)"}},
            r"unknown function 'corelation' at column 1 \(did you mean 'correlation'\?\)",
        ),
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
        (
            "subject\tsc_weights\tbold\n01\tw.tsv\tb.tsv\n01\tw.tsv\tb.tsv\n",
            r"subject '01' is listed twice \(rows 1 and 2\)",
        ),
        ("sc_weights\tbold\nw.tsv\tb.tsv\n", r"needs a 'subject' column"),
        (
            "subject\tsc_weights\tbold\n0_1\tw.tsv\tb.tsv\n",
            r"row 1 \(subject 0_1\): subject = '0_1' does not match the pattern",
        ),
        (
            "subject\tsc_weights\tbold\tsc_weigths\n01\tw.tsv\tb.tsv\tx\n",
            r"unknown key 'sc_weigths' \(did you mean 'sc_weights'\?\)",
        ),
        (
            "subject\tsc_weights\tbold\ttr\n01\tw.tsv\tb.tsv\tfast\n",
            r"tr = 'fast'; expected a number of seconds",
        ),
        (
            "subject\tsc_weights\tbold\ttr\n01\tw.tsv\tb.tsv\t720\n",
            r"tr = 720.0; expected a value <= 100",
        ),
        ("subject\tsc_weights\n01\tw.tsv\n", r"expected one of the keys bold / fc"),
        ("subject\tsc_weights\tbold\n", r"no subjects"),
        ("", r"the subjects sheet is empty"),
        (
            "subject\tsc_weights\tbold\tsc_format\n01\tw\tb\txlsx\n",
            r"sc_format = 'xlsx' is not allowed; allowed values: tsv, csv",
        ),
    ],
)
def test_subjects_sheet_errors(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_subjects(_sheet(tmp_path, text))


def test_subjects_sheet_optional_columns(tmp_path):
    rows = load_subjects(
        _sheet(
            tmp_path,
            "subject\tsc_weights\tsc_lengths\tbold\ttr\n"
            "sub-01\tw.tsv\t\tb.npy\t2.0\n"
            "# a comment line\n"
            "A2\tw.tsv\tl.tsv\tb.npy\t\n",
        )
    )
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
    assert g["refinement"] == {  # and each parameter's first domain (the box's limits)
        "starts": cfg["refinement"]["starts"],
        "min_separation": cfg["refinement"]["min_separation"],
        "stages": [
            {"name": "global", "free_parameters": cfg["refinement"]["stages"][0]["free_parameters"]}
        ],
    }
    assert rule_config(cfg, "cohort_report") == cfg
    assert set(rule_config(cfg, "report")) == set(cfg) - {"resources", "compute"}
    # a sub-config validates again (scripts re-validate what the workflow passes)
    assert validate_config(ex)["exploration"] == cfg["exploration"]
    # a refinement change leaves the upstream rules' config alone
    cfg2 = validate_config(
        {
            "refinement": {
                "starts": 2,
                "stages": [{**cfg["refinement"]["stages"][0], "learning_rate": 0.5}],
            }
        }
    )
    for rule in ("ingest_connectome", "empirical_fc", "explore", "gather_explore"):
        assert rule_config(cfg2, rule) == rule_config(cfg, rule), rule
    assert rule_config(cfg2, "refine") != rule_config(cfg, "refine")


def test_config_hash_is_stable_and_order_free():
    a = {"x": 1, "y": {"b": 2, "a": [1, 2]}}
    b = {"y": {"a": [1, 2], "b": 2}, "x": 1}
    assert bconfig.config_hash(a) == bconfig.config_hash(b)
    assert len(bconfig.config_hash(a)) == 16
    assert bconfig.config_hash(a) != bconfig.config_hash({**a, "x": 2})


def test_the_workflow_test_config_is_valid():
    cfg = load_config(DATA / "config.yaml")
    assert cfg["subjects"] == "tests/data/subjects.tsv"
    assert [r["subject"] for r in load_subjects(ROOT / cfg["subjects"])] == ["01", "02"]


def _differing_keys(recipe: dict, defaults: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in recipe.items():
        dotted = prefix + key
        if (
            isinstance(value, dict)
            and isinstance(defaults.get(key), dict)
            and dotted != "model.parameters"
        ):
            out |= _differing_keys(value, defaults[key], dotted + ".")
        elif defaults.get(key) != value:
            out.add(dotted)
    return out


def test_config_readme_lists_every_key_where_the_recipe_differs_from_the_schema():
    """One set of defaults: config/config.yaml is the base recipe; every key in which it
    departs from the schema's defaults is listed in config/README.md (and nothing else)."""
    root = Path(__file__).resolve().parents[1]
    recipe = load_config(root / "config" / "config.yaml")
    defaults = validate_config({"subjects": "(required)"})
    differ = _differing_keys(recipe, defaults)
    text = (root / "config" / "README.md").read_text(encoding="utf-8")
    table = text.split("<!-- recipe-vs-schema -->")[1].split("<!-- /recipe-vs-schema -->")[0]
    listed = {
        key
        for line in table.splitlines()[2:]
        for key in re.findall(r"`([a-z_.]+)`", line.split("|")[1])
    }
    assert differ == listed
    # and every key config/config.yaml writes is a documented schema key
    for key in _differing_keys(yaml.safe_load((root / "config/config.yaml").read_text()), {}):
        if key != "model.parameters":
            assert bconfig._config_key(key).get("description"), key
