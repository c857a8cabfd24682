"""Matching BOLD regions to connectome regions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bnmfit.errors import ConfigError, DataError
from bnmfit.io._files import check_unique, is_default_labels, short_list

__all__ = ["align"]

#: how messages name the two sides of :func:`align` by default: their subjects-sheet columns
SOURCES = ("the connectome (sheet column sc_weights)", "the BOLD or FC (sheet column bold or fc)")


def _side(labels, n, what: str) -> tuple[list[str] | None, int | None]:
    if labels is None:
        return None, n
    if isinstance(labels, (int, np.integer)):
        return None, int(labels)
    labels = [str(x) for x in labels]
    if n is not None and n != len(labels):
        raise ConfigError(
            f"align: expected n_{what}={n} to equal the number of {what} labels, got "
            f"{len(labels)} labels; drop n_{what}"
        )
    return labels, len(labels)


def align(
    sc_labels: Sequence[str] | int | None,
    bold_labels: Sequence[str] | int | None,
    *,
    n_sc: int | None = None,
    n_bold: int | None = None,
    sources: tuple[str, str] = SOURCES,
) -> np.ndarray:
    """The BOLD column index that puts BOLD regions in connectome (SC) order.

    ``bold.data[:, align(sc_labels, bold.labels)]`` has its columns in the order of
    ``sc_labels``. Labels are matched exactly (as strings). When a side has no labels, give
    its region count instead (an int, or ``n_sc=``/``n_bold=``); generated labels
    (``region-001``, ... from :func:`~bnmfit.io.read_connectome`) count as no labels. Without
    labels on a side the regions are matched by position, and the counts must agree.
    ``sources`` name the two sides in messages (e.g. their files); by default their sheet
    columns.

    Raises:
        DataError: a label on one side only (both lists are given in the message), duplicate
            labels, or different counts when matching by position.
        ConfigError: a side without labels and without a count.
    """
    sl, ns = _side(sc_labels, n_sc, "sc")
    bl, nb = _side(bold_labels, n_bold, "bold")
    if sl is not None and is_default_labels(sl):
        sl = None
    if bl is not None and is_default_labels(bl):
        bl = None
    sc_src, bold_src = sources
    if sl is not None and bl is not None:
        check_unique(sl, sc_src)
        check_unique(bl, bold_src)
        pos = {x: k for k, x in enumerate(bl)}
        only_sc = [x for x in sl if x not in pos]
        sset = set(sl)
        only_bold = [x for x in bl if x not in sset]
        if only_sc or only_bold:
            raise DataError(
                f"{bold_src} and {sc_src}: expected the same regions, got {len(only_sc)} "
                f"connectome regions not in the BOLD ({short_list(only_sc) or '-'}) and "
                f"{len(only_bold)} BOLD regions not in the connectome "
                f"({short_list(only_bold) or '-'}); use the same atlas (and label names) for both"
            )
        return np.array([pos[x] for x in sl], dtype=np.intp)
    if ns is None or nb is None:
        raise ConfigError(
            "align: expected labels or a region count for both sides, got "
            f"{'none' if ns is None else ns} for the connectome and "
            f"{'none' if nb is None else nb} for the BOLD; pass the count as an int "
            "(or n_sc=/n_bold=)"
        )
    if ns != nb:
        raise DataError(
            f"{bold_src} and {sc_src}: expected the same number of regions, got {ns} in the "
            f"connectome and {nb} in the BOLD, with no region labels to match them by; use the "
            "same atlas for both, and name the regions (a header row of names in the files, "
            "or a labels file in the sheet column labels)"
        )
    return np.arange(ns, dtype=np.intp)
