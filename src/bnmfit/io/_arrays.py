"""Arrays from binary containers: NumPy ``.npy``/``.npz`` and MATLAB ``.mat``.

MATLAB files are read with :func:`scipy.io.loadmat` (v4–v7.2); v7.3 files (HDF5) with h5py,
numeric and char variables only. QSIRecon's ``*_connectivity.mat`` layout is understood:
``atlas_<A>_region_labels`` plus one ``atlas_<A>_<measure>_connectivity`` per measure.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from bnmfit.errors import DataError
from bnmfit.io._files import PathLike, check_file, describe, short_list

#: Variable names tried, in order, when a container holds several arrays (by role).
ROLE_KEYS: dict[str, tuple[str, ...]] = {
    "weights": ("sc", "SC", "weights", "Weights", "W", "Cmat", "CM", "connectivity", "conn"),
    "lengths": ("len", "LEN", "lengths", "tract_lengths", "Dmat", "D", "distance", "distances"),
    "fc": ("fc", "FC", "corr", "correlation"),
    "bold": ("tc", "TC", "bold", "BOLD", "ts", "timeseries", "time_series", "data"),
}
#: The subjects-sheet columns that choose a variable (key) and a QSIRecon measure, by role.
KEY_COLUMNS = {"weights": "sc_key", "lengths": "lengths_key", "fc": "bold_key", "bold": "bold_key"}
MEASURE_COLUMNS = {"lengths": "lengths_measure"}


def key_column(role: str | None) -> str:
    """The sheet column that names the variable of a ``role`` (``sc_key`` by default)."""
    return KEY_COLUMNS.get(role or "", "sc_key")


#: Variable names that may hold region labels next to a plain matrix.
LABEL_KEYS = ("labels", "region_labels", "names", "region_names", "ROI_names", "roi_names")


def load_npy(path: PathLike) -> np.ndarray:
    p = check_file(path)
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(
            f"{describe(path)}: expected a NumPy .npy array, got an unreadable file ({e}); "
            "save it with numpy.save"
        ) from None
    if isinstance(arr, np.lib.npyio.NpzFile):  # an .npz named .npy
        arr.close()
        raise DataError(
            f"{describe(path)}: expected a single .npy array, got an .npz archive; "
            "rename it to .npz and set the sheet column sc_key (or bold_key)"
        )
    return arr


def load_container(path: PathLike, kind: str) -> dict[str, Any]:
    """All variables of an ``.npz`` or ``.mat`` file, by name."""
    p = check_file(path)
    if kind == "npz":
        try:
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise DataError(
                f"{describe(path)}: expected a NumPy .npz archive, got an unreadable file ({e}); "
                "save it with numpy.savez"
            ) from None
    return _load_mat(p, describe(path))


def _load_mat(p, name: str) -> dict[str, Any]:
    import scipy.io

    try:
        d = scipy.io.loadmat(p, squeeze_me=True, chars_as_strings=True)
    except NotImplementedError:  # v7.3: HDF5
        return _load_mat73(p, name)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, ... on garbage
        raise DataError(
            f"{name}: expected a MATLAB .mat file, got an unreadable file "
            f"({type(e).__name__}: {e}); re-save it from MATLAB/scipy.io.savemat"
        ) from None
    return {k: v for k, v in d.items() if not k.startswith("__")}


def _load_mat73(p, name: str) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {}
    try:
        with h5py.File(p, "r") as f:
            for k, ds in f.items():
                if not isinstance(ds, h5py.Dataset) or k.startswith("#"):
                    continue
                cls = ds.attrs.get("MATLAB_class", b"")
                cls = cls.decode() if isinstance(cls, bytes) else str(cls)
                arr = np.asarray(ds[()])
                if cls == "char":
                    out[k] = "".join(chr(int(c)) for c in arr.T.ravel())
                elif arr.dtype.kind in "biuf":
                    out[k] = arr.T  # MATLAB is column-major
    except OSError as e:
        raise DataError(
            f"{name}: expected a MATLAB .mat file, got an unreadable v7.3/HDF5 file ({e}); "
            "re-save it with save(..., '-v7')"
        ) from None
    return out


def strings(value: Any) -> list[str]:
    """A flat list of strings from a MATLAB char array / cell array / NumPy string array."""
    if isinstance(value, str):
        return [value.strip()]
    if isinstance(value, bytes):
        return [value.decode().strip()]
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        return [str(x).strip() for x in arr.ravel()]
    if arr.dtype == object:
        out: list[str] = []
        for x in arr.ravel():
            out.extend(strings(x))
        return out
    raise TypeError(f"not strings: {arr.dtype}")


def _is_strings(value: Any) -> bool:
    try:
        strings(value)
    except TypeError:
        return False
    return True


def _numeric(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.ndim == 2


_QSI_LABELS = re.compile(r"^atlas_(.+)_region_labels$")


def select_array(
    d: dict[str, Any],
    path: PathLike,
    *,
    key: str | None,
    role: str | None,
    atlas: str | None = None,
    measure: str | None = None,
) -> tuple[np.ndarray, list[str] | None, str]:
    """One 2-D numeric variable of a container, its labels if the container has them, its name.

    Order: ``key`` when given; else QSIRecon ``atlas_<A>_<measure>_connectivity`` (matrix
    roles); else the only 2-D numeric variable; else the first of :data:`ROLE_KEYS` [role].
    """
    name = describe(path)
    names = sorted(d)
    if key is not None:
        if key not in d:
            raise DataError(
                f"{name}: expected a variable {key!r}, got variables {short_list(names)}; "
                f"set the sheet column {key_column(role)} to one of them"
            )
        arr = d[key]
        if not _numeric(arr):
            raise DataError(
                f"{name}: expected variable {key!r} to be a 2-D numeric array, got shape "
                f"{np.shape(arr)} of {type(arr).__name__}; set the sheet column {key_column(role)} "
                "to a 2-D numeric variable"
            )
        arr = np.asarray(arr, dtype=np.float64)
        labels = _qsi_labels_for_key(d, key)
        return arr, labels if labels is not None else _plain_labels(d, arr), key

    atlases = sorted(m.group(1) for k in d if (m := _QSI_LABELS.match(k)))
    if atlases and role != "bold":
        return _select_qsirecon(d, name, atlases, atlas=atlas, measure=measure, role=role)
    if atlas is not None or measure is not None:
        raise DataError(
            f"{name}: expected QSIRecon variables atlas_<atlas>_region_labels and "
            f"atlas_<atlas>_<measure>_connectivity, got variables {short_list(names)}; "
            f"empty the sheet columns atlas/measure or set {key_column(role)}"
        )

    cands = [k for k in names if _numeric(d[k])]
    if not cands:
        raise DataError(
            f"{name}: expected a 2-D numeric variable, got variables {short_list(names) or 'none'}"
            "; save the matrix as a 2-D array"
        )
    if len(cands) == 1:
        chosen = cands[0]
    else:
        pref = [k for k in ROLE_KEYS.get(role or "", ()) if k in cands]
        if not pref:
            raise DataError(
                f"{name}: expected one matrix, got several 2-D variables {short_list(cands)}; "
                f"set the sheet column {key_column(role)} to the one to read"
            )
        chosen = pref[0]
    arr = np.asarray(d[chosen], dtype=np.float64)
    return arr, _plain_labels(d, arr), chosen


def _plain_labels(d: dict[str, Any], arr: np.ndarray) -> list[str] | None:
    """Labels from a variable named like :data:`LABEL_KEYS` whose length fits the array."""
    for lk in LABEL_KEYS:
        if lk in d and _is_strings(d[lk]):
            labs = strings(d[lk])
            if len(labs) in arr.shape:
                return labs
    return None


def _qsi_labels_for_key(d: dict[str, Any], key: str) -> list[str] | None:
    best = None
    for k in d:
        m = _QSI_LABELS.match(k)
        if m and key.startswith(f"atlas_{m.group(1)}_") and key.endswith("_connectivity"):
            if best is None or len(m.group(1)) > len(best):
                best = m.group(1)
    return strings(d[f"atlas_{best}_region_labels"]) if best is not None else None


def qsirecon_measures(d: dict[str, Any], atlas: str, atlases: list[str]) -> list[str]:
    prefix = f"atlas_{atlas}_"
    longer = [a for a in atlases if a != atlas and a.startswith(atlas)]
    out = []
    for k in sorted(d):
        if not (k.startswith(prefix) and k.endswith("_connectivity")):
            continue
        if any(k.startswith(f"atlas_{b}_") for b in longer):
            continue
        out.append(k[len(prefix) : -len("_connectivity")])
    return out


def _select_qsirecon(d, name, atlases, *, atlas, measure, role):
    if atlas is None:
        if len(atlases) > 1:
            raise DataError(
                f"{name}: expected one atlas, got several ({short_list(atlases, 20)}); "
                "set the sheet column atlas to one of them"
            )
        atlas = atlases[0]
    elif atlas not in atlases:
        raise DataError(
            f"{name}: expected atlas {atlas!r}, got atlases {short_list(atlases, 20)}; "
            "set the sheet column atlas to one of them"
        )
    measures = qsirecon_measures(d, atlas, atlases)
    if not measures:
        raise DataError(
            f"{name}: expected atlas_{atlas}_<measure>_connectivity variables, got none; "
            "check the QSIRecon output"
        )
    if measure is None:
        pool = measures
        if role == "lengths":
            pool = [m for m in measures if "length" in m]
        elif role in ("weights", "fc"):
            pool = [m for m in measures if "length" not in m]
        if len(pool) != 1:
            raise DataError(
                f"{name}: expected one connectivity measure for atlas {atlas}, got "
                f"{len(measures)} ({short_list(measures, 20)}); set the sheet column "
                f"{MEASURE_COLUMNS.get(role or '', 'measure')} to one of them"
            )
        measure = pool[0]
    elif measure not in measures:
        raise DataError(
            f"{name}: expected measure {measure!r} for atlas {atlas}, got measures "
            f"{short_list(measures, 20)}; set the sheet column "
            f"{MEASURE_COLUMNS.get(role or '', 'measure')} to one of them"
        )
    var = f"atlas_{atlas}_{measure}_connectivity"
    arr = d[var]
    if not _numeric(arr):
        raise DataError(
            f"{name}: expected {var} to be a 2-D numeric array, got shape "
            f"{np.shape(arr)}; check the QSIRecon output"
        )
    labels = strings(d[f"atlas_{atlas}_region_labels"])
    return np.asarray(arr, dtype=np.float64), labels, var
