"""Matrices from rows of text tokens: the header / label-column conventions of TSV files."""

from __future__ import annotations

import numpy as np

from bnmfit.errors import DataError
from bnmfit.io._files import first_row_is_header, is_int_literal, is_number, to_float

# First header cell of a table whose first column holds the row labels.
_INDEX_HEADERS = frozenset(
    {"node", "", "index", "unnamed: 0", "label", "labels", "name", "names", "region", "roi"}
)


def matrix_from_rows(rows: list[list[str]], name: str) -> tuple[np.ndarray, list[str] | None]:
    """A 2-D array and its labels from rows of text tokens.

    Understood layouts: no header (all numbers); a header row of labels; a header row of
    integer region IDs (recognised by there being one more row than columns); a first column
    of row labels (XCP-D relmat with ``Node`` in the corner, pandas ``index_col``), which must
    then equal the column labels. Missing tokens (``n/a``, ``NaN``, ...) become NaN.
    """
    first = rows[0]
    header: list[str] | None = None
    body = rows
    if first_row_is_header(rows):
        header, body = first, rows[1:]
    elif len(rows) == len(first) + 1 and all(is_int_literal(t) for t in first):
        header, body = first, rows[1:]  # a header row of integer region IDs
    if not body:
        raise DataError(
            f"{name}: expected rows of numbers after the header row, got only the header; "
            "write the matrix below its labels"
        )
    width = len(body[0])
    n = len(body)
    first_col_text = all(r and not is_number(r[0]) for r in body)
    index_header = header is not None and (
        len(header) == width - 1
        or (len(header) == width and header[0].strip().lower() in _INDEX_HEADERS)
    )
    row_labels: list[str] | None = None
    col_labels: list[str] | None = None
    if width == n + 1 and (first_col_text or index_header):
        row_labels = [r[0] for r in body]
        body = [r[1:] for r in body]
        if header is not None:
            col_labels = header[1:] if len(header) == width else list(header)
    elif header is not None:
        if len(header) != width:
            raise DataError(
                f"{name}: expected one header label per column ({width}), got {len(header)} "
                "labels; fix the header row"
            )
        col_labels = list(header)
    values = to_float(
        body, name, row_offset=int(header is not None), col_offset=int(row_labels is not None)
    )
    if row_labels is not None and col_labels is not None and row_labels != col_labels:
        i = (
            next(k for k, (a, b) in enumerate(zip(row_labels, col_labels, strict=False)) if a != b)
            if len(row_labels) == len(col_labels)
            else 0
        )
        raise DataError(
            f"{name}: expected the row labels (first column) to equal the column labels, "
            f"got {row_labels[i]!r} vs {col_labels[i]!r} at position {i + 1}; write rows and "
            "columns in the same region order"
        )
    labels = col_labels if col_labels is not None else row_labels
    return values, labels
