#!/usr/bin/env python
"""The subjects sheet from derivative folders (no rule: run it once, before the workflow)."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

import click  # noqa: E402

from bnmfit import cli  # noqa: E402

EXAMPLE = """\b
Examples:
  python scripts/make_sheet.py --bids-sc derivatives/qsirecon \\
    --bids-func derivatives/xcp_d --atlas 4S156Parcels \\
    --measure sift_invnodevol_radius2_count --output config/my_subjects.tsv
  python scripts/make_sheet.py --hcp /data/HCP --output my_subjects.tsv
  python scripts/make_sheet.py --tvb zips/ --func timeseries/ --tr 2 -o my_subjects.tsv
"""

DIR = click.Path(exists=True, file_okay=False)


@cli.command(epilog=EXAMPLE)
@click.option("--bids-sc", type=DIR, help="QSIRecon folder: sub-X[_ses-Y]_..._connectivity.mat.")
@click.option("--bids-func", type=DIR, help="XCP-D/BIDS folder: *_timeseries.tsv, *_relmat.tsv.")
@click.option("--hcp", type=DIR, help="HCP folder: <subject>/MNINonLinear/Results, .../connectome.")
@click.option("--tvb", type=DIR, help="Folder of TVB connectivity zips named <subject>*.zip.")
@click.option("--func", type=DIR, help="Flat folder of time series named <subject>*.")
@click.option("--atlas", help="SC atlas (QSIRecon atlas, atlas-/seg- entity, part of a name).")
@click.option("--func-atlas", help="Time-series atlas when named otherwise (default: --atlas).")
@click.option("--measure", help="SC weights measure (QSIRecon; desc/meas/stat).")
@click.option("--lengths-measure", help="SC tract-length measure (QSIRecon; desc/meas/stat).")
@click.option("--task", default="rest", show_default=True, help="BIDS task of the time series.")
@click.option("--match", multiple=True, metavar="KEY-LABEL",
              help="An entity the time-series names must carry, e.g. space-fsLR (repeatable).")
@click.option("--tr", type=click.FloatRange(min=0, min_open=True),
              help="TR in s of time series without a sidecar, header or *_bold.json of the run.")
@click.option("--base", type=DIR, default=".", show_default=True,
              help="Directory the sheet's paths are relative to: where snakemake will run.")
@click.option("--output", "-o", default="subjects.tsv", show_default=True,
              type=click.Path(dir_okay=False), help="The subjects sheet (TSV) to write.")
def main(bids_sc, bids_func, hcp, tvb, func, atlas, func_atlas, measure, lengths_measure, task,
         match, tr, base, output):
    """Write the subjects sheet from derivative folders: find each subject's SC and time
    series (or FC), pair them by subject label, and write one row per paired subject.

    Runs are ordered by session, then run: the first is bold (or fc), the second
    validation_bold (or validation_fc); further runs are listed as not used. What was
    paired, and what could not be (the subject, what is missing, the files found), is
    printed. Exit 0 when at least one subject was paired and every row is valid.
    """
    from bnmfit.sheet import make_sheet, write_sheet

    sheet = make_sheet(bids_sc=bids_sc, bids_func=bids_func, hcp=hcp, tvb=tvb, func=func,
                       atlas=atlas, func_atlas=func_atlas, measure=measure,
                       lengths_measure=lengths_measure, task=task, match=match, tr=tr, base=base)
    for line in sheet.report():
        cli.log(line)
    rows = write_sheet(sheet, output)
    cli.log(f"{len(rows)} rows → {output} (paths relative to {Path(base).resolve()})")


if __name__ == "__main__":
    main()
