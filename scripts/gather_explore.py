#!/usr/bin/env python
"""Rule gather_explore: join a subject's exploration chunks and pick the refinement starts."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

import click  # noqa: E402

from bnmfit import cli  # noqa: E402

EXAMPLE = """\b
Example:
  python scripts/gather_explore.py --subject 01 --config config/config.yaml \\
    --output results/sub-01/sub-01_explore.h5 results/sub-01/explore/chunk-*.h5
"""


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@cli.config_options
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The gathered exploration HDF5 to write.")
@click.argument("chunks", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def main(subject, config_file, config_json, output, chunks):
    """Join the chunk files of one exploration (in any order) into the full landscape and
    pick the refinement starts: the refinement.starts best points at least
    refinement.min_separation apart (in the unit box of the axes).

    The file holds names, points (P × D), loss (P × R), mean_loss, std_loss, fc_r,
    diverged (P), top (k indices into points, best first) and the chunks' attributes
    (axes, sampler, seeds, provenance).
    """
    from bnmfit import config as bconfig
    from bnmfit import results

    cfg = bconfig.rule_config(cli.read_config(config_file, config_json), "gather_explore")
    ref = cfg["refinement"]
    land = results.Landscape.gather(
        [results.ExploreChunk.read(c) for c in chunks], chunks, starts=int(ref["starts"]),
        min_separation=float(ref["min_separation"]), config_hash=bconfig.config_hash(cfg))
    land.write(output)
    for rank, i in enumerate(land.top):
        at = cli.describe(dict(zip(land.names, land.points[i], strict=True)))
        cli.log(f"sub-{subject}: start {rank}: loss {land.mean_loss[i]:.4f}, "
                f"FC r {land.fc_r[i]:.3f} at {at}")
    cli.log(f"sub-{subject}: {land.n_points} points ({int(land.diverged.sum())} diverged), "
            f"{len(land.top)} starts → {output}")

if __name__ == "__main__":
    main()
