#!/usr/bin/env python
"""Rule report: one subject's self-contained HTML report (and its main figures as PNG)."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

import click  # noqa: E402

from bnmfit import cli  # noqa: E402

EXAMPLE = """\b
Example:
  python scripts/report.py --subject 01 --config config/config.yaml \\
    --connectome results/sub-01/sub-01_connectome.h5 \\
    --empirical results/sub-01/sub-01_desc-empirical_fc.h5 \\
    --explore results/sub-01/sub-01_explore.h5 --fit results/sub-01/sub-01_fit.h5 \\
    --params results/sub-01/sub-01_desc-fitted_params.json \\
    --output results/sub-01/sub-01_report.html
"""

FILE = click.Path(exists=True, dir_okay=False)


@cli.command(epilog=EXAMPLE)
@click.option("--subject", required=True, help="Subject label (without sub-).")
@click.option("--connectome", type=FILE, help="sub-X_connectome.h5.")
@click.option("--empirical", type=FILE, help="sub-X_desc-empirical_fc.h5.")
@click.option("--explore", "explore_h5", type=FILE, help="sub-X_explore.h5.")
@click.option("--fit", "fit_h5", type=FILE, help="sub-X_fit.h5.")
@click.option("--params", "params_json", type=FILE, help="sub-X_desc-fitted_params.json.")
@click.option("--benchmark", "benchmarks", multiple=True, type=(str, click.Path(dir_okay=False)),
              help="STEP FILE: a Snakemake benchmark TSV of step explore or refine (wall times).")
@cli.config_options
@click.option("--figures", type=click.Path(file_okay=False),
              help="Also write the main figures as PNG files into this folder.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The HTML page to write.")
def main(subject, connectome, empirical, explore_h5, fit_h5, params_json, benchmarks,
         config_file, config_json, figures, output):
    """Write one subject's report: a single HTML file with every figure embedded
    (the fit's flags first; validation and held-out scores, each stage's verdict, standard
    errors and correlations of the fitted numbers; connectome, empirical vs simulated FC
    and FCD, exploration landscape with the refinement paths, loss histories, regional
    parameters, provenance). Pieces left out are named as absent in the page.
    """
    from bnmfit import report
    from bnmfit.results import write_bytes

    cfg = cli.read_config(config_file, config_json)
    kw = dict(connectome_h5=connectome, empirical_h5=empirical, explore_h5=explore_h5,
              fit_h5=fit_h5, params_json=params_json, config=cfg)
    bench = {step: [p for k, p in benchmarks if k == step] for step, _ in benchmarks}
    html = report.subject_report(subject, benchmarks=bench, **kw)
    write_bytes(output, html)
    if figures:
        paths = report.write_subject_figures(subject, outdir=figures, **kw)
        cli.log(f"sub-{subject}: {len(paths)} figures → {figures}")
    cli.log(f"sub-{subject}: report → {output}")


if __name__ == "__main__":
    main()
