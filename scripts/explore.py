#!/usr/bin/env python
"""Rule explore: evaluate chunk k of K of one subject's exploration space."""

from __future__ import annotations

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
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The chunk's HDF5 file to write.")
def main(subject, connectome, empirical, k, config_file, config_json, gpus, output):
    """Simulate chunk K of a subject's exploration space (exploration.parameters sampled by
    exploration.sampler, split into exploration.chunks contiguous chunks) on
    exploration.seeds noise seeds, and write each point's loss.

    The file holds names (D), points (P_k × D), index (P_k, the points' positions in the
    whole space), loss (P_k × R), mean_loss, std_loss, fc_r, diverged (P_k), and the
    attributes axes, sampler, seeds, chunk, n_chunks, n_points and provenance.
    """
    import numpy as np

    from bnmfit import config as bconfig
    from bnmfit import explore, recipe, results
    from bnmfit.errors import ConfigError
    from bnmfit.losses import loss_spec

    cfg = bconfig.rule_config(cli.read_config(config_file, config_json), "explore")
    n_chunks = int(cfg["exploration"]["chunks"])
    if k >= n_chunks:
        raise ConfigError(f"--chunk {k} is out of range: exploration.chunks is {n_chunks}, "
                          f"so use 0 ≤ chunk < {n_chunks}")
    cli.configure_jax(cfg, gpu=gpus)
    t0 = time.time()
    problem = recipe.problem_from_files(cfg, connectome, empirical)
    for w in recipe.subject_warnings(problem, empirical):  # e.g. shorter than the data
        cli.log(f"warning: sub-{subject}: {w}")
    space = recipe.build_space(cfg)
    points = space.points()
    index = explore.chunk(len(points), k, n_chunks)
    seeds, spec = recipe.noise_seeds(cfg), loss_spec(cfg)
    label = f"explore sub-{subject} chunk {k}/{n_chunks}"
    cli.log(f"{label}: {len(index)} of {len(points)} points × {len(seeds)} seeds, "
            f"{problem.spec.n_tr} TRs at dt {problem.spec.dt:g} ms, loss {spec.describe()}")
    with cli.Progress(label, total=len(index)) as bar:
        res = explore.evaluate(
            problem, space.names, points[index], seeds,
            batch_size=int(cfg["exploration"]["batch_size"]),
            progress=lambda done, total: bar.update(done, total),
            n_total=len(points),  # same batch shape for every chunking: same losses
        )
    prov = results.provenance(cfg, [connectome, empirical], seeds)
    out = results.ExploreChunk.of(res, subject=subject, space=space, index=index, chunk=k,
                                  n_chunks=n_chunks, spec=spec, provenance=prov)
    out.write(output)
    msg = f"{int(out.diverged.sum())} diverged"
    if np.isfinite(out.mean_loss).any():
        best = int(np.nanargmin(np.where(np.isfinite(out.mean_loss), out.mean_loss, np.nan)))
        msg += f"; best loss {out.mean_loss[best]:.4f} at " + cli.describe(
            dict(zip(out.names, out.points[best], strict=True)))
    cli.log(f"{label}: done in {time.time() - t0:.1f} s, {msg} → {output}")

if __name__ == "__main__":
    main()
