"""The exceptions of bnmfit.

Every error raised on bad input is one of these, with a message that says what was
expected, what came, and how to fix it. The command-line scripts turn them into a
one-line message and an exit code: :class:`DataError` exits 1, :class:`ConfigError` exits 2.

Messages are written in the user's words: the fix names the subjects-sheet column or the
config key the user writes (``sc_key``, ``connectome.missing``, ``bold.max_nan_run``), with
the Python argument in parentheses where a library caller needs another one, and regions by
their labels when any are known (:func:`region_name`). A script adds the subject
(:func:`for_subject`), so that every line of a cohort's run says whose data it is about.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "BnmfitError",
    "ConfigError",
    "DataError",
    "close_match",
    "for_subject",
    "region_name",
    "short_list",
    "unknown_choice",
]


def short_list(items: Sequence[object], limit: int = 8, sep: str = ", ") -> str:
    """``a, b, c`` with at most ``limit`` items, then ``(+k more)``: the items a message names."""
    items = [str(x) for x in items]
    if len(items) <= limit:
        return sep.join(items)
    return sep.join(items[:limit]) + f" (+{len(items) - limit} more)"


def for_subject(message: str, subject: str | None) -> str:
    """``sub-<subject>: message``; the message unchanged when ``subject`` is None or the
    message already starts with that prefix."""
    if not subject:
        return message
    prefix = f"sub-{subject}:"
    return message if message.startswith(prefix) else f"{prefix} {message}"


def region_name(labels: Sequence[str] | None, j: int, axis: str = "column") -> str:
    """Region ``j`` (0-based) as a message names it: ``Left-Thalamus (column 3)`` when
    labels are known, else ``column 3``."""
    where = f"{axis} {j + 1}"
    return f"{labels[j]} ({where})" if labels is not None else where


def close_match(name: object, options: Iterable[object]) -> str | None:
    """The allowed name closest to a misspelt one (case differences first), or None."""
    options = [str(o) for o in options]
    for o in options:
        if o.lower() == str(name).lower():
            return o
    close = difflib.get_close_matches(str(name), options, n=1)
    return close[0] if close else None


def unknown_choice(what: str, value: object, allowed: Iterable[object], context: str = "") -> str:
    """The message for a value outside its allowed set, with a did-you-mean hint:
    ``unknown {what} {value!r}{context} (did you mean 'x'?): use one of a, b, c``."""
    allowed = [str(a) for a in allowed]
    close = close_match(value, allowed)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"unknown {what} {value!r}{context}{hint}: use one of {', '.join(allowed)}"


class BnmfitError(Exception):
    """Base class of every error bnmfit raises on purpose."""

    exit_code = 1


class DataError(BnmfitError, ValueError):
    """An input file or array is malformed, inconsistent or out of range (exit code 1)."""

    exit_code = 1


class ConfigError(BnmfitError, ValueError):
    """The configuration or a call's options are invalid (exit code 2)."""

    exit_code = 2
