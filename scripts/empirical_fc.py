#!/usr/bin/env python
"""Rule empirical_fc: a subject's BOLD → preprocessed BOLD, FC, FCD and QC numbers."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

import click  # noqa: E402

from bnmfit import cli  # noqa: E402
from bnmfit.config import schema_default  # noqa: E402
from bnmfit.io import FC_TRANSFORMS, ORIENTATIONS, sidecar_path  # noqa: E402

EXAMPLE = """\b
Example:
  python scripts/empirical_fc.py --subject 01 \\
    --connectome results/sub-01/sub-01_connectome.h5 \\
    --bold resources/sub-01/sub-01_task-rest_timeseries.tsv.gz \\
    --discard 5 --bandpass 0.01 0.1 --fcd-window 40 --fcd-step 5 \\
    --output results/sub-01/sub-01_desc-empirical_fc.h5 \\
    --qc results/sub-01/sub-01_desc-empirical_qc.json
"""

FILE = click.Path(exists=True, dir_okay=False)


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@click.option("--connectome", required=True, type=FILE, help="sub-X_connectome.h5.")
@click.option("--bold", type=FILE, help="Regional BOLD time series.")
@click.option("--fc", "fc_path", type=FILE, help="A precomputed FC instead of BOLD (no FCD).")
@click.option("--validation-bold", type=FILE, help="A second run, for validation only.")
@click.option("--validation-fc", type=FILE, help="A second run's FC, for validation only.")
@click.option("--validation-split", type=click.FloatRange(0, 1, max_open=True), show_default=True,
              default=schema_default("validation.split"), help="Last part held out (one run).")
@click.option("--labels", type=FILE, help="Region labels of a BOLD file without any.")
@click.option("--dseg", type=FILE, help="Label image of a 4-D NIfTI BOLD.")
@click.option("--dseg-tsv", type=FILE, help="BIDS index/name table of the label image.")
@click.option("--format", "fmt", help="BOLD format when the file name does not tell it.")
@click.option("--key", help="Variable of the BOLD in a .mat/.npz file.")
@click.option("--fc-transform", type=click.Choice(FC_TRANSFORMS),
              help="How the --fc file stores its values (fisher_z: arctanh r).")
@click.option("--orientation", type=click.Choice(ORIENTATIONS), help="Layout of a BOLD array.")
@click.option("--tr", type=click.FloatRange(min=0, min_open=True),
              help="TR in s when neither sidecar nor header gives it.")
@click.option("--discard", type=click.IntRange(min=0), default=schema_default("bold.discard"),
              show_default=True, help="Initial volumes dropped.")
@click.option("--detrend/--no-detrend", default=schema_default("bold.detrend"), show_default=True,
              help="Remove each region's linear trend.")
@click.option("--bandpass", type=(float, float), metavar="LOW HIGH", help="Band-pass in Hz.")
@click.option("--max-nan-run", type=click.IntRange(min=0),
              default=schema_default("bold.max_nan_run"), show_default=True,
              help="Longest run of missing volumes that is interpolated.")
@click.option("--fcd-window", type=click.IntRange(min=0), show_default=True,
              default=schema_default("observation.fcd_window"), help="FCD window in TRs (0: none).")
@click.option("--fcd-step", type=click.IntRange(min=1), show_default=True,
              default=schema_default("observation.fcd_step"), help="FCD window step in TRs.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The empirical-FC HDF5 to write.")
@click.option("--qc", "qc_path", type=click.Path(dir_okay=False),
              help="Also write the quality numbers as JSON here.")
def main(subject, connectome, bold, fc_path, validation_bold, validation_fc, validation_split,
         labels, dseg, dseg_tsv, fmt, key, fc_transform, orientation, tr, discard, detrend,
         bandpass, max_nan_run, fcd_window, fcd_step, output, qc_path):
    """A subject's FC/FCD and validation FC/FCD, processed as the simulated BOLD is."""
    from bnmfit import empirical, results

    if (bold is None) == (fc_path is None):
        raise click.UsageError("give exactly one of --bold and --fc")
    sidecars = [str(sidecar_path(p)) for p in (bold, validation_bold) if p]
    inputs = [p for p in (bold, fc_path, validation_bold, validation_fc, labels, dseg, dseg_tsv,
                          connectome, *sidecars) if p and Path(p).is_file()]
    prep = {"discard": discard, "detrend": detrend, "max_nan_run": max_nan_run,
            "bandpass": tuple(bandpass) if bandpass else None}
    obs = {"fcd_window": fcd_window, "fcd_step": fcd_step}
    prov = results.provenance({"bold": prep, "observation": obs,
                               "validation": {"split": validation_split}}, inputs)
    cli.log(f"sub-{subject}: reading {bold or fc_path}")
    opts = {"fmt": fmt, "key": key, "dseg": dseg, "dseg_tsv": dseg_tsv,
            "orientation": orientation, "fc_transform": fc_transform}
    out = empirical.empirical_record(
        subject, results.ConnectomeFile.read(connectome), bold=bold, fc=fc_path,
        validation_bold=validation_bold, validation_fc=validation_fc, split=validation_split,
        labels=labels and cli.read_labels(labels), read_options=opts, tr=tr, provenance=prov,
        **prep, **obs)
    if fc_path and fcd_window:  # not an error: the loss may not need an FCD
        cli.log(f"sub-{subject}: no BOLD, so no FCD: the fcd_ks loss is unavailable")
    for note in out.qc.get("notes") or []:  # what the FC reader changed, e.g. its diagonal
        cli.log(f"sub-{subject}: note: {note}")
    results.write_together([(out, output)]
                           + ([(results.QualityFile.of(out), qc_path)] if qc_path else []))
    cli.log(f"sub-{subject}: {out.describe()} → {output}")


if __name__ == "__main__":
    main()
