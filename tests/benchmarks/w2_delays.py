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
    problem = common.bnmfit_problem(subject, dtype, dt=DT, n_tr=N_TR, delays=steps,
                                    unroll=unroll, heun_coupling=heun_coupling)
    params = {"G": jax.numpy.asarray(common.G0, dtype)}

    def bold(key):
        return problem.simulate(params, key).bold

    compiled, compile_s = common.compile_aot(jax.jit(bold), jax.random.key(0))
    y = compiled(jax.random.key(0))
    n_steps = N_TR * problem.spec.steps_per_tr
    facts = {"compile_s": compile_s, "n_steps": n_steps, "node_steps": n_steps * subject.n,
             "max_delay_steps": int(steps.max()), "finite": bool(jax.numpy.isfinite(y).all()),
             "dtype": str(y.dtype), "unroll": problem.spec.unroll,
             "heun_coupling": heun_coupling}
    return (lambda i: compiled(jax.random.key(100 + i))), facts


def _tvboptim_call(subject, dtype: str, buffer_strategy: str):
    import jax

    setup = common.tvboptim_setup(subject, dtype, dt=DT, t1=N_TR * common.TR_MS,
                                  delays_ms=_delays_ms(subject), buffer_strategy=buffer_strategy)

    def bold(state, key):
        return setup.bold(common.with_leaves(state, **{"noise.key": key}))

    compiled, compile_s = common.compile_aot(jax.jit(bold), setup.state, jax.random.key(0))
    y = compiled(setup.state, jax.random.key(0))
    facts = {"compile_s": compile_s, "n_steps": setup.n_steps,
             "node_steps": setup.n_steps * subject.n,
             "finite": bool(jax.numpy.isfinite(y).all()), "dtype": str(y.dtype),
             "bold_shape": list(y.shape)}
    return (lambda i: compiled(setup.state, jax.random.key(100 + i))), facts


def case_bnmfit(dtype: str, repeats: int, unroll: int | None = None,
                heun_coupling: str = "per_step") -> dict:
    call, facts = _bnmfit_call(common.load_subject(), dtype, unroll, heun_coupling)
    return {**common.stats(common.time_runs(call, repeats)), **facts}


def case_tvboptim(dtype: str, repeats: int, buffer_strategy: str = "roll") -> dict:
    call, facts = _tvboptim_call(common.load_subject(), dtype, buffer_strategy)
    return {**common.stats(common.time_runs(call, repeats)), **facts}


def case_paired(dtype: str, rounds: int, buffer_strategy: str = "roll",
                unroll: int | None = None) -> dict:
    """Both libraries in one process, runs alternated."""
    subject = common.load_subject()
    ours, ours_facts = _bnmfit_call(subject, dtype, unroll)
    peer, peer_facts = _tvboptim_call(subject, dtype, buffer_strategy)
    res = common.paired_runs({"tvboptim": peer, "bnmfit": ours}, rounds)
    res["bnmfit"].update(ours_facts)
    res["tvboptim"].update(peer_facts)
    return res


def run(args) -> dict:
    repeats = args.repeats or (2 if args.quick else 5)
    peers = not args.no_peers and common.peer_available("tvboptim") is None
    strategies = ["roll"] if args.quick else ["roll", "circular"]
    rows, cases = [], {}
    for dtype in common.precisions(args.quick):
        ours = common.run_case(MODULE, "case_bnmfit",
                               {"dtype": dtype, "repeats": repeats, "unroll": args.unroll},
                               x64=True)
        cases[f"bnmfit/{dtype}"] = ours
        ours_pc = None
        if not args.quick:
            ours_pc = common.run_case(MODULE, "case_bnmfit",
                                      {"dtype": dtype, "repeats": repeats, "unroll": args.unroll,
                                       "heun_coupling": "per_stage"}, x64=True)
            cases[f"bnmfit-coupling-per-stage/{dtype}"] = ours_pc
        peer_results = {}
        if peers:
            for s in strategies:
                peer_results[s] = common.run_case(
                    MODULE, "case_tvboptim",
                    {"dtype": dtype, "repeats": repeats, "buffer_strategy": s},
                    x64=dtype == "float64", xla_defaults=False)
                cases[f"tvboptim-{s}/{dtype}"] = peer_results[s]
        ok = {s: r for s, r in peer_results.items() if not r.get("error")}
        best = min(ok, key=lambda s: ok[s]["median_s"]) if ok else None
        paired = None
        if best and not args.quick:  # quick: separate processes only
            paired = common.run_case(MODULE, "case_paired",
                                     {"dtype": dtype, "rounds": repeats + 4,
                                      "buffer_strategy": best, "unroll": args.unroll},
                                     x64=dtype == "float64")
            cases[f"paired-{best}/{dtype}"] = paired
        rows.append(common.row("W2", "bnmfit", dtype,
                               f"ring buffer, coupling per step, unroll={ours.get('unroll', '?')}",
                               ours, _figure(ours), common.ratio_texts(paired=paired)
                               or common.speedup(ok.get(best), ours)))
        if ours_pc is not None:
            rows.append(common.row("W2", "bnmfit", dtype,
                                   "ring buffer, coupling per stage (bnmfit's default)", ours_pc,
                                   _figure(ours_pc)))
        for s, r in peer_results.items():
            rows.append(common.row("W2", "tvboptim 0.4.0", dtype, f"buffer_strategy={s}", r,
                                   _figure(r)))
    notes = [
        "Delays = lengths / 3 mm/ms, rounded to whole 1-ms steps (bnmfit: "
        "connectome.delay_steps; tvboptim: rint of (delay/dt − ½), its Heun stage-centroid "
        "correction for the frozen coupling). Largest delay ≈ 95 steps.",
        "bnmfit: jax.jit(simulate → BOLD), one delay gather per step in both schemes (the "
        "'per stage' row shares it between the Heun corrector and the next predictor; edges "
        "without delay couple through a mat-vec in both); tvboptim: DenseDelayGraph + "
        "DelayedLinearCoupling (coupling frozen per step) → BalloonWindkesselBold. vs tvboptim: "
        "tvboptim time / bnmfit time, paired as in W1 (one process, alternate runs) against "
        "tvboptim's faster buffer strategy here.",
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
