"""Square region × region matrices: structural connectomes and empirical FC.

Formats (chosen by file name, or by ``fmt=``):

* delimited text ``.tsv``/``.csv``/``.txt`` (also ``.gz``): headerless square; a header row
  of labels; an XCP-D-style relmat whose first column (``Node``) repeats the labels; a header
  row of integer region IDs (one more row than columns). ``n/a``/``NaN`` mark missing values.
* ``.npy``; ``.npz`` and MATLAB ``.mat`` (a variable chosen by ``key=``, by role, or the only
  2-D one; QSIRecon ``*_connectivity.mat`` by ``atlas=`` and ``measure=``).
* CIFTI-2 ``.pconn.nii`` (labels from the parcels axis).
* a TVB connectivity ``.zip`` (see :func:`read_tvb_zip`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bnmfit.errors import ConfigError, DataError
from bnmfit.io._arrays import load_container, load_npy, select_array
from bnmfit.io._files import (
    TEXT_FORMATS,
    PathLike,
    check_file,
    check_unique,
    default_labels,
    describe,
    detect_format,
    read_text,
    short_list,
    split_rows,
)
from bnmfit.io._table import matrix_from_rows
from bnmfit.io._tvb import read_tvb_zip

__all__ = ["read_connectome", "read_fc", "read_matrix"]

MATRIX_FORMATS = ("tsv", "csv", "txt", "npy", "npz", "mat", "pconn", "tvb")
MISSING_MODES = ("error", "zero", "keep")


def _read_pconn(path: PathLike) -> tuple[np.ndarray, list[str]]:
    import nibabel as nib

    p = check_file(path)
    name = describe(path)
    try:
        img = nib.load(p)
    except Exception as e:  # nibabel raises many types on bad files
        raise DataError(
            f"{name}: expected a CIFTI-2 .pconn.nii file, got an unreadable file ({e}); "
            "re-create it (e.g. wb_command -cifti-correlation)"
        ) from None
    if not isinstance(img, nib.Cifti2Image):
        raise DataError(
            f"{name}: expected a CIFTI-2 image, got {type(img).__name__}; give a .pconn.nii"
        )
    axes = [img.header.get_axis(i) for i in range(img.ndim)]
    if len(axes) != 2 or not all(isinstance(a, nib.cifti2.ParcelsAxis) for a in axes):
        got = ", ".join(type(a).__name__ for a in axes)
        raise DataError(
            f"{name}: expected a parcels × parcels CIFTI (.pconn.nii), got axes ({got}); "
            "give a parcellated connectivity file"
        )
    l0, l1 = [str(x) for x in axes[0].name], [str(x) for x in axes[1].name]
    if l0 != l1:
        raise DataError(
            f"{name}: expected the same parcels on both axes, got {len(l0)} and {len(l1)} "
            "differently named parcels; give a square parcel × parcel matrix"
        )
    return np.asarray(img.get_fdata(), dtype=np.float64), l0


def read_raw_matrix(
    path: PathLike,
    kind: str,
    *,
    key: str | None = None,
    atlas: str | None = None,
    measure: str | None = None,
    role: str | None = None,
) -> tuple[np.ndarray, list[str] | None]:
    """A square float64 matrix and its labels (``None`` when the file has none), unchecked
    for missing values. ``role`` (weights, lengths, fc) picks among several variables."""
    name = describe(path)
    labels: list[str] | None = None
    if kind in TEXT_FORMATS:
        m, labels = matrix_from_rows(split_rows(read_text(path), name), name)
    elif kind == "npy":
        m = np.asarray(load_npy(path))
        if m.dtype.kind not in "biuf":
            raise DataError(
                f"{name}: expected a numeric array, got dtype {m.dtype}; save the matrix as float"
            )
        m = m.astype(np.float64)
    elif kind in ("npz", "mat"):
        m, labels, _ = select_array(
            load_container(path, kind), path, key=key, role=role, atlas=atlas, measure=measure
        )
    elif kind == "pconn":
        m, labels = _read_pconn(path)
    elif kind == "tvb":
        z = read_tvb_zip(path)
        m = z["lengths"] if role == "lengths" else z["weights"]
        labels = z["labels"]
    else:  # pragma: no cover - guarded by detect_format
        raise ConfigError(
            f"{name}: expected a matrix format, got {kind}; set the sheet column sc_format"
        )
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataError(
            f"{name}: expected a square regions × regions matrix, got shape "
            f"{' × '.join(map(str, m.shape))}; give one row and one column per region"
        )
    if m.shape[0] == 0:
        raise DataError(
            f"{name}: expected at least one region, got an empty matrix; check the file"
        )
    if labels is not None:
        if len(labels) != m.shape[0]:
            raise DataError(
                f"{name}: expected one label per region ({m.shape[0]}), got {len(labels)} "
                "labels; fix the labels"
            )
        check_unique(labels, name)
    return m, labels


def _where(labels: Sequence[str] | None, i: int, j: int) -> str:
    s = f"row {i + 1}, column {j + 1}"
    if labels is not None:
        s += f": {labels[i]} × {labels[j]}"
    return s


def apply_missing(
    m: np.ndarray, path: PathLike, missing: str, labels: Sequence[str] | None
) -> np.ndarray:
    """Missing entries (NaN, from ``n/a``, or -1) → DataError, 0, or kept as they are."""
    if missing not in MISSING_MODES:
        raise ConfigError(
            f"{describe(path)}: expected connectome.missing to be one of "
            f"{', '.join(MISSING_MODES)}, got {missing!r}; set connectome.missing in the "
            "config to error or zero"
        )
    if missing == "keep":
        return m
    mask = np.isnan(m) | (m == -1)
    if not mask.any():
        return m
    if missing == "error":
        i, j = np.argwhere(mask)[0]
        raise DataError(
            f"{describe(path)}: expected a complete matrix, got {int(mask.sum())} missing "
            f"entries (n/a, NaN or -1; first at {_where(labels, i, j)}); fill them in, or set "
            "connectome.missing: zero in the config to read them as absent connections"
        )
    m = m.copy()
    m[mask] = 0.0
    return m


def read_matrix(
    path: PathLike,
    *,
    fmt: str | None = None,
    key: str | None = None,
    atlas: str | None = None,
    measure: str | None = None,
    missing: str = "error",
) -> tuple[np.ndarray, list[str] | None]:
    """Read one square matrix (float64) and its region labels, if the file carries them.

    Args:
        path: the file; the format follows from its name (module docstring) unless ``fmt``.
        fmt: force a format: tsv, csv, txt, npy, npz, mat, pconn, tvb.
        key: the variable of a ``.mat``/``.npz`` file (default: the only 2-D one).
        atlas, measure: the QSIRecon atlas and measure (``atlas_<atlas>_<measure>_connectivity``);
            needed only when the file holds several.
        missing: what ``n/a``/NaN/-1 entries do: ``"error"`` (DataError), ``"zero"`` (become 0,
            for absent connections) or ``"keep"`` (returned as they are).

    Returns:
        ``(matrix, labels)``; ``labels`` is ``None`` when the file carries none.
    """
    kind = detect_format(path, fmt, MATRIX_FORMATS, "a matrix", column="sc_format")
    m, labels = read_raw_matrix(path, kind, key=key, atlas=atlas, measure=measure)
    return apply_missing(m, path, missing, labels), labels


def _kind_for(path: PathLike, fmt: str | None, what: str) -> str:
    """The format of a second file: by its name, falling back to ``fmt`` when the name is not
    recognised."""
    try:
        return detect_format(path, None, MATRIX_FORMATS, what, column="sc_format")
    except DataError:
        if fmt is None:
            raise
        return detect_format(path, fmt, MATRIX_FORMATS, what, column="sc_format")


def check_structural(
    name: str, m: np.ndarray, path: PathLike, labels: Sequence[str] | None
) -> None:
    """Finite and non-negative, else DataError with the count and the first position."""
    bad = ~np.isfinite(m)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(
            f"{describe(path)}: expected finite {name}, got {int(bad.sum())} NaN/inf entries "
            f"(first at {_where(labels, i, j)}); replace them by 0 for absent connections"
        )
    neg = m < 0
    if neg.any():
        i, j = np.argwhere(neg)[0]
        raise DataError(
            f"{describe(path)}: expected non-negative {name}, got {int(neg.sum())} negative "
            f"entries (first {m[i, j]:g} at {_where(labels, i, j)}); structural {name} cannot "
            "be negative: give streamline counts/densities and lengths in mm"
        )


def read_connectome(
    weights_path: PathLike,
    lengths_path: PathLike | None = None,
    *,
    fmt: str | None = None,
    key: str | None = None,
    atlas: str | None = None,
    measure: str | None = None,
    missing: str = "error",
    lengths_key: str | None = None,
    lengths_measure: str | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a structural connectome: weights, tract lengths (mm) and region labels.

    A TVB zip gives all three. Otherwise the weights come from ``weights_path`` and the
    lengths from ``lengths_path`` (both may be the same ``.mat`` file: ``key``/``lengths_key``
    or, for QSIRecon, ``measure``/``lengths_measure`` pick the variables; by default ``sc``
    and ``len``, or the only measure without / with "length" in its name). Without a
    lengths file the lengths are zero (no conduction delays).

    Labels come from the weights file, else the lengths file, else ``labels`` (the sheet
    column labels), else ``region-001``, .... When both files carry labels they must name the
    same regions (the lengths are reordered to the weights' order if needed). ``labels``, when
    given, must have one label per region even if the files carry their own; they name the
    regions of headerless files in every message (missing, negative or non-finite entries).

    Args:
        fmt: forces the weights file's format; the lengths file's format follows its name
            (``fmt`` is used for it only when its name is not recognised).
        missing: as in :func:`read_matrix`, for both files.

    Raises:
        DataError: non-square or unequal shapes, NaN/inf, negative entries, disagreeing labels,
            ``labels`` of another length.
    """
    kind = detect_format(weights_path, fmt, MATRIX_FORMATS, "a connectome", column="sc_format")
    if kind == "tvb":
        z = read_tvb_zip(weights_path)
        w, wl = z["weights"], z["labels"]
        ln_path: PathLike | None = weights_path
        ln, ll = z["lengths"], z["labels"]
    else:
        w, wl = read_raw_matrix(
            weights_path, kind, key=key, atlas=atlas, measure=measure, role="weights"
        )
        ln_path, ln, ll = None, None, None
    if lengths_path is not None:
        lkind = _kind_for(lengths_path, fmt, "tract lengths")
        ln, ll = read_raw_matrix(
            lengths_path,
            lkind,
            key=lengths_key,
            atlas=atlas,
            measure=lengths_measure,
            role="lengths",
        )
        ln_path = lengths_path
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != w.shape[0]:
            raise DataError(
                f"{describe(weights_path)}: expected {len(labels)} regions, one per label of "
                f"the sheet column labels, got {w.shape[0]}; give a labels file of this "
                "parcellation, one label per line"
            )
        check_unique(labels, "the sheet column labels")
    named = next((x for x in (wl, ll, labels) if x is not None), None)  # for messages
    w = apply_missing(w, weights_path, missing, named)
    if ln is None:
        ln = np.zeros_like(w)
    else:
        ln = apply_missing(ln, ln_path, missing, ll if ll is not None else named)
    if ln.shape != w.shape:
        raise DataError(
            f"{describe(ln_path)}: expected tract lengths of the weights' shape {w.shape} "
            f"(from {describe(weights_path)}), got {ln.shape}; give both matrices for the "
            "same parcellation"
        )
    if wl is not None and ll is not None and list(wl) != list(ll):
        if set(wl) != set(ll):
            only_w = [x for x in wl if x not in set(ll)]
            only_l = [x for x in ll if x not in set(wl)]
            raise DataError(
                f"{describe(ln_path)}: expected the regions of {describe(weights_path)}, got "
                f"{len(only_w)} weight regions missing ({short_list(only_w)}) and "
                f"{len(only_l)} extra ({short_list(only_l)}); use files of the same atlas"
            )
        pos = {x: k for k, x in enumerate(ll)}
        idx = np.array([pos[x] for x in wl])
        ln = ln[np.ix_(idx, idx)]
    out = list(named) if named is not None else default_labels(w.shape[0])
    check_structural("weights", w, weights_path, out)
    check_structural("tract lengths", ln, ln_path, out)
    return w, ln, out


FC_TRANSFORMS = ("fisher_z",)


def _fisher_z_like(off: np.ndarray, diag: np.ndarray) -> bool:
    """Whether off-diagonal values outside [-1, 1] look like Fisher z (arctanh r): within a few
    units (|z| ≤ 10, r < 1 - 4e-9) and a diagonal of inf, 0, n/a or large values (z of
    r ≈ 1, ≥ 3.8); a matrix merely scaled above 1 has a diagonal at its scale."""
    big = np.abs(off).max() if off.size else 0.0
    d_ok = np.all(~np.isfinite(diag) | (diag == 0) | (np.abs(diag) >= max(big, 3.8)))
    return bool(1.0 < big <= 10.0 and d_ok)


def read_fc(
    path: PathLike,
    *,
    fmt: str | None = None,
    key: str | None = None,
    transform: str | None = None,
    atol: float = 1e-5,
) -> tuple[np.ndarray, list[str] | None, list[str]]:
    """Read an empirical FC matrix given directly (Pearson r), e.g. an XCP-D relmat.

    Only the off-diagonal entries are used. Checks, in this order: no missing off-diagonal
    values; symmetric; values in [-1, 1] (Fisher z values, |z| > 1, are recognised and
    refused unless ``transform="fisher_z"``, which converts them by tanh); a diagonal of 1,
    0 or n/a (0 and n/a are common conventions: the diagonal is then set to 1). Each to within
    ``atol``; the result is symmetrised and clipped exactly, with a unit diagonal.

    Args:
        transform: ``None`` (the file holds correlations) or ``"fisher_z"`` (the file holds
            arctanh(r); converted by tanh, whatever its diagonal).

    Returns:
        ``(fc, labels, notes)``; ``labels`` is ``None`` when the file carries none; ``notes``
        are one-line sentences on what was changed (the diagonal set to 1, z converted), for
        the caller to log or keep with the QC numbers.
    """
    name = describe(path)
    if transform not in (None, *FC_TRANSFORMS):
        raise ConfigError(
            f"{name}: expected the sheet column fc_transform to be empty or one of "
            f"{', '.join(FC_TRANSFORMS)}, got {transform!r}; use fisher_z for arctanh(r) files"
        )
    kind = detect_format(
        path,
        fmt,
        ("tsv", "csv", "txt", "npy", "npz", "mat", "pconn"),
        "an FC matrix",
        column="bold_format",
    )
    m, labels = read_raw_matrix(path, kind, key=key, role="fc")
    notes: list[str] = []
    n = m.shape[0]
    off_mask = ~np.eye(n, dtype=bool)
    bad = ~np.isfinite(m) & off_mask
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(
            f"{name}: expected a complete FC matrix, got {int(bad.sum())} n/a/NaN/inf "
            f"off-diagonal entries (first at {_where(labels, i, j)}); drop the regions without "
            "signal from both FC and SC, or give the BOLD time series instead"
        )
    diag = np.diag(m).copy()
    m = np.where(off_mask, m, 0.0)
    asym = np.abs(m - m.T)
    if n > 1 and asym.max() > atol:
        i, j = np.unravel_index(np.argmax(asym), m.shape)
        raise DataError(
            f"{name}: expected a symmetric FC matrix, got |FC - FCᵀ| up to {asym.max():.3g} "
            f"(at {_where(labels, i, j)}); give a correlation matrix"
        )
    off = m[off_mask]
    if transform == "fisher_z":
        m = np.tanh(m)
        notes.append(f"{name}: read as Fisher z and converted to correlations by tanh")
    else:
        out = (np.abs(m) > 1.0 + atol) & off_mask
        if out.any():
            i, j = np.argwhere(out)[0]
            if _fisher_z_like(off, diag):
                raise DataError(
                    f"{name}: expected Pearson correlations in [-1, 1], got {int(out.sum())} "
                    f"off-diagonal entries outside (first {m[i, j]:g} at "
                    f"{_where(labels, i, j)}, up to {np.abs(off).max():.3g}): this looks like "
                    "Fisher z-transformed FC (arctanh r); set the sheet column fc_transform to "
                    "fisher_z to convert it by tanh (in Python: read_fc(..., "
                    "transform='fisher_z'))"
                )
            raise DataError(
                f"{name}: expected Pearson correlations in [-1, 1], got {int(out.sum())} "
                f"off-diagonal entries outside (first {m[i, j]:g} at {_where(labels, i, j)}, "
                f"up to {np.abs(off).max():.3g}); give a correlation matrix (not covariances "
                "or scaled values)"
            )
        d = np.abs(diag - 1.0)
        conv = np.isnan(diag) | (diag == 0)
        wrong = ~conv & ~(d <= atol)
        if wrong.any():
            i = int(np.argmax(wrong))
            if np.isinf(diag[i]):  # arctanh(1): a Fisher z file of weak correlations
                raise DataError(
                    f"{name}: expected 1 (or 0 or n/a) on the FC diagonal, got {diag[i]:g} at "
                    f"region {i + 1}: this looks like Fisher z-transformed FC (arctanh r); "
                    "set the sheet column fc_transform to fisher_z to convert it by tanh (in "
                    "Python: read_fc(..., transform='fisher_z'))"
                )
            raise DataError(
                f"{name}: expected 1 (or 0 or n/a) on the FC diagonal, got {diag[i]:g} at "
                f"region {i + 1}{'' if labels is None else ' (' + labels[i] + ')'}; give a "
                "correlation matrix, with 1, 0 or n/a on its diagonal"
            )
        if conv.any():
            what = " or ".join(
                w for w, c in (("0", (diag == 0).any()), ("n/a", np.isnan(diag).any())) if c
            )
            notes.append(
                f"{name}: the FC diagonal is {what} at {int(conv.sum())} of {n} regions "
                "(a common convention); only off-diagonal entries are used, the diagonal was "
                "set to 1"
            )
    m = np.clip(0.5 * (m + m.T), -1.0, 1.0)
    np.fill_diagonal(m, 1.0)
    return m, labels, notes
