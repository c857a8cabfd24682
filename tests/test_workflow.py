"""The Snakemake workflow, run as users run it (a subprocess): lint, the dry run of the
default config, and a real run of a tiny config (2 subjects of the example cohort, 4 grid
points, 2 steps per stage) — every output exists and is valid, a second run does nothing,
and changing one refinement setting reruns only refine, report and cohort_report."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SUBJECTS = ["01", "02"]


def snakemake(*args, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("JAX_ENABLE_X64", None)
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a (dry) run: rule → number of jobs."""
    m = re.search(r"Job stats:\n(.*?)\n\s*total\s+\d+", output, re.S)
    assert m, output[-3000:]
    counts = {}
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def _workdir(tmp: Path, config: dict | None = None) -> Path:
    """A working directory with the example cohort and the tiny config of tests/data."""
    (tmp / "resources").symlink_to(ROOT / "resources")
    shutil.copy(DATA / "subjects.tsv", tmp / "subjects.tsv")
    cfg = yaml.safe_load((DATA / "config.yaml").read_text())
    cfg["subjects"] = "subjects.tsv"
    if config:
        cfg.update(config)
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return tmp


def _base(tmp: Path, configfile: str = "config.yaml") -> list:
    return ["--snakefile", ROOT / "Snakefile", "--directory", tmp, "--configfile", tmp / configfile]


# =========================================================================== parse only


def test_lint_is_clean():
    r = snakemake("--lint", cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


@pytest.mark.slow
def test_dry_run_of_the_default_config_lists_every_job(tmp_path):
    (tmp_path / "resources").symlink_to(ROOT / "resources")
    (tmp_path / "config").symlink_to(ROOT / "config")
    r = snakemake(
        "-n", "--snakefile", ROOT / "Snakefile", "--directory", tmp_path, cwd=tmp_path, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    n_sub = len((ROOT / "config/subjects.tsv").read_text().strip().splitlines()) - 1
    assert job_counts(r.stdout) == {
        "ingest_connectome": n_sub,
        "empirical_fc": n_sub,
        "explore": n_sub * cfg["exploration"]["chunks"],
        "gather_explore": n_sub,
        "refine": n_sub,
        "report": n_sub,
        "cohort_report": 1,
        "all": 1,
    }


@pytest.mark.slow
def test_a_bad_config_fails_before_any_job_with_a_clear_message(tmp_path):
    _workdir(tmp_path, {"refinment": {}})
    r = snakemake("-n", *_base(tmp_path), cwd=tmp_path, timeout=300)
    assert r.returncode != 0
    assert (
        "invalid configuration: config: unknown key 'refinment' (did you mean "
        "'refinement'?) at the top level"
    ) in r.stdout + r.stderr


# =========================================================================== a real run


def run_workflow(tmp: Path, cache: Path) -> Path:
    """Run the tiny config in ``tmp`` with JAX's compilation cache in ``cache`` (the session
    fixture ``run_dir`` of conftest.py)."""
    tmp = _workdir(tmp, {"compute": {"compilation_cache": str(cache)}})
    r = snakemake("--cores", 2, *_base(tmp), cwd=tmp)
    logs = (
        "".join(f"\n== {p}\n{p.read_text()[-2000:]}" for p in (tmp / "logs").rglob("*.log"))
        if (tmp / "logs").is_dir()
        else ""
    )
    assert r.returncode == 0, r.stderr[-5000:] + logs
    return tmp


@pytest.mark.slow
def test_every_output_exists_and_is_valid(run_dir):
    from bnmfit.results import read_h5

    res = run_dir / "results"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    for s in SUBJECTS:
        sub = res / f"sub-{s}"
        d, a = read_h5(sub / f"sub-{s}_connectome.h5")
        assert d["weights"].shape == (80, 80) and len(d["labels"]) == 80
        assert a["normalisation"] == "max"
        d, a = read_h5(sub / f"sub-{s}_desc-empirical_fc.h5")
        # the first half trains, the second half is the validation data (validation.split)
        assert d["fc"].shape == (80, 80) and d["bold"].shape == (600, 80)
        assert a["tr"] == pytest.approx(0.72) and d["fcd"].ndim == 2
        assert d["validation"]["fc"].shape == (80, 80) and d["validation"]["fcd"].ndim == 2
        qc = json.loads((sub / f"sub-{s}_desc-empirical_qc.json").read_text())
        assert qc["n_tr_used"] == 600 and qc["validation"]["n_tr"] == 600
        assert 0.3 < qc["validation"]["fc_r_training"] < 1.0
        for k in range(cfg["exploration"]["chunks"]):
            d, a = read_h5(sub / "explore" / f"chunk-{k}.h5")
            assert a["chunk"] == k and d["loss"].shape[1] == cfg["exploration"]["seeds"]
        d, a = read_h5(sub / f"sub-{s}_explore.h5")
        assert d["points"].shape[1] == 2 and d["points"].shape[0] >= 4 and len(d["top"]) >= 1
        assert np.isfinite(d["mean_loss"]).any()
        p = json.loads((sub / f"sub-{s}_desc-fitted_params.json").read_text())
        assert p["subject"] == s and len(p["params"]["w"]) == 80  # regional w
        assert np.isfinite(p["params"]["G"])
        assert set(p["metrics"]["stages"]) == {"global", "regional"}
        keys = ("fc_r", "fc_rmse", "fcd_ks", "validation_fc_r", "validation_fcd_ks")
        assert all(np.isfinite(p["metrics"][k]) for k in keys)
        assert {f["code"] for f in p["flags"]} <= {
            "not_moved",
            "at_bound",
            "box_edge",
            "stage_rejected",
            "not_identified",
        }
        unc = p["uncertainty"]["regional"]
        assert len(unc["labels"]) == 80 and len(unc["se"]) == 80 and unc["n_noise"] == 8
        assert set(p["provenance"]) >= {"config_hash", "versions", "seeds", "inputs"}
        d, a = read_h5(sub / f"sub-{s}_fit.h5")
        assert {"stage-0-global", "stage-1-regional"} <= set(d)
        assert d["stage-0-global"]["loss"].shape[0] == 2
        assert d["sim_fc"].shape == (80, 80) and d["sim_bold"].shape[1] == 80
        html = (sub / f"sub-{s}_report.html").read_text()
        assert "<html" in html.lower() and f"sub-{s}" in html
        assert len(list((sub / "figures").glob("*.png"))) >= 1
        for name in ("explore_chunk-0", "refine"):
            bench = run_dir / "logs" / "benchmarks" / f"sub-{s}" / f"{name}.tsv"
            assert bench.read_text().startswith("s\t")
        assert (run_dir / "logs" / f"sub-{s}" / "refine.log").read_text().strip()
    import pandas as pd

    table = pd.read_csv(
        res / "cohort_params.tsv", sep="\t", dtype={"subject": str, "config_hash": str}
    )
    assert list(table["subject"]) == SUBJECTS
    assert {"G", "w_mean", "fc_r", "fc_rmse", "fcd_ks", "wall_time_s"} <= set(table.columns)
    for s, h in zip(SUBJECTS, table["config_hash"], strict=True):  # which config fitted whom
        p = json.loads((res / f"sub-{s}" / f"sub-{s}_desc-fitted_params.json").read_text())
        assert h == p["provenance"]["config_hash"]
    assert "<html" in (res / "cohort_report.html").read_text().lower()
    desc = json.loads((res / "dataset_description.json").read_text())
    assert desc["GeneratedBy"][0]["Name"] == "bnmfit" and desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Version"] and "GitCommit" in desc["GeneratedBy"][0]
    resolved = yaml.safe_load((res / "config.yaml").read_text())
    for key in ("chunks", "seeds", "batch_size"):
        assert resolved["exploration"][key] == cfg["exploration"][key]
    assert [a["name"] for a in resolved["exploration"]["parameters"]] == ["G", "w"]
    assert resolved["compute"]["platform"] == "auto"  # defaults filled in
    # no temporary or checkpoint files left behind
    assert not list(res.rglob(".*.tmp*")) and not list(res.rglob(".checkpoints"))


@pytest.mark.slow
def test_a_second_run_does_nothing(run_dir):
    r = snakemake("-n", *_base(run_dir), cwd=run_dir, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.slow
def test_snakemake_report_zip_builds(run_dir):  # needs pygments, a bnmfit dependency
    r = snakemake("--report", run_dir / "report.zip", *_base(run_dir), cwd=run_dir, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (run_dir / "report.zip").stat().st_size > 0


@pytest.mark.slow
def test_a_refinement_change_reruns_only_refine_and_the_reports(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["refinement"]["stages"][0]["learning_rate"] = 0.1
    (run_dir / "changed.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = snakemake("-n", *_base(run_dir, "changed.yaml"), cwd=run_dir, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout) == {"refine": 2, "report": 2, "cohort_report": 1, "all": 1}
    assert "Params have changed since last execution" in r.stdout


@pytest.mark.slow
def test_a_report_change_reruns_only_the_reports(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["report"]["dpi"] = 41
    (run_dir / "changed_report.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = snakemake("-n", *_base(run_dir, "changed_report.yaml"), cwd=run_dir, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert job_counts(r.stdout) == {"report": 2, "cohort_report": 1, "all": 1}


@pytest.mark.slow
def test_resources_never_rerun_anything(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["resources"] = {"explore": {"threads": 2, "mem_mb": 9000, "runtime": 99}}
    (run_dir / "changed_res.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = snakemake("-n", *_base(run_dir, "changed_res.yaml"), cwd=run_dir, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # only the cohort page, which records the whole configuration, is refreshed
    assert job_counts(r.stdout) == {"cohort_report": 1, "all": 1}


# =========================================================================== your own directory


def _config_json(output: str, rule: str) -> dict:
    """The --config-json of the first job of ``rule`` printed by a dry run with -p."""
    blocks = output.split("rule ")
    for b in blocks:
        if b.startswith(rule + ":"):
            m = re.search(r"--config-json '(\{.*?\})'", b, re.S)
            if m:
                return json.loads(m.group(1))
    raise AssertionError(f"no {rule} job with --config-json in:\n{output[-3000:]}")


@pytest.mark.slow
def test_the_documented_recipe_runs_from_any_directory(tmp_path):
    """From a directory outside the checkout, with a one-key --configfile, the checkout's
    config/config.yaml is the base: every key of the resolved config but `subjects` is the
    recipe's (its step cap, TR-based lengths, loss, stages, compilation cache), not the
    schema's defaults."""
    from bnmfit.config import load_config, validate_config

    (tmp_path / "resources").symlink_to(ROOT / "resources")
    shutil.copy(DATA / "subjects.tsv", tmp_path / "my_subjects.tsv")
    (tmp_path / "my.yaml").write_text("subjects: my_subjects.tsv\n")
    assert not (tmp_path / "config").exists()
    r = snakemake(
        "-n",
        "-p",
        "--snakefile",
        ROOT / "Snakefile",
        "--configfile",
        "my.yaml",
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    recipe = load_config(ROOT / "config" / "config.yaml")
    assert recipe != validate_config({"subjects": "my_subjects.tsv"})  # a real difference
    expected = {**recipe, "subjects": "my_subjects.tsv"}
    for rule in ("explore", "refine"):
        got = _config_json(r.stdout, rule)
        for section, value in got.items():
            assert value == expected[section], (rule, section)
    sim = _config_json(r.stdout, "explore")["simulation"]
    assert (sim["dt"], sim["dt_max"], sim["n_tr"], sim["transient_tr"]) == (None, 7.2, 300, 30)
    refine = _config_json(r.stdout, "refine")
    assert [s["steps"] for s in refine["refinement"]["stages"]] == [10, 100]
    assert refine["compute"]["compilation_cache"] == ".snakemake/jax-cache"
    # an override of one nested key keeps the rest of its section
    (tmp_path / "my.yaml").write_text("subjects: my_subjects.tsv\nsimulation: {n_tr: all}\n")
    r = snakemake(
        "-n",
        "-p",
        "--snakefile",
        ROOT / "Snakefile",
        "--configfile",
        "my.yaml",
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sim = _config_json(r.stdout, "explore")["simulation"]
    assert (sim["dt_max"], sim["n_tr"], sim["transient_tr"]) == (7.2, "all", 30)


# =========================================================================== any TR


def _synthetic_subject(
    d: Path, sub: str, tr: float, n_regions: int = 8, n_vol: int = 100, seed: int = 0
) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 50, (n_regions, n_regions)).astype(float)
    w = np.triu(w, 1) + np.triu(w, 1).T
    ln = 20 + 80 * rng.random((n_regions, n_regions))
    ln = (ln + ln.T) / 2
    np.fill_diagonal(ln, 0)
    labels = [f"R{i}" for i in range(n_regions)]
    mix = rng.standard_normal((n_regions, n_regions)) * 0.5 + np.eye(n_regions)
    bold = rng.standard_normal((n_vol, n_regions)) @ mix
    d.mkdir(parents=True, exist_ok=True)
    np.savetxt(d / f"sub-{sub}_weights.tsv", w, delimiter="\t")
    np.savetxt(d / f"sub-{sub}_lengths.tsv", ln, delimiter="\t")
    np.savetxt(
        d / f"sub-{sub}_bold.tsv",
        bold,
        delimiter="\t",
        header="\t".join(labels),
        comments="",
        fmt="%.6f",
    )
    return {
        "subject": sub,
        "sc_weights": f"data/sub-{sub}_weights.tsv",
        "sc_lengths": f"data/sub-{sub}_lengths.tsv",
        "bold": f"data/sub-{sub}_bold.tsv",
        "tr": str(tr),
    }


@pytest.mark.slow
def test_a_cohort_of_tr_2_and_1_s_runs_with_no_dt_in_the_config(tmp_path, jax_cache):
    """Subjects with TRs of 2.0 and 1.0 s (8 regions, 200 volumes: 100 to fit, 100 to
    validate) run end to end on the recipe with no dt anywhere: each gets a step that divides
    its TR, and the logs warn that the simulation (60 TRs) is shorter than the data."""
    rows = [
        _synthetic_subject(tmp_path / "data", "01", 2.0, n_vol=200, seed=1),
        _synthetic_subject(tmp_path / "data", "02", 1.0, n_vol=200, seed=2),
    ]
    cols = list(rows[0])
    (tmp_path / "subjects.tsv").write_text(
        "\n".join(["\t".join(cols)] + ["\t".join(r[c] for c in cols) for r in rows]) + "\n"
    )
    cfg = yaml.safe_load((DATA / "config.yaml").read_text())
    cfg["subjects"] = "subjects.tsv"
    del cfg["simulation"]["dt"]
    cfg["compute"] = {"compilation_cache": str(jax_cache)}
    # each TR compiles its own programs: one global stage without standard errors suffices
    cfg["refinement"]["stages"] = cfg["refinement"]["stages"][:1]
    cfg["refinement"]["uncertainty"] = {"enabled": False}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert "dt" not in cfg["simulation"]
    r = snakemake(
        "--cores", 2, "--snakefile", ROOT / "Snakefile", "--configfile", "my.yaml", cwd=tmp_path
    )
    logs = (
        {str(p): p.read_text() for p in (tmp_path / "logs").rglob("*.log")}
        if (tmp_path / "logs").is_dir()
        else {}
    )
    assert r.returncode == 0, r.stderr[-4000:] + "".join(
        f"\n== {k}\n{v[-1500:]}" for k, v in logs.items()
    )
    resolved = yaml.safe_load((tmp_path / "results/config.yaml").read_text())
    assert resolved["simulation"]["dt"] is None
    for sub, tr in (("01", 2.0), ("02", 1.0)):
        params = json.loads(
            (tmp_path / f"results/sub-{sub}/sub-{sub}_desc-fitted_params.json").read_text()
        )
        assert params
        assert (tmp_path / f"results/sub-{sub}/sub-{sub}_report.html").is_file()
        text = "".join(p.read_text() for p in (tmp_path / "logs" / f"sub-{sub}").rglob("*.log"))
        assert "60 TRs at dt 6.25 ms" in text, text[-3000:]
        assert (
            f"warning: sub-{sub}: the simulated BOLD (60 TRs, {60 * tr:g} s) is shorter "
            f"than the empirical one (100 TRs, {100 * tr:g} s)"
        ) in text, text[-3000:]


def _result_digests(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every result file (HDF5, JSON): what must come back byte-identical."""
    import hashlib

    res = run_dir / "results"
    return {
        str(p.relative_to(res)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(res.rglob("*"))
        if p.is_file() and p.suffix in (".h5", ".json")
    }


@pytest.mark.slow
def test_lost_or_broken_results_are_rebuilt_byte_identical_and_no_page_outlives_them(run_dir):
    """As a user meets it: a broken landscape makes refine fail — the subject's page and the
    cohort page are gone at once, not left as if valid. Deleting the file as advised, and
    deleting or truncating other results of both subjects, the plain command rebuilds every
    one of them (unreadable files count as out of date) and all after them, byte-identical."""
    from bnmfit.results import write_h5

    before = _result_digests(run_dir)
    res = run_dir / "results"
    s1, s2 = res / "sub-01", res / "sub-02"
    explore = s1 / "sub-01_explore.h5"
    write_h5(explore, {"x": np.zeros(2)}, {})  # a valid HDF5 file, but not a landscape
    r = snakemake("--cores", 2, *_base(run_dir), cwd=run_dir)
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "Error in rule refine" in text, text[-3000:]
    assert "bnmfit: a job failed" in text
    assert "sub-01_explore.h5" in (run_dir / "logs/sub-01/refine.log").read_text()
    assert not (s1 / "sub-01_report.html").exists()  # no page outlives what it shows
    assert not (res / "cohort_report.html").exists() and not (res / "cohort_params.tsv").exists()
    assert not (s1 / "sub-01_desc-fitted_params.json").exists()
    # the user deletes it as advised; other results are lost or truncated meanwhile
    explore.unlink()
    for p in (s1 / "explore" / "chunk-1.h5", s2 / "sub-02_fit.h5"):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    (s2 / "sub-02_report.html").unlink()
    # a dry run names unreadable files (any result: connectome, QC JSON) and changes nothing
    for p in (s2 / "sub-02_connectome.h5", s2 / "sub-02_desc-empirical_qc.json"):
        backup, stamp = p.read_bytes(), p.stat()
        p.write_bytes(backup[:50])
        r = snakemake("-n", *_base(run_dir), cwd=run_dir, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert (
            f"{p.name} is unreadable" in r.stderr
            and "a run removes and rebuilds it" in r.stderr
            and p.stat().st_size == 50
        )
        p.write_bytes(backup)
        os.utime(p, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    r = snakemake("--cores", 2, *_base(run_dir), cwd=run_dir)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "sub-02_fit.h5 was unreadable" in r.stderr and "chunk-1.h5 was unreadable" in r.stderr
    counts = job_counts(r.stdout + r.stderr)
    assert counts == {
        "explore": 1,
        "gather_explore": 1,
        "refine": 2,
        "report": 2,
        "cohort_report": 1,
        "all": 1,
    }, counts
    assert _result_digests(run_dir) == before
    for p in (s1 / "sub-01_report.html", s2 / "sub-02_report.html", res / "cohort_report.html"):
        assert p.is_file()
    r = snakemake("-n", *_base(run_dir), cwd=run_dir, timeout=300)
    assert "Nothing to be done" in r.stdout + r.stderr
