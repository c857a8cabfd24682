#!/usr/bin/env python
"""Rule ingest_connectome: read one subject's SC, validate and normalise it, write HDF5."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

import click  # noqa: E402

from bnmfit import cli  # noqa: E402
from bnmfit.config import schema_choices, schema_default  # noqa: E402

EXAMPLE = """\b
Example:
  python scripts/ingest_connectome.py --subject 01 \\
    --weights resources/sub-01/sub-01_desc-weights_relmat.tsv \\
    --lengths resources/sub-01/sub-01_desc-lengths_relmat.tsv \\
    --normalise max --output results/sub-01/sub-01_connectome.h5
"""

FILE = click.Path(exists=True, dir_okay=False)


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@click.option("--weights", required=True, type=FILE, help="SC weights file.")
@click.option("--lengths", type=FILE, help="Tract lengths file, mm (default: no delays).")
@click.option("--labels", type=FILE, help="Region labels, one per line, for files without.")
@click.option("--format", "fmt", help="Format of the SC files when the name does not tell it.")
@click.option("--key", help="Variable of the weights in a .mat/.npz file.")
@click.option("--lengths-key", help="Variable of the lengths in a .mat/.npz file.")
@click.option("--atlas", help="Atlas of a QSIRecon *_connectivity.mat file.")
@click.option("--measure", help="Weights measure of a QSIRecon file.")
@click.option("--lengths-measure", help="Lengths measure of a QSIRecon file.")
@click.option("--centres", type=FILE, help="Region centres: label, x, y, z (mm) per line.")
@click.option("--dseg", type=FILE, help="NIfTI label image: region centres from its centroids.")
@click.option("--dseg-tsv", type=FILE, help="BIDS index/name table of the label image.")
@click.option("--normalise", type=click.Choice(schema_choices("connectome.normalise")),
              default=schema_default("connectome.normalise"), show_default=True,
              help="Normalisation of the weights.")
@click.option("--symmetrise/--no-symmetrise", default=schema_default("connectome.symmetrise"),
              show_default=True, help="Average the matrices with their transposes.")
@click.option("--missing", type=click.Choice(schema_choices("connectome.missing")),
              default=schema_default("connectome.missing"), show_default=True,
              help="What to do with n/a entries.")
@click.option("--isolated", type=click.Choice(schema_choices("connectome.isolated")),
              default=schema_default("connectome.isolated"), show_default=True,
              help="Regions without any connection: warn (keep and log them) or error.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The connectome HDF5 to write.")
def main(subject, weights, lengths, labels, fmt, key, lengths_key, atlas, measure,
         lengths_measure, centres, dseg, dseg_tsv, normalise, symmetrise, missing, isolated,
         output):
    """Read a subject's structural connectome (weights, tract lengths, labels), check it,
    normalise it, and write sub-X_connectome.h5.

    The file holds weights and lengths (N × N, normalised as asked), weights_raw (as read),
    labels, centres (N × 3 mm) and networks when known, and the attributes normalisation,
    symmetric, isolated, warnings, inputs (paths and SHA-256) and provenance.
    """
    from bnmfit import results
    from bnmfit.connectome import Connectome
    from bnmfit.io import read_connectome, read_networks, region_centres

    cfg = {"connectome": {"normalise": normalise, "symmetrise": symmetrise,
                          "missing": missing, "isolated": isolated}}
    cli.log(f"sub-{subject}: reading {weights}" + (f" and {lengths}" if lengths else ""))
    given = cli.read_labels(labels) if labels else None  # before any message names a region
    w, ln, lab = read_connectome(weights, lengths, fmt=fmt, key=key, atlas=atlas, missing=missing,
                                 measure=measure, lengths_key=lengths_key,
                                 lengths_measure=lengths_measure, labels=given)
    conn = Connectome.from_arrays(w, ln, lab, normalise=normalise, symmetrise=symmetrise,
                                  isolated=isolated)
    xyz = region_centres(conn.labels, weights=weights, fmt=fmt, centres=centres, dseg=dseg,
                         dseg_tsv=dseg_tsv)
    nets = read_networks(labels) if given == list(conn.labels) else None  # the file's order
    inputs = [p for p in (weights, lengths, labels, centres, dseg, dseg_tsv) if p]
    out = results.ConnectomeFile.of(subject, conn, w, centres=xyz, networks=nets,
                                    provenance=results.provenance(cfg, inputs))  # no seeds
    out.write(output)
    for warning in out.warnings:  # kept in the file: the report and the run's end list them
        cli.log(f"warning: {warning}")
    cli.log(f"sub-{subject}: {conn.n_regions} regions, normalisation {normalise} → {output}")


if __name__ == "__main__":
    main()
