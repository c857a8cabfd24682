"""bnmfit.errors and the messages users read: the one message for a value outside its allowed
set; every script's errors and warnings name the subject, the subjects-sheet column or config
key that fixes them, and regions by the sheet's labels."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from bnmfit import cli
from bnmfit.errors import (
    ConfigError,
    DataError,
    close_match,
    for_subject,
    region_name,
    unknown_choice,
)
from bnmfit.io import align
from bnmfit.io._files import read_text
from tests.test_scripts import error_line, run


def test_close_match_prefers_a_case_difference_then_a_near_spelling():
    assert close_match("ADAM", ["adamw", "adam"]) == "adam"
    assert close_match("adamm", ["sgd", "adam"]) == "adam"
    assert close_match("rk4", ["heun", "euler"]) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("sampler", "grdi", ("grid", "zip")),
            "unknown sampler 'grdi' (did you mean 'grid'?): use one of grid, zip",
        ),
        (
            ("integrator", "rk4", ("heun", "euler")),
            "unknown integrator 'rk4': use one of heun, euler",
        ),
        (
            ("function", "corelation", ("correlation", "rmse"), " at column 5"),
            "unknown function 'corelation' at column 5 (did you mean 'correlation'?): use one of "
            "correlation, rmse",
        ),
    ],
)
def test_unknown_choice(args, message):
    assert unknown_choice(*args) == message


# =========================================================================== in the user's words
# One test per message class: each message a script prints names the subject (sub-07) and the
# subjects-sheet column or config key that fixes it, and regions by the sheet's labels.

SUBJECT = "07"
LABELS = ["Left-Thalamus", "Right-Thalamus", "Left-Putamen", "Right-Putamen", "Left-Caudate"]
N = len(LABELS)


def _sc(tmp_path: Path, w: np.ndarray | None = None, name: str = "w.tsv") -> Path:
    """A headerless SC matrix (strings allowed, e.g. n/a)."""
    w = np.arange(1.0, N * N + 1).reshape(N, N) if w is None else w
    p = tmp_path / name
    p.write_text("\n".join("\t".join(str(x) for x in row) for row in np.asarray(w)) + "\n")
    return p


def _labels(tmp_path: Path, labels=LABELS) -> Path:
    p = tmp_path / "labels.txt"
    p.write_text("\n".join(labels) + "\n")
    return p


def _ingest(tmp_path: Path, *args):
    return run("ingest_connectome", ["--subject", SUBJECT, "--output", tmp_path / "c.h5", *args])


def _connectome(tmp_path: Path) -> Path:
    r = _ingest(tmp_path, "--weights", _sc(tmp_path), "--labels", _labels(tmp_path))
    assert r.exit_code == 0, r.output
    return tmp_path / "c.h5"


def _bold(tmp_path: Path, n: int = N, t: int = 60, name: str = "bold.tsv") -> Path:
    """A headerless time × regions BOLD text file (no sidecar)."""
    x = np.random.default_rng(0).standard_normal((t, n))
    p = tmp_path / name
    p.write_text("\n".join("\t".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    return p


def _empirical(tmp_path: Path, *args):
    fast = ["--fcd-window", 0, "--validation-split", 0]
    return run(
        "empirical_fc",
        ["--subject", SUBJECT, "--output", tmp_path / "e.h5", *fast, *args],
    )


def _error(r, exit_code: int = 1) -> str:
    """The error line of a failed script, after checking it names the subject."""
    assert r.exit_code == exit_code, r.output
    line = error_line(r)
    assert line.startswith(f"Error: sub-{SUBJECT}: "), line
    return line


def test_for_subject_prefixes_once():
    assert for_subject("x.tsv: bad", "07") == "sub-07: x.tsv: bad"
    assert for_subject("sub-07: x.tsv: bad", "07") == "sub-07: x.tsv: bad"
    assert for_subject("x.tsv: bad", None) == "x.tsv: bad"
    assert region_name(LABELS, 2) == "Left-Putamen (column 3)"
    assert region_name(None, 2, "region") == "region 3"


def test_a_script_with_a_subject_names_it_in_every_error_and_library_warning(tmp_path):
    @cli.command()
    @click.option("--subject")
    @click.argument("kind")
    def main(subject, kind):
        if kind == "data":
            raise DataError("x.tsv: expected a number,\n  got 'a'; fix it")
        if kind == "prefixed":
            raise ConfigError(f"sub-{subject}: config: unknown key 'x'")
        if kind == "file":
            open(tmp_path / "no" / "file")
        if kind == "warn":
            read_text(plain)  # the library warns: a .gz name on plain text

    plain = tmp_path / "x.tsv.gz"
    plain.write_text("1\t2\n")
    runner = CliRunner()
    r = runner.invoke(main, ["--subject", SUBJECT, "data"])
    assert (r.exit_code, r.output) == (
        1,
        "Error: sub-07: x.tsv: expected a number, got 'a'; fix it\n",
    )
    r = runner.invoke(main, ["--subject", SUBJECT, "prefixed"])
    assert (r.exit_code, r.output) == (2, "Error: sub-07: config: unknown key 'x'\n")
    r = runner.invoke(main, ["--subject", SUBJECT, "file"])
    assert r.exit_code == 1 and error_line(r).startswith(f"Error: sub-07: {tmp_path / 'no'}")
    r = runner.invoke(main, ["data"])  # no subject: nothing to name
    assert r.output == "Error: x.tsv: expected a number, got 'a'; fix it\n"
    r = runner.invoke(main, ["--subject", SUBJECT, "warn"])
    assert r.exit_code == 0 and "UserWarning" not in r.output
    (line,) = r.output.splitlines()
    assert line.endswith(
        f"] warning: sub-07: {plain}: expected gzip-compressed data (the name "
        "ends in .gz), got uncompressed content; read as it is: compress it "
        "(gzip) or drop .gz from its name"
    )


def test_missing_sc_entries_name_connectome_missing_and_the_regions(tmp_path):
    w = np.ones((N, N)).astype(object)
    w[0, 2] = w[2, 0] = "n/a"
    sc = _sc(tmp_path, w)
    line = _error(_ingest(tmp_path, "--weights", sc, "--labels", _labels(tmp_path)))
    assert line == (
        f"Error: sub-07: {sc}: expected a complete matrix, got 2 missing entries (n/a, NaN or "
        "-1; first at row 1, column 3: Left-Thalamus × Left-Putamen); fill them in, or set "
        "connectome.missing: zero in the config to read them as absent connections"
    )
    assert not (tmp_path / "c.h5").exists()
    r = _ingest(tmp_path, "--weights", sc, "--labels", _labels(tmp_path), "--missing", "zero")
    assert r.exit_code == 0, r.output


def test_wrong_format_names_sc_format_and_bold_format(tmp_path):
    sc = _sc(tmp_path)
    line = _error(_ingest(tmp_path, "--weights", sc, "--format", "ptseries"))
    assert f"{sc}: expected a connectome (" in line
    assert (
        "got ptseries (the sheet column sc_format); give a file of one of those formats, "
        "or set sc_format to the file's format" in line
    )
    line = _error(_ingest(tmp_path, "--weights", sc, "--format", "xlsx"), exit_code=2)
    assert "expected the sheet column sc_format to be one of tsv, csv" in line
    odd = tmp_path / "w.xyz"
    odd.write_text("1\t2\n2\t1\n")
    line = _error(_ingest(tmp_path, "--weights", odd))
    assert (
        "got an unrecognised file name; rename the file or set the sheet column sc_format" in line
    )
    conn, bold = _connectome(tmp_path), _bold(tmp_path)
    line = _error(_empirical(tmp_path, "--connectome", conn, "--bold", bold, "--format", "pconn"))
    assert f"{bold}: expected BOLD time series (" in line
    assert "got pconn (the sheet column bold_format)" in line


def test_missing_mat_variable_names_sc_key_lengths_key_and_bold_key(tmp_path):
    mat = tmp_path / "sc.mat"
    scipy.io.savemat(mat, {"sc": np.ones((N, N)), "len": np.ones((N, N))})
    line = _error(_ingest(tmp_path, "--weights", mat, "--key", "W"))
    assert line == (
        f"Error: sub-07: {mat}: expected a variable 'W', got variables len, sc; set the sheet "
        "column sc_key to one of them"
    )
    line = _error(_ingest(tmp_path, "--weights", mat, "--lengths", mat, "--lengths-key", "L"))
    assert (
        "expected a variable 'L', got variables len, sc; set the sheet column lengths_key" in line
    )
    bold = tmp_path / "bold.mat"
    scipy.io.savemat(bold, {"run1": np.ones((60, N)), "run2": np.ones((60, N))})
    conn = _connectome(tmp_path)
    line = _error(
        _empirical(tmp_path, "--connectome", conn, "--bold", bold, "--key", "ts", "--tr", 2)
    )
    assert (
        "expected a variable 'ts', got variables run1, run2; set the sheet column bold_key" in line
    )
    line = _error(_empirical(tmp_path, "--connectome", conn, "--bold", bold, "--tr", 2))
    assert "got several 2-D variables run1, run2; set the sheet column bold_key" in line


def test_region_count_mismatch_names_both_inputs_and_the_labels_column(tmp_path):
    r = _ingest(tmp_path, "--weights", _sc(tmp_path))  # no labels anywhere
    assert r.exit_code == 0, r.output
    conn, bold = tmp_path / "c.h5", _bold(tmp_path, n=N - 1)
    line = _error(_empirical(tmp_path, "--connectome", conn, "--bold", bold, "--tr", 2))
    assert "the connectome (sheet column sc_weights)" in line  # both sides: file and column
    assert f"{bold} (sheet column bold)" in line
    assert f"got {N} in the connectome and {N - 1} in the BOLD, with no region labels" in line
    assert "or a labels file in the sheet column labels" in line
    # with the sheet's labels (which name the connectome's regions), the BOLD is checked on reading
    labels = _labels(tmp_path)
    line = _error(
        _empirical(tmp_path, "--connectome", conn, "--bold", bold, "--labels", labels, "--tr", 2)
    )
    assert line == (
        f"Error: sub-07: {bold}: expected one axis of {N} regions, one per label of the sheet "
        f"column labels, got shape 60 × {N - 1}; give BOLD of the same parcellation as the "
        "labels (and as the connectome)"
    )
    sc = _sc(tmp_path, np.ones((N + 1, N + 1)), name="w6.tsv")
    line = _error(_ingest(tmp_path, "--weights", sc, "--labels", labels))
    assert line == (
        f"Error: sub-07: {sc}: expected {N} regions, one per label of the sheet column labels, "
        f"got {N + 1}; give a labels file of this parcellation, one label per line"
    )


def test_a_headerless_matrix_with_a_labels_file_names_regions_by_label(tmp_path):
    labels = _labels(tmp_path)
    w = np.ones((N, N))
    w[1, 3] = -2.5
    sc = _sc(tmp_path, w)
    line = _error(_ingest(tmp_path, "--weights", sc, "--labels", labels))
    assert "(first -2.5 at row 2, column 4: Right-Thalamus × Right-Putamen)" in line
    assert "region-" not in line
    w = np.ones((N, N))
    w[4, :] = w[:, 4] = 0.0
    sc = _sc(tmp_path, w)
    line = _error(_ingest(tmp_path, "--weights", sc, "--labels", labels, "--isolated", "error"))
    assert "1 isolated region(s) (all-zero row and column): Left-Caudate" in line
    assert "set connectome.isolated: warn" in line


def test_asymmetric_sc_and_isolated_region_warnings_name_the_keys(tmp_path):
    w = np.arange(1.0, N * N + 1).reshape(N, N)
    w[4, :] = w[:, 4] = 0.0
    np.fill_diagonal(w, 0.0)
    r = _ingest(tmp_path, "--weights", _sc(tmp_path, w), "--labels", _labels(tmp_path))
    assert r.exit_code == 0, r.output
    warnings = [ln.split("] ", 1)[1] for ln in r.output.splitlines() if "] warning: " in ln]
    assert len(warnings) == 2 and all(w.startswith("warning: sub-07: ") for w in warnings)
    isolated, asymmetric = warnings
    assert "sheet column sc_weights" in isolated and "connectome.isolated" in isolated
    assert isolated.endswith(
        "no connection, so they receive no input from the network: "
        "Left-Caudate; connectome.isolated: error refuses such subjects"
    )
    assert "between Left-Thalamus and Right-Putamen" in asymmetric
    assert asymmetric.endswith("connectome.symmetrise: true averages W and Wᵀ")
    assert "region-" not in r.output


def test_missing_tr_names_the_tr_column_and_bold_default_tr(tmp_path):
    conn, bold = _connectome(tmp_path), _bold(tmp_path)
    line = _error(_empirical(tmp_path, "--connectome", conn, "--bold", bold))
    assert line == (
        f"Error: sub-07: {bold}: expected a repetition time, got none (no RepetitionTime in "
        f"{tmp_path / 'bold.json'}, none in the header, and neither the sheet column tr nor "
        "bold.default_tr is set); add a JSON sidecar, fill the sheet column tr, or set "
        "bold.default_tr in the config (seconds)"
    )
    line = _error(_empirical(tmp_path, "--connectome", conn, "--bold", bold, "--tr", 720))
    assert line.startswith(
        f"Error: sub-07: {bold}: the TR (the sheet column tr, else bold.default_tr): expected "
        "the TR in seconds, got 720"
    )
    assert not (tmp_path / "e.h5").exists()


def test_nan_runs_in_bold_name_max_nan_run_and_the_region(tmp_path):
    conn, bold = _connectome(tmp_path), _bold(tmp_path)
    rows = bold.read_text().splitlines()
    for t in (10, 11):  # two missing volumes of Left-Putamen
        cells = rows[t].split("\t")
        cells[2] = "n/a"
        rows[t] = "\t".join(cells)
    bold.write_text("\n".join(rows) + "\n")
    line = _error(_empirical(tmp_path, "--connectome", conn, "--bold", bold, "--tr", 2))
    assert "got 2 in Left-Putamen (column 3) at volumes 11–12" in line
    assert "raise bold.max_nan_run in the config" in line
    r = _empirical(tmp_path, "--connectome", conn, "--bold", bold, "--tr", 2, "--max-nan-run", 2)
    assert r.exit_code == 0, r.output


def test_align_names_its_sources():
    with pytest.raises(DataError) as ei:
        align(4, 3, sources=("sc.tsv", "bold.tsv"))
    assert str(ei.value).startswith(
        "bold.tsv and sc.tsv: expected the same number of regions, got 4 in the connectome and "
        "3 in the BOLD"
    )
    with pytest.raises(DataError, match=r"^bold.tsv and sc.tsv: expected the same regions"):
        align(["a", "b"], ["a", "c"], sources=("sc.tsv", "bold.tsv"))
