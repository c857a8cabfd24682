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


def _bnmfit_call(subject, dtype: str, unroll: int | None, heun_coupling: str = "per_step"):
    """The compiled W1 loss of bnmfit: (call(i), compile seconds, facts)."""
    import jax
    import jax.numpy as jnp

    problem = common.bnmfit_problem(subject, dtype, dt=DT, n_tr=N_TR, unroll=unroll,
                                    heun_coupling=heun_coupling)
    params = {"G": jnp.asarray(common.G0, dtype), "w": jnp.asarray(common.W0, dtype)}
    compiled, compile_s = common.compile_aot(jax.jit(problem.loss), params, jax.random.key(0))
    loss = compiled(params, jax.random.key(0))
    spec = problem.spec
    n_steps = (spec.n_tr + spec.n_transient) * spec.steps_per_tr
    facts = {"compile_s": compile_s, "n_steps": n_steps, "n": subject.n,
             "node_steps": n_steps * subject.n, "loss": float(loss), "dtype": str(loss.dtype),
             "unroll": spec.unroll, "heun_coupling": spec.heun_coupling,
             "source": subject.source}
    return (lambda i: compiled(params, jax.random.key(100 + i))), facts


def _tvboptim_call(subject, dtype: str, recompute_coupling: bool = False):
    """The compiled W1 loss of tvboptim: (call(i), facts)."""
    import jax
    from tvboptim.observations.observation import compute_fc

    setup = common.tvboptim_setup(subject, dtype, dt=DT, t1=N_TR * common.TR_MS,
                                  recompute_coupling=recompute_coupling)
    fc_emp = jax.numpy.asarray(subject.fc, dtype)

    def loss(state, key):
        state = common.with_leaves(state, **{"noise.key": key})
        fc = compute_fc(setup.bold_monitor(setup.model(state)), skip_t=common.DISCARD_TR)
        return common.upper_pearson_loss(fc, fc_emp)

    compiled, compile_s = common.compile_aot(jax.jit(loss), setup.state, jax.random.key(0))
    value = compiled(setup.state, jax.random.key(0))
    facts = {"compile_s": compile_s, "n_steps": setup.n_steps, "n": subject.n,
             "node_steps": setup.n_steps * subject.n, "loss": float(value),
             "dtype": str(value.dtype)}
    return (lambda i: compiled(setup.state, jax.random.key(100 + i))), facts


def case_bnmfit(dtype: str, repeats: int, unroll: int | None = None,
                heun_coupling: str = "per_step") -> dict:
    call, facts = _bnmfit_call(common.load_subject(), dtype, unroll, heun_coupling)
    return {**common.stats(common.time_runs(call, repeats)), **facts}


def case_tvboptim(dtype: str, repeats: int, recompute_coupling: bool = False) -> dict:
    call, facts = _tvboptim_call(common.load_subject(), dtype, recompute_coupling)
    return {**common.stats(common.time_runs(call, repeats)), **facts}


def case_paired(dtype: str, rounds: int, unroll: int | None = None) -> dict:
    """Both libraries in one process, runs alternated: the ratio least disturbed by load."""
    subject = common.load_subject()
    ours, ours_facts = _bnmfit_call(subject, dtype, unroll)
    peer, peer_facts = _tvboptim_call(subject, dtype)
    res = common.paired_runs({"tvboptim": peer, "bnmfit": ours}, rounds)
    res["bnmfit"].update(ours_facts)
    res["tvboptim"].update(peer_facts)
    return res


def run(args) -> dict:
    repeats = args.repeats or (2 if args.quick else 7)
    peers = not args.no_peers and common.peer_available("tvboptim") is None
    rows, cases = [], {}
    for dtype in common.precisions(args.quick):
        ours = common.run_case(MODULE, "case_bnmfit",
                               {"dtype": dtype, "repeats": repeats, "unroll": args.unroll},
                               x64=True)
        cases[f"bnmfit/{dtype}"] = ours
        peer = peer_pc = paired = ours_pc = None
        if not args.quick:
            ours_pc = common.run_case(MODULE, "case_bnmfit",
                                      {"dtype": dtype, "repeats": repeats, "unroll": args.unroll,
                                       "heun_coupling": "per_stage"}, x64=True)
            cases[f"bnmfit-coupling-per-stage/{dtype}"] = ours_pc
        if peers and not args.quick:  # quick: separate processes only
            paired = common.run_case(MODULE, "case_paired",
                                     {"dtype": dtype, "rounds": repeats + 4,
                                      "unroll": args.unroll},
                                     x64=dtype == "float64")
            cases[f"paired/{dtype}"] = paired
        if peers:
            peer = common.run_case(MODULE, "case_tvboptim",
                                   {"dtype": dtype, "repeats": repeats},
                                   x64=dtype == "float64", xla_defaults=False)
            cases[f"tvboptim/{dtype}"] = peer
            if not args.quick:
                peer_pc = common.run_case(
                    MODULE, "case_tvboptim",
                    {"dtype": dtype, "repeats": repeats, "recompute_coupling": True},
                    x64=dtype == "float64", xla_defaults=False)
                cases[f"tvboptim-coupling-per-stage/{dtype}"] = peer_pc
        variant = f"Heun, coupling per step, unroll={ours.get('unroll', '?')}"
        rows.append(common.row("W1", "bnmfit", dtype, variant, ours, _figure(ours),
                               common.paired_speedup(paired) or common.speedup(peer, ours)))
        if peers:
            rows.append(common.row("W1", "tvboptim 0.4.0", dtype,
                                   "Heun, coupling frozen per step (default)", peer,
                                   _figure(peer)))
        if ours_pc is not None:
            rows.append(common.row("W1", "bnmfit", dtype,
                                   "Heun, coupling per stage (bnmfit's default)", ours_pc,
                                   _figure(ours_pc), common.speedup(peer_pc, ours_pc)))
        if peer_pc is not None:
            rows.append(common.row("W1", "tvboptim 0.4.0", dtype,
                                   "Heun, coupling per stage", peer_pc, _figure(peer_pc)))
    notes = [
        "bnmfit: jax.jit(Problem.loss)({G, w}, key): simulate (BOLD online in the scan) → FC "
        "→ 1 − r; 83 TRs × 180 steps. tvboptim: jax.jit of solve_fn(config) → "
        "BalloonWindkesselBold (post hoc scan over the stored S trajectory) → "
        "compute_fc(skip_t=20) → the same loss; the noise key is a per-call argument in both.",
        "Same arithmetic in each pair of rows: 'coupling per step' (one mat-vec per step, "
        "tvboptim's default and TVB's scheme; bnmfit SimSpec(heun_coupling='per_step')) and "
        "'coupling per stage' (two mat-vecs, the coupling re-evaluated at the predictor; "
        "bnmfit's default, tvboptim recompute_coupling_per_stage=True); the per-stage ratio "
        "compares separate processes.",
        "vs tvboptim = tvboptim (default) time / bnmfit time, same precision, > 1: bnmfit "
        "faster; 'paired' = both compiled in one extra process and run alternately "
        f"({repeats + 4} rounds), median and range of the per-round ratios — the machine is "
        "shared and its load moves separate measurements by tens of per cent.",
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
