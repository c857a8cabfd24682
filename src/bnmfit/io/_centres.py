"""Where the regions are: centres in mm (world coordinates) and their networks.

Centres come from the sheet column ``centres`` (a table of label, x, y, z), else a TVB
zip's ``centres.txt``, else the centroids of the NIfTI label image of the sheet column
``dseg``; they are put in the connectome's region order by label (by position when a side
has no labels of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bnmfit.errors import DataError
from bnmfit.io._files import (
    PathLike,
    check_file,
    describe,
    detect_format,
    is_default_labels,
    read_text,
    short_list,
    split_rows,
    to_float,
)

__all__ = ["dseg_centroids", "read_centres", "read_networks", "region_centres"]

#: columns of a labels table that name each region's network (first found is used)
NETWORK_COLUMNS = ("network", "network_label", "networks", "yeo_network", "community")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def read_centres(path: PathLike) -> tuple[list[str] | None, np.ndarray]:
    """Region centres from a table: ``label x y z`` per line (tab, comma or white space;
    an optional header names the columns ``label``/``name`` and ``x``, ``y``, ``z``), or
    ``x y z`` per line in the connectome's region order. Returns ``(labels or None, (N, 3))``.
    """
    name = describe(path)
    rows = split_rows(read_text(path), name)
    head = [t.strip().lower() for t in rows[0]]
    if not all(_is_number(t) for t in rows[0][-3:]):
        missing = [c for c in ("x", "y", "z") if c not in head]
        if missing:
            raise DataError(
                f"{name}: expected a header with columns x, y, z (and label), got "
                f"{', '.join(head)}; name the coordinate columns x, y and z"
            )
        lab = next((head.index(c) for c in ("label", "name", "region") if c in head), None)
        cols = [head.index(c) for c in ("x", "y", "z")]
        rows = [
            [r[k] if k < len(r) else "" for k in ([lab] if lab is not None else []) + cols]
            for r in rows[1:]
        ]
    if rows and all(len(r) == 4 for r in rows):
        return [r[0] for r in rows], to_float([r[1:] for r in rows], name, col_offset=1)
    if rows and all(len(r) == 3 for r in rows):
        return None, to_float(rows, name)
    raise DataError(
        f"{name}: expected 'label x y z' (or 'x y z') on every line, got "
        f"{sorted({len(r) for r in rows}) or 'no rows'} fields; fix the centres table "
        "(sheet column centres)"
    )


def dseg_centroids(dseg: PathLike, dseg_tsv: PathLike | None = None):
    """The centroid (mm, through the image's affine) of every label of a NIfTI label image.

    Returns ``(labels, (N, 3))`` in the order :func:`bnmfit.io.read_bold` gives the regions
    of a 4-D NIfTI with this image: the ``dseg_tsv`` table's rows by index (a region
    without voxels gets NaN), else the label values in ascending order (as strings).
    """
    import nibabel as nib

    from bnmfit.io._bold import _read_dseg_tsv

    name = describe(dseg)
    try:
        img = nib.load(check_file(dseg))
    except DataError:
        raise
    except Exception as e:  # nibabel raises many types on bad files
        raise DataError(
            f"{name}: expected a NIfTI label image, got an unreadable file ({e}); re-create it "
            "(sheet column dseg)"
        ) from None
    data = np.rint(np.asanyarray(img.dataobj)).astype(np.int64)
    data = data.reshape(data.shape[:3])
    vox = np.argwhere(data > 0)
    ids, inv = np.unique(data[tuple(vox.T)], return_inverse=True)
    counts = np.bincount(inv, minlength=ids.size)
    mean_ijk = np.stack([np.bincount(inv, vox[:, k], ids.size) / counts for k in range(3)], 1)
    xyz = mean_ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
    if dseg_tsv is None:
        return [str(int(i)) for i in ids], xyz
    names = _read_dseg_tsv(dseg_tsv)
    row = {int(i): k for k, i in enumerate(ids)}
    order = sorted(names)
    out = np.full((len(order), 3), np.nan)
    for k, i in enumerate(order):
        if i in row:
            out[k] = xyz[row[i]]
    return [names[i] for i in order], out


def _align(labels: Sequence[str], src: list[str] | None, xyz: np.ndarray, where: str):
    """``xyz`` (rows in ``src`` order) in the order of the connectome ``labels``."""
    n = len(labels)
    if src is not None and not is_default_labels(src) and not is_default_labels(labels):
        pos = {x: k for k, x in enumerate(src)}
        absent = [x for x in labels if x not in pos]
        if not absent:
            return xyz[[pos[x] for x in labels]]
        if not all(x.isdigit() for x in src):  # named on both sides, and they differ
            raise DataError(
                f"{where}: expected a centre for every connectome region, got none for "
                f"{len(absent)} ({short_list(absent)}); use the connectome's atlas and labels"
            )
    if len(xyz) != n:
        raise DataError(
            f"{where}: expected {n} centres (one per connectome region, matched by position "
            f"without labels to match by), got {len(xyz)}; use the connectome's atlas"
        )
    return xyz


def region_centres(
    labels: Sequence[str],
    *,
    weights: PathLike | None = None,
    fmt: str | None = None,
    centres: PathLike | None = None,
    dseg: PathLike | None = None,
    dseg_tsv: PathLike | None = None,
) -> np.ndarray | None:
    """The (N, 3) centres of the connectome's regions ``labels`` in mm, or None when no
    source gives them: the ``centres`` table, else the TVB zip ``weights``'s
    ``centres.txt``, else the centroids of the ``dseg`` label image."""
    from bnmfit.io._matrix import MATRIX_FORMATS
    from bnmfit.io._tvb import read_tvb_zip

    labels = [str(x) for x in labels]
    if centres is not None:
        src, xyz = read_centres(centres)
        return _align(labels, src, xyz, f"{describe(centres)} (sheet column centres)")
    if weights is not None:
        kind = detect_format(weights, fmt, MATRIX_FORMATS, "a connectome", column="sc_format")
        z = read_tvb_zip(weights) if kind == "tvb" else {"centres": None}
        if z["centres"] is not None:
            where = f"{describe(weights)}!centres.txt (sheet column sc_weights)"
            return _align(labels, z["labels"], z["centres"], where)
    if dseg is not None:
        src, xyz = dseg_centroids(dseg, dseg_tsv)
        return _align(labels, src, xyz, f"{describe(dseg)} (sheet column dseg)")
    return None


def read_networks(path: PathLike) -> list[str] | None:
    """The network of each region from a labels table (tab-separated, one header line) with
    one of the columns :data:`NETWORK_COLUMNS`, or None when it has none."""
    lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    head = [h.strip().lower() for h in lines[0].split("\t")] if lines else []
    col = next((head.index(c) for c in NETWORK_COLUMNS if c in head), None)
    if col is None:
        return None
    cells = [ln.split("\t") for ln in lines[1:]]
    return [c[col].strip() if col < len(c) else "" for c in cells]
