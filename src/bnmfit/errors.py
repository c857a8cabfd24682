"""The exceptions of bnmfit.

Every error raised on bad input is one of these, with a message that says what was
expected, what came, and how to fix it. The command-line scripts turn them into a
one-line message and an exit code: :class:`DataError` exits 1, :class:`ConfigError` exits 2.
"""

from __future__ import annotations

__all__ = ["BnmfitError", "ConfigError", "DataError"]


class BnmfitError(Exception):
    """Base class of every error bnmfit raises on purpose."""

    exit_code = 1


class DataError(BnmfitError, ValueError):
    """An input file or array is malformed, inconsistent or out of range (exit code 1)."""

    exit_code = 1


class ConfigError(BnmfitError, ValueError):
    """The configuration or a call's options are invalid (exit code 2)."""

    exit_code = 2
