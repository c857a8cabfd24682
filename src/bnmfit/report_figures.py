"""The figures of the subject and cohort reports.

Every function takes plain arrays (no file paths) and returns a :class:`matplotlib.figure.Figure`
drawn on an Agg canvas; :func:`to_png` renders one to PNG bytes and clears it. pyplot is never
imported, so no global figure registry or backend state is touched and nothing has to be
closed by hand. A function whose data are missing returns ``None`` (the caller says what is
absent) or, for the fixed set of figures of ``snakemake --report``, :func:`absent_figure`.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib import patheffects as pe
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "absent_figure",
    "bold_figure",
    "brain_figure",
    "cohort_metrics_figure",
    "cohort_params_figure",
    "connectome_figure",
    "correlation_figure",
    "edge_stats",
    "evolution_figure",
    "fc_figure",
    "fc_scatter_figure",
    "fcd_figure",
    "ks_statistic",
    "landscape_figure",
    "loss_figure",
    "new_figure",
    "parameter_of",
    "pareto_figure",
    "region_groups",
    "regional_figure",
    "se_figure",
    "strongest_edges",
    "to_png",
]

DPI = 100
#: colours of the refinement starts; the same start has the same colour in every figure.
START_COLOURS = [colormaps["tab10"](i) for i in range(10)]
_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9}
_STROKE = [pe.withStroke(linewidth=3.2, foreground="white")]
#: at most this many parameters are drawn as pairwise panels.
MAX_PAIRWISE = 6


def new_figure(width: float, height: float) -> Figure:
    """A Figure with its own Agg canvas and constrained layout (no pyplot involved)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(w_pad=0.06, h_pad=0.06)
    return fig


def to_png(fig: Figure, dpi: int | None = None) -> bytes:
    """Render ``fig`` to PNG bytes (white background), then clear it to free its memory."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi or DPI, facecolor="white")
    finally:
        fig.clear()
    return buf.getvalue()


def absent_figure(title: str, message: str) -> Figure:
    """A small placeholder figure saying that ``title`` could not be drawn and why."""
    fig = new_figure(6, 1.6)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.65, title, ha="center", va="center", fontsize=12, weight="bold")
    ax.text(0.5, 0.3, message, ha="center", va="center", fontsize=9, color="0.3", wrap=True)
    return fig


# --------------------------------------------------------------------------- helpers


def _cmap(name: str, bad: str = "0.88"):
    return colormaps[name].with_extremes(bad=bad)


def _offdiag(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=float, copy=True)
    if a.ndim == 2 and a.shape[0] == a.shape[1]:
        np.fill_diagonal(a, np.nan)
    return a


def _upper(a: np.ndarray, k: int = 1) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[np.triu_indices(a.shape[0], k=k)]


def _short(label: str, n: int = 16) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


#: size of region and group names on the axes: 8 pt or more where the widest figure is
#: shrunk to fit the page (by up to 1/0.89).
TICK_PT = 9.0
_HEMI = {
    "left": re.compile(r"(^|[-_ .])(l|lh|left)([-_ .]|$)", re.I),
    "right": re.compile(r"(^|[-_ .])(r|rh|right)([-_ .]|$)", re.I),
}
_SCHAEFER = re.compile(r"Networks_(LH|RH)_([A-Za-z]+)")


def _hemisphere(label: str) -> str | None:
    hits = [h for h, rx in _HEMI.items() if rx.search(str(label))]
    return hits[0] if len(hits) == 1 else None


def region_groups(labels: Sequence[str], networks: Sequence[str] | None = None) -> list[str] | None:
    """The group of each region, for grouped axis ticks: its network (``networks``, from the
    labels table, or read from Schaefer-style labels: ``7Networks_LH_Vis_1`` → ``LH Vis``),
    else its hemisphere read from the label (``lh-``, ``_L``, ``Left-``, ...: ``left`` /
    ``right``, ``other`` for the few that name none), else None."""
    labels = [str(x) for x in labels]
    n = len(labels)
    if networks is not None and len(networks) == n and any(str(x).strip() for x in networks):
        return [str(x).strip() or "other" for x in networks]
    schaefer = [_SCHAEFER.search(x) for x in labels]
    if n and sum(m is not None for m in schaefer) >= 0.75 * n:  # e.g. and subcortex
        return [f"{m.group(1)} {m.group(2)}" if m else "other" for m in schaefer]
    hemi = [_hemisphere(x) for x in labels]
    if {"left", "right"} <= set(hemi) and sum(h is not None for h in hemi) >= 0.75 * n:
        return [h or "other" for h in hemi]
    return None


def _runs(groups: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, stop, group) of each run of consecutive regions in one group."""
    out: list[tuple[int, int, str]] = []
    for i, g in enumerate(groups):
        if out and out[-1][2] == g:
            out[-1] = (out[-1][0], i + 1, g)
        else:
            out.append((i, i + 1, g))
    return out


def _ordinal(n: int) -> str:
    """2 → "2nd", 3 → "3rd", 11 → "11th"."""
    end = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{end}"


def _region_ticks(
    ax,
    labels: Sequence[str],
    x: bool = True,
    y: bool = True,
    *,
    groups: Sequence[str] | None = None,
    room: float = 3.8,
) -> str:
    """Region ticks on an axis ``room`` inches long, at :data:`TICK_PT`: every name where they
    fit; else one tick per run of a group (hemisphere or network) with lines between the
    runs; else every k-th name. Returns what to add to the axis label (how they are shown)."""
    n = len(labels)
    if n == 0:
        return ""
    fit = max(1, int(room * 72 / (TICK_PT * 1.3)))  # names side by side at TICK_PT
    runs = _runs(groups) if groups is not None and len(groups) == n else None
    if n <= fit or runs is None or len(runs) > fit or len(runs) < 2:
        step = int(np.ceil(n / fit))
        idx = np.arange(0, n, step)
        labels = [str(x) for x in labels]
        common = os.path.commonprefix(labels) if n > 1 else ""
        cut = max(common.rfind(c) for c in "-_ .") + 1 if common else 0  # e.g. "ctx-"
        names = [_short(labels[i][cut:] or labels[i]) for i in idx]
        if x:
            ax.set_xticks(idx, names, rotation=90, fontsize=TICK_PT)
        if y:
            ax.set_yticks(idx, names, fontsize=TICK_PT)
        return "" if step == 1 else f" (every {_ordinal(step)} named)"
    per_region = room * 72 / n  # points
    centres = [(a + b - 1) / 2 for a, b, _ in runs]
    names = [g if (b - a) * per_region >= TICK_PT * 1.2 else "" for a, b, g in runs]
    wide = any(
        len(s) * TICK_PT * 0.62 > (b - a) * per_region
        for (a, b, _), s in zip(runs, names, strict=True)
    )
    for a, _, _ in runs[1:]:
        if x:
            ax.axvline(a - 0.5, color="0.15", lw=0.7, alpha=0.8)
        if y:
            ax.axhline(a - 0.5, color="0.15", lw=0.7, alpha=0.8)
    edges = [a - 0.5 for a, _, _ in runs] + [n - 0.5]
    if x:
        ax.set_xticks(centres, names, rotation=90 if wide else 0, fontsize=TICK_PT)
        ax.set_xticks(edges, minor=True)
        ax.tick_params(axis="x", which="major", length=0)
        ax.tick_params(axis="x", which="minor", length=6)
    if y:
        ax.set_yticks(centres, names, fontsize=TICK_PT)
        ax.set_yticks(edges, minor=True)
        ax.tick_params(axis="y", which="major", length=0)
        ax.tick_params(axis="y", which="minor", length=6)
    return f" ({n}, grouped)"


def _finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=float).ravel()
    return a[np.isfinite(a)]


def edge_stats(emp_fc: np.ndarray, sim_fc: np.ndarray) -> tuple[float, float, int]:
    """(Pearson r, RMSE, number of edges) between the upper triangles of two FC matrices."""
    e, s = _upper(emp_fc), _upper(sim_fc)
    ok = np.isfinite(e) & np.isfinite(s)
    e, s = e[ok], s[ok]
    if e.size < 2 or np.std(e) == 0 or np.std(s) == 0:
        r = float("nan")
    else:
        r = float(np.corrcoef(e, s)[0, 1])
    rmse = float(np.sqrt(np.mean((s - e) ** 2))) if e.size else float("nan")
    return r, rmse, int(e.size)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic (max distance between the two ECDFs)."""
    a, b = np.sort(_finite(a)), np.sort(_finite(b))
    if a.size == 0 or b.size == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def _pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def _note(ax, text: str) -> None:
    ax.set_axis_off()
    ax.text(
        0.5, 0.5, text, ha="center", va="center", color="0.35", wrap=True, transform=ax.transAxes
    )


# --------------------------------------------------------------------------- connectome


def connectome_figure(
    weights: np.ndarray,
    lengths: np.ndarray | None,
    labels: Sequence[str],
    normalisation: str | None = None,
    groups: Sequence[str] | None = None,
) -> Figure:
    """SC weights on a log10 scale (absent edges grey) and tract lengths in mm; region ticks
    grouped by ``groups`` (:func:`region_groups`) where the names do not fit."""
    w = _offdiag(weights)
    n = w.shape[0]
    pos = np.isfinite(w) & (w > 0)
    logw = np.full_like(w, np.nan)
    logw[pos] = np.log10(w[pos])
    density = pos.sum() / max(n * (n - 1), 1)
    sym = bool(np.allclose(np.nan_to_num(w), np.nan_to_num(w).T))
    n_edges = f"{pos.sum() // 2} edges (symmetric)" if sym else f"{pos.sum()} directed edges"
    fig = new_figure(11, 5.2)
    axs = fig.subplots(1, 2)
    im = axs[0].imshow(logw, cmap=_cmap("viridis", "white"), interpolation="nearest")
    norm_txt = f", normalisation: {normalisation}" if normalisation else ""
    axs[0].set_title(f"SC weights (log10)\n{n_edges}, density {density:.0%}")
    cb = fig.colorbar(im, ax=axs[0], shrink=0.85)
    cb.set_label(f"log10 weight (a.u.{norm_txt})")
    how = _region_ticks(axs[0], labels, groups=groups)
    axs[0].set_xlabel("source region" + how)
    axs[0].set_ylabel("target region" + how)
    if lengths is None:
        _note(axs[1], "no tract lengths in the connectome file")
    else:
        ln = _offdiag(lengths)
        ln[~(np.isfinite(ln) & (ln > 0))] = np.nan
        im = axs[1].imshow(ln, cmap=_cmap("cividis", "white"), interpolation="nearest")
        fin = _finite(ln)
        rng = (
            f"\nmedian {np.median(fin):.1f} mm, range {fin.min():.0f}–{fin.max():.0f} mm"
            if fin.size
            else ""
        )
        axs[1].set_title(f"Tract lengths{rng}")
        cb = fig.colorbar(im, ax=axs[1], shrink=0.85)
        cb.set_label("tract length (mm)")
        how = _region_ticks(axs[1], labels, groups=groups)
        axs[1].set_xlabel("source region" + how)
        axs[1].set_ylabel("target region" + how)
    fig.text(
        0.5, 0.0, "white: no edge / diagonal", ha="center", va="bottom", fontsize=8, color="0.4"
    )
    return fig


# --------------------------------------------------------------------------- FC


def fc_figure(
    emp_fc: np.ndarray,
    sim_fc: np.ndarray | None,
    labels: Sequence[str],
    groups: Sequence[str] | None = None,
) -> Figure:
    """Empirical FC, simulated FC and their difference on one shared, symmetric colour scale;
    region ticks grouped by ``groups`` (:func:`region_groups`) where the names do not fit."""
    e = _offdiag(emp_fc)
    mats = [("Empirical FC\n", e)]
    if sim_fc is not None:
        s = _offdiag(sim_fc)
        dif = s - e
        _, rmse, _ = edge_stats(emp_fc, sim_fc)
        big = float(np.nanmax(np.abs(dif))) if np.isfinite(dif).any() else float("nan")
        mats += [
            ("Simulated FC\n(best fit, held-out noise seed)", s),
            (f"Difference: simulated − empirical\n(RMSE {rmse:.3f}, max |Δ| {big:.2f})", dif),
        ]
    vmax = max(float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0 for _, m in mats)
    vmax = float(np.ceil(max(vmax, 1e-6) * 10) / 10)
    # ImageGrid: equal-size square panels and one colour bar of exactly their height (the
    # constrained layout engine mis-sizes a colour bar shared by fixed-aspect images).
    from mpl_toolkits.axes_grid1 import ImageGrid

    k = len(mats)
    fig = Figure(figsize=(4.6 * k + 1.4, 5.6), dpi=DPI)
    FigureCanvasAgg(fig)
    grid = ImageGrid(
        fig,
        (0.07, 0.2, 0.84, 0.68),
        nrows_ncols=(1, k),
        axes_pad=0.3,
        share_all=True,
        cbar_mode="single",
        cbar_location="right",
        cbar_pad=0.15,
        cbar_size="4%",
    )
    im = None
    for i, (ax, (title, m)) in enumerate(zip(grid, mats, strict=False)):
        im = ax.imshow(m, cmap=_cmap("RdBu_r"), vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(title)
        how = _region_ticks(ax, labels, groups=groups)
        ax.set_xlabel("region" + how)
        if i == 0:
            ax.set_ylabel("region" + how)
    cb = grid.cbar_axes[0].colorbar(im)
    cb.set_label("Pearson r (difference: Δr), one scale for all panels")
    return fig


def fc_scatter_figure(emp_fc: np.ndarray, sim_fc: np.ndarray) -> Figure:
    """Simulated vs empirical FC, one point per edge (upper triangle), with r and RMSE."""
    e, s = _upper(emp_fc), _upper(sim_fc)
    r, rmse, n = edge_stats(emp_fc, sim_fc)
    fig = new_figure(5.6, 5.0)
    ax = fig.add_subplot()
    if n > 4000:
        hb = ax.hexbin(e, s, gridsize=60, cmap="Blues", mincnt=1, bins="log")
        fig.colorbar(hb, ax=ax, shrink=0.8, label="edges per bin")
    else:
        ax.scatter(e, s, s=14, alpha=0.7, color="C0", edgecolors="none")
    both = np.concatenate([_finite(e), _finite(s)])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (-1.0, 1.0)
    pad = 0.05 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="0.4", lw=1, ls="--", label="identity")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("empirical FC (Pearson r)")
    ax.set_ylabel("simulated FC (Pearson r)")
    ax.set_title(f"FC edges: r = {r:.3f}, RMSE = {rmse:.3f}  ({n} edges)")
    ax.legend(loc="upper left", frameon=False)
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- landscape


def _edges(u: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges around sorted unique values (geometric midpoints on a log axis)."""
    v = np.log10(u) if log else u.astype(float)
    if v.size == 1:
        e = np.array([v[0] - 0.5, v[0] + 0.5]) if not log else np.array([v[0] - 0.1, v[0] + 0.1])
    else:
        mid = (v[1:] + v[:-1]) / 2
        e = np.concatenate([[v[0] - (mid[0] - v[0])], mid, [v[-1] + (v[-1] - mid[-1])]])
    return 10.0**e if log else e


def _project(xi: np.ndarray, xj: np.ndarray, z: np.ndarray, best_is_max: bool = False):
    """Min (or max) of ``z`` over all other dimensions on the (xi, xj) grid and which cells
    hold any point, or None when the points are not on a grid (then the caller draws a
    scatter)."""
    ui, inv_i = np.unique(xi, return_inverse=True)
    uj, inv_j = np.unique(xj, return_inverse=True)
    if len(ui) * len(uj) > 2 * len(z) or max(len(ui), len(uj)) > 400:
        return None
    fill = -np.inf if best_is_max else np.inf
    grid = np.full((len(uj), len(ui)), fill)
    (np.fmax if best_is_max else np.fmin).at(grid, (inv_j, inv_i), z)
    grid[np.isinf(grid)] = np.nan  # every point of the cell diverged, or none sampled
    sampled = np.zeros(grid.shape, bool)
    sampled[inv_j, inv_i] = True  # e.g. a box extended on two faces misses its corner
    return ui, uj, grid, sampled


def _profile(x: np.ndarray, z: np.ndarray, log: bool = False):
    """Best (min) ``z`` at each value of ``x`` on a grid; for scattered samples (Sobol,
    random) the lower envelope in bins. Returns (x, min z, on_grid)."""
    u, inv = np.unique(x, return_inverse=True)
    if len(u) <= max(len(z) // 2, 1):
        prof = np.full(len(u), np.inf)
        np.fmin.at(prof, inv, z)
        prof[np.isinf(prof)] = np.nan
        return u, prof, True
    nb = int(np.clip(len(z) // 8, 5, 30))
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    edges = np.geomspace(lo, hi, nb + 1) if log and lo > 0 else np.linspace(lo, hi, nb + 1)
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, nb - 1)
    prof = np.full(nb, np.inf)
    np.fmin.at(prof, b, z)
    prof[np.isinf(prof)] = np.nan
    centres = np.sqrt(edges[1:] * edges[:-1]) if log and lo > 0 else (edges[1:] + edges[:-1]) / 2
    return centres, prof, False


def _loss_norm(z: np.ndarray):
    f = _finite(z)
    if f.size == 0:
        return Normalize(0, 1)
    lo, hi = float(f.min()), float(f.max())
    if lo > 0 and hi / lo > 30:
        return LogNorm(lo, hi)
    return Normalize(lo, hi if hi > lo else lo + 1e-9)


def _axis_label(name: str, meta: Mapping[str, Any] | None) -> str:
    unit = (meta or {}).get("unit") or (meta or {}).get("units")
    return f"{name} ({unit})" if unit else name


def _is_log(meta: Mapping[str, Any] | None) -> bool:
    return str((meta or {}).get("scale", "linear")).lower() in ("log", "log10", "geom")


def _pair_panel(ax, x, y, z, norm, cmap, logx, logy, best_is_max=False):
    proj = _project(x, y, z, best_is_max)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if proj is not None:
        ux, uy, grid, sampled = proj
        ex, ey = _edges(ux, logx), _edges(uy, logy)
        diverged = np.where(sampled & np.isnan(grid), 1.0, np.nan)
        if np.isfinite(diverged).any():  # grey: diverged; cells never sampled stay blank
            grey = ListedColormap([cmap.get_bad()])
            ax.pcolormesh(ex, ey, np.ma.masked_invalid(diverged), cmap=grey, shading="flat")
        return ax.pcolormesh(
            ex,
            ey,
            np.ma.masked_invalid(grid),
            cmap=cmap.with_extremes(bad="none"),
            norm=norm,
            shading="flat",
        )
    order = np.argsort(np.where(np.isfinite(z), z, np.inf))[::-1]
    if best_is_max:
        order = order[::-1]
    bad = ~np.isfinite(z)
    if bad.any():
        ax.scatter(x[bad], y[bad], marker="x", s=10, color="0.6", lw=0.8)
    ok = order[np.isfinite(z[order])]
    return ax.scatter(x[ok], y[ok], c=z[ok], cmap=cmap, norm=norm, s=18, edgecolors="none")


def _draw_trajectories(ax, trajectories, xname, yname, show_label: bool) -> None:
    for tr in trajectories or ():
        vals = tr["values"]
        if xname not in vals or (yname is not None and yname not in vals):
            continue
        xs = np.asarray(vals[xname], float)
        ys = np.asarray(vals[yname], float) if yname is not None else np.asarray(tr["loss"], float)
        if xs.ndim != 2 or ys.shape != xs.shape:
            continue
        ls = "-" if tr.get("stage_index", 0) == 0 else "--"
        for k in range(xs.shape[1]):
            col = START_COLOURS[k % len(START_COLOURS)]
            lw = 2.4 if k == tr.get("best_start") else 1.4
            lab = f"start {k}" if show_label and tr.get("stage_index", 0) == 0 else None
            ax.plot(
                xs[:, k], ys[:, k], ls, color=col, lw=lw, path_effects=_STROKE, label=lab, zorder=4
            )
            first = np.flatnonzero(np.isfinite(xs[:, k]) & np.isfinite(ys[:, k]))
            if first.size:
                ax.plot(
                    xs[first[0], k],
                    ys[first[0], k],
                    "o",
                    ms=6,
                    mfc="white",
                    mec=col,
                    mew=1.8,
                    zorder=5,
                )
                ax.plot(xs[first[-1], k], ys[first[-1], k], "s", ms=4, color=col, zorder=5)


def _draw_best(ax, x, y, label: bool) -> None:
    if x is None or y is None or not (np.isfinite(x) and np.isfinite(y)):
        return
    ax.plot(
        [x],
        [y],
        marker="*",
        ms=17,
        color="red",
        mec="black",
        mew=1.0,
        ls="none",
        zorder=6,
        label="best fit" if label else None,
    )


#: how the points added by extending the explored box are drawn (hollow, over the landscape;
#: a white rim keeps them and the box visible on dark cells)
_RIM = [pe.withStroke(linewidth=2.4, foreground="white")]
_EXTENSION = {
    "marker": "D",
    "ms": 4.5,
    "mfc": "none",
    "mec": "0.1",
    "mew": 0.8,
    "ls": "none",
    "path_effects": _RIM,
}
#: how the original explored box is drawn
_BOX = {"color": "0.1", "ls": (0, (4, 2)), "lw": 1.3, "path_effects": _RIM}


def _draw_extension(ax, x, y, ext: np.ndarray, box_x, box_y, label: bool) -> None:
    """The points of box extension rounds (``ext``: a mask; hollow diamonds) and the original
    box: a dashed rectangle (2-D, ``box_y`` given) or dashed lines at its ends (1-D)."""
    from matplotlib.patches import Rectangle

    if not ext.any():
        return
    ax.plot(x[ext], y[ext], **_EXTENSION, zorder=3, label="box extension" if label else None)
    if box_x is None:
        return
    if box_y is None:
        for i, v in enumerate(box_x):
            ax.axvline(v, **_BOX, label="original box" if label and i == 0 else None)
        return
    (x0, x1), (y0, y1) = box_x, box_y
    ax.add_patch(
        Rectangle(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            fill=False,
            zorder=3.5,
            **{"ec" if k == "color" else k: v for k, v in _BOX.items()},
            label="original box" if label else None,
        )
    )


def landscape_figure(
    names: Sequence[str],
    points: np.ndarray,
    mean_loss: np.ndarray,
    axes_meta: Sequence[Mapping[str, Any]] | None = None,
    *,
    std_loss: np.ndarray | None = None,
    fc_r: np.ndarray | None = None,
    top: np.ndarray | None = None,
    trajectories: Sequence[Mapping[str, Any]] | None = None,
    best: Mapping[str, float] | None = None,
    extension_round: np.ndarray | None = None,
) -> Figure:
    """The exploration landscape with the refinement trajectories and the best point.

    1 parameter: loss profile (± std over noise seeds); 2 parameters: heatmaps of the loss and
    of FC r; more: a pairwise matrix (diagonal: 1-D profiles, lower triangle: 2-D panels, each
    the best value over the parameters not shown). ``trajectories``: one entry per refinement
    stage, ``{"stage", "stage_index", "best_start", "values": {name: (steps, starts)},
    "loss": (steps, starts)}``. Grey cells / crosses: every point there diverged.
    ``extension_round``: per point, 0 for the explored space and r for the points added by
    extending the box (round r); those are drawn hollow, and the original box (the axes'
    ``lo``/``hi`` in ``axes_meta``) dashed.
    """
    names = list(names)
    pts = np.asarray(points, float).reshape(len(mean_loss), -1)
    z = np.asarray(mean_loss, float).ravel()
    meta = {str(m.get("name")): m for m in (axes_meta or []) if isinstance(m, Mapping)}
    best = dict(best or {})
    d = len(names)
    cmap = _cmap("viridis_r")
    norm = _loss_norm(z)
    n_div = int((~np.isfinite(z)).sum())
    div_txt = f", {n_div} diverged: grey" if n_div else ""
    top = np.asarray(top, int).ravel() if top is not None else np.zeros(0, int)
    ext = np.zeros(len(z), bool)
    if extension_round is not None and np.size(extension_round) == len(z):
        ext = np.asarray(extension_round).ravel() > 0
    if ext.any():
        div_txt += f", {int(ext.sum())} added by extending the box"

    def box(name):
        m = meta.get(name) or {}
        return (float(m["lo"]), float(m["hi"])) if "lo" in m and "hi" in m else None

    if d == 1:
        fig = new_figure(9.0, 4.8)
        ax = fig.add_subplot()
        x = pts[:, 0]
        logx = _is_log(meta.get(names[0]))
        xs, ps, on_grid = _profile(x, z, logx)
        if not on_grid:  # one parameter: every sample lies on the curve
            order = np.argsort(x)
            xs, ps = x[order], z[order]
        ax.plot(xs, ps, ".-", color="0.15", lw=1.6, ms=4, label="mean loss over noise seeds")
        if std_loss is not None:
            sd = np.asarray(std_loss, float).ravel()
            order = np.argsort(x)
            ax.fill_between(
                x[order],
                (z - sd)[order],
                (z + sd)[order],
                color="0.6",
                alpha=0.3,
                label="± std over seeds",
                lw=0,
            )
        bad = ~np.isfinite(z)
        if bad.any():
            ax.plot(
                x[bad],
                np.full(bad.sum(), np.nanmax(ps) if np.isfinite(ps).any() else 0),
                "x",
                color="0.5",
                label="diverged",
            )
        if top.size:
            ax.plot(
                x[top],
                z[top],
                "o",
                mfc="none",
                mec="black",
                ms=11,
                ls="none",
                label="top-k grid points",
            )
        _draw_extension(ax, x, z, ext, box(names[0]), None, label=True)
        _draw_trajectories(ax, trajectories, names[0], None, show_label=True)
        if names[0] in best:
            ax.axvline(best[names[0]], color="red", lw=1, ls=":")
            i = int(np.nanargmin(np.abs(x - best[names[0]]))) if np.isfinite(z).any() else 0
            _draw_best(ax, best[names[0]], z[i], label=True)
        if logx:
            ax.set_xscale("log")
        if isinstance(norm, LogNorm):
            ax.set_yscale("log")
        ax.set_xlabel(_axis_label(names[0], meta.get(names[0])))
        ax.set_ylabel("loss")
        sub = (
            "\ncoloured lines: refinement starts (loss on the training seed)"
            if trajectories
            else ""
        )
        ax.set_title(f"Exploration landscape over {names[0]} ({len(z)} points{div_txt}){sub}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        return fig

    if d == 2:
        panels = [("mean loss over noise seeds (lower is better)", z, norm, cmap, False)]
        if fc_r is not None:
            fr = np.asarray(fc_r, float).ravel()
            f = _finite(fr)
            fnorm = Normalize(float(f.min()), float(f.max())) if f.size else Normalize(0, 1)
            panels.append(
                ("FC r, empirical vs simulated (higher is better)", fr, fnorm, _cmap("magma"), True)
            )
        fig = new_figure(6.6 * len(panels), 5.4)
        axs = np.atleast_1d(fig.subplots(1, len(panels)))
        x, y = pts[:, 0], pts[:, 1]
        lx, ly = _is_log(meta.get(names[0])), _is_log(meta.get(names[1]))
        for i, (ax, (title, v, nrm, cm, is_max)) in enumerate(zip(axs, panels, strict=True)):
            m = _pair_panel(ax, x, y, v, nrm, cm, lx, ly, best_is_max=is_max)
            cb = fig.colorbar(m, ax=ax, shrink=0.85)
            cb.set_label("loss" if not is_max else "FC r")
            if top.size:
                ax.plot(
                    x[top],
                    y[top],
                    "o",
                    mfc="none",
                    mec="black",
                    ms=11,
                    mew=1.0,
                    ls="none",
                    label="top-k grid points" if i == 0 else None,
                    zorder=3,
                )
            _draw_extension(ax, x, y, ext, box(names[0]), box(names[1]), label=i == 0)
            _draw_trajectories(ax, trajectories, names[0], names[1], show_label=i == 0)
            _draw_best(ax, best.get(names[0]), best.get(names[1]), label=i == 0)
            ax.set_xlabel(_axis_label(names[0], meta.get(names[0])))
            ax.set_ylabel(_axis_label(names[1], meta.get(names[1])))
            ax.set_title(title)
        handles, labels = axs[0].get_legend_handles_labels()
        if handles:
            fig.legend(
                handles,
                labels,
                loc="outside lower center",
                ncol=min(len(labels), 7),
                fontsize=8,
                frameon=False,
            )
        fig.suptitle(
            f"Exploration landscape ({len(z)} points{div_txt})\nrefinement "
            "trajectories: o start, ■ end, thick: best start, dashed: later stages"
        )
        return fig

    shown = names[:MAX_PAIRWISE]
    k = len(shown)
    fig = new_figure(2.7 * k + 1.2, 2.5 * k + 0.8)
    axs = fig.subplots(k, k, squeeze=False)
    mappable = None
    for r in range(k):
        for c in range(k):
            ax = axs[r, c]
            ln, cn = shown[r], shown[c]
            lr, lc = _is_log(meta.get(ln)), _is_log(meta.get(cn))
            if c > r:
                ax.set_axis_off()
                continue
            if r == c:
                xs, ps, on_grid = _profile(pts[:, c], z, lc)
                if not on_grid:  # scattered samples: the points and their binned minimum
                    ax.plot(pts[:, c], z, ".", color="0.6", ms=2.5)
                ax.plot(
                    xs,
                    ps,
                    "-",
                    color="0.15",
                    lw=1.4,
                    drawstyle="default" if on_grid else "steps-mid",
                )
                if lc:
                    ax.set_xscale("log")
                if isinstance(norm, LogNorm):
                    ax.set_yscale("log")
                if ext.any() and box(cn) is not None:
                    for v in box(cn):
                        ax.axvline(v, **_BOX)
                if cn in best:
                    ax.axvline(best[cn], color="red", lw=1.2, ls=":")
                ax.set_ylabel("min loss", fontsize=8)
                ax.grid(alpha=0.3)
            else:
                mappable = _pair_panel(ax, pts[:, c], pts[:, r], z, norm, cmap, lc, lr)
                if top.size:
                    ax.plot(
                        pts[top, c],
                        pts[top, r],
                        "o",
                        mfc="none",
                        mec="black",
                        ms=10,
                        mew=1.0,
                        ls="none",
                        zorder=3,
                        label="top-k grid points" if (r, c) == (1, 0) else None,
                    )
                _draw_extension(
                    ax, pts[:, c], pts[:, r], ext, box(cn), box(ln), label=(r, c) == (1, 0)
                )
                _draw_trajectories(ax, trajectories, cn, ln, show_label=(r, c) == (1, 0))
                _draw_best(ax, best.get(cn), best.get(ln), label=(r, c) == (1, 0))
                if c == 0:
                    ax.set_ylabel(_axis_label(ln, meta.get(ln)))
                else:
                    ax.tick_params(labelleft=False)
            if r == k - 1:
                ax.set_xlabel(_axis_label(cn, meta.get(cn)))
            elif r != c:
                ax.tick_params(labelbottom=False)
    if mappable is not None:
        cb = fig.colorbar(mappable, ax=axs[:, -1].tolist(), shrink=0.6, location="right")
        cb.set_label("min loss over the other parameters (lower is better)")
        handles, labels = axs[1, 0].get_legend_handles_labels()
        if handles:
            axs[0, k - 1].legend(
                handles,
                labels,
                loc="upper right",
                fontsize=9,
                frameon=False,
                title="refinement (dashed: later stages)",
                title_fontsize=9,
            )
    extra = f"; showing {k} of {d} parameters" if d > k else ""
    fig.suptitle(
        f"Exploration landscape, pairwise ({len(z)} points{div_txt}{extra})\n"
        "each panel: best loss over the parameters not shown\n"
        "lines: refinement starts (o start, ■ end, thick: best start), ★ best fit"
    )
    return fig


# --------------------------------------------------------------------------- losses


def loss_figure(stages: Sequence[Mapping[str, Any]]) -> Figure:
    """Training loss per start, held-out loss, best-so-far and gradient norm, per stage.

    ``stages``: ``{"name", "loss": (steps, starts), "heldout_loss", "grad_norm", "rejected",
    "best_start"}`` (missing arrays are skipped).
    """
    from matplotlib.lines import Line2D

    n = max(len(stages), 1)
    fig = new_figure(max(5.4 * n, 9.5), 7.0)
    axs = fig.subplots(2, n, squeeze=False, sharex="col")
    n_starts, any_held, any_rej = 0, False, False
    for c, st in enumerate(stages):
        ax, axg = axs[0, c], axs[1, c]
        loss = np.asarray(st.get("loss"), float)
        if loss.ndim == 1:
            loss = loss[:, None]
        n_starts = max(n_starts, loss.shape[1])
        steps = np.arange(loss.shape[0])
        best = st.get("best_start")
        for k in range(loss.shape[1]):
            ax.plot(
                steps,
                loss[:, k],
                color=START_COLOURS[k % 10],
                lw=2.2 if k == best else 1.0,
                alpha=1.0 if k == best else 0.7,
            )
        with np.errstate(all="ignore"):
            running = np.fmin.accumulate(np.where(np.isfinite(loss), loss, np.inf).min(axis=1))
        running[np.isinf(running)] = np.nan
        ax.plot(steps, running, "k--", lw=1.5)
        held = st.get("heldout_loss")
        n_held = 0
        if held is not None:
            h = np.asarray(held, float)
            if h.ndim == 1:
                h = h[:, None]
            for k in range(min(h.shape[1], loss.shape[1])):
                ok = np.isfinite(h[: len(steps), k])
                if ok.any():
                    n_held += int(ok.sum())
                    ax.plot(
                        steps[: len(h)][ok],
                        h[: len(steps)][ok, k],
                        "D",
                        ms=5,
                        mfc=START_COLOURS[k % 10],
                        mec="black",
                        mew=0.7,
                        ls="none",
                    )
        any_held |= n_held > 0
        rej = st.get("rejected")
        n_rej = 0
        if rej is not None:
            rj = np.nan_to_num(np.asarray(rej, float)).astype(bool)
            if rj.ndim == 1:
                rj = rj[:, None]
            rows, cols = np.nonzero(rj[: len(steps), : loss.shape[1]])
            n_rej = rows.size
            if rows.size:
                fin = _finite(loss)
                y0 = float(fin.max()) if fin.size else 1.0
                yv = np.where(np.isfinite(loss[rows, cols]), loss[rows, cols], y0)
                ax.plot(rows, yv, "x", color="red", ms=7, mew=1.8, ls="none")
        any_rej |= n_rej > 0
        fin = _finite(loss)
        if fin.size and fin.min() > 0 and fin.max() / fin.min() > 20:
            ax.set_yscale("log")
        best_txt = f", best start {best}" if best is not None else ""
        ax.set_title(
            f"{st.get('name', f'stage {c}')}: {loss.shape[0]} steps × "
            f"{loss.shape[1]} starts{best_txt}\n{n_rej} rejected steps, "
            f"{n_held} held-out evaluations",
            fontsize=9,
        )
        if c == 0:
            ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        gn = st.get("grad_norm")
        if gn is not None:
            g = np.asarray(gn, float)
            if g.ndim == 1:
                g = g[:, None]
            for k in range(g.shape[1]):
                axg.plot(
                    np.arange(len(g)),
                    g[:, k],
                    color=START_COLOURS[k % 10],
                    lw=2.2 if k == best else 1.0,
                    alpha=1.0 if k == best else 0.7,
                )
            fg = _finite(g)
            if fg.size and (fg > 0).all():
                axg.set_yscale("log")
            if c == 0:
                axg.set_ylabel("gradient norm")
        else:
            _note(axg, "no gradient norm recorded")
        axg.set_xlabel("optimiser step")
        axg.grid(alpha=0.3)
    if not stages:
        _note(axs[0, 0], "no refinement stages")
        axs[1, 0].set_axis_off()
    handles = [
        Line2D([], [], color=START_COLOURS[k % 10], lw=1.5, label=f"start {k}")
        for k in range(min(n_starts, 10))
    ]
    handles.append(Line2D([], [], color="0.3", lw=2.6, label="thick: the stage's best start"))
    handles.append(
        Line2D([], [], color="black", ls="--", lw=1.5, label="best so far (training, all starts)")
    )
    if any_held:
        handles.append(
            Line2D(
                [], [], marker="D", ls="none", mfc="0.7", mec="black", label="held-out noise seed"
            )
        )
    if any_rej:
        handles.append(
            Line2D(
                [],
                [],
                marker="x",
                ls="none",
                color="red",
                mew=1.8,
                label="rejected step (non-finite loss or gradient)",
            )
        )
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(handles), 3 if n == 1 else 5),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        "Refinement per stage: loss on the training noise seed (lines) and on a "
        "held-out seed (◆)\nbelow: gradient norm"
    )
    return fig


# --------------------------------------------------------------------------- evolution

#: at most this many explored axes (those whose population spread most) are paired in
#: :func:`evolution_figure`
EVOLUTION_AXES = 3


def _unit(points: np.ndarray, names: Sequence[str], meta: Mapping[str, Any]) -> np.ndarray:
    """``points`` as fractions of each axis' box (log axes in log); the points' own range
    where an axis has no ``lo``/``hi`` in ``meta``."""
    u = np.asarray(points, float).copy()
    for d, name in enumerate(names):
        m = meta.get(name) or {}
        x = u[:, d]
        lo, hi = (m["lo"], m["hi"]) if "lo" in m and "hi" in m else (np.nanmin(x), np.nanmax(x))
        if _is_log(m) and lo > 0:
            x, lo, hi = np.log(x), np.log(lo), np.log(hi)
        u[:, d] = (x - lo) / (hi - lo) if hi > lo else 0.0
    return u


def _gaps(a) -> np.ndarray:
    """``a`` as floats with its non-finite values NaN (gaps in a line)."""
    a = np.asarray(a, float)
    return np.where(np.isfinite(a), a, np.nan)


def _refined_star(ax, x, y) -> None:
    ax.plot(
        [x], [y], "*", ms=16, color="red", mec="black", mew=1.0, zorder=6, label="refined start"
    )


def evolution_figure(
    names: Sequence[str],
    points: np.ndarray,
    mean_loss: np.ndarray,
    generation: np.ndarray,
    best_loss: np.ndarray,
    generation_mean_loss: np.ndarray,
    sigma: np.ndarray,
    axes_meta: Sequence[Mapping[str, Any]] | None = None,
    refined: int | None = None,
) -> Figure:
    """An evolutionary exploration (CMA-ES, NSGA-II) generation by generation.

    Left: the best and the mean loss of each generation (``best_loss``,
    ``generation_mean_loss``; non-finite values are gaps) and, on a second axis, CMA-ES's
    step size ``sigma`` where finite. Right: the evaluated ``points`` coloured by their
    ``generation`` (diverged points, non-finite ``mean_loss``: grey crosses) in the plane of
    the explored axes; with more than two axes, every pair of the :data:`EVOLUTION_AXES`
    whose points spread most in their box (``axes_meta``: ``name``, ``lo``, ``hi``,
    ``scale``); one axis: the axis against the loss. ``refined``: index of the point
    refinement started from (red star).
    """
    names = list(names)
    pts = np.asarray(points, float).reshape(len(generation), -1)
    z = np.asarray(mean_loss, float).ravel()
    gen = np.asarray(generation, int).ravel()
    meta = {str(m.get("name")): m for m in (axes_meta or []) if isinstance(m, Mapping)}
    spread = np.nanstd(_unit(pts, names, meta), axis=0) if len(pts) else np.zeros(len(names))
    shown = sorted(np.argsort(-spread, kind="stable")[:EVOLUTION_AXES])
    pairs = [(i, j) for a, i in enumerate(shown) for j in shown[a + 1 :]] or [(shown[0], None)]
    fig = new_figure(4.6 + 3.7 * len(pairs), 3.9)
    axs = fig.subplots(1, 1 + len(pairs), squeeze=False)[0]

    ax = axs[0]
    steps = np.arange(len(best_loss))
    ax.plot(steps, _gaps(best_loss), "o-", ms=3, color="k", label="best")
    ax.plot(steps, _gaps(generation_mean_loss), "-", color="0.55", label="mean")
    ax.set_xlabel("generation")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    sig = np.asarray(sigma, float)
    if np.isfinite(sig).any():
        axs_ = ax.twinx()
        axs_.plot(steps, _gaps(sig), "--", color="tab:blue", label="σ (CMA-ES)")
        axs_.set_ylabel("step size σ (unconstrained)", color="tab:blue")
        axs_.tick_params(axis="y", colors="tab:blue")
        h2, l2 = axs_.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title("Loss per generation")

    norm = Normalize(0, max(int(gen.max(initial=0)), 1))
    ok = np.isfinite(z)
    for ax, (i, j) in zip(axs[1:], pairs, strict=True):
        x = pts[:, i]
        y = pts[:, j] if j is not None else z
        if _is_log(meta.get(names[i])):
            ax.set_xscale("log")
        if j is not None and _is_log(meta.get(names[j])):
            ax.set_yscale("log")
        if j is not None and not ok.all():  # one axis: a diverged point has no loss to show
            ax.scatter(x[~ok], y[~ok], marker="x", s=12, color="0.6", lw=0.8, label="diverged")
        sc = ax.scatter(x[ok], y[ok], c=gen[ok], cmap="viridis", norm=norm, s=16, edgecolors="none")
        if refined is not None and 0 <= refined < len(pts):
            _refined_star(ax, x[refined], y[refined])
        ax.set_xlabel(_axis_label(names[i], meta.get(names[i])))
        ax.set_ylabel(_axis_label(names[j], meta.get(names[j])) if j is not None else "loss")
    bar = fig.colorbar(sc, ax=axs[1:].tolist(), label="generation", shrink=0.9)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    if axs[1].get_legend_handles_labels()[0]:
        axs[1].legend(fontsize=8, loc="best")
    axs[1].set_title(f"Population ({len(pts)} points)")
    return fig


def pareto_figure(
    objectives: np.ndarray,
    objective_names: Sequence[str],
    front: np.ndarray,
    refined: int | None = None,
) -> Figure:
    """NSGA-II's first two objectives: every point with finite objectives in grey, the
    Pareto ``front`` (indices into ``objectives``) highlighted and joined in order of the
    first objective, the point refinement started from (``refined``) as a red star."""
    obj = np.asarray(objectives, float)
    front = np.asarray(front, int).ravel()
    fig = new_figure(6.2, 4.6)
    ax = fig.add_subplot()
    ok = np.isfinite(obj[:, :2]).all(axis=1)
    ax.scatter(obj[ok, 0], obj[ok, 1], s=12, color="0.7", edgecolors="none", label="evaluated")
    f = front[np.argsort(obj[front, 0], kind="stable")]
    ax.plot(
        obj[f, 0],
        obj[f, 1],
        "o-",
        ms=5,
        color="tab:orange",
        mec="black",
        mew=0.5,
        label=f"Pareto front ({len(f)})",
        zorder=4,
    )
    if refined is not None and 0 <= refined < len(obj):
        _refined_star(ax, obj[refined, 0], obj[refined, 1])
    ax.set_xlabel(objective_names[0])
    ax.set_ylabel(objective_names[1])
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(f"Objectives: {objective_names[0]} vs {objective_names[1]}")
    return fig


# --------------------------------------------------------------------------- regional


def _hemispheres(labels: Sequence[str]) -> np.ndarray | None:
    """ "L"/"R" per region from its label (lh-, _L, Left_, ...), or None when not every
    label says which hemisphere it is in."""
    hemi = [_hemisphere(lab) for lab in labels]
    if None in hemi:
        return None
    return np.asarray(["L" if h == "left" else "R" for h in hemi])


def regional_figure(
    regional: Mapping[str, np.ndarray],
    labels: Sequence[str],
    strength: np.ndarray | None,
    groups: Sequence[str] | None = None,
) -> Figure | None:
    """Per regional parameter: values by region (brain order; ticks grouped by ``groups``
    where the names do not fit) and against node strength."""
    if not regional:
        return None
    names = list(regional)
    n_reg = len(labels)
    fig = new_figure(13, 3.4 * len(names) + 0.6)
    axs = fig.subplots(len(names), 2, squeeze=False, width_ratios=[2.3, 1])
    for r, name in enumerate(names):
        v = np.asarray(regional[name], float).ravel()
        ax = axs[r, 0]
        idx = np.arange(v.size)
        mean = float(np.nanmean(v))
        # stems from the mean (not bars from 0): the regional deviations stay visible
        # when they are small next to the mean
        hemi = _hemispheres(labels) if v.size == n_reg else None
        cols = np.array(["C0"] * v.size, dtype=object)
        if hemi is not None:
            cols[hemi == "R"] = "C3"
            for h, c in (("L", "C0"), ("R", "C3")):
                ax.plot([], [], "o", color=c, label=f"{h} hemisphere")
            ax.legend(fontsize=7, frameon=False, loc="upper left", ncol=2)
        ax.vlines(idx, mean, v, colors=list(cols), lw=1.2)
        ax.scatter(idx, v, c=list(cols), s=16, zorder=3)
        ax.axhline(mean, color="black", lw=1, ls="--")
        ax.set_xlim(-0.6, v.size - 0.4)
        ax.set_ylabel(name)
        ax.set_title(
            f"{name} per region (connectome order); dashed: mean "
            f"{np.nanmean(v):.4g} ± {np.nanstd(v):.2g} (std)"
        )
        if v.size == n_reg:
            ax.set_xlabel("region" + _region_ticks(ax, labels, y=False, groups=groups, room=8.4))
        else:
            ax.set_xlabel("region index")
        ax.grid(axis="y", alpha=0.3)
        ax2 = axs[r, 1]
        if strength is not None and np.size(strength) == v.size:
            s = np.asarray(strength, float)
            ax2.scatter(s, v, s=22, c=list(cols), edgecolors="black", linewidths=0.4)
            ok = np.isfinite(s) & np.isfinite(v)
            if ok.sum() >= 3 and np.std(s[ok]) > 0:
                a, b = np.polyfit(s[ok], v[ok], 1)
                xx = np.linspace(s[ok].min(), s[ok].max(), 10)
                ax2.plot(xx, a * xx + b, color="0.3", lw=1, ls="--")
            ax2.set_title(f"{name} vs node strength (r = {_pearson(s, v):.2f})")
            ax2.set_xlabel("node strength (sum of SC weights, a.u.)")
            ax2.set_ylabel(name)
            ax2.grid(alpha=0.3)
        else:
            _note(ax2, "node strength unavailable")
    return fig


# --------------------------------------------------------------------------- uncertainty

#: correlation heat maps annotate their cells up to this many numbers
MAX_ANNOTATED = 30


def parameter_of(label: str) -> str:
    """The parameter a fitted number belongs to: ``w[lh-front]`` → ``w``, ``w:intercept``
    → ``w`` (the labels of :meth:`bnmfit.params.ParameterSet.free_labels`)."""
    return re.split(r"[\[:]", str(label), maxsplit=1)[0]


def correlation_figure(
    corr: np.ndarray,
    labels: Sequence[str],
    identified: Sequence[bool] | None = None,
    groups: Sequence[str] | None = None,
) -> Figure:
    """The correlation matrix of a stage's fitted numbers (−1 blue … 1 red; grey: a number
    without a finite standard error). Up to :data:`MAX_ANNOTATED` numbers every cell shows
    its value and every number its name (red: not identified); more are drawn as the heat
    map alone, named by ``groups`` (one per number, e.g. its parameter and its region's
    network; default: its parameter) where their names do not fit."""
    c = np.asarray(corr, float)
    p = c.shape[0]
    labels = [str(x) for x in labels]
    annotate = p <= MAX_ANNOTATED
    side = float(np.clip(0.36 * p + 1.8, 3.4, 9.0)) if annotate else 7.5
    fig = new_figure(side + 1.3, side)
    ax = fig.add_subplot()
    m = ax.imshow(c, cmap=_cmap("RdBu_r"), vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(m, ax=ax, shrink=0.8).set_label("correlation")
    blocks = list(groups) if groups is not None else [parameter_of(x) for x in labels]
    how = _region_ticks(ax, labels, groups=blocks if len(set(blocks)) > 1 else None, room=side)
    if annotate:
        cell_pt = side * 0.75 * 72 / max(p, 1)
        fs = float(np.clip(cell_pt * 0.3, 5.0, 9.0))
        for i in range(p):
            for j in range(p):
                if np.isfinite(c[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{c[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=fs,
                        color="white" if abs(c[i, j]) > 0.6 else "black",
                    )
        ident = np.asarray(identified if identified is not None else [True] * p, bool)
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            if len(ticks) == p:
                for t, ok in zip(ticks, ident, strict=True):
                    t.set_color("black" if ok else "#c0392b")
    ax.set_title(
        f"Correlations of the {p} fitted numbers{how}"
        + ("\nred names: not identified by these data" if annotate else "")
    )
    return fig


def se_figure(name: str, values: np.ndarray, se: np.ndarray, identified: Sequence[bool]) -> Figure:
    """One parameter's fitted numbers (e.g. one per region) ± standard error, sorted by
    value: identified ones filled, the others hollow red; a number with an infinite standard
    error (no information) has no bar."""
    v, e = np.asarray(values, float).ravel(), np.asarray(se, float).ravel()
    ok = np.asarray(identified, bool).ravel()
    order = np.argsort(v, kind="stable")
    v, e, ok = v[order], e[order], ok[order]
    x = np.arange(v.size)
    fig = new_figure(11, 3.6)
    ax = fig.add_subplot()
    bar = np.where(np.isfinite(e), e, np.nan)
    for mask, style, lab in (
        (ok, {"color": "C0", "mfc": "C0"}, "identified"),
        (~ok, {"color": "#c0392b", "mfc": "white"}, "not identified"),
    ):
        if mask.any():
            ax.errorbar(
                x[mask],
                v[mask],
                yerr=bar[mask],
                fmt="o",
                ms=4,
                elinewidth=0.9,
                capsize=0,
                label=f"{lab} ({int(mask.sum())})",
                **style,
            )
    span = float(np.nanmax(v) - np.nanmin(v)) if np.isfinite(v).any() else 1.0
    span = span or max(float(np.nanmax(np.abs(v))) if np.isfinite(v).any() else 1.0, 1e-9)
    lo, hi = np.nanmin(v - np.nan_to_num(bar)), np.nanmax(v + np.nan_to_num(bar))
    ax.set_ylim(max(lo, np.nanmin(v) - 1.5 * span), min(hi, np.nanmax(v) + 1.5 * span))
    n_inf = int(np.isinf(e).sum())
    inf_txt = f"; {n_inf} with an infinite SE (no bar)" if n_inf else ""
    ax.set_title(f"{name}: {v.size} fitted numbers ± standard error, sorted by value{inf_txt}")
    ax.set_xlabel("rank by fitted value")
    ax.set_ylabel(name)
    ax.set_xlim(-1, v.size)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return fig


# --------------------------------------------------------------------------- brain space

#: FC edges on the glass brain: YlOrRd without its near-white end (visible on white)
_EDGE_CMAP = ListedColormap(colormaps["YlOrRd"](np.linspace(0.3, 1.0, 256)), "YlOrRd_visible")
#: the share of FC edges drawn on the glass brain (the strongest), and their bounds in number.
TOP_EDGES = 0.01
MIN_EDGES, MAX_EDGES = 10, 200


def strongest_edges(fc: np.ndarray, share: float = TOP_EDGES) -> np.ndarray:
    """``fc`` with only its strongest (largest) ``share`` of edges, at least
    :data:`MIN_EDGES` and at most :data:`MAX_EDGES`; every other entry 0."""
    a = np.asarray(fc, dtype=float)
    iu = np.triu_indices(a.shape[0], 1)
    v = np.where(np.isfinite(a[iu]), a[iu], -np.inf)
    k = int(np.clip(round(share * v.size), min(MIN_EDGES, v.size), MAX_EDGES))
    keep = np.argsort(v, kind="stable")[::-1][:k]
    keep = keep[np.isfinite(v[keep])]
    out = np.zeros_like(a)
    out[iu[0][keep], iu[1][keep]] = a[iu][keep]
    return out + out.T


def brain_figure(
    centres: np.ndarray,
    regional: Mapping[str, np.ndarray],
    emp_fc: np.ndarray | None,
    sim_fc: np.ndarray | None,
) -> Figure | None:
    """Glass-brain views (nilearn; left, top and right): each regional parameter as coloured
    markers at the region centres (mm), then the strongest FC edges (:func:`strongest_edges`)
    of the empirical and the simulated FC on one colour scale. None without anything to
    draw. Regions without a centre (NaN) are left out."""
    from nilearn import plotting

    xyz = np.asarray(centres, dtype=float)
    n = len(xyz)
    ok = np.all(np.isfinite(xyz), axis=1)
    rows = [
        (f"{k}: fitted value per region", np.asarray(v, float).ravel(), None)
        for k, v in regional.items()
        if np.size(v) == n
    ]
    fcs = [
        (f"{t} FC: the strongest {{k}} edges (top {TOP_EDGES:.0%})", strongest_edges(m))
        for t, m in (("Empirical", emp_fc), ("Simulated (best fit)", sim_fc))
        if m is not None and np.shape(m) == (n, n)
    ]
    edge_vals = [m[np.triu_indices(n, 1)] for _, m in fcs]
    edge_vals = np.concatenate([e[e != 0] for e in edge_vals]) if edge_vals else np.zeros(0)
    rows += [(title, None, m) for title, m in fcs]
    if not rows or ok.sum() < 2:
        return None
    h = 3.0
    fig = Figure(figsize=(11.0, h * len(rows)), dpi=DPI)
    FigureCanvasAgg(fig)
    for r, (title, values, adj) in enumerate(rows):
        bottom = 1 - (r + 1) / len(rows)
        ax = fig.add_axes((0.0, bottom, 1.0, 0.84 / len(rows)))
        if values is not None:
            use = ok & np.isfinite(values)
            lo, hi = (float(values[use].min()), float(values[use].max())) if use.any() else (0, 1)
            plotting.plot_markers(
                values[use],
                xyz[use],
                node_size=28,
                node_cmap="viridis",
                node_vmin=lo,
                node_vmax=hi if hi > lo else lo + 1e-9,
                display_mode="lzr",
                figure=fig,
                axes=ax,
                colorbar=True,
                alpha=0.9,
            )
        else:
            a = adj[np.ix_(ok, ok)]
            title = title.format(k=int(np.count_nonzero(np.triu(a, 1))))
            plotting.plot_connectome(
                a,
                xyz[ok],
                node_color="0.45",
                node_size=6,
                edge_cmap=_EDGE_CMAP,
                edge_vmin=float(edge_vals.min()),
                edge_vmax=float(edge_vals.max()),
                edge_kwargs={"linewidth": 1.4},
                display_mode="lzr",
                figure=fig,
                axes=ax,
                colorbar=True,
            )
        fig.text(0.01, bottom + 0.965 / len(rows), title, fontsize=11, weight="bold", va="top")
    return fig


# --------------------------------------------------------------------------- FCD


def fcd_figure(
    emp_fcd: np.ndarray | None, sim_fcd: np.ndarray | None, seed: int | None = None
) -> Figure | None:
    """FCD matrices (shared colour scale) and the distributions of their upper triangles,
    titled with the exact KS statistic of the two FCDs shown (the simulated one on the
    held-out noise ``seed``)."""
    mats = [
        (t, np.asarray(m, float))
        for t, m in (("Empirical FCD", emp_fcd), ("Simulated FCD (best fit)", sim_fcd))
        if m is not None
    ]
    if not mats:
        return None
    vals = [_upper(m) for _, m in mats]
    allv = np.concatenate([_finite(v) for v in vals]) if vals else np.zeros(0)
    lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
    fig = new_figure(5.0 * (len(mats) + 1) + 0.5, 4.6)
    axs = fig.subplots(1, len(mats) + 1, width_ratios=[1] * len(mats) + [1.25])
    im = None
    for ax, (title, m) in zip(axs[:-1], mats, strict=True):
        im = ax.imshow(m, cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(f"{title} ({m.shape[0]} windows)")
        ax.set_xlabel("window")
        ax.set_ylabel("window")
    cb = fig.colorbar(im, ax=list(axs[:-1]), shrink=0.85, pad=0.01)
    cb.set_label("correlation between windowed FCs (shared scale)")
    ax = axs[-1]
    bins = np.linspace(lo, hi, 40) if hi > lo else 20
    for (title, _), v, col in zip(mats, vals, ("black", "C1"), strict=False):
        ax.hist(
            _finite(v),
            bins=bins,
            density=True,
            histtype="step",
            lw=2,
            color=col,
            label=title.split(" (")[0],
        )
    if len(mats) == 2:
        on = "" if seed is None else f", simulated on seed {seed}"
        ax.set_title(
            f"FCD value distributions\nKS of the two FCDs shown{on}: "
            f"{ks_statistic(vals[0], vals[1]):.3f}"
        )
    else:
        ax.set_title("FCD value distribution (only one FCD present)")
    ax.set_xlabel("FCD value (upper triangle)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------- BOLD


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, float)
    sd = np.nanstd(x)
    return (x - np.nanmean(x)) / (sd if sd > 0 else 1.0)


def _psd(x: np.ndarray, tr: float) -> tuple[np.ndarray, np.ndarray]:
    """Power spectrum averaged over regions (z-scored, Hann window), frequencies in Hz."""
    x = np.asarray(x, float)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    win = np.hanning(len(x))[:, None]
    p = np.abs(np.fft.rfft(np.nan_to_num(x) * win, axis=0)) ** 2
    f = np.fft.rfftfreq(len(x), d=tr)
    p = p.mean(axis=1)
    k = max(1, len(p) // 40)  # light smoothing
    p = np.convolve(p, np.ones(k) / k, mode="same")
    return f[1:], p[1:] / np.sum(p[1:])


def bold_figure(
    emp_bold: np.ndarray | None,
    sim_bold: np.ndarray | None,
    labels: Sequence[str],
    tr_emp: float | None,
    tr_sim: float | None,
    n_traces: int = 4,
) -> Figure | None:
    """A few regions' BOLD, empirical (left) and simulated (middle) on one time and
    amplitude scale, each z-scored, and the power spectrum averaged over all regions."""
    series = [
        (d, tr, col, lab)
        for d, tr, col, lab in (
            (emp_bold, tr_emp, "black", "empirical (preprocessed)"),
            (sim_bold, tr_sim, "C1", "simulated (best fit, held-out seed)"),
        )
        if d is not None
    ]
    if not series:
        return None
    n = np.asarray(series[0][0]).shape[1]
    rows = np.unique(np.linspace(0, n - 1, max(1, min(n_traces, n))).round().astype(int))
    ncol = len(series)
    fig = new_figure(14, 1.45 * len(rows) + 1.3)
    gs = fig.add_gridspec(len(rows), ncol + 1, width_ratios=[2.2] * ncol + [1.3])
    first = None
    for c, (data, tr, col, lab) in enumerate(series):
        data = np.asarray(data, float)
        t = np.arange(len(data)) * (tr or 1.0)
        col_first = None  # each column its own time axis (runs may differ in length)
        for r, j in enumerate(rows):
            ax = fig.add_subplot(gs[r, c], sharex=col_first, sharey=first)
            first = first or ax
            col_first = col_first or ax
            if j < data.shape[1]:
                ax.plot(t, _z(data[:, j]), color=col, lw=0.9)
            ax.set_xlim(0, max(t[-1], 1e-9) if len(t) else 1.0)
            ax.grid(alpha=0.3)
            if r == 0:
                dur = f"{len(data) * tr:.0f} s" if tr else f"{len(data)} volumes"
                ax.set_title(f"{lab}, {dur}")
            name = str(labels[j]) if j < len(labels) else f"region {j}"
            ax.text(
                0.005,
                0.96,
                name,
                transform=ax.transAxes,
                va="top",
                fontsize=TICK_PT,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
            )
            if c == 0:
                ax.set_ylabel("z", fontsize=TICK_PT)
            else:
                ax.tick_params(labelleft=False)
            if r == len(rows) - 1:
                unit = "s" if tr else "volumes"
                ax.set_xlabel(f"time ({unit})")
            else:
                ax.tick_params(labelbottom=False)
    ax = fig.add_subplot(gs[:, ncol])
    for data, tr, col, lab in series:
        if tr and len(data) > 8:
            f, p = _psd(data, tr)
            ax.semilogy(f, p, color=col, lw=1.4, label=lab.split(" (")[0])
    if ax.lines:
        ax.set_xlabel("frequency (Hz)")
        ax.set_ylabel("relative power (mean over regions)")
        ax.set_title("BOLD power spectrum")
        ax.legend(fontsize=8, frameon=False)
        ax.grid(alpha=0.3)
    else:
        _note(ax, "no TR: no spectrum")
    fig.suptitle(f"BOLD of {len(rows)} regions (each z-scored)")
    return fig


# --------------------------------------------------------------------------- cohort


def _subject_label(s: Any) -> str:
    s = str(s)
    return s if s.startswith("sub-") else f"sub-{s}"


def _strip(ax, values: np.ndarray, labels: Sequence[str] | None, rng) -> None:
    v = np.asarray(values, float)
    ok = np.isfinite(v)
    if ok.sum() >= 3:
        ax.boxplot(
            [v[ok]], positions=[0], widths=0.5, showfliers=False, medianprops={"color": "black"}
        )
    jitter = rng.uniform(-0.12, 0.12, v.size)
    ax.scatter(jitter[ok], v[ok], s=26, color="C0", edgecolors="black", linewidths=0.5, zorder=3)
    ax.set_xticks([])
    ax.set_xlim(-0.6, 1.0)
    ax.grid(axis="y", alpha=0.3)
    if labels is not None and len(labels) <= 12 and ok.any():
        xs, ys = jitter[ok], v[ok]
        ax.autoscale_view()
        for x, y, y_text, lab in zip(
            xs, ys, _spread(ys, ax.get_ylim()), np.asarray(labels)[ok], strict=True
        ):
            ax.annotate(
                str(lab),
                (x, y),
                xytext=(0.42, y_text),
                textcoords="data",
                fontsize=7,
                va="center",
                arrowprops={
                    "arrowstyle": "-",
                    "lw": 0.5,
                    "color": "0.5",
                    "shrinkA": 0,
                    "shrinkB": 3,
                },
            )


def _spread(y: np.ndarray, ylim: tuple[float, float], gap: float = 0.075) -> np.ndarray:
    """Label heights for points at heights y: each as close to its point as possible, in the
    points' order, at least ``gap`` (a fraction of the axis' height) apart, none above the
    top of ylim (with more labels than fit, the lowest go below its bottom)."""
    lo, hi = ylim
    step = gap * (hi - lo)
    order = np.argsort(y, kind="stable")
    out = np.asarray(y, float)[order]  # a copy (fancy indexing)
    for i in range(1, out.size):  # push up past the label below
        out[i] = max(out[i], out[i - 1] + step)
    if out.size and out[-1] > hi - step / 2:  # then down from the top, if it left the axis
        out[-1] = hi - step / 2
        for i in range(out.size - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - step)
    placed = np.empty_like(out)
    placed[order] = out
    return placed


def cohort_params_figure(table, columns: Sequence[str], subjects: Sequence[str]) -> Figure:
    """Distributions across subjects of the fitted global parameters (and regional means)."""
    cols = [c for c in columns if c in table]
    if not cols:
        return absent_figure("Fitted parameters", "no fitted global parameters in the cohort")
    ncol = min(len(cols), 4)
    nrow = int(np.ceil(len(cols) / ncol))
    fig = new_figure(3.3 * ncol + 0.4, 3.3 * nrow + 0.6)
    axs = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    for ax, c in zip(axs, cols, strict=False):
        _strip(ax, np.asarray(table[c], float), [_subject_label(s) for s in subjects], rng)
        ax.set_title(f"{c[:-5]} (mean over regions)" if c.endswith("_mean") else c)
        ax.set_ylabel("fitted value")
    for ax in axs[len(cols) :]:
        ax.set_axis_off()
    fig.suptitle(f"Fitted parameters across {len(subjects)} subjects (box: quartiles)")
    return fig


def _has(table, col: str) -> bool:
    return col in table and np.isfinite(np.asarray(table[col], float)).any()


def cohort_metrics_figure(stage_metrics, final, subjects: Sequence[str]) -> Figure:
    """Fit metrics per stage across subjects, and the final metrics.

    ``stage_metrics``: long table with columns subject, stage, stage_index, fc_r, loss and
    (where recorded) validation_fc_r. ``final``: table with columns subject, fc_r, fc_rmse,
    fcd_ks and (where recorded) validation_fc_r. The validation panels are drawn when any
    subject has validation scores. Top row: per stage; bottom row: the final metrics.
    """
    metrics = [m for m in ("fc_r", "validation_fc_r", "fc_rmse", "fcd_ks") if _has(final, m)]
    per_stage = [
        ("fc_r", "held-out FC r per stage"),
        ("validation_fc_r", "validation FC r per stage"),
        ("loss", "held-out loss per stage"),
    ]
    per_stage = [p for p in per_stage if p[0] != "validation_fc_r" or _has(stage_metrics, p[0])]
    n_st, n_m = len(per_stage), max(len(metrics), 1)
    fig = new_figure(max(4.4 * n_st, 2.8 * n_m), 8.6)
    grid = fig.add_gridspec(2, n_st * n_m)
    axs = [fig.add_subplot(grid[0, i * n_m : (i + 1) * n_m]) for i in range(n_st)]
    axs += [fig.add_subplot(grid[1, j * n_st : (j + 1) * n_st]) for j in range(n_m)]
    stage_order: list[str] = []
    if len(stage_metrics):
        st = stage_metrics.sort_values("stage_index")
        stage_order = list(dict.fromkeys(st["stage"]))
    xpos = {s: i for i, s in enumerate(stage_order)}
    for ax, (col, title) in zip(axs, per_stage, strict=False):
        has = False
        for i, subj in enumerate(subjects):
            sub = stage_metrics[stage_metrics["subject"] == subj] if len(stage_metrics) else []
            if len(sub) == 0 or col not in sub:
                continue
            sub = sub.sort_values("stage_index")
            y = np.asarray(sub[col], float)
            if not np.isfinite(y).any():
                continue
            has = True
            ax.plot(
                [xpos[s] for s in sub["stage"]],
                y,
                "o-",
                color=START_COLOURS[i % 10],
                alpha=0.8,
                lw=1.2,
                ms=5,
                label=_subject_label(subj) if len(subjects) <= 10 else None,
            )
        if not has:
            _note(ax, f"no per-stage {col} recorded")
            continue
        ax.set_xticks(range(len(stage_order)), stage_order, rotation=15, fontsize=8)
        ax.set_xlim(-0.4, len(stage_order) - 0.6)
        ax.set_title(title)
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
        if len(subjects) <= 10 and not fig.legends:  # one legend, beside the panels
            fig.legend(
                *ax.get_legend_handles_labels(),
                loc="outside lower center",
                ncol=min(len(subjects), 5),
                fontsize=8,
                frameon=False,
                title="subject",
                title_fontsize=8,
            )
    rng = np.random.default_rng(1)
    if not metrics:
        _note(axs[n_st], "no final metrics")
    for ax, m in zip(axs[n_st:], metrics, strict=False):
        _strip(ax, np.asarray(final[m], float), [_subject_label(s) for s in subjects], rng)
        ax.set_title(f"final {m}")
    on = " and on validation data" if n_st > 2 or "validation_fc_r" in metrics else ""
    fig.suptitle(f"Fit metrics across {len(subjects)} subjects (held-out noise seeds{on})")
    return fig
