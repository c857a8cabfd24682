#!/usr/bin/env python
"""Rule empirical_fc: a subject's BOLD → preprocessed BOLD, FC, FCD and QC numbers."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parents[1] / "src"
if (_SRC / "bnmfit").is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

import click  # noqa: E402

from bnmfit import cli  # noqa: E402
from bnmfit.config import schema_default  # noqa: E402

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
@click.option("--connectome", required=True, type=FILE,
              help="sub-X_connectome.h5 (region order and labels, SC for the QC).")
@click.option("--bold", type=FILE, help="Regional BOLD time series.")
@click.option("--fc", "fc_path", type=FILE,
              help="A precomputed FC matrix instead of BOLD (no FCD then).")
@click.option("--labels", type=FILE, help="Region labels of a BOLD file without any.")
@click.option("--dseg", type=FILE, help="Label image of a 4-D NIfTI BOLD.")
@click.option("--dseg-tsv", type=FILE, help="BIDS index/name table of the label image.")
@click.option("--format", "fmt", help="BOLD format when the file name does not tell it.")
@click.option("--key", help="Variable of the BOLD in a .mat/.npz file.")
@click.option("--orientation", type=click.Choice(["time-by-region", "region-by-time"]),
              help="Layout of a BOLD array.")
@click.option("--tr", type=click.FloatRange(min=0, min_open=True),
              help="TR in s when neither sidecar nor header gives it.")
@click.option("--discard", type=click.IntRange(min=0), default=schema_default("bold.discard"),
              show_default=True, help="Initial volumes dropped.")
@click.option("--detrend/--no-detrend", default=schema_default("bold.detrend"), show_default=True,
              help="Remove each region's linear trend.")
@click.option("--bandpass", type=(float, float), default=None, metavar="LOW HIGH",
              help="Band-pass edges in Hz.")
@click.option("--max-nan-run", type=click.IntRange(min=0),
              default=schema_default("bold.max_nan_run"), show_default=True,
              help="Longest run of missing volumes that is interpolated.")
@click.option("--fcd-window", type=click.IntRange(min=0),
              default=schema_default("observation.fcd_window"), show_default=True,
              help="FCD window in TRs (0: no FCD).")
@click.option("--fcd-step", type=click.IntRange(min=1),
              default=schema_default("observation.fcd_step"), show_default=True,
              help="FCD window step in TRs.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The empirical-FC HDF5 to write.")
@click.option("--qc", "qc_path", type=click.Path(dir_okay=False),
              help="Also write the quality numbers as JSON here.")
def main(subject, connectome, bold, fc_path, labels, dseg, dseg_tsv, fmt, key,
         orientation, tr, discard, detrend, bandpass, max_nan_run, fcd_window, fcd_step,
         output, qc_path):
    """Compute a subject's empirical FC (and FCD) from its regional BOLD, in the region
    order of its connectome, with exactly the processing the simulated BOLD gets (discard,
    detrend, band-pass, z-score), and write sub-X_desc-empirical_fc.h5.

    The file holds bold (T' × N, preprocessed), fc (N × N), fcd (W × W, when a window is
    set), labels, and the attributes tr (s), n_tr (T'), qc (JSON) and provenance.
    """
    import numpy as np

    from bnmfit.empirical import empirical_fc
    from bnmfit.errors import DataError
    from bnmfit.io import align, read_bold, read_fc, read_h5, sidecar_path, write_h5, write_json

    if (bold is None) == (fc_path is None):
        raise click.UsageError("give exactly one of --bold and --fc")
    conn, _ = read_h5(connectome)
    sc_labels = conn["labels"]
    n = len(sc_labels)
    given = cli.read_labels(labels) if labels else None
    sidecar = sidecar_path(bold) if bold else None
    sidecar = str(sidecar) if sidecar is not None and sidecar.is_file() else None
    inputs = [p for p in (bold, fc_path, sidecar, labels, dseg, dseg_tsv, connectome) if p]
    if bold is not None:
        cli.log(f"sub-{subject}: reading {bold}")
        b = read_bold(bold, fmt=fmt, key=key, tr=tr, labels=given, dseg=dseg,
                      dseg_tsv=dseg_tsv, orientation=orientation)
        idx = align(sc_labels, b.labels if b.labels is not None else b.n_regions, n_sc=n)
        data = b.data[:, idx]
        emp = empirical_fc(
            data, b.tr, discard=discard, detrend=detrend,
            bandpass=tuple(bandpass) if bandpass else None,
            fcd_window=fcd_window or None, fcd_step=fcd_step, max_nan_run=max_nan_run,
            sc_weights=conn.get("weights_raw", conn["weights"]), labels=sc_labels,
            source=str(bold),
        )
        tr_s, tr_source = float(b.tr), b.tr_source
        datasets = {"bold": emp.bold, "fc": emp.fc, "fcd": emp.fcd, "labels": sc_labels}
        qc = dict(emp.qc)
        n_tr = int(emp.bold.shape[0])
    else:
        cli.log(f"sub-{subject}: reading the FC {fc_path}")
        fc, fl = read_fc(fc_path, fmt=fmt, key=key)
        idx = align(sc_labels, fl if fl is not None else fc.shape[0], n_sc=n)
        fc = fc[np.ix_(idx, idx)]
        tr_s, tr_source = (float(tr), "argument") if tr else (None, "")
        datasets = {"bold": None, "fc": fc, "fcd": None, "labels": sc_labels}
        up = fc[np.triu_indices(n, 1)]
        qc = {"n_tr_used": None, "n_regions": n, "tr": tr_s, "mean_fc": float(up.mean())}
        n_tr = None
        if fcd_window:
            cli.log("no BOLD, so no FCD: the fcd_ks loss is unavailable for this subject")
    if not np.all(np.isfinite(datasets["fc"])):
        raise DataError(f"sub-{subject}: the empirical FC has non-finite entries")
    qc.update({"subject": subject, "tr_source": tr_source})
    prov = cli.provenance({"bold": {"discard": discard, "detrend": detrend,
                                    "bandpass": list(bandpass) if bandpass else None,
                                    "max_nan_run": max_nan_run},
                           "observation": {"fcd_window": fcd_window, "fcd_step": fcd_step}},
                          inputs)
    attrs = {
        "subject": subject,
        "tr": tr_s if tr_s is not None else float("nan"),
        "n_tr": n_tr if n_tr is not None else -1,
        "discard": discard,
        "fcd_window": fcd_window,
        "fcd_step": fcd_step,
        "qc": qc,
        **prov,
    }
    write_h5(output, datasets, attrs)
    if qc_path:
        try:
            write_json(qc_path, {**qc, "provenance": prov})
        except BaseException:  # all outputs of the rule or none
            Path(output).unlink(missing_ok=True)
            raise
    msg = f"mean FC {qc['mean_fc']:.3f}"
    if qc.get("sc_fc_r") is not None:
        msg += f", SC–FC r {qc['sc_fc_r']:.3f}"
    cli.log(f"sub-{subject}: {n} regions, {n_tr} TRs of {tr_s} s, {msg} → {output}")


if __name__ == "__main__":
    main()
