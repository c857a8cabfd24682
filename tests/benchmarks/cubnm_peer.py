"""CMA-ES against cuBNM 0.1.0 — (G, w) of the reduced Wong–Wang model on sub-01, by
simulations and CPU seconds (issue 26, its last bullet).

Both libraries search the same two parameters in the same box for the same target, on CPU:

- Data: sub-01 of the bundled cohort through :func:`tests.benchmarks.cmaes_explore._problem`
  (config/config.yaml: SC max-normalised, empirical FC of the whole 1200-volume run,
  detrended). The same SC matrix (80 regions, symmetric, zero diagonal) and the lower
  triangle of the same FC go to cuBNM.
- Model: bnmfit's ``reduced_wong_wang``; cuBNM's ``rWWEx`` (Deco et al. 2013), the same
  equations x = w J_N S + G J_N Σ C S + I_o with the same constants (cuBNM writes them in Hz
  and s: a = 270, b = 108, d = 0.154, γ = 0.641/1000; bnmfit in kHz and ms as TVB). Fixed
  as in the config: I_o = 0.32 (cuBNM ``I0``), noise σ = 0.00283 on S (both add σ √dt ξ,
  dt in ms; cuBNM ``sigma``), no delays. Free: G and w (cuBNM: global ``G`` and the
  homogeneous regional ``w``) in :data:`AXES` (cmaes_explore's box for them).
- Simulated length: the config's 30 transient TRs + ``--n-tr`` (300) TRs of 0.72 s; cuBNM
  simulates the same 237.6 s and drops the same 21.6 s (``bold_remove_s``) before its FC.
- What differs: integration (bnmfit: Heun, dt 7.2 ms, float32; cuBNM: Euler at
  ``--cubnm-dt``, float64; its default dt is 0.1 ms, 72× the steps of bnmfit's), the BOLD
  step (bnmfit: every dt; cuBNM: its ``bw_dt``, 1 ms or dt when larger), Balloon–Windkessel
  constants (Friston 2003 in both), FC (bnmfit detrends the simulated BOLD, cuBNM does
  not), the loss (bnmfit: 1 − r + RMSE of the FC; cuBNM: −r + RMSE/2, its ``+fc_corr`` and
  ``-fc_normec`` terms, the nearest it has), noise (one seed for every candidate in both:
  bnmfit's key 0; cuBNM's ``sim_seed`` 0 with its 30-s noise segments reshuffled), and the
  strategies: bnmfit's ``exploration.sampler: cmaes`` (evosax's CMA-ES in logit units from
  the box's middle, step 1) and cuBNM's ``CMAESOptimizer`` (pymoo over ``cma``, in the
  box's [0, 1] units with cma's bound transform, step 0.5, its first generation a random
  sample of the box from which it starts at the best point, as its users run it). Same
  population ``--population`` and generations ``--generations``, so the same number of
  simulations; ``--repeats`` strategy seeds each (run r: bnmfit's seed r, cuBNM's r + 1, as
  its optimiser replaces seed 0 by 100).
- One scorer: each generation's best point so far of every run is simulated by bnmfit's
  simulator at the config's settings (300 TRs) on fresh noise seeds
  (:data:`tests.benchmarks.w9_generalisation_peer.SEEDS`, which neither search used) and
  scored by ``bnmfit.scoring.score_heldout``: the config's loss 1 − r + RMSE and FC r
  against the same empirical FC, mean over the seeds.
- CPU: user + sys seconds. "search": the strategy's loop in its process (getrusage of the
  process around ``explore.evolve`` / ``CMAESOptimizer.optimize``, bnmfit's compilation
  included), stamped after every generation; "process": the whole child (interpreter,
  imports, data, search), ``resource.getrusage(RUSAGE_CHILDREN)`` around it in this
  process. bnmfit runs in a child with its XLA flags on 2 host devices; cuBNM in a child of
  the venv's Python (``--venv``) on its OpenMP threads (the machine's cores).

cuBNM does not install beside bnmfit (it requires numpy < 2 and pymoo == 0.6, which pins
cma 3.2.2), so it runs from a virtual environment of its own:

    python3 -m venv /work/venvs/cubnm && /work/venvs/cubnm/bin/pip install cubnm==0.1.0
    python -m tests.benchmarks.cubnm_peer [--venv /work/venvs/cubnm] [--quick]
        [--population 16] [--generations 5] [--repeats 2] [--cubnm-dt 7.2,1.0]
        [--n-tr 300] [--n-seeds 10] [--out DIR]

Without the venv or cubnm in it the benchmark says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from tests.benchmarks import cmaes_explore, common, w5_fit, w9_generalisation_peer

NAME = "cubnm_peer"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "CMA-ES vs cuBNM 0.1.0 — (G, w) of RWW on sub-01 (80 regions), CPU: loss vs sims and CPU s"
DEFAULT_VENV = Path(os.environ.get("BNMFIT_CUBNM_VENV", "/work/venvs/cubnm"))
AXES = tuple(a for a in cmaes_explore.AXES if a[0] in ("G", "w"))
CUBNM_TERMS = ("+fc_corr", "-fc_normec")
#: the options' defaults (also for run_all, whose parser lacks them), and --quick's values
DEFAULTS = {
    "venv": DEFAULT_VENV,
    "population": 16,
    "generations": 5,
    "repeats": 2,
    "n_tr": 300,
    "n_seeds": 10,
    "cubnm_dt": "7.2,1.0",
    "no_peers": False,
}
QUICK = {
    "population": 8,
    "generations": 2,
    "repeats": 1,
    "n_tr": 100,
    "n_seeds": 2,
    "cubnm_dt": "7.2",
}
RESULT = "CUBNM_RESULT "

#: run by the venv's Python: argv[1] is a JSON of the settings; prints one RESULT line
DRIVER = f"""
import json, resource, sys, time
from decimal import Decimal
import numpy as np
from cubnm import optimize

kw = json.loads(sys.argv[1])

def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime

problem = optimize.BNMProblem(
    model="rWWEx",
    params={{"G": tuple(kw["G"]), "w": tuple(kw["w"]), "I0": kw["I0"], "sigma": kw["sigma"]}},
    emp_fc_tril=np.load(kw["fc_tril"]),
    sc=np.load(kw["sc"]),
    duration=Decimal(kw["duration_s"]),
    TR=kw["tr_s"],
    dt=kw["dt"],
    bw_dt=kw["bw_dt"],
    bold_remove_s=kw["bold_remove_s"],
    gof_terms=kw["terms"],
    sim_seed=0,
    force_cpu=True,
    out_dir=None,
)
stamps, run_eval = [], problem.eval

def stamped_eval(X, skip_run=False):
    scores = run_eval(X, skip_run=skip_run)
    stamps.append({{"cpu_s": cpu() - c0, "wall_s": time.perf_counter() - t0, "n": len(X)}})
    return scores

problem.eval = stamped_eval
cmaes = optimize.CMAESOptimizer(
    popsize=kw["population"], n_iter=kw["generations"], seed=kw["seed"], print_history=False
)
cmaes.setup_problem(problem)
t0, c0 = time.perf_counter(), cpu()
cmaes.optimize()
h = cmaes.history
print({RESULT!r} + json.dumps({{
    "G": h["G"].tolist(), "w": h["w"].tolist(), "cost": h["cost"].tolist(),
    "fc_corr": h["+fc_corr"].tolist(), "gen": h["gen"].tolist(), "stamps": stamps,
    "search_cpu_s": cpu() - c0, "search_wall_s": time.perf_counter() - t0,
    "threads": problem.sim_group.avail_cpus,
}}), flush=True)
"""


def cubnm_missing(venv: Path) -> str | None:
    """None when the venv's Python imports cubnm 0.1.0, else why not."""
    python = venv / "bin" / "python"
    if not python.exists():
        return f"no virtual environment at {venv} (create it: see the module docstring)"
    probe = subprocess.run(
        [str(python), "-c", "import cubnm; print(cubnm.__version__)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        tail = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"cubnm does not import in {venv}: {tail}"
    version = probe.stdout.strip().splitlines()[-1]
    return None if version == "0.1.0" else f"{venv} has cubnm {version}, not 0.1.0"


def case_data(workdir: str, n_tr: int) -> dict:
    """sub-01's problem as cmaes_explore builds it: its SC and the lower triangle of its FC
    written for cuBNM, and the settings cuBNM must match."""
    import numpy as np

    problem, cfg = cmaes_explore._problem(n_tr)
    weights = np.asarray(problem.weights, np.float64)
    fc = np.asarray(problem.empirical.fc, np.float64)
    np.save(Path(workdir) / "sc.npy", weights)
    np.save(Path(workdir) / "fc_tril.npy", fc[np.tril_indices(len(fc), -1)])
    spec = problem.spec
    return {
        "tr_ms": spec.tr,
        "n_tr": spec.n_tr,
        "n_transient": spec.n_transient,
        "dt_ms": spec.dt,
        "I_o": float(problem.model.I_o),
        "sigma": float(problem.sigma),
        "dtype": str(problem.weights.dtype),
        "symmetric": bool(np.array_equal(weights, weights.T)),
    }


def case_bnmfit(n_tr: int, population: int, generations: int, seed: int) -> dict:
    """bnmfit's CMA-ES (``exploration.sampler: cmaes``) over (G, w) on sub-01, noise seed
    cmaes_explore.NOISE_SEED for every candidate; CPU and wall after every generation."""
    import numpy as np

    from bnmfit import explore
    from bnmfit.losses import loss_spec

    problem, cfg = cmaes_explore._problem(n_tr)
    axes = tuple(explore.Axis(n, lo, hi, scale=s) for n, lo, hi, s in AXES)
    strategy = explore.Strategy(population=population, generations=generations, tolerance=0.0)
    space = explore.Space(axes, "cmaes", seed=seed, strategy=strategy)
    stamps = []

    def progress(generation, total, best_loss):
        stamps.append({**w5_fit.since(t0), "n": population})

    t0 = (time.perf_counter(), w5_fit.cpu_s())
    ev = explore.evolve(
        problem, space, [cmaes_explore.NOISE_SEED], batch_size=population, progress=progress
    )
    search = w5_fit.since(t0)
    return {
        "points": np.asarray(ev.points).tolist(),
        "loss": (np.asarray(ev.mean_loss) + loss_spec(cfg).offset).tolist(),
        "fc_r": np.asarray(ev.fc_r).tolist(),
        "generation": np.asarray(ev.generations.generation).tolist(),
        "stop": ev.generations.stop,
        "stamps": stamps,
        "search_cpu_s": search["cpu_s"],
        "search_wall_s": search["wall_s"],
    }


def case_score(n_tr: int, points: list, seeds: list) -> dict:
    """Each (G, w) of ``points`` simulated by bnmfit on each of ``seeds`` and scored with
    the config's loss against the subject's FC: per point the per-seed loss and FC r."""
    from bnmfit import scoring
    from bnmfit.losses import loss_spec

    problem, cfg = cmaes_explore._problem(n_tr)
    offset = loss_spec(cfg).offset
    out = []
    for g, w in points:
        per_seed = [
            scoring.score_heldout(problem, {"G": g, "w": w}, [s], offset=offset).metrics
            for s in seeds
        ]
        out.append({k: [m[k] for m in per_seed] for k in ("loss", "fc_r")})
    return {"scores": out, "dt": problem.spec.dt, "n_tr": problem.spec.n_tr}


def children_cpu_s() -> float:
    """User + sys CPU seconds of this process's terminated and waited-for children."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_cubnm(venv: Path, workdir: str, data: dict, dt: str, args, seed: int) -> dict:
    """cuBNM's CMA-ES in a child of the venv's Python; its result plus the child's whole
    CPU (RUSAGE_CHILDREN) and wall seconds."""
    tr_s = Decimal(str(data["tr_ms"])) / 1000
    kw = {
        "sc": str(Path(workdir) / "sc.npy"),
        "fc_tril": str(Path(workdir) / "fc_tril.npy"),
        **{name: [lo, hi] for name, lo, hi, _ in AXES},
        "I0": data["I_o"],
        "sigma": data["sigma"],
        "duration_s": str(tr_s * (data["n_tr"] + data["n_transient"])),
        "tr_s": float(tr_s),
        "bold_remove_s": float(tr_s * data["n_transient"]),
        "dt": dt,
        "bw_dt": str(max(Decimal(dt), Decimal("1.0"))),
        "terms": list(CUBNM_TERMS),
        "population": args.population,
        "generations": args.generations,
        "seed": seed,
    }
    c0, t0 = children_cpu_s(), time.perf_counter()
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", DRIVER, json.dumps(kw)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    cpu, wall = children_cpu_s() - c0, time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}", "stderr_tail": proc.stderr[-4000:]}
    res = json.loads(lines[-1][len(RESULT) :])
    res.update(process_cpu_s=cpu, process_wall_s=wall, settings=kw)
    return res


def run_bnmfit(args, seed: int) -> dict:
    """bnmfit's CMA-ES in its own child (bnmfit's XLA flags, 2 host devices), with the
    child's whole CPU (RUSAGE_CHILDREN)."""
    c0 = children_cpu_s()
    res = common.run_case(
        MODULE,
        "case_bnmfit",
        {
            "n_tr": args.n_tr,
            "population": args.population,
            "generations": args.generations,
            "seed": seed,
        },
        x64=False,
        devices=w5_fit.DEVICES,
        timeout_s=3600,
    )
    res["process_cpu_s"] = children_cpu_s() - c0
    res["process_wall_s"] = res.get("wall_s")
    return res


def generations(run: dict, points: list, losses: list) -> list[dict]:
    """Per generation: simulations and CPU/wall so far, the best point so far and its own
    loss (the library's objective on its fitting noise)."""
    out, n, best = [], 0, None
    for stamp in run["stamps"]:
        for i in range(n, n + stamp["n"]):
            if best is None or losses[i] < losses[best]:
                best = i
        n += stamp["n"]
        out.append(
            {
                "simulations": n,
                "cpu_s": stamp["cpu_s"],
                "wall_s": stamp["wall_s"],
                "best": points[best],
                "own_loss": losses[best],
            }
        )
    return out


def _mean(values) -> float:
    return sum(values) / len(values)


def run(args) -> dict:
    """Both searches, the one scorer, the table; ``args`` as :func:`main` parses them (run_all's
    lack this module's options: they take :data:`DEFAULTS`; ``args`` is not changed)."""
    given = {k: v for k, v in vars(args).items() if v is not None}
    args = argparse.Namespace(**{**DEFAULTS, **given, **(QUICK if args.quick else {})})
    seeds = list(w9_generalisation_peer.SEEDS[: args.n_seeds])
    missing = "--no-peers" if args.no_peers else cubnm_missing(Path(args.venv))
    if missing:
        print(f"{NAME}: skipped: {missing}")
        row = common.row("CMA-ES vs cuBNM", "cuBNM 0.1.0", "–", "–", {"error": missing})
        return {"workload": NAME, "title": TITLE, "skipped": missing, "rows": [row]}
    runs = {}
    with tempfile.TemporaryDirectory(prefix=f"{NAME}-") as workdir:
        data = common.run_case(
            MODULE, "case_data", {"workdir": workdir, "n_tr": args.n_tr}, x64=False
        )
        if data.get("error"):
            raise RuntimeError(f"{NAME}: preparing the data failed: {data['error']}")
        for r in range(args.repeats):
            runs[f"bnmfit/seed{r}"] = run_bnmfit(args, r)
            for dt in args.cubnm_dt.split(","):
                runs[f"cuBNM dt {dt}/seed{r}"] = run_cubnm(
                    Path(args.venv), workdir, data, dt, args, r + 1
                )
    for label, res in runs.items():
        if res.get("error"):
            continue
        if label.startswith("bnmfit"):
            res["per_generation"] = generations(res, res["points"], res["loss"])
        else:
            pts = [[g, w] for g, w in zip(res["G"], res["w"], strict=True)]
            res["per_generation"] = generations(res, pts, res["cost"])
    distinct = sorted(
        {tuple(g["best"]) for res in runs.values() for g in res.get("per_generation", [])}
    )
    scored = common.run_case(
        MODULE,
        "case_score",
        {"n_tr": w5_fit.EVAL_TR, "points": [list(p) for p in distinct], "seeds": seeds},
        x64=False,
        timeout_s=3600,
    )
    if scored.get("error"):
        raise RuntimeError(f"{NAME}: scoring failed: {scored['error']}")
    score_of = dict(zip(distinct, scored["scores"], strict=True))
    for res in runs.values():
        for g in res.get("per_generation", []):
            s = score_of[tuple(g["best"])]
            g["heldout_loss"], g["heldout_fc_r"] = _mean(s["loss"]), _mean(s["fc_r"])
            g["heldout_loss_per_seed"] = s["loss"]
    return report(args, data, runs, seeds)


def report(args, data: dict, runs: dict, seeds: list) -> dict:
    """Print the per-generation table and the summary; write the JSON."""
    head = (
        "| run | generation | simulations | search CPU s | held-out loss | held-out FC r "
        "| best (G, w) | own loss |\n|---|---|---|---|---|---|---|---|"
    )
    lines, summary, rows = [], {}, []
    for label, res in runs.items():
        if res.get("error"):
            lines.append(f"| {label} | – | – | – | not measured: {res['error'][:90]} | | | |")
            rows.append(common.row("CMA-ES vs cuBNM", label, "–", "–", res))
            continue
        for i, g in enumerate(res["per_generation"]):
            lines.append(
                f"| {label} | {i + 1} | {g['simulations']} | {common.fmt_s(g['cpu_s'])} | "
                f"{g['heldout_loss']:.4f} | {g['heldout_fc_r']:.3f} | "
                f"({g['best'][0]:.3f}, {g['best'][1]:.3f}) | {g['own_loss']:.4f} |"
            )
        first, last = res["per_generation"][0], res["per_generation"][-1]
        later = last["simulations"] - first["simulations"]
        summary[label] = {
            "simulations": last["simulations"],
            "heldout_loss": last["heldout_loss"],
            "heldout_fc_r": last["heldout_fc_r"],
            "search_cpu_s": res["search_cpu_s"],
            "process_cpu_s": res["process_cpu_s"],
            "search_cpu_s_per_simulation": res["search_cpu_s"] / last["simulations"],
            # after the first generation: without bnmfit's compilation or cuBNM's set-up
            "later_cpu_s_per_simulation": (last["cpu_s"] - first["cpu_s"]) / later
            if later
            else None,
            "best": last["best"],
        }
        lib = "bnmfit" if label.startswith("bnmfit") else "cuBNM 0.1.0"
        precision = data["dtype"] if lib == "bnmfit" else "float64"
        rows.append(
            dict(
                zip(
                    common.COLUMNS,
                    [
                        "CMA-ES vs cuBNM",
                        lib,
                        precision,
                        f"{label}: λ {args.population} × {args.generations} generations",
                        common.fmt_s(res["search_cpu_s"]),
                        "",
                        "1",
                        "",
                        f"held-out loss {last['heldout_loss']:.4f}, FC r "
                        f"{last['heldout_fc_r']:.3f} after {last['simulations']} sims; "
                        f"{res['search_cpu_s'] / last['simulations']:.3g} CPU s/sim",
                        "",
                        f"{res.get('peak_rss_mb', float('nan')):.0f}",
                    ],
                    strict=True,
                )
            )
        )
    tr_s = data["tr_ms"] / 1000
    notes = [
        f"sub-01, {data['n_tr']} + {data['n_transient']} transient TRs of {tr_s:g} s "
        f"({(data['n_tr'] + data['n_transient']) * tr_s:g} s simulated) in both; bnmfit "
        f"{data['dtype']}, Heun, dt {data['dt_ms']:g} ms; cuBNM rWWEx float64, Euler at the "
        "dt its label names (BOLD every max(dt, 1 ms)). Box "
        + ", ".join(f"{n} [{lo:g}, {hi:g}]" for n, lo, hi, _ in AXES)
        + f"; I_o {data['I_o']:g}, σ {data['sigma']:g}; population {args.population}, "
        f"{args.generations} generations.",
        f"Held-out: bnmfit's scorer (dt {data['dt_ms']:g} ms, {w5_fit.EVAL_TR} TRs) on seeds "
        f"{seeds[0]}–{seeds[-1]} (mean of {len(seeds)}), loss 1 − r + RMSE and FC r against the "
        "same empirical FC, of each generation's best point so far. Own loss: bnmfit 1 − r + "
        "RMSE on its noise seed 0; cuBNM −r + RMSE/2 (+fc_corr, −fc_normec) on its sim_seed 0.",
        "Search CPU s: user + sys of the strategy's loop in its process (bnmfit: compilation "
        "included), at the end of each generation; the JSON has the whole child processes' "
        "CPU (RUSAGE_CHILDREN) beside it.",
    ]
    for label, s in summary.items():
        notes.append(
            f"{label}: held-out loss {s['heldout_loss']:.4f} (FC r {s['heldout_fc_r']:.3f}) after "
            f"{s['simulations']} simulations, search {s['search_cpu_s']:.1f} CPU s "
            f"({s['search_cpu_s_per_simulation']:.3g} per simulation, "
            f"{s['later_cpu_s_per_simulation'] or float('nan'):.3g} after the first "
            f"generation), whole process {s['process_cpu_s']:.1f} CPU s"
        )
    return common.publish(
        NAME,
        TITLE,
        f"{head}\n" + "\n".join(lines),
        args,
        notes,
        data=data,
        summary=summary,
        rows=rows,
        runs=runs,
    )


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--venv",
        type=Path,
        default=DEFAULTS["venv"],
        help=f"virtual environment with cubnm==0.1.0 (default {DEFAULT_VENV})",
    )
    p.add_argument(
        "--population", type=int, default=DEFAULTS["population"], help="candidates per generation"
    )
    p.add_argument(
        "--generations",
        type=int,
        default=DEFAULTS["generations"],
        help="generations of both searches",
    )
    p.add_argument(
        "--n-tr", type=int, default=DEFAULTS["n_tr"], help="simulated TRs after the transient"
    )
    p.add_argument(
        "--cubnm-dt",
        default=DEFAULTS["cubnm_dt"],
        help="cuBNM integration steps in ms, comma-separated (its default is 0.1)",
    )
    p.add_argument(
        "--n-seeds",
        type=int,
        default=DEFAULTS["n_seeds"],
        help=f"scorer seeds (≤ {len(w9_generalisation_peer.SEEDS)})",
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
