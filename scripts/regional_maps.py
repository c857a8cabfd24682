#!/usr/bin/env python
"""Rule regional_maps: one subject's regional maps and groupings, for free parameters of
scope map and group."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

import click  # noqa: E402

from bnmfit import cli  # noqa: E402

EXAMPLE = """\b
Example:
  python scripts/regional_maps.py --subject 01 \\
    --connectome results/sub-01/sub-01_connectome.h5 \\
    --empirical results/sub-01/sub-01_desc-empirical_fc.h5 \\
    --fc 01 results/sub-01/sub-01_desc-empirical_fc.h5 \\
    --fc 02 results/sub-02/sub-02_desc-empirical_fc.h5 \\
    --fc 03 results/sub-03/sub-03_desc-empirical_fc.h5 \\
    --atlas-table aal2 resources/maps/aal2_maps.tsv \\
    --map strength --map fc_gradient --map fc_strength --grouping homologues \\
    --output results/sub-01/sub-01_desc-maps.tsv
"""

FILE = click.Path(exists=True, dir_okay=False)


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@click.option("--connectome", required=True, type=FILE, help="sub-X_connectome.h5.")
@click.option("--empirical", type=FILE,
              help="The subject's sub-X_desc-empirical_fc.h5 (its training FC: fc_strength).")
@click.option("--fc", "fcs", multiple=True, type=(str, FILE), metavar="SUBJECT FILE",
              help="A subject's sub-X_desc-empirical_fc.h5 (every subject: for fc_gradient).")
@click.option("--table", "tables", multiple=True, type=FILE,
              help="A TSV with a row per region (the sheet's maps or labels file).")
@click.option("--atlas-table", "atlas_tables", multiple=True, type=(str, FILE),
              metavar="ATLAS FILE", help="heterogeneity.maps: used when it covers the regions.")
@click.option("--map", "used_maps", multiple=True, help="A map a stage uses (checked).")
@click.option("--grouping", "used_groupings", multiple=True,
              help="A grouping a stage uses (checked).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The maps TSV to write.")
def main(subject, connectome, empirical, fcs, tables, atlas_tables, used_maps, used_groupings,
         output):
    """Write a subject's regional maps and groupings (sub-X_desc-maps.tsv: a label column,
    one column per map, one per grouping, in the connectome's region order): the SC's node
    strength, the homologues grouping, the columns of the tables, and (when a stage uses
    it) fc_gradient, the principal gradient of the other subjects' mean FC (their --fc
    files; the subject's own FC is left out), and fc_strength, the node strength of the
    subject's own training FC (--empirical; its validation data are never read). The maps
    and groupings the stages use are checked here (known, numeric, finite, not constant)."""
    from bnmfit import maps, results

    conn = results.ConnectomeFile.read(connectome)
    cohort = None
    if "fc_gradient" in used_maps:  # every subject's region labels and FC
        read = results.EmpiricalFile.read
        cohort = {s: (e.labels, e.fc) for s, e in ((s, read(path)) for s, path in fcs)}
    training_fc = None
    if "fc_strength" in used_maps and empirical is not None:
        training_fc = results.EmpiricalFile.read(empirical).fc
    regions = maps.subject_maps(
        subject,
        conn.labels,
        conn.weights,
        tables=tables,
        atlas_tables=dict(atlas_tables),
        fcs=cohort,
        training_fc=training_fc,
        maps=used_maps,
        groupings=used_groupings,
    )
    regions.write(output)
    cli.log(f"regional maps sub-{subject}: {regions.n_regions} regions; maps "
            f"{', '.join(regions.maps)}; groupings {', '.join(regions.groupings)} → {output}")


if __name__ == "__main__":
    main()
