"""The workflow configuration: load, validate, and turn into library objects.

* :func:`load_config` / :func:`validate_config` — YAML → a dict validated against
  ``workflow/schemas/config.schema.yaml`` (JSON schema 2020-12) with every default filled in,
  plus the checks a schema cannot express (parameter names of the chosen model, bounds,
  the loss expression). Errors are :class:`~bnmfit.errors.ConfigError` with a one-line
  message that names the key, what came, and what is allowed.
* :func:`load_subjects` — the subjects sheet, each row validated against
  ``subjects.schema.yaml``.
* :func:`parse_loss` — the small parser of loss expressions such as
  ``0.5 * fcd_ks(fcd, empirical_fcd) + rmse(fc, empirical_fc)`` (a tokenizer and a
  recursive-descent parser over a fixed set of functions; nothing is ever evaluated by
  Python).
* ``build_*`` — the library objects of one subject: :class:`~bnmfit.problem.Problem`,
  :class:`~bnmfit.explore.Space`, the :class:`~bnmfit.fit.Stage` list.
* :func:`rule_config` — the part of the configuration one workflow rule depends on (so
  that changing, say, a refinement setting reruns only the rules downstream of it).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bnmfit.errors import ConfigError, DataError, short_list

__all__ = [
    "NETWORK_PARAMETERS",
    "RULE_SECTIONS",
    "LossSpec",
    "build_connectome",
    "build_model",
    "build_observation",
    "build_problem",
    "problem_from_files",
    "build_space",
    "build_spec",
    "build_stages",
    "check_subject_files",
    "config_hash",
    "load_config",
    "load_subjects",
    "load_yaml",
    "loss_spec",
    "noise_seeds",
    "parse_loss",
    "rule_config",
    "schema_path",
    "stage_steps",
    "validate_config",
    "validate_subjects",
]

#: free-parameter names that belong to the network, not to the model.
NETWORK_PARAMETERS = ("G", "sigma", "weights")

#: the configuration each rule depends on: top-level sections, or (section, keys) pairs.
RULE_SECTIONS: dict[str, tuple] = {
    "ingest_connectome": ("connectome",),
    "empirical_fc": ("bold", ("observation", ("fcd_window", "fcd_step"))),
    "explore": (
        "bold", "model", "coupling", "noise", "simulation", "observation", "loss",
        "exploration", "compute",
    ),
    "gather_explore": ("exploration", ("refinement", ("starts", "min_separation"))),
    "refine": (
        "bold", "model", "coupling", "noise", "simulation", "observation", "loss",
        "refinement", "compute",
    ),
}


# =========================================================================== files


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def schema_path(name: str) -> Path:
    """``workflow/schemas/<name>.schema.yaml`` of the source tree bnmfit is imported from."""
    p = _repo_root() / "workflow" / "schemas" / f"{name}.schema.yaml"
    if not p.is_file():
        raise ConfigError(
            f"schema {p} not found: bnmfit.config needs the workflow's schemas, so run "
            "from a clone of the repository (pip install -e .)"
        )
    return p


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


def _schema(name: str, path: str | Path | None = None) -> dict:
    key = str(path) if path else name
    if key not in _SCHEMAS:
        _SCHEMAS[key] = load_yaml(path or schema_path(name))
    return _SCHEMAS[key]


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
            close = _close(k, allowed)
            hints.append(f"{k!r}" + (f" (did you mean {close!r}?)" if close else ""))
        inside = f"in {key}" if key else "at the top level"
        return (
            f"{where}: unknown key {', '.join(hints)} {inside}; allowed keys: "
            f"{', '.join(allowed)}"
        )
    if v == "enum":
        allowed = ", ".join("null" if x is None else str(x) for x in error.validator_value)
        close = _close(inst, error.validator_value)
        hint = f" (did you mean {close!r}?)" if close else ""
        return f"{at} = {inst!r} is not allowed{hint}; allowed values: {allowed}"
    if v == "const":
        return f"{at} = {inst!r}; expected {error.validator_value!r}"
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{at}: expected {want}, got {inst!r} ({type(inst).__name__})"
    if v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        rel = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=",
               "exclusiveMaximum": "<"}[v]
        hint = ""
        if v == "maximum" and key.split(".")[-1] in ("tr", "default_tr") \
                and isinstance(inst, (int, float)):
            hint = (f" (the TR in seconds): {inst:g} is almost certainly milliseconds; give "
                    f"it in seconds ({inst / 1000:g})")
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
    more = f" (and {len(flat) - 1} more error{'s' if len(flat) > 2 else ''})" if len(flat) > 1 \
        else ""
    raise ConfigError(_describe(first, where, schema) + more)


def validate_config(
    config: Mapping[str, Any] | None,
    *,
    schema: str | Path | None = None,
    where: str = "config",
) -> dict[str, Any]:
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
    sch = _schema("config", schema)
    cfg = copy.deepcopy(dict(config))
    _check(cfg, sch, where)
    _fill_defaults(cfg, sch, sch)
    _check(cfg, sch, where)
    _semantic_checks(cfg, where)
    return cfg


def load_config(path: str | Path, *, schema: str | Path | None = None) -> dict[str, Any]:
    """Read and validate a YAML configuration file (see :func:`validate_config`)."""
    return validate_config(load_yaml(path), schema=schema, where=str(path))


def _close(name: str, options) -> str | None:
    """The allowed name closest to a misspelt one (case differences first), or None."""
    options = [str(o) for o in options]
    for o in options:
        if o.lower() == str(name).lower():
            return o
    close = difflib.get_close_matches(str(name), options, n=1)
    return close[0] if close else None


def _model_parameter_names(name: str) -> tuple[str, ...]:
    from bnmfit.models import MODELS

    return MODELS[name].parameter_names()


def _check_free_name(name: str, model: str, where: str, scope: str | None = None) -> None:
    allowed = NETWORK_PARAMETERS + _model_parameter_names(model)
    if name not in allowed:
        close = _close(name, allowed)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ConfigError(
            f"{where}: {name!r} is not a parameter of {model}{hint}; choose from "
            f"{', '.join(allowed)}"
        )
    if scope is None:
        return
    if name == "weights" and scope != "edges":
        raise ConfigError(f"{where}: the SC weights are fitted with scope: edges, got {scope}")
    if scope == "edges" and name != "weights":
        raise ConfigError(f"{where}: scope edges is only for name: weights, got {name!r}")
    if name in ("G", "sigma") and scope != "global":
        raise ConfigError(f"{where}: {name} is a single network value; use scope: global")


def _bounds(item: Mapping, where: str) -> tuple[float, float]:
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
    """A stage's number of steps (``steps``, or its alias ``n_epochs``; default 100)."""
    steps, epochs = stage.get("steps"), stage.get("n_epochs")
    if steps is not None and epochs is not None and steps != epochs:
        raise ConfigError(
            f"{where}: steps ({steps}) and n_epochs ({epochs}) disagree; give one of them"
        )
    return int(steps if steps is not None else epochs if epochs is not None else 100)


def _semantic_checks(cfg: dict, where: str) -> None:
    from bnmfit.models import MODELS

    model = cfg["model"]["name"]
    max_dt = MODELS[model].max_dt
    dt = cfg["simulation"]["dt"]
    if dt > max_dt:
        raise ConfigError(
            f"{where}: simulation.dt = {dt:g} ms exceeds the largest stable step of {model} "
            f"({max_dt:g} ms); lower dt (it must also divide the TR)"
        )
    bp = cfg["bold"]["bandpass"]
    if bp is not None and not bp[0] < bp[1]:
        raise ConfigError(f"{where}: bold.bandpass = {bp}; expected [low, high] with low < high")
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
        lo, hi = _bounds(ax, w)
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
    if _n_points(ex) < ex["chunks"]:
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
            lo, hi = _bounds(fp, wj)
            if fp["transform"] == "log" and lo <= 0:
                raise ConfigError(f"{wj}: transform log needs lo > 0, got lo={lo:g}")
            if fp.get("symmetric") and fp["scope"] != "edges":
                raise ConfigError(f"{wj}: symmetric applies to scope: edges only")
            if fp["init"] is not None and not lo <= fp["init"] <= hi:
                raise ConfigError(f"{wj}: init {fp['init']:g} is outside [{lo:g}, {hi:g}]")


def _too_short(n_tr: int, obs: Mapping) -> str | None:
    """Why ``n_tr`` simulated TRs are too few for the observation (or None)."""
    from bnmfit.observables import n_windows

    window, step = int(obs["fcd_window"] or 0), int(obs["fcd_step"])
    if window and n_windows(n_tr, window, step) < 2:
        return (f"{n_tr} TRs, too few for two FCD windows of {window} TRs (step {step}; "
                f"at least {window + step} TRs)")
    return None


def _check_duration(cfg: Mapping, where: str) -> None:
    """With a known simulated TR (observation.tr), the simulated BOLD must hold two FCD windows.

    (Without observation.tr the TR comes from each subject's data and build_problem checks it.)
    """
    s, obs = cfg["simulation"], cfg["observation"]
    if s["duration"] is None or not obs["tr"]:
        return
    tr_ms = float(obs["tr"]) * 1000.0
    n_tr = int(s["duration"] // tr_ms)
    why = _too_short(n_tr, obs)
    if why:
        raise ConfigError(
            f"{where}: simulation.duration = {s['duration']:g} ms gives {why}; note that the "
            f"duration is the BOLD kept after the transient ({s['transient']:g} ms), so "
            "lengthen simulation.duration or shorten observation.fcd_window"
        )


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
        raise ConfigError(f"{path}: the subjects sheet is empty; add a header and one row "
                          "per subject")
    return [h.strip() for h in rows[0]], [[c.strip() for c in r] for r in rows[1:]]


def validate_subjects(
    rows: Sequence[Mapping[str, Any]], *, schema: str | Path | None = None,
    where: str = "subjects",
) -> list[dict[str, Any]]:
    """Validate sheet rows (dicts; empty cells already dropped) and return them."""
    sch = _schema("subjects", schema)
    out = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        row = dict(row)
        w = f"{where} row {i + 1}" + (f" (subject {row['subject']})" if "subject" in row else "")
        if "tr" in row and isinstance(row["tr"], str):
            try:
                row["tr"] = float(row["tr"])
            except ValueError:
                raise ConfigError(f"{w}: tr = {row['tr']!r}; expected a number of seconds") \
                    from None
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


def load_subjects(path: str | Path, *, schema: str | Path | None = None) -> list[dict[str, Any]]:
    """Read and validate the subjects sheet: one dict per row, empty cells left out.

    The subject label is kept as text (``01`` stays ``01``); a ``sub-`` prefix is removed.
    """
    header, rows = _read_tsv(Path(path))
    if "subject" not in header:
        raise ConfigError(f"{path}: the subjects sheet needs a 'subject' column, got columns "
                          f"{', '.join(header)}")
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
    return validate_subjects(dicts, schema=schema, where=str(path))


SUBJECT_FILE_COLUMNS: tuple[str, ...] = (
    "sc_weights", "sc_lengths", "bold", "fc", "labels", "dseg", "dseg_tsv",
)


def check_subject_files(
    rows: Sequence[Mapping[str, Any]], *, base: str | Path = ".", where: str = "subjects",
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
    """The part of ``config`` that ``rule`` depends on: :data:`RULE_SECTIONS`; for
    ``report`` all but resources/compute; for other rules (cohort_report) all of it."""
    if rule == "report":  # everything a subject page shows; not how the jobs ran
        return {k: copy.deepcopy(v) for k, v in config.items()
                if k not in ("resources", "compute")}
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
    return out


# =========================================================================== the loss


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A loss as named terms of :data:`bnmfit.losses.LOSSES` plus a constant offset.

    The optimised objective is ``Σ weight · term``; ``offset`` is added back to every loss
    value written to results, so they equal the configured expression.
    """

    terms: tuple[tuple[str, float], ...]
    offset: float = 0.0
    expression: str | None = None

    def describe(self) -> str:
        parts = [f"{w:g}·{n}" for n, w in self.terms]
        if self.offset:
            parts.append(f"{self.offset:g}")
        return " + ".join(parts)


# function name → (arguments (either order), the linear form it stands for)
_FC = ("fc", "empirical_fc")
_FCD = ("fcd", "empirical_fcd")
_FUNCTIONS: dict[str, tuple[tuple[str, str], float, dict[str, float]]] = {
    "correlation": (_FC, 1.0, {"fc_corr": -1.0}),
    "corr": (_FC, 1.0, {"fc_corr": -1.0}),
    "pearson": (_FC, 1.0, {"fc_corr": -1.0}),
    "fc_corr": (_FC, 0.0, {"fc_corr": 1.0}),
    "rmse": (_FC, 0.0, {"fc_rmse": 1.0}),
    "fc_rmse": (_FC, 0.0, {"fc_rmse": 1.0}),
    "fcd_ks": (_FCD, 0.0, {"fcd_ks": 1.0}),
    "ks": (_FCD, 0.0, {"fcd_ks": 1.0}),
}
_OBSERVABLES = ("fc", "empirical_fc", "fcd", "empirical_fcd")
_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>[-+*/(),]))"
)


@dataclasses.dataclass
class _Lin:
    const: float
    coef: dict[str, float]

    @property
    def is_const(self) -> bool:
        return not any(self.coef.values())

    def scale(self, s: float) -> _Lin:
        return _Lin(self.const * s, {k: v * s for k, v in self.coef.items()})

    def add(self, other: _Lin, sign: float = 1.0) -> _Lin:
        coef = dict(self.coef)
        for k, v in other.coef.items():
            coef[k] = coef.get(k, 0.0) + sign * v
        return _Lin(self.const + sign * other.const, coef)


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ;
    unary := ('+'|'-') unary | NUMBER | NAME '(' NAME ',' NAME ')' | '(' expr ')'"""

    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        text_s = text.rstrip()
        while pos < len(text_s):
            m = _TOKEN.match(text_s, pos)
            if m is None or m.end() == pos:
                bad = text_s[pos:].lstrip()[:1]
                col = len(text_s) - len(text_s[pos:].lstrip()) + 1
                self.fail(f"unexpected character {bad!r} at column {col}")
            kind = m.lastgroup
            self.toks.append((kind, m.group(kind), m.start(kind) + 1))
            pos = m.end()
        self.i = 0

    def fail(self, msg: str):
        raise ConfigError(f"{self.where}: {msg} in {self.text!r}")

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "", len(self.text) + 1)

    def take(self, value: str | None = None, kind: str | None = None):
        tok = self.peek()
        if (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            want = repr(value) if value else kind
            got = "the end" if tok[0] == "end" else repr(tok[1])
            self.fail(f"expected {want} at column {tok[2]}, got {got}")
        self.i += 1
        return tok

    def parse(self) -> _Lin:
        if not self.toks:
            self.fail("the loss expression is empty")
        out = self.expr()
        if self.peek()[0] != "end":
            tok = self.peek()
            self.fail(f"unexpected {tok[1]!r} at column {tok[2]}")
        return out

    def expr(self) -> _Lin:
        out = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            out = out.add(self.term(), 1.0 if op == "+" else -1.0)
        return out

    def term(self) -> _Lin:
        out = self.unary()
        while self.peek()[1] in ("*", "/"):
            _, op, col = self.take()
            rhs = self.unary()
            if op == "*":
                if out.is_const:
                    out = rhs.scale(out.const)
                elif rhs.is_const:
                    out = out.scale(rhs.const)
                else:
                    self.fail(f"product of two loss terms at column {col}: the loss must be a "
                              "linear combination (number * term)")
            else:
                if not rhs.is_const:
                    self.fail(f"division by a loss term at column {col}: divide by numbers only")
                if rhs.const == 0:
                    self.fail(f"division by zero at column {col}")
                out = out.scale(1.0 / rhs.const)
        return out

    def unary(self) -> _Lin:
        kind, value, col = self.peek()
        if value in ("+", "-"):
            self.take()
            inner = self.unary()
            return inner if value == "+" else inner.scale(-1.0)
        if kind == "num":
            self.take()
            return _Lin(float(value), {})
        if value == "(":
            self.take()
            inner = self.expr()
            self.take(")")
            return inner
        if kind == "name":
            return self.call()
        got = "the end" if kind == "end" else repr(value)
        self.fail(f"expected a number, a function or '(' at column {col}, got {got}")

    def call(self) -> _Lin:
        _, name, col = self.take(kind="name")
        if name in _OBSERVABLES:
            self.fail(
                f"the observable {name!r} at column {col} must be an argument of a function: "
                f"{', '.join(_FUNCTIONS)}"
            )
        if name not in _FUNCTIONS:
            close = _close(name, _FUNCTIONS)
            hint = f" (did you mean {close!r}?)" if close else ""
            self.fail(f"unknown function {name!r} at column {col}{hint}; use one of "
                      f"{', '.join(_FUNCTIONS)}")
        self.take("(")
        args = []
        while True:
            _, arg, acol = self.take(kind="name")
            if arg not in _OBSERVABLES:
                self.fail(f"unknown observable {arg!r} at column {acol}; use "
                          f"{', '.join(_OBSERVABLES)}")
            args.append(arg)
            if self.peek()[1] == ",":
                self.take(",")
                continue
            break
        self.take(")")
        want, const, coef = _FUNCTIONS[name]
        if len(args) != 2 or set(args) != set(want):
            self.fail(f"{name}() at column {col} compares {' and '.join(want)}, got "
                      f"{', '.join(args)}; write {name}({', '.join(want)})")
        return _Lin(const, dict(coef))


def parse_loss(expression: str, *, where: str = "loss.expression") -> LossSpec:
    """Parse a loss expression into named terms with weights and a constant offset.

    ``correlation(fc, empirical_fc)`` is 1 − fc_corr, so ``1 - correlation(fc, empirical_fc)``
    is exactly the term fc_corr; ``rmse(fc, empirical_fc)`` is fc_rmse; ``fcd_ks(fcd,
    empirical_fcd)`` is fcd_ks. Numbers, + − * /, unary minus and parentheses combine them;
    the result must be linear in the terms with non-negative weights (a loss is minimised).

    Raises:
        ConfigError: a syntax error (with its column), an unknown function or observable,
            a product of two terms, a negative net weight, or no term at all.
    """
    if not isinstance(expression, str):
        raise ConfigError(f"{where}: expected a string, got {expression!r}")
    lin = _Parser(expression, where).parse()
    order = ("fc_corr", "fc_rmse", "fcd_ks")
    terms = []
    for name in order:
        w = lin.coef.get(name, 0.0)
        if abs(w) < 1e-12:
            continue
        if w < 0:
            fix = {"fc_corr": "1 - correlation(fc, empirical_fc)"}.get(name, f"+{name}(...)")
            raise ConfigError(
                f"{where}: {expression!r} gives the term {name} the weight {w:g}; a loss is "
                f"minimised, so every term needs a weight >= 0 (e.g. write {fix})"
            )
        terms.append((name, float(w)))
    if not terms:
        raise ConfigError(f"{where}: {expression!r} has no loss term (it is the constant "
                          f"{lin.const:g}); use correlation, rmse or fcd_ks")
    return LossSpec(tuple(terms), float(lin.const), expression)


def loss_spec(config: Mapping[str, Any], *, where: str = "config") -> LossSpec:
    """The loss of a validated config: its expression, its terms, or fc_corr."""
    loss = config.get("loss") or {}
    expr, terms = loss.get("expression"), loss.get("terms")
    if expr is not None and terms is not None:
        raise ConfigError(f"{where}: loss has both expression and terms; give one of them")
    if expr is not None:
        return parse_loss(expr, where=f"{where}: loss.expression")
    if terms is not None:
        kept = tuple((k, float(v)) for k, v in terms.items() if v)
        if not kept:
            raise ConfigError(f"{where}: loss.terms are all zero; give a positive weight")
        return LossSpec(kept)
    return LossSpec((("fc_corr", 1.0),))


# =========================================================================== builders


def noise_seeds(config: Mapping[str, Any]) -> list[int]:
    """The exploration noise seeds: noise.seed, noise.seed + 1, ..."""
    base = int(config["noise"]["seed"])
    return [base + r for r in range(int(config["exploration"]["seeds"]))]


def build_connectome(config: Mapping[str, Any], weights, lengths, labels):
    """A normalised :class:`~bnmfit.connectome.Connectome` from raw matrices."""
    from bnmfit.connectome import Connectome

    c = config["connectome"]
    return Connectome.from_arrays(
        weights, lengths, labels, normalise=c["normalise"], symmetrise=c["symmetrise"],
        isolated=c.get("isolated", "warn"),
    )


def build_observation(config: Mapping[str, Any], tr: float):
    """How simulated BOLD (TR ``tr`` s) becomes FC/FCD, as the empirical BOLD did."""
    from bnmfit.problem import Observation

    b, o = config["bold"], config["observation"]
    return Observation(
        tr=float(tr),
        discard=0,
        detrend=bool(b["detrend"]),
        bandpass=tuple(b["bandpass"]) if b["bandpass"] is not None else None,
        zscore=True,
        fcd_window=int(o["fcd_window"]),
        fcd_step=int(o["fcd_step"]),
    )


def build_spec(config: Mapping[str, Any], tr: float, n_tr: int | None, max_delay: int = 0):
    """The :class:`~bnmfit.simulate.SimSpec`: ``n_tr`` TRs of ``tr`` s (the empirical length
    after discard) unless ``simulation.duration`` sets another length."""
    from bnmfit.simulate import SimSpec

    s, n = config["simulation"], config["noise"]
    tr_ms = float(tr) * 1000.0
    if s["duration"] is not None:
        n_tr = int(s["duration"] // tr_ms)
        if n_tr < 1:
            raise ConfigError(
                f"simulation.duration = {s['duration']:g} ms is shorter than one TR "
                f"({tr_ms:g} ms)"
            )
    elif n_tr is None:
        raise ConfigError(
            "the subject has no BOLD time series (only an FC), so the simulated length is "
            "unknown: set simulation.duration (ms)"
        )
    dt = float(s["dt"])
    ratio = tr_ms / dt
    if abs(ratio - round(ratio)) > 1e-6 * ratio or round(ratio) < 1:
        ok = [d for d in range(1, int(dt) + 1) if abs(tr_ms / d - round(tr_ms / d)) < 1e-9]
        hint = f" (e.g. {', '.join(str(d) for d in ok[-3:])} ms)" if ok else ""
        raise ConfigError(
            f"simulation.dt = {dt:g} ms does not divide the TR ({tr_ms:g} ms): choose a dt "
            f"that divides it{hint}"
        )
    return SimSpec(
        dt=dt,
        tr=tr_ms,
        n_tr=int(n_tr),
        n_transient=int(s["transient"] // tr_ms),
        integrator=s["integrator"],
        noise=n["kind"],
        noise_tau=float(n["tau"]),
        coupling=config["coupling"]["function"],
        max_delay=int(max_delay),
        checkpoint=bool(s["checkpoint"]),
        heun_coupling=s["heun_coupling"],
        unroll=int(s["unroll"]),
        bold_dt=None if s["bold_dt"] is None else float(s["bold_dt"]),
    )


def build_model(config: Mapping[str, Any], n_regions: int):
    """The configured neural mass; per-region parameter lists must have one value per region."""
    import numpy as np

    from bnmfit.models import get_model

    m = config["model"]
    params = {}
    for k, v in (m.get("parameters") or {}).items():
        if isinstance(v, list):
            if len(v) != n_regions:
                raise ConfigError(
                    f"model.parameters.{k} has {len(v)} values but the connectome has "
                    f"{n_regions} regions; give one value, or one per region"
                )
            v = np.asarray(v, dtype=float)
        params[k] = v
    return get_model(m["name"], **params)


def build_problem(
    config: Mapping[str, Any],
    *,
    weights,
    lengths,
    fc,
    fcd=None,
    tr: float,
    n_tr: int | None,
):
    """One subject's :class:`~bnmfit.problem.Problem` from its (normalised) connectome and
    empirical observables.

    Args:
        weights, lengths: (N, N) from ``sub-X_connectome.h5``.
        fc, fcd: the empirical FC (and FCD) from ``sub-X_desc-empirical_fc.h5``.
        tr: the subject's TR in s (``observation.tr`` overrides it for the simulation).
        n_tr: the empirical TRs after discard (the simulated length unless
            ``simulation.duration`` is set); None when only an FC was given.
    """
    import jax.numpy as jnp
    import numpy as np

    from bnmfit.connectome import delay_steps
    from bnmfit.losses import Observed
    from bnmfit.problem import Problem

    dtype = jnp.float64 if config["simulation"]["precision"] == "float64" else jnp.float32
    weights = np.asarray(weights, dtype=np.float64)
    n = weights.shape[0]
    obs_tr = config["observation"]["tr"] or tr
    if obs_tr is None:
        raise ConfigError("no TR for the simulated BOLD: set observation.tr (s)")
    sim_tr = float(obs_tr)
    speed = config["coupling"]["speed"]
    delays, max_delay = None, 0
    if speed is not None and lengths is not None and np.any(np.asarray(lengths) > 0):
        steps = delay_steps(np.asarray(lengths, dtype=np.float64) / float(speed),
                            config["simulation"]["dt"])
        max_delay = int(steps.max())
        if max_delay > 0:
            delays = jnp.asarray(steps)
    if config["observation"]["tr"] and tr and n_tr is not None \
            and config["simulation"]["duration"] is None:
        n_tr = int(n_tr * float(tr) // sim_tr)  # the same duration at another TR
    spec = build_spec(config, sim_tr, n_tr, max_delay)
    observation = build_observation(config, sim_tr)
    if observation.fcd_window:
        from bnmfit.observables import n_windows

        if n_windows(spec.n_tr, observation.fcd_window, observation.fcd_step) < 2:
            raise ConfigError(
                f"the simulation returns {spec.n_tr} TRs, too few for two FCD windows of "
                f"{observation.fcd_window} TRs (step {observation.fcd_step}); lengthen "
                "simulation.duration (the BOLD kept after the transient) or shorten "
                "observation.fcd_window"
            )
    spec_loss = loss_spec(config)
    if fcd is None and any(t == "fcd_ks" for t, _ in spec_loss.terms):
        raise DataError(
            "the loss uses fcd_ks but the subject has no empirical FCD (only an FC was given, "
            "or observation.fcd_window is 0); drop the fcd_ks term for this cohort"
        )
    empirical = Observed(
        jnp.asarray(fc, dtype),
        jnp.asarray(fcd, dtype) if (fcd is not None and observation.fcd_window) else None,
    )
    if empirical.fcd is None and observation.fcd_window:
        observation = dataclasses.replace(observation, fcd_window=0)
    return Problem(
        model=build_model(config, n),
        weights=jnp.asarray(weights, dtype),
        spec=spec,
        observation=observation,
        empirical=empirical,
        loss_weights=spec_loss.terms,
        G=float(config["coupling"]["G"]),
        sigma=float(config["noise"]["sigma"]),
        delays=delays,
        ks_smooth=config["loss"]["ks_smooth"],
    )


def problem_from_files(config: Mapping[str, Any], connectome_h5, empirical_h5):
    """:func:`build_problem` from ``sub-X_connectome.h5`` and ``sub-X_desc-empirical_fc.h5``."""
    from bnmfit.io import read_h5

    conn, _ = read_h5(connectome_h5)
    emp, attrs = read_h5(empirical_h5)
    tr = attrs.get("tr")
    tr = None if tr is None or (isinstance(tr, float) and math.isnan(tr)) else float(tr)
    n_tr = attrs.get("n_tr")
    n_tr = None if n_tr is None or int(n_tr) < 0 else int(n_tr)
    for name, d, keys in ((connectome_h5, conn, ("weights", "lengths")),
                          (empirical_h5, emp, ("fc",))):
        for k in keys:
            if d.get(k) is None:
                raise DataError(f"{name}: expected the dataset {k!r}, got none; re-run the "
                                "step that writes this file")
    return build_problem(config, weights=conn["weights"], lengths=conn["lengths"],
                         fc=emp["fc"], fcd=emp.get("fcd"), tr=tr, n_tr=n_tr)


def _axis_bounds(ax: Mapping) -> tuple[float, float]:
    return _bounds(ax, "exploration axis")


def build_space(config: Mapping[str, Any]):
    """The exploration :class:`~bnmfit.explore.Space`."""
    from bnmfit import explore

    ex = config["exploration"]
    axes = []
    for ax in ex["parameters"]:
        lo, hi = _axis_bounds(ax)
        axes.append(explore.Axis(ax["name"], lo, hi, n=int(ax["n"]), scale=ax["scale"]))
    return explore.Space(
        tuple(axes), sampler=ex["sampler"], n_samples=int(ex["n_samples"]),
        seed=int(config["noise"]["seed"]),
    )


def build_stages(config: Mapping[str, Any]) -> list:
    """The refinement :class:`~bnmfit.fit.Stage` list, in order."""
    from bnmfit import fit
    from bnmfit.params import FreeParameter

    stages = []
    for i, st in enumerate(config["refinement"]["stages"]):
        free = []
        for fp in st["free_parameters"]:
            lo, hi = _bounds(fp, f"refinement.stages[{i}]")
            free.append(FreeParameter(
                fp["name"], lo, hi, scope=fp["scope"], transform=fp["transform"],
                init=fp["init"], symmetric=bool(fp.get("symmetric", False)),
            ))
        stages.append(fit.Stage(
            name=st["name"],
            free=tuple(free),
            optimizer=st["optimizer"],
            learning_rate=float(st["learning_rate"]),
            steps=stage_steps(st, f"refinement.stages[{i}]"),
            n_noise=int(st["n_noise"]),
            fresh_noise=bool(st["fresh_noise"]),
            clip_norm=st["clip_norm"],
            schedule=st["schedule"],
            patience=int(st["patience"]),
            min_delta=float(st["min_delta"]),
            l2_regional=float(st["l2_regional"]),
            noise_average=st["noise_average"],
        ))
    return stages
