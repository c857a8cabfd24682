#!/usr/bin/env python
"""Rule refine: gradient refinement of one subject from its best explored points."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "bnmfit").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

import click  # noqa: E402

from bnmfit import cli  # noqa: E402

EXAMPLE = """\b
Example:
  python scripts/refine.py --subject 01 --config config/config.yaml \\
    --connectome results/sub-01/sub-01_connectome.h5 \\
    --empirical results/sub-01/sub-01_desc-empirical_fc.h5 \\
    --explore results/sub-01/sub-01_explore.h5 \\
    --output-params results/sub-01/sub-01_desc-fitted_params.json \\
    --output-fit results/sub-01/sub-01_fit.h5
"""

FILE = click.Path(exists=True, dir_okay=False)


def _plain(v):
    """A JSON-able value: float for scalars, list for arrays."""
    import numpy as np

    a = np.asarray(v, dtype=np.float64)
    return float(a) if a.ndim == 0 else a.tolist()


def _heldout_run(problem, params, key):
    """Metrics and simulated observables of one held-out seed; jitted with the problem as an
    argument (a pytree), so it compiles once per settings and shapes, not per subject."""
    from bnmfit import losses
    from bnmfit.observables import upper

    emp = problem.empirical
    bold = problem.simulate(params, key).bold
    obs = problem.observation.observe(bold)
    out = {
        "fc_r": losses.pearson(upper(obs.fc), upper(emp.fc)),
        "fc_rmse": losses.fc_rmse(obs.fc, emp.fc),
        "loss": problem.loss_of(obs),
        "fc": obs.fc,
        "bold_raw": bold,
        "bold": problem.observation.preprocess(bold),
    }
    if obs.fcd is not None and emp.fcd is not None:
        out["fcd_ks"] = losses.fcd_ks(obs.fcd, emp.fcd, None)
        out["fcd"] = obs.fcd
    return out


def evaluate_heldout(problem, params, seeds):
    """Simulate ``params`` on each held-out seed: metrics (mean over seeds) and the first
    seed's simulated FC, FCD and BOLD (raw and preprocessed)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    dtype = problem.weights.dtype
    values = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    run = jax.jit(_heldout_run)
    runs = [jax.tree.map(np.asarray, run(problem, values, jax.random.PRNGKey(int(s))))
            for s in seeds]
    metrics = {}
    for k in ("fc_r", "fc_rmse", "fcd_ks", "loss"):
        if k in runs[0]:
            vals = np.array([float(r[k]) for r in runs])
            metrics[k] = float(np.mean(vals)) if np.all(np.isfinite(vals)) else float("nan")
    return metrics, runs[0]


def _stage_record(rec):
    """The arrays and numbers of one :class:`bnmfit.fit.StageRecord`."""
    import numpy as np

    hist = dict(rec.history)
    out = {"name": rec.name, "optimizer": rec.optimizer}
    for key in ("loss", "objective", "heldout_loss", "grad_norm", "rejected", "lr_scale"):
        if hist.get(key) is not None:
            out[key] = np.asarray(hist[key])
    params = {k: np.asarray(v) for k, v in (hist.get("params") or {}).items()}
    out["traj"] = {k: v for k, v in params.items() if v.ndim == 2}  # (steps, n_starts)
    out["traj_regional"] = {k: v for k, v in params.items() if v.ndim == 3}
    out["best_start"] = int(rec.best_start)
    out["wall_time"] = float(rec.wall_time)
    out["steps_run"] = int(rec.steps_run)
    out["n_rejected"] = int(rec.n_rejected)
    out["selection_loss"] = np.asarray(rec.selection_loss)
    out["heldout"] = {k: v for k, v in dict(rec.heldout).items() if np.ndim(v) == 0}
    out["params"] = {k: np.asarray(v) for k, v in dict(rec.params).items()}
    return out


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@click.option("--connectome", required=True, type=FILE, help="sub-X_connectome.h5.")
@click.option("--empirical", required=True, type=FILE, help="sub-X_desc-empirical_fc.h5.")
@click.option("--explore", "explore_h5", required=True, type=FILE,
              help="sub-X_explore.h5 (the refinement starts: its top points).")
@cli.config_options
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs of this job (default: resources.gpu of the config).")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False),
              help="Where the optimiser state is saved every refinement.checkpoint_every "
                   "steps, so a killed job resumes (removed after success).")
@click.option("--output-params", required=True, type=click.Path(dir_okay=False),
              help="The fitted parameters JSON to write.")
@click.option("--output-fit", required=True, type=click.Path(dir_okay=False),
              help="The fit history HDF5 to write.")
def main(subject, connectome, empirical, explore_h5, config_file, config_json, gpus,
         checkpoint_dir, output_params, output_fit):
    """Refine a subject's fit by gradient descent through the simulator: start from the
    best explored points (the top of sub-X_explore.h5), run refinement.stages in order
    (each from where the previous ended, with its free parameters, bounds, optimiser,
    learning rate and steps), keep the best start, and evaluate it on held-out noise seeds.

    Writes sub-X_fit.h5 (loss history per stage and start, simulated FC/FCD/BOLD of the
    best fit) and sub-X_desc-fitted_params.json (parameters, held-out metrics, wall time,
    provenance).
    """
    import h5py
    import numpy as np

    from bnmfit import config as bconfig
    from bnmfit import fit, recipe
    from bnmfit.errors import DataError
    from bnmfit.io import h5_file, read_h5, write_json
    from bnmfit.losses import loss_spec

    cfg = cli.read_config(config_file, config_json)
    cfg = bconfig.rule_config(cfg, "refine")
    cli.configure_jax(cfg, gpu=gpus)
    t_start = time.time()
    problem = recipe.problem_from_files(cfg, connectome, empirical)
    ex, ex_attrs = read_h5(explore_h5)
    names = list(ex["names"])
    top = np.asarray(ex.get("top", []), dtype=np.int64)
    if top.size == 0:
        raise DataError(f"{explore_h5}: no refinement starts (every explored point "
                        "diverged?); re-run the exploration with other ranges")
    points = np.asarray(ex["points"])
    starts = [{n: float(points[i, d]) for d, n in enumerate(names)} for i in top]
    stages = recipe.build_stages(cfg)
    spec = loss_spec(cfg)
    ref = cfg["refinement"]
    heldout = [int(s) for s in ref["heldout_seeds"]]
    seed = int(cfg["noise"]["seed"])
    chash = bconfig.config_hash(cfg)
    ckpt = Path(checkpoint_dir) / chash if checkpoint_dir else None
    cli.log(f"refine sub-{subject}: {len(starts)} starts, stages "
            f"{', '.join(f'{s.name} ({s.steps} steps)' for s in stages) or 'none'}; "
            f"{problem.spec.n_tr} TRs at dt {problem.spec.dt:g} ms; loss {spec.describe()}")

    records = []
    if stages:
        bars: dict[str, cli.Progress] = {}
        clock = {"t": time.monotonic()}

        def progress(stage_name, step, steps, loss):
            bar = bars.get(stage_name)
            if bar is None:
                for b in bars.values():
                    b.close()
                bar = bars[stage_name] = cli.Progress(f"refine sub-{subject} {stage_name}",
                                                      total=steps, start=clock["t"])
            clock["t"] = time.monotonic()
            bar.update(step, steps, info=f"loss {float(loss) + spec.offset:.4f}")

        result = fit.refine(problem, stages, starts, seed=seed, heldout_seeds=tuple(heldout),
                            checkpoint_dir=ckpt, checkpoint_every=int(ref["checkpoint_every"]),
                            progress=progress)
        for b in bars.values():
            b.close()
        params = {k: np.asarray(v) for k, v in dict(result.params).items()}
        records = [_stage_record(r) for r in result.stages]
        best_start = records[0]["best_start"]
    else:
        params = {k: np.asarray(v) for k, v in starts[0].items()}
        best_start = 0

    cli.log(f"refine sub-{subject}: evaluating the fit on held-out seeds {heldout}")
    metrics, sim = evaluate_heldout(problem, params, heldout)
    if "loss" in metrics:
        metrics["loss"] += spec.offset
    stage_metrics = {}
    for r in records:
        h = r["heldout"]
        stage_metrics[r["name"]] = {
            "fc_r": float(h.get("fc_r", float("nan"))),
            "loss": float(h.get("loss", float("nan"))) + spec.offset,
            "start_fc_r": float(h.get("start_fc_r", float("nan"))),
            "start_loss": float(h.get("start_loss", float("nan"))) + spec.offset,
        }
    if records:  # the last stage's result is the final fit: all its metrics are known
        stage_metrics[records[-1]["name"]].update(metrics)
    warnings = []
    bad = sorted(k for k in ("fc_r", "fc_rmse", "loss") if k in metrics
                 and not np.isfinite(metrics[k]))
    if bad:  # recorded, never a silent number: the simulation of the fit is degenerate
        warnings.append(
            f"the fitted parameters give non-finite held-out {', '.join(bad)} (the simulation "
            "diverged or is flat): do not use this fit; narrow the refinement domains or the "
            "exploration ranges")
        cli.log(f"warning: sub-{subject}: {warnings[-1]}")
    wall = time.time() - t_start
    stage_wall = {r["name"]: r["wall_time"] for r in records} or {"total": wall}

    prov = cli.provenance(cfg, [connectome, empirical, explore_h5],
                          {"fit": seed, "heldout": heldout,
                           "explore": ex_attrs.get("seeds")})
    # ---------------------------------------------------------------- sub-X_fit.h5
    with h5_file(output_fit) as f:
        for i, r in enumerate(records):
            g = f.create_group(f"stage-{i}-{r['name']}")
            for key in ("loss", "objective", "heldout_loss", "grad_norm", "rejected",
                        "lr_scale", "selection_loss"):
                if key in r:
                    v = r[key]
                    if key in ("loss", "objective", "heldout_loss", "selection_loss"):
                        v = v + spec.offset
                    g.create_dataset(key, data=v)
            t = g.create_group("traj")
            for k, v in r["traj"].items():
                t.create_dataset(k, data=v)
            if r["traj_regional"]:
                t = g.create_group("traj_regional")
                for k, v in r["traj_regional"].items():
                    t.create_dataset(k, data=v, compression="gzip")
            for key in ("best_start", "wall_time", "steps_run", "n_rejected"):
                g.attrs[key] = r[key]
            g.attrs["optimizer"] = r["optimizer"]
            sm = stage_metrics[r["name"]]
            g.attrs["heldout_fc_r"] = sm["fc_r"]
            g.attrs["heldout_loss"] = sm["loss"]
            g.attrs["free"] = cli.json_dumps([p.name for p in stages[i].free])
        f.create_dataset("sim_fc", data=sim["fc"])
        if "fcd" in sim:
            f.create_dataset("sim_fcd", data=sim["fcd"])
        f.create_dataset("sim_bold", data=sim["bold"], compression="gzip")
        f.create_dataset("sim_bold_raw", data=sim["bold_raw"], compression="gzip")
        f.create_dataset("start_points", data=points[top])
        f.create_dataset("start_names", data=np.array(names, dtype=object),
                         dtype=h5py.string_dtype())
        f.attrs["subject"] = subject
        f.attrs["best_start"] = best_start
        f.attrs["wall_time"] = wall
        f.attrs["heldout_fc_rmse"] = metrics.get("fc_rmse", float("nan"))
        f.attrs["heldout_fcd_ks"] = metrics.get("fcd_ks", float("nan"))
        f.attrs["heldout_fc_r"] = metrics.get("fc_r", float("nan"))
        f.attrs["heldout_loss"] = metrics.get("loss", float("nan"))
        f.attrs["heldout_seed"] = heldout[0]
        f.attrs["loss_offset"] = spec.offset
        f.attrs["loss_expression"] = spec.expression or ""
        f.attrs["loss_terms"] = cli.json_dumps([list(t) for t in spec.terms])
        structured = ["versions", "seeds", "inputs"]  # JSON text, listed in __json__
        for k, v in prov.items():
            f.attrs[k] = cli.json_dumps(v) if k in structured else v
        f.attrs["__json__"] = cli.json_dumps([*structured, "loss_terms"])

    # ---------------------------------------------------------------- params JSON
    try:
        write_json(output_params, {
            "subject": subject,
            "params": {k: _plain(v) for k, v in params.items()},
            "fixed": {"G": float(problem.G), "sigma": float(problem.sigma),
                      **{k: _plain(v) for k, v in (cfg["model"]["parameters"] or {}).items()}},
            "model": cfg["model"]["name"],
            "metrics": {**metrics, "stages": stage_metrics},
            "wall_time": stage_wall,
            "best_start": best_start,
            "starts": starts,
            "loss": {"terms": [list(t) for t in spec.terms], "offset": spec.offset,
                     "expression": spec.expression},
            "warnings": warnings,
            "provenance": prov,
        })
    except BaseException:  # all outputs of the rule or none
        Path(output_fit).unlink(missing_ok=True)
        raise
    if ckpt is not None and Path(checkpoint_dir).is_dir():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    fmt = ", ".join(f"{k}={np.mean(v):.4g}" + ("" if np.ndim(v) == 0 else " (mean)")
                    for k, v in params.items())
    cli.log(f"refine sub-{subject}: {fmt}; held-out FC r {metrics.get('fc_r', float('nan')):.3f}"
            f", RMSE {metrics.get('fc_rmse', float('nan')):.3f}"
            + (f", FCD KS {metrics['fcd_ks']:.3f}" if "fcd_ks" in metrics else "")
            + f"; {wall:.1f} s → {output_params}, {output_fit}")


if __name__ == "__main__":
    main()
