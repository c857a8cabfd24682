"""Subject and cohort reports: built from small synthetic fitted results that follow the
workflow's result-file contract, checked for their figures, numbers and links, and rendered
in headless Chromium (images must decode, no script errors; screenshots kept in tmp_path)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from bnmfit import report
from bnmfit.errors import ConfigError, DataError

N = 10
LABELS = [
    f"{h}-{r}" for h in ("lh", "rh") for r in ("front", "pariet", "tempor", "occip", "cingul")
]
CONFIG = {"model": {"name": "hopf"}, "report": {"bold_traces": 3}}

# ----------------------------------------------------------------------------- fixtures


def _str_ds(group, name, values):
    group.create_dataset(
        name, data=np.asarray(values, dtype=object), dtype=h5py.string_dtype("utf-8")
    )


def _sliding_fcd(bold, win=30, step=5):
    fcs = []
    iu = np.triu_indices(bold.shape[1], 1)
    for s in range(0, bold.shape[0] - win + 1, step):
        fcs.append(np.corrcoef(bold[s : s + win].T)[iu])
    return np.corrcoef(np.asarray(fcs))


def brain_centres(labels, seed=0) -> np.ndarray:
    """Plausible centres (mm, MNI-like) for labels that name their hemisphere."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    side = np.array([1.0 if re.search(r"(^|[-_])(rh|RH)([-_]|$)", x) else -1.0 for x in labels])
    u = rng.uniform(0, 1, (n, 3))
    return np.c_[side * (12 + 50 * u[:, 0]), -95 + 155 * u[:, 1], -30 + 100 * u[:, 2]]


def make_subject(
    root: Path,
    subject: str,
    *,
    dims: int = 2,
    fcd: bool = True,
    regional: bool = True,
    seed: int = 0,
    n: int = N,
    labels: list[str] | None = None,
    centres: np.ndarray | None = None,
    fc_only: bool = False,
    heldout_seeds=99,
    raw_weights: np.ndarray | None = None,
    fit_warnings: tuple[str, ...] = (),
) -> dict:
    """Write the five result files of one subject (the connectome and empirical FC through
    bnmfit.results' records; ``fc_only``: an FC given as a matrix, no BOLD and no FCD;
    ``raw_weights``: the SC as read, whose warnings the connectome keeps); return their
    paths and the truth."""
    from bnmfit import results
    from bnmfit.connectome import Connectome

    labels = labels or (
        LABELS if n == N else [f"{h}-r{i:03d}" for h in ("lh", "rh") for i in range(n // 2)]
    )
    fcd = fcd and not fc_only
    rng = np.random.default_rng(seed)
    d = root / f"sub-{subject}"
    d.mkdir(parents=True, exist_ok=True)
    pre = f"sub-{subject}"
    # connectome
    w = rng.lognormal(0, 1.2, (n, n))
    w = (w + w.T) / 2
    w[rng.random((n, n)) < 0.25] = 0
    w = np.triu(w, 1) + np.triu(w, 1).T
    w /= w.max()
    ln = rng.uniform(20, 150, (n, n))
    ln = np.triu(ln, 1) + np.triu(ln, 1).T
    inputs = {"resources/sub-01_weights.tsv": "ab" * 32, "resources/sub-01_lengths.tsv": "cd" * 32}
    paths = {
        "connectome_h5": d / f"{pre}_connectome.h5",
        "empirical_h5": d / f"{pre}_desc-empirical_fc.h5",
        "explore_h5": d / f"{pre}_explore.h5",
        "fit_h5": d / f"{pre}_fit.h5",
        "params_json": d / f"{pre}_desc-fitted_params.json",
    }
    raw = w if raw_weights is None else raw_weights
    conn = Connectome.from_arrays(raw, ln, labels, normalise="max", symmetrise=False)
    results.ConnectomeFile.of(
        subject, conn, raw, centres=centres, provenance={"inputs": inputs}
    ).write(paths["connectome_h5"])
    # empirical
    mix = rng.normal(size=(n, n)) * 0.6 + np.eye(n)
    bold = rng.normal(size=(180, n)) @ mix
    bold = (bold - bold.mean(0)) / bold.std(0)
    emp_fc = np.corrcoef(bold.T)
    fc_note = f"resources/{pre}_fc.tsv: the FC diagonal is 0 at {n} of {n} regions"
    results.EmpiricalFile(
        subject=subject,
        fc=emp_fc,
        labels=list(labels),
        bold=None if fc_only else bold,
        fcd=_sliding_fcd(bold) if fcd else None,
        tr=None if fc_only else 2.0,
        n_tr=None if fc_only else 180,
        discard=0,
        fcd_window=30 if fcd else 0,
        fcd_step=5,
        qc={"notes": [fc_note]} if fc_only else {"n_interpolated": 3, "frac_zero": 0.0},
        provenance={},
    ).write(paths["empirical_h5"])
    # exploration landscape
    axes = [
        {"name": "G", "lo": 0.5, "hi": 3.0, "n": 9, "scale": "linear"},
        {"name": "sigma", "lo": 1e-3, "hi": 1e-1, "n": 7, "scale": "log"},
        {"name": "velocity", "lo": 1.0, "hi": 10.0, "n": 4, "scale": "linear"},
    ][:dims]
    if dims == 1:
        axes[0]["n"] = 26
    elif dims == 3:
        axes[0]["n"], axes[1]["n"] = 6, 5
    grids = [
        np.geomspace(a["lo"], a["hi"], a["n"])
        if a["scale"] == "log"
        else np.linspace(a["lo"], a["hi"], a["n"])
        for a in axes
    ]
    pts = np.stack([g.ravel() for g in np.meshgrid(*grids, indexing="ij")], axis=1)
    names = [a["name"] for a in axes]
    opt = {"G": 1.8, "sigma": 0.01, "velocity": 4.0}

    def loss_fn(p):
        z = 0.3 + 0.5 * (p[..., 0] - opt["G"]) ** 2
        if dims >= 2:
            z = z + 0.3 * (np.log10(p[..., 1]) + 2) ** 2
        if dims >= 3:
            z = z + 0.02 * (p[..., 2] - opt["velocity"]) ** 2
        return z

    base = loss_fn(pts)
    R = 3
    loss = base[:, None] + rng.normal(0, 0.02, (len(pts), R))
    diverged = pts[:, 0] > 2.7
    if dims >= 2:
        diverged &= pts[:, 1] > 0.03
    loss[diverged] = np.nan
    mean_loss, std_loss = loss.mean(1), loss.std(1)  # NaN where diverged
    fc_r = np.clip(0.75 - 0.4 * mean_loss, -1, 1)
    # the refinement starts: the best grid point and two far from it (long trajectories)
    unit = np.stack(
        [
            (np.log10(pts[:, i]) - np.log10(a["lo"])) / np.log10(a["hi"] / a["lo"])
            if a["scale"] == "log"
            else (pts[:, i] - a["lo"]) / (a["hi"] - a["lo"])
            for i, a in enumerate(axes)
        ],
        axis=1,
    )
    top = [int(np.nanargmin(mean_loss))]
    for corner in (0.15, 0.8):
        dist = np.linalg.norm(unit - corner, axis=1)
        top.append(int(np.argmin(np.where(np.isfinite(mean_loss), dist, np.inf))))
    top = np.asarray(top)
    with h5py.File(paths["explore_h5"], "w") as f:
        _str_ds(f, "names", names)
        f["points"], f["loss"], f["mean_loss"], f["std_loss"] = pts, loss, mean_loss, std_loss
        f["fc_r"], f["diverged"], f["top"] = fc_r, diverged, top
        f.attrs["axes"] = json.dumps(axes)
        f.attrs["sampler"] = "grid"
        f.attrs["seeds"] = json.dumps([11, 12, 13])
    # refinement: a global stage from the top-3 points, then (optionally) a regional one
    starts = pts[top]
    steps = 25
    target = np.array([opt[name] for name in names])
    logd = np.array([a["scale"] == "log" for a in axes])
    rates = np.array([4.0, 9.0, 6.0])[:dims]  # per-dimension rates: curved trajectories
    tt = 1 - np.exp(-np.arange(steps)[:, None, None] / rates)
    s0 = np.where(logd, np.log(starts), starts)
    ends = np.where(logd, np.log(target), target) * (1 + rng.normal(0, 0.02, (3, dims)))
    traj = s0[None] + tt * (ends - s0)[None]
    traj = np.where(logd, np.exp(traj), traj)
    tr_loss = loss_fn(traj) + rng.normal(0, 0.005, (steps, 3))
    held = np.full((steps, 3), np.nan)
    held[::6] = tr_loss[::6] + 0.02
    rejected = np.zeros((steps, 3), bool)
    rejected[7, 2] = True
    best_start = int(np.argmin(tr_loss[-1]))
    best = {name: float(traj[-1, best_start, i]) for i, name in enumerate(names)}
    sim_fc = np.clip(emp_fc + rng.normal(0, 0.12, (n, n)), -1, 1)
    sim_fc = (sim_fc + sim_fc.T) / 2
    np.fill_diagonal(sim_fc, 1)
    sim_bold = rng.normal(size=(150, n)) @ mix
    stages = {"stage-0-global": 21.5}
    a_reg = np.linspace(-0.2, 0.3, n) + rng.normal(0, 0.05, n)
    with h5py.File(paths["fit_h5"], "w") as f:
        g = f.create_group("stage-0-global")
        g["loss"], g["heldout_loss"] = tr_loss, held
        g["grad_norm"] = np.exp(-np.arange(steps) / 8.0)[:, None] * np.array([1.0, 2.0, 0.5])
        g["rejected"] = rejected
        for i, name in enumerate(names):
            g[f"traj/{name}"] = traj[..., i]
        g.attrs.update(
            best_start=best_start,
            wall_time=21.5,
            heldout_fc_r=0.52,
            heldout_loss=float(np.nanmin(held)),
        )
        if regional:
            s2 = 15
            g = f.create_group("stage-1-regional")
            l2 = tr_loss[-1].min() - 0.05 * (1 - np.exp(-np.arange(s2) / 4.0))
            g["loss"] = l2[:, None] + rng.normal(0, 0.003, (s2, 2))
            h2 = np.full((s2, 2), np.nan)
            h2[-1] = l2[-1] + 0.01
            g["heldout_loss"] = h2
            g["grad_norm"] = np.exp(-np.arange(s2) / 6.0)[:, None] * np.ones(2)
            g["rejected"] = np.zeros((s2, 2), bool)
            g["traj/G"] = np.full((s2, 2), best["G"])
            g["traj/a"] = (
                np.linspace(0, 1, s2)[:, None, None] * a_reg[None, None, :] * np.ones((1, 2, 1))
            )
            g.attrs.update(best_start=0, wall_time=64.0, heldout_fc_r=0.58, heldout_loss=0.29)
            stages["stage-1-regional"] = 64.0
        f["sim_fc"] = sim_fc
        f["sim_bold"] = sim_bold
        if fcd:
            f["sim_fcd"] = _sliding_fcd(sim_bold)
    iu = np.triu_indices(n, 1)
    r_true = float(np.corrcoef(emp_fc[iu], sim_fc[iu])[0, 1])
    ks_one = None
    if fcd:  # the exact KS statistic of the two FCDs, as the report's histogram computes it
        e, s = (np.sort(m[np.triu_indices(len(m), 1)]) for m in map(_sliding_fcd, (bold, sim_bold)))
        grid = np.concatenate([e, s])
        cdf_e, cdf_s = (np.searchsorted(v, grid, "right") / v.size for v in (e, s))
        ks_one = float(np.abs(cdf_e - cdf_s).max())
    rmse = float(np.sqrt(np.mean((emp_fc - sim_fc)[np.triu_indices(n, 1)] ** 2)))
    params = dict(best)
    if regional:
        params["a"] = a_reg.tolist()
    st_metrics = {"stage-0-global": {"fc_r": 0.52 - 0.03 * seed, "loss": float(np.nanmin(held))}}
    if regional:
        st_metrics["stage-1-regional"] = {"fc_r": 0.58 - 0.02 * seed, "loss": 0.29 + 0.01 * seed}
    pj = {
        "subject": subject,
        "params": params,
        "metrics": {
            "fc_r": r_true,
            "fc_rmse": rmse,
            # one held-out seed: the KS of the FCDs in the files; several: their mean differs
            "fcd_ks": None if not fcd else ks_one if np.ndim(heldout_seeds) == 0 else 0.21,
            "stages": st_metrics,
        },
        "wall_time": stages,
        "warnings": list(fit_warnings),
        "provenance": {
            "config_hash": f"cfg{seed:04d}abcdef",
            "versions": {"bnmfit": "0.1.0", "jax": "0.4.35", "numpy": "1.26.4"},
            "seeds": {"explore": [11, 12, 13], "refine": 5, "heldout": heldout_seeds},
            "inputs": inputs,
            "xla_flags": "--xla_backend_extra_options=x_threshold=7",
        },
    }
    paths["params_json"].write_text(json.dumps(pj, indent=2))
    return {
        "paths": paths,
        "json": pj,
        "fc_r": r_true,
        "fc_rmse": rmse,
        "best": best,
        "regional": a_reg if regional else None,
    }


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    subs = {
        "01": make_subject(root, "01", dims=2, seed=1),
        "02": make_subject(root, "02", dims=3, seed=2),
        "03": make_subject(root, "03", dims=1, fcd=False, regional=False, seed=3),
    }
    pages = {}
    for sid, s in subs.items():
        page = report.subject_report(
            sid, **{k: str(v) for k, v in s["paths"].items()}, config=CONFIG
        )
        out = root / f"sub-{sid}" / f"sub-{sid}_report.html"
        out.write_text(page, encoding="utf-8")
        pages[sid] = out
    return root, subs, pages


def _imgs(page: str) -> int:
    return len(re.findall(r"<img\b", page))


# ----------------------------------------------------------------------------- subject


@pytest.mark.slow
@pytest.mark.parametrize("sid", ["01", "02"])
def test_subject_report_has_every_figure_and_the_numbers(cohort, sid):
    root, subs, pages = cohort
    page = pages[sid].read_text(encoding="utf-8")
    s = subs[sid]
    # connectome, FC triptych, scatter, landscape, loss, regional, FCD, BOLD
    assert _imgs(page) == 8
    assert page.count('src="data:image/png;base64,') == 8
    assert f"r = {s['fc_r']:.3f}" in page
    assert f"RMSE = {s['fc_rmse']:.3f}" in page
    for v in s["best"].values():
        assert f"{v:.4g}" in page
    a = s["regional"]
    assert f"{np.mean(a):.4g}" in page  # regional mean ± std
    for sec in ("connectome", "fc", "landscape", "loss", "regional", "fcd", "bold", "provenance"):
        assert f'id="{sec}"' in page and f'href="#{sec}"' in page
    # every figure is there; what files of this age lack is named: validation, SEs
    absent = re.findall(r"<b>Absent:</b> (no [a-z ]+)", page)
    assert absent == ["no validation data", "no standard errors"]
    # provenance: config hash, versions, seeds, checksums, wall times
    assert s["json"]["provenance"]["config_hash"] in page
    assert "jax" in page and "0.4.35" in page
    assert "<code>--xla_backend_extra_options=x_threshold=7</code>" in page
    assert "heldout" in page and "99" in page
    assert "ab" * 32 in page and "resources/sub-01_lengths.tsv" in page
    assert "21.5 s" in page and "64.0 s" in page and "total" in page
    for m in s["json"]["metrics"]["stages"].values():  # held-out FC r per stage
        assert f"<td>{m['fc_r']:.3f}</td>" in page
    # self-contained: nothing fetched from anywhere
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(link|script)[^>]+(src|href)=", page)


def test_subject_report_says_what_is_absent(cohort):
    _, subs, pages = cohort
    page = pages["03"].read_text(encoding="utf-8")
    # no regional stage, no FCD: those two figures are replaced by notes
    assert _imgs(page) == 6
    assert "Absent:</b> no regional stage" in page
    assert "Absent:</b> no FCD" in page
    assert f"{subs['03']['best']['G']:.4g}" in page
    assert 'FCD KS (held-out seed)</div><div class="v">—' in page


def test_subject_report_with_optional_files_missing(cohort):
    _, subs, _ = cohort
    p = subs["01"]["paths"]
    page = report.subject_report(
        "01",
        connectome_h5=p["connectome_h5"],
        empirical_h5=p["empirical_h5"],
        explore_h5=None,
        fit_h5=None,
        params_json=p["params_json"],
        config={},
    )
    # connectome, empirical FC, regional (from the JSON), empirical FCD, empirical BOLD
    assert _imgs(page) == 5
    assert "no exploration landscape" in page
    assert "no refinement stages" in page


def test_reads_files_written_by_bnmfit_io(cohort, tmp_path):
    """The workflow writes results with bnmfit.results.write_h5 (JSON attributes listed in
    ``__json__``, fit-stage scalars possibly as datasets): the report reads those too."""
    from bnmfit import results as h5

    _, subs, _ = cohort
    p = dict(subs["02"]["paths"])
    with h5py.File(p["explore_h5"], "r") as f:
        data = {k: f[k][()] for k in f if k != "names"}
        names = [x.decode() if isinstance(x, bytes) else x for x in f["names"][()]]
        axes = json.loads(f.attrs["axes"])
    h5.write_h5(
        tmp_path / "explore.h5",
        {"names": names, **data},
        {"axes": axes, "sampler": "grid", "seeds": [11, 12, 13]},
    )
    with h5py.File(p["fit_h5"], "r") as f:
        stage = f["stage-0-global"]
        fit = {
            "stage-0-global": {
                "loss": stage["loss"][()],
                "grad_norm": stage["grad_norm"][()],
                "traj": {k: v[()] for k, v in stage["traj"].items()},
                "best_start": 1,
                "wall_time": 12.25,
                "heldout_fc_r": 0.4321,
            },
            "sim_fc": f["sim_fc"][()],
        }
    h5.write_h5(tmp_path / "fit.h5", fit, {"tr": 2.0})
    p["explore_h5"], p["fit_h5"] = tmp_path / "explore.h5", tmp_path / "fit.h5"
    page = report.subject_report("02", **p, config={})
    # connectome, FC, scatter, landscape, loss, regional (JSON), FCD (empirical), BOLD
    assert _imgs(page) == 8
    assert "sampler: grid" in page
    assert "<td>1</td><td>3</td><td>25</td>" in page  # best start (a dataset), starts, steps
    assert "<td>stage-0-global</td><td>0.460</td>" in page  # the JSON's value wins
    assert "no simulated BOLD" in page


def test_missing_file_is_a_data_error(cohort, tmp_path):
    _, subs, _ = cohort
    p = dict(subs["01"]["paths"])
    p["fit_h5"] = tmp_path / "nope_fit.h5"
    with pytest.raises(DataError, match="nope_fit.h5"):
        report.subject_report("01", **p, config={})


def test_write_subject_figures_fixed_set(cohort, tmp_path):
    _, subs, _ = cohort
    for sid in ("01", "03"):
        out = report.write_subject_figures(
            sid, **subs[sid]["paths"], config=CONFIG, outdir=tmp_path / sid
        )
        assert out == list(report.subject_figure_paths(sid, tmp_path / sid).values())
        assert [q.name for q in out] == [
            f"sub-{sid}_desc-{n}_figure.png" for n in report.SUBJECT_FIGURES
        ]
        for q in out:
            assert q.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.rglob(".*.tmp*"))


# ----------------------------------------------------------------------------- cohort


def _cohort(cohort_fixture, config=CONFIG):
    root, subs, _ = cohort_fixture
    ids = list(subs)
    return report.cohort_report(
        ids,
        params_jsons=[subs[s]["paths"]["params_json"] for s in ids],
        fit_h5s=[subs[s]["paths"]["fit_h5"] for s in ids],
        connectome_h5s=[subs[s]["paths"]["connectome_h5"] for s in ids],
        empirical_h5s=[subs[s]["paths"]["empirical_h5"] for s in ids],
        atlases=["Schaefer100", "", ""],
        config=config,
    )


def test_cohort_table_and_page(cohort):
    root, subs, _ = cohort
    page, table = _cohort(cohort)
    assert list(table["subject"]) == ["01", "02", "03"]
    assert list(table.columns) == [
        "subject",
        "atlas",
        "n_regions",
        "tr",
        "G",
        "sigma",
        "velocity",
        "a_mean",
        "a_std",
        "fc_r",
        "fc_rmse",
        "fcd_ks",
        "validation_fc_r",
        "fc_r_ceiling",
        "wall_time_s",
        "flags",
        "config_hash",
    ]
    # files written before validation data and flags: those columns are empty, not made up
    assert table[["validation_fc_r", "fc_r_ceiling"]].isna().all().all()
    assert table["flags"].isna().all() and 'class="flagged"' not in page
    for i, sid in enumerate(subs):
        s = subs[sid]
        assert table.loc[i, "G"] == pytest.approx(s["best"]["G"])
        assert table.loc[i, "fc_r"] == pytest.approx(s["fc_r"])
        assert table.loc[i, "fc_rmse"] == pytest.approx(s["fc_rmse"])
        assert f"{s['fc_r']:.3f}" in page and f"{s['best']['G']:.4g}" in page
        link = f'href="sub-{sid}/sub-{sid}_report.html"'
        assert link in page
        assert (root / f"sub-{sid}" / f"sub-{sid}_report.html").is_file()
    assert np.isnan(table.loc[2, "a_mean"]) and np.isnan(table.loc[0, "velocity"])
    assert table.loc[0, "a_mean"] == pytest.approx(np.mean(subs["01"]["regional"]))
    assert table.loc[0, "wall_time_s"] == pytest.approx(85.5)
    assert np.isnan(table.loc[2, "fcd_ks"])
    # atlas (the sheet's column, else none named), region count and TR of every subject
    assert table["atlas"].iloc[0] == "Schaefer100" and table["atlas"].iloc[1:].isna().all()
    assert list(table["n_regions"]) == [N] * 3 and list(table["tr"]) == [2.0] * 3
    assert "<th>regions</th><th>TR (s)</th>" in page and "Schaefer100" in page
    assert "No subject has warnings." in page
    assert _imgs(page) == 2
    assert 'class="sortable"' in page
    assert "different configs" in page  # each synthetic subject has its own config hash
    # and the table says which config fitted which subject
    assert list(table["config_hash"]) == ["cfg0001abcdef", "cfg0002abcdef", "cfg0003abcdef"]
    assert "<code>cfg0002abcdef</code></td>" in page
    # the table round-trips through the TSV the workflow writes
    tsv = root / "cohort_params.tsv"
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")  # as scripts/cohort_report.py
    back = pd.read_csv(tsv, sep="\t", dtype={"subject": str})
    assert back.shape == table.shape and list(back["subject"]) == ["01", "02", "03"]
    assert list(back.columns[1:4]) == ["atlas", "n_regions", "tr"]
    assert list(back["n_regions"]) == [N] * 3 and back["tr"].tolist() == [2.0] * 3
    assert list(back["config_hash"]) == list(table["config_hash"])
    (root / "cohort_report.html").write_text(page, encoding="utf-8")


def test_cohort_length_mismatch_is_a_config_error(cohort):
    _, subs, _ = cohort
    with pytest.raises(ConfigError, match="one params JSON"):
        report.cohort_report(
            ["01", "02"], params_jsons=[subs["01"]["paths"]["params_json"]], fit_h5s=None, config={}
        )


def test_write_cohort_figures(cohort, tmp_path):
    _, subs, _ = cohort
    ids = list(subs)
    out = report.write_cohort_figures(
        ids,
        params_jsons=[subs[s]["paths"]["params_json"] for s in ids],
        fit_h5s=[None] * 3,
        config={},
        outdir=tmp_path,
    )
    assert [q.name for q in out] == [
        "cohort_desc-params_figure.png",
        "cohort_desc-metrics_figure.png",
    ]
    assert all(q.read_bytes()[:4] == b"\x89PNG" for q in out)


# ----------------------------------------------------------------------------- Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (Debian package `chromium`, "
    "installed by .ci/run); the pages are still built and checked by the tests above",
)

# Injected at the top of <head> of a copy of the page: records script errors, failed
# resources and console.error calls, then on load writes every image's decoded size (and the
# result of clicking the cohort table's fc_r header) into the DOM for --dump-dom.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__errors.push(e.message || ('failed to load ' + ((t && (t.src || t.href)) || '?'))
    .slice(0, 200));
}, true);
var __ce = console.error;
console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, ' ')); __ce.apply(console, arguments);
};
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return {w: i.naturalWidth, h: i.naturalHeight, complete: i.complete};
  });
  var sorted = null, th = Array.prototype.find.call(
    document.querySelectorAll('table.sortable th'), function (h) {
      return h.textContent.trim() === 'fc_r'; });
  if (th) {
    th.click();
    sorted = Array.prototype.map.call(document.querySelectorAll('#cohort-table tbody tr'),
      function (r) { return r.cells[0].textContent.trim(); });
  }
  var pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify({images: imgs, errors: window.__errors, sorted: sorted});
  document.body.appendChild(pre);
});
</script>"""


def _chromium(args, tmp_path):
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'chromium'}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render(page: Path, tmp_path: Path, name: str) -> dict:
    """Load ``page`` in headless Chromium: probe results, console errors, screenshot path."""
    text = page.read_text(encoding="utf-8")
    probed = page.with_name(f".probe-{page.name}")
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    try:
        res = _chromium(["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()], tmp_path)
    finally:
        probed.unlink()
    m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"page did not finish loading in Chromium:\n{res.stderr[-3000:]}"
    probe = json.loads(html.unescape(m.group(1)))
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    shot = tmp_path / f"{name}.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1400,4000", page.as_uri()], tmp_path)
    assert shot.is_file(), res.stderr[-3000:]
    return {"probe": probe, "console": console, "screenshot": shot}


def _check_render(r, n_images):
    probe = r["probe"]
    assert probe["errors"] == [], probe["errors"]
    assert r["console"] == [], r["console"]
    assert len(probe["images"]) == n_images
    for im in probe["images"]:
        assert im["complete"] and im["w"] > 100 and im["h"] > 50, im
    import matplotlib.image

    shot = matplotlib.image.imread(r["screenshot"])
    assert shot.shape[0] >= 1000 and shot.std() > 0.05  # not blank


@needs_chromium
@pytest.mark.parametrize("sid,n_images", [("01", 8), ("02", 8), ("03", 6)])
def test_subject_page_renders_in_chromium(cohort, tmp_path, sid, n_images):
    _, _, pages = cohort
    r = render(pages[sid], tmp_path, f"sub-{sid}_report")
    _check_render(r, n_images)


@needs_chromium
def test_cohort_page_renders_in_chromium(cohort, tmp_path):
    root, subs, _ = cohort
    page, table = _cohort(cohort)
    out = root / "cohort_report.html"
    out.write_text(page, encoding="utf-8")
    r = render(out, tmp_path, "cohort_report")
    _check_render(r, 2)
    by_r = list(table.sort_values("fc_r")["subject"])
    assert r["probe"]["sorted"] == [f"sub-{s}" for s in by_r]


def test_strip_labels_are_spread_apart_in_order_and_stay_near_their_points():
    from bnmfit.report_figures import _spread

    ylim, gap = (0.4, 0.62), 0.075
    step = gap * (ylim[1] - ylim[0])
    y = np.array([0.609, 0.505, 0.595, 0.421, 0.605, 0.533, 0.433])  # W7's held-out r
    placed = _spread(y, ylim, gap)
    order = np.argsort(y)
    assert np.all(np.diff(placed[order]) >= step - 1e-12)  # no two labels overlap
    assert np.all(placed <= ylim[1] - step / 2 + 1e-12)  # none above the axis
    assert placed[1] == y[1] and placed[5] == y[5]  # labels with room stay at their points
    assert np.abs(placed - y).max() < 3 * step
    far = np.array([0.1, 0.5, 0.9])
    np.testing.assert_array_equal(_spread(far, (0.0, 1.0), gap), far)


# ----------------------------------------------------------------------------- issue 24


def _tvb_zip(path: Path, centres: np.ndarray, labels: list[str]) -> Path:
    import zipfile

    n = len(labels)
    w = np.ones((n, n)) - np.eye(n)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("weights.txt", "\n".join(" ".join(map(str, r)) for r in w))
        z.writestr("tract_lengths.txt", "\n".join(" ".join(map(str, r)) for r in 10 * w))
        z.writestr(
            "centres.txt",
            "\n".join(f"{lab} {x} {y} {z}" for lab, (x, y, z) in zip(labels, centres, strict=True)),
        )
    return path


def test_centres_from_a_tvb_zip_and_a_centres_table(tmp_path):
    from bnmfit.io import read_connectome, region_centres

    labels = ["lh-a", "lh-b", "rh-a", "rh-b"]
    xyz = np.array([[-30.0, 10, 20], [-40, -50, 5], [30, 10, 20], [40, -50, 5.5]])
    zp = _tvb_zip(tmp_path / "connectivity_4.zip", xyz, labels)
    _, _, got_labels = read_connectome(zp)
    np.testing.assert_array_equal(region_centres(got_labels, weights=zp), xyz)
    # a centres table (header, any order) wins over the zip, put in the connectome's order
    table = tmp_path / "centres.tsv"
    table.write_text(
        "name\tx\ty\tz\n" + "".join(f"{lab}\t{1 + i}\t0\t0\n" for i, lab in enumerate(labels[::-1]))
    )
    np.testing.assert_array_equal(
        region_centres(labels, weights=zp, centres=table)[:, 0], [4.0, 3.0, 2.0, 1.0]
    )
    table.write_text("label\tx\ty\tz\nlh-a\t1\t2\t3\n")
    with pytest.raises(DataError, match=r"sheet column centres.*none for 3 \(lh-b, rh-a, rh-b\)"):
        region_centres(labels, centres=table)
    assert region_centres(labels) is None  # no source: no centres


def test_centres_are_the_centroids_of_a_dseg(tmp_path):
    import nibabel as nib

    from bnmfit.io import region_centres

    seg = np.zeros((6, 4, 4), np.int16)
    seg[0:2, :, :] = 1  # voxels i = 0, 1
    seg[4:6, 0:2, :] = 3  # i = 4, 5; j = 0, 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, -20.0, 5.0]
    nib.save(nib.Nifti1Image(seg, affine), tmp_path / "atlas_dseg.nii.gz")
    (tmp_path / "atlas_dseg.tsv").write_text("index\tname\n1\tLeft-A\n2\tLeft-Empty\n3\tRight-B\n")
    got = region_centres(
        ["Right-B", "Left-A", "Left-Empty"],
        dseg=tmp_path / "atlas_dseg.nii.gz",
        dseg_tsv=tmp_path / "atlas_dseg.tsv",
    )
    # world = 2 * voxel + offset; centroids (4.5, 0.5, 1.5) and (0.5, 1.5, 1.5) in voxels
    np.testing.assert_allclose(got[0], [-1.0, -19.0, 8.0])
    np.testing.assert_allclose(got[1], [-9.0, -17.0, 8.0])
    assert np.isnan(got[2]).all()  # a region of the table without voxels


def test_connectome_record_keeps_its_warnings_and_centres(tmp_path):
    from bnmfit import results
    from bnmfit.connectome import Connectome

    labels = ["lh-a", "lh-b", "rh-a", "rh-b"]
    raw = np.array([[2.0, 1, 0, 0], [3, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    conn = Connectome.from_arrays(raw, None, labels, normalise="max")
    rec = results.ConnectomeFile.of(
        "07", conn, raw, centres=np.zeros((4, 3)), networks=["Vis"] * 4, provenance={}
    )
    isolated, diagonal, asym = rec.warnings
    assert isolated.startswith("sub-07: 1 region(s) of the SC weights (sheet column sc_weights)")
    assert "rh-b" in isolated and "connectome.isolated" in isolated
    assert "self-connections at 1 of 4 regions (lh-a)" in diagonal
    assert (
        "up to 0.67 of the largest weight, between lh-a and lh-b" in asym
        and "connectome.symmetrise: true" in asym
    )
    rec.write(tmp_path / "c.h5")
    back = results.ConnectomeFile.read(tmp_path / "c.h5")
    assert back.warnings == rec.warnings and back.networks == ["Vis"] * 4
    np.testing.assert_array_equal(back.centres, np.zeros((4, 3)))
    sym = Connectome.from_arrays(raw, None, labels, symmetrise=True)
    assert len(results.ConnectomeFile.of("07", sym, raw, provenance={}).warnings) == 2


def test_grouped_ticks_for_200_regions():
    from bnmfit import report_figures as rf

    labels = [f"{h}_region{i}" for h in ("L", "R") for i in range(100)]
    groups = rf.region_groups(labels)
    assert groups == ["left"] * 100 + ["right"] * 100
    rng = np.random.default_rng(0)
    fc = np.corrcoef(rng.normal(size=(300, 200)).T)
    fig = rf.fc_figure(fc, fc, labels, groups=groups)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["left", "right"]
    assert all(t.get_fontsize() >= 8 for t in ax.get_xticklabels() + ax.get_yticklabels())
    assert "grouped" in ax.get_xlabel()
    # Schaefer labels and a labels table's network column group by network
    schaefer = [
        f"7Networks_{h}_{net}_{i}"
        for h in ("LH", "RH")
        for net in ("Vis", "Default")
        for i in range(50)
    ]
    assert (
        rf.region_groups(schaefer)[0] == "LH Vis" and rf.region_groups(schaefer)[-1] == "RH Default"
    )
    assert rf.region_groups(["a", "b"], ["Vis", "DMN"]) == ["Vis", "DMN"]
    assert rf.region_groups(["a", "b"]) is None
    # few regions: every name, at 8 pt or more
    fig = rf.fc_figure(fc[:12, :12], None, labels[:6] + labels[100:106])
    ticks = fig.axes[0].get_yticklabels()
    assert len(ticks) == 12 and min(t.get_fontsize() for t in ticks) >= 8
    fig = rf.regional_figure({"w": np.arange(200.0)}, labels, None, groups=groups)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["left", "right"]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 100-region subject with centres and warnings, and an FC-only subject."""
    root = tmp_path_factory.mktemp("big")
    labels = [
        f"7Networks_{h}_{net}_{i}"
        for h in ("LH", "RH")
        for net in ("Vis", "SomMot", "DorsAttn", "Default")
        for i in range(1, 13)
    ]
    labels += [f"{h}-subcortex-{i}" for h in ("lh", "rh") for i in range(2)]
    n = len(labels)
    raw = np.abs(np.random.default_rng(5).normal(size=(n, n)))
    raw = raw + raw.T
    np.fill_diagonal(raw, 0.0)
    raw[0, 1] += 1.0  # asymmetric, kept
    subs = {
        "100": make_subject(
            root,
            "100",
            n=n,
            labels=labels,
            centres=brain_centres(labels),
            seed=4,
            raw_weights=raw,
            heldout_seeds=[99, 100, 101],
            fit_warnings=("the fitted parameters give non-finite held-out fc_r",),
        ),
        "fc": make_subject(root, "fc", fc_only=True, regional=False, seed=6),
    }
    pages = {}
    for sid, s in subs.items():
        pages[sid] = root / f"sub-{sid}" / f"sub-{sid}_report.html"
        pages[sid].write_text(
            report.subject_report(sid, **s["paths"], config=CONFIG), encoding="utf-8"
        )
    return root, subs, pages


def test_glass_brain_where_centres_are_known_and_one_line_where_not(big, cohort):
    _, _, pages = big
    page = pages["100"].read_text(encoding="utf-8")
    assert (
        'id="brain"' in page
        and 'alt="sub-100 regional parameters and strongest FC edges on a glass brain"' in page
    )
    page = cohort[2]["01"].read_text(encoding="utf-8")
    section = re.search(r'<section id="brain">(.*?)</section>', page).group(1)
    assert section.count("<p") == 1 and "no region centres" in section and "<img" not in section
    assert "sheet column centres" in section


def test_fc_only_page_says_what_is_absent_and_why(big):
    page = html.unescape(big[2]["fc"].read_text(encoding="utf-8"))
    assert "the FC was given as a matrix in the sheet's fc column, without its BOLD" in page
    assert "Volumes it was computed from: unknown" in page
    assert "No BOLD, so no FCD and no empirical BOLD traces" in page
    assert "Absent:</b> no FCD: the FC was given as a matrix" in page
    assert "the config asked for none" not in page
    assert "empirical (preprocessed)" not in page  # no promise of empirical BOLD traces
    assert "Simulated BOLD of a few regions" in page and "No empirical BOLD: the FC" in page


def test_the_two_ks_numbers_are_labelled(big, cohort):
    page = html.unescape(big[2]["100"].read_text(encoding="utf-8"))
    assert "FCD KS (mean of 3 held-out seeds)</div>" in page
    assert "averages the KS over the fit's 3 held-out seeds" in page
    page = html.unescape(cohort[2]["01"].read_text(encoding="utf-8"))
    assert (
        "FCD KS (held-out seed)</div>" in page
        and "is that of the held-out seed shown (seed 99): the two are the same number" in page
    )


def test_warnings_reach_the_page_the_cohort_and_the_end_of_the_run(big):
    root, subs, pages = big
    page = pages["100"].read_text(encoding="utf-8")
    box = re.search(r'<section id="warnings">(.*?)</section>', page).group(1)
    assert page.index('id="warnings"') < page.index('id="summary"')  # at the top
    assert "sub-100: the SC weights (sheet column sc_weights) are asymmetric" in box
    assert "between 7Networks_LH_Vis_1 and 7Networks_LH_Vis_2" in html.unescape(box)
    assert "sub-100: the fitted parameters give non-finite held-out fc_r" in box
    fc_page = pages["fc"].read_text(encoding="utf-8")
    assert "sub-fc (sheet column fc): resources/sub-fc_fc.tsv: the FC diagonal is 0" in fc_page
    got = report.collect_warnings(["100", "fc", "none"], root)
    assert [len(got[s]) for s in ("100", "fc", "none")] == [2, 1, 0]
    text = report.warnings_summary(["100", "fc", "none"], root)
    lines = text.splitlines()
    assert (
        lines[0]
        == "bnmfit: 3 warning(s) for 2 of 3 subjects (also in their reports and the cohort report):"
    )
    assert lines[1] == "  sub-100:" and lines[2].startswith("    - sub-100: the SC weights")
    assert lines[4] == "  sub-fc:" and "sub-none" not in text
    assert report.warnings_summary(["none"], root) == ""
    ids = list(subs)
    cohort_page, table = report.cohort_report(
        ids,
        params_jsons=[subs[s]["paths"]["params_json"] for s in ids],
        fit_h5s=[subs[s]["paths"]["fit_h5"] for s in ids],
        connectome_h5s=[subs[s]["paths"]["connectome_h5"] for s in ids],
        empirical_h5s=[subs[s]["paths"]["empirical_h5"] for s in ids],
        config=CONFIG,
    )
    box = re.search(r'<section id="warnings">(.*?)</section>', cohort_page).group(1)
    assert "3 warning(s) for 2 of 2 subjects" in box
    assert '<a href="sub-fc/sub-fc_report.html">sub-fc</a>' in box
    assert list(table["n_regions"]) == [100, N] and np.isnan(table["tr"].iloc[1])
    (root / "cohort_report.html").write_text(cohort_page, encoding="utf-8")


def test_atlas_from_the_connectome_inputs():
    def conn(*paths):
        return {"@attrs": {"inputs": {p: "ab" for p in paths}}}

    assert report._atlas(None, conn("d/sub-1_atlas-4S156Parcels_relmat.tsv")) == "4S156Parcels"
    assert report._atlas(None, conn("res/connectivity_76.zip")) == "connectivity_76"
    assert report._atlas("DK", conn("res/connectivity_76.zip")) == "DK"
    assert report._atlas(None, conn("w.tsv")) is None


# ----------------------------------------------------------------------------- issue 23


def _uncertainty(labels, se, identified, seed=0, values=None, n_fit=0):
    """An Uncertainty record of ``labels`` with these SEs (values: random in 0.2–0.8): the
    sandwich of a fit with ``n_fit`` seeds, the Cramér–Rao bound with 0."""
    from bnmfit.uncertainty import Uncertainty

    p = len(labels)
    rng = np.random.default_rng(seed)
    values = np.round(rng.uniform(0.2, 0.8, p), 3) if values is None else values
    a = rng.normal(size=(p, p + 3))
    cov = a @ a.T
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    bad = ~np.isfinite(np.asarray(se, float))
    corr[bad, :] = corr[:, bad] = np.nan
    corr[np.diag_indices(p)] = 1.0
    return Uncertainty(
        labels=tuple(labels),
        values=np.asarray(values, float),
        se=np.asarray(se, float),
        corr=corr,
        scale=np.ones(p),
        identified=np.asarray(identified, bool),
        fraction=0.25,
        runs=2.5,
        n_jacobian=4,
        n_noise=32,
        n_simulations=4 * (1 + p) + 32,
        method="sandwich" if n_fit else "cramer-rao",
        n_fit=n_fit,
    )


#: the flags of a fitted subject (as bnmfit.scoring.fit_flags writes them)
FLAGS = [
    {
        "code": "stage_rejected",
        "message": "stage 'regional' ended worse on the validation data (loss 0.4121 → "
        "0.4388, p = 0.012) and handed on its start",
    },
    {
        "code": "box_edge",
        "message": "best explored point on the edge of the explored box after 1 "
        "extension(s): G hi (3.6, the domain’s end)",
    },
]
#: held-out-noise and validation scores of the fitted subject: (start, end) per stage
STAGE_SCORES = {
    "global": {"fc_r": (0.21, 0.48), "validation_fc_r": (0.18, 0.36), "loss": (0.79, 0.52)},
    "regional": {"fc_r": (0.48, 0.51), "validation_fc_r": (0.36, 0.33), "loss": (0.52, 0.49)},
}


#: a stage's map-start screen (fit.StageRecord.screen) as the fit file keeps it
SCREEN = {
    "spread": 0.75,
    "candidates": 27,
    "start_loss": 0.45,
    "loss": 0.41,
    "rank": 1,
    "handed": False,
    "begin": {"w": [-1.55, 0.75, -0.75]},
}


def make_fitted(root: Path, subject: str, *, n: int = N, flags=FLAGS, **kw) -> dict:
    """A subject whose explore, fit and fitted-parameter files are written by
    bnmfit.results' records, with what issue 23 added: validation data and scores, stage
    verdicts, standard errors, flags, a box extended once beyond G's upper edge."""
    import dataclasses

    from bnmfit import results

    s = make_subject(root, subject, n=n, **kw)
    p = s["paths"]
    labels = results.ConnectomeFile.read(p["connectome_h5"]).labels
    # validation data: the last half of the run
    emp = results.EmpiricalFile.read(p["empirical_h5"])
    rng = np.random.default_rng(7)
    val_fc = np.clip(emp.fc + rng.normal(0, 0.2, emp.fc.shape), -1, 1)
    val_fc = (val_fc + val_fc.T) / 2
    np.fill_diagonal(val_fc, 1.0)
    iu = np.triu_indices(n, 1)
    ceiling = float(np.corrcoef(emp.fc[iu], val_fc[iu])[0, 1])
    source = f"the last 50% of the run: volumes 91–180 of resources/sub-{subject}_bold.tsv"
    dataclasses.replace(
        emp,
        validation=results.ValidationData(val_fc, None, 90, source),
        qc={**emp.qc, "validation": {"source": source, "n_tr": 90, "fc_r_training": ceiling}},
    ).write(p["empirical_h5"])
    # a landscape over G and sigma, extended once beyond G's upper edge
    g, sig = np.linspace(0.5, 3.0, 6), np.geomspace(1e-3, 1e-1, 5)
    g_ext = np.array([3.3, 3.6])
    pts = np.array([[a, b] for a in (*g, *g_ext) for b in sig])
    mean = 0.3 + 0.1 * (pts[:, 0] - 3.6) ** 2 + 0.3 * (np.log10(pts[:, 1]) + 2) ** 2
    loss = mean[:, None] + rng.normal(0, 0.01, (len(pts), 3))
    axes = [
        {"name": "G", "lo": 0.5, "hi": 3.0, "n": 6, "scale": "linear"},
        {"name": "sigma", "lo": 1e-3, "hi": 1e-1, "n": 5, "scale": "log"},
    ]
    spec = results.LossRecord([["fc_corr", 1.0]], 0.0, None)
    top = np.argsort(loss.mean(1))[:2]
    results.Landscape(
        subject=subject,
        names=["G", "sigma"],
        points=pts,
        loss=loss,
        mean_loss=loss.mean(1),
        std_loss=loss.std(1),
        fc_r=0.7 - loss.mean(1) / 2,
        diverged=np.zeros(len(pts), bool),
        top=top,
        axes=axes,
        sampler="grid",
        n_samples=0,
        seeds=[11, 12, 13],
        n_points=30,
        loss_spec=spec,
        n_chunks=2,
        starts=2,
        min_separation=0.1,
        extension_round=np.repeat([0, 1], [30, 10]),
        extend=2,
        extensions=[
            {
                "round": 1,
                "points": 10,
                "faces": [{"axis": "G", "side": "hi", "from": 3.0, "to": 3.6, "domain": True}],
            }
        ],
        edge=[{"axis": "G", "side": "hi", "at": 3.6, "domain": True}],
        provenance={},
    ).write(p["explore_h5"])
    # the fit: a global stage (accepted) and a regional one (rejected: it handed on its start)
    steps, k = 12, 2
    t = np.linspace(0, 1, steps)[:, None]
    starts = pts[top]
    gl = {"G": starts[:, 0] + t * (3.5 - starts[:, 0]), "sigma": starts[:, 1] * (1 + 0 * t)}
    unc = {
        "global": _uncertainty(
            ["G", "sigma"], [0.04, 0.5], [True, False], values=[3.5, 0.01], n_fit=2
        ),
        "regional": _uncertainty(
            [f"w[{x}]" for x in labels],
            [0.03] * (n - 2) + [0.4, np.inf],
            [True] * (n - 2) + [False, False],
            seed=1,
        ),
    }
    acceptance = {  # on the validation data
        "global": {"start_loss": 0.8, "end_loss": 0.62, "p_value": 1.0},
        "regional": {"start_loss": 0.4121, "end_loss": 0.4388, "p_value": 0.012},
    }
    stages, js = [], {}
    for name, sc in STAGE_SCORES.items():
        scores = {}
        for key, (a, b) in sc.items():
            scores[f"start_{key}"], scores[key] = a, b
        kept = name == "regional"
        hist = {
            "loss": 0.5 + 0.3 * (1 - t) * np.ones((1, k)),
            "grad_norm": np.exp(-3 * t) * np.ones((1, k)),
            "rejected": np.zeros((steps, k), bool),
        }
        stages.append(
            results.StageFile(
                name=name,
                optimizer="adam",
                free=["G", "sigma"] if name == "global" else ["w"],
                history=hist,
                selection_loss=np.array([0.5, 0.6]),
                traj=gl if name == "global" else {},
                traj_regional={} if name == "global" else {"w": np.full((steps, k, n), 0.5)},
                best_start=0,
                steps_run=steps,
                n_rejected=0,
                kept_start=kept,
                heldout_fc_r=sc["fc_r"][1],
                heldout_loss=sc["loss"][1],
                scores=scores,
                acceptance={**acceptance[name], "judged_on": "validation", "draws": 32},
                uncertainty=unc[name].to_dict(),
                screen={} if name == "global" else SCREEN,
            )
        )
        js[name] = {**scores, "kept_start": kept, "judged_on": "validation"}
    old = results.read_h5(p["fit_h5"])[0]
    final = {"fc_r": 0.48, "fc_rmse": 0.21, "fcd_ks": 0.3, "loss": 0.52}
    final.update({"validation_fc_r": 0.36, "validation_fc_rmse": 0.25, "validation_loss": 0.64})
    results.FitFile(
        subject=subject,
        stages=stages,
        sim_fc=old["sim_fc"],
        sim_fcd=old.get("sim_fcd"),
        sim_bold=old["sim_bold"],
        sim_bold_raw=old["sim_bold"],
        start_names=["G", "sigma"],
        start_points=starts,
        best_start=0,
        heldout=final,
        heldout_seed=99,
        loss_spec=spec,
        provenance={},
        flags=list(flags),
    ).write(p["fit_h5"])
    js["regional"].update(final)
    params = {"G": 3.5, "sigma": 0.01, "w": unc["regional"].values.tolist()}
    results.FittedParams(
        subject=subject,
        params=params,
        fixed={},
        model="hopf",
        metrics={**final, "stages": js},
        best_start=0,
        starts=[],
        loss={},
        warnings=[],
        provenance={"config_hash": f"cfg-{subject}", "seeds": {"heldout": [99]}},
        flags=list(flags),
        uncertainty={k: u.to_dict() for k, u in unc.items()},
    ).write(p["params_json"])
    page = report.subject_report(subject, **p, config={**CONFIG, "validation": {"level": 0.05}})
    out = root / f"sub-{subject}" / f"sub-{subject}_report.html"
    out.write_text(page, encoding="utf-8")
    return {**s, "page": out, "ceiling": ceiling, "final": final, "unc": unc}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Subjects written by the results module: one with flags, one without, and one of 40
    regions (more regional numbers than a table or an annotated heat map shows)."""
    root = tmp_path_factory.mktemp("fitted")
    return root, {
        "f1": make_fitted(root, "f1", seed=1),
        "f2": make_fitted(root, "f2", flags=[]),
        "f40": make_fitted(root, "f40", n=40, seed=2),
    }


def _section_of(page: Path, anchor: str) -> str:
    text = page.read_text(encoding="utf-8")
    return html.unescape(re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S)[1])


def test_flags_are_at_the_top_of_the_page(fitted, cohort):
    _, subs = fitted
    page = subs["f1"]["page"].read_text(encoding="utf-8")
    assert page.index("<section") == page.index('<section id="flags">')  # first on the page
    box = _section_of(subs["f1"]["page"], "flags")
    assert "2 flag(s)" in box and 'class="ok"' not in box
    for f in FLAGS:
        assert f["message"] in box
    assert box.count('<span class="flag"') == 2
    assert 'title="stage_rejected">stage rejected</span>' in box
    assert 'title="box_edge">box edge</span>' in box
    none = _section_of(subs["f2"]["page"], "flags")
    assert '<p class="ok"><b>No flags.</b>' in none and 'class="flag"' not in none
    # a fit whose files predate flags says so instead of claiming there are none
    old = _section_of(cohort[2]["01"], "flags")
    assert "record no flags" in old and "No flags." not in old


def test_validation_scores_their_source_and_the_ceiling(fitted):
    s = fitted[1]["f1"]
    page = html.unescape(s["page"].read_text(encoding="utf-8"))
    summary = _section_of(s["page"], "summary")
    assert 'FC r (validation)</div><div class="v">0.360</div>' in summary
    assert f'FC r ceiling</div><div class="v">{s["ceiling"]:.3f}</div>' in summary
    assert (
        "Validation data: the last 50% of the run: volumes 91–180 of "
        "resources/sub-f1_bold.tsv (90 volumes)" in summary
    )
    assert f"agree at r = <b>{s['ceiling']:.3f}</b>" in summary
    assert "<tr><td>FC r</td><td>0.480</td><td>0.360</td></tr>" in summary  # noise | validation
    assert "<tr><td>FC RMSE</td><td>0.210</td><td>0.250</td></tr>" in summary
    assert "<tr><td>loss</td><td>0.52</td><td>0.64</td></tr>" in summary
    # every stage: its verdict on its judge, start → end on validation and held-out noise
    assert (
        "<tr><td>global</td><td>validation</td><td>0.8 → 0.62 (32 draws)</td>"
        "<td>accepted (p = 1)</td><td>0.180 → 0.360</td>" in summary
    )
    assert (
        "<td>regional</td><td>validation</td><td>0.4121 → 0.4388 (32 draws)</td>"
        '<td><b class="bad">rejected</b>: handed on its start (p = 0.012)</td>' in summary
    )
    assert "p < validation.level = 0.05" in summary
    assert "validation FC r = 0.360" in page.split("</header>")[0]  # and in the subtitle
    # where a stage that screened map starts began, in one sentence; none for the other
    assert (
        "Stage regional kept its descent from screened map start number 2 of 27 (each "
        "coefficient ± 0.75 around the start it was handed; data loss 0.41 against 0.45 "
        "there): w -1.55, +0.75, -0.75 (intercept first)." in summary
    )
    assert summary.count("screened map start") == 1
    handed = report._screen_note({"name": "m", "screen": {**SCREEN, "handed": True}})
    assert "kept its descent from the start it was handed (number 2 of 27 " in handed


def test_no_validation_data_says_why(cohort, big):
    summary = _section_of(big[2]["fc"], "summary")  # an FC given as a matrix
    assert (
        "no validation data: the FC was given as a matrix in the sheet's fc column, without "
        "its BOLD, which has no volumes to split in time; give a second run's FC in the "
        "sheet's validation_fc column" in summary
    )
    assert "FC r (validation)" not in summary and "Each stage judged" not in summary
    p = cohort[1]["01"]["paths"]
    page = report.subject_report("01", **p, config={**CONFIG, "validation": {"split": 0}})
    assert "no validation data: validation.split is 0 and the sheet names no second run" in (
        html.unescape(page)
    )


def test_standard_errors_with_their_cost_and_heat_maps(fitted):
    _, subs = fitted
    sec = _section_of(subs["f1"]["page"], "uncertainty")
    assert "Stage global: 2 fitted number(s), 1 identified" in sec
    assert "<tr><td>G</td><td>3.5 ± 0.04</td><td>4 %</td><td>yes</td></tr>" in sec
    assert '<td>sigma</td><td>0.01 ± 0.5</td><td>50 %</td><td><b class="bad">no</b></td>' in sec
    assert "Stage regional: 10 fitted number(s), 8 identified" in sec
    w = subs["f1"]["unc"]["regional"].values
    assert f"<td>w[lh-front]</td><td>{w[0]:.4g} ± 0.03</td><td>3 %</td><td>yes</td>" in sec
    assert f"<td>w[rh-occip]</td><td>{w[8]:.4g} ± 0.4</td><td>40 %</td>" in sec
    assert f'<td>w[rh-cingul]</td><td>{w[9]:.4g} ± ∞</td><td>∞</td><td><b class="bad">no</b>' in sec
    assert "Cost: 44 simulations" in sec and "Cost: 76 simulations" in sec  # 4·(1+P) + 32
    # which covariance: the global stage's fit (sandwich), the regional one's bound
    assert "Standard errors: the covariance of this stage's fit with its 2 noise seed(s)" in sec
    assert "Standard errors: the Cramér–Rao bound (a lower bound on the error" in sec
    assert sec.count("<img") == 2
    for stage in ("global", "regional"):
        assert f'alt="sub-f1 correlations of the fitted numbers of stage {stage}"' in sec
    # 40 regional numbers: one row and a figure of them sorted, a heat map without values
    sec = _section_of(subs["f40"]["page"], "uncertainty")
    assert "<td>w (40 numbers: see the figure)</td><td>median SE 0.03</td>" in sec
    assert "<td>38 of 40</td>" in sec and "w[lh-r000]" not in sec
    assert 'alt="sub-f40 w ± standard error per number, stage regional"' in sec
    assert "(more than 30: no values)" in sec and sec.count("<img") == 3


def test_heat_map_values_up_to_30_numbers_and_sorted_standard_errors():
    from bnmfit import report_figures as rf

    u = _uncertainty([f"w[{i}]" for i in range(10)], [0.1] * 9 + [np.inf], [True] * 8 + [0, 0])
    fig = rf.correlation_figure(u.corr, u.labels, u.identified)
    ax = fig.axes[0]
    assert len(ax.texts) == 9 * 9 + 1  # the number without a finite SE: its diagonal only
    colours = [t.get_color() for t in ax.get_yticklabels()]
    assert colours[:8] == ["black"] * 8 and colours[8:] == ["#c0392b"] * 2  # not identified
    labels = [f"w[{i}]" for i in range(60)]  # more names than fit: ticks by group
    fig = rf.correlation_figure(np.eye(60), labels, groups=["a"] * 30 + ["b"] * 30)
    assert len(fig.axes[0].texts) == 0
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]
    fig = rf.se_figure("w", np.arange(40.0)[::-1], np.full(40, 0.5), [True] * 39 + [False])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "identified (39)",
        "not identified (1)",
    ]
    x, y = ax.lines[0].get_data()  # sorted by value
    assert list(y) == sorted(y) and len(y) == 39


def test_landscape_marks_the_box_extension_and_the_original_box(fitted):
    from bnmfit import report_figures as rf
    from bnmfit.results import Landscape

    land = Landscape.read(fitted[1]["f1"]["paths"]["explore_h5"])
    args = (land.names, land.points, land.mean_loss, land.axes)
    ax = rf.landscape_figure(*args, extension_round=land.extension_round).axes[0]
    (ext,) = [ln for ln in ax.lines if ln.get_label() == "box extension"]
    assert ext.get_marker() == "D" and ext.get_markerfacecolor() == "none"
    assert sorted(set(ext.get_xdata())) == [3.3, 3.6] and len(ext.get_xdata()) == 10
    (box,) = [p for p in ax.patches if p.get_label() == "original box"]
    assert (box.get_x(), box.get_x() + box.get_width()) == (0.5, 3.0)
    assert box.get_y() == pytest.approx(1e-3) and box.get_height() == pytest.approx(0.099)
    plain = rf.landscape_figure(*args).axes[0]  # no extension recorded: nothing drawn
    assert not plain.patches and "box extension" not in [ln.get_label() for ln in plain.lines]
    sec = _section_of(fitted[1]["f1"]["page"], "landscape")
    assert "40 points (30 of the box, 10 beyond it) over G, sigma" in sec
    assert "round 1: 10 points beyond G hi (3 → 3.6, the domain’s end)" in sec
    assert "Hollow ◇: points added by extending the box" in sec


def test_cohort_table_has_validation_ceiling_and_flags(fitted, tmp_path):
    root, subs = fitted
    ids = list(subs)
    page, table = report.cohort_report(
        ids,
        params_jsons=[subs[s]["paths"]["params_json"] for s in ids],
        fit_h5s=[subs[s]["paths"]["fit_h5"] for s in ids],
        connectome_h5s=[subs[s]["paths"]["connectome_h5"] for s in ids],
        empirical_h5s=[subs[s]["paths"]["empirical_h5"] for s in ids],
        config=CONFIG,
    )
    cols = list(table.columns)
    assert cols[cols.index("fcd_ks") :] == [
        "fcd_ks",
        "validation_fc_r",
        "fc_r_ceiling",
        "wall_time_s",
        "flags",
        "config_hash",
    ]
    assert table["validation_fc_r"].tolist() == [0.36] * 3
    assert table["fc_r_ceiling"].tolist() == pytest.approx([subs[s]["ceiling"] for s in ids])
    assert table["flags"].tolist() == ["stage_rejected;box_edge", "", "stage_rejected;box_edge"]
    # the page: flagged subjects' rows shaded, their flags named; validation r per stage
    assert page.count('<tr class="flagged">') == 2
    assert '<tr><td data-v="sub-f2">' in page and "2 of 3 subjects have flags" in page
    stage = re.search(r"<h3>Validation FC r per stage</h3>(<table.*?</table>)", page)[1]
    assert "<td>0.360</td><td>0.360</td>" in stage  # global, regional
    # the TSV as scripts/cohort_report.py writes it: "" is no flag, n/a is not recorded
    tsv = tmp_path / "cohort_params.tsv"
    table.to_csv(tsv, sep="\t", index=False, na_rep="n/a")
    back = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    assert back["flags"].tolist() == ["stage_rejected;box_edge", "", "stage_rejected;box_edge"]
    assert back["fc_r_ceiling"].astype(float).tolist() == pytest.approx(
        table["fc_r_ceiling"].tolist()
    )


@needs_chromium
def test_fitted_page_renders_in_chromium(fitted, tmp_path):
    # connectome, FC, scatter, landscape, loss, regional, FCD, BOLD and two heat maps
    _check_render(render(fitted[1]["f1"]["page"], tmp_path, "sub-f1_report"), 10)


# ----------------------------------------------------------------------------- evolution


def _evolved(tmp_path, sampler: str, dims: int = 3):
    """The landscape file of a 4-generation search of 6 candidates over ``dims`` axes
    (loss shrinking towards the middle of the box, one candidate diverged), written and
    gathered through bnmfit.results as the workflow does; ``sampler`` sobol: a fixed space."""
    from bnmfit import explore, results
    from bnmfit.losses import LossSpec

    axes = (
        explore.Axis("G", 0.0, 2.0),
        explore.Axis("w", 0.01, 10.0, scale="log"),
        explore.Axis("I_o", 0.2, 0.5),
    )[:dims]
    strategy = explore.Strategy(population=6, generations=4, objectives=("fc_corr", "fcd_ks"))
    space = explore.Space(axes, sampler, n_samples=24, seed=0, strategy=strategy)
    rng = np.random.default_rng(0)
    generation = np.repeat(np.arange(4), 6)
    u = 0.5 + (rng.uniform(-0.5, 0.5, (24, dims)) / (1 + generation[:, None]))
    points = np.stack([a.from_unit(u[:, d]) for d, a in enumerate(axes)], axis=1)
    loss = ((u - 0.5) ** 2).sum(1)
    loss[7] = np.inf
    objectives = np.c_[loss, ((u[:, :1] - 0.2) ** 2).sum(1)]
    objectives[7] = np.inf
    front = np.array(
        [
            i
            for i in range(24)
            if np.isfinite(objectives[i]).all()
            and not any(
                (objectives[j] <= objectives[i]).all() and (objectives[j] < objectives[i]).any()
                for j in range(24)
            )
        ]
    )
    res = explore.ExploreResult(
        names=tuple(a.name for a in axes),
        points=points,
        seeds=np.array([0, 1]),
        loss=np.repeat(loss[:, None], 2, axis=1),
        mean_loss=loss,
        std_loss=np.zeros(24),
        fc_r=1 - loss,
        diverged=~np.isfinite(loss),
    )
    if sampler in explore.EVOLUTIONARY:
        finite = np.where(np.isfinite(loss), loss, np.nan).reshape(4, 6)
        res.generations = explore.Generations(
            generation=generation,
            best_loss=np.nanmin(finite, axis=1),
            mean_loss=np.nanmean(finite, axis=1),
            sigma=0.5 ** np.arange(4.0) if sampler == "cmaes" else np.full(4, np.nan),
            population=6,
            stop="budget" if sampler == "cmaes" else "generations",
            objective_names=("fc_corr", "fcd_ks") if sampler == "nsga2" else (),
            objectives=objectives if sampler == "nsga2" else np.zeros((24, 0)),
            front=front if sampler == "nsga2" else np.zeros(0, np.int64),
        )
    chunk = tmp_path / "chunk-0.h5"
    results.ExploreChunk.of(
        res,
        subject="01",
        space=space,
        index=np.arange(24),
        chunk=0,
        n_chunks=1,
        spec=LossSpec((("fc_corr", 1.0),), 0.0, None),
        provenance={"config_hash": "0123456789abcdef"},
    ).write(chunk)
    land = results.Landscape.gather(
        [results.ExploreChunk.read(chunk)],
        [chunk],
        starts=2,
        min_separation=0.1,
        config_hash="fedcba9876543210",
    )
    path = tmp_path / "sub-01_explore.h5"
    land.write(path)
    return land, path


@pytest.mark.parametrize(
    ("sampler", "dims", "figures", "stop"),
    [
        ("cmaes", 3, 1, "one more generation would have passed the budget"),
        ("cmaes", 1, 1, "one more generation would have passed the budget"),
        ("nsga2", 2, 2, "it ran all its generations"),
        ("sobol", 2, 0, None),
    ],
)
def test_an_evolutionary_exploration_gets_its_section(tmp_path, sampler, dims, figures, stop):
    """CMA-ES: the loss per generation (and σ) with the population; NSGA-II also its Pareto
    front; both say why they stopped; a fixed space has no such section."""
    land, path = _evolved(tmp_path, sampler, dims)
    page = report.subject_report(
        "01",
        connectome_h5=None,
        empirical_h5=None,
        explore_h5=path,
        fit_h5=None,
        params_json=None,
        config={},
    )
    assert _imgs(page) == 1 + figures  # the landscape, then the section's own
    assert page.count("evolutionary exploration by generation") == min(figures, 1)
    assert page.count("NSGA-II Pareto front") == (figures == 2)
    if stop is None:
        assert "Evolutionary exploration" not in page and "stopped after" not in page
        return
    assert 'id="evolution"' in page
    assert "Best explored points (refinement starts)" in page  # not "of the grid"
    assert (
        f"{sampler} stopped after 4 generations of 6 candidates (24 points × 2 noise seeds = "
        f"48 simulations) because {stop}"
    ) in page
    assert land.evolution is not None and land.top[0] != 7
