"""CMA-ES vs a Sobol sample — exploring six parameters of one bundled subject (issue 26).

The recipe of the issue (G plus a 2-map heterogeneity of w and of I_o) cannot be explored:
exploration axes are scalar parameters of the problem (G, sigma, a model parameter,
broadcast over regions), not the coefficients of a ``scope: map`` parameter, which only
refinement frees. The benchmark therefore explores six scalar parameters of the reduced
Wong–Wang model (:data:`AXES`: G, w, I_o, J_N, tau_s and the noise sigma on a log axis) on
sub-01 of the bundled cohort (80 regions; SC and empirical FC as the workflow reads them;
config/config.yaml's simulation: 300 TRs of 0.72 s at dt 7.2 ms, float32, its loss
1 − r(FC) + RMSE(FC)).

* Sobol: ``--sobol`` scrambled Sobol points of the box (``exploration.sampler: sobol``,
  seed 0), one noise seed each, through :func:`bnmfit.explore.evaluate`.
* CMA-ES: ``exploration.sampler: cmaes`` (:func:`bnmfit.explore.evolve`: evosax's CMA-ES
  over the box through the sigmoid/log transforms, from the box's middle, step 1), population
  ``--population`` (default: 4 + ⌊3 ln 6⌋ = 9), the same noise seed for every candidate, a
  budget of ``--budget`` (default half) of the Sobol sample's simulations, no tolerance
  stop; ``--repeats`` strategy seeds (default 3).

Every point of both is simulated with the same noise seed, so both minimise the same
deterministic function. Reported: the best loss after n simulations for both (the Sobol
sample's running minimum in its sequence order, which is itself an anytime sampler), how many
simulations CMA-ES needed to reach the best of the whole Sobol sample (target: ≤ 1/4 of it),
and the wall time per simulation (compilation excluded). cuBNM's CMA-ES is compared in
:mod:`tests.benchmarks.cubnm_peer` (from its own virtual environment).

    python -m tests.benchmarks.cmaes_explore [--quick] [--sobol 512] [--population 9]
        [--budget 0.5] [--repeats 3] [--n-tr 300] [--out DIR]
"""

from __future__ import annotations

import time

from tests.benchmarks import common, w5_fit

NAME = "cmaes_explore"
TITLE = "CMA-ES vs Sobol — six RWW parameters on sub-01 (80 regions): loss vs simulations"
SUBJECT = "sub-01"
#: the explored box: (name, lo, hi, scale)
AXES = (
    ("G", 0.05, 1.0, "linear"),
    ("w", 0.05, 1.0, "linear"),
    ("I_o", 0.2, 0.45, "linear"),
    ("J_N", 0.15, 0.4, "linear"),
    ("tau_s", 50.0, 150.0, "linear"),
    ("sigma", 5e-4, 1e-2, "log"),
)
NOISE_SEED = 0


def _problem(n_tr: int):
    from bnmfit.config import load_config

    cfg = load_config(w5_fit.CONFIG)
    cfg["simulation"].update(n_tr=int(n_tr), duration=None)
    s = w5_fit._subject(cfg, SUBJECT)
    problem = w5_fit.problem_of(cfg, s)
    return problem, cfg


def _curve(losses) -> list[float]:
    """The best loss after each simulation (inf until a finite one)."""
    import numpy as np

    x = np.where(np.isfinite(losses), losses, np.inf)
    return np.minimum.accumulate(x).tolist()


def _reach(curve: list[float], target: float) -> int | None:
    """Simulations until the running best is at most ``target`` (None: never)."""
    return next((i + 1 for i, v in enumerate(curve) if v <= target), None)


def main() -> None:
    import jax
    import numpy as np

    from bnmfit import explore
    from bnmfit.losses import loss_spec

    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--sobol", type=int, default=512, help="Sobol points (a power of two)")
    p.add_argument(
        "--population", type=int, default=None, help="CMA-ES candidates (default 4 + 3 ln D)"
    )
    p.add_argument(
        "--budget", type=float, default=0.5, help="CMA-ES simulations, a fraction of Sobol's"
    )
    p.add_argument("--n-tr", type=int, default=300, help="simulated TRs per simulation")
    p.add_argument("--batch-size", type=int, default=16, help="simulations per batch")
    args = p.parse_args()
    args.repeats = args.repeats or 3  # CMA-ES strategy seeds
    if args.quick:
        args.sobol, args.repeats, args.n_tr = 64, 1, 100
    jax.config.update("jax_platforms", "cpu")
    problem, cfg = _problem(args.n_tr)
    spec = loss_spec(cfg)
    offset = spec.offset  # the configured loss' constant, as in the result files
    axes = tuple(explore.Axis(n, lo, hi, scale=s) for n, lo, hi, s in AXES)
    seeds = [NOISE_SEED]

    sobol = explore.Space(axes, "sobol", n_samples=args.sobol, seed=0)
    pts = sobol.points()
    explore.evaluate(
        problem, sobol.names, pts[: args.batch_size], seeds, batch_size=args.batch_size
    )
    t0 = time.perf_counter()  # compiled above: the same batch shape
    res = explore.evaluate(problem, sobol.names, pts, seeds, batch_size=args.batch_size)
    sobol_s = time.perf_counter() - t0
    s_curve = _curve(res.mean_loss + offset)
    target = s_curve[-1]
    quarter = len(pts) // 4
    cases = {
        "sobol": {
            "simulations": len(pts),
            "best_loss": target,
            "best_at": dict(
                zip(sobol.names, pts[int(np.argmin(res.mean_loss))].tolist(), strict=True)
            ),
            "best_fc_r": float(res.fc_r[int(np.argmin(res.mean_loss))]),
            "best_loss_at_a_quarter": s_curve[quarter - 1],
            "diverged": int(res.diverged.sum()),
            "wall_s_per_simulation": sobol_s / len(pts),
            "curve": s_curve,
        }
    }
    rows = [("Sobol", f"{len(pts)} points", target, s_curve[quarter - 1], "—", sobol_s / len(pts))]
    for r in range(args.repeats):
        strategy = explore.Strategy(
            population=args.population,
            generations=10**6,
            tolerance=0.0,
            budget=int(args.budget * len(pts)),
        )
        space = explore.Space(axes, "cmaes", seed=r, strategy=strategy)
        t0 = time.perf_counter()
        ev = explore.evolve(problem, space, seeds, batch_size=args.batch_size)
        wall = time.perf_counter() - t0
        curve = _curve(ev.mean_loss + offset)
        best = int(np.argmin(ev.mean_loss))
        reach = _reach(curve, target)
        cases[f"cmaes_seed{r}"] = {
            "simulations": len(ev.points),
            "generations": len(ev.generations.best_loss),
            "stop": ev.generations.stop,
            "best_loss": curve[-1],
            "best_at": dict(zip(space.names, ev.points[best].tolist(), strict=True)),
            "best_fc_r": float(ev.fc_r[best]),
            "best_loss_at_a_quarter": curve[min(quarter, len(curve)) - 1],
            "simulations_to_reach_sobol_best": reach,
            "fraction_of_sobol": None if reach is None else reach / len(pts),
            "diverged": int(ev.diverged.sum()),
            "wall_s_per_simulation_incl_first_compile": wall / len(ev.points),
            "sigma_per_generation": ev.generations.sigma.tolist(),
            "best_loss_per_generation": ev.generations.best_loss.tolist(),
            "curve": curve,
        }
        rows.append(
            (
                f"CMA-ES (seed {r})",
                f"λ {ev.generations.population}, {len(ev.points)} sims",
                curve[-1],
                curve[min(quarter, len(curve)) - 1],
                "never" if reach is None else f"{reach} ({reach / len(pts):.0%})",
                wall / len(ev.points),
            )
        )
    reached = [c["fraction_of_sobol"] for k, c in cases.items() if k.startswith("cmaes")]
    notes = [
        f"{len(AXES)} axes: "
        + ", ".join(f"{n} [{lo:g}, {hi:g}]{' log' if s == 'log' else ''}" for n, lo, hi, s in AXES)
        + f"; sub-01, {args.n_tr} TRs at dt {problem.spec.dt:g} ms, float32, noise seed "
        f"{NOISE_SEED} for every point; loss {spec.describe()}.",
        "at_quarter: the best loss after a quarter of the Sobol sample's simulations; "
        "to_reach: CMA-ES simulations until its best is at most the whole Sobol sample's best "
        f"(target ≤ 25 %): {reached}.",
        "s_per_sim: Sobol without compilation; CMA-ES including its first compilation.",
    ]
    head = (
        "sampler",
        "run",
        "best loss",
        "best at 1/4 of Sobol's sims",
        "to reach Sobol's best",
        "s/sim",
    )
    table = [dict(zip(head, r, strict=True)) for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{c:.4f}" if isinstance(c, float) and i in (2, 3) else c for i, c in enumerate(r)]
        cells[5] = f"{r[5]:.3f}"
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    common.publish(NAME, TITLE, "\n".join(lines), args, notes, rows=table, cases=cases)


if __name__ == "__main__":
    main()
