"""The workflow configuration and the subjects sheet: load and validate.

* :func:`load_config` / :func:`validate_config` — YAML → a dict validated against the
  package's ``schemas/config.schema.yaml`` (JSON schema 2020-12; ``workflow/schemas`` links to
  it) with every default of the schema filled in, plus the checks a schema cannot express
  (parameter names of the chosen model, bounds, the loss expression, a dt the model can
  take). Errors are :class:`~bnmfit.errors.ConfigError` with a one-line message that names
  the key, what came, and what is allowed.
* :func:`load_subjects` / :func:`check_subject_files` — the subjects sheet, each row
  validated against ``schemas/subjects.schema.yaml``, and the files it names.
* :func:`schema_default` / :func:`schema_choices` — one key's default and allowed values, as
  the schema writes them (for the scripts' options).
* :func:`rule_config` / :func:`config_hash` — the part of the configuration one workflow rule
  depends on (so that changing, say, a refinement setting reruns only the rules downstream
  of it), and its hash.

Turning a validated configuration into library objects is :mod:`bnmfit.recipe`; its loss is
:func:`bnmfit.losses.loss_spec`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from bnmfit.errors import ConfigError, close_match, short_list, unknown_choice

__all__ = [
    "RULE_SECTIONS",
    "SUBJECT_FILE_COLUMNS",
    "bounds",
    "check_subject_files",
    "config_hash",
    "load_config",
    "load_subjects",
    "load_yaml",
    "rule_config",
    "schema",
    "schema_choices",
    "schema_default",
    "stage_steps",
    "validate_config",
    "validate_subjects",
]

#: the configuration each rule depends on: top-level sections, or (section, keys) pairs.
RULE_SECTIONS: dict[str, tuple] = {
    "ingest_connectome": ("connectome",),
    "empirical_fc": ("bold", ("observation", ("fcd_window", "fcd_step")), "validation"),
    "explore": (
        "bold",
        "model",
        "coupling",
        "noise",
        "simulation",
        "observation",
        "loss",
        "exploration",
        "compute",
    ),
    "refine": (
        "bold",
        "model",
        "coupling",
        "noise",
        "simulation",
        "observation",
        "loss",
        "refinement",
        "validation",
        "compute",
    ),
}

#: gather_explore extends the box with the explore jobs' simulations, within the domains of
#: the refinement stages' free parameters (of the stages only those: see :func:`rule_config`)
RULE_SECTIONS["gather_explore"] = (
    *RULE_SECTIONS["explore"],
    ("refinement", ("starts", "min_separation", "stages")),
)


# =========================================================================== files


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; ConfigError (naming the file and line) when it is not valid YAML."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: expected a YAML file, got no such file; check the path")
    try:
        with open(p, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where} ({problem}); fix the syntax") from None


_SCHEMAS: dict[str, dict] = {}


def schema(name: str) -> dict:
    """The JSON schema ``<name>.schema.yaml`` (config or subjects) shipped in ``bnmfit/schemas``
    (read once, through importlib.resources: works from an installed wheel too)."""
    if name not in _SCHEMAS:
        import yaml

        text = (
            resources.files("bnmfit")
            .joinpath("schemas", f"{name}.schema.yaml")
            .read_text(encoding="utf-8")
        )
        _SCHEMAS[name] = yaml.safe_load(text)
    return _SCHEMAS[name]


def _config_key(key: str) -> Mapping:
    """The schema of a dotted key of the configuration, e.g. ``observation.fcd_window``."""
    node: Mapping = schema("config")
    for part in key.split("."):
        props = node.get("properties") or {}
        if part not in props:
            raise KeyError(f"the config schema has no key {key!r}")
        node = props[part]
    return node


def schema_default(key: str) -> Any:
    """The schema's default of a dotted config key (e.g. ``observation.fcd_window`` → 40)."""
    return copy.deepcopy(_config_key(key)["default"])


def schema_choices(key: str) -> list:
    """The values the schema allows for a dotted config key (its ``enum``)."""
    return list(_config_key(key)["enum"])


# =========================================================================== validation


def _fill_defaults(instance: Any, schema: Mapping, root: Mapping) -> None:
    """Insert the schema's defaults into ``instance`` in place (objects, arrays, $ref,
    and the ``then`` branch of an ``if`` that matches)."""
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/"):
            node: Any = root
            for part in ref[2:].split("/"):
                node = node[part]
            _fill_defaults(instance, node, root)
    if isinstance(instance, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in instance and isinstance(sub, Mapping):
                default = _default_of(sub, root)
                if default is not _MISSING:
                    instance[key] = copy.deepcopy(default)
            if key in instance and isinstance(sub, Mapping):
                _fill_defaults(instance[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            props = schema.get("properties") or {}
            for key, value in instance.items():
                if key not in props:
                    _fill_defaults(value, extra, root)
    if isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        for item in instance:
            _fill_defaults(item, schema["items"], root)
    for sub in schema.get("allOf") or ():
        cond = sub.get("if")
        if cond is None:
            _fill_defaults(instance, sub, root)
        elif _matches(instance, cond, root) and "then" in sub:
            _fill_defaults(instance, sub["then"], root)


_MISSING = object()


def _default_of(schema: Mapping, root: Mapping) -> Any:
    if "default" in schema:
        return schema["default"]
    if "$ref" in schema and schema["$ref"].startswith("#/"):
        node: Any = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        if "default" in node:
            return node["default"]
    return _MISSING


def _matches(instance: Any, schema: Mapping, root: Mapping) -> bool:
    import jsonschema

    cls = jsonschema.validators.validator_for(root)
    sub = dict(schema)
    sub.setdefault("$defs", root.get("$defs", {}))
    return cls(sub).is_valid(instance)


def _path(error) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts)


def _allowed_keys(schema: Mapping, root: Mapping) -> list[str]:
    if "$ref" in schema and schema["$ref"].startswith("#/"):
        node: Any = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        schema = node
    return list((schema.get("properties") or {}).keys())


def _describe(error, where: str, root: Mapping) -> str:
    """One line for one jsonschema error."""
    key = _path(error)
    at = f"{where}: {key}" if key else f"{where}: top level"
    v = error.validator
    inst = error.instance
    if v == "additionalProperties":
        allowed = _allowed_keys(error.schema, root)
        extra = [k for k in inst if k not in allowed]
        hints = []
        for k in extra:
            close = close_match(k, allowed)
            hints.append(f"{k!r}" + (f" (did you mean {close!r}?)" if close else ""))
        inside = f"in {key}" if key else "at the top level"
        return (
            f"{where}: unknown key {', '.join(hints)} {inside}; allowed keys: {', '.join(allowed)}"
        )
    if v == "enum":
        allowed = ", ".join("null" if x is None else str(x) for x in error.validator_value)
        close = close_match(inst, error.validator_value)
        hint = f" (did you mean {close!r}?)" if close else ""
        return f"{at} = {inst!r} is not allowed{hint}; allowed values: {allowed}"
    if v == "const":
        return f"{at} = {inst!r}; expected {error.validator_value!r}"
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{at}: expected {want}, got {inst!r} ({type(inst).__name__})"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        rel = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[
            v
        ]
        hint = ""
        if (
            v == "maximum"
            and key.split(".")[-1] in ("tr", "default_tr")
            and isinstance(inst, (int, float))
        ):
            hint = (
                f" (the TR in seconds): {inst:g} is almost certainly milliseconds; give "
                f"it in seconds ({inst / 1000:g})"
            )
        return f"{at} = {inst!r}; expected a value {rel} {error.validator_value}{hint}"
    if v == "required":
        missing = [k for k in error.validator_value if k not in inst]
        return f"{at}: missing required key {', '.join(map(repr, missing))}"
    if v in ("minItems", "maxItems"):
        return f"{at}: {error.message}"
    if v == "pattern":
        return f"{at} = {inst!r} does not match the pattern {error.validator_value!r}"
    if v == "anyOf" and isinstance(inst, dict):
        needs = [" or ".join(s.get("required", [])) for s in error.validator_value]
        return f"{at}: expected one of the keys {' / '.join(needs)}"
    return f"{at}: {error.message}"


def _check(instance: Any, schema: Mapping, where: str) -> None:
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    errors = list(cls(schema).iter_errors(instance))
    if not errors:
        return
    # the deepest error first: it names the most specific key
    flat = list(errors)
    flat.sort(key=lambda e: (-len(e.absolute_path), e.validator != "additionalProperties"))
    first = flat[0]
    more = (
        f" (and {len(flat) - 1} more error{'s' if len(flat) > 2 else ''})" if len(flat) > 1 else ""
    )
    raise ConfigError(_describe(first, where, schema) + more)


def validate_config(config: Mapping[str, Any] | None, *, where: str = "config") -> dict[str, Any]:
    """Validate ``config`` and return a copy with every default filled in.

    Raises:
        ConfigError: the first schema violation (unknown key with the allowed keys, a value
            outside its enum with the allowed values, a number out of range, ...), or a
            semantic error (unknown parameter of the model, lo ≥ hi, a bad loss expression,
            a dt above the model's stable step, ...).
    """
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(config).__name__}")
    sch = schema("config")
    cfg = copy.deepcopy(dict(config))
    _check(cfg, sch, where)
    given = dict(cfg.get("simulation") or {})
    _fill_defaults(cfg, sch, sch)
    _length_pairs(given, cfg["simulation"], where)
    _check(cfg, sch, where)
    _semantic_checks(cfg, where)
    return cfg


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML configuration file (see :func:`validate_config`)."""
    return validate_config(load_yaml(path), where=str(path))


def _model_parameter_names(name: str) -> tuple[str, ...]:
    from bnmfit.models import MODELS

    return MODELS[name].parameter_names()


def _check_free_name(name: str, model: str, where: str, scope: str | None = None) -> None:
    from bnmfit.problem import NETWORK_PARAMETERS

    allowed = NETWORK_PARAMETERS + _model_parameter_names(model)
    if name not in allowed:
        raise ConfigError(f"{where}: " + unknown_choice("parameter", name, allowed, f" of {model}"))
    if scope is None:
        return
    if name == "weights" and scope != "edges":
        raise ConfigError(f"{where}: the SC weights are fitted with scope: edges, got {scope}")
    if scope == "edges" and name != "weights":
        raise ConfigError(f"{where}: scope edges is only for name: weights, got {name!r}")
    if name in ("G", "sigma") and scope != "global":
        raise ConfigError(f"{where}: {name} is a single network value; use scope: global")


def bounds(item: Mapping, where: str) -> tuple[float, float]:
    """The bounds (lo, hi) of an exploration axis or a free parameter: its ``lo``/``hi``, or
    its ``domain: {lo, hi}``."""
    dom = item.get("domain")
    has_lohi = "lo" in item or "hi" in item
    if dom is not None and has_lohi:
        raise ConfigError(f"{where}: give either lo/hi or domain: {{lo, hi}}, not both")
    src = dom if dom is not None else item
    if "lo" not in src or "hi" not in src:
        raise ConfigError(f"{where}: missing bounds; give lo and hi (or domain: {{lo, hi}})")
    lo, hi = float(src["lo"]), float(src["hi"])
    if not lo < hi:
        raise ConfigError(f"{where}: expected lo < hi, got lo={lo:g}, hi={hi:g}")
    return lo, hi


def stage_steps(stage: Mapping[str, Any], where: str = "stage") -> int:
    """A validated stage's number of steps: ``steps``, or its alias ``n_epochs`` (the schema
    fills in the default of ``steps`` when neither is given)."""
    steps, epochs = stage.get("steps"), stage.get("n_epochs")
    if steps is not None and epochs is not None and steps != epochs:
        raise ConfigError(
            f"{where}: steps ({steps}) and n_epochs ({epochs}) disagree; give one of them"
        )
    return int(steps if steps is not None else epochs)


#: (in TRs, in ms): the two ways of giving the simulated length and the transient
LENGTH_PAIRS = (("n_tr", "duration"), ("transient_tr", "transient"))


def _length_pairs(given: Mapping, sim: dict, where: str) -> None:
    """Each simulated length is given in TRs or in ms, not both; the one given replaces the
    other's schema default (a duration given without n_tr, a transient_tr without transient)."""
    for in_tr, in_ms in LENGTH_PAIRS:
        if given.get(in_tr) is not None and given.get(in_ms) is not None:
            raise ConfigError(
                f"{where}: simulation.{in_tr} = {given[in_tr]!r} and simulation.{in_ms} = "
                f"{given[in_ms]!r} ms both set the same length; give one of them and set the "
                f"other to null (config/config.yaml, the base recipe, sets {in_tr})"
            )
        if given.get(in_ms) is not None:
            sim[in_tr] = None
        elif given.get(in_tr) is not None:
            sim[in_ms] = None


def _semantic_checks(cfg: dict, where: str) -> None:
    from bnmfit.models import MODELS

    model = cfg["model"]["name"]
    max_dt = MODELS[model].max_dt
    for key in ("dt", "dt_max"):
        dt = cfg["simulation"][key]
        if dt is not None and dt > max_dt:
            raise ConfigError(
                f"{where}: simulation.{key} = {dt:g} ms exceeds the largest stable step of "
                f"{model} ({max_dt:g} ms); lower {key} (a dt must also divide the TR)"
            )
    bp = cfg["bold"]["bandpass"]
    if bp is not None and not bp[0] < bp[1]:
        raise ConfigError(f"{where}: bold.bandpass = {bp}; expected [low, high] with low < high")
    from bnmfit.explore import EVOLUTIONARY
    from bnmfit.losses import loss_spec

    spec = loss_spec(cfg, where=where)
    if any(n == "fcd_ks" for n, _ in spec.terms) and not cfg["observation"]["fcd_window"]:
        raise ConfigError(
            f"{where}: the loss uses fcd_ks but observation.fcd_window is 0 (no FCD); set an "
            "FCD window in TRs or drop the fcd_ks term"
        )
    _check_duration(cfg, where)

    ex = cfg["exploration"]
    seen = set()
    for i, ax in enumerate(ex["parameters"]):
        w = f"{where}: exploration.parameters[{i}]"
        _check_free_name(ax["name"], model, w)
        if ax["name"] == "weights":
            raise ConfigError(f"{w}: the SC weights cannot be explored on a grid")
        if ax["name"] in seen:
            raise ConfigError(f"{w}: {ax['name']!r} is explored twice; give each axis once")
        seen.add(ax["name"])
        lo, hi = bounds(ax, w)
        if ax["scale"] == "log" and lo <= 0:
            raise ConfigError(f"{w}: a log axis needs lo > 0, got lo={lo:g}")
    if ex["sampler"] == "zip" and len({ax["n"] for ax in ex["parameters"]}) > 1:
        raise ConfigError(
            f"{where}: exploration.sampler zip pairs the axes' values, so every axis needs the "
            f"same n, got {[ax['n'] for ax in ex['parameters']]}"
        )
    if ex["sampler"] in ("sobol", "lhs") and ex["n_samples"] < 1:
        raise ConfigError(
            f"{where}: exploration.sampler {ex['sampler']} needs exploration.n_samples >= 1"
        )
    nsga2_fcd = ex["sampler"] == "nsga2" and "fcd_ks" in ex["evolution"]["objectives"]
    if nsga2_fcd and not cfg["observation"]["fcd_window"]:
        raise ConfigError(
            f"{where}: exploration.evolution.objectives has fcd_ks but observation.fcd_window "
            "is 0 (no FCD); set an FCD window in TRs or drop fcd_ks from the objectives"
        )
    if ex["sampler"] not in EVOLUTIONARY and _n_points(ex) < ex["chunks"]:
        raise ConfigError(
            f"{where}: exploration.chunks = {ex['chunks']} but the space has only "
            f"{_n_points(ex)} points; use at most as many chunks as points"
        )

    names = set()
    for i, st in enumerate(cfg["refinement"]["stages"]):
        w = f"{where}: refinement.stages[{i}]"
        if st["name"] in names:
            raise ConfigError(f"{w}: stage name {st['name']!r} is used twice; names must differ")
        names.add(st["name"])
        stage_steps(st, w)
        free = set()
        for j, fp in enumerate(st["free_parameters"]):
            wj = f"{w}.free_parameters[{j}]"
            _check_free_name(fp["name"], model, wj, fp["scope"])
            if fp["name"] in free:
                raise ConfigError(f"{wj}: {fp['name']!r} is freed twice in one stage")
            free.add(fp["name"])
            lo, hi = bounds(fp, wj)
            if fp["transform"] == "log" and lo <= 0:
                raise ConfigError(f"{wj}: transform log needs lo > 0, got lo={lo:g}")
            if fp["symmetric"] and fp["scope"] != "edges":
                raise ConfigError(f"{wj}: symmetric applies to scope: edges only")
            if fp["init"] is not None and not lo <= fp["init"] <= hi:
                raise ConfigError(f"{wj}: init {fp['init']:g} is outside [{lo:g}, {hi:g}]")


def _too_short(n_tr: int, obs: Mapping) -> str | None:
    """Why ``n_tr`` simulated TRs are too few for the observation (or None)."""
    from bnmfit.observables import n_windows

    window, step = int(obs["fcd_window"] or 0), int(obs["fcd_step"])
    if window and n_windows(n_tr, window, step) < 2:
        return (
            f"{n_tr} TRs, too few for two FCD windows of {window} TRs (step {step}; "
            f"at least {window + step} TRs)"
        )
    return None


def _check_duration(cfg: Mapping, where: str) -> None:
    """With a known simulated TR (observation.tr), the simulated BOLD must hold two FCD windows.

    (Without observation.tr the TR comes from each subject's data and build_problem checks it.)
    """
    s, obs = cfg["simulation"], cfg["observation"]
    if isinstance(s["n_tr"], int) and obs["tr"]:
        why = _too_short(s["n_tr"], obs)
        if why:
            raise ConfigError(
                f"{where}: simulation.n_tr = {s['n_tr']} gives {why}; raise "
                "simulation.n_tr or shorten observation.fcd_window"
            )
    if s["duration"] is None or not obs["tr"]:
        return
    tr_ms = float(obs["tr"]) * 1000.0
    n_tr = int(s["duration"] // tr_ms)
    why = _too_short(n_tr, obs)
    if why:
        raise ConfigError(
            f"{where}: simulation.duration = {s['duration']:g} ms gives {why}; note that the "
            f"duration is the BOLD kept after the transient ({_transient_text(s)}), so "
            "lengthen simulation.duration or shorten observation.fcd_window"
        )


def _transient_text(s: Mapping) -> str:
    if s["transient_tr"] is not None:
        return f"{s['transient_tr']} TRs"
    return f"{s['transient'] or 0:g} ms"


def _n_points(ex: Mapping) -> int:
    if ex["sampler"] == "grid":
        return math.prod(int(ax["n"]) for ax in ex["parameters"])
    if ex["sampler"] == "zip":
        return int(ex["parameters"][0]["n"])
    return int(ex["n_samples"])


# =========================================================================== subjects


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    import csv

    if not path.is_file():
        raise ConfigError(
            f"{path}: expected the subjects sheet (TSV), got no such file; set `subjects:` in "
            "the config to its path"
        )
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter="\t") if any(c.strip() for c in r)]
    rows = [r for r in rows if not r[0].lstrip().startswith("#")]
    if not rows:
        raise ConfigError(
            f"{path}: the subjects sheet is empty; add a header and one row per subject"
        )
    return [h.strip() for h in rows[0]], [[c.strip() for c in r] for r in rows[1:]]


def validate_subjects(
    rows: Sequence[Mapping[str, Any]],
    *,
    where: str = "subjects",
) -> list[dict[str, Any]]:
    """Validate sheet rows (dicts; empty cells already dropped) and return them."""
    sch = schema("subjects")
    out = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        row = dict(row)
        w = f"{where} row {i + 1}" + (f" (subject {row['subject']})" if "subject" in row else "")
        if "tr" in row and isinstance(row["tr"], str):
            try:
                row["tr"] = float(row["tr"])
            except ValueError:
                raise ConfigError(
                    f"{w}: tr = {row['tr']!r}; expected a number of seconds"
                ) from None
        _check(row, sch, w)
        if row["subject"] in seen:
            raise ConfigError(
                f"{w}: subject {row['subject']!r} is listed twice (rows {seen[row['subject']]}"
                f" and {i + 1}); give every subject once"
            )
        seen[row["subject"]] = i + 1
        out.append(row)
    if not out:
        raise ConfigError(f"{where}: no subjects; add one row per subject")
    return out


def load_subjects(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate the subjects sheet: one dict per row, empty cells left out.

    The subject label is kept as text (``01`` stays ``01``); a ``sub-`` prefix is removed.
    """
    header, rows = _read_tsv(Path(path))
    if "subject" not in header:
        raise ConfigError(
            f"{path}: the subjects sheet needs a 'subject' column, got columns {', '.join(header)}"
        )
    dicts = []
    for k, r in enumerate(rows):
        if len(r) > len(header):
            raise ConfigError(
                f"{path}: row {k + 1} has {len(r)} cells but the header has {len(header)}; "
                "separate the columns by tabs"
            )
        d = {h: c for h, c in zip(header, r, strict=False) if c != ""}
        if "subject" in d and d["subject"].startswith("sub-"):
            d["subject"] = d["subject"][4:]
        dicts.append(d)
    return validate_subjects(dicts, where=str(path))


SUBJECT_FILE_COLUMNS: tuple[str, ...] = (
    "sc_weights",
    "sc_lengths",
    "bold",
    "fc",
    "labels",
    "dseg",
    "dseg_tsv",
    "validation_bold",
    "validation_fc",
    "centres",
    "maps",
)


def check_subject_files(
    rows: Sequence[Mapping[str, Any]],
    *,
    base: str | Path = ".",
    where: str = "subjects",
) -> None:
    """Every file the sheet names exists; otherwise one ConfigError listing all missing ones.

    Paths are relative to ``base`` (the working directory). A cohort with many missing files
    is reported once, not one file per run.
    """
    missing = []
    for row in rows:
        for col in SUBJECT_FILE_COLUMNS:
            if col in row and not (Path(base) / str(row[col])).is_file():
                missing.append(f"sub-{row['subject']} {col} {row[col]}")
    if missing:
        shown = short_list(missing, 20, "; ")
        raise ConfigError(
            f"{where}: {len(missing)} file(s) of the subjects sheet do not exist: {shown}; fix "
            "the paths (relative to the working directory) or remove the subjects"
        )


# =========================================================================== hashing


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def rule_config(config: Mapping[str, Any], rule: str) -> dict[str, Any]:
    """The part of ``config`` that ``rule`` depends on: :data:`RULE_SECTIONS` (of the
    refinement stages, gather_explore sees the free_parameters entry of the first stage that
    frees each parameter); for ``report`` all but resources/compute; for other rules
    (cohort_report) all of it."""
    if rule == "report":  # everything a subject page shows; not how the jobs ran
        return {k: copy.deepcopy(v) for k, v in config.items() if k not in ("resources", "compute")}
    if rule not in RULE_SECTIONS:
        return copy.deepcopy(dict(config))
    out: dict[str, Any] = {}
    for item in RULE_SECTIONS[rule]:
        if isinstance(item, str):
            if item in config:
                out[item] = copy.deepcopy(config[item])
        else:
            section, keys = item
            sub = config.get(section) or {}
            out[section] = {k: copy.deepcopy(sub[k]) for k in keys if k in sub}
    if rule == "gather_explore" and "stages" in out.get("refinement", {}):
        # the box extension needs each parameter's domain in the first stage that frees it,
        # not how the stages optimise: a learning rate, a step count or a later stage's
        # bounds rerun nothing upstream of refine
        stages, seen = [], set()
        for st in out["refinement"]["stages"]:
            first = [fp for fp in st["free_parameters"] if fp["name"] not in seen]
            seen.update(fp["name"] for fp in first)
            if first:
                stages.append({"name": st["name"], "free_parameters": first})
        out["refinement"]["stages"] = stages
    return out
