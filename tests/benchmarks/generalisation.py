"""Generalisation with few parameters (issue 23): recipes compared on data the fit never saw.

Each recipe runs the whole workflow (``snakemake --cores 2``) on the bundled cohort (7 HCP
subjects, 80 AAL2 regions, 1200 volumes at TR 0.72 s) from its own working directory, with
``config/config.yaml`` as the base and the recipe's keys on top; every subject's last half
of volumes is its validation data (``validation.split: 0.5``), which neither exploration nor
refinement uses. Per subject and recipe: the validation FC r (and RMSE) of the final fit,
the held-out-noise FC r, the training–validation FC r (the ceiling: how far the subject's
two halves agree), the number of free numbers of the final fit (each parameter's numbers
from the last stage that fitted it: G and the last stage's), how many of them are identified
(standard error ≤ ``FRACTION`` of the span the fit's identification flag uses), the flags,
and the CPU time of the subject's explore, gather and refine jobs (user + sys, Snakemake's
benchmark files).

    python -m tests.benchmarks.generalisation [--recipes regional,map] [--cores 2]
        [--out DIR] [--keep]

Recipes (``RECIPES``): ``regional`` — the base recipe (global (G, w), then 80 regional w);
``map`` — global (G, w), then w as a map of the SC's node strength and the cohort's
leave-one-out principal FC gradient (3 coefficients); ``map_fc`` — global, then w as a map of
those two and the node strength of the subject's own training FC (4 coefficients), fitted by
Levenberg–Marquardt; ``map_fc_g`` — ``map_fc`` with G refitted beside the coefficients;
``regional_debiased``, ``map_fc_g_debiased`` — those two with the loss of their noise seeds
debiased (``noise_average: fc_debiased``); ``map_fc_g_screen`` — ``map_fc_g`` begun from the
start the global stage handed it and from the best two others of its 81 screened starts
(``map_screen: 0.75``, ``map_screen_keep: 2``); ``group`` — global, then w per left/right
homologue pair (40 values).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks import common

NAME = "generalisation"
FRACTION = 0.2  # a number is identified when its standard error is ≤ 20 % of its domain
_W = {"name": "w", "domain": {"lo": 0.001, "hi": 1.0}}
_REGIONAL = {
    "name": "regional",
    "optimizer": "adam",
    "learning_rate": 0.2,
    "schedule": "cosine",
    "n_noise": 2,
    "noise_average": "fc",
    "steps": 100,
}
_MAP_FC = {
    **_REGIONAL,
    "name": "map",
    "optimizer": "levenberg-marquardt",
    "schedule": None,
    "n_noise": 4,
    "steps": 30,
    "free_parameters": [{**_W, "scope": "map", "maps": ["strength", "fc_gradient", "fc_strength"]}],
}
#: each recipe's last stage (after the base recipe's global stage); None: the base recipe
RECIPES: dict[str, dict | None] = {
    "regional": None,
    "map": {
        **_REGIONAL,
        "name": "map",
        "learning_rate": 0.05,
        "free_parameters": [{**_W, "scope": "map", "maps": ["strength", "fc_gradient"]}],
    },
    # w as a map of the SC's node strength, the leave-one-out cohort FC gradient and the
    # node strength of the subject's own training FC, fitted by Levenberg–Marquardt on the
    # mean FC of 4 fixed noise seeds (G + 4 coefficients: 5 free numbers)
    "map_fc": _MAP_FC,
    # map_fc with G refitted beside the coefficients (G + 4 coefficients: 5 free numbers)
    "map_fc_g": {
        **_MAP_FC,
        "free_parameters": [
            {"name": "G", "domain": {"lo": 0.001, "hi": 1.0}},
            *_MAP_FC["free_parameters"],
        ],
    },
    # the same two with the loss of their noise seeds debiased (noise_average fc_debiased:
    # the noise of the seeds' mean FC no longer favours less noisy, more homogeneous w)
    "regional_debiased": {
        **_REGIONAL,
        "noise_average": "fc_debiased",
        "free_parameters": [{**_W, "scope": "regional"}],
    },
    "map_fc_g_debiased": {
        **_MAP_FC,
        "noise_average": "fc_debiased",
        "free_parameters": [
            {"name": "G", "domain": {"lo": 0.001, "hi": 1.0}},
            *_MAP_FC["free_parameters"],
        ],
    },
    # map_fc_g also begun from the best 2 other of the 81 screened starts (intercept and 3
    # map coefficients each ± 0.75 around the global stage's homogeneous w)
    "map_fc_g_screen": {
        **_MAP_FC,
        "map_screen": 0.75,
        "map_screen_keep": 2,
        "free_parameters": [
            {"name": "G", "domain": {"lo": 0.001, "hi": 1.0}},
            *_MAP_FC["free_parameters"],
        ],
    },
    "group": {
        **_REGIONAL,
        "name": "group",
        "learning_rate": 0.1,
        "free_parameters": [{**_W, "scope": "group", "groups": "homologues"}],
    },
}


def _override(recipe: str) -> dict:
    """The recipe's config file: the base recipe's global stage and the recipe's last one."""
    from bnmfit.config import load_config

    out: dict = {"refinement": {"uncertainty": {"fraction": FRACTION}}}
    if RECIPES[recipe] is not None:
        base = load_config(common.REPO_ROOT / "config" / "config.yaml")
        out["refinement"]["stages"] = [base["refinement"]["stages"][0], RECIPES[recipe]]
    return out


def _workdir(root: Path, recipe: str) -> Path:
    """A working directory outside the checkout that sees its config/ and resources/."""
    wd = root / recipe
    wd.mkdir(parents=True, exist_ok=True)
    for name in ("config", "resources"):
        link = wd / name
        if not link.exists():
            link.symlink_to(common.REPO_ROOT / name)
    (wd / "recipe.json").write_text(json.dumps(_override(recipe), indent=1))
    return wd


def _cpu_s(wd: Path, subject: str) -> float:
    """User + sys CPU seconds of a subject's explore, gather and refine jobs."""
    total = 0.0
    for tsv in (wd / "logs" / "benchmarks" / f"sub-{subject}").glob("*.tsv"):
        with open(tsv) as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                total += float(row.get("cpu_time") or 0.0)
    return total


def run_recipe(root: Path, recipe: str, cores: int) -> dict:
    wd = _workdir(root, recipe)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(common.REPO_ROOT / "Snakefile"),
        "--cores",
        str(cores),
        "--configfile",
        "recipe.json",
        "--quiet",
        "rules",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=wd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{recipe}: snakemake failed:\n{proc.stderr[-4000:]}")
    return {"wall_s": wall, "subjects": _collect(wd)}


def _collect(wd: Path) -> dict:
    from bnmfit.results import EmpiricalFile, FittedParams

    out = {}
    for params in sorted(wd.glob("results/sub-*/sub-*_desc-fitted_params.json")):
        fitted = FittedParams.read(params)
        s = fitted.subject
        emp = EmpiricalFile.read(params.parent / f"sub-{s}_desc-empirical_fc.h5")
        m = fitted.metrics
        free = _free_numbers([fitted.uncertainty.get(k, {}) for k in m.get("stages", {})])
        out[s] = {
            "validation_fc_r": m.get("validation_fc_r"),
            "validation_fc_rmse": m.get("validation_fc_rmse"),
            "heldout_fc_r": m.get("fc_r"),
            "ceiling": emp.qc.get("validation", {}).get("fc_r_training"),
            "stages": {
                k: {
                    "validation_fc_r": v.get("validation_fc_r"),
                    "start_validation_fc_r": v.get("start_validation_fc_r"),
                    "kept_start": v.get("kept_start"),
                }
                for k, v in m.get("stages", {}).items()
            },
            "n_free": len(free),
            "n_identified": sum(row[1] for row in free),
            "max_relative_se": max((row[2] for row in free), default=float("nan")),
            "max_se_over_value": max((row[3] for row in free), default=float("nan")),
            "free": {row[0]: row[2:] for row in free},
            "uncertainty_simulations": sum(
                u.get("n_simulations") or 0 for u in fitted.uncertainty.values()
            ),
            "flags": [f["code"] for f in fitted.flags],
            "cpu_s": _cpu_s(wd, s),
        }
    return out


def _free_numbers(stages: list[dict]) -> list[tuple[str, bool, float, float]]:
    """(label, identified, standard error / scale, standard error / |value|) of every free
    number of the final fit (scale: the span the identification flag compares with):
    each parameter's numbers from the last stage that fitted it (e.g. G from the global
    stage, w's map coefficients from the map stage), from the stages' uncertainty records
    in stage order."""
    latest: dict[str, list[tuple[str, bool, float, float]]] = {}
    for unc in stages:
        rows: dict[str, list[tuple[str, bool, float, float]]] = {}
        cols = ("labels", "identified", "se", "scale", "values")
        for label, ok, se, scale, v in zip(*(unc.get(c, []) for c in cols), strict=True):
            se = float("inf") if se is None else float(se)  # None: unbounded
            row = (label, bool(ok), se / scale, se / abs(v) if v else float("inf"))
            rows.setdefault(re.split(r"[:\[]", label)[0], []).append(row)
        latest |= rows
    return [row for rows in latest.values() for row in rows]


def table(results: dict) -> str:
    recipes = list(results)
    subjects = sorted(set().union(*(results[r]["subjects"] for r in recipes)))
    head = ["subject", "ceiling"] + [
        f"{r} {k}" for r in recipes for k in ("val r", "noise r", "free", "ident.", "CPU s")
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in subjects:
        first = results[recipes[0]]["subjects"].get(s, {})
        cells = [s, f"{first.get('ceiling', float('nan')):.3f}"]
        for r in recipes:
            d = results[r]["subjects"].get(s, {})
            cells += [
                f"{d.get('validation_fc_r', float('nan')):.3f}",
                f"{d.get('heldout_fc_r', float('nan')):.3f}",
                str(d.get("n_free", "")),
                str(d.get("n_identified", "")),
                f"{d.get('cpu_s', float('nan')):.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="regional,map")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", type=Path, default=common.DEFAULT_OUT)
    p.add_argument("--workdir", type=Path, default=None, help="keep the runs here")
    args = p.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bnmfit-generalisation-"))
    results = {}
    for recipe in args.recipes.split(","):
        results[recipe] = run_recipe(root, recipe, args.cores)
        print(f"{recipe}: {results[recipe]['wall_s']:.0f} s", file=sys.stderr)
    text = table(results)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(results, indent=1, default=float))
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
