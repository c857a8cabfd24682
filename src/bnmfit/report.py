"""Self-contained HTML reports: one page per subject, one summary page for the cohort.

A modeller judges a fit by looking at it. :func:`subject_report` turns one subject's results
(connectome, empirical FC, exploration landscape, refinement history, fitted parameters) into
one HTML page with every figure embedded as a base64 PNG and the CSS inline: it opens offline,
from a file, with no server and no network. :func:`cohort_report` makes the cohort's summary
page (a sortable table of every subject's fitted parameters and fit metrics, their
distributions, links to the subject pages) and the table itself as a DataFrame
(``cohort_params.tsv``). :func:`write_subject_figures` and :func:`write_cohort_figures` write
the main figures as PNG files with fixed names (:data:`SUBJECT_FIGURES`,
:data:`COHORT_FIGURES`), so that the workflow can declare them as ``report()`` outputs for
``snakemake --report``.

Inputs follow the result-file contract of the workflow (see each argument). Optional pieces
(no FCD, one explored parameter, no regional stage, no held-out evaluation) are shown when
present and named as absent otherwise; a file that was named but does not exist is a
:class:`~bnmfit.errors.DataError`.

The figures themselves are in :mod:`bnmfit.report_figures`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bnmfit import report_figures as rf
from bnmfit import results
from bnmfit.config import config_hash
from bnmfit.errors import ConfigError, DataError
from bnmfit.scoring import METRICS, VALIDATION_METRICS

__all__ = [
    "COHORT_FIGURES",
    "SUBJECT_FIGURES",
    "SUBJECT_SECTIONS",
    "cohort_figure_paths",
    "cohort_report",
    "collect_warnings",
    "subject_figure_paths",
    "subject_page",
    "subject_prefix",
    "subject_report",
    "subject_warnings",
    "warnings_summary",
    "write_cohort_figures",
    "write_subject_figures",
]

PathLike = str | os.PathLike

#: the main per-subject figures written for ``snakemake --report`` (name → what it shows).
#: The set is fixed: a figure whose data are missing is written as a placeholder saying so.
SUBJECT_FIGURES: dict[str, str] = {
    "fc": "Empirical FC, simulated FC of the best fit and their difference, one colour scale.",
    "scatter": "Simulated vs empirical FC per edge, with Pearson r and RMSE.",
    "landscape": "Exploration landscape with every refinement start's trajectory and the best fit.",
    "loss": "Loss per refinement stage and start (training and held-out noise), best so far.",
    "regional": "Fitted regional parameters per region and against node strength.",
    "brain": "Regional parameters and the strongest FC edges on a glass brain (region centres).",
}
#: the cohort figures written for ``snakemake --report``.
COHORT_FIGURES: dict[str, str] = {
    "params": "Fitted global parameters (and regional means) across subjects.",
    "metrics": "Fit metrics per stage and final held-out metrics across subjects.",
}

_STAGE_RE = re.compile(r"^stage-(\d+)-(.+)$")


# =========================================================================== names


def subject_prefix(subject: str) -> str:
    """``"01"`` → ``"sub-01"`` (an id that already starts with ``sub-`` is kept)."""
    subject = str(subject)
    return subject if subject.startswith("sub-") else f"sub-{subject}"


def subject_page(subject: str) -> str:
    """The subject page's path relative to the cohort page: ``sub-X/sub-X_report.html``."""
    p = subject_prefix(subject)
    return f"{p}/{p}_report.html"


def subject_figure_paths(subject: str, outdir: PathLike) -> dict[str, Path]:
    """Where :func:`write_subject_figures` writes each of :data:`SUBJECT_FIGURES`:
    ``<outdir>/sub-X_desc-<name>_figure.png``."""
    p = subject_prefix(subject)
    return {name: Path(outdir) / f"{p}_desc-{name}_figure.png" for name in SUBJECT_FIGURES}


def cohort_figure_paths(outdir: PathLike) -> dict[str, Path]:
    """Where :func:`write_cohort_figures` writes each of :data:`COHORT_FIGURES`:
    ``<outdir>/cohort_desc-<name>_figure.png``."""
    return {name: Path(outdir) / f"cohort_desc-{name}_figure.png" for name in COHORT_FIGURES}


# =========================================================================== reading


def _check_file(path: PathLike | None, what: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"{path}: expected the {what}, got no such file; re-run the step that "
            "writes it (or pass None where it is optional)"
        )
    return p


def _read_h5(path: Path | None) -> dict[str, Any] | None:
    """A result file's datasets and groups as a dict, its root attributes under ``"@attrs"``
    (as its groups' are)."""
    if path is None:
        return None
    data, attrs = results.read_h5(path)
    return {**data, "@attrs": attrs}


def _read_json(path: Path | None) -> dict[str, Any]:
    return {} if path is None else results.read_json(path)


def _arr(x: Any, ndim: int | None = None) -> np.ndarray | None:
    if x is None or isinstance(x, (dict, str)):
        return None
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return None
    if a.size == 0 or (ndim is not None and a.ndim != ndim):
        return None
    return a


def _labels(*sources: Any, n: int | None = None) -> list[str]:
    for s in sources:
        if isinstance(s, list) and s and (n is None or len(s) == n):
            return [str(x) for x in s]
    return [f"region {i}" for i in range(n or 0)]


def _stages(fit: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not fit:
        return []
    out = []
    for key, grp in fit.items():
        if not isinstance(grp, dict) or key == "@attrs":
            continue
        m = _STAGE_RE.match(key)
        if m is None and "loss" not in grp:
            continue
        attrs = grp.get("@attrs", {})
        loss = _arr(grp.get("loss"))
        if loss is None:
            continue
        traj = {
            k: np.asarray(v, float)
            for k, v in (grp.get("traj") or {}).items()
            if k != "@attrs" and _arr(v) is not None
        }
        best = attrs.get("best_start", grp.get("best_start"))
        out.append(
            {
                "key": key,
                "index": int(m.group(1)) if m else len(out),
                "name": m.group(2) if m else key,
                "loss": loss,
                "heldout_loss": _arr(grp.get("heldout_loss")),
                "grad_norm": _arr(grp.get("grad_norm")),
                "rejected": _arr(grp.get("rejected")),
                "best_start": int(best) if best is not None and np.isfinite(best) else None,
                "wall_time": _float(attrs.get("wall_time", grp.get("wall_time"))),
                "heldout_fc_r": _float(attrs.get("heldout_fc_r", grp.get("heldout_fc_r"))),
                "heldout_loss_final": _float(attrs.get("heldout_loss")),
                "traj": traj,
                # how the stage was judged and its standard errors (results.StageFile)
                "scores": dict(attrs.get("scores") or {}),
                "acceptance": dict(attrs.get("acceptance") or {}),
                "kept_start": attrs.get("kept_start"),
                "uncertainty": dict(attrs.get("uncertainty") or {}),
                "screen": dict(attrs.get("screen") or {}),
            }
        )
    return sorted(out, key=lambda s: s["index"])


def _float(x: Any) -> float | None:
    """A number as float, or None when ``x`` is missing or not one number."""
    if x is None or isinstance(x, (dict, bool)):
        return None
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return None
    return float(a.ravel()[0]) if a.size == 1 else None


def _finite(x: Any) -> float | None:
    """A finite number as float, else None."""
    v = _float(x)
    return v if v is not None and math.isfinite(v) else None


def _match(mapping: Mapping[str, Any] | None, stage: Mapping[str, Any]) -> Any:
    """The entry of ``mapping`` (keyed by stage) that belongs to ``stage``: its group name,
    its short name or its index."""
    if not mapping:
        return None
    for k in (stage["key"], stage["name"], str(stage["index"])):
        if k in mapping:
            return mapping[k]
    return None


def _warnings(pre: str, conn: Mapping[str, Any], emp: Mapping[str, Any], pj: Mapping) -> list:
    """A subject's warnings from its result files (as read): the connectome's, what the FC
    reader changed (the empirical QC notes) and the fit's, each naming the subject."""
    out = [str(w) for w in (conn.get("@attrs") or {}).get("warnings") or []]
    qc = (emp.get("@attrs") or {}).get("qc")
    col = "fc" if emp.get("bold") is None else "bold"
    notes = qc.get("notes") if isinstance(qc, Mapping) else None
    out += [f"{pre} (sheet column {col}): {n}" for n in notes or []]
    out += [w if str(w).startswith(pre) else f"{pre}: {w}" for w in pj.get("warnings") or []]
    return out


def _load_subject(subject, connectome_h5, empirical_h5, explore_h5, fit_h5, params_json):
    conn = _read_h5(_check_file(connectome_h5, "connectome HDF5 (sub-X_connectome.h5)"))
    emp = _read_h5(_check_file(empirical_h5, "empirical FC HDF5 (sub-X_desc-empirical_fc.h5)"))
    expl = _read_h5(_check_file(explore_h5, "exploration HDF5 (sub-X_explore.h5)"))
    fit = _read_h5(_check_file(fit_h5, "refinement HDF5 (sub-X_fit.h5)"))
    pj = _read_json(_check_file(params_json, "fitted parameters JSON"))
    conn = conn or {"@attrs": {}}
    emp = emp or {"@attrs": {}}
    fit_attrs = (fit or {}).get("@attrs", {})
    weights = _arr(conn.get("weights"), 2)
    emp_fc = _arr(emp.get("fc"), 2)
    n = next((a.shape[0] for a in (weights, emp_fc) if a is not None), None)
    labels = _labels(conn.get("labels"), emp.get("labels"), n=n)
    networks = conn.get("networks") if isinstance(conn.get("networks"), list) else None
    params = pj.get("params") or {}
    glob = {k: float(v) for k, v in params.items() if np.ndim(v) == 0 and _float(v) is not None}
    regional = {
        k: np.asarray(v, float) for k, v in params.items() if np.ndim(v) >= 1 and np.size(v) > 1
    }
    qc = emp["@attrs"].get("qc")
    validation = qc.get("validation") if isinstance(qc, Mapping) else None
    flags = pj["flags"] if "flags" in pj else fit_attrs.get("flags")
    return {
        "subject": subject,
        "labels": labels,
        "groups": rf.region_groups(labels, networks),
        # None: the files predate flags; []: the fit has none
        "flags": None if flags is None else [f for f in flags if isinstance(f, Mapping)],
        "have_empirical": empirical_h5 is not None,
        "validation": validation if isinstance(validation, Mapping) else None,
        "centres": _arr(conn.get("centres"), 2),
        "warnings": _warnings(subject_prefix(subject), conn, emp, pj),
        # the FC was given as a matrix (sheet column fc): no BOLD, so no FCD
        "fc_only": emp_fc is not None and emp.get("bold") is None,
        "weights": weights,
        "lengths": _arr(conn.get("lengths"), 2),
        "conn_attrs": conn["@attrs"],
        "emp_bold": _arr(emp.get("bold"), 2),
        "emp_fc": emp_fc,
        "emp_fcd": _arr(emp.get("fcd"), 2),
        "emp_attrs": emp["@attrs"],
        "explore": expl,
        "stages": _stages(fit),
        "have_fit": fit is not None,
        "sim_fc": _arr((fit or {}).get("sim_fc"), 2),
        "sim_fcd": _arr((fit or {}).get("sim_fcd"), 2),
        "sim_bold": _arr((fit or {}).get("sim_bold"), 2),
        "fit_attrs": fit_attrs,
        "json": pj,
        "globals": glob,
        "regional": regional,
    }


# =========================================================================== warnings


def subject_warnings(
    subject: str,
    *,
    connectome_h5: PathLike | None = None,
    empirical_h5: PathLike | None = None,
    params_json: PathLike | None = None,
) -> list[str]:
    """The warnings kept in one subject's result files, each naming the subject: the
    connectome's (regions without connections, self-connections set to 0, asymmetric weights
    kept), what the FC reader changed (the empirical QC notes, naming the sheet column) and
    the fit's (e.g. a degenerate held-out simulation). A path that does not exist is a
    DataError; None leaves that file out."""
    pre = subject_prefix(subject)
    conn = _read_h5(_check_file(connectome_h5, f"connectome HDF5 of {pre}")) or {}
    emp = _read_h5(_check_file(empirical_h5, f"empirical FC HDF5 of {pre}")) or {}
    pj = _read_json(_check_file(params_json, f"fitted parameters JSON of {pre}"))
    return _warnings(pre, conn, emp, pj)


def collect_warnings(subjects: Sequence[str], results_dir: PathLike = "results") -> dict:
    """Every subject's warnings (:func:`subject_warnings`) from its result files in the
    workflow's layout under ``results_dir`` (``sub-X/sub-X_connectome.h5``,
    ``sub-X/sub-X_desc-empirical_fc.h5``, ``sub-X/sub-X_desc-fitted_params.json``; files
    not written yet are left out). Returns subject → list of warnings, in the given order."""
    out = {}
    for subject in subjects:
        pre = subject_prefix(subject)
        paths = {
            key: Path(results_dir) / pre / f"{pre}_{name}"
            for key, name in (
                ("connectome_h5", "connectome.h5"),
                ("empirical_h5", "desc-empirical_fc.h5"),
                ("params_json", "desc-fitted_params.json"),
            )
        }
        out[str(subject)] = subject_warnings(
            subject, **{k: p if p.is_file() else None for k, p in paths.items()}
        )
    return out


def warnings_summary(subjects: Sequence[str], results_dir: PathLike = "results") -> str:
    """The text that ends a run: every subject's warnings (:func:`collect_warnings`),
    grouped by subject, or "" when there are none."""
    have = {s: w for s, w in collect_warnings(subjects, results_dir).items() if w}
    if not have:
        return ""
    lines = [
        f"bnmfit: {sum(map(len, have.values()))} warning(s) for {len(have)} of "
        f"{len(subjects)} subjects (also in their reports and the cohort report):"
    ]
    for subject, ws in have.items():
        lines.append(f"  {subject_prefix(subject)}:")
        lines += [f"    - {w}" for w in ws]
    return "\n".join(lines)


# =========================================================================== formatting


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, fmt: str = ".4g") -> str:
    if x is None:
        return "—"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return _esc(x)
    if math.isnan(v):
        return "NaN"
    return format(v, fmt)


def _r(x: Any) -> str:
    """Correlations, RMSE and KS statistics: three decimals."""
    return _num(x, ".3f")


def _duration(s: Any) -> str:
    v = _float(s)
    if v is None or not math.isfinite(v):
        return "—"
    if v < 120:
        return f"{v:.1f} s"
    if v < 7200:
        return f"{v / 60:.1f} min ({v:.0f} s)"
    return f"{v / 3600:.2f} h ({v:.0f} s)"


def benchmark_seconds(paths: Sequence[PathLike] | PathLike | None) -> float | None:
    """The summed wall time (column ``s``) of Snakemake benchmark TSVs, or None when none
    is given or readable. Timings live there and in the logs, never in the result files
    (which stay byte-identical for the same inputs and config)."""
    if paths is None:
        return None
    total, found = 0.0, False
    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        try:
            col = pd.read_csv(p, sep="\t")["s"]
        except (OSError, KeyError, ValueError, pd.errors.EmptyDataError):
            continue
        total, found = total + float(col.sum()), True
    return total if found else None


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "", raw: bool = False
) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are HTML already)."""
    th = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else _esc(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _img(fig, alt: str, dpi: int | None = None) -> str:
    # displayed at 100 CSS px per figure inch whatever the dpi: the page layout does not
    # depend on the resolution (a higher dpi only makes the figures sharper when zoomed)
    width = round(float(fig.get_size_inches()[0]) * 100)
    png = rf.to_png(fig, dpi=dpi)
    b64 = base64.b64encode(png).decode("ascii")
    return (
        f'<img class="fig" alt="{_esc(alt)}" style="width:{width}px" '
        f'src="data:image/png;base64,{b64}">'
    )


def _figure(fig, alt: str, caption: str, dpi: int | None = None) -> str:
    return f"<figure>{_img(fig, alt, dpi)}<figcaption>{caption}</figcaption></figure>"


def _absent(text: str) -> str:
    return f'<p class="absent"><b>Absent:</b> {text}</p>'


def _note(text: str) -> str:
    return f'<p class="absent"><b>Note:</b> {text}</p>'


def _model_name(config: Mapping[str, Any]) -> str | None:
    m = (config or {}).get("model")
    if isinstance(m, Mapping):
        m = m.get("name")
    return str(m) if m else None


def _report_options(config: Mapping[str, Any]) -> dict[str, Any]:
    opts = (config or {}).get("report") or {}
    return opts if isinstance(opts, Mapping) else {}


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  margin:0;color:#1d2430;background:#f4f6f9;line-height:1.4}
main{max-width:1480px;margin:0 auto;padding:16px 24px 48px}
header{background:#1f3b57;color:#fff;padding:18px 24px}
header h1{margin:0 0 4px;font-size:1.6em} header p{margin:0;opacity:.85}
nav{background:#fff;border-bottom:1px solid #d5dbe3;padding:8px 24px;position:sticky;top:0;
  z-index:2;font-size:.92em}
nav a{margin-right:14px;color:#1f5f99;text-decoration:none} nav a:hover{text-decoration:underline}
section{background:#fff;border:1px solid #d5dbe3;border-radius:8px;margin:18px 0;
  padding:12px 20px 16px}
section h2{margin:4px 0 10px;font-size:1.25em;color:#1f3b57}
figure{margin:10px 0;text-align:center} figure img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#4a5564;margin-top:4px;text-align:left}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.row>*{flex:1 1 380px} .row>figure{flex:0 1 auto} .row.tight>figure{flex:0 0 auto;display:table}
.row.tight figcaption{display:table-caption;caption-side:bottom}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 4px}
.card{background:#eef3f9;border:1px solid #c9d6e6;border-radius:8px;padding:8px 14px;
  min-width:120px}
.card .k{font-size:.78em;color:#4a5564;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:1.35em;font-weight:600}
table{border-collapse:collapse;font-size:.88em;margin:6px 0 10px}
th,td{border:1px solid #d5dbe3;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[data-dir=asc]::after{content:" ▲"}
table.sortable th[data-dir=desc]::after{content:" ▼"}
.absent{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px;margin:8px 0;
  font-size:.92em}
.warn{background:#fdecea;border-left:5px solid #c0392b;padding:6px 12px;margin:4px 0}
.warn li{margin:3px 0}
.flags{background:#fff1e0;border-left:5px solid #d35400;padding:6px 12px;margin:4px 0}
.flags li{margin:4px 0} .flags p{margin:4px 0}
.flag{display:inline-block;background:#d35400;color:#fff;border-radius:4px;padding:0 6px;
  margin-right:4px;font-size:.8em;font-weight:600;white-space:nowrap}
.ok{background:#e7f5ec;border-left:5px solid #2e8b57;padding:6px 12px;margin:4px 0;
  color:#1e5631}
.bad{color:#c0392b}
tr.flagged td{background:#fff1e0}
.scroll{overflow-x:auto}
.prov{background:#f7f9fb;border:1px dashed #9aa8b8;border-radius:6px;padding:8px 14px}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em;
  word-break:break-all}
.muted{color:#5d6877;font-size:.9em}
"""

_SORT_JS = """
(function(){
  function key(cell){
    var v = cell.getAttribute('data-v');
    return v === null ? cell.textContent.trim() : v;
  }
  document.querySelectorAll('table.sortable').forEach(function(t){
    var heads = t.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function(th, i){
      th.title = 'click to sort';
      th.addEventListener('click', function(){
        var asc = th.getAttribute('data-dir') !== 'asc';
        Array.prototype.forEach.call(heads, function(h){ h.removeAttribute('data-dir'); });
        th.setAttribute('data-dir', asc ? 'asc' : 'desc');
        var body = t.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(a, b){
          var x = key(a.cells[i]), y = key(b.cells[i]);
          var nx = parseFloat(x), ny = parseFloat(y);
          var c;
          if (!isNaN(nx) && !isNaN(ny)) { c = nx - ny; }
          else if (!isNaN(nx)) { c = -1; } else if (!isNaN(ny)) { c = 1; }
          else { c = x.localeCompare(y); }
          return asc ? c : -c;
        });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
})();
"""


def _page(
    title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str, script: str = ""
) -> str:
    links = "".join(f'<a href="#{_esc(a)}">{_esc(t)}</a>' for a, t in nav)
    js = f"<script>{script}</script>" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_esc(title)}</h1><p>{subtitle}</p></header>"
        f"<nav>{links}</nav><main>{body}</main>{js}</body></html>\n"
    )


def _section(anchor: str, title: str, content: str) -> str:
    return f'<section id="{_esc(anchor)}"><h2>{_esc(title)}</h2>{content}</section>'


def _card(key: str, value: str) -> str:
    return f'<div class="card"><div class="k">{_esc(key)}</div><div class="v">{value}</div></div>'


def _kv_rows(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            rows += _kv_rows(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", v if isinstance(v, str) else json.dumps(v, default=str)))
    return rows


def _input_checksums(*sources: Any) -> list[tuple[str, str]]:
    """(path, sha256) pairs from dicts {path: sha} or lists of {path, sha256} / [path, sha]."""
    seen: dict[str, str] = {}
    for src in sources:
        if isinstance(src, Mapping):
            items = []
            for k, v in src.items():
                if isinstance(v, Mapping):
                    items.append((v.get("path", k), v.get("sha256", v.get("checksum", ""))))
                else:
                    items.append((k, v))
        elif isinstance(src, list):
            items = []
            for it in src:
                if isinstance(it, Mapping):
                    items.append((it.get("path", "?"), it.get("sha256", it.get("checksum", ""))))
                elif isinstance(it, (list, tuple)) and len(it) == 2:
                    items.append((it[0], it[1]))
        else:
            continue
        for p, h in items:
            seen.setdefault(str(p), str(h))
    return list(seen.items())


# =========================================================================== subject


def _landscape_inputs(s: dict[str, Any]) -> dict[str, Any] | None:
    ex = s["explore"]
    if not ex:
        return None
    names = [str(x) for x in (ex.get("names") or [])]
    points = _arr(ex.get("points"))
    mean_loss = _arr(ex.get("mean_loss"))
    if mean_loss is None and _arr(ex.get("loss")) is not None:
        with np.errstate(all="ignore"):
            mean_loss = np.nanmean(_arr(ex.get("loss"), 2), axis=1)
    if not names or points is None or mean_loss is None:
        return None
    attrs = ex.get("@attrs", {})
    axes_meta = attrs.get("axes") if isinstance(attrs.get("axes"), list) else []
    trajectories = []
    for st in s["stages"]:
        vals = {n: st["traj"][n] for n in names if n in st["traj"] and st["traj"][n].ndim == 2}
        if vals:
            trajectories.append(
                {
                    "stage": st["name"],
                    "stage_index": st["index"],
                    "best_start": st["best_start"],
                    "values": vals,
                    "loss": st["loss"],
                }
            )
    best: dict[str, float] = {}
    for n in names:
        if n in s["globals"]:
            best[n] = s["globals"][n]
            continue
        for st in reversed(s["stages"]):
            t = st["traj"].get(n)
            if t is not None and t.ndim == 2:
                col = t[:, st["best_start"] or 0]
                fin = col[np.isfinite(col)]
                if fin.size:
                    best[n] = float(fin[-1])
                    break
    top = ex.get("top")
    return {
        "names": names,
        "points": points,
        "mean_loss": mean_loss,
        "extension_round": _arr(ex.get("extension_round")),
        "axes_meta": axes_meta,
        "std_loss": _arr(ex.get("std_loss")),
        "fc_r": _arr(ex.get("fc_r")),
        "top": np.asarray(top, int).ravel() if top is not None and np.size(top) else None,
        "trajectories": trajectories,
        "best": best,
    }


def _strength(s: dict[str, Any]) -> np.ndarray | None:
    w = s["weights"]
    if w is None:
        return None
    w = np.where(np.isfinite(w), w, 0.0).copy()
    np.fill_diagonal(w, 0.0)
    return w.sum(axis=1)


def _make_figure(s: dict[str, Any], name: str, config: Mapping[str, Any]):
    """Build one named figure of a subject, or None when its data are absent."""
    if name == "connectome":
        if s["weights"] is None:
            return None
        return rf.connectome_figure(
            s["weights"],
            s["lengths"],
            s["labels"],
            s["conn_attrs"].get("normalisation"),
            groups=s["groups"],
        )
    if name == "fc":
        if s["emp_fc"] is None:
            return None
        return rf.fc_figure(s["emp_fc"], s["sim_fc"], s["labels"], groups=s["groups"])
    if name == "brain":
        if s["centres"] is None or s["centres"].shape != (len(s["labels"]), 3):
            return None
        return rf.brain_figure(s["centres"], s["regional"], s["emp_fc"], s["sim_fc"])
    if name == "scatter":
        if s["emp_fc"] is None or s["sim_fc"] is None:
            return None
        return rf.fc_scatter_figure(s["emp_fc"], s["sim_fc"])
    if name == "landscape":
        li = _landscape_inputs(s)
        if li is None:
            return None
        return rf.landscape_figure(
            li["names"],
            li["points"],
            li["mean_loss"],
            li["axes_meta"],
            std_loss=li["std_loss"],
            fc_r=li["fc_r"],
            top=li["top"],
            trajectories=li["trajectories"],
            best=li["best"],
            extension_round=li["extension_round"],
        )
    if name == "loss":
        if not s["stages"]:
            return None
        return rf.loss_figure(s["stages"])
    if name == "regional":
        return rf.regional_figure(s["regional"], s["labels"], _strength(s), groups=s["groups"])
    if name == "fcd":
        return rf.fcd_figure(s["emp_fcd"], s["sim_fcd"], seed=_heldout_seeds(s)[1])
    if name == "bold":
        tr = _float(s["emp_attrs"].get("tr"))
        tr = tr if tr is not None and math.isfinite(tr) else None  # NaN: no TR known
        tr_sim = _float(s["fit_attrs"].get("tr")) or tr
        n_traces = int(_report_options(config).get("bold_traces", 4))
        return rf.bold_figure(s["emp_bold"], s["sim_bold"], s["labels"], tr, tr_sim, n_traces)
    raise ValueError(f"unknown figure {name!r}")


def _absent_why(s: dict[str, Any], name: str) -> str:
    """Why figure ``name`` of subject ``s`` cannot be drawn (one line)."""
    if name == "fcd" and s["fc_only"]:
        return f"no FCD: {_FC_ONLY}, and an FCD needs the BOLD"
    if name == "fcd" and not _float(s["emp_attrs"].get("fcd_window")):
        return "no FCD (neither empirical nor simulated): observation.fcd_window is 0"
    if name == "brain" and s["centres"] is None:
        return (
            "no region centres, so no view in brain space: give them in the sheet column "
            "centres (label, x, y, z in mm), a TVB zip with centres.txt, or a dseg label image"
        )
    return {
        "connectome": "no SC weights in the connectome file",
        "fc": "no empirical FC in the empirical file",
        "scatter": "no simulated FC of the best fit (sim_fc) in the fit file",
        "landscape": "no exploration landscape (sub-X_explore.h5 missing or without names, "
        "points and mean_loss)",
        "loss": "no refinement stages in the fit file",
        "regional": "no regional stage: every fitted parameter is global",
        "fcd": "no FCD (neither empirical nor simulated)",
        "bold": "no BOLD time series (neither the empirical bold nor the simulated sim_bold)",
        "brain": "nothing to draw in brain space (no regional parameter, no FC)",
    }[name]


_FC_ONLY = "the FC was given as a matrix in the sheet's fc column, without its BOLD"


def _heldout_seeds(s: dict[str, Any]) -> tuple[int, int | None]:
    """(how many held-out seeds the fit's metrics average over, the seed of the simulated
    observables shown), from the fitted parameters' provenance and the fit file."""
    seeds = ((s["json"].get("provenance") or {}).get("seeds") or {}).get("heldout")
    seeds = [seeds] if isinstance(seeds, (int, float)) else list(seeds or [])
    shown = s["fit_attrs"].get("heldout_seed", seeds[0] if seeds else None)
    return len(seeds), None if shown is None else int(shown)


def _stage_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    metrics = s["json"].get("metrics") or {}
    js = metrics.get("stages") or {}
    walls = s["json"].get("wall_time") or {}
    rows = []
    for st in s["stages"]:
        m = _match(js, st) or {}
        wall = _match(walls, st)
        rows.append(
            {
                "stage": st["key"],
                "fc_r": _float(m.get("fc_r")) if m.get("fc_r") is not None else st["heldout_fc_r"],
                "loss": _float(m.get("loss"))
                if m.get("loss") is not None
                else st["heldout_loss_final"],
                "best_start": st["best_start"],
                "starts": st["loss"].shape[1] if st["loss"].ndim == 2 else 1,
                "steps": st["loss"].shape[0],
                "rejected": int(np.nansum(st["rejected"])) if st["rejected"] is not None else None,
                "wall_time": _float(wall) if wall is not None else st["wall_time"],
            }
        )
    known = {r["stage"] for r in rows}
    for k, m in js.items():  # stages in the JSON that the fit file does not have
        if (
            not any(k in (st["key"], st["name"], str(st["index"])) for st in s["stages"])
            and k not in known
            and isinstance(m, Mapping)
        ):
            rows.append(
                {
                    "stage": k,
                    "fc_r": _float(m.get("fc_r")),
                    "loss": _float(m.get("loss")),
                    "best_start": None,
                    "starts": None,
                    "steps": None,
                    "rejected": None,
                    "wall_time": _float(walls.get(k)),
                }
            )
    return rows


def _final_metrics(s: dict[str, Any]) -> dict[str, float | None]:
    """The fit's metrics (:data:`bnmfit.scoring.METRICS` on held-out noise and their
    ``validation_`` twins): the JSON's, else the fit file's (which writes NaN for those it
    has not), else (FC r, RMSE, FCD KS) computed from the simulated observables."""
    m, fa = s["json"].get("metrics") or {}, s["fit_attrs"]
    out = {
        k: _float(m[k]) if m.get(k) is not None else _finite(fa.get(f"heldout_{k}"))
        for k in METRICS + VALIDATION_METRICS
    }
    if s["emp_fc"] is not None and s["sim_fc"] is not None:
        r, rmse, _ = rf.edge_stats(s["emp_fc"], s["sim_fc"])
        out["fc_r"] = r if out["fc_r"] is None else out["fc_r"]
        out["fc_rmse"] = rmse if out["fc_rmse"] is None else out["fc_rmse"]
    if out["fcd_ks"] is None and s["emp_fcd"] is not None and s["sim_fcd"] is not None:
        out["fcd_ks"] = rf.ks_statistic(rf._upper(s["emp_fcd"]), rf._upper(s["sim_fcd"]))
    return out


def _fc_stats(s: dict[str, Any], fm: dict[str, Any]) -> str:
    """A small table of FC numbers next to the edge scatter."""
    e, sim = s["emp_fc"], s["sim_fc"]
    if e is None:
        return ""
    ue = rf._upper(e)
    rows = [
        ("edges (upper triangle)", str(ue.size)),
        ("mean FC, empirical", _r(np.nanmean(ue))),
        ("std FC, empirical", _r(np.nanstd(ue))),
    ]
    if sim is not None:
        us = rf._upper(sim)
        r, rmse, _ = rf.edge_stats(e, sim)
        rows += [
            ("mean FC, simulated", _r(np.nanmean(us))),
            ("std FC, simulated", _r(np.nanstd(us))),
            ("r, edges (these matrices)", _r(r)),
            ("RMSE, edges (these matrices)", _r(rmse)),
        ]
    rows += [
        ("fc_r, recorded by the fit", _r(fm["fc_r"])),
        ("fc_rmse, recorded by the fit", _r(fm["fc_rmse"])),
    ]
    return "<div><h3>FC numbers</h3>" + _table(["quantity", "value"], rows) + "</div>"


def _ks_label(s: dict[str, Any]) -> str:
    """What the fit's FCD KS is: the mean over its held-out seeds, or that of its one seed."""
    n = _heldout_seeds(s)[0]
    return f"FCD KS (mean of {n} held-out seeds)" if n > 1 else "FCD KS (held-out seed)"


def _data_line(s: dict[str, Any]) -> str:
    """What the empirical target is: an FC from how many volumes, or an FC given as such."""
    if s["emp_fc"] is None:
        return ""
    tr = _float(s["emp_attrs"].get("tr"))
    tr_txt = f"TR {_num(tr)} s" if tr and math.isfinite(tr) else "TR unknown"
    n = len(s["labels"])
    if s["fc_only"]:
        return _note(
            f"Empirical target: {_FC_ONLY} ({n} regions, {tr_txt}). Volumes it was computed "
            "from: unknown. No BOLD, so no FCD and no empirical BOLD traces."
        )
    n_tr = _float(s["emp_attrs"].get("n_tr"))
    vols = (
        f"{int(n_tr)} volumes" if n_tr is not None and n_tr >= 0 else "an unknown number of volumes"
    )
    return (
        f'<p class="muted">Empirical target: FC (and FCD) of the BOLD in the sheet\'s bold '
        f"column: {n} regions, {vols} (after discard), {tr_txt}.</p>"
    )


def _stage_info(s: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage, how it was judged and how well its numbers are determined: ``name``,
    ``scores`` (:attr:`bnmfit.results.StageFile.scores`, the JSON's per-stage metrics over
    them), ``acceptance``, ``kept_start``, ``uncertainty`` (the fit file's, else the
    JSON's) and ``screen`` (the fit file's map-start screen); stages only the JSON has are
    included."""
    js = (s["json"].get("metrics") or {}).get("stages") or {}
    ju = s["json"].get("uncertainty") or {}
    out, seen = [], set()
    for st in s["stages"]:
        sc = {**st["scores"], **(_match(js, st) or {})}
        out.append(
            {
                "name": st["name"],
                "scores": sc,
                "acceptance": {"judged_on": sc.get("judged_on"), **st["acceptance"]},
                "kept_start": sc.get("kept_start", st["kept_start"]),
                "uncertainty": st["uncertainty"] or _match(ju, st) or {},
                "screen": st["screen"],
            }
        )
        seen |= {st["key"], st["name"], str(st["index"])}
    for k in dict.fromkeys([*js, *ju]):
        sc = js.get(k) if isinstance(js.get(k), Mapping) else {}
        if k not in seen:
            out.append(
                {
                    "name": k,
                    "scores": dict(sc),
                    "acceptance": {"judged_on": sc.get("judged_on")},
                    "kept_start": sc.get("kept_start"),
                    "uncertainty": ju.get(k) if isinstance(ju.get(k), Mapping) else {},
                    "screen": {},
                }
            )
    return out


#: the flags' codes (:func:`bnmfit.scoring.fit_flags`) in words
FLAG_TITLES = {
    "not_moved": "not moved",
    "at_bound": "at a bound",
    "box_edge": "box edge",
    "stage_rejected": "stage rejected",
    "not_identified": "not identified",
}


def _flag_badge(code: str) -> str:
    return f'<span class="flag" title="{_esc(code)}">{_esc(FLAG_TITLES.get(code, code))}</span>'


def _flags_section(s: dict[str, Any]) -> str:
    flags = s["flags"]
    if flags is None:
        return _note(
            "this fit's files record no flags (they predate flagging: re-run refine to have "
            "the fit checked)"
        )
    if not flags:
        return (
            '<p class="ok"><b>No flags.</b> Refinement moved from its start, no fitted value '
            "is at a bound, the best explored point lies inside the explored box, every stage "
            "was accepted and every number with a standard error is identified.</p>"
        )
    items = "".join(
        f"<li>{_flag_badge(str(f.get('code', '')))} {_esc(f.get('message', ''))}</li>"
        for f in flags
    )
    return (
        f'<div class="flags"><p><b>{len(flags)} flag(s)</b>: what to know before trusting '
        f"this fit.</p><ul>{items}</ul></div>"
    )


def _no_validation_why(s: dict[str, Any]) -> str:
    """Why a subject has no validation data (one clause)."""
    if not s["have_empirical"]:
        return "no empirical file was given to the report"
    if s["fc_only"]:
        return (
            f"{_FC_ONLY}, which has no volumes to split in time; give a second run's FC in "
            "the sheet's validation_fc column"
        )
    opts = (s["config"] or {}).get("validation")
    if isinstance(opts, Mapping) and opts.get("split") == 0:
        return (
            "validation.split is 0 and the sheet names no second run (columns "
            "validation_bold / validation_fc)"
        )
    return (
        "the empirical file holds none (no second run in the sheet's validation_bold / "
        "validation_fc columns, and validation.split 0 or a file that predates validation "
        "data: re-run empirical_fc)"
    )


def _start_end(sc: Mapping[str, Any], key: str, fmt: Callable[[Any], str]) -> str:
    start, end = _finite(sc.get(f"start_{key}")), _finite(sc.get(key))
    return "—" if start is None and end is None else f"{fmt(start)} → {fmt(end)}"


def _verdict(st: Mapping[str, Any]) -> str:
    """Accepted or rejected (HTML), with the p-value of the test that decided it."""
    kept, acc = st["kept_start"], st["acceptance"]
    if kept is None:
        return "—"
    p = _finite(acc.get("p_value"))
    if kept:
        why = f"p = {p:.2g}" if p is not None else "its end diverged"
        return f'<b class="bad">rejected</b>: handed on its start ({why})'
    return "accepted" + (f" (p = {p:.2g})" if p is not None else "")


def _judge_table(s: dict[str, Any]) -> str:
    """Each stage's start → end on validation data and held-out noise, and its verdict."""
    info = s["stage_info"]
    judged = [st for st in info if st["kept_start"] is not None or st["acceptance"].get("end_loss")]
    if not judged:  # files that predate stage verdicts: "Refinement per stage" says it all
        return ""
    cols = [("validation_fc_r", _r), ("validation_loss", _num), ("fc_r", _r), ("loss", _num)]
    heads = ["validation FC r", "validation loss", "held-out FC r", "held-out loss"]
    if not any(_finite(st["scores"].get(k)) is not None for st in info for k in VALIDATION_METRICS):
        cols, heads = cols[2:], heads[2:]
    rows = []
    for st in info:
        acc = st["acceptance"]
        judge = "—"
        if _finite(acc.get("end_loss")) is not None:
            draws = f" ({_num(acc.get('draws'))} draws)" if acc.get("draws") is not None else ""
            judge = f"{_num(acc.get('start_loss'))} → {_num(acc.get('end_loss'))}{draws}"
        rows.append(
            [_esc(st["name"]), _esc(acc.get("judged_on") or "—"), judge, _verdict(st)]
            + [_start_end(st["scores"], k, fmt) for k, fmt in cols]
        )
    level = ((s["config"] or {}).get("validation") or {}).get("level")
    level = f" = {_num(level)}" if level is not None else ""
    return (
        "<h3>Each stage judged: start → end</h3>"
        + _table(["stage", "judged on", "its loss", "verdict", *heads], rows, raw=True)
        + '<p class="muted">A stage compares its best start\'s loss at its start and at its '
        "end on the same noise draws, on the validation data where there are any, else on "
        "the fit's own data; it is rejected, and hands on its start, when the end is worse "
        f"beyond the noise (one-sided paired t-test, p &lt; validation.level{level}). The "
        "other columns score start and end on the held-out noise seeds.</p>"
        + "".join(_screen_note(st) for st in info if st["screen"])
    )


def _screen_note(st: Mapping[str, Any]) -> str:
    """One sentence on which descent a stage that screened map starts kept (HTML)."""
    sc = st["screen"]
    n, rank = _num(sc.get("candidates")), int(sc.get("rank", 0)) + 1
    if sc.get("handed"):
        return (
            f'<p class="muted">Stage {_esc(st["name"])} kept its descent from the start it '
            f"was handed (number {rank} of {n} screened map starts by data loss, "
            f"{_num(sc.get('start_loss'))}).</p>"
        )
    coef = "; ".join(
        f"{_esc(k)} " + ", ".join(f"{float(x):+.3g}" for x in v)
        for k, v in (sc.get("begin") or {}).items()
    )
    return (
        f'<p class="muted">Stage {_esc(st["name"])} kept its descent from screened map start '
        f"number {rank} of {n} (each coefficient ± {_num(sc.get('spread'))} around the start "
        f"it was handed; data loss {_num(sc.get('loss'))} against "
        f"{_num(sc.get('start_loss'))} there): {coef} (intercept first). It was judged "
        "against the start it was handed.</p>"
    )


def _validation_html(s: dict[str, Any]) -> str:
    """The summary's validation part: the fit on data it never saw beside held-out noise,
    where the validation data came from, the training–validation ceiling, each stage's
    verdict."""
    fm, v = s["fm"], s["validation"]
    scored = any(fm[k] is not None for k in VALIDATION_METRICS)
    parts = ["<h3>Validation: data the fit never saw</h3>"]
    if v is None and not scored:
        parts.append(
            _absent(
                f"no validation data: {_no_validation_why(s)}. The fit is scored on held-out "
                "noise of its own data only."
            )
        )
        return "".join(parts) + _judge_table(s)
    if v is not None:
        n_tr = _float(v.get("n_tr"))
        vols = f"{int(n_tr)} volumes" if n_tr is not None else "an FC, volumes unknown"
        parts.append(
            f"<p>Validation data: {_esc(v.get('source', '?'))} ({vols}). The training and "
            f"validation FCs agree at r = <b>{_r(v.get('fc_r_training'))}</b>: the ceiling "
            "of any model's validation FC r.</p>"
        )
    if not scored:
        parts.append(
            _absent(
                "no validation scores in the fit's files (they predate validation scoring: "
                "re-run refine)"
            )
        )
    else:
        names = {"fc_r": "FC r", "fc_rmse": "FC RMSE", "fcd_ks": "FCD KS", "loss": "loss"}
        fmt = {"loss": _num}
        rows = [
            (names[k], fmt.get(k, _r)(fm[k]), fmt.get(k, _r)(fm[f"validation_{k}"]))
            for k in METRICS
            if fm[k] is not None or fm[f"validation_{k}"] is not None
        ]
        parts.append(_table(["metric", "held-out noise (training data)", "validation data"], rows))
    return "".join(parts) + _judge_table(s)


def _summary_section(s: dict[str, Any]) -> str:
    fm, stage_rows = s["fm"], s["stage_rows"]
    walls = [r["wall_time"] for r in stage_rows if r["wall_time"] is not None]
    if "refine" in s.get("timings", {}):
        walls = [s["timings"]["refine"]]
    cards = [_card("FC r (held-out)", _r(fm["fc_r"]))]
    if fm["validation_fc_r"] is not None:
        cards.append(_card("FC r (validation)", _r(fm["validation_fc_r"])))
    if s["validation"] is not None:
        cards.append(_card("FC r ceiling", _r(s["validation"].get("fc_r_training"))))
    cards += [_card("FC RMSE", _r(fm["fc_rmse"])), _card(_ks_label(s), _r(fm["fcd_ks"]))]
    cards += [_card(k, _num(v)) for k, v in s["globals"].items()]
    if walls:
        cards.append(_card("fit wall time", _duration(sum(walls))))
    parts = [_data_line(s), f'<div class="cards">{"".join(cards)}</div>', _validation_html(s)]
    prm = [(k, _num(v), "global", "") for k, v in s["globals"].items()]
    for k, v in s["regional"].items():
        prm.append(
            (
                k,
                f"{_num(np.nanmean(v))} ± {_num(np.nanstd(v), '.3g')}",
                "regional",
                f"{v.size} regions, range {_num(np.nanmin(v))} … {_num(np.nanmax(v))}",
            )
        )
    if prm:
        parts.append(
            "<h3>Fitted parameters</h3>"
            + _table(["parameter", "value (regional: mean ± std)", "scope", "note"], prm)
        )
    else:
        parts.append(_absent("no fitted parameters in the fitted-parameters JSON"))
    if stage_rows:
        wall = any(r["wall_time"] is not None for r in stage_rows)  # older files only
        parts.append(
            "<h3>Refinement per stage (held-out noise seeds)</h3>"
            + _table(
                [
                    "stage",
                    "FC r",
                    "loss",
                    "best start",
                    "starts",
                    "steps",
                    "rejected steps",
                    "wall time",
                ][: None if wall else -1],
                [
                    (
                        r["stage"],
                        _r(r["fc_r"]),
                        _num(r["loss"]),
                        _num(r["best_start"]),
                        _num(r["starts"]),
                        _num(r["steps"]),
                        _num(r["rejected"]),
                        _duration(r["wall_time"]),
                    )[: None if wall else -1]
                    for r in stage_rows
                ],
            )
        )
    else:
        parts.append(
            _absent("no refinement stages (no fit file, or it has no <code>stage-*</code> groups)")
        )
    return "".join(parts)


def _extension_info(attrs: Mapping[str, Any]) -> str:
    """How the explored box grew (:attr:`bnmfit.results.Landscape.extensions`) and the faces
    its best point still lies on (:attr:`~bnmfit.results.Landscape.edge`)."""
    from bnmfit.explore import describe_faces

    done = [e for e in attrs.get("extensions") or [] if isinstance(e, Mapping)]
    edge = attrs.get("edge")
    if not done and not edge:
        return ""
    items = [
        f"round {_num(e.get('round'))}: {_num(e.get('points'))} points beyond "
        f"{_esc(describe_faces(e.get('faces') or []))}"
        for e in done
    ]
    out = ""
    if items:
        out += (
            f"<p>The best explored point lay on an edge of the box, so exploration extended "
            f"it ({len(items)} of at most {_num(attrs.get('extend'))} rounds): "
            f"{'; '.join(items)}.</p>"
        )
    if edge:
        out += (
            f"<p>The best explored point still lies on the edge: "
            f"{_esc(describe_faces(edge))} (a flag).</p>"
        )
    return out


def _explore_info(s: dict[str, Any]) -> str:
    ex = s["explore"]
    if not ex:
        return ""
    attrs = ex.get("@attrs", {})
    names = [str(x) for x in (ex.get("names") or [])]
    pts = _arr(ex.get("points"))
    loss = _arr(ex.get("loss"))
    div = _arr(ex.get("diverged"))
    ext = _arr(ex.get("extension_round"))
    grown = (
        f" ({len(pts) - int((ext > 0).sum())} of the box, {int((ext > 0).sum())} beyond it)"
        if ext is not None and pts is not None and (ext > 0).any()
        else ""
    )
    items = [
        f"{len(pts) if pts is not None else '?'} points{grown} over {', '.join(names) or '?'}",
        f"{loss.shape[1] if loss is not None and loss.ndim == 2 else '?'} noise seeds per point",
    ]
    if attrs.get("sampler"):
        items.append(f"sampler: {_esc(attrs['sampler'])}")
    if div is not None:
        items.append(f"{int(np.nansum(div))} diverged")
    html_ = f'<p class="muted">{"; ".join(items)}.</p>' + _extension_info(attrs)
    li = _landscape_inputs(s)
    if li and li["top"] is not None and pts is not None:
        rows = []
        for rank, i in enumerate(li["top"]):
            if 0 <= i < len(pts):
                rows.append(
                    [rank, int(i)]
                    + [_num(v) for v in pts[i]]
                    + [_num(li["mean_loss"][i])]
                    + ([_r(li["fc_r"][i])] if li["fc_r"] is not None else [])
                )
        of_grid = " of the grid" if attrs.get("sampler", "grid") == "grid" else ""
        hdr = (
            ["rank", "point"] + names + ["mean loss"] + (["FC r"] if li["fc_r"] is not None else [])
        )
        html_ += (
            f"<details><summary>Best explored points{of_grid} (refinement starts)</summary>"
            + _table(hdr, rows)
            + "</details>"
        )
    return html_


def _provenance_section(s: dict[str, Any]) -> str:
    config, stage_rows = s["config"], s["stage_rows"]
    prov = s["json"].get("provenance") or {}
    from bnmfit import __version__

    chash = prov.get("config_hash")
    parts = ['<div class="prov">']
    if chash:
        parts.append(f"<p><b>Config hash:</b> <code>{_esc(chash)}</code></p>")
    else:
        parts.append(
            f"<p><b>Config hash:</b> <code>{config_hash(config)}</code> "
            "<span class=muted>(computed here from the config given to the report; "
            "the fit recorded none)</span></p>"
        )
    model = _model_name(config)
    if model:
        parts.append(f"<p><b>Model:</b> {_esc(model)}</p>")
    versions = prov.get("versions") or {}
    vrows = [(k, v) for k, v in versions.items()]
    vrows.append(("bnmfit (this report)", __version__))
    parts.append("<h3>Package versions</h3>" + _table(["package", "version"], vrows))
    if "xla_flags" in prov:
        parts.append(f"<p><b>XLA_FLAGS:</b> <code>{_esc(prov['xla_flags'] or '(none)')}</code></p>")
    seeds = dict(prov.get("seeds") or {})
    ex_seeds = (s["explore"] or {}).get("@attrs", {}).get("seeds")
    if ex_seeds is not None:
        seeds.setdefault("explore", ex_seeds)
    if seeds:
        parts.append("<h3>Seeds</h3>" + _table(["seed", "value"], _kv_rows(seeds)))
    else:
        parts.append(_absent("no seeds recorded"))
    sums = _input_checksums(
        prov.get("inputs"), s["conn_attrs"].get("inputs"), s["emp_attrs"].get("inputs")
    )
    if sums:
        parts.append(
            "<h3>Input files</h3>"
            + _table(
                ["path", "sha256"],
                [(_esc(p), f'<span class="mono">{_esc(h)}</span>') for p, h in sums],
                raw=True,
            )
        )
    else:
        parts.append(_absent("no input checksums recorded"))
    timings = s.get("timings") or {}
    if timings:  # Snakemake's benchmark files (per-stage times: the refine log)
        wrows = [(k, _duration(v)) for k, v in timings.items()]
        tot = list(timings.values())
    else:  # result files written before timings moved out of them
        wrows = [
            (r["stage"], _duration(r["wall_time"]))
            for r in stage_rows
            if r["wall_time"] is not None
        ]
        ex_wall = (s["explore"] or {}).get("@attrs", {}).get("wall_time")
        if ex_wall is not None:
            wrows.insert(0, ("explore", _duration(ex_wall)))
        tot = [v for v in [_float(ex_wall)] + [r["wall_time"] for r in stage_rows] if v is not None]
    if len(wrows) > 1:
        wrows.append(("total", _duration(sum(tot))))
    if wrows:
        parts.append(
            "<h3>Wall times</h3>"
            + _table(["step", "wall time"], wrows)
            + _note(
                "From Snakemake's benchmark files (logs/benchmarks/); the "
                "refine log has the time per stage."
            )
        )
    else:
        parts.append(
            _absent(
                "no wall times recorded (they are in logs/benchmarks/ and the "
                "logs, not in the result files)"
            )
        )
    qc = s["emp_attrs"].get("qc")
    if isinstance(qc, Mapping) and qc:
        parts.append(
            "<h3>Empirical data QC</h3>"
            + _table(
                ["quantity", "value"],
                [(k, _num(v) if not isinstance(v, str) else v) for k, v in _kv_rows(qc)],
            )
        )
    parts.append("</div>")
    return "".join(parts)


def _fig(s: dict[str, Any], name: str, alt: str, caption: str) -> str:
    """Figure ``name`` of subject ``s`` as HTML, or the line saying why it is absent."""
    f = _make_figure(s, name, s["config"])
    if f is None:
        return _absent(_absent_why(s, name))
    return _fig_of(s, f, alt, caption)


def _fig_of(s: dict[str, Any], fig, alt: str, caption: str) -> str:
    """A figure of subject ``s`` as HTML (its alt text names the subject)."""
    alt = f"{subject_prefix(s['subject'])} {alt}"
    return _figure(fig, alt, caption, _report_options(s["config"]).get("dpi"))


def _warnings_section(s: dict[str, Any]) -> str:
    if not s["warnings"]:
        return ""
    items = "".join(f"<li>{_esc(w)}</li>" for w in s["warnings"])
    return (
        f'<div class="warn"><ul>{items}</ul><p class="muted">Recorded by the steps that '
        "wrote this subject's results (their logs say the same); the run's end lists them "
        "for every subject.</p></div>"
    )


def _pm(value: float, se: float) -> str:
    """``value ± se`` (∞ where the data carry no information)."""
    err = "∞" if np.isinf(se) else _num(se, ".2g")
    return f"{_num(value)} ± {err}"


def _number_groups(s: dict[str, Any], labels: Sequence[str]) -> list[str]:
    """A group per fitted number for grouped ticks: its parameter, with its region's group
    (network or hemisphere, :func:`~bnmfit.report_figures.region_groups`) for a regional
    number (``w[<region>]``); the group alone when the stage fits one parameter."""
    region_group = dict(zip(s["labels"], s["groups"] or [], strict=False))
    pars = [rf.parameter_of(x) for x in labels]
    one = len(set(pars)) == 1
    out = []
    for label, par in zip(labels, pars, strict=True):
        m = re.fullmatch(r"[^\[]+\[(.+)\]", str(label))
        g = region_group.get(m.group(1)) if m else None
        out.append(par if g is None else g if one else f"{par} {g}")
    return out


def _stage_uncertainty(s: dict[str, Any], name: str, u) -> str:
    """One stage's standard errors: a table of value ± SE per fitted number (a parameter
    with more than :data:`~bnmfit.report_figures.MAX_ANNOTATED` numbers as one row and a
    figure of its numbers sorted), the cost, and the correlation heat map."""
    p = len(u.labels)
    rel = u.relative_se
    blocks: dict[str, list[int]] = {}
    for i, label in enumerate(u.labels):
        blocks.setdefault(rf.parameter_of(label), []).append(i)
    rows, figs = [], []
    yes, no = "yes", '<b class="bad">no</b>'
    for par, idx in blocks.items():
        if len(idx) <= rf.MAX_ANNOTATED:
            rows += [
                (
                    _esc(u.labels[i]),
                    _pm(u.values[i], u.se[i]),
                    "∞" if np.isinf(rel[i]) else _num(100 * rel[i], ".3g") + " %",
                    yes if u.identified[i] else no,
                )
                for i in idx
            ]
            continue
        i = np.asarray(idx)
        with np.errstate(invalid="ignore"):
            med = float(np.nanmedian(rel[i])) if np.isfinite(rel[i]).any() else float("inf")
        rows.append(
            (
                f"{_esc(par)} ({len(idx)} numbers: see the figure)",
                f"median SE {_num(np.nanmedian(u.se[i]), '.2g')}",
                "∞" if np.isinf(med) else _num(100 * med, ".3g") + " % (median)",
                f"{int(u.identified[i].sum())} of {len(idx)}",
            )
        )
        figs.append(
            _fig_of(
                s,
                rf.se_figure(par, u.values[i], u.se[i], u.identified[i]),
                f"{par} ± standard error per number, stage {name}",
                f"Stage {_esc(name)}: every fitted number of {_esc(par)} ± its standard error, "
                "sorted by value; hollow red: not identified by these data.",
            )
        )
    method = (
        f"the covariance of this stage's fit with its {u.n_fit} noise seed(s) (sandwich)"
        if u.method == "sandwich"
        else "the Cramér–Rao bound (a lower bound on the error: the loss has an FCD term, or "
        "the file predates the sandwich)"
    )
    n_ok = int(np.sum(u.identified))
    table = _table(["number", "value ± SE", "SE / scale", "identified"], rows, raw=True) + (
        f'<p class="muted">Standard errors: {method}. Cost: {u.n_simulations} simulations '
        f"({u.n_jacobian} forward-mode "
        f"passes for the Jacobian, each carrying one tangent per free number, and "
        f"{u.n_noise} single simulations for FC's noise); the empirical FC counts as "
        f"{_num(u.runs, '.3g')} simulated runs. Identified: SE at most "
        f"{_num(100 * u.fraction, '.3g')} % of the number's scale (its domain's width, or "
        "|value| without an upper bound; refinement.uncertainty.fraction).</p>"
    )
    heat = ""
    if p > 1:
        annotated = "" if p <= rf.MAX_ANNOTATED else f" (more than {rf.MAX_ANNOTATED}: no values)"
        heat = _fig_of(
            s,
            rf.correlation_figure(u.corr, u.labels, u.identified, _number_groups(s, u.labels)),
            f"correlations of the fitted numbers of stage {name}",
            f"Stage {_esc(name)}: correlations of the estimates of its fitted numbers"
            f"{annotated}; strongly correlated numbers trade off against each other (the data "
            "fix a combination of them); grey: a number without a finite standard error.",
        )
    return (
        f"<h3>Stage {_esc(name)}: {p} fitted number(s), {n_ok} identified</h3>"
        + f'<div class="row tight"><div>{table}</div>{heat}</div>'
        + "".join(figs)
    )


def _uncertainty_section(s: dict[str, Any]) -> str:
    from bnmfit.uncertainty import Uncertainty

    have = [(st["name"], st["uncertainty"]) for st in s["stage_info"] if st["uncertainty"]]
    if not have:
        why = (
            "no refinement stages"
            if not s["stage_info"]
            else "none recorded (refinement.uncertainty.enabled is false, or the fit's files "
            "predate standard errors: re-run refine)"
        )
        return _absent(f"no standard errors: {why}")
    intro = (
        '<p class="muted">Standard errors of each stage\'s fitted numbers, from the '
        "Jacobian of the expected FC at the stage's result and FC's noise: the scatter of "
        "this fit over new data of this length and new fit seeds, if the model is right "
        "(its bias is not in it).</p>"
    )
    return intro + "".join(_stage_uncertainty(s, n, Uncertainty.from_dict(d)) for n, d in have)


def _connectome_section(s: dict[str, Any]) -> str:
    return _fig(
        s,
        "connectome",
        "SC weights and tract lengths",
        "Left: SC weights on a log10 scale (white: no edge). Right: tract lengths in mm.",
    )


def _fc_section(s: dict[str, Any]) -> str:
    fm = s["fm"]
    fc_html = _fig(
        s,
        "fc",
        "empirical, simulated and difference FC",
        "Empirical FC, simulated FC of the best fit (held-out noise seed) and "
        "simulated − empirical, all on one colour scale (diagonal omitted).",
    )
    if s["emp_fc"] is not None and s["sim_fc"] is None:
        fc_html += _absent("no simulated FC of the best fit (sim_fc) in the fit file")
    sc_html = _fig(
        s,
        "scatter",
        "simulated vs empirical FC edges",
        f"One point per edge (upper triangle). Held-out fit: "
        f"r = {_r(fm['fc_r'])}, RMSE = {_r(fm['fc_rmse'])}.",
    )
    return fc_html + f'<div class="row">{sc_html}{_fc_stats(s, fm)}</div>'


def _brain_section(s: dict[str, Any]) -> str:
    if s["centres"] is None:
        return _note(_absent_why(s, "brain"))
    return _fig(
        s,
        "brain",
        "regional parameters and strongest FC edges on a glass brain",
        "Glass brain (left, top, right views; region centres in mm as given, drawn on the "
        "MNI template's outline). Top: each regional parameter at its region's centre. "
        f"Below: the strongest {rf.TOP_EDGES:.0%} of FC edges (at least {rf.MIN_EDGES}, at "
        f"most {rf.MAX_EDGES}) of the empirical and of the simulated FC, on one colour scale.",
    )


def _extended(s: dict[str, Any]) -> bool:
    """Whether the subject's exploration added points beyond its original box."""
    ext = _arr((s["explore"] or {}).get("extension_round"))
    return ext is not None and bool((ext > 0).any())


def _landscape_section(s: dict[str, Any]) -> str:
    land = _fig(
        s,
        "landscape",
        "exploration landscape with refinement trajectories",
        "Exploration landscape (loss averaged over noise seeds; grey: diverged). "
        "Coloured lines: the refinement trajectory of every start (o: start, ■: end; "
        "the best start drawn thicker); red ★: the best fit."
        + (
            " Hollow ◇: points added by extending the box beyond an edge the best point lay "
            "on; dashed: the original box."
            if _extended(s)
            else ""
        ),
    )
    return land + _explore_info(s)


#: why an evolutionary exploration stopped (``evolution.stop``), the config key behind it
_STOPS = {
    "generations": "it ran all its generations (exploration.evolution.generations)",
    "budget": "one more generation would have passed the budget of simulations "
    "(exploration.evolution.budget)",
    "tolerance": "CMA-ES stalled: its best losses over the last generations changed less than "
    "exploration.evolution.tolerance",
}


def _stop_line(s: dict[str, Any], ev: Mapping[str, Any], n_points: int) -> str:
    """One line: how many generations and simulations the subject's evolutionary
    exploration ``ev`` ran, and why it stopped."""
    a = ev.get("@attrs", {})
    sampler = (s["explore"].get("@attrs") or {}).get("sampler") or "the search"
    best = _arr(ev.get("best_loss"), 1)
    loss = _arr(s["explore"].get("loss"), 2)
    seeds = (
        "? noise seeds"
        if loss is None
        else f"{loss.shape[1]} noise seeds = {n_points * loss.shape[1]} simulations"
    )
    stop = str(a.get("stop", ""))
    return _esc(
        f"{sampler} stopped after {0 if best is None else len(best)} generations of "
        f"{a.get('population', '?')} candidates ({n_points} points × {seeds}) because "
        f"{_STOPS.get(stop, f'of {stop!r}')}."
    )


def _evolution_section(s: dict[str, Any]) -> str:
    """CMA-ES / NSGA-II generation by generation, NSGA-II's Pareto front and why the search
    stopped; "" for a fixed space (grid, zip, Sobol, LHS)."""
    ev = (s["explore"] or {}).get("evolution")
    li = _landscape_inputs(s)
    generation = _arr((ev or {}).get("generation"), 1) if isinstance(ev, Mapping) else None
    if li is None or generation is None or len(generation) != len(li["points"]):
        return ""
    refined = int(li["top"][0]) if li["top"] is not None else None
    fig = rf.evolution_figure(
        li["names"],
        li["points"],
        li["mean_loss"],
        generation.astype(int),
        _arr(ev.get("best_loss"), 1),
        _arr(ev.get("mean_loss"), 1),
        _arr(ev.get("sigma"), 1),
        li["axes_meta"],
        refined=refined,
    )
    html_ = _fig_of(
        s,
        fig,
        "evolutionary exploration by generation",
        "Left: best and mean loss (over the noise seeds) of each generation; dashed blue: "
        "CMA-ES's step size σ. Right: every evaluated point in the explored plane, coloured "
        "by its generation (grey ×: diverged; more than two axes: the pairs of the three that "
        "spread most); red ★: the start refinement began from.",
    )
    names = [str(x) for x in (ev.get("@attrs", {}).get("objective_names") or [])]
    objectives = _arr(ev.get("objectives"), 2)
    front = _arr(ev.get("front"), 1)
    if len(names) >= 2 and objectives is not None and front is not None:
        html_ += _fig_of(
            s,
            rf.pareto_figure(objectives, names, front.astype(int), refined=refined),
            "NSGA-II Pareto front",
            f"NSGA-II's objectives {_esc(names[0])} and {_esc(names[1])} (means over the noise "
            "seeds) of every evaluated point (grey); orange: the Pareto front, the points no "
            "other point beats on every objective; red ★: the start refinement began from."
            + (f" Objectives not drawn: {_esc(', '.join(names[2:]))}." if len(names) > 2 else ""),
        )
    return html_ + f'<p class="muted">{_stop_line(s, ev, len(generation))}</p>'


def _loss_section(s: dict[str, Any]) -> str:
    return _fig(
        s,
        "loss",
        "loss curves per stage",
        "Per stage: training loss of every start (the start's colour matches the "
        "landscape), held-out loss where evaluated (◆), best so far over all starts "
        "(dashed), rejected steps (red ×); below: gradient norm.",
    )


def _regional_section(s: dict[str, Any]) -> str:
    return _fig(
        s,
        "regional",
        "fitted regional parameters",
        "Fitted regional parameters per region (connectome order; dashed: mean) and "
        "against node strength (sum of SC weights; r: Pearson correlation).",
    )


def _fcd_section(s: dict[str, Any]) -> str:
    n_seeds, seed = _heldout_seeds(s)
    seed_txt = "" if seed is None else f" (seed {seed})"
    if n_seeds > 1:
        why = (
            f"averages the KS over the fit's {n_seeds} held-out seeds, while the histogram "
            f"shows one of them{seed_txt}: the two differ by that seed's share of the noise"
        )
    else:
        why = f"is that of the held-out seed shown{seed_txt}"
        shown = s["emp_fcd"] is not None and s["sim_fcd"] is not None
        ks = rf.ks_statistic(rf._upper(s["emp_fcd"]), rf._upper(s["sim_fcd"])) if shown else None
        if ks is not None and s["fm"]["fcd_ks"] is not None and abs(ks - s["fm"]["fcd_ks"]) < 5e-4:
            why += ": the two are the same number"
    html_ = _fig(
        s,
        "fcd",
        "FCD empirical vs simulated",
        "FCD matrices on a shared colour scale and the distributions of their values. The "
        "histogram's title gives the KS statistic of the two FCDs shown (exact, no "
        f"smoothing); the summary's {_ks_label(s)} = {_r(s['fm']['fcd_ks'])} {why}.",
    )
    if (s["emp_fcd"] is None) != (s["sim_fcd"] is None):
        which = "empirical" if s["emp_fcd"] is None else "simulated"
        why = f" ({_FC_ONLY})" if s["fc_only"] else ""
        html_ += _absent(f"no {which} FCD{why}; only the other one is shown")
    return html_


def _bold_section(s: dict[str, Any]) -> str:
    if s["emp_bold"] is None and s["sim_bold"] is not None:
        why = _FC_ONLY if s["fc_only"] else "the empirical file holds none"
        caption = (
            "Simulated BOLD of a few regions (best fit, held-out seed), z-scored, and its power "
            f"spectrum. No empirical BOLD: {why}."
        )
    else:
        caption = (
            "BOLD of a few regions, empirical (preprocessed) and simulated (best fit, "
            "held-out seed), each z-scored."
        )
    html_ = _fig(s, "bold", "BOLD traces", caption)
    if s["emp_bold"] is not None and s["sim_bold"] is None:
        html_ += _absent("no simulated BOLD (sim_bold) in the fit file")
    return html_


#: The subject page, in order: (anchor, title, section function). A section function takes
#: the loaded subject (its records, ``config``, final metrics ``fm`` and ``stage_rows``) and
#: returns the section's HTML, or "" to leave the section out; adding a section to the page
#: is adding its function here.
SUBJECT_SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("flags", "Flags", _flags_section),
    ("warnings", "Warnings", _warnings_section),
    ("summary", "Summary", _summary_section),
    ("uncertainty", "Parameter uncertainty", _uncertainty_section),
    ("connectome", "Structural connectome", _connectome_section),
    ("fc", "Functional connectivity", _fc_section),
    ("brain", "Brain space", _brain_section),
    ("landscape", "Exploration and refinement trajectories", _landscape_section),
    ("evolution", "Evolutionary exploration", _evolution_section),
    ("loss", "Loss curves", _loss_section),
    ("regional", "Regional parameters", _regional_section),
    ("fcd", "Functional connectivity dynamics (FCD)", _fcd_section),
    ("bold", "BOLD", _bold_section),
    ("provenance", "Provenance", _provenance_section),
]


def subject_report(
    subject: str,
    *,
    connectome_h5: PathLike | None,
    empirical_h5: PathLike | None,
    explore_h5: PathLike | None,
    fit_h5: PathLike | None,
    params_json: PathLike | None,
    config: Mapping[str, Any],
    benchmarks: Mapping[str, Sequence[PathLike]] | None = None,
) -> str:
    """One subject's fit as a self-contained HTML page (returned as text).

    Args:
        subject: the subject id (``"01"`` or ``"sub-01"``).
        connectome_h5: ``sub-X_connectome.h5`` (weights, lengths, labels).
        empirical_h5: ``sub-X_desc-empirical_fc.h5`` (bold, fc, optional fcd; attrs tr, qc).
        explore_h5: ``sub-X_explore.h5`` (names, points, loss, mean_loss, fc_r, top, ...).
        fit_h5: ``sub-X_fit.h5`` (one ``stage-<i>-<name>`` group per stage; sim_fc, sim_bold).
        params_json: ``sub-X_desc-fitted_params.json``.
        config: the workflow config; ``config["report"]["bold_traces"]`` (default 4) sets the
            number of BOLD traces shown, ``config["report"]["dpi"]`` the figure resolution.
        benchmarks: step (``explore``, ``refine``) → its Snakemake benchmark TSVs: the wall
            times shown (result files hold none).

    Any path may be ``None`` for an absent piece; a path that does not exist is a DataError.
    Figures are PNG in ``data:`` URIs; the page loads nothing from the network.
    """
    s = _load_subject(subject, connectome_h5, empirical_h5, explore_h5, fit_h5, params_json)
    s["timings"] = {
        k: v
        for k, v in ((k, benchmark_seconds(p)) for k, p in (benchmarks or {}).items())
        if v is not None
    }
    s.update(
        config=config, fm=_final_metrics(s), stage_rows=_stage_rows(s), stage_info=_stage_info(s)
    )
    sections = [(a, title, fn(s)) for a, title, fn in SUBJECT_SECTIONS]
    sections = [(a, title, html_) for a, title, html_ in sections if html_]
    body = "".join(_section(a, title, c) for a, title, c in sections)
    model = _model_name(config)
    subtitle = (
        "Whole-brain network model fit"
        + (f" — model: {_esc(model)}" if model else "")
        + f" — FC r = {_r(s['fm']['fc_r'])}, RMSE = {_r(s['fm']['fc_rmse'])}"
        + (
            f", validation FC r = {_r(s['fm']['validation_fc_r'])}"
            if s["fm"]["validation_fc_r"] is not None
            else ""
        )
    )
    pre = subject_prefix(subject)
    return _page(f"{pre} — fit report", subtitle, [(a, t) for a, t, _ in sections], body)


def write_subject_figures(
    subject: str,
    *,
    connectome_h5: PathLike | None,
    empirical_h5: PathLike | None,
    explore_h5: PathLike | None,
    fit_h5: PathLike | None,
    params_json: PathLike | None,
    config: Mapping[str, Any],
    outdir: PathLike,
) -> list[Path]:
    """Write the main figures (:data:`SUBJECT_FIGURES`) of one subject as PNG files into
    ``outdir`` (names from :func:`subject_figure_paths`) and return their paths in that order.

    The set of files is always the same: a figure whose data are absent (e.g. ``regional``
    when no regional stage ran) is a placeholder image that says so.
    """
    s = _load_subject(subject, connectome_h5, empirical_h5, explore_h5, fit_h5, params_json)
    dpi = _report_options(config).get("dpi")
    out = []
    for name, path in subject_figure_paths(subject, outdir).items():
        fig = _make_figure(s, name, config)
        if fig is None:
            fig = rf.absent_figure(f"{subject_prefix(subject)}: {name}", _absent_why(s, name))
        png = rf.to_png(fig, dpi=dpi)
        results.write_bytes(path, png)
        out.append(path)
    return out


# =========================================================================== cohort


_ATLAS_ENTITY = re.compile(r"(?:^|[_/.-])(?:atlas|seg)-([A-Za-z0-9]+)")


def _atlas(atlas: str | None, conn: Mapping[str, Any]) -> str | None:
    """The atlas a subject's regions come from: the sheet's atlas column (``atlas``), else
    a BIDS ``atlas-``/``seg-`` entity or a TVB zip's name among the connectome's inputs."""
    if atlas:
        return str(atlas)
    inputs = (conn.get("@attrs") or {}).get("inputs") or {}
    paths = [str(p) for p in (inputs if isinstance(inputs, Mapping) else [])]
    for path in paths:
        m = _ATLAS_ENTITY.search(Path(path).name)
        if m:
            return m.group(1)
    return next((Path(p).stem for p in paths if p.lower().endswith(".zip")), None)


def _subject_info(subj, pj, connectome_h5, empirical_h5, atlas) -> dict[str, Any]:
    """Atlas, region count, TR and warnings of one subject of the cohort table."""
    pre = subject_prefix(subj)
    conn = _read_h5(_check_file(connectome_h5, f"connectome HDF5 of {pre}")) or {}
    emp = _read_h5(_check_file(empirical_h5, f"empirical FC HDF5 of {pre}")) or {}
    fc = _arr(emp.get("fc"), 2)
    sizes = [np.size(v) for v in (pj.get("params") or {}).values() if np.ndim(v) == 1]
    if isinstance(conn.get("labels"), list):
        n = len(conn["labels"])
    else:
        n = fc.shape[0] if fc is not None else (max(sizes) if sizes else None)
    tr = _float((emp.get("@attrs") or {}).get("tr"))
    qc = (emp.get("@attrs") or {}).get("qc")
    val = qc.get("validation") if isinstance(qc, Mapping) else None
    return {
        "atlas": _atlas(atlas, conn),
        "n_regions": n,
        "tr": tr if tr is not None and math.isfinite(tr) else None,
        "fc_r_ceiling": _float(val.get("fc_r_training")) if isinstance(val, Mapping) else None,
        "warnings": _warnings(pre, conn, emp, pj),
    }


def _flag_codes(pj: Mapping[str, Any], fit: Mapping[str, Any] | None) -> str | None:
    """A fit's flag codes joined by ``;`` (each once, in order; "" for none), None when its
    files predate flags."""
    flags = pj["flags"] if "flags" in pj else (fit or {}).get("@attrs", {}).get("flags")
    if flags is None:
        return None
    codes = [str(f.get("code", "")) for f in flags if isinstance(f, Mapping)]
    return ";".join(dict.fromkeys(codes))


def _per_subject(values, n: int, what: str) -> list:
    values = list(values) if values is not None else [None] * n
    if len(values) != n:
        raise ConfigError(
            f"cohort_report: expected one {what} per subject ({n}), got {len(values)}; pass "
            "the lists in the order of the subjects"
        )
    return values


def _cohort_data(
    subjects,
    params_jsons,
    fit_h5s,
    benchmarks=None,
    connectome_h5s=None,
    empirical_h5s=None,
    atlases=None,
):
    subjects = [str(x) for x in subjects]
    benchmarks = list(benchmarks) if benchmarks else [None] * len(subjects)
    params_jsons = list(params_jsons)
    fit_h5s = list(fit_h5s) if fit_h5s is not None else [None] * len(subjects)
    if len(params_jsons) != len(subjects) or len(fit_h5s) != len(subjects):
        raise ConfigError(
            f"cohort_report: expected one params JSON and one fit file per "
            f"subject ({len(subjects)}), got {len(params_jsons)} and "
            f"{len(fit_h5s)}; pass the lists in the order of the subjects"
        )
    n = len(subjects)
    conns = _per_subject(connectome_h5s, n, "connectome file")
    emps = _per_subject(empirical_h5s, n, "empirical FC file")
    atlases = _per_subject(atlases, n, "atlas")
    rows, stage_rows, global_names, regional_names, warnings = [], [], [], [], {}
    for subj, pj_path, fit_path, bench, conn_path, emp_path, atlas in zip(
        subjects, params_jsons, fit_h5s, benchmarks, conns, emps, atlases, strict=True
    ):
        pj = _read_json(_check_file(pj_path, f"fitted parameters JSON of {subject_prefix(subj)}"))
        fit = _read_h5(_check_file(fit_path, f"refinement HDF5 of {subject_prefix(subj)}"))
        stages = _stages(fit)
        info = _subject_info(subj, pj, conn_path, emp_path, atlas)
        warnings[subj] = info.pop("warnings")
        row: dict[str, Any] = {"subject": subj, **info}
        for k, v in (pj.get("params") or {}).items():
            if np.ndim(v) == 0 and _float(v) is not None:
                row[k] = float(v)
                if k not in global_names:
                    global_names.append(k)
            elif np.size(v) > 1:
                a = np.asarray(v, float)
                row[f"{k}_mean"] = float(np.nanmean(a))
                row[f"{k}_std"] = float(np.nanstd(a))
                if k not in regional_names:
                    regional_names.append(k)
        m = pj.get("metrics") or {}
        for k in ("fc_r", "fc_rmse", "fcd_ks", "validation_fc_r"):
            row[k] = _float(m.get(k))
        row["flags"] = _flag_codes(pj, fit)
        walls = pj.get("wall_time") or {}
        wall_vals = (
            [_float(v) for v in walls.values() if _float(v) is not None]
            if walls
            else [st["wall_time"] for st in stages if st["wall_time"] is not None]
        )
        row["wall_time_s"] = float(sum(wall_vals)) if wall_vals else None
        if benchmark_seconds(bench) is not None:  # the refine job's benchmark file
            row["wall_time_s"] = benchmark_seconds(bench)
        chash = (pj.get("provenance") or {}).get("config_hash")
        row["config_hash"] = str(chash) if chash else None
        rows.append(row)
        js = m.get("stages") or {}
        seen = set()
        for st in stages:
            sm = _match(js, st) or {}
            val = sm.get("validation_fc_r", st["scores"].get("validation_fc_r"))
            stage_rows.append(
                {
                    "subject": subj,
                    "stage": st["key"],
                    "stage_index": st["index"],
                    "fc_r": _float(sm.get("fc_r"))
                    if sm.get("fc_r") is not None
                    else st["heldout_fc_r"],
                    "loss": _float(sm.get("loss"))
                    if sm.get("loss") is not None
                    else st["heldout_loss_final"],
                    "validation_fc_r": _float(val),
                }
            )
            seen |= {st["key"], st["name"], str(st["index"])}
        for i, (k, sm) in enumerate(js.items()):
            if k not in seen and isinstance(sm, Mapping):
                mm = _STAGE_RE.match(k)
                stage_rows.append(
                    {
                        "subject": subj,
                        "stage": k,
                        "stage_index": int(mm.group(1)) if mm else i,
                        "fc_r": _float(sm.get("fc_r")),
                        "loss": _float(sm.get("loss")),
                        "validation_fc_r": _float(sm.get("validation_fc_r")),
                    }
                )
    cols = ["subject", *global_names]
    for k in regional_names:
        cols += [f"{k}_mean", f"{k}_std"]
    cols += ["fc_r", "fc_rmse", "fcd_ks", "validation_fc_r", "fc_r_ceiling", "wall_time_s"]
    table = pd.DataFrame(rows).reindex(
        columns=["subject", *_INFO, *cols[1:], "flags", "config_hash"]
    )
    for c in cols[1:] + ["tr"]:
        table[c] = pd.to_numeric(table[c], errors="coerce").astype(float)
    table["n_regions"] = pd.to_numeric(table["n_regions"], errors="coerce").astype("Int64")
    stage_df = pd.DataFrame(
        stage_rows, columns=["subject", "stage", "stage_index", "fc_r", "loss", "validation_fc_r"]
    )
    return table, stage_df, global_names, regional_names, warnings


#: the cohort table's columns on each subject's data (before its fitted parameters)
_INFO = ("atlas", "n_regions", "tr")
#: metrics shown with three decimals in the cohort table
_R_COLUMNS = ("fc_r", "fc_rmse", "fcd_ks", "validation_fc_r", "fc_r_ceiling")


def _cohort_figs(table, stage_df, global_names, regional_names, subjects):
    pcols = list(global_names) + [f"{k}_mean" for k in regional_names]
    return {
        "params": rf.cohort_params_figure(table, pcols, subjects),
        "metrics": rf.cohort_metrics_figure(stage_df, table, subjects),
    }


#: cohort page column headers that differ from the table's column names
_HEADERS = {"n_regions": "regions", "tr": "TR (s)"}


def _cohort_warnings(warnings: Mapping[str, Sequence[str]]) -> str:
    """Every subject's warnings, grouped by subject with a link to its page."""
    have = {sj: w for sj, w in warnings.items() if w}
    if not have:
        return "<p>No subject has warnings.</p>"
    items = "".join(
        f'<li><a href="{_esc(subject_page(sj))}">{_esc(subject_prefix(sj))}</a>'
        f"<ul>{''.join(f'<li>{_esc(x)}</li>' for x in w)}</ul></li>"
        for sj, w in have.items()
    )
    return (
        f'<div class="warn"><p>{sum(map(len, have.values()))} warning(s) for {len(have)} of '
        f"{len(warnings)} subjects:</p><ul>{items}</ul></div>"
    )


def _codes(flags: Any) -> list[str]:
    """The codes of a cohort table's ``flags`` cell (none for "" or a missing value)."""
    return flags.split(";") if isinstance(flags, str) and flags else []


def _stage_table(stage_df: pd.DataFrame, subjects: Sequence[str], col: str, title: str) -> str:
    """One metric of every subject (rows, linked) after each stage (columns)."""
    piv = stage_df.pivot_table(
        index="subject", columns="stage", values=col, aggfunc="first", dropna=False
    )
    order = list(dict.fromkeys(stage_df.sort_values("stage_index")["stage"]))
    piv = piv.reindex(columns=order, index=[s for s in subjects if s in piv.index])
    return f"<h3>{_esc(title)}</h3>" + _table(
        ["subject", *order],
        [
            [f'<a href="{_esc(subject_page(sj))}">{_esc(subject_prefix(sj))}</a>']
            + [_r(piv.loc[sj, c]) if np.isfinite(piv.loc[sj, c]) else "—" for c in order]
            for sj in piv.index
        ],
        raw=True,
    )


def cohort_report(
    subjects: Sequence[str],
    *,
    params_jsons: Sequence[PathLike],
    fit_h5s: Sequence[PathLike | None] | None,
    config: Mapping[str, Any],
    benchmarks: Sequence[PathLike | None] | None = None,
    connectome_h5s: Sequence[PathLike | None] | None = None,
    empirical_h5s: Sequence[PathLike | None] | None = None,
    atlases: Sequence[str | None] | None = None,
) -> tuple[str, pd.DataFrame]:
    """The cohort's summary page and table.

    Returns ``(html, table)``: the self-contained HTML page (meant to be written as
    ``results/cohort_report.html``; it links to ``sub-X/sub-X_report.html``) and one row per
    subject with its ``atlas`` (``atlases``, the sheet's atlas column, else read from the
    connectome's input file names), ``n_regions``, ``tr`` (s; from ``connectome_h5s`` and
    ``empirical_h5s``, one per subject), the fitted global parameters,
    ``<regional>_mean`` / ``<regional>_std``, ``fc_r``, ``fc_rmse``, ``fcd_ks`` (held-out
    noise), ``validation_fc_r`` (on the validation data), ``fc_r_ceiling`` (the r between
    the training and validation FCs, from ``empirical_h5s``), ``wall_time_s`` (the refine
    job's, from its Snakemake benchmark TSV in ``benchmarks``, one per subject; result
    files hold none), ``flags`` (the fit's flag codes joined by ``;``, "" for none, missing
    where the files predate flags) and the ``config_hash`` the subject was fitted with, to
    be written as ``cohort_params.tsv``. The page highlights the subjects with flags, shows
    held-out and validation FC r per stage and lists every subject's warnings
    (:func:`subject_warnings`).
    """
    subjects = [str(x) for x in subjects]
    table, stage_df, gnames, rnames, warnings = _cohort_data(
        subjects, params_jsons, fit_h5s, benchmarks, connectome_h5s, empirical_h5s, atlases
    )
    dpi = _report_options(config).get("dpi")
    figs = _cohort_figs(table, stage_df, gnames, rnames, subjects)

    # ---- the table, with links
    header = list(table.columns)
    body_rows = []
    for _, row in table.iterrows():
        cells = []
        for c in header:
            v = row[c]
            if c == "flags":
                txt = "".join(map(_flag_badge, _codes(v))) or (
                    "none" if isinstance(v, str) else "—"
                )
                cells.append(f'<td data-v="{_esc(v if isinstance(v, str) else "")}">{txt}</td>')
                continue
            if c == "config_hash":
                cells.append(f'<td data-v="{_esc(v or "")}"><code>{_esc(v or "—")}</code></td>')
                continue
            if c == "atlas":
                v = v if isinstance(v, str) else ""
                cells.append(f'<td data-v="{_esc(v)}">{_esc(v or "—")}</td>')
                continue
            if c == "subject":
                pre = subject_prefix(v)
                cells.append(
                    f'<td data-v="{_esc(pre)}"><a href="{_esc(subject_page(v))}">'
                    f"{_esc(pre)}</a></td>"
                )
                continue
            fmt = ".3f" if c in _R_COLUMNS else ".4g"
            missing = v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
            txt = "—" if missing else _duration(v) if c == "wall_time_s" else _num(v, fmt)
            dv = "" if missing else repr(float(v))
            cells.append(f'<td class="num" data-v="{dv}">{txt}</td>')
        flagged = ' class="flagged"' if _codes(row["flags"]) else ""
        body_rows.append(f"<tr{flagged}>" + "".join(cells) + "</tr>")
    th = "".join(f"<th>{_esc(_HEADERS.get(h, h))}</th>" for h in header)
    n_flagged = int(table["flags"].map(lambda v: bool(_codes(v))).sum())
    tbl = (
        f"<p>{n_flagged} of {len(table)} subjects have flags (rows shaded; hover a flag for "
        "its code, the subject's page has its message).</p>"
        f'<div class="scroll"><table class="sortable" id="cohort-table"><thead><tr>{th}</tr>'
        f"</thead><tbody>{''.join(body_rows)}</tbody></table></div>"
        '<p class="muted">Click a column header to sort. fc_r, fc_rmse, fcd_ks: the fit on '
        "held-out noise seeds; validation_fc_r: on the subject's validation data (a second "
        "run, or the held-out end of its run), which the fit never saw; fc_r_ceiling: the r "
        "between the training and validation FCs, the most any model can reach there; "
        "flags: what to know before trusting the fit (— where the files predate flags); "
        "atlas: the sheet's atlas column, else the connectome's "
        "file names; TR: of the empirical BOLD (— where unknown, e.g. an FC given as a "
        "matrix); regional parameters as mean and std over regions; "
        "wall time: the refine job's (Snakemake benchmark); config hash: the config the "
        "subject was fitted with.</p>"
    )

    parts = [_section("table", "Fitted parameters and fit metrics", tbl)]
    parts.append(_section("warnings", "Warnings", _cohort_warnings(warnings)))
    parts.append(
        _section(
            "parameters",
            "Fitted parameters across subjects",
            _figure(
                figs["params"],
                "fitted parameters across subjects",
                "Each point is one subject; boxes show quartiles (3 or more subjects).",
                dpi,
            ),
        )
    )
    if len(stage_df):
        stage_tbl = _stage_table(stage_df, subjects, "fc_r", "Held-out FC r per stage")
        if np.isfinite(stage_df["validation_fc_r"].to_numpy(float)).any():
            stage_tbl += _stage_table(
                stage_df, subjects, "validation_fc_r", "Validation FC r per stage"
            )
    else:
        stage_tbl = _absent("no per-stage metrics in the fitted-parameters JSONs or fit files")
    parts.append(
        _section(
            "metrics",
            "Fit metrics per stage",
            _figure(
                figs["metrics"],
                "fit metrics per stage across subjects",
                "Top: held-out FC r (validation FC r, where recorded) and loss after each "
                "stage, one line per subject. Bottom: the final metrics (held-out FC r, "
                "validation FC r, FC RMSE, FCD KS) across subjects.",
                dpi,
            )
            + stage_tbl,
        )
    )
    by = table.set_index("subject")
    links = "".join(
        f'<li><a href="{_esc(subject_page(sj))}">{_esc(subject_prefix(sj))}</a>'
        f' <span class="muted">FC r = {_r(by.loc[sj, "fc_r"])}'
        + (
            f", validation FC r = {_r(by.loc[sj, 'validation_fc_r'])}"
            if np.isfinite(by.loc[sj, "validation_fc_r"])
            else ""
        )
        + "</span> "
        + "".join(map(_flag_badge, _codes(by.loc[sj, "flags"])))
        + "</li>"
        for sj in subjects
    )
    fitted_with = table.dropna(subset="config_hash").groupby("config_hash", sort=False)
    hashes = {h: list(v) for h, v in fitted_with["subject"]}
    prov = [f"<p><b>Subjects:</b> {len(subjects)}</p>"]
    if len(hashes) > 1:
        prov.append(
            _note(
                "the subjects were fitted with different configs: "
                + "; ".join(
                    f"<code>{_esc(h)}</code>: {', '.join(map(_esc, v))}" for h, v in hashes.items()
                )
            )
        )
    elif hashes:
        prov.append(f"<p><b>Config hash:</b> <code>{_esc(next(iter(hashes)))}</code></p>")
    else:
        prov.append(
            f"<p><b>Config hash:</b> <code>{config_hash(config)}</code> "
            "<span class=muted>(computed here from the config given)</span></p>"
        )
    parts.append(
        _section("subjects", "Subject pages", f'<ul class="subjects">{links}</ul>' + "".join(prov))
    )
    model = _model_name(config)
    med = ""
    for col, what in (("fc_r", "FC r"), ("validation_fc_r", "validation FC r")):
        fin = table[col].to_numpy(dtype=float)
        fin = fin[np.isfinite(fin)]
        med += f" — median {what} = {_r(np.median(fin))}" if fin.size else ""
    subtitle = f"{len(subjects)} subjects" + (f" — model: {_esc(model)}" if model else "") + med
    nav = [
        ("table", "Table"),
        ("warnings", "Warnings"),
        ("parameters", "Parameters"),
        ("metrics", "Metrics"),
        ("subjects", "Subjects"),
    ]
    return _page("Cohort fit report", subtitle, nav, "".join(parts), _SORT_JS), table


def write_cohort_figures(
    subjects: Sequence[str],
    *,
    params_jsons: Sequence[PathLike],
    fit_h5s: Sequence[PathLike | None] | None,
    config: Mapping[str, Any],
    outdir: PathLike,
) -> list[Path]:
    """Write the cohort figures (:data:`COHORT_FIGURES`) as PNG files into ``outdir`` (names
    from :func:`cohort_figure_paths`) and return their paths."""
    subjects = [str(x) for x in subjects]
    table, stage_df, gnames, rnames, _ = _cohort_data(subjects, params_jsons, fit_h5s)
    figs = _cohort_figs(table, stage_df, gnames, rnames, subjects)
    dpi = _report_options(config).get("dpi")
    out = []
    for name, path in cohort_figure_paths(outdir).items():
        png = rf.to_png(figs[name], dpi=dpi)
        results.write_bytes(path, png)
        out.append(path)
    return out
