#!/usr/bin/env python
"""Rule gather_explore: join a subject's exploration chunks, extend the box where its best
point lies on an edge, and pick the refinement starts."""

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
  python scripts/gather_explore.py --subject 01 --config config/config.yaml \\
    --connectome results/sub-01/sub-01_connectome.h5 \\
    --empirical results/sub-01/sub-01_desc-empirical_fc.h5 \\
    --output results/sub-01/sub-01_explore.h5 results/sub-01/explore/chunk-*.h5
"""

FILE = click.Path(exists=True, dir_okay=False)


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@click.option("--connectome", type=FILE, help="sub-X_connectome.h5 (to extend the box).")
@click.option("--empirical", type=FILE, help="sub-X_desc-empirical_fc.h5 (to extend the box).")
@cli.config_options
@click.option("--gpus", type=click.IntRange(min=0), default=None,
              help="GPUs of this job (default: resources.gpu of the config).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The gathered exploration HDF5 to write.")
@click.argument("chunks", nargs=-1, required=True, type=FILE)
def main(subject, connectome, empirical, config_file, config_json, gpus, output, chunks):
    """Join the chunk files of one exploration (in any order) into the full landscape; while
    its best point lies on an edge of the box, simulate points beyond it (at most
    exploration.extend rounds, within the domains of the refinement stages' free
    parameters; needs --connectome and --empirical); then pick the refinement starts: the
    refinement.starts best points at least refinement.min_separation apart.

    The file holds names, points (P × D), loss (P × R), mean_loss, std_loss, fc_r,
    diverged, extension_round (P), top (k indices into points, best first) and the chunks'
    attributes (axes, sampler, seeds, provenance) with extend, extensions and edge.
    """
    from bnmfit import config as bconfig
    from bnmfit import explore, recipe, results

    full = cli.read_config(config_file, config_json)  # validated: every default filled in
    cfg = bconfig.rule_config(full, "gather_explore")
    ref, ex = cfg["refinement"], cfg["exploration"]
    cli.configure_jax(cfg, gpu=gpus)
    t0, label = time.time(), f"gather_explore sub-{subject}"
    inputs = [p for p in (connectome, empirical) if p]
    land = results.Landscape.gather(
        [results.ExploreChunk.read(c) for c in chunks], chunks, starts=int(ref["starts"]),
        min_separation=float(ref["min_separation"]), config_hash=bconfig.config_hash(cfg),
        inputs=inputs)
    problem, rounds = None, 0
    if len(inputs) == 2:
        problem, rounds = recipe.problem_from_files(cfg, connectome, empirical), int(ex["extend"])
    elif ex["extend"]:
        cli.log(f"{label}: the box is not extended: give --connectome and --empirical")
    domains = explore.extension_domains(recipe.build_stages(full), land.names)
    bars: dict[int, cli.Progress] = {}

    def progress(r, faces, done, total):
        if r not in bars:
            cli.log(f"{label}: extension {r}/{rounds}: {total} points past "
                    f"{explore.describe_faces(faces)}")
            bars[r] = cli.Progress(f"{label} extension {r}", total=total)
        bars[r].update(done, total)

    land = explore.extend_landscape(problem, land, domains, rounds=rounds,
                                    batch_size=int(ex["batch_size"]), progress=progress)
    land.write(output)
    for rank, i in enumerate(land.top):
        at = cli.describe(dict(zip(land.names, land.points[i], strict=True)))
        cli.log(f"sub-{subject}: start {rank}: loss {land.mean_loss[i]:.4f}, "
                f"FC r {land.fc_r[i]:.3f} at {at}")
    if land.edge_warning():
        cli.log(f"warning: sub-{subject}: {land.edge_warning()}")
    cli.log(f"{label}: done in {time.time() - t0:.1f} s, {len(land.points)} points "
            f"({land.n_points} explored, {len(land.points) - land.n_points} by extension; "
            f"{int(land.diverged.sum())} diverged), {len(land.top)} starts → {output}")

if __name__ == "__main__":
    main()
