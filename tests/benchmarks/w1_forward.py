"""W1 — forward: 60 s simulated at dt = 4 ms, no delays, BOLD + FC + loss.

Figure: seconds per simulation and node-steps per second, bnmfit vs tvboptim, float32 and
float64. Both libraries simulate the same 83 TRs (59.76 s = 14 940 steps): bnmfit returns whole
TRs only, so tvboptim is run to the same t1.

    python -m tests.benchmarks.w1_forward [--quick] [--out DIR] [--repeats N] [--unroll K]
"""

from __future__ import annotations

from tests.benchmarks import common

NAME = "w1_forward"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "W1 — forward: 60 s, dt = 4 ms, no delays, BOLD + FC + loss (one simulation)"
DT = 4.0
N_TR = int(60000.0 // common.TR_MS)  # 83


def _bnmfit_call(
    dtype: str, unroll: int | None = None, heun_coupling: str = "per_step", subject=None
):
    """The compiled W1 loss of bnmfit: (call(i), facts)."""
    import jax
    import jax.numpy as jnp

    from bnmfit.problem import Problem

    subject = subject or common.load_subject()
    problem = common.bnmfit_problem(
        subject, dtype, dt=DT, n_tr=N_TR, unroll=unroll, heun_coupling=heun_coupling
    )
    params = {"G": jnp.asarray(common.G0, dtype), "w": jnp.asarray(common.W0, dtype)}
    # the problem (SC, empirical FC, fixed parameters) is an argument, as in bnmfit's fit
    compiled, compile_s = common.compile_aot(
        jax.jit(Problem.loss), problem, params, jax.random.key(0)
    )
    loss = compiled(problem, params, jax.random.key(0))
    spec = problem.spec
    n_steps = (spec.n_tr + spec.n_transient) * spec.steps_per_tr
    facts = {
        "compile_s": compile_s,
        "n_steps": n_steps,
        "n": subject.n,
        "node_steps": n_steps * subject.n,
        "loss": float(loss),
        "dtype": str(loss.dtype),
        "unroll": spec.unroll,
        "heun_coupling": spec.heun_coupling,
        "source": subject.source,
    }
    return (lambda i: compiled(problem, params, jax.random.key(100 + i))), facts


def _tvboptim_call(dtype: str, recompute_coupling: bool = False, subject=None):
    """The compiled W1 loss of tvboptim: (call(i), facts)."""
    import jax
    from tvboptim.observations.observation import compute_fc

    subject = subject or common.load_subject()
    setup = common.tvboptim_setup(
        subject, dtype, dt=DT, t1=N_TR * common.TR_MS, recompute_coupling=recompute_coupling
    )
    fc_emp = jax.numpy.asarray(subject.fc, dtype)

    def loss(state, fc_emp, key):  # the config (its SC, parameters) and FC as arguments
        state = common.with_leaves(state, **{"noise.key": key})
        fc = compute_fc(setup.bold_monitor(setup.model(state)), skip_t=common.DISCARD_TR)
        return common.upper_pearson_loss(fc, fc_emp)

    compiled, compile_s = common.compile_aot(jax.jit(loss), setup.state, fc_emp, jax.random.key(0))
    value = compiled(setup.state, fc_emp, jax.random.key(0))
    facts = {
        "compile_s": compile_s,
        "n_steps": setup.n_steps,
        "n": subject.n,
        "node_steps": setup.n_steps * subject.n,
        "loss": float(value),
        "dtype": str(value.dtype),
    }
    return (lambda i: compiled(setup.state, fc_emp, jax.random.key(100 + i))), facts


def case_bnmfit(dtype: str, repeats: int, unroll: int | None = None) -> dict:
    call, facts = _bnmfit_call(dtype, unroll)
    return {**common.stats(common.time_runs(call, repeats)), **facts}


def run(args) -> dict:
    repeats = args.repeats or (2 if args.quick else 7)
    rounds = repeats + 4
    peers = not args.no_peers and common.peer_available("tvboptim") is None
    rows, cases = [], {}
    for dtype in common.precisions(args.quick):
        schemes = [False] if args.quick else [False, True]  # Heun coupling per stage?
        for ps in schemes:
            scheme = "per stage (bnmfit's default)" if ps else "per step"
            peer_scheme = "per stage" if ps else "frozen per step (default)"
            ours = (
                "_bnmfit_call",
                {
                    "dtype": dtype,
                    "unroll": args.unroll,
                    "heun_coupling": "per_stage" if ps else "per_step",
                },
            )
            label = f"{dtype}{'-coupling-per-stage' if ps else ''}"
            if peers:
                res = cases[f"settings/{label}"] = common.settings_runs(
                    MODULE,
                    dtype,
                    rounds,
                    peer=("_tvboptim_call", {"dtype": dtype, "recompute_coupling": ps}),
                    ours=ours,
                )
                rows += common.settings_rows(
                    "W1",
                    dtype,
                    res,
                    f"Heun, coupling {peer_scheme}",
                    f"Heun, coupling {scheme}",
                    _figure,
                )
            else:
                res = cases[f"bnmfit/{label}"] = common.run_case(
                    MODULE,
                    "case_bnmfit",
                    {"dtype": dtype, "repeats": repeats, "unroll": args.unroll},
                    x64=dtype == "float64",
                )
                rows.append(
                    common.row(
                        "W1",
                        "bnmfit",
                        dtype,
                        f"Heun, coupling {scheme}; bnmfit's XLA flags",
                        res,
                        _figure(res),
                    )
                )
    notes = [
        "bnmfit: jax.jit(Problem.loss)(problem, {G, w}, key): simulate (BOLD online in the "
        "scan) → FC → 1 − r; 83 TRs × 180 steps. tvboptim: jax.jit(loss)(config, fc_emp, key) "
        "with loss = solve_fn(config) → BalloonWindkesselBold (post hoc scan over the stored S "
        "trajectory) → compute_fc(skip_t=20) → the same 1 − r. Both take SC, parameters, "
        "empirical FC and noise key as arguments (none is a compile-time constant), as their "
        "own fitting loops do.",
        "Same arithmetic in each group of rows: 'coupling per step' (one mat-vec per step, "
        "tvboptim's default and TVB's scheme; bnmfit SimSpec(heun_coupling='per_step')) and "
        "'coupling per stage' (two mat-vecs, the coupling re-evaluated at the predictor; "
        "bnmfit's default, tvboptim recompute_coupling_per_stage=True).",
        f"Each group: four processes (each library on bnmfit's XLA flags and on XLA's "
        f"defaults), one warm-up run each, then {rounds} rounds in which each process runs "
        "once, the order reversed every other round, so that the shared machine's load, which "
        "moves separate measurements by tens of per cent, hits all four alike. vs tvboptim = "
        "tvboptim median / bnmfit median (> 1: bnmfit faster), the two medians printed with "
        "it; 'per round' = range of round-by-round ratios.",
        "Compile = lower + compile (AOT), excluded from the runs. Peak RSS = whole child "
        "process (Python + JAX ≈ 300–500 MB of it).",
    ]
    if not peers:
        notes.append(f"tvboptim not measured: {common.peer_available('tvboptim') or 'disabled'}")
    return common.report(NAME, TITLE, rows, cases, args, notes)


def _figure(res: dict) -> str:
    if res.get("error"):
        return ""
    rate = res["node_steps"] / res["median_s"]
    return f"{common.fmt_rate(rate)} node-steps/s"


def main(argv=None) -> dict:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    return run(args)


if __name__ == "__main__":
    main()
