#!/usr/bin/env python
"""Rule refine: gradient refinement of one subject from its best explored points."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

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


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@click.option("--connectome", required=True, type=FILE, help="sub-X_connectome.h5.")
@click.option("--empirical", required=True, type=FILE,
              help="sub-X_desc-empirical_fc.h5 (the target and the validation data).")
@click.option("--explore", "explore_h5", required=True, type=FILE,
              help="sub-X_explore.h5 (the refinement starts: its top points).")
@click.option("--maps", "maps_tsv", type=FILE,
              help="sub-X_desc-maps.tsv: regional maps and groupings (scope map or group).")
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
def main(subject, connectome, empirical, explore_h5, maps_tsv, config_file, config_json, gpus,
         checkpoint_dir, output_params, output_fit):
    """Refine a subject's fit through the simulator from the best explored points (the top
    of sub-X_explore.h5): refinement.stages in order, each from where the previous ended,
    each judged on the validation data and given standard errors; then score the fit on
    held-out noise and the validation data, and flag what to know before trusting it.
    Writes sub-X_fit.h5 (history per stage and start, the fit's simulated FC/FCD/BOLD) and
    sub-X_desc-fitted_params.json.
    """
    from bnmfit import config as bconfig
    from bnmfit import recipe, results
    from bnmfit.losses import loss_spec

    cfg = bconfig.rule_config(cli.read_config(config_file, config_json), "refine")
    cli.configure_jax(cfg, gpu=gpus)
    t_start, label = time.time(), f"refine sub-{subject}"
    stages, spec = recipe.build_stages(cfg), loss_spec(cfg)
    ckpt = Path(checkpoint_dir) / bconfig.config_hash(cfg) if checkpoint_dir else None
    plan = ", ".join(f"{s.name} ({s.steps} steps)" for s in stages) or "none"
    cli.log(f"{label}: stages {plan}; loss {spec.describe()}")
    with cli.StageProgress(label, offset=spec.offset) as progress:
        fit_file, fitted = recipe.fit_subject(cfg, subject, connectome, empirical, explore_h5,
                                              maps_tsv=maps_tsv, checkpoint_dir=ckpt,
                                              progress=progress)
    for w in fitted.warnings:  # recorded, never a silent number
        cli.log(f"warning: sub-{subject}: {w}")
    for f in fitted.flags:
        cli.log(f"flag: sub-{subject}: {f['code']}: {f['message']}")
    results.write_together([(fit_file, output_fit), (fitted, output_params)])
    if ckpt is not None and Path(checkpoint_dir).is_dir():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    cost = {name: u["n_simulations"] for name, u in fitted.uncertainty.items()}
    cli.log(f"{label}: {cli.describe(fitted.params)}; held-out {cli.describe(fit_file.heldout)};"
            f" standard errors: {cli.describe(cost) or 'none'} simulations; "
            f"{time.time() - t_start:.1f} s → {output_params}, {output_fit}")


if __name__ == "__main__":
    main()
