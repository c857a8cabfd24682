"""LM speed — Levenberg–Marquardt against Adam's 100 steps on the global (G, w) stage.

Issue 23 item 5: the second-order fitter must reach the loss that Adam reaches in 100 steps
in ≤ 1/3 of Adam's CPU time (user + sys), same subject and recipe. Both refine sub-01's
global stage of config/config.yaml (G and w, the config's domains and loss, 300 TRs, float32)
from two starts: ``grid``, the best point of the config's exploration grid (the recipe's
start; explored once, not timed), and ``config``, the config's own values (G 0.5, w 0.5,
the TVB-Optim tutorial's start), away from the valley of good fits:

* ``adam``: the stage as configured (lr 0.01, one fresh noise seed per step), 100 steps,
  no early stopping;
* ``LM n_noise k``: the same stage with ``optimizer: levenberg-marquardt`` on k fixed seeds
  (noise_average fc), until optimistix terminates (at most ``LM_STEPS`` iterations).

Each runs in its own process, twice: cold (its compilation included, as a workflow job pays
it) and warm (compiled). CPU time is ``time.process_time()`` (user + sys of every thread)
from the call of ``refine`` to each step (``progress``): Adam's at its 100th step, LM's at
the first iteration whose parameters score at least as well as Adam's final ones. Scores
(not timed): the problem's loss, one simulation per held-out seed (``HELDOUT``, which no fit
uses), averaged, the same seeds for every parameter set; ``± se`` is the standard error of
the paired per-seed difference from Adam's score, and "within noise" the first iteration
no worse than Adam's score by more than that.

    python -m tests.benchmarks.lm_speed [--quick] [--out DIR]
"""

from __future__ import annotations

from tests.benchmarks import common, w5_fit

NAME = "lm_speed"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "LM speed — Levenberg–Marquardt vs 100 Adam steps, global (G, w) stage, sub-01"
HELDOUT = tuple(range(3000, 3016))  # scoring seeds: no fit uses them
LM_STEPS = 30
CONFIG_START = {"G": 0.5, "w": 0.5}  # config/config.yaml's coupling.G and model w


def _setup(steps: int, subject: str):
    from bnmfit.recipe import build_stages

    cfg = w5_fit._config(8, steps, patience=0)
    s = w5_fit._subject(cfg, subject)
    problem = w5_fit.problem_of(cfg, s)
    return cfg, problem, build_stages(cfg)[0]


def case_start(subject: str) -> dict:
    """The best point of the config's exploration grid (the workflow's refinement start)."""
    from bnmfit import explore
    from bnmfit.recipe import build_space, noise_seeds

    cfg, problem, _ = _setup(1, subject)
    space = build_space(cfg)
    land = explore.evaluate(problem, space.names, space.points(), noise_seeds(cfg), batch_size=16)
    return {"start": {k: float(v) for k, v in land.starts(1, space=space)[0].items()}}


def case_fit(
    optimizer: str,
    steps: int,
    n_noise: int,
    start: dict,
    subject: str,
    repeats: int = 2,
    cache_dir: str | None = None,
) -> dict:
    """``repeats`` refinements of the global stage (cold, then warm): [step, CPU seconds] at
    every progress call, and [step, held-out scores per seed] of the parameters after each
    step (LM: every iteration; Adam: its last); ``cache_dir``: JAX's persistent compilation
    cache there, as the workflow's compute.compilation_cache (no scores then)."""
    import dataclasses
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np

    from bnmfit import fit

    if cache_dir:
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    cfg, problem, stage = _setup(steps, subject)
    if optimizer != "adam":
        stage = dataclasses.replace(
            stage, optimizer=optimizer, n_noise=n_noise, noise_average="fc", fresh_noise=False
        )
    runs = []
    for _ in range(repeats):
        cpu: list = []
        t0, w0 = time.process_time(), time.perf_counter()
        res = fit.refine(
            problem,
            [stage],
            [start],
            seed=int(cfg["noise"]["seed"]),
            heldout_seeds=tuple(cfg["refinement"]["heldout_seeds"]),
            checkpoint_every=int(cfg["refinement"]["checkpoint_every"]),
            progress=lambda name, step, total, loss, cpu=cpu, t0=t0: cpu.append(
                [step, time.process_time() - t0]
            ),
        )
        rec = res.stages[0]
        cpu_s, wall_s = time.process_time() - t0, time.perf_counter() - w0
        runs.append({"cpu_s": cpu_s, "wall_s": wall_s, "cpu_at_step": cpu})
    n = rec.steps_run
    traj = {k: np.asarray(v)[:n, 0] for k, v in rec.history["params"].items()}
    score = jax.jit(lambda p, k: problem.loss(p, k))
    keys = [jax.random.PRNGKey(s) for s in HELDOUT]

    def heldout(i):
        p = {k: jnp.asarray(v[i], problem.weights.dtype) for k, v in traj.items()}
        return [float(score(p, k)) for k in keys]

    scored = [] if cache_dir else range(n) if optimizer != "adam" else [n - 1]
    return {
        "runs": runs,
        "steps_run": n,
        "params": {k: float(v[n - 1]) for k, v in traj.items()},
        "heldout": [[i + 1, heldout(i)] for i in scored],  # per seed
        "fit_loss": np.asarray(rec.history["loss"])[:n, 0].tolist(),
    }


def _first_reaching(lm: dict, adam: list, run: int, noise: bool) -> tuple:
    """LM's first iteration whose mean score is ≤ Adam's (``noise``: ≤ Adam's + the paired
    standard error), the CPU seconds until it, its score and that standard error."""
    import numpy as np

    cpu = {int(s): c for s, c in lm["runs"][run]["cpu_at_step"]}
    for step, per_seed in lm["heldout"]:
        d = np.asarray(per_seed) - np.asarray(adam)
        se = float(d.std(ddof=1) / np.sqrt(d.size))
        if d.mean() <= (se if noise else 0.0):
            return int(step), cpu[int(step)], float(np.mean(per_seed)), se
    return None, None, None, None


def run(args) -> dict:
    import numpy as np

    subject = common.SUBJECT
    adam_steps = 20 if args.quick else 100
    explored = common.run_case(MODULE, "case_start", {"subject": subject}, x64=False)
    if explored.get("error"):
        raise SystemExit(f"exploration failed: {explored['error']}")
    starts = {"grid": explored["start"], "config": CONFIG_START}
    cases, rows = {"starts": starts}, []
    lm_noise = (1,) if args.quick else (1, 2)
    for where, start in starts.items():
        kw = {"start": start, "subject": subject}
        fits = [("adam", "adam", adam_steps, 1)]
        fits += [(f"LM n_noise {k}", "levenberg-marquardt", LM_STEPS, k) for k in lm_noise]
        for name, optimizer, steps, n_noise in fits:
            cases[f"{where}: {name}"] = common.run_case(
                MODULE,
                "case_fit",
                {"optimizer": optimizer, "steps": steps, "n_noise": n_noise, **kw},
                x64=False,
                timeout_s=3600,
            )
        adam = cases[f"{where}: adam"]
        if adam.get("error"):
            rows.append(common.row("LM", "bnmfit", "float32", f"{where}: adam", adam))
            continue
        per_seed = adam["heldout"][-1][1]
        for run_i, label in ((0, "cold"), (1, "warm")):
            a_cpu = adam["runs"][run_i]["cpu_at_step"][-1][1]
            p = adam["params"]
            rows.append(
                _row(
                    f"{where}: adam, {adam_steps} steps ({label})",
                    a_cpu,
                    f"score {np.mean(per_seed):.4f}; G {p['G']:.4f}, w {p['w']:.4f}",
                )
            )
            for name in (n for n, *_ in fits[1:]):
                lm = cases[f"{where}: {name}"]
                rows.append(_lm_row(f"{where}: {name} ({label})", lm, per_seed, run_i, a_cpu))
    rows += _cached_rows(cases, starts["config"], subject, adam_steps)
    notes = [
        f"{subject}, config/config.yaml's global stage (G, w); starts {starts} (grid: the best "
        "point of the config's 8 × 8 grid); float32, 300 TRs per simulation; CPU = user + "
        "sys (time.process_time) from refine's call to the step; cold = a fresh process "
        "(compilation included), warm = a second refine in the same process.",
        f"score: the problem's loss on {len(HELDOUT)} held-out seeds ({HELDOUT[0]}–"
        f"{HELDOUT[-1]}, one simulation each, averaged), the same seeds for every parameter "
        "set; target (issue 23 item 5): LM reaches Adam's score in ≤ 1/3 of Adam's CPU.",
    ]
    return common.report(NAME, TITLE, rows, cases, args, notes)


def _cached_rows(cases: dict, start: dict, subject: str, adam_steps: int) -> list[dict]:
    """From the config start, Adam and LM n_noise 1 in a fresh process whose persistent
    compilation cache a first process filled (the workflow's later jobs): LM's CPU until
    the iteration that reached Adam's score in the scored runs."""
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, optimizer, steps in (
            ("adam", "adam", adam_steps),
            ("LM n_noise 1", "levenberg-marquardt", LM_STEPS),
        ):
            kw = {"optimizer": optimizer, "steps": steps, "n_noise": 1, "start": start}
            for _ in range(2):  # the first fills the cache
                out[name] = common.run_case(
                    MODULE,
                    "case_fit",
                    {**kw, "subject": subject, "repeats": 1, "cache_dir": cache},
                    x64=False,
                    timeout_s=3600,
                )
            cases[f"config, compilation cache: {name}"] = out[name]
    adam, lm = out["adam"], out["LM n_noise 1"]
    if adam.get("error") or lm.get("error"):
        return [
            common.row(
                "LM", "bnmfit", "float32", "compilation cache", adam if adam.get("error") else lm
            )
        ]
    a_cpu = adam["runs"][0]["cpu_at_step"][-1][1]
    scored = cases["config: LM n_noise 1"]
    step = _first_reaching(scored, cases["config: adam"]["heldout"][-1][1], 0, False)[0]
    rows = [
        _row(
            "config: adam, cached compilation",
            a_cpu,
            "fresh process, compilation cache filled by a first one",
        )
    ]
    if step is not None:
        cpu = {int(s): c for s, c in lm["runs"][0]["cpu_at_step"]}[step]
        figure = (
            f"iteration {step} (Adam's score, as above): {cpu:.1f} s CPU = "
            f"{cpu / a_cpu:.2f} × Adam's"
        )
        rows.append(_row("config: LM n_noise 1, cached compilation", cpu, figure))
    return rows


def _lm_row(name: str, lm: dict, adam: list, run_i: int, a_cpu: float) -> dict:
    import numpy as np

    if lm.get("error"):
        return common.row("LM", "bnmfit", "float32", name, lm)
    r = lm["runs"][run_i]
    parts = []
    for noise, what in ((False, "Adam's score"), (True, "Adam's score within noise")):
        step, cpu, score, se = _first_reaching(lm, adam, run_i, noise)
        parts.append(
            f"{what} at iteration {step} ({score:.4f} ± {se:.4f}): {cpu:.1f} s CPU = "
            f"{cpu / a_cpu:.2f} × Adam's"
            if step is not None
            else f"never {what}"
        )
    best = min(float(np.mean(s)) for _, s in lm["heldout"])
    figure = "; ".join(parts) + (
        f"; best score {best:.4f}; {lm['steps_run']} iterations, {r['cpu_s']:.1f} s CPU with "
        f"the stage's end; G {lm['params']['G']:.4f}, w {lm['params']['w']:.4f}"
    )
    first = _first_reaching(lm, adam, run_i, False)[1]
    return _row(name, first if first is not None else r["cpu_s"], figure)


def _row(variant: str, cpu: float, figure: str) -> dict:
    res = {"median_s": cpu, "min_s": cpu, "max_s": cpu, "runs": 1}
    return common.row("LM", "bnmfit", "float32", variant, res, figure)


def main(argv=None) -> dict:
    return run(common.parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    main()
