"""The click scripts of scripts/: help, a good run of each (one small pipeline on a synthetic
6-region subject), and each error path's one-line message and exit code
(0 ok, 1 data error, 2 usage or configuration error)."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from bnmfit import cli, results
from bnmfit.errors import ConfigError, DataError
from bnmfit.results import read_h5

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [
    "ingest_connectome",
    "empirical_fc",
    "explore",
    "gather_explore",
    "refine",
    "report",
    "cohort_report",
]
N = 6
T = 120
TR = 0.72

# a small, fast configuration: 4 grid points in 2 chunks, 1 stage of 2 steps
CONFIG = {
    "simulation": {"dt": 10.0, "duration": 28800.0, "transient": 1440.0},  # 40 TRs
    "observation": {"fcd_window": 10, "fcd_step": 5},
    "loss": {"expression": "1 - correlation(fc, empirical_fc) + 0.5"},
    "exploration": {
        "parameters": [
            {"name": "G", "lo": 0.2, "hi": 0.8, "n": 2},
            {"name": "w", "lo": 0.3, "hi": 0.6, "n": 2},
        ],
        "chunks": 2,
        "seeds": 1,
        "batch_size": 4,
    },
    "refinement": {
        "starts": 2,
        "heldout_seeds": [1000],
        "checkpoint_every": 2,
        "stages": [
            {
                "name": "global",
                "steps": 2,
                "learning_rate": 0.05,
                "free_parameters": [
                    {"name": "G", "domain": {"lo": 0.01, "hi": 1.5}},
                    {"name": "w", "domain": {"lo": 0.01, "hi": 1.0}},
                ],
            }
        ],
    },
    "report": {"dpi": 30, "bold_traces": 2},
}


def load(name):
    spec = importlib.util.spec_from_file_location(
        f"bnmfit_script_{name}", ROOT / "scripts" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def run(name, args):
    result = CliRunner().invoke(load(name), [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def error_line(result) -> str:
    """The one error line a failed script printed (``Error: ...``)."""
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


# =========================================================================== help


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_has_an_example(name, flag):
    r = run(name, [flag])
    assert r.exit_code == 0
    assert "Example:" in r.output and f"scripts/{name}.py" in r.output
    assert "Usage:" in r.output


@pytest.mark.parametrize("name", SCRIPTS)
def test_unknown_option_is_a_usage_error(name):
    r = run(name, ["--no-such-option"])
    assert r.exit_code == 2
    assert "No such option '--no-such-option'" in r.output


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("ingest_connectome", ["--subject", "x", "--weights", "missing.tsv", "--output", "o"]),
        ("empirical_fc", ["--subject", "x", "--connectome", "missing.h5", "--output", "o"]),
        (
            "explore",
            [
                "--subject",
                "x",
                "--connectome",
                "missing.h5",
                "--empirical",
                "missing.h5",
                "--output",
                "o",
            ],
        ),
        (
            "gather_explore",
            ["--subject", "x", "--config-json", "{}", "--output", "o", "missing.h5"],
        ),
        (
            "refine",
            [
                "--subject",
                "x",
                "--connectome",
                "missing.h5",
                "--empirical",
                "m.h5",
                "--explore",
                "m.h5",
                "--output-params",
                "p",
                "--output-fit",
                "f",
            ],
        ),
        (
            "report",
            ["--subject", "x", "--fit", "missing.h5", "--config-json", "{}", "--output", "o"],
        ),
        (
            "cohort_report",
            [
                "--subject",
                "x",
                "--params-json",
                "missing.json",
                "--config-json",
                "{}",
                "--output",
                "o",
                "--table",
                "t",
            ],
        ),
    ],
)
def test_missing_input_file_is_a_usage_error(name, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run(name, args)
    assert r.exit_code == 2
    assert "does not exist" in r.output and "missing" in r.output


# =========================================================================== a small cohort


def _subject(tmp: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 50, (N, N)).astype(float)
    w = np.triu(w, 1) + np.triu(w, 1).T
    ln = 20 + 80 * rng.random((N, N))
    ln = (ln + ln.T) / 2
    np.fill_diagonal(ln, 0)
    labels = [f"R{i}" for i in range(N)]
    d = tmp / "data"
    d.mkdir(exist_ok=True)
    paths = {
        "weights": d / "weights.tsv",
        "lengths": d / "lengths.tsv",
        "bold": d / "bold.tsv",
        "labels": d / "labels.txt",
    }
    np.savetxt(paths["weights"], w, delimiter="\t")
    np.savetxt(paths["lengths"], ln, delimiter="\t")
    mix = rng.standard_normal((N, N)) * 0.5 + np.eye(N)
    bold = rng.standard_normal((T, N)) @ mix
    with open(paths["bold"], "w") as fh:
        fh.write("\t".join(labels) + "\n")
        for row in bold:
            fh.write("\t".join(f"{x:.6f}" for x in row) + "\n")
    paths["labels"].write_text("\n".join(labels) + "\n")
    return paths


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Every script once, in workflow order, on one synthetic subject."""
    tmp = tmp_path_factory.mktemp("pipeline")
    src = _subject(tmp)
    cfg_path = tmp / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(CONFIG))
    out = {
        k: tmp / v
        for k, v in {
            "connectome": "sub-01_connectome.h5",
            "empirical": "sub-01_desc-empirical_fc.h5",
            "qc": "sub-01_desc-empirical_qc.json",
            "chunk0": "explore/chunk-0.h5",
            "chunk1": "explore/chunk-1.h5",
            "explore": "sub-01_explore.h5",
            "params": "sub-01_desc-fitted_params.json",
            "fit": "sub-01_fit.h5",
            "report": "sub-01_report.html",
            "figures": "figures",
            "cohort": "cohort_report.html",
            "table": "cohort_params.tsv",
            "description": "dataset_description.json",
            "resolved": "config.yaml.resolved",
            "cohort_figures": "cohort_figures",
        }.items()
    }
    results, calls = {}, []

    def run(name, args):  # every call kept, for the rerun test
        calls.append((name, list(args)))
        return globals()["run"](name, args)  # the module's runner

    results["ingest"] = run(
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
            "--normalise",
            "max",
            "--output",
            out["connectome"],
        ],
    )
    results["empirical"] = run(
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
    )
    cfg_json = json.dumps(CONFIG)
    for k in (0, 1):
        results[f"explore{k}"] = run(
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
                "--config-json",
                cfg_json,
                "--output",
                out[f"chunk{k}"],
            ],
        )
    results["gather"] = run(
        "gather_explore",
        [
            "--subject",
            "01",
            "--config",
            cfg_path,
            "--output",
            out["explore"],
            out["chunk1"],
            out["chunk0"],
        ],
    )  # any order
    results["refine"] = run(
        "refine",
        [
            "--subject",
            "01",
            "--connectome",
            out["connectome"],
            "--empirical",
            out["empirical"],
            "--explore",
            out["explore"],
            "--config",
            cfg_path,
            "--checkpoint-dir",
            tmp / ".checkpoints",
            "--output-params",
            out["params"],
            "--output-fit",
            out["fit"],
        ],
    )
    results["report"] = run(
        "report",
        [
            "--subject",
            "01",
            "--connectome",
            out["connectome"],
            "--empirical",
            out["empirical"],
            "--explore",
            out["explore"],
            "--fit",
            out["fit"],
            "--params",
            out["params"],
            "--config",
            cfg_path,
            "--figures",
            out["figures"],
            "--output",
            out["report"],
        ],
    )
    results["cohort"] = run(
        "cohort_report",
        [
            "--subject",
            "01",
            "--params-json",
            out["params"],
            "--fit-h5",
            out["fit"],
            "--config",
            cfg_path,
            "--output",
            out["cohort"],
            "--table",
            out["table"],
            "--description",
            out["description"],
            "--resolved-config",
            out["resolved"],
            "--figures",
            out["cohort_figures"],
        ],
    )
    return {"tmp": tmp, "src": src, "out": out, "results": results, "cfg": cfg_path, "calls": calls}


@pytest.mark.slow
def test_every_script_succeeds(pipeline):
    for name, r in pipeline["results"].items():
        assert r.exit_code == 0, f"{name}: {r.output}"
    out = pipeline["out"]
    for key in (
        "connectome",
        "empirical",
        "qc",
        "chunk0",
        "chunk1",
        "explore",
        "params",
        "fit",
        "report",
        "cohort",
        "table",
        "description",
        "resolved",
    ):
        assert out[key].is_file(), key
    # no temporary files are left next to the outputs
    assert not [p for p in pipeline["tmp"].rglob(".*.tmp*")]


@pytest.mark.slow
def test_ingest_output(pipeline):
    d, a = read_h5(pipeline["out"]["connectome"])
    assert d["weights"].shape == (N, N) and d["weights"].max() == pytest.approx(1.0)
    assert d["labels"] == [f"R{i}" for i in range(N)]  # from --labels
    assert a["normalisation"] == "max" and a["symmetric"] is False
    assert set(a["inputs"]) == {str(pipeline["src"][k]) for k in ("weights", "lengths", "labels")}
    assert all(len(v) == 64 for v in a["inputs"].values())
    assert "jax" in a["versions"] and len(a["config_hash"]) == 16


@pytest.mark.slow
def test_empirical_output(pipeline):
    d, a = read_h5(pipeline["out"]["empirical"])
    # validation.split 0.5: the last half of the volumes after the 5 discarded is held out
    n_val = round(0.5 * (T - 5))
    n_fit = T - 5 - n_val
    assert d["bold"].shape == (n_fit, N) and d["fc"].shape == (N, N)
    assert d["fcd"].shape == ((n_fit - 10) // 5 + 1,) * 2
    assert a["tr"] == pytest.approx(TR) and a["n_tr"] == n_fit
    v = results.EmpiricalFile.read(pipeline["out"]["empirical"]).validation
    assert v.fc.shape == (N, N) and v.n_tr == n_val and v.fcd.shape == ((n_val - 10) // 5 + 1,) * 2
    assert f"volumes {T - n_val + 1}–{T}" in v.source
    qc = json.loads(pipeline["out"]["qc"].read_text())
    assert qc["n_tr_used"] == n_fit and qc["subject"] == "01"
    assert qc["sc_fc_r"] is not None and qc["validation"]["n_tr"] == n_val


@pytest.mark.slow
def test_empirical_from_a_precomputed_fc(pipeline, tmp_path):
    fc, _ = read_h5(pipeline["out"]["empirical"])
    path = tmp_path / "fc.tsv"
    np.savetxt(path, fc["fc"], delimiter="\t")
    out = tmp_path / "e.h5"
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            pipeline["out"]["connectome"],
            "--fc",
            path,
            "--fcd-window",
            10,
            "--output",
            out,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "no BOLD, so no FCD" in r.output
    d, a = read_h5(out)
    np.testing.assert_allclose(d["fc"], fc["fc"], atol=1e-6)
    assert d["bold"] is None and d["fcd"] is None and a["n_tr"] == -1
    from bnmfit.config import validate_config
    from bnmfit.recipe import problem_from_files

    cfg = validate_config({"observation": {"fcd_window": 0}})
    with pytest.raises(ConfigError, match="no TR for the simulated BOLD: set observation.tr"):
        problem_from_files(cfg, pipeline["out"]["connectome"], out)
    cfg = validate_config({"observation": {"fcd_window": 0, "tr": 0.72}})
    with pytest.raises(ConfigError, match="set simulation.duration"):
        problem_from_files(cfg, pipeline["out"]["connectome"], out)
    cfg = validate_config(
        {"observation": {"fcd_window": 0, "tr": 0.72}, "simulation": {"duration": 7200.0}}
    )
    assert problem_from_files(cfg, pipeline["out"]["connectome"], out).spec.n_tr == 10
    # the same FC stored as Fisher z with an inf diagonal: refused, or converted when the
    # sheet says so (fc_transform: fisher_z → --fc-transform fisher_z)
    z = np.arctanh(np.clip(fc["fc"], -0.999999, 0.999999))
    np.fill_diagonal(z, np.inf)
    np.savetxt(path, z, delimiter="\t")
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            pipeline["out"]["connectome"],
            "--fc",
            path,
            "--fcd-window",
            0,
            "--output",
            out,
        ],
    )
    assert r.exit_code == 1 and "set the sheet column fc_transform to fisher_z" in r.output
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            pipeline["out"]["connectome"],
            "--fc",
            path,
            "--fc-transform",
            "fisher_z",
            "--fcd-window",
            0,
            "--output",
            out,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "converted to correlations by tanh" in r.output
    np.testing.assert_allclose(read_h5(out)[0]["fc"], fc["fc"], atol=1e-5)


@pytest.mark.slow
def test_explore_and_gather_outputs(pipeline):
    c0, a0 = read_h5(pipeline["out"]["chunk0"])
    c1, _ = read_h5(pipeline["out"]["chunk1"])
    assert c0["names"] == ["G", "w"] and list(c0["index"]) == [0, 1]
    assert list(c1["index"]) == [2, 3]
    assert c0["loss"].shape == (2, 1) and a0["seeds"] == [0]
    assert a0["loss_offset"] == 0.5 and a0["chunk"] == 0 and a0["n_chunks"] == 2
    g, ga = read_h5(pipeline["out"]["explore"])
    assert g["points"].shape == (4, 2) and g["loss"].shape == (4, 1)
    np.testing.assert_allclose(g["points"], [[0.2, 0.3], [0.2, 0.6], [0.8, 0.3], [0.8, 0.6]])
    np.testing.assert_allclose(g["mean_loss"][:2], c0["mean_loss"])
    assert 1 <= len(g["top"]) <= 2
    assert g["mean_loss"][g["top"][0]] == np.nanmin(g["mean_loss"])
    assert ga["axes"][0]["name"] == "G" and ga["sampler"] == "grid"
    assert np.all(g["mean_loss"][np.isfinite(g["mean_loss"])] >= 0.5)  # offset added


@pytest.mark.slow
def test_refine_outputs(pipeline):
    p = json.loads(pipeline["out"]["params"].read_text())
    assert p["subject"] == "01" and set(p["params"]) >= {"G", "w"}
    for k in ("fc_r", "fc_rmse", "fcd_ks"):
        assert np.isfinite(p["metrics"][k]), k
    assert set(p["metrics"]["stages"]) == {"global"}
    assert "wall_time" not in p  # timings: logs and benchmark files (byte-reproducible)
    prov = p["provenance"]
    assert prov["seeds"]["heldout"] == [1000] and len(prov["config_hash"]) == 16
    assert str(pipeline["out"]["explore"]) in prov["inputs"]
    f, a = read_h5(pipeline["out"]["fit"])
    st = f["stage-0-global"]
    assert st["loss"].shape == (2, len(p["starts"]))
    assert st["grad_norm"].shape == st["loss"].shape and st["rejected"].dtype == bool
    assert set(st["traj"]) == {"G", "w"}
    assert f["sim_fc"].shape == (N, N) and f["sim_bold"].shape[1] == N
    assert f["sim_fcd"].ndim == 2
    assert a["best_start"] in range(len(p["starts"])) and "wall_time" not in a
    assert a["heldout_fc_r"] == pytest.approx(p["metrics"]["fc_r"])
    assert a["loss_offset"] == 0.5 and a["versions"]["jax"]
    assert not (pipeline["tmp"] / ".checkpoints").exists()  # removed after success
    # the typed records read back what the script wrote
    fit = results.FitFile.read(pipeline["out"]["fit"])
    stage = fit.stages[0]
    assert stage.name == "global" and stage.free == ["G", "w"] and not stage.kept_start
    np.testing.assert_array_equal(stage.history["loss"], st["loss"])
    assert fit.heldout["fc_r"] == pytest.approx(p["metrics"]["fc_r"])
    assert stage.heldout_loss == pytest.approx(p["metrics"]["stages"]["global"]["loss"])
    # loss values are the configured expression's, its constant 0.5 included, once
    assert p["metrics"]["loss"] == pytest.approx(1 - p["metrics"]["fc_r"] + 0.5, abs=1e-5)
    fitted = results.FittedParams.read(pipeline["out"]["params"])
    assert fitted.params == p["params"] and fitted.loss["offset"] == 0.5


@pytest.mark.slow
def test_report_and_cohort_outputs(pipeline):
    html = pipeline["out"]["report"].read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "sub-01" in html
    assert len(list(pipeline["out"]["figures"].glob("*.png"))) >= 1
    import pandas as pd

    table = pd.read_csv(pipeline["out"]["table"], sep="\t", dtype={"subject": str})
    assert list(table["subject"]) == ["01"]
    assert {"G", "w", "fc_r", "fc_rmse", "fcd_ks", "wall_time_s"} <= set(table.columns)
    desc = json.loads(pipeline["out"]["description"].read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bnmfit" and "GitCommit" in desc["GeneratedBy"][0]
    resolved = yaml.safe_load(pipeline["out"]["resolved"].read_text())
    assert resolved["exploration"]["chunks"] == 2 and "report" in resolved


# =========================================================================== error paths


def test_ingest_errors(tmp_path):
    bad = tmp_path / "neg.tsv"
    np.savetxt(bad, -2 * np.ones((3, 3)), delimiter="\t")
    r = run(
        "ingest_connectome", ["--subject", "01", "--weights", bad, "--output", tmp_path / "o.h5"]
    )
    assert r.exit_code == 1
    assert "negative" in error_line(r)
    assert not (tmp_path / "o.h5").exists()

    good = tmp_path / "w.tsv"
    np.savetxt(good, np.ones((3, 3)), delimiter="\t")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    r = run(
        "ingest_connectome",
        ["--subject", "01", "--weights", good, "--labels", labels, "--output", tmp_path / "o.h5"],
    )
    assert r.exit_code == 1
    assert error_line(r) == (
        f"Error: sub-01: {good}: expected 2 regions, one per label of the sheet column labels, "
        "got 3; give a labels file of this parcellation, one label per line"
    )

    r = run(
        "ingest_connectome",
        ["--subject", "01", "--weights", good, "--normalise", "sum", "--output", tmp_path / "o.h5"],
    )
    assert r.exit_code == 2 and "'sum' is not one of" in r.output


@pytest.mark.slow
def test_empirical_errors(pipeline, tmp_path):
    conn = pipeline["out"]["connectome"]
    r = run(
        "empirical_fc", ["--subject", "01", "--connectome", conn, "--output", tmp_path / "e.h5"]
    )
    assert r.exit_code == 2 and "give exactly one of --bold and --fc" in r.output
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            conn,
            "--bold",
            pipeline["src"]["bold"],
            "--tr",
            TR,
            "--fcd-window",
            500,
            "--output",
            tmp_path / "e.h5",
        ],
    )
    assert r.exit_code == 1
    assert "expected at least 505 volumes" in error_line(r)  # window 500 + the default step 5
    assert not (tmp_path / "e.h5").exists()
    short = tmp_path / "bold.npy"
    np.save(short, np.random.default_rng(0).standard_normal((50, N + 1)))
    r = run(
        "empirical_fc",
        [
            "--subject",
            "01",
            "--connectome",
            conn,
            "--bold",
            short,
            "--tr",
            TR,
            "--output",
            tmp_path / "e.h5",
        ],
    )
    assert r.exit_code == 1 and error_line(r).startswith("Error: ")


@pytest.mark.slow
def test_explore_errors(pipeline, tmp_path):
    base = [
        "--subject",
        "01",
        "--connectome",
        pipeline["out"]["connectome"],
        "--empirical",
        pipeline["out"]["empirical"],
        "--output",
        tmp_path / "c.h5",
    ]
    r = run("explore", base + ["--chunk", 5, "--config-json", json.dumps(CONFIG)])
    assert r.exit_code == 2
    assert error_line(r) == (
        "Error: sub-01: --chunk 5 is out of range: exploration.chunks is 2, so use 0 ≤ chunk < 2"
    )
    r = run("explore", base + ["--config-json", json.dumps({"explortion": {}})])
    assert r.exit_code == 2
    assert error_line(r).startswith(
        "Error: sub-01: --config-json: unknown key 'explortion' (did you mean 'exploration'?) "
        "at the top level; allowed keys: subjects, connectome"
    )
    r = run("explore", base + ["--config-json", "{not json"])
    assert r.exit_code == 2 and "--config-json: invalid JSON" in error_line(r)
    r = run("explore", base)
    assert r.exit_code == 2 and "give exactly one of --config FILE and --config-json" in r.output
    r = run("explore", base + ["--config", pipeline["cfg"], "--config-json", "{}"])
    assert r.exit_code == 2 and "give exactly one of" in r.output
    bad = dict(CONFIG, simulation={"dt": 7.0, "duration": 28800.0})
    r = run("explore", base + ["--config-json", json.dumps(bad)])
    assert r.exit_code == 2
    assert error_line(r) == (
        "Error: sub-01: simulation.dt = 7 ms does not divide the TR (720 ms): "
        "choose a dt that divides it (e.g. 4, 5, 6 ms), or null to let "
        "the workflow choose one"
    )
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.slow
def test_gather_errors(pipeline, tmp_path):
    out = pipeline["out"]
    r = run(
        "gather_explore",
        [
            "--subject",
            "01",
            "--config",
            pipeline["cfg"],
            "--output",
            tmp_path / "g.h5",
            out["chunk0"],
        ],
    )
    assert r.exit_code == 1
    assert error_line(r) == (
        "Error: sub-01: the chunks cover 2 of 4 points (missing [2, 3]); give every chunk file"
    )
    r = run(
        "gather_explore",
        [
            "--subject",
            "01",
            "--config",
            pipeline["cfg"],
            "--output",
            tmp_path / "g.h5",
            out["chunk0"],
            out["chunk0"],
            out["chunk1"],
        ],
    )
    assert r.exit_code == 1 and "appear in more than one chunk" in error_line(r)
    assert not (tmp_path / "g.h5").exists()


@pytest.mark.slow
def test_refine_and_report_errors(pipeline, tmp_path):
    out = pipeline["out"]
    from bnmfit.results import write_h5

    d, a = read_h5(out["explore"])
    d["top"] = np.zeros(0, dtype=np.int64)
    empty = tmp_path / "explore.h5"
    write_h5(empty, d, a)
    r = run(
        "refine",
        [
            "--subject",
            "01",
            "--connectome",
            out["connectome"],
            "--empirical",
            out["empirical"],
            "--explore",
            empty,
            "--config",
            pipeline["cfg"],
            "--output-params",
            tmp_path / "p.json",
            "--output-fit",
            tmp_path / "f.h5",
        ],
    )
    assert r.exit_code == 1 and "no refinement starts" in error_line(r)
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "f.h5").exists()

    notfit = tmp_path / "notfit.h5"
    notfit.write_text("not hdf5")
    r = run(
        "report",
        [
            "--subject",
            "01",
            "--fit",
            notfit,
            "--config",
            pipeline["cfg"],
            "--output",
            tmp_path / "r.html",
        ],
    )
    assert r.exit_code == 1 and error_line(r).startswith("Error: ")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.slow
def test_cohort_errors(pipeline, tmp_path):
    out = pipeline["out"]
    r = run(
        "cohort_report",
        [
            "--subject",
            "01",
            "--subject",
            "02",
            "--params-json",
            out["params"],
            "--config",
            pipeline["cfg"],
            "--output",
            tmp_path / "c.html",
            "--table",
            tmp_path / "t.tsv",
        ],
    )
    assert r.exit_code == 2
    assert "give one --params-json (and --fit-h5) per --subject: got 2 subjects" in r.output


# =========================================================================== cli helpers


def test_error_translation_and_exit_codes():
    import click

    @cli.command()
    @click.argument("kind")
    def main(kind):
        if kind == "data":
            raise DataError("x.tsv: expected a number,\n  got 'a'; fix it")
        if kind == "config":
            raise ConfigError("config: unknown key 'x'")
        if kind == "file":
            open("/nonexistent/dir/file")
        if kind == "bug":
            raise RuntimeError("a bug")

    runner = CliRunner()
    r = runner.invoke(main, ["data"])
    assert r.exit_code == 1 and r.output == "Error: x.tsv: expected a number, got 'a'; fix it\n"
    r = runner.invoke(main, ["config"])
    assert r.exit_code == 2 and r.output == "Error: config: unknown key 'x'\n"
    r = runner.invoke(main, ["file"])
    assert r.exit_code == 1 and "/nonexistent/dir/file: No such file or directory" in r.output
    r = runner.invoke(main, ["bug"])
    assert r.exit_code == 1 and isinstance(r.exception, RuntimeError)  # bugs keep a traceback
    r = runner.invoke(main, ["ok"])
    assert r.exit_code == 0


def test_progress_logs_periodic_lines_off_a_terminal(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(cli.time, "monotonic", lambda: clock[0])
    buf = io.StringIO()
    p = cli.Progress("explore sub-01", total=100, interval=10.0, stream=buf, tty=False)
    for i in range(1, 101):
        clock[0] = i * 0.5  # 0.5 s per item
        p.update(i)
    p.close()
    lines = buf.getvalue().splitlines()
    assert 5 <= len(lines) <= 7  # one per 10 s of 50 s, and the last
    assert lines[-1].endswith("explore sub-01: 100/100 (100%), 50 s elapsed")
    assert "ETA" in lines[0] and "\r" not in buf.getvalue()


def test_progress_draws_a_bar_on_a_terminal():
    buf = io.StringIO()
    with cli.Progress("refine", total=4, stream=buf, tty=True) as p:
        for i in range(1, 5):
            p.update(i, info=f"loss {1 / i:.2f}")
    text = buf.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "[" + "#" * 24 + "] refine: 4/4 (100%)" in text and "loss 0.25" in text


def test_read_labels(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("# labels\nA\nB\n\n")
    assert cli.read_labels(p) == ["A", "B"]
    p.write_text("index\tname\n1\tA\n2\tB\n")
    assert cli.read_labels(p) == ["A", "B"]
    p.write_text("index\tcolour\n1\tred\n")
    with pytest.raises(DataError, match="expected a TSV of labels to have a name or label column"):
        cli.read_labels(p)


@pytest.mark.slow
def test_a_rerun_writes_byte_identical_result_files(pipeline):
    """The same inputs and config give the same bytes: every result file (connectome,
    empirical FC and QC, chunks, landscape, fit, fitted parameters) written again by the
    same commands has the same SHA-256 — no wall time or HDF5 timestamp inside."""
    import hashlib

    out = pipeline["out"]
    keys = ("connectome", "empirical", "qc", "chunk0", "chunk1", "explore", "params", "fit")

    def digests():
        return {k: hashlib.sha256(out[k].read_bytes()).hexdigest() for k in keys}

    before = digests()
    for name, args in pipeline["calls"]:
        if name not in ("report", "cohort_report"):
            r = run(name, args)
            assert r.exit_code == 0, f"{name}: {r.output}"
    assert digests() == before


@pytest.mark.slow
def test_wall_times_come_from_benchmark_files(pipeline, tmp_path):
    """The report and the cohort table take wall times from Snakemake's benchmark TSVs."""
    bench = tmp_path / "refine.tsv"
    bench.write_text("s\th:m:s\tmax_rss\n125.5\t0:02:05\t100\n")
    out = pipeline["out"]
    html, table = tmp_path / "r.html", tmp_path / "t.tsv"
    r = run(
        "report",
        [
            "--subject",
            "01",
            "--fit",
            out["fit"],
            "--params",
            out["params"],
            "--explore",
            out["explore"],
            "--benchmark",
            "refine",
            bench,
            "--benchmark",
            "explore",
            tmp_path / "absent.tsv",
            "--config",
            pipeline["cfg"],
            "--output",
            html,
        ],
    )
    assert r.exit_code == 0, r.output
    assert "2.1 min (126 s)" in html.read_text()  # refine's benchmark; the absent one skipped
    r = run(
        "cohort_report",
        [
            "--subject",
            "01",
            "--params-json",
            out["params"],
            "--fit-h5",
            out["fit"],
            "--benchmark",
            bench,
            "--config",
            pipeline["cfg"],
            "--output",
            tmp_path / "c.html",
            "--table",
            table,
        ],
    )
    assert r.exit_code == 0, r.output
    import pandas as pd

    assert pd.read_csv(table, sep="\t")["wall_time_s"].tolist() == [125.5]
