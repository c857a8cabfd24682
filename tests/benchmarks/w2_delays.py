"""W2 — forward with conduction delays: 3 mm/ms, dt = 1 ms, 10 s simulated, to BOLD.

Figure: seconds per simulation. 10 s is not a whole number of 720-ms TRs, so both libraries
simulate 14 TRs = 10.08 s (10 080 steps) and return BOLD; no FC (14 TRs leave nothing after
discarding 20).

    python -m tests.benchmarks.w2_delays [--quick] [--out DIR] [--repeats N] [--unroll K]
"""

from __future__ import annotations

from tests.benchmarks import common

NAME = "w2_delays"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "W2 — forward with delays: 3 mm/ms, dt = 1 ms, 10.08 s (14 TRs), to BOLD"
DT = 1.0
N_TR = 14


def _delays_ms(subject):
    return subject.lengths / common.SPEED


def _bnmfit_call(subject, dtype: str, unroll: int | None, heun_coupling: str = "per_step"):
    import jax

    from bnmfit.connectome import delay_steps

    steps = delay_steps(_delays_ms(subject), DT)
    problem = common.bnmfit_problem(
        subject, dtype, dt=DT, n_tr=N_TR, delays=steps, unroll=unroll, heun_coupling=heun_coupling
    )
    params = {"G": jax.numpy.asarray(common.G0, dtype)}

    def bold(problem, params, key):  # SC, delays and parameters as arguments
        return problem.simulate(params, key).bold

    compiled, compile_s = common.compile_aot(jax.jit(bold), problem, params, jax.random.key(0))
    y = compiled(problem, params, jax.random.key(0))
    n_steps = N_TR * problem.spec.steps_per_tr
    facts = {
        "compile_s": compile_s,
        "n_steps": n_steps,
        "node_steps": n_steps * subject.n,
        "max_delay_steps": int(steps.max()),
        "finite": bool(jax.numpy.isfinite(y).all()),
        "dtype": str(y.dtype),
        "unroll": problem.spec.unroll,
        "heun_coupling": heun_coupling,
    }
    return (lambda i: compiled(problem, params, jax.random.key(100 + i))), facts


def _tvboptim_call(subject, dtype: str, buffer_strategy: str):
    import jax

    setup = common.tvboptim_setup(
        subject,
        dtype,
        dt=DT,
        t1=N_TR * common.TR_MS,
        delays_ms=_delays_ms(subject),
        buffer_strategy=buffer_strategy,
    )

    def bold(state, key):
        return setup.bold(common.with_leaves(state, **{"noise.key": key}))

    compiled, compile_s = common.compile_aot(jax.jit(bold), setup.state, jax.random.key(0))
    y = compiled(setup.state, jax.random.key(0))
    facts = {
        "compile_s": compile_s,
        "n_steps": setup.n_steps,
        "node_steps": setup.n_steps * subject.n,
        "finite": bool(jax.numpy.isfinite(y).all()),
        "dtype": str(y.dtype),
        "bold_shape": list(y.shape),
    }
    return (lambda i: compiled(setup.state, jax.random.key(100 + i))), facts


def _bnmfit_serve(dtype: str, unroll: int | None = None, heun_coupling: str = "per_step"):
    return _bnmfit_call(common.load_subject(), dtype, unroll, heun_coupling)


def _tvboptim_serve(dtype: str, buffer_strategy: str = "roll"):
    return _tvboptim_call(common.load_subject(), dtype, buffer_strategy)


def case_bnmfit(
    dtype: str, repeats: int, unroll: int | None = None, heun_coupling: str = "per_step"
) -> dict:
    call, facts = _bnmfit_call(common.load_subject(), dtype, unroll, heun_coupling)
    return {**common.stats(common.time_runs(call, repeats)), **facts}


def run(args) -> dict:
    repeats = args.repeats or (2 if args.quick else 5)
    rounds = repeats + 4
    peers = not args.no_peers and common.peer_available("tvboptim") is None
    strategies = ["roll"] if args.quick else ["roll", "circular"]
    rows, cases = [], {}
    for dtype in common.precisions(args.quick):
        ours = ("_bnmfit_serve", {"dtype": dtype, "unroll": args.unroll})
        if not peers:
            res = cases[f"bnmfit/{dtype}"] = common.run_case(
                MODULE,
                "case_bnmfit",
                {"dtype": dtype, "repeats": repeats, "unroll": args.unroll},
                x64=dtype == "float64",
            )
            rows.append(
                common.row(
                    "W2",
                    "bnmfit",
                    dtype,
                    "ring buffer, coupling per step; bnmfit's XLA flags",
                    res,
                    _figure(res),
                )
            )
            continue
        for strategy in strategies:
            res = cases[f"settings-{strategy}/{dtype}"] = common.settings_runs(
                MODULE,
                dtype,
                rounds,
                peer=("_tvboptim_serve", {"dtype": dtype, "buffer_strategy": strategy}),
                ours=ours,
            )
            rows += common.settings_rows(
                "W2",
                dtype,
                res,
                f"buffer_strategy={strategy}",
                "ring buffer, coupling per step",
                _figure,
            )
    notes = [
        "Delays = lengths / 3 mm/ms, rounded to whole 1-ms steps (bnmfit: "
        "connectome.delay_steps; tvboptim: rint of (delay/dt − ½), its Heun stage-centroid "
        "correction for the frozen coupling). Largest delay ≈ 95 steps.",
        "bnmfit: jax.jit(bold)(problem, {G}, key), one delay gather per step (edges without "
        "delay couple through a mat-vec); tvboptim: jax.jit(bold)(config, key) with "
        "DenseDelayGraph + DelayedLinearCoupling (coupling frozen per step) → "
        "BalloonWindkesselBold. Both take SC, delays and parameters as arguments.",
        f"Each group: four processes (each library on bnmfit's XLA flags and on XLA's "
        f"defaults), {rounds} rounds of alternated runs as in W1, one group per tvboptim buffer "
        "strategy (bnmfit's rows are measured again in each). vs tvboptim = tvboptim median / "
        "bnmfit median, the two medians printed with it.",
    ]
    return common.report(NAME, TITLE, rows, cases, args, notes)


def _figure(res: dict) -> str:
    if res.get("error"):
        return ""
    return f"{common.fmt_rate(res['node_steps'] / res['median_s'])} node-steps/s"


def main(argv=None) -> dict:
    return run(common.parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    main()
