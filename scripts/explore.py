#!/usr/bin/env python
"""Rule explore: chunk k of K of one subject's exploration space, or its CMA-ES/NSGA-II run."""

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
  python scripts/explore.py --subject 01 --config config/config.yaml \\
    --connectome results/sub-01/sub-01_connectome.h5 \\
    --empirical results/sub-01/sub-01_desc-empirical_fc.h5 \\
    --chunk 0 --output results/sub-01/explore/chunk-0.h5
"""

FILE = click.Path(exists=True, dir_okay=False)


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@click.option("--connectome", required=True, type=FILE, help="sub-X_connectome.h5.")
@click.option("--empirical", required=True, type=FILE, help="sub-X_desc-empirical_fc.h5.")
@click.option("--chunk", "k", type=click.IntRange(min=0), default=0, show_default=True,
              help="Which chunk (0-based) of exploration.chunks to evaluate.")
@cli.config_options
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs of this job (default: resources.gpu of the config).")
@click.option("--checkpoint-dir", "ckpt_dir", type=click.Path(file_okay=False),
              help="cmaes/nsga2: where every generation is saved (a killed job resumes).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The chunk's HDF5 file to write.")
def main(subject, connectome, empirical, k, config_file, config_json, gpus, ckpt_dir, output):
    """Simulate chunk K of a subject's exploration space (exploration.parameters sampled by
    exploration.sampler, split into exploration.chunks chunks) on exploration.seeds noise
    seeds, or (cmaes/nsga2) run its whole search as chunk 0 of 1, and write each point's
    loss: names, points, index (in the space), loss (P × R), mean_loss, std_loss, fc_r,
    diverged, the space's attributes and provenance; cmaes/nsga2 add the group evolution.
    """
    import numpy as np

    from bnmfit import config as bconfig
    from bnmfit import explore, recipe, results
    from bnmfit.errors import ConfigError
    from bnmfit.losses import loss_spec

    cfg = bconfig.rule_config(cli.read_config(config_file, config_json), "explore")
    space, ex = recipe.build_space(cfg), cfg["exploration"]
    n_chunks = 1 if space.evolutionary else int(ex["chunks"])
    if k >= n_chunks:
        raise ConfigError(f"--chunk {k} is out of range: exploration.chunks is {n_chunks}, "
                          f"so use 0 ≤ chunk < {n_chunks}")
    cli.configure_jax(cfg, gpu=gpus)
    t0, bs = time.time(), int(ex["batch_size"])
    problem = recipe.problem_from_files(cfg, connectome, empirical)
    for w in recipe.subject_warnings(problem, empirical):  # e.g. shorter than the data
        cli.log(f"warning: sub-{subject}: {w}")
    seeds, spec = recipe.noise_seeds(cfg), loss_spec(cfg)
    label = f"explore sub-{subject} chunk {k}/{n_chunks}"
    cli.log(f"{label}: {space.sampler} over {', '.join(space.names)}, {len(seeds)} seeds, "
            f"{problem.spec.n_tr} TRs at dt {problem.spec.dt:g} ms, loss {spec.describe()}")
    ckpt = Path(ckpt_dir) / bconfig.config_hash(cfg) if ckpt_dir else None
    if space.evolutionary:
        with cli.Progress(label, total=space.strategy.generations) as bar:
            res = explore.evolve(problem, space, seeds, batch_size=bs, checkpoint_dir=ckpt,
                                 progress=lambda g, n, best: bar.update(
                                     g, n, info=f"best loss {best + spec.offset:.4f}"))
        index = np.arange(len(res.points))
    else:
        points = space.points()
        index = explore.chunk(len(points), k, n_chunks)
        with cli.Progress(label, total=len(index)) as bar:
            res = explore.evaluate(problem, space.names, points[index], seeds, batch_size=bs,
                                   progress=lambda done, total: bar.update(done, total),
                                   n_total=len(points))  # every chunking: the same losses
    prov = results.provenance(cfg, [connectome, empirical], seeds)
    out = results.ExploreChunk.of(res, subject=subject, space=space, index=index, chunk=k,
                                  n_chunks=n_chunks, spec=spec, provenance=prov)
    out.write(output)
    if ckpt is not None:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    msg = f"{len(index)} points, {int(out.diverged.sum())} diverged"
    msg += f" (stop: {out.evolution.stop})" if out.evolution is not None else ""
    if np.isfinite(out.mean_loss).any():
        best = int(np.nanargmin(np.where(np.isfinite(out.mean_loss), out.mean_loss, np.nan)))
        msg += f"; best loss {out.mean_loss[best]:.4f} at " + cli.describe(
            dict(zip(out.names, out.points[best], strict=True)))
    cli.log(f"{label}: done in {time.time() - t0:.1f} s, {msg} → {output}")

if __name__ == "__main__":
    main()
