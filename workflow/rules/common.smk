# Configuration, subjects sheet, and the helpers the rules use. No rules here.

import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("8.20")

# The library of this checkout comes first (also inside a conda env without bnmfit).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from bnmfit.config import (  # noqa: E402
    check_subject_files,
    load_subjects,
    rule_config,
    validate_config,
)
from bnmfit.errors import BnmfitError  # noqa: E402
from bnmfit.explore import EVOLUTIONARY  # noqa: E402
from bnmfit.io import sidecar_path  # noqa: E402
from bnmfit.report import COHORT_FIGURES, SUBJECT_FIGURES  # noqa: E402


# The documented recipe of this checkout is the base wherever the working directory is; a
# --configfile (or --config) given to snakemake overrides only the keys it names (a deep
# merge: nested sections key by key, lists replaced whole). Paths in any config are relative
# to the working directory.
configfile: Path(workflow.basedir) / "config" / "config.yaml"


report: "../report/workflow.rst"


# ---------------------------------------------------------------- validated config + sheet

try:
    _resolved = validate_config(config, where="config")
    _rows = load_subjects(_resolved["subjects"])
    check_subject_files(_rows, where=_resolved["subjects"])
    SUBJECTS = {row["subject"]: row for row in _rows}
except BnmfitError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None
config.clear()
config.update(_resolved)
SUBJECT_IDS = list(SUBJECTS)
# a cmaes/nsga2 search runs all its generations in one job
_EX = config["exploration"]
N_CHUNKS = 1 if _EX["sampler"] in EVOLUTIONARY else int(_EX["chunks"])


wildcard_constraints:
    subject="|".join(re.escape(s) for s in SUBJECT_IDS),
    chunk=r"\d+",


# ---------------------------------------------------------------- paths

SUB = "results/sub-{subject}/sub-{subject}"


def script_path(name):
    """The script, relative to the working directory (stable when both move together)."""
    return os.path.relpath(Path(workflow.basedir) / "scripts" / name)


def heterogeneity_used():
    """(maps, groupings) that the refinement stages name, in order of appearance."""
    free = [fp for st in config["refinement"]["stages"] for fp in st["free_parameters"]]
    maps = [m for fp in free if fp["scope"] == "map" for m in fp["maps"]]
    groups = [fp["groups"] for fp in free if fp["scope"] == "group"]
    return list(dict.fromkeys(maps)), list(dict.fromkeys(groups))


def final_outputs():
    """Every result, the per-subject intermediates too: a deleted or invalid one is rebuilt
    by the plain command (and everything after it, being older), not skipped as a mere
    intermediate of a report that still exists."""
    per_subject = [
        f"{SUB}_connectome.h5",
        f"{SUB}_desc-empirical_fc.h5",
        f"{SUB}_desc-empirical_qc.json",
        f"{SUB}_explore.h5",
        f"{SUB}_desc-fitted_params.json",
        f"{SUB}_fit.h5",
        f"{SUB}_report.html",
    ]
    if any(heterogeneity_used()):
        per_subject.append(f"{SUB}_desc-maps.tsv")
    chunks = "results/sub-{subject}/explore/chunk-{chunk}.h5"
    return (
        [
            "results/cohort_report.html",
            "results/cohort_params.tsv",
            "results/dataset_description.json",
            "results/config.yaml",
        ]
        + expand(per_subject, subject=SUBJECT_IDS)
        + expand(chunks, subject=SUBJECT_IDS, chunk=range(N_CHUNKS))
    )


_LOOK_ONLY = re.compile(
    r"^(-[a-zA-Z]*[ntSD][a-zA-Z]*|--(dry-?run|touch|lint|list.*|l[cipt]|summary|"
    r"detailed-summary|report.*|unlock|dag|d3dag|rulegraph|filegraph|cleanup-metadata|"
    r"delete-.*|containerize|archive|export-.*|generate-unit-tests|print-compilation))$"
)


def remove_unreadable_results():
    """Result files that cannot be opened (truncated, emptied) are removed before Snakemake
    plans, so that the plain command rebuilds them, and everything after them, like missing
    ones (Snakemake itself only looks at times and the checksums of small inputs). A dry
    run, --touch, --lint and the like only name them; jobs on other hosts skip the check."""
    from bnmfit.results import unreadable

    if not workflow.is_main_process:
        return
    look_only = any(_LOOK_ONLY.match(a) for a in sys.argv[1:])
    paths = [p for p in final_outputs() if p.startswith("results/sub-")]
    for path, why in unreadable(paths):
        if look_only:
            print(f"bnmfit: {path} is unreadable ({why}); a run removes and rebuilds it",
                  file=sys.stderr)
        else:
            os.remove(path)
            print(f"bnmfit: {path} was unreadable ({why}): removed, to be rebuilt",
                  file=sys.stderr)


remove_unreadable_results()


def stale_pages(wildcards):
    """The pages that show a subject's results (its report and figures, the cohort page,
    table and figures), quoted for a shell: every step that (re)writes one of the subject's
    results removes them first, so that no page outlives, or hides the failure of, what it
    shows; the report rules write them anew."""
    sub = f"results/sub-{wildcards.subject}"
    pages = [f"{sub}/sub-{wildcards.subject}_report.html", "results/cohort_report.html",
             "results/cohort_params.tsv"]
    pages += [f"{sub}/figures/sub-{wildcards.subject}_desc-{n}_figure.png"
              for n in SUBJECT_FIGURES]
    pages += [f"results/figures/cohort_desc-{n}_figure.png" for n in COHORT_FIGURES]
    return " ".join(shlex.quote(p) for p in pages)


def benchmark_options(wildcards):
    """The report's wall times: the explore and refine jobs' Snakemake benchmark files
    (read if present; result files hold no timings, so that they are byte-reproducible)."""
    bench = f"logs/benchmarks/sub-{wildcards.subject}"
    files = [("explore", f"{bench}/explore_chunk-{k}.tsv") for k in range(N_CHUNKS)]
    files.append(("refine", f"{bench}/refine.tsv"))
    return " ".join(f"--benchmark {step} {shlex.quote(p)}" for step, p in files)


def explore_chunks(wildcards):
    return expand(
        "results/sub-{subject}/explore/chunk-{chunk}.h5",
        subject=wildcards.subject,
        chunk=range(N_CHUNKS),
    )


def subject_figure_outputs():
    return {
        f"fig_{name}": report(
            f"results/sub-{{subject}}/figures/sub-{{subject}}_desc-{name}_figure.png",
            caption=caption("subject", name),
            category="Subjects",
            subcategory="sub-{subject}",
            labels={"subject": "sub-{subject}", "figure": name},
        )
        for name in SUBJECT_FIGURES
    }


def cohort_figure_outputs():
    return {
        f"fig_{name}": report(
            f"results/figures/cohort_desc-{name}_figure.png",
            caption=caption("cohort", name),
            category="Cohort",
            labels={"figure": name},
        )
        for name in COHORT_FIGURES
    }


def caption(kind, name):
    """The caption file of a figure (relative to workflow/rules/), or the generic one."""
    own = Path(workflow.basedir) / "workflow" / "report" / f"{kind}_{name}.rst"
    return f"../report/{own.name}" if own.is_file() else f"../report/{kind}_figure.rst"


# ---------------------------------------------------------------- params


def config_json(rule):
    """The part of the resolved config a rule depends on, as canonical JSON."""
    return json.dumps(rule_config(config, rule), sort_keys=True, separators=(",", ":"))


def _opt(flag, value):
    return f"{flag} {shlex.quote(str(value))}"


def _resources(rule):
    res = dict(config["resources"]["default"])
    res.update(config["resources"].get(rule) or {})
    return res


def rule_threads(rule):
    return int(_resources(rule).get("threads", 1))


def rule_resources(rule, gpu=False):
    res = _resources(rule)
    out = {"mem_mb": int(res.get("mem_mb", 2000)), "runtime": int(res.get("runtime", 15))}
    if gpu:
        out["gpu"] = int(config["resources"]["gpu"])
    return out


# ---------------------------------------------------------------- per-subject inputs


def connectome_inputs(wildcards):
    row = SUBJECTS[wildcards.subject]
    out = {"weights": row["sc_weights"]}
    if "sc_lengths" in row:
        out["lengths"] = row["sc_lengths"]
    for col in ("labels", "centres", "dseg", "dseg_tsv"):  # centres: also from a dseg
        if col in row:
            out[col] = row[col]
    return out


def connectome_options(wildcards, input):
    row = SUBJECTS[wildcards.subject]
    c = config["connectome"]
    opts = [
        _opt("--normalise", c["normalise"]),
        "--symmetrise" if c["symmetrise"] else "--no-symmetrise",
        _opt("--missing", c["missing"]),
        _opt("--isolated", c["isolated"]),
    ]
    for key in ("lengths", "labels", "centres", "dseg", "dseg_tsv"):
        if key in input.keys():
            opts.append(_opt(f"--{key.replace('_', '-')}", input[key]))
    for col, flag in (
        ("sc_format", "--format"),
        ("sc_key", "--key"),
        ("lengths_key", "--lengths-key"),
        ("atlas", "--atlas"),
        ("measure", "--measure"),
        ("lengths_measure", "--lengths-measure"),
    ):
        if col in row:
            opts.append(_opt(flag, row[col]))
    return " ".join(opts)


def empirical_inputs(wildcards):
    row = SUBJECTS[wildcards.subject]
    out = {"connectome": f"results/sub-{wildcards.subject}/sub-{wildcards.subject}_connectome.h5"}
    if "bold" in row:
        out["bold"] = row["bold"]
        side = sidecar_path(row["bold"])
        if side.is_file():
            out["sidecar"] = str(side)
    else:
        out["fc"] = row["fc"]
    if "validation_bold" in row:
        side = sidecar_path(row["validation_bold"])
        if side.is_file():
            out["validation_sidecar"] = str(side)
    for col in ("labels", "dseg", "dseg_tsv", "validation_bold", "validation_fc"):
        if col in row:
            out[col] = row[col]
    return out


def empirical_options(wildcards, input):
    row = SUBJECTS[wildcards.subject]
    b, o = config["bold"], config["observation"]
    opts = []
    if "bold" in input.keys():
        opts.append(_opt("--bold", input.bold))
    else:
        opts.append(_opt("--fc", input.fc))
    for key in ("labels", "dseg", "dseg_tsv", "validation_bold", "validation_fc"):
        if key in input.keys():
            opts.append(_opt(f"--{key.replace('_', '-')}", input[key]))
    opts.append(_opt("--validation-split", config["validation"]["split"]))
    for col, flag in (
        ("bold_format", "--format"),
        ("bold_key", "--key"),
        ("orientation", "--orientation"),
        ("fc_transform", "--fc-transform"),
    ):
        if col in row:
            opts.append(_opt(flag, row[col]))
    tr = row.get("tr", b["default_tr"])
    if tr is not None:
        opts.append(_opt("--tr", tr))
    opts.append(_opt("--discard", b["discard"]))
    opts.append("--detrend" if b["detrend"] else "--no-detrend")
    if b["bandpass"] is not None:
        opts.append(f"--bandpass {b['bandpass'][0]} {b['bandpass'][1]}")
    opts.append(_opt("--max-nan-run", b["max_nan_run"]))
    opts.append(_opt("--fcd-window", o["fcd_window"]))
    opts.append(_opt("--fcd-step", o["fcd_step"]))
    return " ".join(opts)


def cohort_options(wildcards, input):
    opts = []
    for subject, params, fit, conn, emp in zip(
        SUBJECT_IDS, input.params, input.fits, input.connectomes, input.empiricals
    ):
        opts += [_opt("--subject", subject), _opt("--params-json", params), _opt("--fit-h5", fit)]
        opts.append(_opt("--benchmark", f"logs/benchmarks/sub-{subject}/refine.tsv"))
        opts += [_opt("--connectome", conn), _opt("--empirical", emp)]
        opts.append(_opt("--atlas", SUBJECTS[subject].get("atlas", "")))
    return " ".join(opts)


# ---------------------------------------------------------------- regional maps (scope map, group)


def maps_inputs(wildcards):
    """The subject's connectome, its sheet tables (maps, labels), the atlas tables and,
    for fc_gradient, every subject's empirical FC (the gradient leaves the subject out)."""
    row = SUBJECTS[wildcards.subject]
    out = {"connectome": f"results/sub-{wildcards.subject}/sub-{wildcards.subject}_connectome.h5"}
    out["tables"] = [row[col] for col in ("maps", "labels") if col in row]
    out["atlas_tables"] = list(config["heterogeneity"]["maps"].values())
    if "fc_gradient" in heterogeneity_used()[0]:
        out["fcs"] = expand(f"{SUB}_desc-empirical_fc.h5", subject=SUBJECT_IDS)
    return out


def maps_options(wildcards, input):
    maps, groups = heterogeneity_used()
    opts = [_opt("--table", t) for t in input.tables]
    opts += [f"--atlas-table {shlex.quote(a)} {shlex.quote(p)}"
             for a, p in config["heterogeneity"]["maps"].items()]
    if "fcs" in input.keys():
        opts += [f"--fc {shlex.quote(s)} {shlex.quote(p)}" for s, p in zip(SUBJECT_IDS, input.fcs)]
    opts += [_opt("--map", m) for m in maps] + [_opt("--grouping", g) for g in groups]
    return " ".join(opts)


def refine_maps(wildcards):
    """{maps: sub-X_desc-maps.tsv} when a stage has scope map or group, else nothing."""
    if not any(heterogeneity_used()):
        return {}
    return {"maps": f"results/sub-{wildcards.subject}/sub-{wildcards.subject}_desc-maps.tsv"}


def refine_maps_option(wildcards, input):
    return _opt("--maps", input.maps) if "maps" in input.keys() else ""


# ---------------------------------------------------------------- how a run ended


def print_warnings():
    """After a successful run: every subject's warnings, grouped by subject (they are also
    in the subject reports and the cohort report)."""
    from bnmfit.report import warnings_summary

    try:
        text = warnings_summary(SUBJECT_IDS, "results")
    except BnmfitError as e:  # a result file changed since: say so, do not fail the run
        text = f"bnmfit: the subjects' warnings could not be collected: {e}"
    if text:
        print(text, file=sys.stderr)


def explain_stop(logfile):
    """After an unsuccessful run: say whether a job failed or snakemake was stopped (SIGTERM:
    it finishes the running jobs, then reports "At least one job did not complete
    successfully" although none failed), and how to go on."""
    text = ""
    for path in [logfile] if isinstance(logfile, (str, os.PathLike)) else logfile or []:
        try:  # Snakemake passes the list of its log files
            text += Path(path).read_text(errors="replace")
        except OSError:
            pass
    if "Will exit after finishing currently running jobs" in text and "Error in rule" not in text:
        print("bnmfit: snakemake was stopped (SIGTERM) and finished the jobs it was running; "
              "no job failed. 'At least one job did not complete successfully' only means "
              "that the run is incomplete: run the same command again to resume.",
              file=sys.stderr)
    else:
        print("bnmfit: a job failed (its message and log are above; finished results are "
              "kept). Fix what it names, then run the same command again: it rebuilds what "
              "is missing, out of date or unreadable, and the pages that show it.",
              file=sys.stderr)


onerror:
    explain_stop(log)


onsuccess:
    print_warnings()
