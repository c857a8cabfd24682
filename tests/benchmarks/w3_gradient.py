"""W3 — reverse-mode value-and-gradient of the W1 loss: (a) w.r.t. (G, w); (b) 80 regional w.

Figure: seconds per value-and-gradient and its ratio to the same library's forward loss, both
measured in the same process. bnmfit with its default SimSpec (checkpoint=True: one carry per TR
kept for the backward pass); tvboptim with its defaults (no block_size: the whole step tape).

    python -m tests.benchmarks.w3_gradient [--quick] [--out DIR] [--repeats N] [--unroll K]
"""

from __future__ import annotations

from tests.benchmarks import common
from tests.benchmarks.w1_forward import DT, N_TR

NAME = "w3_gradient"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "W3 — value-and-gradient of the W1 loss (reverse mode)"


def _params(jnp, dtype, n, which):
    if which == "a":
        return {"G": jnp.asarray(common.G0, dtype), "w": jnp.asarray(common.W0, dtype)}
    return {"w": jnp.full((n,), common.W0, dtype)}


def _measure(loss, params, repeats, extra_args=()):
    """Forward and value-and-gradient of ``loss(params, *extra, key)`` in this process."""
    import jax
    import jax.numpy as jnp

    key0 = jax.random.key(0)
    fwd, fwd_compile = common.compile_aot(jax.jit(loss), params, *extra_args, key0)
    fwd_times = common.time_runs(
        lambda i: fwd(params, *extra_args, jax.random.key(100 + i)), repeats
    )
    rss_fwd = common.peak_rss_mb()
    vg, vg_compile = common.compile_aot(
        jax.jit(jax.value_and_grad(loss)), params, *extra_args, key0
    )
    vg_times = common.time_runs(lambda i: vg(params, *extra_args, jax.random.key(100 + i)), repeats)
    value, grad = vg(params, *extra_args, key0)
    leaves = jax.tree.leaves(grad)
    gnorm = float(jnp.sqrt(sum((g.astype(jnp.float64) ** 2).sum() for g in leaves)))
    return {
        **common.stats(vg_times),
        "compile_s": vg_compile,
        "forward": {**common.stats(fwd_times), "compile_s": fwd_compile, "peak_rss_mb": rss_fwd},
        "ratio_to_forward": common.stats(vg_times)["median_s"]
        / common.stats(fwd_times)["median_s"],
        "loss": float(value),
        "grad_norm": gnorm,
        "grad_finite": bool(all(bool(jnp.isfinite(g).all()) for g in leaves)),
        "dtype": str(value.dtype),
    }


def _bnmfit_loss(subject, dtype: str, unroll: int | None):
    """loss(params, problem, key) and its extra arguments: the problem is an argument, as in
    bnmfit's fit."""
    problem = common.bnmfit_problem(subject, dtype, dt=DT, n_tr=N_TR, unroll=unroll)

    def loss(params, problem, key):
        return problem.loss(params, key)

    return loss, (problem,), problem.spec


def _tvboptim_loss(subject, dtype: str):
    import jax.numpy as jnp
    from tvboptim.observations.observation import compute_fc

    setup = common.tvboptim_setup(subject, dtype, dt=DT, t1=N_TR * common.TR_MS)
    fc_emp = jnp.asarray(subject.fc, dtype)

    def loss(params, state, fc_emp, key):  # config (SC, parameters) and FC as arguments
        leaves = {"noise.key": key, "dynamics.w": params["w"]}
        if "G" in params:
            leaves["coupling.instant.G"] = params["G"]
        state = common.with_leaves(state, **leaves)
        fc = compute_fc(setup.bold_monitor(setup.model(state)), skip_t=common.DISCARD_TR)
        return common.upper_pearson_loss(fc, fc_emp)

    return loss, (setup.state, fc_emp)


def case_bnmfit(dtype: str, which: str, repeats: int, unroll: int | None = None) -> dict:
    import jax.numpy as jnp

    subject = common.load_subject()
    loss, extra, spec = _bnmfit_loss(subject, dtype, unroll)
    res = _measure(loss, _params(jnp, dtype, subject.n, which), repeats, extra)
    res["unroll"] = spec.unroll
    res["checkpoint"] = spec.checkpoint
    return res


def _vg_call(
    library: str, dtype: str, which: str, unroll: int | None = None, forward_repeats: int = 5
):
    """One library's compiled value-and-gradient, served for alternated runs: (call, facts).

    The facts include this process's forward loss (compiled alike, timed here before serving:
    the 'own forward' of the figure), the loss and the gradient's norm."""
    import jax
    import jax.numpy as jnp

    subject = common.load_subject()
    if library == "bnmfit":
        loss, extra, spec = _bnmfit_loss(subject, dtype, unroll)
        facts = {"unroll": spec.unroll, "checkpoint": spec.checkpoint}
    else:
        loss, extra = _tvboptim_loss(subject, dtype)
        facts = {}
    params = _params(jnp, dtype, subject.n, which)
    key0 = jax.random.key(0)
    fwd, fwd_compile = common.compile_aot(jax.jit(loss), params, *extra, key0)
    fwd_times = common.time_runs(
        lambda i: fwd(params, *extra, jax.random.key(100 + i)), forward_repeats
    )
    vg, compile_s = common.compile_aot(jax.jit(jax.value_and_grad(loss)), params, *extra, key0)
    value, grad = vg(params, *extra, key0)
    leaves = jax.tree.leaves(grad)
    facts.update(
        compile_s=compile_s,
        loss=float(value),
        dtype=str(value.dtype),
        grad_norm=float(jnp.sqrt(sum((g.astype(jnp.float64) ** 2).sum() for g in leaves))),
        grad_finite=bool(all(bool(jnp.isfinite(g).all()) for g in leaves)),
        forward={**common.stats(fwd_times), "compile_s": fwd_compile},
    )
    return (lambda i: vg(params, *extra, jax.random.key(100 + i))), facts


def run(args) -> dict:
    repeats = args.repeats or (2 if args.quick else 5)
    rounds = repeats + 2
    peers = not args.no_peers and common.peer_available("tvboptim") is None
    rows, cases = [], {}
    variants = {"a": "(a) d/d(G, w)", "b": "(b) d/d(w_1..w_80)"}
    if args.quick:
        variants.pop("b")
    for dtype in common.precisions(args.quick):
        for which, label in variants.items():
            kw = {"dtype": dtype, "which": which}
            if peers:
                res = cases[f"settings/{which}/{dtype}"] = common.settings_runs(
                    MODULE,
                    dtype,
                    rounds,
                    peer=("_vg_call", {"library": "tvboptim", **kw}),
                    ours=("_vg_call", {"library": "bnmfit", "unroll": args.unroll, **kw}),
                )
                rows += common.settings_rows(
                    "W3",
                    dtype,
                    res,
                    f"{label}, full tape (default)",
                    f"{label}, coupling per step, checkpoint per TR",
                    _figure,
                )
            else:
                res = cases[f"bnmfit/{which}/{dtype}"] = common.run_case(
                    MODULE,
                    "case_bnmfit",
                    {**kw, "repeats": repeats, "unroll": args.unroll},
                    x64=dtype == "float64",
                )
                rows.append(
                    common.row(
                        "W3",
                        "bnmfit",
                        dtype,
                        f"{label}, coupling per step, checkpoint per TR; bnmfit's XLA flags",
                        res,
                        _figure(res),
                    )
                )
    notes = [
        "bnmfit: jax.jit(jax.value_and_grad(loss))(params, problem, key) with loss = "
        "Problem.loss; tvboptim: the same of loss(params, config, fc_emp, key), params written "
        "into its config. Both take SC, parameters and empirical FC as arguments, as their "
        "fitting loops do (tvboptim's OptaxOptimizer jits loss(diff_state, static_state)).",
        "Figure = value-and-gradient median / the same process's forward-loss median (the "
        "forward timed in that process before the alternated runs, same compilation "
        "style; its median is printed in the figure). Peak RSS covers forward + gradient.",
        "(b): 80 regional w free, G fixed at 0.75 (tvboptim: dynamics.w set to an (80,) array).",
        f"vs tvboptim: tvboptim median / bnmfit median of value-and-gradient, the two medians "
        f"printed with it; four processes (each library on bnmfit's XLA flags and on XLA's "
        f"defaults), one warm-up run each, then {rounds} rounds of alternated runs as in W1; "
        "'per round' = range of the round-by-round ratios.",
    ]
    if not peers:
        notes.append(f"tvboptim not measured: {common.peer_available('tvboptim') or 'disabled'}")
    return common.report(NAME, TITLE, rows, cases, args, notes)


def _figure(res: dict) -> str:
    if res.get("error"):
        return ""
    fwd = res["forward"]["median_s"]
    return (
        f"{res['median_s'] / fwd:.2f}× own forward ({common.fmt_s(fwd)} s); "
        f"|grad| {res['grad_norm']:.3g}"
    )


def main(argv=None) -> dict:
    return run(common.parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    main()
