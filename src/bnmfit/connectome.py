"""The structural connectome: weights, tract lengths (mm) and region labels.

A :class:`Connectome` is validated when it is made, so everything downstream can trust it:
square, equal shapes, finite, non-negative, labels unique and one per region. Normalisation
and symmetrisation are explicit choices recorded on the object; delays follow from the tract
lengths and a conduction speed in mm/ms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

from bnmfit.errors import ConfigError, DataError, short_list, unknown_choice

__all__ = ["ISOLATED_MODES", "NORMALISATIONS", "Connectome", "delay_steps"]

Normalisation = Literal["none", "max", "in-strength", "log1p"]
NORMALISATIONS: tuple[str, ...] = ("none", "max", "in-strength", "log1p")
ISOLATED_MODES: tuple[str, ...] = ("warn", "error")


def _check_matrix(name: str, m: np.ndarray, n: int | None = None) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataError(f"{name} must be a square matrix (regions × regions), got shape {m.shape}")
    if n is not None and m.shape[0] != n:
        raise DataError(
            f"{name} has {m.shape[0]} regions but the weights have {n}: "
            "give both matrices for the same parcellation"
        )
    bad = ~np.isfinite(m)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(
            f"{name} has {int(bad.sum())} non-finite entries (first at row {i}, column {j}): "
            "replace NaN/inf by 0 for absent connections"
        )
    if (m < 0).any():
        i, j = np.argwhere(m < 0)[0]
        raise DataError(
            f"{name} has {int((m < 0).sum())} negative entries (first {m[i, j]:g} at row {i}, "
            f"column {j}): structural {name} must be non-negative"
        )
    return m


@dataclasses.dataclass(frozen=True)
class Connectome:
    """A validated structural connectome.

    Attributes:
        weights: (N, N) coupling weights; row i receives from column j. Zero diagonal.
        lengths: (N, N) tract lengths in mm.
        labels: N unique region labels.
        normalisation: how ``weights`` were normalised from the raw matrix.
        symmetric: whether ``weights`` and ``lengths`` were symmetrised.
    """

    weights: np.ndarray
    lengths: np.ndarray
    labels: tuple[str, ...]
    normalisation: str = "none"
    symmetric: bool = False

    @classmethod
    def from_arrays(
        cls,
        weights: np.ndarray,
        lengths: np.ndarray | None = None,
        labels: Sequence[str] | None = None,
        *,
        normalise: Normalisation = "max",
        symmetrise: bool = False,
        isolated: Literal["warn", "error"] = "warn",
    ) -> Connectome:
        """Validate raw matrices and return a normalised connectome.

        Args:
            weights: raw (N, N) weights (streamline counts, densities, ...).
            lengths: (N, N) tract lengths in mm; ``None`` means zero lengths (no delays).
            labels: region labels; ``None`` gives ``region-001``, ...
            normalise: ``none``; ``max`` (divide by the largest weight); ``in-strength``
                (each row divided by its sum, so every region receives unit total input);
                ``log1p`` (log(1 + w), then divided by its maximum).
            symmetrise: replace both matrices by the mean of themselves and their transpose.
            isolated: ``warn`` keeps regions without any connection (the caller reports
                :attr:`isolated`); ``error`` raises a DataError that names them.
        """
        w = _check_matrix("weights", weights)
        n = w.shape[0]
        ln = np.zeros_like(w) if lengths is None else _check_matrix("lengths", lengths, n)
        if labels is None:
            labels = [f"region-{i + 1:03d}" for i in range(n)]
        labels = tuple(str(x) for x in labels)
        if len(labels) != n:
            raise DataError(
                f"{len(labels)} labels given for {n} regions: give one label per region"
            )
        if len(set(labels)) != n:
            dup = sorted({x for x in labels if labels.count(x) > 1})
            raise DataError(f"region labels must be unique, duplicated: {', '.join(dup)}")
        if normalise not in NORMALISATIONS:
            raise ConfigError(unknown_choice("normalisation", normalise, NORMALISATIONS))
        w = w.copy()
        np.fill_diagonal(w, 0.0)
        if symmetrise:
            w = 0.5 * (w + w.T)
            ln = 0.5 * (ln + ln.T)
        if isolated not in ISOLATED_MODES:
            raise ConfigError(unknown_choice("isolated mode", isolated, ISOLATED_MODES))
        if not w.any():
            raise DataError(
                "the weights are all zero off the diagonal: no region is connected; check the "
                "file in the sheet column sc_weights (and sc_key or measure for a .mat file)"
            )
        if normalise == "max":
            w = w / w.max()
        elif normalise == "log1p":
            w = np.log1p(w)
            w = w / w.max()
        elif normalise == "in-strength":
            s = w.sum(axis=1, keepdims=True)
            w = np.divide(w, s, out=np.zeros_like(w), where=s > 0)
        conn = cls(w, ln, labels, normalise, symmetrise)  # normalising keeps the zero pattern
        lonely = conn.isolated
        if isolated == "error" and lonely:
            raise DataError(
                f"expected every region to be connected, got {len(lonely)} isolated "
                f"region(s) (all-zero row and column): {short_list(lonely)}; fix the "
                "connectome, or set connectome.isolated: warn to keep them"
            )
        return conn

    @property
    def n_regions(self) -> int:
        return self.weights.shape[0]

    @property
    def isolated(self) -> tuple[str, ...]:
        """Labels of regions with neither incoming nor outgoing connections."""
        deg = self.weights.sum(axis=0) + self.weights.sum(axis=1)
        return tuple(lab for lab, d in zip(self.labels, deg, strict=True) if d == 0)

    def delays(self, speed: float) -> np.ndarray:
        """Conduction delays in ms: lengths (mm) / speed (mm/ms); ``inf`` speed means none."""
        if not speed > 0:
            raise ConfigError(
                f"conduction speed must be > 0 mm/ms (inf for no delays), got {speed}"
            )
        if np.isinf(speed):
            return np.zeros_like(self.lengths)
        return self.lengths / speed


def delay_steps(delays_ms: np.ndarray, dt: float) -> np.ndarray:
    """Delays in whole integration steps (rounded to the nearest step), as int32."""
    return np.rint(np.asarray(delays_ms) / dt).astype(np.int32)
