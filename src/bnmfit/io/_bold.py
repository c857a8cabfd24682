"""Regional BOLD time series: XCP-D TSV, NumPy/MATLAB arrays, CIFTI-2 ptseries, 4-D NIfTI + atlas.

The repetition time (TR, seconds) is resolved in this order, first found wins:

1. the JSON sidecar next to the file (same name, data extension replaced by ``.json``):
   ``RepetitionTime`` in s, else ``SamplingFrequency`` in Hz;
2. the image header: the CIFTI-2 series axis step, or the NIfTI ``pixdim[4]`` (with its
   time unit, ms and µs converted to s);
3. the ``tr=`` argument (the subject sheet's value, or the configuration default that the
   caller passes when the sheet has none).

No TR anywhere, a TR that is not a positive number, or a TR above 100 (almost certainly
milliseconds) is a :class:`~bnmfit.errors.DataError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from bnmfit.errors import ConfigError, DataError, region_name
from bnmfit.io._arrays import load_container, load_npy, select_array
from bnmfit.io._files import (
    MISSING_TOKENS,
    TEXT_FORMATS,
    PathLike,
    as_positive_float,
    check_file,
    check_unique,
    describe,
    detect_format,
    first_row_is_header,
    is_int_literal,
    is_number,
    read_sidecar,
    read_text,
    short_list,
    sidecar_path,
    split_rows,
    to_float,
)

__all__ = ["ORIENTATIONS", "Bold", "read_bold", "resolve_tr"]

#: ``orientation=`` values of :func:`read_bold`: the layout of the array in the file.
ORIENTATIONS = ("time-by-region", "region-by-time")
BOLD_FORMATS = ("tsv", "csv", "txt", "npy", "npz", "mat", "ptseries", "nifti")
MAX_TR_S = 100.0
#: where the ``tr=`` argument comes from in the workflow, as messages name it
TR_WORDS = "the sheet column tr, else bold.default_tr"

_TIME_INDEX_HEADERS = frozenset(
    {"", "time", "index", "unnamed: 0", "tr", "volume", "frame", "timepoint", "t"}
)


@dataclasses.dataclass(frozen=True, eq=False)
class Bold:
    """Regional BOLD time series as read from a file.

    Attributes:
        data: (T, N) float64, time × regions. Missing samples (``n/a``) are NaN.
        tr: repetition time in seconds.
        labels: N region labels, or ``None`` when neither the file nor the caller gave any.
        source: the file it was read from.
        tr_source: where the TR came from (sidecar, header, argument).
    """

    data: np.ndarray
    tr: float
    labels: list[str] | None
    source: str
    tr_source: str = ""

    @property
    def n_timepoints(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_regions(self) -> int:
        return int(self.data.shape[1])


def _bold_from_rows(rows: list[list[str]], name: str):
    """(values, labels, fixed orientation or None) from rows of text tokens."""
    first = rows[0]
    header: list[str] | None = None
    body = rows
    if first_row_is_header(rows):
        header, body = first, rows[1:]
    elif (
        len(rows) > 1
        and all(is_int_literal(t) for t in first)
        and any(
            t not in MISSING_TOKENS and is_number(t) and not is_int_literal(t)
            for r in rows[1:4]
            for t in r
        )
    ):
        header, body = first, rows[1:]  # integer region IDs above decimal data
    if not body:
        raise DataError(
            f"{name}: expected rows of BOLD samples after the header, got only the header; "
            "write one row per volume below the region names"
        )
    width = len(body[0])
    if all(r and not is_number(r[0]) for r in body):
        # a label column: regions are rows
        labels = [r[0] for r in body]
        values = to_float(
            [r[1:] for r in body], name, row_offset=int(header is not None), col_offset=1
        )
        return values, labels, "region-by-time"
    if header is None:
        return to_float(body, name), None, None
    if len(header) == width - 1 or (
        len(header) == width and header[0].strip().lower() in _TIME_INDEX_HEADERS and width > 1
    ):
        # a leading time/index column
        header = header[1:] if len(header) == width else header
        body = [r[1:] for r in body]
        width -= 1
        col_offset = 1
    else:
        col_offset = 0
    if len(header) != width:
        raise DataError(
            f"{name}: expected one region name per column ({width}), got {len(header)} names "
            "in the header; fix the header row"
        )
    values = to_float(body, name, row_offset=1, col_offset=col_offset)
    return values, list(header), "time-by-region"


def _read_ptseries(path: PathLike):
    import nibabel as nib

    p = check_file(path)
    name = describe(path)
    try:
        img = nib.load(p)
    except Exception as e:  # nibabel raises many types on bad files
        raise DataError(
            f"{name}: expected a CIFTI-2 .ptseries.nii file, got an unreadable file ({e}); "
            "re-create it (e.g. wb_command -cifti-parcellate)"
        ) from None
    if not isinstance(img, nib.Cifti2Image):
        raise DataError(
            f"{name}: expected a CIFTI-2 image, got {type(img).__name__}; give a .ptseries.nii"
        )
    axes = [img.header.get_axis(i) for i in range(img.ndim)]
    data = np.asarray(img.get_fdata(), dtype=np.float64)
    kinds = [type(a).__name__ for a in axes]
    if kinds == ["SeriesAxis", "ParcelsAxis"]:
        series, parcels = axes
    elif kinds == ["ParcelsAxis", "SeriesAxis"]:
        parcels, series = axes
        data = data.T
    else:
        raise DataError(
            f"{name}: expected a series × parcels CIFTI (.ptseries.nii), got axes "
            f"({', '.join(kinds)}); give a parcellated time series"
        )
    header_tr = None
    if str(series.unit).upper() == "SECOND" and series.step > 0:
        header_tr = float(series.step)
    elif str(series.unit).upper() != "SECOND":
        raise DataError(
            f"{name}: expected the series axis in seconds, got unit {series.unit}; "
            "give a BOLD time series"
        )
    return data, [str(x) for x in parcels.name], header_tr


def _read_dseg_tsv(path: PathLike) -> dict[int, str]:
    name = describe(path)
    rows = split_rows(read_text(path), name)
    header = [h.strip().lower() for h in rows[0]]
    name_col = next((header.index(c) for c in ("name", "label") if c in header), None)
    if "index" not in header or name_col is None:
        raise DataError(
            f"{name}: expected a BIDS dseg.tsv with columns 'index' and 'name', got columns "
            f"{short_list(rows[0])}; add a header row 'index<TAB>name'"
        )
    i_col = header.index("index")
    out: dict[int, str] = {}
    for k, r in enumerate(rows[1:], start=2):
        if len(r) <= max(i_col, name_col):
            raise DataError(
                f"{name}: expected {len(header)} fields, got {len(r)} on line {k}; fix the row"
            )
        try:
            idx = int(float(r[i_col]))
        except ValueError:
            raise DataError(
                f"{name}: expected an integer index, got {r[i_col]!r} on line {k}; fix the row"
            ) from None
        if idx in out:
            raise DataError(f"{name}: expected unique indices, got {idx} twice; fix the table")
        out[idx] = r[name_col]
    out.pop(0, None)
    return out


def _nifti_header_tr(img) -> float | None:
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = img.header.get_xyzt_units()[1]
    scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    return float(zooms[3]) * scale


def _read_nifti_dseg(path: PathLike, dseg: PathLike | None, dseg_tsv: PathLike | None):
    import nibabel as nib
    import scipy.sparse

    name = describe(path)
    if dseg is None:
        raise ConfigError(
            f"{name}: expected a label image to average the 4-D BOLD within regions, got "
            "none; set the sheet column dseg to the atlas as a NIfTI in the BOLD grid"
        )
    imgs = []
    for p in (path, dseg):
        try:
            imgs.append(nib.load(check_file(p)))
        except DataError:
            raise
        except Exception as e:  # nibabel raises many types on bad files
            raise DataError(
                f"{describe(p)}: expected a NIfTI image, got an unreadable file ({e}); re-create it"
            ) from None
    bold, seg = imgs
    if len(bold.shape) != 4 or bold.shape[3] < 2:
        raise DataError(
            f"{name}: expected a 4-D BOLD image (x, y, z, time), got shape {bold.shape}; "
            "give the functional run"
        )
    seg_shape = tuple(seg.shape)
    while len(seg_shape) > 3 and seg_shape[-1] == 1:
        seg_shape = seg_shape[:-1]
    if len(seg_shape) != 3:
        raise DataError(
            f"{describe(dseg)}: expected a 3-D label image, got shape {seg.shape}; give a "
            "discrete segmentation (dseg), not a probabilistic atlas"
        )
    same = tuple(bold.shape[:3]) == seg_shape
    if not same or not np.allclose(bold.affine, seg.affine, atol=1e-3):
        raise DataError(
            f"{describe(dseg)}: expected the grid of {name} (shape {tuple(bold.shape[:3])}, "
            f"voxel size {tuple(round(float(z), 3) for z in bold.header.get_zooms()[:3])}), "
            f"got shape {seg_shape}{' and a different affine' if same else ''}; resample "
            "the labels to the BOLD grid with nearest-neighbour interpolation"
        )
    seg_data = np.asanyarray(seg.dataobj).reshape(seg_shape)
    if seg_data.dtype.kind == "f":
        if not np.all(np.isfinite(seg_data)) or np.any(seg_data != np.rint(seg_data)):
            raise DataError(
                f"{describe(dseg)}: expected integer region labels, got non-integer values; "
                "give a discrete segmentation (dseg), not a probabilistic map"
            )
    flat = np.rint(seg_data).astype(np.int64).reshape(-1)
    vox = np.flatnonzero(flat)
    if vox.size == 0:
        raise DataError(
            f"{describe(dseg)}: expected labelled voxels, got only 0 (background); "
            "check the label image"
        )
    ids, inv, counts = np.unique(flat[vox], return_inverse=True, return_counts=True)
    weights = scipy.sparse.csr_matrix((1.0 / counts[inv], (inv, vox)), shape=(ids.size, flat.size))
    n_t = int(bold.shape[3])
    means = np.empty((n_t, ids.size), dtype=np.float64)
    block = max(1, int(32_000_000 // flat.size))  # ~256 MB of float64 per block
    for t0 in range(0, n_t, block):
        vol = np.asarray(bold.dataobj[..., t0 : t0 + block], dtype=np.float64)
        vol = vol.reshape(flat.size, -1)
        means[t0 : t0 + vol.shape[1]] = (weights @ vol).T
    id_list = [int(i) for i in ids]
    if dseg_tsv is None:
        return means, [str(i) for i in id_list], _nifti_header_tr(bold)
    names = _read_dseg_tsv(dseg_tsv)
    unnamed = [i for i in id_list if i not in names]
    if unnamed:
        raise DataError(
            f"{describe(dseg_tsv)}: expected a name for every label in {describe(dseg)}, got "
            f"none for {short_list(unnamed)}; add those indices to the table"
        )
    # regions of the table without voxels in this image: kept as all-n/a columns (as XCP-D)
    order = sorted(names)
    col = {i: k for k, i in enumerate(id_list)}
    data = np.full((n_t, len(order)), np.nan)
    for k, i in enumerate(order):
        if i in col:
            data[:, k] = means[:, col[i]]
    return data, [names[i] for i in order], _nifti_header_tr(bold)


def resolve_tr(path: PathLike, header_tr: float | None, tr: float | None) -> tuple[float, str]:
    """The TR in seconds and where it came from (order in the module docstring)."""
    side = read_sidecar(path)
    sc = describe(sidecar_path(path))
    if side is not None and side.get("RepetitionTime") is not None:
        value, src = as_positive_float(side["RepetitionTime"], "RepetitionTime", sc), sc
    elif side is not None and side.get("SamplingFrequency") is not None:
        value = 1.0 / as_positive_float(side["SamplingFrequency"], "SamplingFrequency", sc)
        src = sc
    elif header_tr is not None and header_tr > 0:
        value, src = float(header_tr), f"{describe(path)} (header)"
    elif tr is not None:
        value = as_positive_float(tr, f"the TR ({TR_WORDS})", describe(path))
        src = "tr argument"
    else:
        raise DataError(
            f"{describe(path)}: expected a repetition time, got none (no RepetitionTime in "
            f"{sc}, none in the header, and neither the sheet column tr nor bold.default_tr "
            "is set); add a JSON sidecar, fill the sheet column tr, or set bold.default_tr "
            "in the config (seconds)"
        )
    if value > MAX_TR_S:
        where = f"{describe(path)}: the TR ({TR_WORDS})" if src == "tr argument" else src
        raise DataError(
            f"{where}: expected the TR in seconds, got {value:g}, almost certainly "
            f"milliseconds; give it in seconds ({value / 1000:g})"
        )
    return value, src


def _orient(
    data: np.ndarray,
    name: str,
    orientation: str | None,
    fixed: str | None,
    n_labels: int | None,
    labels_from: str,
) -> np.ndarray:
    if orientation is not None:
        if orientation not in ORIENTATIONS:
            raise ConfigError(
                f"{name}: expected the sheet column orientation to be one of "
                f"{', '.join(ORIENTATIONS)}, got {orientation!r}; give the array's layout"
            )
        if fixed is not None and orientation != fixed:
            raise ConfigError(
                f"{name}: expected orientation {fixed} (fixed by the file's labels), got "
                f"{orientation!r}; empty the sheet column orientation"
            )
        o = orientation
    elif fixed is not None:
        o = fixed
    else:
        r, c = data.shape
        if n_labels is not None:
            if c == n_labels and r != n_labels:
                o = "time-by-region"
            elif r == n_labels and c != n_labels:
                o = "region-by-time"
            elif r == c == n_labels:
                raise ConfigError(
                    f"{name}: expected a layout that the {n_labels} labels of {labels_from} "
                    f"decide, got a square {r} × {c} array; set the sheet column orientation "
                    f"({' or '.join(ORIENTATIONS)})"
                )
            else:
                raise DataError(
                    f"{name}: expected one axis of {n_labels} regions, one per label of "
                    f"{labels_from}, got shape {r} × {c}; give BOLD of the same parcellation "
                    "as the labels (and as the connectome)"
                )
        elif r > c:
            o = "time-by-region"  # more volumes than regions: the longer axis is time
        elif c > r:
            o = "region-by-time"
        else:
            raise ConfigError(
                f"{name}: expected more volumes than regions to tell the axes apart, got a "
                f"square {r} × {c} array; set the sheet column orientation or labels"
            )
    return data if o == "time-by-region" else data.T


def read_bold(
    path: PathLike,
    *,
    fmt: str | None = None,
    key: str | None = None,
    tr: float | None = None,
    labels: Sequence[str] | None = None,
    dseg: PathLike | None = None,
    dseg_tsv: PathLike | None = None,
    orientation: str | None = None,
) -> Bold:
    """Read regional BOLD time series into a :class:`Bold` (time × regions, float64).

    Formats (by file name, or ``fmt=``):

    * ``*_timeseries.tsv[.gz]`` (XCP-D): one row per volume, a header of region names;
      ``n/a`` is kept as NaN (see :func:`bnmfit.empirical.empirical_fc` for what happens
      to it). Also CSV / white-space text; a first column of labels means regions are rows.
    * ``.npy``, ``.npz``/``.mat`` (variable ``key=``, else ``tc``/``bold``/... or the only
      2-D one): the layout is ``orientation=`` when given, else the axis whose length is the
      number of labels, else the longer axis is time (so a run shorter than the number of
      regions needs ``orientation=`` or ``labels=``).
    * CIFTI-2 ``.ptseries.nii``: labels from the parcels axis, TR from the series axis.
    * 4-D NIfTI ``.nii[.gz]`` with ``dseg=`` a label image in the same grid (same shape and
      affine): the mean over the voxels of each label, label 0 ignored; region names from
      ``dseg_tsv=`` (BIDS ``index``/``name`` table; table regions without voxels become
      all-NaN columns), else the label numbers as strings.

    Args:
        tr: the TR in seconds, used when neither a sidecar nor the header gives one.
        labels: region labels for files that carry none (their number also tells the layout
            of ``.npy``/``.mat`` arrays); ignored when the file has labels.
        orientation: ``"time-by-region"`` or ``"region-by-time"``, for arrays.

    Raises:
        DataError: unreadable/empty/truncated files, grids that differ, labels that do not fit,
            no TR or a TR in ms.
        ConfigError: a NIfTI without ``dseg``, an unknown ``fmt`` or ``orientation``.
    """
    kind = detect_format(path, fmt, BOLD_FORMATS, "BOLD time series", column="bold_format")
    name = describe(path)
    header_tr: float | None = None
    fixed: str | None = None
    file_labels: list[str] | None = None
    if kind != "nifti" and (dseg is not None or dseg_tsv is not None):
        raise ConfigError(
            f"{name}: expected the sheet columns dseg/dseg_tsv only with a 4-D NIfTI BOLD, "
            f"got a {kind} file that is already regional; empty dseg/dseg_tsv"
        )
    if kind in TEXT_FORMATS:
        data, file_labels, fixed = _bold_from_rows(split_rows(read_text(path), name), name)
    elif kind == "npy":
        data = np.asarray(load_npy(path))
        if data.ndim != 2 or data.dtype.kind not in "biuf":
            raise DataError(
                f"{name}: expected a 2-D numeric array (time × regions or regions × time), got "
                f"shape {data.shape} of {data.dtype}; save one run as a 2-D array"
            )
        data = data.astype(np.float64)
    elif kind in ("npz", "mat"):
        data, file_labels, _ = select_array(load_container(path, kind), path, key=key, role="bold")
    elif kind == "ptseries":
        data, file_labels, header_tr = _read_ptseries(path)
        fixed = "time-by-region"
    else:  # nifti
        data, file_labels, header_tr = _read_nifti_dseg(path, dseg, dseg_tsv)
        fixed = "time-by-region"
    given = None if labels is None else [str(x) for x in labels]
    use_labels = file_labels if file_labels is not None else given
    src = "the file" if file_labels is not None else "the sheet column labels"
    data = _orient(
        np.asarray(data, dtype=np.float64),
        name,
        orientation,
        fixed,
        None if use_labels is None else len(use_labels),
        src,
    )
    n_t, n = data.shape
    if use_labels is not None:
        if len(use_labels) != n:
            raise DataError(
                f"{name}: expected one label per region ({n}), got {len(use_labels)} from "
                f"{src}; give labels of this parcellation"
            )
        check_unique(use_labels, name)
    if n_t < 2 or n < 1:
        raise DataError(
            f"{name}: expected at least 2 volumes and 1 region, got {n_t} × {n} (time × "
            "regions); check the file and the sheet column orientation"
        )
    if np.isinf(data).any():
        i, j = np.argwhere(np.isinf(data))[0]
        raise DataError(
            f"{name}: expected finite BOLD samples, got {int(np.isinf(data).sum())} inf values "
            f"(first at volume {i + 1}, {region_name(use_labels, j, 'region')}); mark bad "
            "samples as n/a instead"
        )
    tr_s, tr_src = resolve_tr(path, header_tr, tr)
    return Bold(data=data, tr=tr_s, labels=use_labels, source=name, tr_source=tr_src)
