#!/usr/bin/env python
"""Rule cohort_report: the cohort page, the parameter table, and the dataset description."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

import click  # noqa: E402

from bnmfit import cli  # noqa: E402

EXAMPLE = """\b
Example:
  python scripts/cohort_report.py --config config/config.yaml \\
    --subject 01 --params-json results/sub-01/sub-01_desc-fitted_params.json \\
    --fit-h5 results/sub-01/sub-01_fit.h5 \\
    --subject 02 --params-json results/sub-02/sub-02_desc-fitted_params.json \\
    --fit-h5 results/sub-02/sub-02_fit.h5 \\
    --output results/cohort_report.html --table results/cohort_params.tsv \\
    --description results/dataset_description.json --resolved-config results/config.yaml
"""

FILE = click.Path(exists=True, dir_okay=False)


@cli.command(epilog=EXAMPLE)
@click.option("--subject", "subjects", multiple=True, required=True,
              help="A subject label; repeat, in the order of --params-json/--fit-h5.")
@click.option("--params-json", "params_jsons", multiple=True, required=True, type=FILE,
              help="sub-X_desc-fitted_params.json, one per --subject.")
@click.option("--fit-h5", "fit_h5s", multiple=True, type=FILE,
              help="sub-X_fit.h5, one per --subject (optional).")
@click.option("--benchmark", "benchmarks", multiple=True, type=click.Path(dir_okay=False),
              help="The refine step's Snakemake benchmark TSV, one per --subject (wall time).")
@click.option("--connectome", "connectomes", multiple=True, type=FILE,
              help="sub-X_connectome.h5, one per --subject (region count, warnings).")
@click.option("--empirical", "empiricals", multiple=True, type=FILE,
              help="sub-X_desc-empirical_fc.h5, one per --subject (TR, warnings).")
@click.option("--atlas", "atlases", multiple=True,
              help="The sheet's atlas column, one per --subject ('' when empty).")
@cli.config_options
@click.option("--figures", type=click.Path(file_okay=False),
              help="Also write the cohort figures as PNG files into this folder.")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The cohort HTML page to write.")
@click.option("--table", required=True, type=click.Path(dir_okay=False),
              help="The cohort parameter table (TSV) to write.")
@click.option("--description", type=click.Path(dir_okay=False),
              help="Also write a BIDS dataset_description.json here.")
@click.option("--resolved-config", type=click.Path(dir_okay=False),
              help="Also write the resolved configuration (YAML, defaults filled) here.")
def main(subjects, params_jsons, fit_h5s, benchmarks, connectomes, empiricals, atlases,
         config_file, config_json, figures, output, table, description, resolved_config):
    """Summarise the cohort: one HTML page (sortable table of every subject's atlas, region
    count, TR, fitted parameters, held-out FC r, FC RMSE, FCD KS, validation FC r and its
    ceiling, wall time and flags, subjects with flags shaded; their distributions, FC r per
    stage, every subject's warnings, links to the subject pages) and the same table as
    TSV. With --description and
    --resolved-config, also write the results' dataset_description.json (name, version,
    git commit, GeneratedBy) and the configuration that produced them.
    """
    from bnmfit import report, results

    if len(params_jsons) != len(subjects) or (fit_h5s and len(fit_h5s) != len(subjects)):
        raise click.UsageError(
            f"give one --params-json (and --fit-h5) per --subject: got {len(subjects)} "
            f"subjects, {len(params_jsons)} params files and {len(fit_h5s)} fit files"
        )
    cfg = cli.read_config(config_file, config_json)
    kw = dict(params_jsons=list(params_jsons), fit_h5s=list(fit_h5s) or None, config=cfg)
    html, df = report.cohort_report(
        list(subjects), benchmarks=list(benchmarks) or None, connectome_h5s=connectomes or None,
        empirical_h5s=empiricals or None, atlases=atlases or None, **kw)
    results.write_bytes(output, html)
    results.write_bytes(table, df.to_csv(sep="\t", index=False, na_rep="n/a"))
    if figures:
        report.write_cohort_figures(list(subjects), outdir=figures, **kw)
    if resolved_config:
        results.write_resolved_config(resolved_config, cfg)
    if description:
        results.write_json(description, results.dataset_description(
            cfg, subjects, Path(resolved_config).name if resolved_config else None))
    cli.log(f"cohort: {len(subjects)} subjects → {output}, {table}")


if __name__ == "__main__":
    main()
