"""File plumbing shared by the readers: format detection, (gzip) bytes, delimited text.

Every failure here is a :class:`~bnmfit.errors.DataError` (bad file) or a
:class:`~bnmfit.errors.ConfigError` (bad option) whose one-line message names the file, says
what was expected, what came, and how to fix it.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import warnings
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from bnmfit.errors import ConfigError, DataError, short_list

PathLike = str | os.PathLike

#: Format names accepted by the ``fmt=`` argument of the readers.
FORMATS: tuple[str, ...] = (
    "tsv",
    "csv",
    "txt",
    "npy",
    "npz",
    "mat",
    "pconn",
    "ptseries",
    "nifti",
    "tvb",
)
TEXT_FORMATS = frozenset({"tsv", "csv", "txt"})

#: Tokens read as a missing value (NaN) in delimited text.
MISSING_TOKENS = frozenset({"", "n/a", "N/A", "na", "NA", "nan", "NaN", "NAN", "null", "None"})

# (suffix, format), longest first, compared on the lower-cased file name.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".pconn.nii", "pconn"),
    (".ptseries.nii", "ptseries"),
    (".dtseries.nii", "!dense CIFTI time series"),
    (".dconn.nii", "!dense CIFTI connectivity"),
    (".dscalar.nii", "!dense CIFTI scalars"),
    (".dlabel.nii", "!CIFTI label"),
    (".pscalar.nii", "!parcellated CIFTI scalars"),
    (".nii.gz", "nifti"),
    (".nii", "nifti"),
    (".tsv.gz", "tsv"),
    (".tsv", "tsv"),
    (".csv.gz", "csv"),
    (".csv", "csv"),
    (".txt.gz", "txt"),
    (".txt", "txt"),
    (".dat", "txt"),
    (".npy", "npy"),
    (".npz", "npz"),
    (".mat", "mat"),
    (".zip", "tvb"),
)


def describe(path: PathLike) -> str:
    """The file name as shown in messages."""
    return os.fspath(path)


def detect_format(
    path: PathLike,
    fmt: str | None,
    allowed: Sequence[str],
    what: str,
    column: str = "sc_format or bold_format",
) -> str:
    """The format of ``path``: ``fmt`` when given, else from the file name.

    Args:
        path: the file.
        fmt: an explicit format (one of :data:`FORMATS`) or ``None``.
        allowed: the formats the calling reader understands.
        what: what the reader reads, for messages ("a matrix", "BOLD time series").
        column: the subjects-sheet column that sets ``fmt``, for messages.
    """
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(
                f"{describe(path)}: expected the sheet column {column} to be one of "
                f"{', '.join(FORMATS)}, got {fmt!r}; leave it empty to choose by file name"
            )
        kind = fmt
    else:
        name = Path(path).name.lower()
        kind = next((k for suffix, k in _SUFFIXES if name.endswith(suffix)), None)
        if kind is None:
            raise DataError(
                f"{describe(path)}: expected {what} file ending in "
                f"{_suffix_list(allowed)}, got an unrecognised file name; "
                f"rename the file or set the sheet column {column}"
            )
        if kind.startswith("!"):
            raise DataError(
                f"{describe(path)}: expected {what} (parcellated CIFTI .pconn.nii or "
                f".ptseries.nii), got a {kind[1:]} file; parcellate it first "
                "(e.g. wb_command -cifti-parcellate) or give a regional file"
            )
    if kind not in allowed:
        if fmt is not None:
            got, fix = (
                f"{kind} (the sheet column {column})",
                f"or set {column} to the file's format",
            )
        else:
            got, fix = f"a {kind} file", f"or set the sheet column {column} if its name misleads"
        raise DataError(
            f"{describe(path)}: expected {what} ({_suffix_list(allowed)}), got {got}; "
            f"give a file of one of those formats, {fix}"
        )
    return kind


def _suffix_list(allowed: Iterable[str]) -> str:
    allowed = set(allowed)
    seen: list[str] = []
    for suffix, kind in _SUFFIXES:
        if kind in allowed and suffix not in (".dat",):
            seen.append(suffix)
    return ", ".join(seen)


def check_file(path: PathLike) -> Path:
    """``path`` as a Path, after checking it is an existing non-empty regular file."""
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"{describe(path)}: expected an existing file, got no such file; check the path "
            "(relative paths are relative to the working directory)"
        )
    if not p.is_file():
        raise DataError(f"{describe(path)}: expected a file, got a directory; give a file path")
    if p.stat().st_size == 0:
        raise DataError(
            f"{describe(path)}: expected data, got an empty file (0 bytes); "
            "re-create or re-download it"
        )
    return p


def read_bytes(path: PathLike) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic number (whatever the
    name). A ``.gz`` name on uncompressed bytes is read as it is, with a ``UserWarning``."""
    p = check_file(path)
    raw = p.read_bytes()
    if p.name.lower().endswith(".gz") and raw[:2] != b"\x1f\x8b":
        warnings.warn(
            f"{describe(path)}: expected gzip-compressed data (the name ends in .gz), got "
            "uncompressed content; read as it is: compress it (gzip) or drop .gz from its name",
            UserWarning,
            stacklevel=2,
        )
    return maybe_gunzip(raw, describe(path))


def maybe_gunzip(raw: bytes, name: str) -> bytes:
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        out = gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(
            f"{name}: expected a complete gzip stream, got a truncated or corrupt one ({e}); "
            "re-create or re-download the file"
        ) from None
    if not out:
        raise DataError(f"{name}: expected data, got an empty gzip stream; re-create the file")
    return out


def decode_text(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"{name}: expected UTF-8 text, got binary data; check the file type "
            "or set the sheet column sc_format/bold_format"
        ) from None
    if not text.strip():
        raise DataError(
            f"{name}: expected data, got a file with only white space; re-create the file"
        )
    return text


def read_text(path: PathLike) -> str:
    return decode_text(read_bytes(path), describe(path))


def split_rows(text: str, name: str) -> list[list[str]]:
    """Rows of tokens: tab- or comma-delimited (sniffed from the first line), else white space.

    Blank lines are skipped; quotes around CSV fields are removed.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{name}: expected data, got an empty file; re-create the file")
    first = lines[0]
    if "\t" in first:
        delim: str | None = "\t"
    elif "," in first:
        delim = ","
    else:
        delim = None
    if delim is None:
        rows = [ln.split() for ln in lines]
    else:
        rows = [[tok.strip() for tok in row] for row in csv.reader(lines, delimiter=delim)]
        # a trailing delimiter gives an empty last field in every row: drop it
        if all(r and r[-1] == "" for r in rows):
            rows = [r[:-1] for r in rows]
    return rows


_FLOAT_RE = re.compile(
    r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity)$", re.IGNORECASE
)
_INT_RE = re.compile(r"^[+-]?\d+$")


def is_number(tok: str) -> bool:
    """A float literal or a missing-value token."""
    return tok in MISSING_TOKENS or bool(_FLOAT_RE.match(tok))


def is_int_literal(tok: str) -> bool:
    return bool(_INT_RE.match(tok))


def first_row_is_header(rows: Sequence[Sequence[str]]) -> bool:
    """Whether the first row holds text labels (a header) rather than data.

    A first row whose only text is its first cell is data when every row starts with a text
    cell: a column of row labels without a header row.
    """
    first = rows[0]
    if all(is_number(t) for t in first):
        return False
    label_column = (
        len(first) > 1
        and all(is_number(t) for t in first[1:])
        and all(len(r) == len(first) and r and not is_number(r[0]) for r in rows[1:])
    )
    return not label_column


def to_float(
    rows: Sequence[Sequence[str]], name: str, row_offset: int = 0, col_offset: int = 0
) -> np.ndarray:
    """A float64 array from rows of equal length; missing tokens become NaN."""
    if not rows:
        raise DataError(
            f"{name}: expected at least one row of numbers, got none; add the data rows"
        )
    width = len(rows[0])
    for i, r in enumerate(rows):
        if len(r) != width:
            raise DataError(
                f"{name}: expected every row to have {width} values, got {len(r)} in data row "
                f"{i + 1 + row_offset}; fix the ragged row (a truncated file?)"
            )
    flat = ["nan" if t in MISSING_TOKENS else t for r in rows for t in r]
    try:
        arr = np.array(flat, dtype=np.float64)
    except ValueError:
        for i, r in enumerate(rows):
            for j, t in enumerate(r):
                if not is_number(t):
                    hint = _delimiter_hint(t)
                    raise DataError(
                        f"{name}: expected numbers, got {t!r} at data row {i + 1 + row_offset}, "
                        f"column {j + 1 + col_offset}; "
                        + (hint or "remove the text or mark missing values as n/a")
                    ) from None
        raise
    return arr.reshape(len(rows), width)


_DELIMITERS = {";": "semicolons", "|": "bars", ",": "commas", "\t": "tabs", " ": "spaces"}


def _delimiter_hint(token: str) -> str | None:
    """What to do when a cell is several numbers joined by a delimiter the reader did not use
    (a wrong delimiter), or None."""
    for sep, what in _DELIMITERS.items():
        parts = [x.strip() for x in token.split(sep)]
        if len(parts) > 1 and all(x and is_number(x) for x in parts):
            return (
                f"the values seem to be separated by {what}, not by the file's "
                "delimiter: use tabs in .tsv and commas in .csv (or set the sheet column "
                "sc_format/bold_format)"
            )
    return None


def sidecar_path(path: PathLike) -> Path:
    """The JSON sidecar of a data file: same name with the data extension(s) replaced by .json."""
    p = Path(path)
    name = p.name
    low = name.lower()
    for suffix, _ in _SUFFIXES:
        if low.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_suffix(".json")


def read_sidecar(path: PathLike) -> dict | None:
    """The sidecar's JSON object, or ``None`` when there is no sidecar."""
    sc = sidecar_path(path)
    if not sc.is_file():
        return None
    try:
        obj = json.loads(sc.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(
            f"{sc}: expected a JSON sidecar, got invalid JSON ({e}); fix or remove the sidecar"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(
            f"{sc}: expected a JSON object in the sidecar, got {type(obj).__name__}; "
            'write it as {"RepetitionTime": <seconds>}'
        )
    return obj


def as_positive_float(value: object, what: str, where: str) -> float:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(
            f"{where}: expected {what} to be a number, got {value!r}; give it in seconds"
        ) from None
    if not math.isfinite(x) or x <= 0:
        raise DataError(f"{where}: expected {what} > 0, got {value!r}; give it in seconds")
    return x


def default_labels(n: int) -> list[str]:
    """``region-001``, ``region-002``, ... for files that carry no labels."""
    return [f"region-{i + 1:03d}" for i in range(n)]


_DEFAULT_LABEL_RE = re.compile(r"^region-\d{3,}$")


def is_default_labels(labels: Sequence[str]) -> bool:
    return list(labels) == default_labels(len(labels)) and all(
        _DEFAULT_LABEL_RE.match(x) for x in labels
    )


def check_unique(labels: Sequence[str], name: str) -> None:
    seen: set[str] = set()
    dup: list[str] = []
    for x in labels:
        if x in seen and x not in dup:
            dup.append(x)
        seen.add(x)
    if dup:
        raise DataError(
            f"{name}: expected unique region labels, got duplicates {short_list(dup)}; "
            "rename them so every region has its own label"
        )
