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
        [--out DIR] [--workdir DIR] [--rescore N] [--transfer N] [--collect-only]

The workflow scores each fit on 2 held-out noise seeds, too few to tell two recipes apart by
a few thousandths. ``--rescore N`` simulates every recipe's final fit again on N further
seeds (``RESCORE_SEED`` + 0 … N − 1, the same seeds for every recipe, so the recipes'
noise is paired) and reports per subject the mean validation FC r ± its standard error, and
each recipe's paired difference from the first recipe's ± its standard error.
``--transfer N`` scores each recipe's last stage at its start and at its end on N such
seeds, against the training and against the validation FC: the ratio of the two gains says
how much of what the stage learnt from the training half holds on the validation half (near
1: the stage did not overfit the training half, and a validation split of this kind cannot
reward fitting fewer numbers).
``--collect-only`` reads the runs already in ``--workdir`` (one directory per recipe)
instead of running them.

Recipes (``RECIPES``): ``regional`` — the base recipe (global (G, w), then 80 regional w and 80
regional I_o); ``regional_w`` — the same with w alone free in the regional stage, at learning
rate 0.2 (the base recipe until I_o was freed too; issue 23's reference recipe); ``map`` —
global (G, w), then w as a map of the SC's node strength and the cohort's leave-one-out
principal FC gradient (3 coefficients); ``map_fc`` — global, then w as a map of those two and
the node strength of the subject's own training FC (4 coefficients), fitted by
Levenberg–Marquardt; ``map_fc_g`` — ``map_fc`` with G refitted beside the coefficients;
``regional_debiased``, ``map_fc_g_debiased`` — ``regional_w`` and ``map_fc_g`` with the loss of
their noise seeds debiased (``noise_average: fc_debiased``); ``map_fc_g_screen`` — ``map_fc_g``
begun from the start the global stage handed it and from the best two others of its 81 screened
starts (``map_screen: 0.75``, ``map_screen_keep: 2``); ``map_fc_g_loss`` — ``map_fc_g`` fitted
to the mean of its 4 seeds' single-simulation losses (``noise_average: loss``: what the scores
measure) instead of the loss of their mean FC; ``group`` — global, then w per left/right
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

import numpy as np

from tests.benchmarks import common

NAME = "generalisation"
FRACTION = 0.2  # a number is identified when its standard error is ≤ 20 % of its domain
#: first noise seed of --rescore (far from the fit's, the selection's and the held-out seeds)
RESCORE_SEED = 5000
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
    # the base recipe's regional stage before it freed I_o (issue 23's reference recipe)
    "regional_w": {**_REGIONAL, "free_parameters": [{**_W, "scope": "regional"}]},
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
    # map_fc_g fitted to the mean loss of its 4 seeds' single simulations (noise_average
    # loss) rather than to the loss of their mean FC: the quantity the held-out and
    # validation scores measure (one simulation's FC against the data)
    "map_fc_g_loss": {
        **_MAP_FC,
        "noise_average": "loss",
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


def _problems(wd: Path):
    """(fitted params, fit file path, problem) of every subject of the run in ``wd``, each
    problem built from the subject's files with the run's config."""
    from bnmfit import recipe
    from bnmfit.config import load_config
    from bnmfit.results import FittedParams

    cfg = load_config(wd / "results" / "config.yaml")
    for path in sorted(wd.glob("results/sub-*/sub-*_desc-fitted_params.json")):
        fitted = FittedParams.read(path)
        s = fitted.subject
        conn, emp = (path.parent / f"sub-{s}_{x}.h5" for x in ("connectome", "desc-empirical_fc"))
        yield fitted, path.parent / f"sub-{s}_fit.h5", recipe.problem_from_files(cfg, conn, emp)


def _metrics(problem, params, n: int) -> list[dict[str, float]]:
    """The scores of ``params`` simulated on each of ``n`` noise seeds (``RESCORE_SEED`` + i)."""
    from bnmfit import scoring

    return [scoring.score_heldout(problem, params, [RESCORE_SEED + i]).metrics for i in range(n)]


def rescore(wd: Path, n: int) -> dict[str, list[float]]:
    """Subject → validation FC r of its final fit on each of ``n`` noise seeds
    (``RESCORE_SEED`` + i), simulated from its files in ``wd`` with the run's config."""
    return {
        fitted.subject: [
            m["validation_fc_r"] for m in _metrics(problem, {**fitted.fixed, **fitted.params}, n)
        ]
        for fitted, _, problem in _problems(wd)
    }


def _last_stage(recipe: str) -> dict:
    """The last refinement stage a recipe runs (its own, or the base recipe's)."""
    from bnmfit.config import load_config

    if RECIPES[recipe] is not None:
        return RECIPES[recipe]
    return load_config(common.REPO_ROOT / "config" / "config.yaml")["refinement"]["stages"][-1]


def no_transfer(stage: dict) -> str | None:
    """Why :func:`transfer` cannot measure a stage (None: it can). It needs the stage's start,
    the first row of the trajectory an optax stage records (a least-squares or SciPy stage
    records its points after each iteration; a map or group stage, coefficients)."""
    from bnmfit.fit import OPTAX_OPTIMIZERS

    optimizer = stage.get("optimizer", "adam")
    if optimizer not in OPTAX_OPTIMIZERS:
        return f"its {optimizer} stage records no start (only optax stages do)"
    if scoped := [
        f["name"] for f in stage["free_parameters"] if f.get("scope") in ("map", "group")
    ]:
        return f"its stage fits {scoped} as map or group coefficients, whose start is not recorded"
    return None


def transfer(wd: Path, n: int) -> dict[str, dict]:
    """Subject → how much of the last stage's gain on its training data carries over to its
    validation data: per noise seed (``RESCORE_SEED`` + i, the same for the stage's start
    and end), the final fit's held-out-noise FC r (against the training FC) minus the
    stage start's (``train``) and its validation FC r minus the start's (``validation``),
    and whether the stage was rejected (``kept_start``: it handed on its start, so both gains
    are 0). The start is the first row of the stage's recorded trajectory, for the start the
    fit descends from (see :func:`no_transfer` for the stages that record it)."""
    from bnmfit.results import FitFile

    out = {}
    for fitted, fit_path, problem in _problems(wd):
        end = {**fitted.fixed, **fitted.params}
        stage = FitFile.read(fit_path).stages[-1]
        traj = {**stage.traj, **stage.traj_regional}
        if missing := sorted(set(stage.free) - set(traj)):
            raise ValueError(f"sub-{fitted.subject}: stage {stage.name!r} records no {missing}")
        start = {
            **end,
            **{k: traj[k][0, stage.best_start].reshape(np.shape(end[k])) for k in stage.free},
        }
        m_end, m_start = _metrics(problem, end, n), _metrics(problem, start, n)
        out[fitted.subject] = {
            kind: [b[key] - a[key] for a, b in zip(m_start, m_end, strict=True)]
            for kind, key in (("train", "fc_r"), ("validation", "validation_fc_r"))
        } | {"kept_start": stage.kept_start}
    return out


def transfer_table(gains: dict[str, dict]) -> str:
    """Per subject: the last stage's gain in held-out-noise FC r and in validation FC r,
    each mean ± SE over the paired seeds, and their ratio (1: what the stage learnt from the
    training data holds as well on the validation data; ≪ 1: it fitted what the halves do
    not share; '—' where the training gain is not 2 SE above 0, or the stage was rejected)."""
    lines = [
        "| subject | gain, training FC r | gain, validation FC r | validation / training |",
        "|---|---|---|---|",
    ]
    for s, g in sorted(gains.items()):
        t = np.asarray(g["train"], float)
        t = t[np.isfinite(t)]
        v = np.nanmean(g["validation"])
        clear = t.size >= 2 and t.mean() > 2 * t.std(ddof=1) / np.sqrt(t.size)
        ratio = "rejected" if g["kept_start"] else f"{v / t.mean():.2f}" if clear else "—"
        lines.append(f"| {s} | {_mean_se(g['train'])} | {_mean_se(g['validation'])} | {ratio} |")
    return "\n".join(lines)


def _mean_se(x) -> str:
    """'mean ± SE' of the finite values of ``x``, '—' when fewer than 2 are finite."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return "—"
    return f"{x.mean():+.3f} ± {x.std(ddof=1) / np.sqrt(x.size):.3f}"


def rescore_table(scores: dict[str, dict[str, list[float]]]) -> str:
    """Per subject: each recipe's mean validation r ± SE over the seeds, and its paired
    difference from the first recipe ± SE (over the seeds where both are finite; '—' where
    a recipe has no run of the subject); last rows: of the subjects both recipes have, on
    how many each recipe's mean is ≥ the first's, and on how many it is below by more than
    2 SE. The SEs are those of the scoring noise; the fits' own noise seeds are not
    resampled."""
    recipes = list(scores)
    first = recipes[0]
    subjects = sorted(set().union(*(scores[r] for r in recipes)))
    head = ["subject"] + [f"{r} val r" for r in recipes]
    head += [f"{r} − {first}" for r in recipes[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ge, below, both = ({r: 0 for r in recipes[1:]} for _ in range(3))
    for s in subjects:
        cells = [s] + [_mean_se(scores[r].get(s, [])).lstrip("+") for r in recipes]
        for r in recipes[1:]:
            if s not in scores[r] or s not in scores[first]:
                cells.append("—")
                continue
            d = np.asarray(scores[r][s], float) - np.asarray(scores[first][s], float)
            d = d[np.isfinite(d)]
            cells.append(_mean_se(d))
            if d.size >= 2:
                se = d.std(ddof=1) / np.sqrt(d.size)
                both[r] += 1
                ge[r] += bool(d.mean() >= 0)
                below[r] += bool(d.mean() < -2 * se)
        lines.append("| " + " | ".join(cells) + " |")
    summary = [
        f"{r}: ≥ {first} on {ge[r]} of {both[r]}, below by > 2 SE on {below[r]}"
        for r in recipes[1:]
    ]
    return "\n".join(lines + [""] + summary)


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
    p.add_argument(
        "--rescore",
        type=int,
        default=0,
        metavar="N",
        help="score every final fit again on N paired noise seeds (≥ 2)",
    )
    p.add_argument(
        "--transfer",
        type=int,
        default=0,
        metavar="N",
        help="score every last stage's start and end on N paired noise seeds, on the "
        "training and the validation data (global and regional stages only)",
    )
    p.add_argument(
        "--collect-only",
        action="store_true",
        help="read the runs already in --workdir instead of running them",
    )
    args = p.parse_args(argv)
    if args.collect_only and args.workdir is None:
        p.error("--collect-only reads the runs of --workdir: give it")
    for opt in ("rescore", "transfer"):
        if getattr(args, opt) < 0 or getattr(args, opt) == 1:
            p.error(f"--{opt} needs at least 2 seeds for a standard error (0: none)")
    for r in args.recipes.split(",") if args.transfer else ():
        if r in RECIPES and (why := no_transfer(_last_stage(r))):
            p.error(f"--transfer cannot measure {r}: {why}")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bnmfit-generalisation-"))
    results = {}
    for recipe in args.recipes.split(","):
        if args.collect_only:
            if not (root / recipe / "results" / "config.yaml").is_file():
                p.error(f"--collect-only: no run of {recipe} in {root / recipe}")
            results[recipe] = {"subjects": _collect(root / recipe)}
        else:
            results[recipe] = run_recipe(root, recipe, args.cores)
            print(f"{recipe}: {results[recipe]['wall_s']:.0f} s", file=sys.stderr)
    text = table(results)
    if args.rescore:
        scores = {r: rescore(root / r, args.rescore) for r in results}
        for r in results:
            results[r]["rescore"] = scores[r]
        text += "\n\n" + rescore_table(scores)
    for r in results if args.transfer else ():
        results[r]["transfer"] = transfer(root / r, args.transfer)
        text += f"\n\n{r}, its last stage:\n" + transfer_table(results[r]["transfer"])
    print(text)
    common.write_json(args.out, NAME, results)
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
