"""Empirical FC and FCD from a subject's regional BOLD, with quality numbers.

The BOLD goes through exactly the processing the simulated BOLD gets —
:func:`bnmfit.observables.preprocess`, :func:`~bnmfit.observables.fc` and
:func:`~bnmfit.observables.fcd` — so that empirical and simulated FC are comparable. What is
specific to measured data happens here, before that: the first ``discard`` volumes are
dropped, short runs of missing samples (``n/a``) are interpolated, and regions without
signal are refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from bnmfit import observables
from bnmfit.errors import ConfigError, DataError, region_name, short_list

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.results import ConnectomeFile, EmpiricalFile

__all__ = ["EmpiricalFC", "empirical_fc", "empirical_record"]

#: fewest volumes (after ``discard``) from which an FC is computed.
MIN_TRS = 10
#: a region whose variance is below this fraction of the median region's variance counts as
#: flat (signal dropout) in ``qc["frac_zero_variance"]``.
FLAT_FRACTION = 1e-6
#: a region keeping less than this fraction of its variance through detrending/filtering has
#: no signal left (e.g. an exactly linear drift).
SIGNAL_LEFT = 1e-16


def _float64():
    """A context in which JAX computes in float64 (the empirical target is kept in float64
    whatever the process-wide setting)."""
    import jax

    return jax.enable_x64(True)


@dataclasses.dataclass(frozen=True, eq=False)
class EmpiricalFC:
    """A subject's empirical observables.

    Attributes:
        bold: (T', N) the preprocessed BOLD (after discard, interpolation, detrending,
            band-pass, z-scoring) from which ``fc`` and ``fcd`` were computed.
        fc: (N, N) Pearson FC.
        fcd: (W, W) FCD, or ``None`` when no FCD window was asked for.
        qc: quality numbers (see :func:`empirical_fc`).
    """

    bold: np.ndarray
    fc: np.ndarray
    fcd: np.ndarray | None
    qc: dict


def _names(labels: Sequence[str] | None, cols: Sequence[int], limit: int = 8) -> str:
    return short_list([region_name(labels, int(j)) for j in cols], limit)


def _nan_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in a 1-D boolean mask."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True))


def _interpolate(x: np.ndarray, max_nan_run: int, offset: int, labels, where: str):
    """Linearly interpolate runs of NaN up to ``max_nan_run`` long; DataError otherwise."""
    nan = np.isnan(x)
    if not nan.any():
        return x, 0
    empty = np.flatnonzero(nan.all(axis=0))
    if empty.size:
        raise DataError(
            f"{where}: expected BOLD signal in every region, got {empty.size} regions that are "
            f"n/a in every volume ({_names(labels, empty)}); drop them from both the "
            "connectome and the BOLD (e.g. a region outside the field of view)"
        )
    x = x.copy()
    t = np.arange(x.shape[0])
    n_interp = 0
    for j in np.flatnonzero(nan.any(axis=0)):
        col = nan[:, j]
        for a, b in _nan_runs(col):
            if b - a > max_nan_run:
                raise DataError(
                    f"{where}: expected at most {max_nan_run} consecutive n/a volumes per "
                    f"region, got {b - a} in {region_name(labels, j)} at volumes "
                    f"{a + 1 + offset}–{b + offset}; raise bold.max_nan_run in the config "
                    "(max_nan_run= in Python) to interpolate them, or drop the region from both "
                    "connectome and BOLD"
                )
        x[col, j] = np.interp(t[col], t[~col], x[~col, j])
        n_interp += int(col.sum())
    return x, n_interp


def empirical_fc(
    bold: np.ndarray,
    tr: float,
    *,
    discard: int = 0,
    detrend: bool = True,
    bandpass: tuple[float, float] | None = None,
    fcd_window: int | None = None,
    fcd_step: int = 1,
    max_nan_run: int = 0,
    sc_weights: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    source: str | None = None,
) -> EmpiricalFC:
    """FC (and FCD) of a subject's regional BOLD, processed like the simulated BOLD.

    Args:
        bold: (T, N) BOLD, time × regions (e.g. ``read_bold(...).data``); NaN marks missing.
        tr: repetition time in seconds.
        discard: volumes dropped at the start (before anything else).
        detrend, bandpass: passed to :func:`bnmfit.observables.preprocess` (band in Hz).
        fcd_window, fcd_step: FCD sliding window and step, in volumes (TRs), as in
            :func:`bnmfit.observables.fcd`; ``fcd_window=None`` computes no FCD.
        max_nan_run: the longest run of missing volumes per region that is linearly
            interpolated (at the edges: the nearest sample is repeated); longer → DataError.
        sc_weights: (N, N) structural weights (in the BOLD's region order) for the SC–FC
            correlation in the QC; raw streamline counts are best (see ``sc_fc_r``).
        labels, source: region labels and the file name, used in error messages only.

    Returns:
        :class:`EmpiricalFC`; ``qc`` holds ``n_tr_used`` (volumes after discard),
        ``n_regions``, ``tr``, ``mean_fc`` (mean of the upper triangle, k=1),
        ``frac_zero_variance`` (fraction of regions whose variance is below
        ``FLAT_FRACTION`` × the median region's variance — flat, but not constant),
        ``n_interpolated`` (interpolated samples), ``sc_fc_r`` (Pearson r between the upper
        triangles of log1p(sc_weights) and FC; ``None`` without ``sc_weights``) and
        ``sc_fc_r_transform`` (``"log1p"``).

    Raises:
        DataError: not 2-D, too few volumes for ``discard`` (+ the FCD window), constant
            regions (named), missing samples beyond ``max_nan_run`` (region and volumes named).
        ConfigError: negative ``discard``/``max_nan_run``, bad FCD window/step, bad TR.
    """
    where = source or "BOLD"
    x = np.asarray(bold, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(
            f"{where}: expected BOLD as a 2-D array (time × regions), got shape "
            f"{x.shape}; read it with bnmfit.io.read_bold"
        )
    if labels is not None and len(labels) != x.shape[1]:
        raise DataError(
            f"{where}: expected one label per region ({x.shape[1]}), got "
            f"{len(labels)}; pass the BOLD's own labels"
        )
    if not (np.isfinite(tr) and tr > 0):
        raise ConfigError(f"{where}: expected a TR > 0 s, got {tr!r}; give the TR in seconds")
    for arg, val in (("discard", discard), ("max_nan_run", max_nan_run)):
        if int(val) != val or val < 0:
            raise ConfigError(
                f"{where}: expected {arg} to be an integer >= 0, got {val!r}; fix {arg}"
            )
    if fcd_window is not None and (
        int(fcd_window) != fcd_window or fcd_window < 2 or int(fcd_step) != fcd_step or fcd_step < 1
    ):
        raise ConfigError(
            f"{where}: expected an FCD window >= 2 and step >= 1 (in TRs), got window "
            f"{fcd_window!r}, step {fcd_step!r}; fix the FCD settings"
        )
    n_t, n = x.shape
    need = MIN_TRS if fcd_window is None else max(MIN_TRS, int(fcd_window) + int(fcd_step))
    if n_t - discard < need:
        fcd_txt = "" if fcd_window is None else f" (FCD window {fcd_window} + step {fcd_step})"
        raise DataError(
            f"{where}: expected at least {need} volumes after discarding {discard}{fcd_txt}, "
            f"got {n_t - discard} of {n_t}; lower discard or the FCD window, or give a longer "
            "run"
        )
    x = x[int(discard) :]
    if np.isinf(x).any():
        raise DataError(
            f"{where}: expected finite BOLD samples, got "
            f"{int(np.isinf(x).sum())} inf values; mark bad samples as n/a"
        )
    x, n_interp = _interpolate(x, int(max_nan_run), int(discard), labels, where)

    ptp = np.ptp(x, axis=0)
    scale = np.max(np.abs(x), axis=0)
    const = np.flatnonzero(ptp <= 1e-12 * np.maximum(scale, np.finfo(float).tiny))
    if const.size:
        raise DataError(
            f"{where}: expected BOLD that varies in time in every region, got {const.size} "
            f"constant regions ({_names(labels, const)}); drop them from both the connectome "
            "and the BOLD"
        )
    var = x.var(axis=0)
    frac_flat = float(np.mean(var < FLAT_FRACTION * np.median(var)))

    with _float64():
        # preprocess = detrend, band-pass, then z-score: z-scoring is done separately only to
        # catch regions that the detrending/filtering left without signal
        y = np.asarray(
            observables.preprocess(
                x, tr, discard=0, detrend=detrend, bandpass=bandpass, zscore=False
            ),
            dtype=np.float64,
        )
        left = y.var(axis=0) / var
        bad = np.flatnonzero(~np.all(np.isfinite(y), axis=0) | ~(left > SIGNAL_LEFT))
        if bad.size:
            raise DataError(
                f"{where}: expected BOLD that still varies after detrending/filtering, got "
                f"{bad.size} regions without signal left ({_names(labels, bad)}); drop them "
                "from both the connectome and the BOLD"
            )
        y = np.asarray(observables.zscore(y), dtype=np.float64)
        fc = np.asarray(observables.fc(y), dtype=np.float64)
        fcd = None
        if fcd_window is not None:
            fcd = np.asarray(observables.fcd(y, int(fcd_window), int(fcd_step)), dtype=np.float64)
    fc_up = np.asarray(observables.upper(fc, k=1), dtype=np.float64)
    sc_fc_r = None
    if sc_weights is not None:
        sc = np.asarray(sc_weights, dtype=np.float64)
        if sc.shape != (n, n):
            raise DataError(
                f"{where}: expected SC weights of shape {(n, n)} (one row per BOLD region), "
                f"got {sc.shape}; align the connectome to the BOLD regions first"
            )
        if np.any(sc < 0) or not np.all(np.isfinite(sc)):
            raise DataError(
                f"{where}: expected finite non-negative SC weights for the "
                "SC–FC correlation, got negative or NaN entries; check the weights"
            )
        sc_up = np.log1p(np.asarray(observables.upper(sc, k=1), dtype=np.float64))
        if np.ptp(sc_up) > 0 and np.ptp(fc_up) > 0:
            sc_fc_r = float(np.corrcoef(sc_up, fc_up)[0, 1])
        else:
            sc_fc_r = float("nan")
    qc = {
        "n_tr_used": int(x.shape[0]),
        "n_regions": int(n),
        "tr": float(tr),
        "mean_fc": float(np.mean(fc_up)) if fc_up.size else float("nan"),
        "frac_zero_variance": frac_flat,
        "n_interpolated": int(n_interp),
        "sc_fc_r": sc_fc_r,
        "sc_fc_r_transform": "log1p",
    }
    return EmpiricalFC(bold=y, fc=fc, fcd=fcd, qc=qc)


def _read_fc(path, sc_labels, subject: str, opts: Mapping[str, Any], fc_transform, column: str):
    """A precomputed FC file in the connectome's region order, and the reader's notes."""
    from bnmfit.io import align, read_fc

    matrix, fl, notes = read_fc(
        path, fmt=opts.get("fmt"), key=opts.get("key"), transform=fc_transform
    )
    idx = align(
        sc_labels,
        fl if fl is not None else matrix.shape[0],
        n_sc=len(sc_labels),
        sources=("the connectome (sheet column sc_weights)", f"{path} (sheet column {column})"),
    )
    matrix = matrix[np.ix_(idx, idx)]
    if not np.all(np.isfinite(matrix)):
        raise DataError(f"sub-{subject}: the empirical FC {path} has non-finite entries")
    return matrix, notes


def _split_at(n_volumes: int, discard: int, split: float, need: int, where: str) -> int:
    """The first held-out volume when the last ``split`` of the volumes after ``discard``
    become validation data; both parts keep at least ``need`` volumes."""
    used = n_volumes - discard
    n_val = int(round(split * used))
    if n_val < need or used - n_val < need:
        raise DataError(
            f"{where}: validation.split = {split:g} leaves {used - n_val} training and {n_val} "
            f"validation volumes of {used}, and each part needs at least {need} (FC, and the FCD "
            "window); lower validation.split (0: no split), shorten observation.fcd_window, or "
            "give a second run in the sheet's validation_bold column"
        )
    return n_volumes - n_val


def empirical_record(
    subject: str,
    connectome: ConnectomeFile,
    *,
    bold: str | None = None,
    fc: str | None = None,
    validation_bold: str | None = None,
    validation_fc: str | None = None,
    split: float = 0.0,
    labels: Sequence[str] | None = None,
    read_options: Mapping[str, Any] | None = None,
    tr: float | None = None,
    discard: int = 0,
    detrend: bool = True,
    bandpass: tuple[float, float] | None = None,
    max_nan_run: int = 0,
    fcd_window: int = 0,
    fcd_step: int = 1,
    provenance: Mapping[str, Any] | None = None,
) -> EmpiricalFile:
    """A subject's empirical observables from its BOLD file (``bold``) or a precomputed FC
    file (``fc``: no FCD then), in the region order of its ``connectome``, and its validation
    observables, which the fit never uses: those of a second run (``validation_bold`` or
    ``validation_fc``, read and processed like the first), or else, for a BOLD run and
    ``split`` > 0, those of the last ``split`` of its volumes after ``discard`` (the first
    part is the training data; both parts are preprocessed alike and separately).

    ``labels`` name the columns of a BOLD file without labels; ``read_options`` go to
    :func:`bnmfit.io.read_bold` (``fmt``, ``key``, ``dseg``, ``dseg_tsv``, ``orientation``) or
    :func:`bnmfit.io.read_fc` (``fmt``, ``key``, ``fc_transform`` as its ``transform``; the
    others are ignored; what read_fc changed goes to ``qc["notes"]``); ``tr`` (s) is used
    when neither sidecar nor header gives one. The rest is :func:`empirical_fc`'s.
    ``qc["validation"]`` says where the validation data came from, its length, and the
    Pearson r between the training and validation FCs (how far any model could agree).
    """
    from bnmfit.io import align, read_bold
    from bnmfit.results import EmpiricalFile, ValidationData

    if (bold is None) == (fc is None):
        raise ConfigError("give exactly one of a BOLD file and an FC file")
    if validation_bold is not None and validation_fc is not None:
        raise ConfigError(
            f"sub-{subject}: give one of the sheet's validation_bold and validation_fc columns"
        )
    if not 0.0 <= float(split) < 1.0:
        raise ConfigError(f"validation.split must be in [0, 1), got {split!r}")
    opts = dict(read_options or {})
    fc_transform = opts.pop("fc_transform", None)
    sc_labels = list(connectome.labels)
    n = len(sc_labels)
    fcd_args = {"fcd_window": fcd_window or None, "fcd_step": fcd_step}
    prep = {"detrend": detrend, "bandpass": bandpass, "max_nan_run": max_nan_run}

    def bold_of(path, column):
        b = read_bold(path, tr=tr, labels=labels, **opts)
        idx = align(
            sc_labels,
            b.labels if b.labels is not None else b.n_regions,
            n_sc=n,
            sources=("the connectome (sheet column sc_weights)", f"{path} (sheet column {column})"),
        )
        return b, b.data[:, idx]

    def observed(data, tr_s, source, skip):
        return empirical_fc(
            data,
            tr_s,
            discard=skip,
            sc_weights=connectome.weights_raw,
            labels=sc_labels,
            source=source,
            **prep,
            **fcd_args,
        )

    validation = None
    if bold is not None:
        b, data = bold_of(bold, "bold")
        cut = data.shape[0]
        need = MIN_TRS if not fcd_window else max(MIN_TRS, fcd_window + fcd_step)
        # too short even without a split: empirical_fc says so below
        if (
            validation_bold is None
            and validation_fc is None
            and split > 0
            and cut - discard >= need
        ):
            cut = _split_at(data.shape[0], discard, float(split), need, f"sub-{subject}: {bold}")
            v = observed(data[cut:], b.tr, f"{bold} (volumes {cut + 1}–{data.shape[0]})", 0)
            validation = ValidationData(
                v.fc,
                v.fcd,
                v.bold.shape[0],
                f"the last {split:.0%} of the run: volumes {cut + 1}–{data.shape[0]} of {bold}",
            )
        emp = observed(data[:cut], b.tr, str(bold), discard)
        data_ = {"bold": emp.bold, "fc": emp.fc, "fcd": emp.fcd, "n_tr": emp.bold.shape[0]}
        tr_s, tr_source, qc = float(b.tr), b.tr_source, dict(emp.qc)
    else:
        matrix, notes = _read_fc(fc, sc_labels, subject, opts, fc_transform, "fc")
        tr_s, tr_source = (float(tr), "argument") if tr else (None, "")
        data_ = {"bold": None, "fc": matrix, "fcd": None, "n_tr": None}
        qc = {
            "n_tr_used": None,
            "n_regions": n,
            "tr": tr_s,
            "mean_fc": float(matrix[np.triu_indices(n, 1)].mean()),
            "notes": notes,
        }
    if validation_bold is not None:
        vb, vdata = bold_of(validation_bold, "validation_bold")
        v = observed(vdata, vb.tr, str(validation_bold), discard)
        validation = ValidationData(
            v.fc, v.fcd, v.bold.shape[0], f"a second run: {validation_bold}"
        )
    elif validation_fc is not None:
        matrix, _ = _read_fc(validation_fc, sc_labels, subject, opts, fc_transform, "validation_fc")
        validation = ValidationData(matrix, None, None, f"a second run's FC: {validation_fc}")
    qc.update({"subject": subject, "tr_source": tr_source})
    if validation is not None:
        up = np.triu_indices(n, 1)
        qc["validation"] = {
            "source": validation.source,
            "n_tr": validation.n_tr,
            "fc_r_training": float(np.corrcoef(data_["fc"][up], validation.fc[up])[0, 1]),
        }
    return EmpiricalFile(
        subject=subject,
        labels=sc_labels,
        tr=tr_s,
        qc=qc,
        discard=discard,
        fcd_window=fcd_window,
        fcd_step=fcd_step,
        provenance=dict(provenance or {}),
        validation=validation,
        **data_,
    )
