"""TVB connectivity zips (as shipped by The Virtual Brain, e.g. ``connectivity_76.zip``)."""

from __future__ import annotations

import bz2
import zipfile
from pathlib import PurePosixPath

import numpy as np

from bnmfit.errors import DataError
from bnmfit.io._files import (
    PathLike,
    check_file,
    decode_text,
    describe,
    maybe_gunzip,
    short_list,
    split_rows,
    to_float,
)
from bnmfit.io._table import matrix_from_rows

__all__ = ["read_tvb_zip"]

# canonical member name -> accepted file names (without a .bz2/.gz ending)
_MEMBERS = {
    "weights": ("weights.txt",),
    "lengths": ("tract_lengths.txt", "tracts.txt", "tract_length.txt"),
    "centres": ("centres.txt", "centers.txt"),
}


def _member_text(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> str:
    where = f"{name}!{info.filename}"
    try:
        raw = zf.read(info)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(
            f"{where}: expected a readable zip member, got a corrupt one ({e}); re-create the zip"
        ) from None
    if info.filename.lower().endswith(".bz2"):
        try:
            raw = bz2.decompress(raw)
        except (OSError, EOFError, ValueError) as e:
            raise DataError(
                f"{where}: expected a complete bz2 stream, got a corrupt one ({e}); "
                "re-create the zip"
            ) from None
    raw = maybe_gunzip(raw, where)
    return decode_text(raw, where)


def _find(zf: zipfile.ZipFile, names: tuple[str, ...], zname: str) -> zipfile.ZipInfo | None:
    hits = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        base = PurePosixPath(info.filename).name.lower()
        for suffix in (".bz2", ".gz"):
            if base.endswith(suffix):
                base = base[: -len(suffix)]
        if base in names and not PurePosixPath(info.filename).name.startswith("._"):
            hits.append(info)
    if len(hits) > 1:
        raise DataError(
            f"{zname}: expected one {names[0]} in the zip, got {len(hits)} "
            f"({short_list([h.filename for h in hits])}); keep one connectivity per zip"
        )
    return hits[0] if hits else None


def read_tvb_zip(path: PathLike) -> dict:
    """Read a TVB connectivity zip.

    Members (plain, ``.bz2`` or ``.gz``; at the top or inside one subfolder):
    ``weights.txt`` (required), ``tract_lengths.txt`` (required), ``centres.txt`` (optional;
    one ``label x y z`` line per region, or ``x y z`` without labels).

    Returns:
        dict with ``weights`` and ``lengths`` ((N, N) float64), ``labels`` (list of N str, or
        ``None``) and ``centres`` ((N, 3) float64, or ``None``).
    """
    p = check_file(path)
    name = describe(path)
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(
            f"{name}: expected a TVB connectivity zip, got an unreadable zip ({e}); "
            "re-create or re-download it"
        ) from None
    with zf:
        out: dict = {}
        members = {k: _find(zf, v, name) for k, v in _MEMBERS.items()}
        for k in ("weights", "lengths"):
            info = members[k]
            if info is None:
                listing = short_list([i.filename for i in zf.infolist() if not i.is_dir()], 12)
                raise DataError(
                    f"{name}: expected a {_MEMBERS[k][0]} member in the TVB zip, got members "
                    f"{listing or 'none'}; add it (plain or .bz2)"
                )
            where = f"{name}!{info.filename}"
            m, labs = matrix_from_rows(split_rows(_member_text(zf, info, name), where), where)
            if m.ndim != 2 or m.shape[0] != m.shape[1]:
                raise DataError(
                    f"{where}: expected a square regions × regions matrix, got shape "
                    f"{m.shape[0]} × {m.shape[1]}; fix the matrix"
                )
            out[k] = m
            out[f"_{k}_labels"] = labs
        if out["weights"].shape != out["lengths"].shape:
            raise DataError(
                f"{name}: expected tract_lengths.txt of the weights' shape "
                f"{out['weights'].shape}, got {out['lengths'].shape}; fix the zip"
            )
        labels = out.pop("_weights_labels") or out.pop("_lengths_labels", None)
        out.pop("_lengths_labels", None)
        centres = None
        info = members["centres"]
        if info is not None:
            where = f"{name}!{info.filename}"
            rows = split_rows(_member_text(zf, info, name), where)
            n = out["weights"].shape[0]
            if len(rows) != n:
                raise DataError(
                    f"{where}: expected one line per region ({n}), got {len(rows)}; fix centres.txt"
                )
            if all(len(r) == 4 for r in rows):
                labels = [r[0] for r in rows]
                centres = to_float([r[1:] for r in rows], where, col_offset=1)
            elif all(len(r) == 3 for r in rows):
                centres = to_float(rows, where)
            else:
                raise DataError(
                    f"{where}: expected 'label x y z' (or 'x y z') on every line, got "
                    f"{sorted({len(r) for r in rows})} fields; fix centres.txt"
                )
    return {
        "weights": np.asarray(out["weights"], dtype=np.float64),
        "lengths": np.asarray(out["lengths"], dtype=np.float64),
        "labels": labels,
        "centres": centres,
    }
