"""W8 — GPU throughput: W4's grid at batch ≥ 4096, and the Wong-Wang E–I model for cuBNM.

Two workloads, each through ``explore.evaluate`` (the exploration path of the workflow: one
compiled batch of points, every point's loss, FC r and divergence flag back on the host):

- ``w4``: W4 of BENCHMARKS.md (Reduced Wong-Wang, W1's 60 s at dt = 4 ms, Heun, BOLD + FC +
  loss, sub-01's 80 regions) on a square (G, w) grid of ``batch`` points.
- ``ei``: the Wong-Wang E–I model of Deco 2014 (TVB's defaults, J_i = 1) on 100 regions,
  60 s at dt = 0.1 ms (600 000 steps), Euler–Maruyama as cuBNM integrates, additive noise
  sigma = 0.01 on S_e and S_i, BOLD (TR = 1 s; Balloon–Windkessel stepped every
  ``bold_dt`` = 1 ms by default, as cuBNM steps it with its own ``bw_dt``) + FC + loss, on a
  (G, w_p) grid of ``batch`` points. cuBNM's README: 2^17 such simulations (its E–I model
  with FIC, 100 regions, 60 s) in 19 minutes on one A100 ≈ 115 simulations/s.

One noise seed per point, shared by all points (common random numbers, as the workflow's
exploration does and as cuBNM shares its noise across simulations). Figure: simulations per
second and node-steps per second (integration steps × regions) over whole batches, after a
first call that compiles.

    python -m tests.benchmarks.w8_gpu [--quick] [--out DIR] [--cases ei:4096:1,w4:4096:1]

A case is ``workload:batch:unroll[:bold_dt]`` (bold_dt in ms; default 1 for ``ei``, dt for
``w4``).
"""

from __future__ import annotations

import math
import time

from tests.benchmarks import common
from tests.benchmarks.w1_forward import DT, N_TR

NAME = "w8_gpu"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "W8 — GPU: W4 at batch ≥ 4096 and the E–I Wong-Wang model (100 regions, dt 0.1 ms)"
CUBNM_SIMS_PER_S = 2**17 / (19 * 60)  # cuBNM's README, one A100
EI_REGIONS = 100
EI_DT = 0.1  # ms
EI_TR = 1000.0  # ms
EI_SECONDS = 60
EI_SIGMA = 0.01
EI_BOLD_DT = 1.0  # ms
DEFAULT_CASES = "ei:4096:10,ei:32768:10,w4:4096:1,w4:16384:4"
QUICK_CASES = "ei:8:1,w4:16:1"


def _random_sc(n: int):
    """A symmetric, max-normalised 100-region SC (lognormal weights, 30 % density, seed 0).

    Throughput does not depend on the values (the coupling is a dense product); the bundled
    cohort has 80 regions, so W8's 100 regions come from here."""
    import numpy as np

    rng = np.random.default_rng(0)
    w = rng.lognormal(0.0, 1.0, (n, n)) * (rng.random((n, n)) < 0.3)
    w = np.triu(w, 1)
    w = w + w.T
    return w / w.max()


def _ei_problem(seconds: float):
    import jax.numpy as jnp
    import numpy as np

    from bnmfit import losses
    from bnmfit.models.wong_wang_ei import WongWangEI
    from bnmfit.problem import Observation, Problem
    from bnmfit.simulate import SimSpec

    sc = _random_sc(EI_REGIONS)
    rng = np.random.default_rng(1)
    fc = np.corrcoef((rng.standard_normal((600, EI_REGIONS)) @ (np.eye(EI_REGIONS) + sc)).T)
    spec = SimSpec(
        dt=EI_DT,
        tr=EI_TR,
        n_tr=int(seconds * 1000 // EI_TR),
        integrator="euler",
        noise="additive",
        checkpoint=False,
    )
    obs = Observation(tr=EI_TR / 1000.0, detrend=False, bandpass=None, zscore=False)
    return Problem(
        WongWangEI(),
        jnp.asarray(sc, jnp.float32),
        spec,
        obs,
        losses.Observed(jnp.asarray(fc, jnp.float32)),
        G=1.0,
        sigma=EI_SIGMA,
    )


def measure(
    workload: str,
    batch: int,
    unroll: int,
    repeats: int,
    seconds: float,
    bold_dt: float | None = None,
) -> dict:
    """One case: compile + first batch, then ``repeats`` timed batches of ``batch`` points."""
    import dataclasses

    import jax

    from bnmfit import explore
    from bnmfit.explore import Axis, Space

    if workload == "w4":
        problem = common.bnmfit_problem(common.load_subject(), "float32", dt=DT, n_tr=N_TR)
        axes = (("G", 0.01, 3.0), ("w", 0.01, 1.0))
    else:
        problem = _ei_problem(seconds)
        axes = (("G", 0.5, 3.0), ("w_p", 1.0, 1.6))
        bold_dt = EI_BOLD_DT if bold_dt is None else bold_dt
    spec = dataclasses.replace(problem.spec, unroll=unroll, bold_dt=bold_dt)
    problem = dataclasses.replace(problem, spec=spec)
    side = math.ceil(batch**0.5)  # a square grid, cut to the batch
    space = Space(tuple(Axis(name, lo, hi, side) for name, lo, hi in axes))
    names, points = space.names, space.points()[:batch]

    def once(seed):
        t = time.perf_counter()
        res = explore.evaluate(problem, names, points, [seed], batch_size=batch)
        return time.perf_counter() - t, res

    first_s, res = once(0)
    times = [once(1 + i)[0] for i in range(repeats)]
    stats = common.stats(times)
    steps = (spec.n_tr + spec.n_transient) * spec.steps_per_tr
    sims_per_s = batch / stats["median_s"]
    return {
        **stats,
        "compile_s": first_s - stats["median_s"],
        "batch": batch,
        "unroll": unroll,
        "bold_dt": spec.bold_dt or spec.dt,
        "steps": steps,
        "n": problem.n_regions,
        "sims_per_s": sims_per_s,
        "node_steps_per_s": sims_per_s * steps * problem.n_regions,
        "diverged": int(res.diverged.sum()),
        "best_r": float(max(res.fc_r)),
        "device": str(jax.devices()[0].device_kind),
        "peak_rss_mb": common.peak_rss_mb(),
    }


def run(args) -> dict:
    cases_arg = getattr(args, "cases", None) or (QUICK_CASES if args.quick else DEFAULT_CASES)
    repeats = args.repeats or (1 if args.quick else 2)
    seconds = 5 if args.quick else EI_SECONDS
    rows, cases = [], {}
    for case in cases_arg.split(","):
        workload, batch, unroll, *bold_dt = case.split(":")
        bold_dt = float(bold_dt[0]) if bold_dt else None
        try:
            res = measure(workload, int(batch), int(unroll), repeats, seconds, bold_dt)
        except Exception as exc:  # noqa: BLE001 — one failing case must not lose the others
            res = {"error": f"{type(exc).__name__}: {exc}"}
        cases[case] = res
        label = "W8 E–I 100 regions" if workload == "ei" else "W8 W4 grid"
        figure = (
            ""
            if res.get("error")
            else (
                f"{res['sims_per_s']:.0f} sims/s, {common.fmt_rate(res['node_steps_per_s'])} "
                f"node-steps/s; {res['device']}; {res['diverged']} diverged"
            )
        )
        vs = (
            ""
            if res.get("error") or workload != "ei"
            else (f"{res['sims_per_s'] / CUBNM_SIMS_PER_S:.1f}× cuBNM (A100, README)")
        )
        variant = f"batch {batch}, unroll {unroll}, BOLD step {res.get('bold_dt', '?')} ms"
        rows.append(common.row(label, "bnmfit", "float32", variant, res, figure, vs))
        print(rows[-1], flush=True)
    notes = [
        f"cuBNM: 2^17 simulations in 19 min on one A100 (its README) = "
        f"{CUBNM_SIMS_PER_S:.0f} simulations/s; the target is 10× that on one H100.",
        "E–I: a random symmetric 100-region SC (the bundled cohort has 80 regions); "
        f"{EI_SECONDS} s at dt {EI_DT} ms, Euler–Maruyama, sigma {EI_SIGMA}.",
        "Coupling products and FC in full float32 (Precision.HIGHEST, not TensorFloat-32).",
    ]
    return common.report(NAME, TITLE, rows, cases, args, notes)


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--cases",
        default=None,
        help=f"comma-separated workload:batch:unroll (default {DEFAULT_CASES})",
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
