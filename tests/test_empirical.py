"""bnmfit.empirical: empirical FC/FCD through the shared observables, NaN handling, QC."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from bnmfit import observables
from bnmfit.empirical import EmpiricalFC, empirical_fc
from bnmfit.errors import ConfigError, DataError

LABELS = ["V1", "M1", "PCC", "mPFC", "Ins"]
# one length for (almost) every processed series: JAX compiles once per shape
T = 60


def mixed_bold(t: int = T, n: int = 5, seed: int = 0) -> np.ndarray:
    """BOLD with known shared components plus a drift and an offset per region."""
    rng = np.random.default_rng(seed)
    sources = rng.standard_normal((t, 2))
    mix = rng.uniform(-1, 1, (2, n))
    x = sources @ mix + 0.5 * rng.standard_normal((t, n))
    return x + np.linspace(0, 3, t)[:, None] + 100.0


def _one_line(ei):
    msg = str(ei.value)
    assert "\n" not in msg and "expected" in msg and "got" in msg and ";" in msg, msg


def test_same_processing_as_observables():
    x = mixed_bold(t=T + 5)
    e = empirical_fc(x, 0.72, discard=5, bandpass=(0.01, 0.2), fcd_window=20, fcd_step=5)
    assert isinstance(e, EmpiricalFC)
    y = np.asarray(observables.preprocess(x, 0.72, discard=5, bandpass=(0.01, 0.2)))
    np.testing.assert_allclose(e.bold, y, atol=1e-12)
    np.testing.assert_allclose(e.fc, np.asarray(observables.fc(y)), atol=1e-12)
    np.testing.assert_allclose(e.fcd, np.asarray(observables.fcd(y, 20, 5)), atol=1e-12)
    assert e.fcd.shape == (observables.n_windows(T, 20, 5),) * 2
    assert e.bold.shape == (T, 5) and e.fc.dtype == np.float64
    # detrended and z-scored: the drift and offsets are gone
    np.testing.assert_allclose(e.bold.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(e.bold.std(0), 1, atol=1e-12)


def test_fc_against_numpy_and_qc():
    x = mixed_bold()
    e = empirical_fc(x, 2.0, detrend=True)
    expected = np.corrcoef(scipy.signal.detrend(x, axis=0), rowvar=False)
    np.testing.assert_allclose(e.fc, expected, atol=1e-10)
    iu = np.triu_indices(5, 1)
    qc = e.qc
    assert qc["n_tr_used"] == T and qc["n_regions"] == 5 and qc["tr"] == 2.0
    assert qc["mean_fc"] == pytest.approx(expected[iu].mean())
    assert qc["sc_fc_r"] is None and qc["sc_fc_r_transform"] == "log1p"
    assert qc["n_interpolated"] == 0 and qc["frac_zero_variance"] == 0.0
    assert e.fcd is None


def test_sc_fc_r_is_log1p_pearson():
    x = mixed_bold()
    rng = np.random.default_rng(1)
    sc = rng.uniform(0, 1000, (5, 5))
    sc = sc + sc.T
    e = empirical_fc(x, 1.0, sc_weights=sc)
    iu = np.triu_indices(5, 1)
    r = np.corrcoef(np.log1p(sc[iu]), e.fc[iu])[0, 1]
    assert e.qc["sc_fc_r"] == pytest.approx(r)
    with pytest.raises(DataError, match=r"expected SC weights of shape \(5, 5\)") as ei:
        empirical_fc(x, 1.0, sc_weights=sc[:4, :4])
    _one_line(ei)


def test_nan_runs_interpolated_or_refused():
    x = mixed_bold()
    x[10, 2] = np.nan
    x[20:22, 4] = np.nan
    x[0, 1] = np.nan  # at the edge: nearest sample repeated
    with pytest.raises(
        DataError,
        match=r"src.tsv: expected at most 0 consecutive n/a volumes per region, got 1 in M1 "
        r"\(column 2\) at volumes 1–1; raise bold.max_nan_run in the config",
    ) as ei:
        empirical_fc(x, 1.0, labels=LABELS, source="src.tsv")
    _one_line(ei)
    with pytest.raises(DataError, match=r"got 2 in Ins \(column 5\) at volumes 21–22"):
        empirical_fc(x, 1.0, labels=LABELS, max_nan_run=1)
    e = empirical_fc(x, 1.0, labels=LABELS, max_nan_run=2)
    assert e.qc["n_interpolated"] == 4
    assert np.isfinite(e.fc).all()
    # the interpolated values are what the observables saw
    filled = x.copy()
    filled[10, 2] = 0.5 * (x[9, 2] + x[11, 2])
    filled[20, 4] = x[19, 4] + (x[22, 4] - x[19, 4]) / 3
    filled[21, 4] = x[19, 4] + 2 * (x[22, 4] - x[19, 4]) / 3
    filled[0, 1] = x[1, 1]
    np.testing.assert_allclose(
        e.fc, np.asarray(observables.fc(observables.preprocess(filled, 1.0))), atol=1e-12
    )
    # discarded volumes do not count, and volumes are numbered as in the file
    y = mixed_bold(t=T + 1)
    y[0, 1] = np.nan
    e = empirical_fc(y, 1.0, discard=1)
    assert e.qc["n_interpolated"] == 0 and e.qc["n_tr_used"] == T
    y[11, 2] = np.nan
    with pytest.raises(DataError, match=r"at volumes 12–12"):
        empirical_fc(y, 1.0, discard=1)


def test_region_all_nan_or_constant():
    x = mixed_bold()
    x[:, 3] = np.nan
    with pytest.raises(
        DataError, match=r"got 1 regions that are n/a in every volume \(mPFC \(column 4\)\)"
    ) as ei:
        empirical_fc(x, 1.0, labels=LABELS, max_nan_run=100)
    _one_line(ei)
    x = mixed_bold()
    x[:, 0] = 7.0
    x[:, 2] = 0.0
    with pytest.raises(
        DataError, match=r"got 2 constant regions \(V1 \(column 1\), PCC \(column 3\)\); drop"
    ) as ei:
        empirical_fc(x, 1.0, labels=LABELS)
    _one_line(ei)
    x = mixed_bold()
    x[:, 1] = np.linspace(3, 9, T)  # an exact line: nothing left after detrending
    with pytest.raises(DataError, match=r"without signal left \(column 2\)"):
        empirical_fc(x, 1.0)
    e = empirical_fc(x, 1.0, detrend=False)  # without detrending it is a signal
    assert np.isfinite(e.fc).all()


def test_flat_region_fraction():
    x = mixed_bold()
    x[:, 4] = 100.0 + 1e-6 * np.random.default_rng(2).standard_normal(T)
    e = empirical_fc(x, 1.0)
    assert e.qc["frac_zero_variance"] == pytest.approx(0.2)


def test_too_few_volumes_and_bad_options():
    x = mixed_bold(t=40)
    with pytest.raises(
        DataError,
        match=r"sub-1: expected at least 10 volumes after discarding 35, got 5 of 40; lower",
    ) as ei:
        empirical_fc(x, 1.0, discard=35, source="sub-1")
    _one_line(ei)
    with pytest.raises(
        DataError,
        match=r"expected at least 35 volumes after discarding 10 \(FCD window 30 \+ step 5\), "
        r"got 30 of 40",
    ):
        empirical_fc(x, 1.0, discard=10, fcd_window=30, fcd_step=5)
    with pytest.raises(ConfigError, match="expected discard to be an integer >= 0, got -1"):
        empirical_fc(x, 1.0, discard=-1)
    with pytest.raises(ConfigError, match="expected an FCD window >= 2 and step >= 1"):
        empirical_fc(x, 1.0, fcd_window=10, fcd_step=0)
    with pytest.raises(ConfigError, match="expected a TR > 0 s"):
        empirical_fc(x, 0.0)
    with pytest.raises(DataError, match=r"expected BOLD as a 2-D array .*, got shape \(40,\)"):
        empirical_fc(x[:, 0], 1.0)
    with pytest.raises(DataError, match=r"expected one label per region \(5\), got 2"):
        empirical_fc(x, 1.0, labels=["a", "b"])
    y = x.copy()
    y[3, 3] = np.inf
    with pytest.raises(DataError, match="expected finite BOLD samples, got 1 inf values"):
        empirical_fc(y, 1.0)


# ------------------------------------------------------------------------- validation data


def _connectome(n: int):
    from bnmfit.results import ConnectomeFile

    w = np.ones((n, n)) - np.eye(n)
    return ConnectomeFile(
        subject="01",
        weights=w,
        lengths=None,
        weights_raw=w,
        labels=[f"r{i}" for i in range(n)],
        normalisation="none",
        symmetric=True,
        isolated=[],
        provenance={},
    )


def _bold_file(path, x, tr=0.8, labels=None):
    import json

    header = "\t".join(labels or [f"r{i}" for i in range(x.shape[1])])
    np.savetxt(path, x, delimiter="\t", header=header, comments="")
    path.with_suffix(".json").write_text(json.dumps({"RepetitionTime": tr}))
    return str(path)


def test_one_run_is_split_in_time_and_processed_alike(tmp_path):
    """validation.split: the last part of the volumes (after discard) becomes validation
    data, preprocessed separately exactly like the first part; the record says where they
    came from and how far the two FCs agree, and survives a write/read."""
    from bnmfit.empirical import empirical_record
    from bnmfit.results import EmpiricalFile

    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 5))
    path = _bold_file(tmp_path / "bold.tsv", x)
    kw = {"discard": 10, "fcd_window": 10, "fcd_step": 2}
    rec = empirical_record("01", _connectome(5), bold=path, split=0.5, **kw)
    assert rec.n_tr == 55 and rec.validation.n_tr == 55  # (120 - 10) / 2 each
    alike = {"detrend": True, "fcd_window": 10, "fcd_step": 2}
    np.testing.assert_allclose(rec.fc, empirical_fc(x[10:65], 0.8, **alike).fc, atol=1e-12)
    want = empirical_fc(x[65:], 0.8, **alike)
    np.testing.assert_allclose(rec.validation.fc, want.fc, atol=1e-12)
    np.testing.assert_allclose(rec.validation.fcd, want.fcd, atol=1e-12)
    assert "volumes 66–120" in rec.validation.source
    up = np.triu_indices(5, 1)
    r = np.corrcoef(rec.fc[up], want.fc[up])[0, 1]
    assert rec.qc["validation"]["fc_r_training"] == pytest.approx(r)
    rec.write(tmp_path / "e.h5")
    back = EmpiricalFile.read(tmp_path / "e.h5")
    np.testing.assert_array_equal(back.validation.fcd, rec.validation.fcd)
    assert back.validation.source == rec.validation.source and back.validation.n_tr == 55
    assert "validation:" in back.describe()
    # no split: every volume trains, and there is no validation data
    whole = empirical_record("01", _connectome(5), bold=path, split=0.0, **kw)
    assert whole.n_tr == 110 and whole.validation is None
    with pytest.raises(DataError, match=r"validation.split = 0.95 leaves 6 training"):
        empirical_record("01", _connectome(5), bold=path, split=0.95, **kw)


def test_a_second_run_is_the_validation_data(tmp_path):
    """validation_bold: the whole first run trains, the second run (its own sidecar TR,
    the same discard and processing) validates; with validation_fc only an FC."""
    from bnmfit.empirical import empirical_record

    rng = np.random.default_rng(1)
    first, second = rng.standard_normal((80, 4)), rng.standard_normal((60, 4))
    a = _bold_file(tmp_path / "run1.tsv", first)
    reversed_labels = [f"r{i}" for i in (3, 2, 1, 0)]  # another column order
    b = _bold_file(tmp_path / "run2.tsv", second[:, ::-1], labels=reversed_labels)
    rec = empirical_record("01", _connectome(4), bold=a, validation_bold=b, split=0.5, discard=5)
    assert rec.n_tr == 75 and rec.validation.n_tr == 55
    np.testing.assert_allclose(rec.validation.fc, empirical_fc(second[5:], 0.8).fc, atol=1e-12)
    assert rec.validation.source == f"a second run: {b}"
    fc = np.corrcoef(second.T)
    np.save(tmp_path / "fc2.npy", fc)
    rec = empirical_record("01", _connectome(4), bold=a, validation_fc=str(tmp_path / "fc2.npy"))
    np.testing.assert_allclose(rec.validation.fc, fc, atol=1e-12)
    assert rec.validation.fcd is None and rec.validation.n_tr is None
    with pytest.raises(ConfigError, match="one of the sheet's validation_bold and validation_fc"):
        empirical_record(
            "01", _connectome(4), bold=a, validation_bold=b, validation_fc=str(tmp_path / "fc2.npy")
        )
