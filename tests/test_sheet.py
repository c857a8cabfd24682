"""The sheet maker (bnmfit.sheet, scripts/make_sheet.py) on BIDS-named fake derivative trees
(QSIRecon .mat, XCP-D time series and relmats), the HCP layout and TVB zips: which files
become which sheet columns, what is reported when a subject cannot be paired, and that the
written sheet is read by the workflow's sheet reader and its files by bnmfit.io."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from bnmfit.config import check_subject_files, load_subjects
from bnmfit.errors import ConfigError, DataError
from bnmfit.io import read_bold, read_connectome
from bnmfit.sheet import make_sheet, write_sheet
from tests.test_io import LABELS, _parcels, _timeseries, _ts_text, _tvb_zip, sym

ROOT = Path(__file__).resolve().parents[1]
SPACE = "space-MNI152NLin6Asym"
AAL = ["x", "y", "z"]


def _mat(path: Path) -> Path:
    """A QSIRecon-like *_connectivity.mat: 4S156Parcels (two weights measures, one length
    measure, 4 regions) and AAL116 (one count measure, 3 regions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = sym()
    scipy.io.savemat(
        path,
        {
            "atlas_4S156Parcels_region_ids": np.arange(1, 5),
            "atlas_4S156Parcels_region_labels": np.array(LABELS, dtype=object),
            "atlas_4S156Parcels_sift_invnodevol_radius2_count_connectivity": m,
            "atlas_4S156Parcels_radius2_count_connectivity": 2 * m,
            "atlas_4S156Parcels_radius2_meanlength_connectivity": 10 * m,
            "atlas_AAL116_region_ids": np.arange(1, 4),
            "atlas_AAL116_region_labels": np.array(AAL, dtype=object),
            "atlas_AAL116_radius2_count_connectivity": np.ones((3, 3)) - np.eye(3),
            "command": "tck2connectome ...",
        },
        long_field_names=True,
    )
    return path


def _series(folder: Path, source: str, *, tr: float | None = 2.0, seed: int = 0) -> None:
    """XCP-D outputs of one run: time series and relmat for both atlases, and the denoised
    BOLD's sidecar with the TR (the time series have none of their own)."""
    folder.mkdir(parents=True, exist_ok=True)
    for atlas, labels in (("4S156Parcels", LABELS), ("AAL116", AAL)):
        x = _timeseries(t=30, n=len(labels), seed=seed)
        stem = f"{source}_{SPACE}_atlas-{atlas}"
        (folder / f"{stem}_stat-mean_timeseries.tsv").write_text(_ts_text(x, labels))
        fc = np.corrcoef(x.T)
        rows = ["Node\t" + "\t".join(labels)]
        rows += [
            lab + "\t" + "\t".join(f"{v:.6f}" for v in r) for lab, r in zip(labels, fc, strict=True)
        ]
        (folder / f"{stem}_stat-pearsoncorrelation_relmat.tsv").write_text("\n".join(rows) + "\n")
        (folder / f"{stem}_stat-coverage_bold.tsv").write_text("\t".join(labels) + "\n1\t1\t1\n")
    if tr is not None:
        side = folder / f"{source}_{SPACE}_desc-denoised_bold.json"
        side.write_text(json.dumps({"RepetitionTime": tr}))


@pytest.fixture
def bids(tmp_path) -> Path:
    """sub-01: one SC, two runs; sub-02: SC and one run in each of two sessions; sub-03: SC
    only (its time series missing); sub-04: three runs (run-1, run-2, run-10); sub-05: time
    series only (its SC missing)."""
    q, x = tmp_path / "qsirecon", tmp_path / "xcp_d"
    _mat(q / "sub-01/dwi/sub-01_space-T1w_desc-preproc_connectivity.mat")
    for ses in ("1", "2"):
        _mat(q / f"sub-02/ses-{ses}/dwi/sub-02_ses-{ses}_space-T1w_connectivity.mat")
        _series(x / f"sub-02/ses-{ses}/func", f"sub-02_ses-{ses}_task-rest", seed=int(ses))
    _mat(q / "sub-03/dwi/sub-03_space-T1w_connectivity.mat")
    _mat(q / "sub-04/dwi/sub-04_space-T1w_connectivity.mat")
    for run in ("1", "2"):
        _series(x / "sub-01/func", f"sub-01_task-rest_run-{run}", seed=int(run))
    for run in ("10", "2", "1"):
        _series(x / "sub-04/func", f"sub-04_task-rest_run-{run}", tr=None)
    _series(x / "sub-05/func", "sub-05_task-rest")
    (x / "sub-03/func").mkdir(parents=True)
    _series(x / "sub-01/func", "sub-01_task-nback_run-1", seed=7)  # another task: not used
    return tmp_path


def _by_subject(sheet) -> dict:
    return {p.subject: p for p in sheet.subjects}


def _sheet(root: Path, **kw):
    return make_sheet(
        bids_sc=root / "qsirecon",
        bids_func=root / "xcp_d",
        base=root,
        **{"atlas": "4S156Parcels", "measure": "sift_invnodevol_radius2_count", **kw},
    )


def test_bids_runs_sessions_and_missing_files(bids):
    got = _by_subject(_sheet(bids, tr=1.5))
    ts = f"{SPACE}_atlas-4S156Parcels_stat-mean_timeseries.tsv"
    # two runs: the first is bold, the second validation_bold; the TR of their *_bold.json
    assert dict(got["01"].row) == {
        "subject": "01",
        "sc_weights": "qsirecon/sub-01/dwi/sub-01_space-T1w_desc-preproc_connectivity.mat",
        "sc_lengths": "qsirecon/sub-01/dwi/sub-01_space-T1w_desc-preproc_connectivity.mat",
        "atlas": "4S156Parcels",
        "measure": "sift_invnodevol_radius2_count",
        "lengths_measure": "radius2_meanlength",
        "bold": f"xcp_d/sub-01/func/sub-01_task-rest_run-1_{ts}",
        "validation_bold": f"xcp_d/sub-01/func/sub-01_task-rest_run-2_{ts}",
        "tr": 1.5,  # --tr is explicit: it wins over the *_bold.json of the run
    }
    # two sessions: ses-1 bold, ses-2 validation; the SC of the first session
    r2 = got["02"].row
    assert r2["sc_weights"] == "qsirecon/sub-02/ses-1/dwi/sub-02_ses-1_space-T1w_connectivity.mat"
    assert r2["bold"] == f"xcp_d/sub-02/ses-1/func/sub-02_ses-1_task-rest_{ts}"
    assert r2["validation_bold"] == f"xcp_d/sub-02/ses-2/func/sub-02_ses-2_task-rest_{ts}"
    assert "SC of ses-1 used; not used: ses-2" in got["02"].notes
    # three runs in natural order (run-10 last), the third reported as not used
    assert got["04"].row["bold"].endswith(f"_run-1_{ts}")
    assert got["04"].row["validation_bold"].endswith(f"_run-2_{ts}")
    assert (
        "3 runs: used task-rest_run-1 (bold) and task-rest_run-2 (validation_bold); "
        "not used: task-rest_run-10" in got["04"].notes
    )
    # a missing file: reported with what was found, and no row
    assert not got["03"].paired and got["03"].missing == "no time series or FC found (task-rest)"
    assert got["03"].found == ("qsirecon/sub-03/dwi/sub-03_space-T1w_connectivity.mat",)
    assert not got["05"].paired and got["05"].missing == "no structural connectome found (SC)"
    assert any("sub-05_task-rest_" in f for f in got["05"].found)


def test_tr_from_the_runs_bold_json_or_a_note(bids):
    got = _by_subject(_sheet(bids))
    assert got["01"].row["tr"] == 2.0
    assert (
        "TR 2 s of task-rest_run-1 from sub-01_task-rest_run-1_"
        + SPACE
        + ("_desc-denoised_bold.json")
        in got["01"].notes
    )
    assert "tr" not in got["04"].row  # sub-04 has no *_bold.json: paired, with a note
    side = bids / "xcp_d/sub-01/func" / f"sub-01_task-rest_run-2_{SPACE}_desc-denoised_bold.json"
    side.write_text(json.dumps({"RepetitionTime": 2000}))  # milliseconds: refused as io does
    assert "got 2000, almost certainly milliseconds" in _by_subject(_sheet(bids))["01"].missing
    assert any(
        n.startswith("no TR for xcp_d/sub-04/func/") and "--tr" in n for n in got["04"].notes
    )


def test_atlas_and_measure_selection(bids):
    # no atlas: the .mat holds two and the time series come in two; nothing is guessed
    p = _by_subject(_sheet(bids, atlas=None, measure=None))["01"]
    assert not p.paired
    assert p.missing == (
        "qsirecon/sub-01/dwi/sub-01_space-T1w_desc-preproc_connectivity.mat: more than one atlas "
        "(4S156Parcels, AAL116); choose one with --atlas; sub-01 task-rest_run-1: 2 time series "
        "differing in atlas (4S156Parcels, AAL116; choose with --func-atlas (or --atlas))"
    )
    # 4S156Parcels has two weights measures: the one to use must be named
    p = _by_subject(_sheet(bids, measure=None))["01"]
    assert p.missing.endswith(
        ": more than one weights measure (radius2_count, sift_invnodevol_radius2_count); "
        "choose one with --measure"
    )
    # AAL116: its only count measure, no length measure (no sc_lengths), its time series
    got = _by_subject(_sheet(bids, atlas="AAL116", measure=None))
    row = got["01"].row
    assert row["atlas"] == "AAL116" and row["measure"] == "radius2_count"
    assert "sc_lengths" not in row and "lengths_measure" not in row
    assert "_atlas-AAL116_stat-mean_timeseries.tsv" in row["bold"]
    assert any("no tract-length measure for atlas AAL116" in n for n in got["01"].notes)
    p = _by_subject(_sheet(bids, atlas="Schaefer"))["01"]
    assert "no atlas 'Schaefer' (there are 4S156Parcels, AAL116); check --atlas" in p.missing


def test_variants_of_a_run_are_chosen_by_match(bids):
    # the same run in a second space: two variants of one run, reported with the option
    for run in ("1", "2"):
        src = (
            bids
            / "xcp_d/sub-01/func"
            / (f"sub-01_task-rest_run-{run}_{SPACE}_atlas-4S156Parcels_stat-mean_timeseries.tsv")
        )
        src.with_name(src.name.replace(SPACE, "space-fsLR")).write_text(src.read_text())
    p = _by_subject(_sheet(bids))["01"]
    assert not p.paired
    assert p.missing == (
        "sub-01 task-rest_run-1: 2 time series differing in space (fsLR, MNI152NLin6Asym; "
        "choose with --match space-<label>)"
    )
    row = _by_subject(_sheet(bids, match=["space-fsLR"]))["01"].row
    assert "space-fsLR" in row["bold"] and "space-fsLR" in row["validation_bold"]
    with pytest.raises(ConfigError, match="--match 'space=fsLR': expected an entity as key-label"):
        _sheet(bids, match=["space=fsLR"])


def test_a_tsv_is_preferred_to_its_cifti_copy_and_bad_files_are_reported(bids):
    ts = (
        bids
        / "xcp_d/sub-01/func"
        / (f"sub-01_task-rest_run-1_{SPACE}_atlas-4S156Parcels_stat-mean_timeseries.tsv")
    )
    ts.with_name(ts.name.replace(".tsv", ".ptseries.nii")).write_bytes(b"x")  # same variant
    (bids / "qsirecon/sub-04/dwi/sub-04_space-T1w_connectivity.mat").write_bytes(b"not a mat")
    got = _by_subject(_sheet(bids))
    assert got["01"].row["bold"].endswith("_run-1_" + ts.name.split("_run-1_")[1])
    assert not got["04"].paired
    assert "sub-04_space-T1w_connectivity.mat: expected a MATLAB .mat file" in got["04"].missing
    assert got["02"].paired  # one subject's bad file leaves the others alone


def test_fc_when_there_are_no_time_series(bids):
    for p in (bids / "xcp_d/sub-01/func").glob("*_timeseries.tsv"):
        p.unlink()
    row = _by_subject(_sheet(bids))["01"].row
    assert "bold" not in row
    assert row["fc"].endswith(
        "run-1_" + SPACE + "_atlas-4S156Parcels_stat-pearsoncorrelation_relmat.tsv"
    )
    assert row["validation_fc"].endswith(
        "run-2_" + SPACE + "_atlas-4S156Parcels_stat-pearsoncorrelation_relmat.tsv"
    )


def test_written_sheet_is_read_by_the_workflow_and_io(bids, monkeypatch):
    sheet = _sheet(bids)
    out = bids / "subjects.tsv"
    rows = write_sheet(sheet, out)
    assert [r["subject"] for r in rows] == ["01", "02", "04"]
    loaded = load_subjects(out)
    assert loaded == rows
    check_subject_files(loaded, base=bids)
    header = out.read_text().splitlines()[0].split("\t")
    assert header == [
        "subject", "sc_weights", "sc_lengths", "bold", "validation_bold", "tr", "atlas",
        "measure", "lengths_measure",
    ]  # fmt: skip
    monkeypatch.chdir(bids)  # the paths are relative to the base directory
    for row in loaded:
        w, ln, labels = read_connectome(
            row["sc_weights"], row["sc_lengths"], atlas=row["atlas"], measure=row["measure"],
            lengths_measure=row["lengths_measure"],
        )  # fmt: skip
        assert labels == LABELS and np.allclose(ln, 10 * w)
        for col in ("bold", "validation_bold"):
            b = read_bold(row[col], tr=row.get("tr", 1.0))  # sub-04's runs have no TR
            assert b.labels == LABELS and b.tr == (2.0 if row["subject"] != "04" else 1.0)
    with pytest.raises(DataError, match="expected at least one subject with both SC and time"):
        write_sheet(_sheet(bids, task="nothing"), bids / "none.tsv")
    assert not (bids / "none.tsv").exists()


def test_hcp_layout(tmp_path):
    import nibabel as nib

    def ptseries(path: Path, tr: float = 0.72) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        series = nib.cifti2.SeriesAxis(0.0, tr, 20, "SECOND")
        img = nib.Cifti2Image(
            _timeseries(t=20), nib.cifti2.Cifti2Header.from_axes((series, _parcels(LABELS)))
        )
        nib.save(img, path)

    hcp = tmp_path / "HCP"
    for subject in ("100307", "100408"):
        for run in ("rfMRI_REST1_LR", "rfMRI_REST1_RL", "rfMRI_REST2_LR", "rfMRI_REST2_RL"):
            ptseries(
                hcp
                / subject
                / "MNINonLinear/Results"
                / run
                / f"{run}_Atlas_MSMAll.Glasser.ptseries.nii"
            )
    conn = hcp / "100307/connectome"
    conn.mkdir()
    par = _parcels(LABELS)
    nib.save(
        nib.Cifti2Image(sym(), nib.cifti2.Cifti2Header.from_axes((par, par))),
        conn / "100307_Glasser_weights.pconn.nii",
    )
    (conn / "100307_Glasser_lengths.tsv").write_text(
        "\n".join("\t".join(str(v) for v in r) for r in 10 * sym()) + "\n"
    )
    (hcp / "100307_old" / "MNINonLinear" / "Results").mkdir(parents=True)  # not a label
    (hcp / "100307/MNINonLinear/Results/rfMRI_REST3_AP").mkdir()  # not parcellated
    sheet = make_sheet(hcp=hcp, base=tmp_path)
    got = _by_subject(sheet)
    res = "HCP/100307/MNINonLinear/Results"
    assert dict(got["100307"].row) == {
        "subject": "100307",
        "sc_weights": "HCP/100307/connectome/100307_Glasser_weights.pconn.nii",
        "sc_lengths": "HCP/100307/connectome/100307_Glasser_lengths.tsv",
        "bold": f"{res}/rfMRI_REST1_LR/rfMRI_REST1_LR_Atlas_MSMAll.Glasser.ptseries.nii",
        "validation_bold": f"{res}/rfMRI_REST2_LR/rfMRI_REST2_LR_Atlas_MSMAll.Glasser.ptseries.nii",
    }  # REST1 → bold, REST2 → validation_bold; the TR is in the CIFTI header
    assert got["100307"].notes == (
        "no .ptseries.nii in rfMRI_REST3_AP",
        "4 runs: used rfMRI_REST1_LR (bold) and rfMRI_REST2_LR (validation_bold); not used: "
        "rfMRI_REST1_RL, rfMRI_REST2_RL",
    )
    assert got["100408"].missing == "no structural connectome found (SC)"
    assert "(left out, not a label of letters and digits: 100307_old)" in sheet.sources[0]
    # two parcellations in a run folder: chosen by a part of the name
    for run in ("rfMRI_REST1_LR", "rfMRI_REST2_LR"):
        ptseries(
            hcp / "100307/MNINonLinear/Results" / run / f"{run}_Atlas_MSMAll.Gordon.ptseries.nii"
        )
    assert "choose one with --func-atlas" in _by_subject(make_sheet(hcp=hcp))["100307"].missing
    row = _by_subject(make_sheet(hcp=hcp, func_atlas="Gordon", base=tmp_path))["100307"].row
    assert row["bold"].endswith("REST1_LR_Atlas_MSMAll.Gordon.ptseries.nii")
    out = tmp_path / "hcp.tsv"
    write_sheet(make_sheet(hcp=hcp, func_atlas="Glasser", base=tmp_path), out)
    (loaded,) = load_subjects(out)
    w, ln, labels = read_connectome(
        tmp_path / loaded["sc_weights"], tmp_path / loaded["sc_lengths"]
    )
    assert labels == LABELS and w.shape == ln.shape == (4, 4)
    assert read_bold(tmp_path / loaded["validation_bold"]).tr == pytest.approx(0.72)


def test_tvb_zips_with_a_flat_folder_of_time_series(tmp_path):
    tvb, func = tmp_path / "tvb", tmp_path / "func"
    tvb.mkdir()
    func.mkdir()
    for subject in ("01", "02", "03"):
        _tvb_zip(tvb / f"{subject}_connectivity76.zip", sym(), 10 * sym(seed=1))
    x = _timeseries(t=30)
    (func / "01_rest_b.tsv").write_text(_ts_text(x, LABELS))  # plain names: name order
    (func / "01_rest_a.tsv").write_text(_ts_text(x, LABELS))
    (func / "sub-02_task-rest_timeseries.tsv").write_text(_ts_text(x, LABELS))  # BIDS-named
    (func / "notes.txt").write_text("not a subject\n")
    sheet = make_sheet(tvb=tvb, func=func, tr=2.0, base=tmp_path)
    assert sheet.sources[1].endswith(
        "3 time series and 0 FC files (task-rest) of 2 subjects; 1 files left out: their names "
        "start with no subject label of the SC"
    )  # notes.txt
    got = _by_subject(sheet)
    assert sorted(got) == ["01", "02", "03"]
    assert dict(got["01"].row) == {
        "subject": "01",
        "sc_weights": "tvb/01_connectivity76.zip",
        "sc_lengths": "tvb/01_connectivity76.zip",
        "sc_format": "tvb",
        "bold": "func/01_rest_a.tsv",
        "validation_bold": "func/01_rest_b.tsv",
        "tr": 2.0,
    }
    assert got["02"].row["bold"] == "func/sub-02_task-rest_timeseries.tsv"
    assert got["03"].missing == "no time series or FC found (task-rest)"
    assert got["03"].found == ("tvb/03_connectivity76.zip",)
    row = got["01"].row
    w, ln, labels = read_connectome(
        tmp_path / row["sc_weights"], tmp_path / row["sc_lengths"], fmt="tvb"
    )
    np.testing.assert_allclose(ln, 10 * sym(seed=1))
    assert labels == LABELS


def test_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="expected a folder of time series, got none; give"):
        make_sheet(tvb=tmp_path)
    with pytest.raises(ConfigError, match="expected a folder of structural connectomes, got none"):
        make_sheet(func=tmp_path)
    with pytest.raises(ConfigError, match="--hcp .*nope: expected a folder, got no such folder"):
        make_sheet(hcp=tmp_path / "nope")
    with pytest.raises(DataError, match="expected subjects in the folders, got no file"):
        write_sheet(make_sheet(tvb=tmp_path, func=tmp_path), tmp_path / "s.tsv")


def test_script_end_to_end(bids):
    """The command as a user runs it: from the base directory, exit 0, the report printed."""
    cmd = [
        sys.executable, str(ROOT / "scripts" / "make_sheet.py"), "--bids-sc", "qsirecon",
        "--bids-func", "xcp_d", "--atlas", "4S156Parcels", "--measure",
        "sift_invnodevol_radius2_count", "--output", "subjects.tsv",
    ]  # fmt: skip
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run(cmd, cwd=bids, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "sub-01: paired: sc_weights qsirecon/sub-01/dwi/" in r.stderr
    assert "sub-03: not paired: no time series or FC found (task-rest); found qsirecon/" in r.stderr
    assert "3 of 5 subjects paired" in r.stderr
    assert [row["subject"] for row in load_subjects(bids / "subjects.tsv")] == ["01", "02", "04"]


def test_script_messages(bids, monkeypatch):
    """Help with an example; nothing to pair: exit 1, one error line, no sheet written; no
    time-series folder: exit 2."""
    from tests.test_scripts import error_line, run

    assert "python scripts/make_sheet.py --bids-sc" in run("make_sheet", ["-h"]).output
    monkeypatch.chdir(bids)
    args = ["--bids-sc", "qsirecon", "--bids-func", "xcp_d", "--atlas", "4S156Parcels"]
    r = run("make_sheet", [*args, "--task", "movie", "-o", "x.tsv"])
    assert r.exit_code == 1 and "got none of 4 found" in error_line(r)
    assert not (bids / "x.tsv").exists()
    r = run("make_sheet", args[:2])
    assert r.exit_code == 2
    assert error_line(r) == (
        "Error: expected a folder of time series, got none; give --bids-func, --hcp or --func"
    )


def test_example_cohort_sheet_equals_the_bundled_one(tmp_path):
    """The bundled cohort's layout (XCP-D-style relmats and time series with sidecars) gives
    config/subjects.tsv byte for byte."""
    sheet = make_sheet(bids_sc=ROOT / "resources", bids_func=ROOT / "resources", base=ROOT)
    write_sheet(sheet, tmp_path / "subjects.tsv")
    bundled = (ROOT / "config" / "subjects.tsv").read_bytes()
    assert (tmp_path / "subjects.tsv").read_bytes() == bundled
