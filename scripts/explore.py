#!/usr/bin/env python
"""Rule explore: evaluate chunk k of K of one subject's exploration space."""

from __future__ import annotations

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
    from bnmfit import config as bconfig
    from bnmfit import explore, recipe
    from bnmfit.errors import ConfigError
    from bnmfit.io import write_h5
    from bnmfit.losses import loss_spec

    cfg = cli.read_config(config_file, config_json)
    cfg = bconfig.rule_config(cfg, "explore")
    n_chunks = int(cfg["exploration"]["chunks"])
    if k >= n_chunks:
        raise ConfigError(f"--chunk {k} is out of range: exploration.chunks is {n_chunks}, "
                          f"so use 0 ≤ chunk < {n_chunks}")
    cli.configure_jax(cfg, gpu=gpus)
    t0 = time.time()
    problem = recipe.problem_from_files(cfg, connectome, empirical)
    space = recipe.build_space(cfg)
    points = space.points()
    index = explore.chunk(len(points), k, n_chunks)
    seeds = recipe.noise_seeds(cfg)
    spec = loss_spec(cfg)
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
    wall = time.time() - t0
    prov = cli.provenance(cfg, [connectome, empirical], seeds)
    axes = [{"name": a.name, "lo": a.lo, "hi": a.hi, "n": a.n, "scale": a.scale}
            for a in space.axes]
    write_h5(
        output,
        {
            "names": list(space.names),
            "points": res.points,
            "index": index,
            "loss": res.loss + spec.offset,
            "mean_loss": res.mean_loss + spec.offset,
            "std_loss": res.std_loss,
            "fc_r": res.fc_r,
            "diverged": res.diverged,
        },
        {
            "subject": subject,
            "axes": axes,
            "sampler": space.sampler,
            "n_samples": space.n_samples,
            "seeds": seeds,
            "chunk": k,
            "n_chunks": n_chunks,
            "n_points": len(points),
            "loss_terms": [list(t) for t in spec.terms],
            "loss_offset": spec.offset,
            "loss_expression": spec.expression,
            "wall_time": wall,
            **prov,
        },
    )
    n_bad = int(res.diverged.sum())
    best = int(res.mean_loss.argmin()) if len(index) and n_bad < len(index) else None
    msg = f"{n_bad} diverged"
    if best is not None:
        at = ", ".join(f"{n}={v:.4g}" for n, v in zip(space.names, res.points[best], strict=True))
        msg += f"; best loss {res.mean_loss[best] + spec.offset:.4f} at {at}"
    cli.log(f"{label}: done in {wall:.1f} s, {msg} → {output}")


if __name__ == "__main__":
    main()
