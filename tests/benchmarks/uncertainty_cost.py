"""Uncertainty cost — standard errors of a stage against one regional refinement stage.

Issue 23 item 4: the standard errors (bnmfit.uncertainty.standard_errors, defaults
n_jacobian 4, n_noise 32, the sandwich of a fit with the stage's n_noise seeds, as refine
computes them) must cost at most one refinement stage of the same recipe. On
sub-01 (80 regions) with config/config.yaml's simulation (300 TRs, float32), at the point
``POINT``:

* ``global``: the 2 numbers of the global stage (G, w);
* ``regional``: the 80 regional w of the regional stage (G fixed);
* ``regional stage``: the config's regional stage with w alone free (Adam, lr 0.2, n_noise 2,
  noise_average fc; :func:`tests.benchmarks.common.regional_w_stage`) for ``STAGE_STEPS``
  steps, scaled to its 100 steps: the run's CPU and wall plus 90 times the warm per-step
  cost (measured between the first and the last progress call).

Each case runs in its own process, twice: cold (compilation included) and warm.

    python -m tests.benchmarks.uncertainty_cost [--out DIR]
"""

from __future__ import annotations

from tests.benchmarks import common, w5_fit

NAME = "uncertainty_cost"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "Uncertainty cost — standard errors vs one regional stage, sub-01 (80 regions)"
POINT = {"G": 0.3, "w": 0.35}
STAGE_STEPS = 10
FULL_STEPS = 100


def case_cost(kind: str, subject: str) -> dict:
    import time

    import jax.numpy as jnp

    from bnmfit import fit, uncertainty
    from bnmfit.recipe import build_stages

    cfg = w5_fit._config(8, STAGE_STEPS, patience=0)
    s = w5_fit._subject(cfg, subject)
    problem = w5_fit.problem_of(cfg, s)
    global_stage, regional_stage = build_stages(cfg)[:2]
    regional_stage = common.regional_w_stage(regional_stage)  # the 80 w this measures
    runs = []
    for _ in range(2):
        t0, w0 = time.process_time(), time.perf_counter()
        steps: list = []
        if kind == "regional stage":
            res = fit.refine(
                problem,
                [regional_stage],
                [POINT],
                seed=0,
                checkpoint_every=1,
                progress=lambda *a, steps=steps, t0=t0, w0=w0: steps.append(
                    [time.process_time() - t0, time.perf_counter() - w0]
                ),
            )
            facts = {"steps_run": res.stages[0].steps_run}
        else:
            stage = global_stage if kind == "global" else regional_stage
            pset = stage.parameters.bind(problem)
            u = pset.init(problem, POINT)
            fixed = {k: jnp.asarray(v) for k, v in POINT.items() if k not in pset.names}
            unc = uncertainty.standard_errors(  # as refine calls it: the sandwich
                problem, pset, u, fixed, seed=0, runs=4.0, labels=s["labels"], n_fit=stage.n_noise
            )
            facts = {
                "method": unc.method,
                "n_simulations": unc.n_simulations,
                "numbers": len(unc.labels),
                "identified": int(unc.identified.sum()),
                "median_relative_se": float(sorted(unc.relative_se)[len(unc.labels) // 2]),
            }
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        runs.append({"cpu_s": cpu, "wall_s": wall, "progress": steps, **facts})
    return {"runs": runs}


def run(args) -> dict:
    subject = common.SUBJECT
    cases, rows = {}, []
    for kind in ("global", "regional", "regional stage"):
        cases[kind] = res = common.run_case(
            MODULE, "case_cost", {"kind": kind, "subject": subject}, x64=False, timeout_s=3600
        )
        if res.get("error"):
            rows.append(common.row("SE cost", "bnmfit", "float32", kind, res))
            continue
        for r, label in zip(res["runs"], ("cold", "warm"), strict=True):
            if kind == "regional stage":
                (c1, w1), (cn, wn) = r["progress"][0], r["progress"][-1]
                per_cpu, per_wall = (cn - c1) / (STAGE_STEPS - 1), (wn - w1) / (STAGE_STEPS - 1)
                extra = FULL_STEPS - STAGE_STEPS
                cpu, wall = r["cpu_s"] + extra * per_cpu, r["wall_s"] + extra * per_wall
                figure = (
                    f"{STAGE_STEPS} steps: {r['cpu_s']:.1f} s CPU, {r['wall_s']:.1f} s wall; "
                    f"per step {per_cpu:.2f} s CPU, {per_wall:.2f} s wall; scaled to "
                    f"{FULL_STEPS} steps: {cpu:.0f} s CPU, {wall:.0f} s wall"
                )
            else:
                cpu, wall = r["cpu_s"], r["wall_s"]
                figure = (
                    f"{cpu:.1f} s CPU, {wall:.1f} s wall; {r['numbers']} numbers, "
                    f"{r['n_simulations']} simulations, {r['identified']} identified, median "
                    f"se/width {r['median_relative_se']:.3g}"
                )
            res_row = {"median_s": wall, "min_s": wall, "max_s": wall, "runs": 1}
            rows.append(
                common.row("SE cost", "bnmfit", "float32", f"{kind} ({label})", res_row, figure)
            )
    notes = [
        f"{subject}, config/config.yaml's simulation (300 TRs of 0.72 s, float32) at "
        f"{POINT}; standard errors with n_jacobian 4, n_noise 32, runs 4; the regional stage "
        f"as configured (Adam, n_noise 2, noise_average fc) run {STAGE_STEPS} steps and "
        f"scaled to {FULL_STEPS}. CPU = user + sys (time.process_time); the time column is "
        "wall; cold = a fresh process (compilation included), warm = the second call.",
    ]
    return common.report(NAME, TITLE, rows, cases, args, notes)


def main(argv=None) -> dict:
    return run(common.parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    main()
