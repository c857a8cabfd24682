"""W6 — memory: gradient w.r.t. (G, w) through a full HCP session, 1200 TRs × 0.72 s at dt = 1 ms.

Figure: peak RSS of the process and seconds per value-and-gradient (864 000 steps × 80 regions).
bnmfit with ``checkpoint=True`` (one carry per TR kept for the backward pass, BOLD online); each
precision in its own process, forward first (its peak RSS recorded), then the gradient. tvboptim
(full mode only) with ``Heun(block_size=720)`` — its gradient checkpointing with one TR per block
and streamed noise — and BalloonWindkesselBold over the stored trajectory.

    python -m tests.benchmarks.w6_memory [--quick] [--out DIR] [--repeats N] [--unroll K]
"""

from __future__ import annotations

from tests.benchmarks import common

NAME = "w6_memory"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "W6 — memory: value-and-gradient d/d(G, w), 1200 TRs × 0.72 s (864 s), dt = 1 ms"
DT = 1.0
N_TR = 1200


def _run(loss, params, extra, repeats):
    import jax

    key0 = jax.random.key(0)
    out = {}
    fwd, out["forward_compile_s"] = common.compile_aot(jax.jit(loss), params, *extra, key0)
    fwd_times = common.time_runs(
        lambda i: fwd(params, *extra, jax.random.key(100 + i)), 1, warmup=0
    )
    out["forward"] = {
        **common.stats(fwd_times),
        "peak_rss_mb": common.peak_rss_mb(),
        "loss": float(fwd(params, *extra, key0)),
    }
    vg, compile_s = common.compile_aot(jax.jit(jax.value_and_grad(loss)), params, *extra, key0)
    times = common.time_runs(
        lambda i: vg(params, *extra, jax.random.key(100 + i)), repeats, warmup=0
    )
    value, grad = vg(params, *extra, key0)
    return {
        **out,
        **common.stats(times),
        "compile_s": compile_s,
        "loss": float(value),
        "grad": {k: float(v) for k, v in grad.items()},
        "dtype": str(value.dtype),
        "peak_rss_mb": common.peak_rss_mb(),
    }


def case_bnmfit(dtype: str, n_tr: int, repeats: int, unroll: int | None = None) -> dict:
    import jax.numpy as jnp

    subject = common.load_subject()
    problem = common.bnmfit_problem(
        subject, dtype, dt=DT, n_tr=n_tr, checkpoint=True, unroll=unroll
    )
    params = {"G": jnp.asarray(common.G0, dtype), "w": jnp.asarray(common.W0, dtype)}

    def loss(params, problem, key):  # the problem an argument, as in bnmfit's fit
        return problem.loss(params, key)

    res = _run(loss, params, (problem,), repeats)
    res.update(n_steps=n_tr * problem.spec.steps_per_tr, unroll=problem.spec.unroll)
    return res


def case_tvboptim(dtype: str, n_tr: int, repeats: int, block_size: int = 720) -> dict:
    import jax.numpy as jnp
    from tvboptim.observations.observation import compute_fc

    subject = common.load_subject()
    setup = common.tvboptim_setup(
        subject, dtype, dt=DT, t1=n_tr * common.TR_MS, block_size=block_size
    )
    fc_emp = jnp.asarray(subject.fc, dtype)

    def loss(params, state, fc_emp, key):  # config and FC as arguments, as bnmfit's
        state = common.with_leaves(
            state,
            **{"noise.key": key, "dynamics.w": params["w"], "coupling.instant.G": params["G"]},
        )
        fc = compute_fc(setup.bold_monitor(setup.model(state)), skip_t=common.DISCARD_TR)
        return common.upper_pearson_loss(fc, fc_emp)

    params = {"G": jnp.asarray(common.G0, dtype), "w": jnp.asarray(common.W0, dtype)}
    res = _run(loss, params, (setup.state, fc_emp), repeats)
    res.update(n_steps=setup.n_steps, block_size=block_size)
    return res


def run(args) -> dict:
    quick = args.quick
    n_tr = 60 if quick else N_TR
    repeats = args.repeats or (1 if quick else 2)
    peers = not quick and not args.no_peers and common.peer_available("tvboptim") is None
    rows, cases = [], {}
    for dtype in common.precisions(quick):
        ours = common.run_case(
            MODULE,
            "case_bnmfit",
            {"dtype": dtype, "n_tr": n_tr, "repeats": repeats, "unroll": args.unroll},
            x64=dtype == "float64",
            timeout_s=1200,
            rss_limit_mb=12000,
        )
        cases[f"bnmfit/{dtype}"] = ours
        rows.append(
            common.row(
                "W6",
                "bnmfit",
                dtype,
                f"checkpoint per TR, unroll={ours.get('unroll', '?')}",
                ours,
                _figure(ours),
            )
        )
    if peers:
        dtype = "float64"  # tvboptim's tutorials fit in float64
        peer = common.run_case(
            MODULE,
            "case_tvboptim",
            {"dtype": dtype, "n_tr": n_tr, "repeats": 1},
            x64=True,
            timeout_s=600,
            rss_limit_mb=12000,
            xla_defaults=False,
        )
        cases[f"tvboptim/{dtype}"] = peer
        rows.append(
            common.row(
                "W6", "tvboptim 0.4.0", dtype, "Heun(block_size=720), 1 run", peer, _figure(peer)
            )
        )
        ours = cases.get(f"bnmfit/{dtype}")
        for r in rows:
            if r["Library"] == "bnmfit" and r["Precision"] == dtype:
                r["vs tvboptim"] = common.speedup(peer, cases.get(f"bnmfit/{dtype}"))
    notes = [
        "Both compiled with SC, parameters and empirical FC as arguments. Each library on "
        "its users' XLA settings (bnmfit's flags; tvboptim XLA's defaults), one process "
        "each, not alternated: W6 is about memory, and its ratio is only indicative.",
        f"{n_tr} TRs = {n_tr * 720 // 1000} s simulated, {n_tr * 720} steps; loss after "
        "discarding 20 TRs. Runs are few (each gradient is tens of seconds): no warm-up run "
        "after the AOT compile. Peak RSS = ru_maxrss of the whole child process (forward's "
        "peak in the JSON as forward.peak_rss_mb).",
    ]
    if peers:
        notes.append(
            "tvboptim keeps the whole S trajectory (864 000 × 80) for its post-hoc "
            "Balloon-Windkessel and its reverse pass; it is run once, in float64, with "
            "a 12 GB RSS limit."
        )
    title = TITLE if not quick else TITLE.replace("1200 TRs × 0.72 s (864 s)", f"quick: {n_tr} TRs")
    return common.report(NAME, title, rows, cases, args, notes)


def _figure(res: dict) -> str:
    if res.get("error"):
        return ""
    fwd = res.get("forward", {})
    return (
        f"forward {common.fmt_s(fwd.get('median_s'))} s, peak RSS after forward "
        f"{fwd.get('peak_rss_mb', float('nan')):.0f} MB"
    )


def main(argv=None) -> dict:
    return run(common.parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    main()
