"""W9 — the whole fit against the TVB-Optim recipe, on data the fit never saw, by CPU time.

Issue 23's "against the peer": both libraries fit a subject's TRAINING data and are scored
by one scorer on data neither fitted on.

- Data: a subject of the bundled cohort (80 AAL2 regions, 1200 volumes at TR 0.72 s) through
  bnmfit's ingest and empirical steps with config/config.yaml (``validation.split`` 0.5): the
  FC of the first 600 volumes is the training FC that both libraries fit, the FC of the last
  600 (preprocessed alike and separately) is the validation FC that neither sees.
- bnmfit: its whole default recipe, config/config.yaml as it is, through the workflow's code
  path: ``explore.evaluate`` over the exploration space (one chunk; the workflow splits it
  into ``exploration.chunks`` jobs of the same batch shape, so the same losses), the chunk
  file, ``Landscape.gather``, the box extension (``explore.extend_landscape``), the
  landscape's starts, then ``fit.refine`` with the config's stages, seed and held-out seeds
  (its stages judge themselves on the validation data: whether a stage hands on its result
  depends on them, as in the workflow). Standard errors (``refinement.uncertainty``) are not
  computed: they are not part of the fitted numbers, and the peer has none.
- tvboptim 0.4.0: its Reduced Wong-Wang tutorial recipe as W5 runs it
  (:func:`tests.benchmarks.w5_fit.tvboptim_recipe`: a G × w grid on both cores, global Adam
  from (0.5, 0.5), regional Adam on w and I_o, one noise key, float64, dt 4 ms), at W5's
  sizes by default (16 × 16, 100 + 100 steps; the tutorial itself runs 32 × 32 and 300 + 200, which
  would cost it more), on the same training FC and the same simulated length (the config's
  300 TRs after its transient).
- One scorer: every stage's fitted parameters of both libraries simulated by bnmfit's
  simulator at the config's settings (float32, dt 7.2 ms, 300 TRs) on the same noise seeds
  (``SEEDS``, which neither fit used) and scored by ``bnmfit.scoring.score_heldout``: FC r
  against the validation FC ("validation r") and against the training FC ("held-out-noise
  r"), mean ± sd over the seeds. As a cross-check, tvboptim's parameters are also scored by
  its own simulator on held-out keys (does the scorer's simulator change its numbers?).
- Cost: user + sys CPU seconds of each library's whole fit (exploration + refinement,
  compilation included; data reading and scoring excluded), ``resource.getrusage`` in its own
  child process (2 XLA host devices on the machine's 2 cores; bnmfit with its XLA flags,
  tvboptim with XLA's defaults, as their users run them), and wall seconds beside it.

    python -m tests.benchmarks.w9_generalisation_peer [--subjects sub-01,sub-02]
        [--config FILE] [--tv-grid N] [--tv-steps G,R] [--n-seeds N] [--quick] [--out DIR]
        [--no-peers]

Targets: bnmfit's CPU ≤ 1/2 of tvboptim's, its final validation r ≥ tvboptim's + 0.05.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from tests.benchmarks import common, w5_fit

NAME = "w9_generalisation_peer"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "W9 — whole fit vs the TVB-Optim recipe: validation FC r and CPU time"
SEEDS = tuple(range(2000, 2010))  # the scorer's noise seeds: neither fit uses them
STAGES = ("grid", "global", "regional")
CPU_TARGET, R_TARGET = 0.5, 0.05
SCORES = ("validation_fc_r", "fc_r", "validation_fc_rmse", "fc_rmse")


def _config(quick: bool, path: str | None = None) -> dict:
    """config/config.yaml (or the config file ``path``); ``quick``: a 3 × 3 grid and 10 steps
    per stage (a smoke run)."""
    from bnmfit.config import load_config

    cfg = load_config(path or w5_fit.CONFIG)
    if quick:
        for ax in cfg["exploration"]["parameters"]:
            ax["n"] = 3
        for st in cfg["refinement"]["stages"]:
            st["steps"] = 10
    return cfg


def _files(workdir: str) -> tuple[Path, Path]:
    return Path(workdir) / "connectome.h5", Path(workdir) / "empirical_fc.h5"


def case_prepare(subject: str, workdir: str, quick: bool) -> dict:
    """The subject's connectome and empirical files, as the workflow's ingest_connectome and
    empirical_fc rules write them (training FC of the first half, validation of the last)."""
    from bnmfit import recipe, results
    from bnmfit.empirical import empirical_record
    from bnmfit.io import read_connectome

    cfg = _config(quick)
    label, folder = subject.removeprefix("sub-"), common.RESOURCES / subject
    sc = [folder / f"{subject}_desc-{m}_relmat.tsv" for m in ("weights", "lengths")]
    bold = folder / f"{subject}_task-rest_timeseries.tsv.gz"
    conn_h5, emp_h5 = _files(workdir)
    w, ln, labels = read_connectome(*sc)
    conn = results.ConnectomeFile.of(
        label,
        recipe.build_connectome(cfg, w, ln, labels),
        w,
        provenance=results.provenance(cfg, sc),
    )
    conn.write(conn_h5)
    b, o = cfg["bold"], cfg["observation"]
    emp = empirical_record(
        label,
        conn,
        bold=str(bold),
        split=float(cfg["validation"]["split"]),
        tr=b["default_tr"],
        discard=b["discard"],
        detrend=b["detrend"],
        bandpass=tuple(b["bandpass"]) if b["bandpass"] else None,
        max_nan_run=b["max_nan_run"],
        fcd_window=o["fcd_window"],
        fcd_step=o["fcd_step"],
        provenance=results.provenance(cfg, [bold]),
    )
    emp.write(emp_h5)
    return {
        "n_training": emp.n_tr,
        "validation": emp.qc["validation"],
        "mean_fc_training": emp.qc["mean_fc"],
    }


def case_bnmfit(workdir: str, quick: bool, config: str | None = None) -> dict:
    """bnmfit's recipe (default: config/config.yaml) on the prepared files: exploration
    (+ box extension) → starts → the config's refinement stages; CPU and wall time of each
    part."""
    import numpy as np

    from bnmfit import explore, fit, recipe, results
    from bnmfit.config import config_hash
    from bnmfit.losses import loss_spec

    cfg = _config(quick, config)
    ex, ref = cfg["exploration"], cfg["refinement"]
    conn_h5, emp_h5 = _files(workdir)
    label = results.EmpiricalFile.read(emp_h5).subject
    t0 = (time.perf_counter(), w5_fit.cpu_s())
    problem = recipe.problem_from_files(cfg, conn_h5, emp_h5)
    space, seeds, stages = (
        recipe.build_space(cfg),
        recipe.noise_seeds(cfg),
        recipe.build_stages(cfg),
    )
    points = space.points()
    res = explore.evaluate(
        problem, space.names, points, seeds, batch_size=int(ex["batch_size"]), n_total=len(points)
    )
    chunk_h5 = Path(workdir) / "chunk-0.h5"
    results.ExploreChunk.of(
        res,
        subject=label,
        space=space,
        index=np.arange(len(points)),
        chunk=0,
        n_chunks=1,
        spec=loss_spec(cfg),
        provenance=results.provenance(cfg, [conn_h5, emp_h5], seeds),
    ).write(chunk_h5)
    land = results.Landscape.gather(
        [results.ExploreChunk.read(chunk_h5)],
        [chunk_h5],
        starts=int(ref["starts"]),
        min_separation=float(ref["min_separation"]),
        config_hash=config_hash(cfg),
        inputs=[conn_h5, emp_h5],
    )
    land = explore.extend_landscape(
        problem,
        land,
        explore.extension_domains(stages, land.names),
        rounds=int(ex["extend"]),
        batch_size=int(ex["batch_size"]),
    )
    starts = land.start_points()
    grid = {
        **w5_fit.since(t0),
        "params": starts[0],
        "n_points": len(land.points),
        "n_extension_points": len(land.points) - land.n_points,
        "edge": land.edge_warning(),
    }
    t1 = (time.perf_counter(), w5_fit.cpu_s())
    result = fit.refine(
        problem,
        stages,
        starts,
        seed=int(cfg["noise"]["seed"]),
        heldout_seeds=tuple(int(s) for s in ref["heldout_seeds"]),
        checkpoint_every=int(ref["checkpoint_every"]),
    )
    refinement = w5_fit.since(t1)
    out = {"grid": grid}
    for rec in result.stages:
        out[rec.name] = {
            "wall_s": rec.wall_time,
            "steps_run": rec.steps_run,
            "kept_start": bool(rec.kept_start),
            "acceptance": rec.acceptance,
            "params": {k: np.asarray(v).tolist() for k, v in rec.params.items()},
        }
    return {
        "stages": out,
        "refinement": refinement,
        "fit": {k: grid[k] + refinement[k] for k in ("wall_s", "cpu_s")},
        "dtype": str(problem.weights.dtype),
        "dt": problem.spec.dt,
        "n_tr": problem.spec.n_tr,
        "stage_config": [
            f"{s.name}: {s.optimizer} lr {s.learning_rate}, {s.steps} steps, n_noise {s.n_noise}"
            for s in stages
        ],
    }


def case_tvboptim(workdir: str, grid: int, steps: list[int], n_tr: int, seeds: list[int]) -> dict:
    """tvboptim's tutorial recipe on the prepared training FC, CPU and wall time per stage;
    then (not timed) its own simulator's FC r of each stage on held-out keys against the
    validation and the training FC."""
    import jax
    import jax.numpy as jnp

    from bnmfit import results

    conn = results.ConnectomeFile.read(_files(workdir)[0])
    emp = results.EmpiricalFile.read(_files(workdir)[1])
    stages, simulate_fc, _ = w5_fit.tvboptim_recipe(
        conn.weights, conn.labels, emp.fc, emp.tr, grid=grid, steps=tuple(steps), n_tr=n_tr
    )
    fit = {k: sum(st[k] for st in stages.values()) for k in ("wall_s", "cpu_s")}
    targets = {"validation_fc_r": emp.validation.fc, "fc_r": emp.fc}
    for st in stages.values():
        fcs = [simulate_fc(st["params"], jax.random.key(s)) for s in seeds]
        st["own_simulator"] = {
            name: [float(w5_fit.fc_scores(fc, jnp.asarray(t))[0]) for fc in fcs]
            for name, t in targets.items()
        }
    return {"stages": stages, "fit": fit, "dt": w5_fit.TV_DT, "steps": list(steps), "grid": grid}


def case_score(workdir: str, quick: bool, fits: dict, seeds: list[int]) -> dict:
    """The one scorer: each library's stage parameters simulated by bnmfit (the config's
    settings) on each seed, scored against the training and the validation FC."""
    from bnmfit import recipe, scoring

    cfg = _config(quick)
    problem = recipe.problem_from_files(cfg, *_files(workdir))
    out = {}
    for lib, stages in fits.items():
        out[lib] = {}
        for stage, params in stages.items():
            per_seed = [scoring.score_heldout(problem, params, [s]).metrics for s in seeds]
            out[lib][stage] = {k: [m[k] for m in per_seed] for k in SCORES}
    return {"scores": out, "dtype": str(problem.weights.dtype), "dt": problem.spec.dt}


def _stat(values) -> str:
    import numpy as np

    v = np.asarray(values, np.float64)
    return f"{v.mean():.3f} ± {v.std():.3f}"


def _mean(values) -> float:
    return sum(values) / len(values)


def _subject(subject: str, args, workdir: str) -> dict:
    """Prepare, fit with both libraries, score; the subject's cases and table rows."""
    prep = common.run_case(
        MODULE,
        "case_prepare",
        {"subject": subject, "workdir": workdir, "quick": args.quick},
        x64=False,
    )
    if prep.get("error"):
        return {"prepare": prep}
    cases = {"prepare": prep}
    cases["bnmfit"] = common.run_case(
        MODULE,
        "case_bnmfit",
        {"workdir": workdir, "quick": args.quick, "config": args.config},
        x64=False,
        devices=w5_fit.DEVICES,
        timeout_s=5400,
    )
    if not args.no_peers and common.peer_available("tvboptim") is None:
        cases["tvboptim"] = common.run_case(
            MODULE,
            "case_tvboptim",
            {
                "workdir": workdir,
                "grid": args.tv_grid,
                "steps": args.tv_steps,
                "n_tr": w5_fit.EVAL_TR,
                "seeds": list(args.seeds),
            },
            x64=True,
            devices=w5_fit.DEVICES,
            timeout_s=5400,
            xla_defaults=False,
        )
    fits = {
        lib: {name: st["params"] for name, st in c["stages"].items()}
        for lib, c in cases.items()
        if lib != "prepare" and not c.get("error")
    }
    if fits:
        cases["score"] = common.run_case(
            MODULE,
            "case_score",
            {"workdir": workdir, "quick": args.quick, "fits": fits, "seeds": list(args.seeds)},
            x64=False,
            timeout_s=3600,
        )
    return cases


def _rows(subject: str, cases: dict) -> tuple[list[str], dict]:
    """Markdown rows (library, stage, CPU s, wall s, validation r, held-out-noise r) and the
    subject's summary: CPU ratio and validation r difference of the final fits."""
    rows, summary = [], {}
    scores = cases.get("score", {}).get("scores", {})
    for lib in ("bnmfit", "tvboptim"):
        c = cases.get(lib)
        if c is None:
            continue
        if c.get("error") or lib not in scores:
            err = c.get("error") or cases.get("score", {}).get("error", "not scored")
            rows.append(f"| {subject} | {lib} | – | – | – | not measured: {err[:90]} | – | – |")
            continue
        fit = c["fit"]
        for name in STAGES:
            st, sc = c["stages"][name], scores[lib][name]
            cpu = common.fmt_s(st.get("cpu_s")) if "cpu_s" in st else "(in refinement)"
            extra = " (kept its start)" if st.get("kept_start") else ""
            if "own_simulator" in st:
                extra += f" (own simulator: {_stat(st['own_simulator']['validation_fc_r'])})"
            rows.append(
                f"| {subject} | {lib} | {name} | {cpu} | {common.fmt_s(st['wall_s'])} | "
                f"{_stat(sc['validation_fc_r'])}{extra} | {_stat(sc['fc_r'])} | "
                f"{_mean(sc['validation_fc_rmse']):.3f} |"
            )
        final = scores[lib]["regional"]
        rows.append(
            f"| {subject} | **{lib}** | **whole fit** | **{common.fmt_s(fit['cpu_s'])}** | "
            f"**{common.fmt_s(fit['wall_s'])}** | **{_stat(final['validation_fc_r'])}** | "
            f"**{_stat(final['fc_r'])}** | {_mean(final['validation_fc_rmse']):.3f} |"
        )
        summary[lib] = {
            "cpu_s": fit["cpu_s"],
            "wall_s": fit["wall_s"],
            "validation_fc_r": _mean(final["validation_fc_r"]),
            "heldout_noise_fc_r": _mean(final["fc_r"]),
        }
    if "bnmfit" in summary and "tvboptim" in summary:
        bn, tv = summary["bnmfit"], summary["tvboptim"]
        summary["cpu_ratio"] = bn["cpu_s"] / tv["cpu_s"]
        summary["wall_ratio"] = bn["wall_s"] / tv["wall_s"]
        summary["validation_r_difference"] = bn["validation_fc_r"] - tv["validation_fc_r"]
        summary["heldout_noise_r_difference"] = bn["heldout_noise_fc_r"] - tv["heldout_noise_fc_r"]
        summary["targets_met"] = {
            "cpu_ratio_le_0.5": summary["cpu_ratio"] <= CPU_TARGET,
            "validation_r_ge_peer_plus_0.05": summary["validation_r_difference"] >= R_TARGET,
        }
    ceiling = cases["prepare"].get("validation", {}).get("fc_r_training")
    if ceiling is not None:
        summary["training_validation_fc_r"] = ceiling
    return rows, summary


def run(args) -> dict:
    args.seeds = SEEDS[:2] if args.quick else SEEDS[: args.n_seeds]
    if args.quick:
        args.tv_grid, args.tv_steps = 3, [10, 10]
    cases, rows, summaries = {}, [], {}
    for subject in args.subjects.split(","):
        with tempfile.TemporaryDirectory(prefix=f"{NAME}-") as workdir:
            cases[subject] = _subject(subject, args, workdir)
        r, summaries[subject] = _rows(subject, cases[subject])
        rows += r
    header = (
        "| subject | library | stage | CPU s | wall s | validation FC r | held-out-noise FC r "
        "| validation FC RMSE |\n|---|---|---|---|---|---|---|---|"
    )
    notes = [
        f"Scorer: bnmfit's simulator at config/config.yaml's settings on seeds {args.seeds[0]}–"
        f"{args.seeds[-1]} (mean ± sd over {len(args.seeds)}); validation FC = the last half of "
        "the subject's volumes, held-out-noise FC r = against the training FC (the first half).",
        f"tvboptim: its RWW tutorial recipe, {args.tv_grid} × {args.tv_grid} grid, Adam "
        f"{args.tv_steps[0]} global + {args.tv_steps[1]} regional steps (w and I_o), float64, dt "
        f"{w5_fit.TV_DT} ms, XLA's defaults; '(own simulator)': its parameters scored by its "
        "own simulator on held-out keys against the validation FC.",
        "CPU s = user + sys of the fit in its process (getrusage), compilation included, data "
        "reading and scoring excluded; 2 XLA host devices on the 2 cores of a machine shared "
        "with other work (CPU time is less sensitive to that than wall time).",
    ]
    for subject, s in summaries.items():
        if "cpu_ratio" in s:
            notes.append(
                f"{subject}: bnmfit / tvboptim CPU {s['cpu_ratio']:.2f}× (target ≤ {CPU_TARGET}),"
                f" wall {s['wall_ratio']:.2f}×; validation r {s['validation_r_difference']:+.3f}"
                f" (target ≥ +{R_TARGET}), held-out-noise r "
                f"{s['heldout_noise_r_difference']:+.3f}; the two halves' FCs agree at r = "
                f"{s.get('training_validation_fc_r', float('nan')):.3f}"
            )
    bn = next((c["bnmfit"] for c in cases.values() if not c.get("bnmfit", {}).get("error")), None)
    if bn is not None and "dt" in bn:
        notes.append(
            f"bnmfit ({args.config or 'config/config.yaml'}): {bn['dtype']}, dt {bn['dt']} ms, "
            f"{bn['n_tr']} TRs; stages "
            + "; ".join(bn["stage_config"])
            + "; standard errors not computed."
        )
    return common.publish(
        NAME, TITLE, f"{header}\n" + "\n".join(rows), args, notes, summary=summaries, cases=cases
    )


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--subjects",
        default=common.SUBJECT,
        help=f"comma-separated subjects of the bundled cohort (default {common.SUBJECT})",
    )
    p.add_argument("--tv-grid", type=int, default=16, help="tvboptim grid points per axis")
    p.add_argument(
        "--tv-steps",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100, 100],
        help="tvboptim global,regional Adam steps (default 100,100; the tutorial's 300,200)",
    )
    p.add_argument(
        "--config",
        default=None,
        help="bnmfit's recipe, a whole config file (default config/config.yaml); the data, "
        "the scorer and tvboptim keep config/config.yaml's settings",
    )
    p.add_argument("--n-seeds", type=int, default=len(SEEDS), help=f"scorer seeds (≤ {len(SEEDS)})")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
