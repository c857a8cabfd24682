"""Observables of BOLD: preprocessing, functional connectivity (FC) and its dynamics (FCD).

The same functions process empirical BOLD (numpy in, at ingestion) and simulated BOLD (JAX
arrays, inside the differentiable loss), so both sides of a fit see identical processing.
Time series are (T, N): time × regions. TRs are in seconds here (the simulator uses ms).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal
from jax import Array

from bnmfit.errors import ConfigError
from bnmfit.simulate import FULL

__all__ = [
    "bandpass",
    "detrend",
    "fc",
    "fcd",
    "n_windows",
    "preprocess",
    "unresolved",
    "upper",
    "zscore",
]

#: values that vary by no more than this many units of rounding (relative to their largest
#: magnitude) are numerically constant: a correlation with them is undefined
RESOLUTION_ULPS = 64


def upper(m: Array, k: int = 1) -> Array:
    """The upper triangle of the last two axes (above diagonal ``k``), flattened."""
    i, j = np.triu_indices(m.shape[-1], k)
    return m[..., i, j]


def unresolved(x: Array, axis: int = 0) -> Array:
    """True where the values of ``x`` along ``axis`` are numerically constant: their standard
    deviation is within :data:`RESOLUTION_ULPS` rounding units of their largest magnitude.

    A fully synchronised or saturated network gives such FC (every entry 1 up to rounding);
    correlating it gives a number made of rounding noise, so :func:`fc` and
    :func:`bnmfit.losses.pearson` return NaN instead, and the point counts as diverged.
    """
    x = jnp.asarray(x)
    tol = RESOLUTION_ULPS * jnp.finfo(x.dtype).eps
    return jnp.std(x, axis=axis) <= tol * jnp.max(jnp.abs(x), axis=axis)


def zscore(x: Array, axis: int = 0) -> Array:
    """Zero mean, unit (population) standard deviation along ``axis``."""
    x = x - x.mean(axis=axis, keepdims=True)
    return x / jnp.sqrt((x * x).mean(axis=axis, keepdims=True))


def detrend(x: Array) -> Array:
    """Remove the least-squares line from every column of x (T, N)."""
    t = jnp.linspace(-1.0, 1.0, x.shape[0], dtype=x.dtype)[:, None]
    xm = x - x.mean(axis=0)
    slope = (t * xm).sum(axis=0) / (t * t).sum()
    return xm - t * slope


@functools.lru_cache(maxsize=64)
def _bandpass_gain(n_fft: int, tr: float, low: float, high: float, order: int) -> np.ndarray:
    nyquist = 0.5 / tr
    if not 0 < low < high < nyquist:
        raise ConfigError(
            f"band-pass edges must satisfy 0 < low < high < Nyquist ({nyquist:.4g} Hz for TR "
            f"{tr} s), got low={low}, high={high}"
        )
    sos = scipy.signal.butter(order, [low, high], btype="bandpass", fs=1.0 / tr, output="sos")
    freqs = np.fft.rfftfreq(n_fft, d=tr)
    _, h = scipy.signal.sosfreqz(sos, worN=freqs, fs=1.0 / tr)
    return np.abs(h) ** 2


def bandpass(x: Array, tr: float, low: float, high: float, order: int = 2) -> Array:
    """Zero-phase Butterworth band-pass of every column of x (T, N).

    The forward-backward filter (``filtfilt``) has the gain |H(f)|² of the Butterworth filter
    and no phase shift; it is applied here in the frequency domain after mirror-padding the
    series by half its length on each side, which keeps it differentiable and identical for
    numpy and JAX inputs. It matches ``scipy.signal.filtfilt`` up to edge handling (within a
    few per cent over the filter's impulse-response length from either end).
    """
    t = x.shape[0]
    pad = t // 2
    xp = jnp.concatenate([x[pad:0:-1], x, x[-2 : -pad - 2 : -1]], axis=0)
    n_fft = int(2 ** np.ceil(np.log2(xp.shape[0])))
    gain = jnp.asarray(
        _bandpass_gain(n_fft, float(tr), float(low), float(high), int(order)), x.dtype
    )
    y = jnp.fft.irfft(jnp.fft.rfft(xp, n=n_fft, axis=0) * gain[:, None], n=n_fft, axis=0)
    return y[pad : pad + t].astype(x.dtype)


def preprocess(
    bold: Array,
    tr: float,
    *,
    discard: int = 0,
    detrend: bool = True,
    bandpass: tuple[float, float] | None = None,
    zscore: bool = True,
) -> Array:
    """Discard the first ``discard`` TRs, then detrend, band-pass (Hz) and z-score (T', N)."""
    x = jnp.asarray(bold)[discard:]
    if detrend:
        x = globals()["detrend"](x)
    if bandpass is not None:
        x = globals()["bandpass"](x, tr, *bandpass)
    if zscore:
        x = globals()["zscore"](x)
    return x


def fc(x: Array) -> Array:
    """Pearson correlation matrix (N, N) of the columns of x (T, N); NaN in the rows and
    columns of numerically constant columns (:func:`unresolved`)."""
    z = x - x.mean(axis=0)
    cov = jnp.matmul(z.T, z, precision=FULL)
    d = jnp.sqrt(jnp.diagonal(cov))
    flat = unresolved(x, axis=0)
    return jnp.where(flat[:, None] | flat[None, :], jnp.nan, cov / (d[:, None] * d[None, :]))


def n_windows(n_tr: int, window: int, step: int) -> int:
    """How many FCD windows of ``window`` TRs, ``step`` apart, fit in ``n_tr`` TRs."""
    return 0 if n_tr < window else (n_tr - window) // step + 1


def fcd(x: Array, window: int, step: int) -> Array:
    """Functional connectivity dynamics (W, W): correlation between the upper triangles of
    the FCs of sliding windows of ``window`` TRs moved by ``step`` TRs."""
    w = n_windows(x.shape[0], window, step)
    if w < 2:
        raise ConfigError(
            f"FCD needs at least two windows: {x.shape[0]} TRs give {w} window(s) of {window} "
            f"TRs with step {step}; shorten the window or give more TRs"
        )
    starts = jnp.arange(w) * step
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(x, s, window, axis=0))(starts)
    vecs = upper(jax.vmap(fc)(windows))
    return fc(vecs.T)
