"""Nothing lost, nothing silent (issue 8): bad input, faults and reproducibility.

* Bad input, table-driven, through the scripts as Snakemake runs them: every row asserts the
  one ``Error:`` line (its key phrase), the exit code (1 data, 2 usage/configuration) and that
  no output of the rule exists afterwards.
* Properties (hypothesis) of the readers and of FC/losses: symmetric, bounded, invariant to
  one region permutation applied to both sides.
* Faults: refine killed by SIGTERM / SIGKILL mid-way resumes from its checkpoint to the same
  result as an uninterrupted run; diverging parameter regions are recorded and skipped; a full
  disk is one line and keeps the previous output; a second snakemake is refused by the lock.
* Reproducibility: same config + seeds → bitwise-identical results; K = 1, 2, 4 chunks give the
  same landscape; every result file records config hash, seeds, versions and input checksums;
  a partially deleted results/ is regenerated identically.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bnmfit import losses
from bnmfit.config import check_subject_files, load_subjects, validate_config
from bnmfit.errors import ConfigError, DataError
from bnmfit.io import align, read_bold, read_connectome
from bnmfit.results import read_h5, write_h5, write_json
from tests.test_scripts import CONFIG, TR, N, _subject, error_line, run
from tests.test_workflow import _base, _workdir, job_counts, snakemake

ROOT = Path(__file__).resolve().parents[1]
LABELS = [f"R{i}" for i in range(N)]


def _tsv(path: Path, m, delim="\t", header=None, fmt="{:g}") -> Path:
    with open(path, "w") as fh:
        if header:
            fh.write(delim.join(header) + "\n")
        for row in np.asarray(m):
            fh.write(delim.join("n/a" if np.isnan(x) else fmt.format(x) for x in row) + "\n")
    return path


def _sc(seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 50, (N, N)).astype(float)
    w = np.triu(w, 1) + np.triu(w, 1).T
    ln = 20 + 80 * rng.random((N, N))
    ln = (ln + ln.T) / 2
    np.fill_diagonal(ln, 0)
    return w, ln


def _leftovers(d: Path) -> list[Path]:
    """Temporary (hidden) files a writer left behind."""
    return [p for p in d.rglob(".*") if ".tmp" in p.name]


# =========================================================================== bad connectomes


def _c_nonsquare(d):
    return [_tsv(d / "w.tsv", _sc()[0][:5])]


def _c_shape_mismatch(d):
    w, ln = _sc()
    return [_tsv(d / "w.tsv", w), "--lengths", _tsv(d / "l.tsv", ln[:5, :5])]


def _c_nan(d):
    w = _sc()[0]
    w[1, 2] = np.nan
    return [_tsv(d / "w.tsv", w)]


def _c_inf(d):
    w = _sc()[0]
    w[1, 2] = np.inf
    return [_tsv(d / "w.tsv", w)]


def _c_negative(d):
    w = _sc()[0]
    w[2, 3] = -0.5
    return [_tsv(d / "w.tsv", w)]


def _c_negative_lengths(d):
    w, ln = _sc()
    ln[2, 3] = -3.0
    return [_tsv(d / "w.tsv", w), "--lengths", _tsv(d / "l.tsv", ln)]


def _c_isolated(d, mode):
    w = _sc()[0]
    w[3, :] = w[:, 3] = 0
    return [_tsv(d / "w.tsv", w, header=LABELS), "--isolated", mode]


def _c_empty(d):
    (d / "w.tsv").write_text("")
    return [d / "w.tsv"]


def _c_truncated_gzip(d):
    raw = gzip.compress(_tsv(d / "full.tsv", _sc()[0]).read_bytes())
    (d / "w.tsv.gz").write_bytes(raw[: len(raw) // 2])
    return [d / "w.tsv.gz"]


def _c_truncated_zip(d):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("weights.txt", "\n".join(" ".join("1" for _ in range(N)) for _ in range(N)))
    (d / "conn.zip").write_bytes(buf.getvalue()[:40])
    return [d / "conn.zip"]


def _c_semicolons(d):
    return [_tsv(d / "w.tsv", _sc()[0], delim=";")]


def _c_duplicate_header_labels(d):
    return [_tsv(d / "w.tsv", _sc()[0], header=["a", "b", "c", "a", "e", "f"])]


def _c_duplicate_label_file(d):
    (d / "labels.txt").write_text("a\nb\nc\nd\nb\nf\n")
    return [_tsv(d / "w.tsv", _sc()[0]), "--labels", d / "labels.txt"]


BAD_CONNECTOMES = [
    # (case, files, exit code, key phrase of the one error line)
    ("non-square", _c_nonsquare, 1, "expected a square regions × regions matrix, got shape 5 × 6"),
    (
        "weights/lengths shape mismatch",
        _c_shape_mismatch,
        1,
        "expected tract lengths of the weights' shape (6, 6)",
    ),
    ("NaN weight", _c_nan, 1, "got 1 missing entries (n/a, NaN or -1; first at row 2, column 3)"),
    ("inf weight", _c_inf, 1, "expected finite weights, got 1 NaN/inf entries"),
    ("negative weight", _c_negative, 1, "expected non-negative weights, got 1 negative"),
    (
        "negative length",
        _c_negative_lengths,
        1,
        "expected non-negative tract lengths, got 1 negative",
    ),
    (
        "isolated region, isolated: error",
        lambda d: _c_isolated(d, "error"),
        1,
        "got 1 isolated region(s) (all-zero row and column): R3; fix the connectome, or set "
        "connectome.isolated: warn",
    ),
    ("empty file", _c_empty, 1, "expected data, got an empty file (0 bytes)"),
    (
        "truncated gzip",
        _c_truncated_gzip,
        1,
        "expected a complete gzip stream, got a truncated or corrupt one",
    ),
    ("truncated zip", _c_truncated_zip, 1, "got an unreadable zip"),
    (
        "wrong delimiter (; in a .tsv)",
        _c_semicolons,
        1,
        "the values seem to be separated by semicolons, not by the file's delimiter",
    ),
    (
        "duplicated labels in the header",
        _c_duplicate_header_labels,
        1,
        "expected unique region labels, got duplicates a",
    ),
    (
        "duplicated labels in --labels",
        _c_duplicate_label_file,
        1,
        "the sheet column labels: expected unique region labels, got duplicates b",
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "code", "phrase"), BAD_CONNECTOMES, ids=[c[0] for c in BAD_CONNECTOMES]
)
def test_bad_connectome(tmp_path, case, make, code, phrase):
    out = tmp_path / "results" / "sub-01_connectome.h5"
    r = run("ingest_connectome", ["--subject", "01", "--weights", *make(tmp_path), "--output", out])
    assert r.exit_code == code, r.output
    assert phrase in error_line(r)
    assert not out.exists() and not _leftovers(tmp_path)


def test_isolated_regions_warn_by_default_and_are_recorded(tmp_path):
    out = tmp_path / "c.h5"
    r = run(
        "ingest_connectome",
        ["--subject", "01", "--weights", *_c_isolated(tmp_path, "warn"), "--output", out],
    )
    assert r.exit_code == 0, r.output
    assert (
        "warning: sub-01: 1 region(s) of the SC weights (sheet column sc_weights) have no "
        "connection, so they receive no input from the network: R3; connectome.isolated: "
        "error refuses such subjects" in r.output
    )
    assert read_h5(out)[1]["isolated"] == ["R3"]
    assert validate_config({})["connectome"]["isolated"] == "warn"


def test_whitespace_in_a_csv_is_read_not_misread(tmp_path):
    """A .csv separated by spaces is a common export; it reads as the same matrix."""
    w = _sc()[0]
    got, _, _ = read_connectome(_tsv(tmp_path / "w.csv", w, delim=" "))
    np.testing.assert_array_equal(got, w)


# =========================================================================== bad BOLD


@pytest.fixture(scope="module")
def connectome(tmp_path_factory):
    """A 6-region connectome with labels R0..R5 (in-process, about a second)."""
    tmp = tmp_path_factory.mktemp("conn")
    src = _subject(tmp)
    out = tmp / "sub-01_connectome.h5"
    r = run(
        "ingest_connectome",
        [
            "--subject",
            "01",
            "--weights",
            src["weights"],
            "--lengths",
            src["lengths"],
            "--labels",
            src["labels"],
            "--output",
            out,
        ],
    )
    assert r.exit_code == 0, r.output
    return out


def _bold(d: Path, data, labels=LABELS, sidecar=None, name="bold.tsv") -> Path:
    p = _tsv(d / name, data, header=labels, fmt="{:.6f}")
    if sidecar is not None:
        (d / name.replace(".tsv", ".json")).write_text(json.dumps(sidecar))
    return p


def _good(t=120, seed=1):
    return np.random.default_rng(seed).standard_normal((t, N))


def _b_short(d):
    return [_bold(d, _good(30)), "--tr", TR, "--discard", 10, "--fcd-window", 25, "--fcd-step", 1]


def _b_constant(d):
    x = _good()
    x[:, 2] = 3.0
    return [_bold(d, x), "--tr", TR]


def _b_nan_run(d):
    x = _good()
    x[40:45, 1] = np.nan
    return [_bold(d, x), "--tr", TR, "--max-nan-run", 2]


def _b_count_no_labels(d):
    return [_bold(d, _good()[:, :5], labels=None), "--tr", TR]


def _b_labels_mismatch(d):
    return [_bold(d, _good(), labels=[f"X{i}" for i in range(N)]), "--tr", TR]


def _b_no_tr(d):
    return [_bold(d, _good())]


def _b_tr_ms_argument(d):
    return [_bold(d, _good()), "--tr", 720]


def _b_tr_ms_sidecar(d):
    return [_bold(d, _good(), sidecar={"RepetitionTime": 720})]


BAD_BOLD = [
    (
        "fewer TRs than discard + FCD window",
        _b_short,
        1,
        "expected at least 26 volumes after discarding 10 (FCD window 25 + step 1), got 20 of 30",
    ),
    (
        "constant region",
        _b_constant,
        1,
        "expected BOLD that varies in time in every region, got 1 constant regions (R2",
    ),
    (
        "NaN run longer than max_nan_run",
        _b_nan_run,
        1,
        "expected at most 2 consecutive n/a volumes per region, got 5 in R1 (column 2) at "
        "volumes 41–45",
    ),
    (
        "region count differs, no labels",
        _b_count_no_labels,
        1,
        "expected the same number of regions, got 6 in the connectome and 5 in the BOLD, with "
        "no region labels to match them by",
    ),
    ("labels do not match", _b_labels_mismatch, 1, "6 connectome regions not in the BOLD (R0, R1"),
    ("missing TR", _b_no_tr, 1, "expected a repetition time, got none"),
    (
        "TR in ms (--tr 720)",
        _b_tr_ms_argument,
        1,
        "expected the TR in seconds, got 720, almost certainly milliseconds; give it in seconds "
        "(0.72)",
    ),
    (
        "TR in ms (sidecar RepetitionTime 720)",
        _b_tr_ms_sidecar,
        1,
        "almost certainly milliseconds; give it in seconds (0.72)",
    ),
]


@pytest.mark.parametrize(("case", "make", "code", "phrase"), BAD_BOLD, ids=[c[0] for c in BAD_BOLD])
def test_bad_bold(connectome, tmp_path, case, make, code, phrase):
    out, qc = tmp_path / "res" / "e.h5", tmp_path / "res" / "qc.json"
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            connectome,
            "--bold",
            *make(tmp_path),
            "--output",
            out,
            "--qc",
            qc,
        ],
    )
    assert r.exit_code == code, r.output
    assert phrase in error_line(r)
    assert not out.exists() and not qc.exists() and not _leftovers(tmp_path)


@pytest.mark.slow
def test_a_short_nan_run_is_interpolated_and_counted(connectome, tmp_path):
    x = _good()
    x[40:42, 1] = np.nan
    out = tmp_path / "e.h5"
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            connectome,
            "--bold",
            _bold(tmp_path, x),
            "--tr",
            TR,
            "--max-nan-run",
            2,
            "--output",
            out,
        ],
    )
    assert r.exit_code == 0, r.output
    assert read_h5(out)[1]["qc"]["n_interpolated"] == 2


# =========================================================================== bad configs


def _stage(**kw):
    s = {"name": "s", "free_parameters": [{"name": "w", "domain": {"lo": 0.0, "hi": 1.0}}]}
    s.update(kw)
    return {"refinement": {"stages": [s]}}


def _with(**sections):
    cfg = copy.deepcopy(CONFIG)
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


BAD_CONFIGS = [
    (
        "unknown top-level key",
        {**CONFIG, "explortion": {}},
        "unknown key 'explortion' (did you mean 'exploration'?) at the top level",
    ),
    (
        "unknown nested key",
        _with(observation={"fcd_windw": 3}),
        "unknown key 'fcd_windw' (did you mean 'fcd_window'?) in observation",
    ),
    ("dt = 0", _with(simulation={"dt": 0}), "simulation.dt = 0; expected a value > 0"),
    ("dt < 0", _with(simulation={"dt": -1.0}), "simulation.dt = -1.0; expected a value > 0"),
    (
        "dt larger than the model allows",
        _with(simulation={"dt": 12.0}),
        "simulation.dt = 12 ms exceeds the largest stable step of reduced_wong_wang (10 ms)",
    ),
    (
        "duration < transient + FCD window (TR known)",
        _with(
            simulation={"duration": 7200.0, "transient": 20000.0},
            observation={"tr": 0.72, "fcd_window": 10, "fcd_step": 5},
        ),
        "simulation.duration = 7200 ms gives 10 TRs, too few for two FCD windows of 10 TRs "
        "(step 5; at least 15 TRs); note that the duration is the BOLD kept after the transient",
    ),
    (
        "duration < transient + FCD window (TR from the data)",
        _with(simulation={"duration": 7200.0, "transient": 20000.0}),
        "the simulation returns 10 TRs, too few for two FCD windows of 10 TRs (step 5)",
    ),
    (
        "unknown model",
        _with(model={"name": "kuramoto"}),
        "model.name = 'kuramoto' is not allowed; allowed values: reduced_wong_wang",
    ),
    (
        "unknown loss term",
        _with(loss={"terms": {"fc_corelation": 1.0}}),
        "unknown key 'fc_corelation' (did you mean 'fc_corr'?) in loss.terms",
    ),
    (
        "unknown loss function",
        _with(loss={"expression": "1 - corelation(fc, empirical_fc)"}),
        "unknown function 'corelation' at column 5 (did you mean 'correlation'?)",
    ),
    (
        "unknown optimizer",
        {**CONFIG, **_stage(optimizer="adamm")},
        "refinement.stages[0].optimizer = 'adamm' is not allowed (did you mean 'adam'?)",
    ),
    (
        "explored parameter the model lacks",
        _with(exploration={"parameters": [{"name": "omega", "lo": 0, "hi": 1, "n": 2}]}),
        "exploration.parameters[0]: unknown parameter 'omega' of reduced_wong_wang",
    ),
    (
        "fitted parameter the model lacks",
        {**CONFIG, **_stage(free_parameters=[{"name": "a_e", "domain": {"lo": 0, "hi": 1}}])},
        "refinement.stages[0].free_parameters[0]: unknown parameter 'a_e' of reduced_wong_wang",
    ),
    (
        "grid bounds lo = hi",
        _with(exploration={"parameters": [{"name": "G", "lo": 0.5, "hi": 0.5, "n": 2}]}),
        "exploration.parameters[0]: expected lo < hi, got lo=0.5, hi=0.5",
    ),
    (
        "fit bounds lo > hi",
        {**CONFIG, **_stage(free_parameters=[{"name": "w", "domain": {"lo": 1.0, "hi": 0.1}}])},
        "refinement.stages[0].free_parameters[0]: expected lo < hi, got lo=1, hi=0.1",
    ),
    (
        "observation.tr in ms",
        _with(observation={"tr": 720}),
        "observation.tr = 720; expected a value <= 100 (the TR in seconds): 720 is almost "
        "certainly milliseconds; give it in seconds (0.72)",
    ),
    (
        "grid n < 1",
        _with(exploration={"parameters": [{"name": "G", "lo": 0.1, "hi": 0.5, "n": 0}]}),
        "exploration.parameters[0].n = 0; expected a value >= 1",
    ),
]


@pytest.fixture(scope="module")
def empirical(connectome, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("emp")
    out = tmp / "e.h5"
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            connectome,
            "--bold",
            _bold(tmp, _good()),
            "--tr",
            TR,
            "--fcd-window",
            10,
            "--fcd-step",
            5,
            "--output",
            out,
        ],
    )
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.parametrize(("case", "cfg", "phrase"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config(connectome, empirical, tmp_path, case, cfg, phrase):
    out = tmp_path / "chunk-0.h5"
    r = run(
        "explore",
        [
            "--subject",
            "01",
            "--connectome",
            connectome,
            "--empirical",
            empirical,
            "--chunk",
            0,
            "--config-json",
            json.dumps(cfg),
            "--output",
            out,
        ],
    )
    assert r.exit_code == 2, r.output
    assert phrase in error_line(r)
    assert not out.exists() and not _leftovers(tmp_path)


# =========================================================================== subjects sheet


@pytest.mark.parametrize(
    ("subject", "ok"),
    [
        ("01", True),
        ("sub01A", True),
        ("0_1", False),
        ("01 a", False),
        ("a/b", False),
        ("ü1", False),
        ("01.2", False),
        ("01-2", False),
    ],
)
def test_subject_ids_with_illegal_characters_are_refused(tmp_path, subject, ok):
    p = tmp_path / "s.tsv"
    p.write_text(f"subject\tsc_weights\tbold\n{subject}\tw.tsv\tb.tsv\n")
    if ok:
        assert load_subjects(p)[0]["subject"] == subject
    else:
        with pytest.raises(ConfigError, match="does not match the pattern"):
            load_subjects(p)


def test_duplicate_subject_ids_name_both_rows(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("subject\tsc_weights\tbold\n01\tw\tb\n02\tw\tb\nsub-01\tw\tb\n")
    with pytest.raises(ConfigError, match=r"subject '01' is listed twice \(rows 1 and 3\)"):
        load_subjects(p)


def test_a_sheet_tr_in_ms_says_so(tmp_path):
    p = tmp_path / "s.tsv"
    p.write_text("subject\tsc_weights\tbold\ttr\n01\tw\tb\t720\n")
    with pytest.raises(
        ConfigError,
        match=r"tr = 720.0; expected a value <= 100 \(the TR in "
        r"seconds\): 720 is almost certainly milliseconds; give it in seconds "
        r"\(0.72\)",
    ):
        load_subjects(p)


def test_missing_files_are_all_listed_at_once(tmp_path):
    (tmp_path / "w1.tsv").write_text("1")
    rows = [
        {"subject": "01", "sc_weights": "w1.tsv", "bold": "b1.tsv"},
        {"subject": "02", "sc_weights": "w2.tsv", "sc_lengths": "l2.tsv", "bold": "b2.tsv"},
    ]
    with pytest.raises(ConfigError) as e:
        check_subject_files(rows, base=tmp_path, where="subjects.tsv")
    assert str(e.value) == (
        "subjects.tsv: 4 file(s) of the subjects sheet do not exist: sub-01 bold b1.tsv; "
        "sub-02 sc_weights w2.tsv; sub-02 sc_lengths l2.tsv; sub-02 bold b2.tsv; fix the paths "
        "(relative to the working directory) or remove the subjects"
    )
    (tmp_path / "b1.tsv").write_text("1")
    check_subject_files(rows[:1], base=tmp_path)  # complete: no error


# =========================================================================== properties


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.permutations(range(N)))
def test_bold_reader_and_alignment_are_invariant_to_column_order(seed, perm):
    """The same BOLD with its columns (and labels) in any order gives the same regional
    series in connectome order, hence the same FC."""
    import tempfile

    x = np.round(_good(40, seed), 6)
    perm = list(perm)
    with tempfile.TemporaryDirectory() as d:
        b = read_bold(_bold(Path(d), x[:, perm], labels=[LABELS[i] for i in perm]), tr=TR)
    got = b.data[:, align(LABELS, b.labels)]
    np.testing.assert_array_equal(got, x)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.permutations(range(N)))
def test_connectome_reader_is_invariant_to_region_order(seed, perm):
    """Weights and lengths with labelled headers, each in its own region order: the lengths
    come back aligned to the weights, symmetric stays symmetric."""
    import tempfile

    w, ln = _sc(seed % 1000)
    perm = list(perm)
    with tempfile.TemporaryDirectory() as d:
        wp = _tsv(Path(d) / "w.tsv", w, header=LABELS)
        lp = _tsv(
            Path(d) / "l.tsv",
            ln[np.ix_(perm, perm)],
            header=[LABELS[i] for i in perm],
            fmt="{:.17g}",
        )
        gw, gl, lab = read_connectome(wp, lp)
    assert lab == LABELS
    np.testing.assert_array_equal(gw, w)
    np.testing.assert_array_equal(gl, ln)
    np.testing.assert_array_equal(gl, gl.T)


def _fcs(seed, n, t):
    from bnmfit.observables import fc

    rng = np.random.default_rng(seed)
    base = rng.normal(size=(t, n))
    a = np.asarray(fc(jnp.asarray(base + rng.normal(size=(t, n)))))
    b = np.asarray(fc(jnp.asarray(base + 3 * rng.normal(size=(t, n)))))
    return a, b


@settings(max_examples=20, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([3, 6]),
    st.sampled_from([20, 40]),
    st.randoms(use_true_random=False),
)
def test_fc_and_losses_symmetric_bounded_and_permutation_invariant(seed, n, t, rnd):
    a, b = _fcs(seed, n, t)
    for m in (a, b):  # FC: symmetric, unit diagonal, in [-1, 1]
        np.testing.assert_allclose(m, m.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-9)
        assert np.all(np.abs(m) <= 1 + 1e-9)
    p = np.array(rnd.sample(range(n), n))
    pa, pb = a[np.ix_(p, p)], b[np.ix_(p, p)]
    bounds = {"fc_corr": (0.0, 2.0), "fc_rmse": (0.0, 2.0), "fcd_ks": (0.0, 1.0)}
    for name, fn in (
        ("fc_corr", losses.fc_corr),
        ("fc_rmse", losses.fc_rmse),
        ("fcd_ks", losses.fcd_ks),
    ):
        v = float(fn(jnp.asarray(a), jnp.asarray(b)))
        lo, hi = bounds[name]
        assert lo - 1e-12 <= v <= hi + 1e-12, (name, v)
        assert float(fn(jnp.asarray(b), jnp.asarray(a))) == pytest.approx(v, abs=1e-12), name
        assert float(fn(jnp.asarray(pa), jnp.asarray(pb))) == pytest.approx(v, abs=1e-12), name
        assert float(fn(jnp.asarray(a), jnp.asarray(a))) == pytest.approx(0.0, abs=1e-9), name


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1), st.permutations(range(N)))
def test_empirical_fc_commutes_with_a_region_permutation(seed, perm):
    """Detrend, band-pass, z-score, FC and the QC: permuting the regions permutes FC."""
    from bnmfit.empirical import empirical_fc

    x = _good(80, seed)
    perm = list(perm)
    kw = dict(detrend=True, bandpass=(0.01, 0.2), fcd_window=20, fcd_step=10)
    e = empirical_fc(x, TR, **kw)
    ep = empirical_fc(x[:, perm], TR, **kw)
    np.testing.assert_allclose(ep.fc, e.fc[np.ix_(perm, perm)], atol=1e-12)
    np.testing.assert_allclose(ep.fcd, e.fcd, atol=1e-12)  # FCD is region-order free


# =========================================================================== the write layer


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    from bnmfit.results import _host

    target = tmp_path / "x.h5"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = tmp_path / f".x.h5.{_host()}-{dead}.abc123.tmp.h5"
    live = tmp_path / f".x.h5.{_host()}-{os.getppid()}.abc123.tmp.h5"  # a live writer
    other = tmp_path / f".x.h5.otherhost-{dead}.abc123.tmp.h5"  # another node's writer
    for p in (stale, live, other):
        p.write_bytes(b"half")
    write_h5(target, {"a": np.arange(3)})
    assert not stale.exists() and live.exists() and other.exists()
    assert list(read_h5(target)[0]["a"]) == [0, 1, 2]


def _full_disk(monkeypatch, after: int = 0):
    """Fault injection at the write layer: the n-th write to a file fails with ENOSPC."""
    import builtins
    import errno

    real_open = builtins.open
    count = {"n": 0}

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            count["n"] += 1
            if count["n"] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.fh.write(data)

        def __getattr__(self, k):
            return getattr(self.fh, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

    def fake_open(file, mode="r", *a, **kw):
        fh = real_open(file, mode, *a, **kw)
        if any(c in mode for c in "wa") and ".tmp" in os.fspath(file):
            return Full(fh)
        return fh

    import io

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


@pytest.mark.parametrize("kind", ["h5", "json"])
def test_disk_full_in_process_keeps_the_previous_output(tmp_path, monkeypatch, kind):
    target = tmp_path / f"x.{kind}"
    write = (
        (lambda v: write_h5(target, {"a": np.full(3, v)}))
        if kind == "h5"
        else (lambda v: write_json(target, {"a": v}))
    )
    write(1.0)
    before = target.read_bytes()
    _full_disk(monkeypatch)
    with pytest.raises(DataError) as e:
        write(2.0)
    monkeypatch.undo()
    assert str(e.value) == (
        f"{target}: expected to write the result, got No space left on "
        "device; the previous file is unchanged. Free space on the file "
        f"system of {tmp_path} (or raise the quota) and re-run"
    )
    assert target.read_bytes() == before and not _leftovers(tmp_path)


def test_disk_full_at_the_second_output_leaves_no_output_of_the_rule(
    connectome, tmp_path, monkeypatch
):
    """empirical_fc writes the HDF5, then the QC JSON: when the disk fills up in between,
    the HDF5 is removed too, so the rule has all its outputs or none."""
    out, qc = tmp_path / "e.h5", tmp_path / "qc.json"
    bold = _bold(tmp_path, _good())
    _full_disk(monkeypatch, after=1)
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            connectome,
            "--bold",
            bold,
            "--tr",
            TR,
            "--output",
            out,
            "--qc",
            qc,
        ],
    )
    monkeypatch.undo()
    assert r.exit_code == 1, r.output
    assert error_line(r).startswith(
        f"Error: sub-01: {qc}: expected to write the result, got No space "
        "left on device; nothing was written."
    )
    assert not out.exists() and not qc.exists() and not _leftovers(tmp_path)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped elsewhere), unmounted afterwards."""
    d = tmp_path / "disk"
    d.mkdir()
    if os.geteuid() != 0 or sys.platform != "linux":
        pytest.skip("mounting a tmpfs needs root on Linux")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True, text=True
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=False)


def test_disk_full_while_ingesting_is_one_line_and_keeps_the_valid_output(tiny_disk, tmp_path):
    """A real full file system: the script says so in one line (exit 1), the previous
    connectome stays byte for byte, and no temporary is left. (HDF5 written straight to a
    full disk used to crash the process with a segmentation fault.)"""
    w, ln = _sc()
    big = 40
    wb = _tsv(tmp_path / "big.tsv", np.ones((big, big)))
    small = _tsv(tmp_path / "w.tsv", w)
    out = tiny_disk / "sub-01_connectome.h5"
    r = run("ingest_connectome", ["--subject", "01", "--weights", small, "--output", out])
    assert r.exit_code == 0, r.output
    before = out.read_bytes()
    free = os.statvfs(tiny_disk)
    (tiny_disk / "filler").write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 24 * 1024))
    r = run("ingest_connectome", ["--subject", "01", "--weights", wb, "--output", out])
    assert r.exit_code == 1, r.output
    assert error_line(r) == (
        f"Error: sub-01: {out}: expected to write the result, got No space left on device; "
        f"the previous file is unchanged. Free space on the file system of {tiny_disk} (or "
        "raise the quota) and re-run"
    )
    assert out.read_bytes() == before and not _leftovers(tiny_disk)


# =========================================================================== a small subject


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Inputs of refine for one 6-region subject (in-process, a few seconds), and configs:
    40 refinement steps checkpointed every 2, so a kill lands mid-way."""
    tmp = tmp_path_factory.mktemp("prepared")
    src = _subject(tmp)
    cfg = copy.deepcopy(CONFIG)
    cfg["refinement"]["stages"][0]["steps"] = 40
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    # subprocesses share a compilation cache (never set in this process: global JAX state)
    sub_cfg = dict(cfg, compute={"compilation_cache": str(tmp / "jax-cache")})
    sub_cfg_path = tmp / "config-subprocess.yaml"
    sub_cfg_path.write_text(yaml.safe_dump(sub_cfg))
    out = {
        k: tmp / v
        for k, v in {
            "connectome": "sub-01_connectome.h5",
            "empirical": "sub-01_desc-empirical_fc.h5",
            "qc": "sub-01_desc-empirical_qc.json",
            "explore": "sub-01_explore.h5",
        }.items()
    }
    assert (
        run(
            "ingest_connectome",
            [
                "--subject",
                "01",
                "--weights",
                src["weights"],
                "--lengths",
                src["lengths"],
                "--labels",
                src["labels"],
                "--output",
                out["connectome"],
            ],
        ).exit_code
        == 0
    )
    assert (
        run(
            "empirical_fc",
            [
                "--subject",
                "01",
                "--connectome",
                out["connectome"],
                "--bold",
                src["bold"],
                "--tr",
                TR,
                "--discard",
                5,
                "--fcd-window",
                10,
                "--fcd-step",
                5,
                "--output",
                out["empirical"],
                "--qc",
                out["qc"],
            ],
        ).exit_code
        == 0
    )
    chunks = []
    for k in (0, 1):
        chunks.append(tmp / "explore" / f"chunk-{k}.h5")
        r = run(
            "explore",
            [
                "--subject",
                "01",
                "--connectome",
                out["connectome"],
                "--empirical",
                out["empirical"],
                "--chunk",
                k,
                "--config",
                cfg_path,
                "--output",
                chunks[-1],
            ],
        )
        assert r.exit_code == 0, r.output
    assert (
        run(
            "gather_explore",
            ["--subject", "01", "--config", cfg_path, "--output", out["explore"], *chunks],
        ).exit_code
        == 0
    )
    return {
        "tmp": tmp,
        "src": src,
        "cfg": cfg,
        "cfg_path": cfg_path,
        "sub_cfg_path": sub_cfg_path,
        "out": out,
        "chunks": chunks,
    }


def _refine_cmd(p, d: Path) -> list[str]:
    o = p["out"]
    return [
        sys.executable,
        str(ROOT / "scripts" / "refine.py"),
        "--subject",
        "01",
        "--connectome",
        str(o["connectome"]),
        "--empirical",
        str(o["empirical"]),
        "--explore",
        str(o["explore"]),
        "--config",
        str(p["sub_cfg_path"]),
        "--checkpoint-dir",
        str(d / ".checkpoints"),
        "--output-params",
        str(d / "sub-01_desc-fitted_params.json"),
        "--output-fit",
        str(d / "sub-01_fit.h5"),
    ]


def _fit_result(d: Path) -> dict:
    """What must be identical between runs: every number but wall times."""
    params = json.loads((d / "sub-01_desc-fitted_params.json").read_text())
    params.pop("wall_time", None)  # no longer written (byte-reproducible files)
    params["provenance"].pop("inputs")  # paths differ between the runs' folders
    data, attrs = read_h5(d / "sub-01_fit.h5")
    for k in ("wall_time", "inputs"):
        attrs.pop(k, None)
    return {"params": params, "data": data, "attrs": attrs}


def _assert_identical(a, b, where=""):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=True), where  # bitwise, NaN where NaN
    else:
        assert a == b or (a != a and b != b), where


@pytest.fixture(scope="module")
def reference_fit(prepared):
    d = prepared["tmp"] / "reference"
    d.mkdir()
    r = subprocess.run(_refine_cmd(prepared, d), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return d


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_refine_killed_midway_resumes_to_the_same_result(prepared, reference_fit, tmp_path, sig):
    d = tmp_path / "run"
    ckpt = d / ".checkpoints"
    proc = subprocess.Popen(
        _refine_cmd(prepared, d), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    t0 = time.monotonic()
    try:
        while not list(ckpt.rglob("refine-checkpoint.pkl")):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() - t0 < 240, "no checkpoint after 240 s"
            time.sleep(0.02)
        proc.send_signal(sig)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, output[-3000:]
        errors = [ln for ln in output.splitlines() if ln.startswith("Error:")]
        assert errors == [
            "Error: sub-01: terminated by SIGTERM before finishing; unfinished outputs "
            "were discarded (a re-run resumes refine from its last checkpoint)"
        ]
    else:
        assert proc.returncode == -signal.SIGKILL
    # killed mid-way: a checkpoint, no output, no half-written file under an output's name
    assert list(ckpt.rglob("refine-checkpoint.pkl"))
    assert not (d / "sub-01_fit.h5").exists()
    assert not (d / "sub-01_desc-fitted_params.json").exists()
    if sig == signal.SIGTERM:
        assert not _leftovers(d)
    r = subprocess.run(_refine_cmd(prepared, d), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    _assert_identical(_fit_result(d), _fit_result(reference_fit))
    assert not ckpt.exists() and not _leftovers(d)


# =========================================================================== divergence


@pytest.mark.slow
def test_a_diverging_region_is_recorded_and_skipped_in_explore(prepared, tmp_path):
    """G up to 1e8 on a log axis: the huge-G points' BOLD is non-finite. They are flagged with
    loss inf, FC r NaN, the run succeeds, and they are never refinement starts."""
    cfg = copy.deepcopy(prepared["cfg"])
    cfg["exploration"].update(
        chunks=1,
        parameters=[
            {"name": "G", "lo": 0.5, "hi": 1e8, "n": 2, "scale": "log"},
            {"name": "w", "lo": 0.3, "hi": 0.6, "n": 2},
        ],
    )
    chunk, gathered = tmp_path / "chunk-0.h5", tmp_path / "explore.h5"
    o = prepared["out"]
    r = run(
        "explore",
        [
            "--subject",
            "01",
            "--connectome",
            o["connectome"],
            "--empirical",
            o["empirical"],
            "--chunk",
            0,
            "--config-json",
            json.dumps(cfg),
            "--output",
            chunk,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "2 diverged" in r.output
    r = run(
        "gather_explore",
        ["--subject", "01", "--config-json", json.dumps(cfg), "--output", gathered, chunk],
    )
    assert r.exit_code == 0, r.output
    d, _ = read_h5(gathered)
    assert list(d["diverged"]) == [False, False, True, True]
    assert np.isfinite(d["mean_loss"][:2]).all() and np.isinf(d["mean_loss"][2:]).all()
    assert np.isnan(d["fc_r"][2:]).all() and set(d["top"]) <= {0, 1} and len(d["top"])


@pytest.fixture(scope="module")
def diverging_refine(prepared, tmp_path_factory):
    """refine (2 steps) from three starts: A diverges (tau_s = 0: dS/dt = -S/0, NaN),
    B has a huge coupling (G = 1e8), C is ordinary."""
    tmp = tmp_path_factory.mktemp("diverging")
    cfg = copy.deepcopy(prepared["cfg"])
    stage = cfg["refinement"]["stages"][0]
    stage["steps"] = 2
    stage["free_parameters"][0].update(domain={"lo": 0.01, "hi": 1e9}, transform="log")
    ex, attrs = read_h5(prepared["out"]["explore"])
    ex["names"] = ["G", "w", "tau_s"]
    ex["points"] = np.array([[0.5, 0.5, 0.0], [1e8, 0.5, 100.0], [0.5, 0.5, 100.0]])
    for k in ("loss", "mean_loss", "std_loss", "fc_r", "diverged"):
        ex[k] = ex[k][:3]
    ex["top"] = np.array([0, 1, 2])
    explore_h5 = tmp / "explore.h5"
    write_h5(explore_h5, ex, attrs)
    o = prepared["out"]
    pj, fh = tmp / "p.json", tmp / "f.h5"
    r = run(
        "refine",
        [
            "--subject",
            "01",
            "--connectome",
            o["connectome"],
            "--empirical",
            o["empirical"],
            "--explore",
            explore_h5,
            "--config-json",
            json.dumps(cfg),
            "--output-params",
            pj,
            "--output-fit",
            fh,
        ],
    )
    assert r.exit_code == 0, r.output
    return {"params": json.loads(pj.read_text()), "fit": read_h5(fh)[0], "log": r.output}


@pytest.mark.slow
def test_a_diverging_start_is_recorded_and_skipped_in_refine(diverging_refine):
    g = diverging_refine["fit"]["stage-0-global"]
    assert g["rejected"][:, 0].all()  # every step of the NaN start rejected, and recorded
    assert not g["rejected"][:, 2].any()
    assert np.isfinite(g["loss"][:, 2]).all()
    assert diverging_refine["params"]["best_start"] != 0


@pytest.mark.slow
def test_a_fit_with_non_finite_heldout_metrics_carries_a_warning(diverging_refine):
    p = diverging_refine["params"]
    bad = not all(np.isfinite(p["metrics"][k]) for k in ("fc_r", "fc_rmse", "loss"))
    # other warnings (e.g. a simulation shorter than the recording) may accompany it
    said = [w for w in p["warnings"] if "non-finite held-out" in w]
    assert bool(said) == bad, p["warnings"]
    for w in said:
        assert f"warning: sub-01: {w}" in diverging_refine["log"]


# =========================================================================== reproducibility


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 4])
def test_chunking_gives_the_same_landscape_bitwise(prepared, tmp_path, k):
    cfg = copy.deepcopy(prepared["cfg"])
    cfg["exploration"]["chunks"] = k
    o = prepared["out"]
    chunks = []
    for c in range(k):
        chunks.append(tmp_path / f"chunk-{c}.h5")
        r = run(
            "explore",
            [
                "--subject",
                "01",
                "--connectome",
                o["connectome"],
                "--empirical",
                o["empirical"],
                "--chunk",
                c,
                "--config-json",
                json.dumps(cfg),
                "--output",
                chunks[-1],
            ],
        )
        assert r.exit_code == 0, r.output
    gathered = tmp_path / "explore.h5"
    assert (
        run(
            "gather_explore",
            ["--subject", "01", "--config-json", json.dumps(cfg), "--output", gathered, *chunks],
        ).exit_code
        == 0
    )
    a, _ = read_h5(gathered)
    b, _ = read_h5(o["explore"])  # K = 2
    _assert_identical(a, b)


@pytest.mark.slow
def test_same_config_and_seeds_give_bitwise_identical_chunks(prepared, tmp_path):
    o = prepared["out"]
    again = tmp_path / "chunk-1.h5"
    r = run(
        "explore",
        [
            "--subject",
            "01",
            "--connectome",
            o["connectome"],
            "--empirical",
            o["empirical"],
            "--chunk",
            1,
            "--config",
            prepared["cfg_path"],
            "--output",
            again,
        ],
    )
    assert r.exit_code == 0, r.output
    (a, aa), (b, ba) = read_h5(again), read_h5(prepared["chunks"][1])
    _assert_identical(a, b)
    for k in ("wall_time", "inputs"):
        aa.pop(k, None), ba.pop(k, None)
    _assert_identical(aa, ba)


@pytest.mark.slow
def test_a_stale_chunk_of_another_configuration_is_refused(prepared, tmp_path):
    d, a = read_h5(prepared["chunks"][1])
    a["config_hash"] = "0" * 16
    stale = tmp_path / "chunk-1.h5"
    write_h5(stale, d, a)
    out = tmp_path / "explore.h5"
    r = run(
        "gather_explore",
        [
            "--subject",
            "01",
            "--config",
            prepared["cfg_path"],
            "--output",
            out,
            prepared["chunks"][0],
            stale,
        ],
    )
    assert r.exit_code == 1
    assert "expected a chunk of the same exploration" in error_line(r)
    assert "config hash" in error_line(r) and not out.exists()


@pytest.mark.slow
def test_every_result_file_records_its_provenance(prepared, reference_fit):
    from bnmfit.results import sha256

    o = prepared["out"]
    files = {
        "connectome": read_h5(o["connectome"])[1],
        "empirical": read_h5(o["empirical"])[1],
        "qc": json.loads(o["qc"].read_text())["provenance"],
        "chunk": read_h5(prepared["chunks"][0])[1],
        "explore": read_h5(o["explore"])[1],
        "fit": read_h5(reference_fit / "sub-01_fit.h5")[1],
        "params": json.loads((reference_fit / "sub-01_desc-fitted_params.json").read_text())[
            "provenance"
        ],
    }
    expected_inputs = {
        "connectome": {prepared["src"][k] for k in ("weights", "lengths", "labels")},
        "empirical": {prepared["src"]["bold"], o["connectome"]},
        "qc": {prepared["src"]["bold"], o["connectome"]},
        "chunk": {o["connectome"], o["empirical"]},
        "explore": set(prepared["chunks"]),
        "fit": {o["connectome"], o["empirical"], o["explore"]},
        "params": {o["connectome"], o["empirical"], o["explore"]},
    }
    for name, a in files.items():
        assert {"config_hash", "versions", "seeds", "inputs"} <= set(a), name
        assert "xla_cpu_small_while_loop_byte_threshold" in a["xla_flags"], name
        assert len(a["config_hash"]) == 16 and int(a["config_hash"], 16) >= 0, name
        assert {"python", "bnmfit", "jax", "jaxlib", "numpy", "scipy", "optax", "h5py"} <= set(
            a["versions"]
        ), name
        assert {Path(p) for p in a["inputs"]} == expected_inputs[name], name
        for p, digest in a["inputs"].items():
            assert digest == sha256(p), (name, p)  # the checksum of the file as it is
    assert files["chunk"]["seeds"] == [0] and files["explore"]["seeds"] == [0]
    assert files["fit"]["seeds"] == {"fit": 0, "heldout": [1000], "explore": [0]}
    assert files["params"]["seeds"] == files["fit"]["seeds"]
    assert files["connectome"]["seeds"] is None and files["empirical"]["seeds"] is None


# =========================================================================== snakemake


@pytest.mark.slow
def test_jobs_never_share_an_output(tmp_path):
    """The dry run of two subjects: every declared output belongs to exactly one job, and
    every subject's outputs are under its own folder."""
    wd = _workdir(tmp_path)
    r = snakemake("-n", *_base(wd), cwd=wd, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = [
        ln.split("output:", 1)[1].split(",")
        for ln in r.stdout.splitlines()
        if ln.lstrip().startswith("output:")
    ]
    outputs = [p.strip() for job in jobs for p in job]
    assert len(jobs) == 15 and len(outputs) == len(set(outputs))  # all but rule all
    for p in outputs:
        assert p.startswith(
            (
                "results/sub-01/",
                "results/sub-02/",
                "results/cohort",
                "results/figures/cohort",
                "results/dataset_description",
                "results/config.yaml",
            )
        ), p


@pytest.mark.slow
def test_a_cohort_with_missing_files_fails_once_listing_all(tmp_path):
    wd = _workdir(tmp_path)
    sheet = (wd / "subjects.tsv").read_text().replace("sub-02_desc-weights", "sub-02_desc-w8s")
    (wd / "subjects.tsv").write_text(sheet.replace("sub-01_task-rest", "sub-01_task-rst"))
    r = snakemake("-n", *_base(wd), cwd=wd, timeout=300)
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert (
        "invalid configuration: subjects.tsv: 2 file(s) of the subjects sheet do not exist: "
        "sub-01 bold resources/sub-01/sub-01_task-rst_timeseries.tsv.gz; sub-02 sc_weights "
        "resources/sub-02/sub-02_desc-w8s_relmat.tsv"
    ) in text, text[-3000:]


@pytest.mark.slow
def test_a_second_snakemake_in_the_same_directory_is_refused_by_the_lock(tmp_path):
    """While one snakemake runs, another one in the same directory stops with a LockException
    and writes nothing; after the first is killed (SIGKILL: its lock stays), `--unlock`
    releases the directory, as workflow/README.md says."""
    wd = _workdir(tmp_path)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    first = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", *map(str, _base(wd))],
        cwd=wd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    locks = wd / ".snakemake" / "locks"
    try:
        t0 = time.monotonic()
        while not (locks.is_dir() and any(locks.iterdir())):
            assert first.poll() is None, "the first snakemake ended before locking"
            assert time.monotonic() - t0 < 120, "no lock after 120 s"
            time.sleep(0.1)
        second = snakemake("--cores", "1", *_base(wd), cwd=wd, timeout=300)
        assert first.poll() is None, "the first run ended before the second one was tried"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    assert second.returncode != 0
    text = second.stdout + second.stderr
    assert "LockException" in text and "--unlock" in text, text[-3000:]
    assert any(locks.iterdir())  # SIGKILL leaves the lock behind
    r = snakemake("--unlock", *_base(wd), cwd=wd, timeout=300)
    assert r.returncode == 0 and "Unlocked working directory" in r.stdout + r.stderr, r.stderr
    assert not locks.is_dir() or not any(locks.iterdir())
    readme = (ROOT / "workflow" / "README.md").read_text()
    assert "--unlock" in readme


@pytest.mark.slow
def test_partially_deleted_results_are_regenerated_identically(run_dir):
    """Delete one exploration chunk of sub-01 from the session's workflow run and ask
    Snakemake for it again: it comes back bitwise (datasets and attributes but wall time and
    input paths). Then `--touch` marks the rest up to date again (no rerun downstream)."""
    chunk = run_dir / "results" / "sub-01" / "explore" / "chunk-1.h5"

    def snapshot():
        d, a = read_h5(chunk)
        a.pop("wall_time", None)
        return d, a

    before = snapshot()
    backup = chunk.read_bytes()
    # re-running a chunk removes the pages that show it (sub-01's, the cohort's); kept here
    pages = {
        p: p.read_bytes()
        for p in (run_dir / "results").rglob("*")
        if p.suffix in (".html", ".tsv", ".png")
    }
    chunk.unlink()
    try:
        r = snakemake("--cores", 2, chunk.relative_to(run_dir), *_base(run_dir), cwd=run_dir)
        assert r.returncode == 0, r.stderr[-3000:]
        counts = job_counts(r.stdout + r.stderr)
        assert counts == {"explore": 1}, counts
    finally:  # the session's run stays complete for the other tests
        if not chunk.exists():
            chunk.write_bytes(backup)
    after = snapshot()
    _assert_identical(after[0], before[0], "datasets")
    _assert_identical(after[1], before[1], "attrs")
    for p, data in pages.items():
        if not p.exists():
            p.write_bytes(data)
    r = snakemake("--cores", 1, "--touch", *_base(run_dir), cwd=run_dir, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
