"""The workflow on a real SLURM cluster, through ``--profile workflow/profiles/slurm``.

Skipped unless ``sinfo`` reports an idle node: ``.ci/slurm-up.sh`` brings up a one-node
cluster on the CI machine (``SLURM_FAKE_GPUS=2`` adds fake GPUs) and ``.ci/run`` runs it
before pytest. What is checked, on the tiny config of tests/data:

* the session's local run (``--cores 2``, fixture ``run_dir`` of conftest.py) and the SLURM
  run give the same numbers in every result file (same seeds, same fitted parameters:
  bitwise identical);
* a subject whose BOLD file is corrupted (a data error, exit 1) is reported as failed, is
  submitted twice (``retries: 1``) with twice the memory the second time, and, with
  ``--keep-going``, every other subject of the cohort completes; after dropping it from the
  sheet, a second run only makes the cohort page;
* with ``resources.gpu: 1`` (and fake GPUs, model "fake", asked for with
  ``--set-resources explore:gpu_model=fake refine:gpu_model=fake``) explore and refine are
  submitted with one GPU of that model each — a group job asks for one GPU, not one per
  grid chunk.

Both share the session's JAX compilation cache (``compute.compilation_cache``, fixture
``jax_cache``), so the SLURM run reuses the local run's compiled simulations: this keeps the
test within a few minutes and does not change a number (a cached executable is the one that
would be compiled).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
PROFILE = ROOT / "workflow" / "profiles" / "slurm"
SUBJECTS = ["01", "02"]
BAD = "bad"
# Generous: the CI machine may be busy; a hang still ends the test instead of eating CI.
TIMEOUT = 1200


def _sinfo(fmt: str) -> list[str]:
    r = subprocess.run(["sinfo", "-h", "-o", fmt], capture_output=True, text=True, timeout=30)
    return r.stdout.split() if r.returncode == 0 else []


def _why_no_slurm() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM here (sinfo/sbatch not found); .ci/slurm-up.sh starts a one-node cluster"
    try:
        nodes = _sinfo("%n:%T")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"sinfo failed ({e}); .ci/slurm-up.sh starts a one-node cluster"
    idle = [n.split(":")[0] for n in nodes if n.endswith(":idle")]
    if not idle:
        return f"no idle SLURM node (sinfo: {nodes or 'nothing'}); see .ci/slurm-up.sh"
    # the jobs work in pytest's temporary directory: on a real cluster it must be shared
    if socket.gethostname().split(".")[0] not in idle and not os.environ.get("BNMFIT_TEST_SLURM"):
        return (
            "the idle SLURM nodes are other machines; to run this test on that cluster, "
            "set BNMFIT_TEST_SLURM=1 and pytest --basetemp=<a directory the nodes see>"
        )
    return None


WHY_NO_SLURM = _why_no_slurm()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(WHY_NO_SLURM is not None, reason=WHY_NO_SLURM or ""),
]


def _node_gpus() -> tuple[int, str | None]:
    """(GPUs, GPU model or None) of the node, from sinfo's GRES (gpu:N or gpu:MODEL:N)."""
    for gres in _sinfo("%G"):
        for item in gres.split(","):
            parts = item.split("(")[0].split(":")
            if parts[0] == "gpu" and parts[-1].isdigit():
                return int(parts[-1]), (parts[1] if len(parts) == 3 else None)
    return 0, None


# =========================================================================== helpers


def _env() -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    env.pop("JAX_ENABLE_X64", None)
    # sbatch --export=ALL forwards PATH: the jobs must find this interpreter's `python`
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _snakemake(*args, cwd: Path, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
    """snakemake as users run it, killed by `timeout` (then by SIGKILL 10 s later)."""
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", *map(str, args)]
    t0 = time.monotonic()
    r = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env=_env(), timeout=timeout + 60
    )
    r.wall_s = time.monotonic() - t0
    print(f"[{r.wall_s:6.1f} s] snakemake {' '.join(map(str, args[:3]))} ... -> {r.returncode}")
    return r


def _base(wd: Path, configfile: str) -> list:
    return ["--snakefile", ROOT / "Snakefile", "--directory", wd, "--configfile", wd / configfile]


def _tiny_config(**extra) -> dict:
    cfg = yaml.safe_load((DATA / "config.yaml").read_text())
    cfg.update(extra)
    return cfg


def _job_stats(output: str) -> dict[str, int]:
    m = re.search(r"Job stats:\n(.*?)\n\s*total\s+\d+", output, re.S)
    assert m, output[-3000:]
    return {
        p[0]: int(p[1])
        for p in (line.split() for line in m.group(1).splitlines())
        if len(p) == 2 and p[1].isdigit()
    }


def _slurm_jobs(workdir: Path) -> list[dict[str, str]]:
    """SLURM's record of every job that ran in `workdir` (kept MinJobAge s after the end)."""
    r = subprocess.run(
        ["scontrol", "show", "job", "-o"], capture_output=True, text=True, timeout=60
    )
    jobs = []
    for line in r.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("WorkDir") == str(workdir):
            jobs.append(fields)
    return jobs


def _cancel(workdir: Path) -> None:
    """Cancel what a killed run may have left queued or running (best effort)."""
    ids = [
        j["JobId"]
        for j in _slurm_jobs(workdir)
        if j.get("JobState") in ("PENDING", "RUNNING", "CONFIGURING")
    ]
    if ids:
        subprocess.run(["scancel", *ids], timeout=60)


def _mem_mb(job: dict[str, str]) -> int:
    m = re.search(r"mem=(\d+)([MG])", job.get("TRES", ""))
    assert m, job
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def _logs(wd: Path) -> str:
    return (
        "".join(
            f"\n== {p}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted((wd / "logs").rglob("*.log"))
        )
        if (wd / "logs").is_dir()
        else ""
    )


# =========================================================================== the runs


@pytest.fixture(scope="module")
def slurm_runs(tmp_path_factory, jax_cache, run_dir):
    """Two runs through the SLURM profile in one working directory, as a user would.

    A: the sheet holds the tiny cohort plus subject `bad` (corrupted BOLD); explore and
       refine ask for a GPU when the node has (fake) GPUs. `bad` fails, the others complete
       (--keep-going, from the profile).
    B: `bad` dropped from the sheet, same command: only the cohort page is left to make.
    """
    wd = tmp_path_factory.mktemp("slurm").resolve()
    (wd / "resources").symlink_to(ROOT / "resources")
    sheet = (DATA / "subjects.tsv").read_text().rstrip("\n").splitlines()
    # subject `bad`: sub-01's connectome, a BOLD file that is not a time series
    (wd / "bad").mkdir()
    with gzip.open(wd / "bad" / "sub-bad_task-rest_timeseries.tsv.gz", "wt") as f:
        f.write("this is not a BOLD time series\n")
    shutil.copy(
        ROOT / "resources/sub-01/sub-01_task-rest_timeseries.json",
        wd / "bad" / "sub-bad_task-rest_timeseries.json",
    )
    cols = sheet[0].split("\t")
    row = dict(
        zip(cols, sheet[1].split("\t"), strict=True),
        subject=BAD,
        bold="bad/sub-bad_task-rest_timeseries.tsv.gz",
    )
    n_gpus, model = _node_gpus()
    gpu = 1 if n_gpus else 0
    cfg = _tiny_config(
        subjects="subjects.tsv",
        compute={"compilation_cache": str(jax_cache)},
        # small requests, so that every job fits next to the others on the CI node
        resources={
            "gpu": gpu,
            "default": {"threads": 1, "mem_mb": 1000, "runtime": 10},
            "explore": {"threads": 1, "mem_mb": 2000, "runtime": 10},
            "refine": {"threads": 1, "mem_mb": 3000, "runtime": 10},
        },
    )
    (wd / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # status every 2 s (the profile's 20 s suits jobs of minutes, not a test)
    cmd = [
        "--profile",
        PROFILE,
        "--slurm-init-seconds-before-status-checks",
        2,
        *_base(wd, "config.yaml"),
    ]
    # the GPU model, as the README tells users to ask for one
    models = (
        ["--set-resources", f"explore:gpu_model={model}", f"refine:gpu_model={model}"]
        if gpu and model
        else []
    )
    try:
        (wd / "subjects.tsv").write_text(
            "\n".join([*sheet, "\t".join(row[c] for c in cols)]) + "\n"
        )
        a = _snakemake(*cmd, *models, cwd=wd)
        jobs_a = _slurm_jobs(wd)
        (wd / "subjects.tsv").write_text("\n".join(sheet) + "\n")
        b = _snakemake(*cmd, cwd=wd)
    finally:
        _cancel(wd)
    return {"dir": wd, "a": a, "b": b, "jobs_a": jobs_a, "gpu": gpu, "model": model}


# =========================================================================== comparison

# attributes that may differ between two runs of the same computation
VOLATILE = {"wall_time", "versions", "config_hash", "chunk_config_hash", "provenance"}


def _assert_same(a, b, where: str) -> None:
    if where.endswith("/inputs"):
        # path -> SHA-256 of every input: the raw data must be the same files; results
        # hash differently (they record their wall time), their contents are compared
        assert set(a) == set(b), where
        raw = {p: h for p, h in a.items() if not p.startswith("results/")}
        assert raw == {p: b[p] for p in raw}, where
        return
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        keys = set(a) - VOLATILE
        assert keys == set(b) - VOLATILE, f"{where}: {sorted(keys ^ (set(b) - VOLATILE))}"
        for k in sorted(keys):
            _assert_same(a[k], b[k], f"{where}/{k}")
    elif (
        isinstance(a, (list, tuple, np.ndarray, float, int, np.number))
        and not isinstance(a, bool)
        and np.asarray(a).dtype.kind in "fiub"
    ):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, f"{where}: shape {a.shape} != {b.shape}"
        # same machine, precision, seeds and code: bitwise identical, NaN where NaN
        np.testing.assert_array_equal(b, a, err_msg=where)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _result_files(res: Path, s: str) -> list[str]:
    sub = f"sub-{s}/sub-{s}"
    return [
        f"{sub}_connectome.h5",
        f"{sub}_desc-empirical_fc.h5",
        f"sub-{s}/explore/chunk-0.h5",
        f"sub-{s}/explore/chunk-1.h5",
        f"{sub}_explore.h5",
        f"{sub}_fit.h5",
    ]


# =========================================================================== tests


def test_slurm_results_equal_the_local_run(run_dir, slurm_runs):
    from bnmfit.results import read_h5

    b, wd = slurm_runs["b"], slurm_runs["dir"]
    assert b.returncode == 0, b.stderr[-5000:] + _logs(wd)
    res, ref = wd / "results", run_dir / "results"
    for name in (
        "cohort_report.html",
        "cohort_params.tsv",
        "dataset_description.json",
        "config.yaml",
    ):
        assert (res / name).is_file(), name
    for s in SUBJECTS:
        assert (res / f"sub-{s}" / f"sub-{s}_report.html").is_file()
        for name in _result_files(res, s):
            (da, aa), (db, ab) = read_h5(ref / name), read_h5(res / name)
            _assert_same(da, db, name)
            _assert_same(aa, ab, f"{name} attrs")
        name = f"sub-{s}/sub-{s}_desc-fitted_params.json"
        pa, pb = (json.loads((d / name).read_text()) for d in (ref, res))
        assert pb["provenance"]["seeds"] == pa["provenance"]["seeds"]
        _assert_same(pa, pb, name)
    import pandas as pd

    table = pd.read_csv(res / "cohort_params.tsv", sep="\t", dtype={"subject": str})
    assert list(table["subject"]) == SUBJECTS
    for s, g in zip(SUBJECTS, table["G"], strict=True):
        p = json.loads((ref / f"sub-{s}/sub-{s}_desc-fitted_params.json").read_text())
        assert g == p["params"]["G"]


def test_a_failing_subject_is_reported_and_the_rest_completes(slurm_runs):
    a, b, wd = slurm_runs["a"], slurm_runs["b"], slurm_runs["dir"]
    out = a.stdout + a.stderr
    assert a.returncode != 0, out[-3000:]
    assert re.search(rf"Error in (group|rule) \S*{BAD}", out), out[-5000:]
    # the script's one-line message reaches the log of the failed rule
    log = (wd / "logs" / f"sub-{BAD}" / "empirical_fc.log").read_text()
    assert "Error:" in log and "sub-bad_task-rest_timeseries.tsv.gz" in log, log
    assert not (wd / "results" / f"sub-{BAD}" / f"sub-{BAD}_desc-empirical_fc.h5").exists()
    # every other subject went all the way in run A: run B only makes the cohort page
    assert _job_stats(b.stdout + b.stderr) == {"cohort_report": 1, "all": 1}
    # SLURM saw it fail twice (retries: 1), the retry with twice the memory
    bad = [j for j in slurm_runs["jobs_a"] if f"sub-{BAD}" in j.get("Comment", "")]
    assert [j["JobState"] for j in bad] == ["FAILED", "FAILED"], bad
    mem = sorted(_mem_mb(j) for j in bad)
    assert mem[1] == 2 * mem[0], mem
    good = [j for j in slurm_runs["jobs_a"] if j not in bad]
    assert good and all(j["JobState"] == "COMPLETED" for j in good), good


def test_gpu_rules_are_submitted_with_one_gpu(slurm_runs):
    if not slurm_runs["gpu"]:
        pytest.skip(
            "the SLURM node advertises no GPUs (start it with SLURM_FAKE_GPUS=2 .ci/slurm-up.sh)"
        )
    jobs = slurm_runs["jobs_a"]
    # 3 subjects: one job for ingest + FC + grid chunks each (bad: twice), 2 refine jobs
    comments = sorted(j.get("Comment", "") for j in jobs)
    assert sum("refine" in c for c in comments) == 2, comments
    assert sum("explore" in c for c in comments) == 4, comments
    model = slurm_runs["model"]
    want = f"gres:gpu:{model}:1" if model else "gres:gpu:1"
    for j in jobs:
        # every cluster job runs explore or refine: one GPU each (of the model asked for),
        # not one per grid chunk of a group job
        assert j.get("TresPerJob") == want, j
