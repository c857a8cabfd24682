"""The exceptions of bnmfit.

Every error raised on bad input is one of these, with a message that says what was
expected, what came, and how to fix it. The command-line scripts turn them into a
one-line message and an exit code: :class:`DataError` exits 1, :class:`ConfigError` exits 2.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BnmfitError", "ConfigError", "DataError", "short_list"]


def short_list(items: Sequence[object], limit: int = 8, sep: str = ", ") -> str:
    """``a, b, c`` with at most ``limit`` items, then ``(+k more)``: the items a message names."""
    items = [str(x) for x in items]
    if len(items) <= limit:
        return sep.join(items)
    return sep.join(items[:limit]) + f" (+{len(items) - limit} more)"


class BnmfitError(Exception):
    """Base class of every error bnmfit raises on purpose."""

    exit_code = 1


class DataError(BnmfitError, ValueError):
    """An input file or array is malformed, inconsistent or out of range (exit code 1)."""

    exit_code = 1


class ConfigError(BnmfitError, ValueError):
    """The configuration or a call's options are invalid (exit code 2)."""

    exit_code = 2
