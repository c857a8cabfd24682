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
    fwd_times = common.time_runs(lambda i: fwd(params, *extra_args, jax.random.key(100 + i)),
                                 repeats)
    rss_fwd = common.peak_rss_mb()
    vg, vg_compile = common.compile_aot(jax.jit(jax.value_and_grad(loss)), params,
                                        *extra_args, key0)
    vg_times = common.time_runs(lambda i: vg(params, *extra_args, jax.random.key(100 + i)),
                                repeats)
    value, grad = vg(params, *extra_args, key0)
    leaves = jax.tree.leaves(grad)
    gnorm = float(jnp.sqrt(sum((g.astype(jnp.float64) ** 2).sum() for g in leaves)))
    return {
        **common.stats(vg_times), "compile_s": vg_compile,
        "forward": {**common.stats(fwd_times), "compile_s": fwd_compile,
                    "peak_rss_mb": rss_fwd},
        "ratio_to_forward": common.stats(vg_times)["median_s"] / common.stats(fwd_times)[
            "median_s"],
        "loss": float(value), "grad_norm": gnorm,
        "grad_finite": bool(all(bool(jnp.isfinite(g).all()) for g in leaves)),
        "dtype": str(value.dtype),
    }


def _bnmfit_loss(subject, dtype: str, unroll: int | None):
    problem = common.bnmfit_problem(subject, dtype, dt=DT, n_tr=N_TR, unroll=unroll)
    return problem.loss, (), problem.spec


def _tvboptim_loss(subject, dtype: str):
    import jax.numpy as jnp
    from tvboptim.observations.observation import compute_fc

    setup = common.tvboptim_setup(subject, dtype, dt=DT, t1=N_TR * common.TR_MS)
    fc_emp = jnp.asarray(subject.fc, dtype)

    def loss(params, state, key):
        leaves = {"noise.key": key, "dynamics.w": params["w"]}
        if "G" in params:
            leaves["coupling.instant.G"] = params["G"]
        state = common.with_leaves(state, **leaves)
        fc = compute_fc(setup.bold_monitor(setup.model(state)), skip_t=common.DISCARD_TR)
        return common.upper_pearson_loss(fc, fc_emp)

    return loss, (setup.state,)


def case_bnmfit(dtype: str, which: str, repeats: int, unroll: int | None = None) -> dict:
    import jax.numpy as jnp

    subject = common.load_subject()
    loss, extra, spec = _bnmfit_loss(subject, dtype, unroll)
    res = _measure(loss, _params(jnp, dtype, subject.n, which), repeats, extra)
    res["unroll"] = spec.unroll
    res["checkpoint"] = spec.checkpoint
    return res


def case_tvboptim(dtype: str, which: str, repeats: int) -> dict:
    import jax.numpy as jnp

    subject = common.load_subject()
    loss, extra = _tvboptim_loss(subject, dtype)
    return _measure(loss, _params(jnp, dtype, subject.n, which), repeats, extra)


def _vg_call(library: str, dtype: str, which: str, unroll: int | None = None):
    """One library's compiled value-and-gradient, served for interleaved runs: (call, facts)."""
    import jax
    import jax.numpy as jnp

    subject = common.load_subject()
    if library == "bnmfit":
        loss, extra, _ = _bnmfit_loss(subject, dtype, unroll)
    else:
        loss, extra = _tvboptim_loss(subject, dtype)
    params = _params(jnp, dtype, subject.n, which)
    vg, compile_s = common.compile_aot(jax.jit(jax.value_and_grad(loss)), params, *extra,
                                       jax.random.key(0))
    return (lambda i: vg(params, *extra, jax.random.key(100 + i))), {"compile_s": compile_s}


def case_paired(dtype: str, whiches: list[str], rounds: int,
                unroll: int | None = None) -> dict:
    """Value-and-gradient of both libraries in one process, runs alternated, per variant."""
    import jax
    import jax.numpy as jnp

    subject = common.load_subject()
    ours, ours_extra, _ = _bnmfit_loss(subject, dtype, unroll)
    peer, peer_extra = _tvboptim_loss(subject, dtype)
    out = {}
    for which in whiches:
        params = _params(jnp, dtype, subject.n, which)
        calls = {}
        for name, loss, extra in (("tvboptim", peer, peer_extra), ("bnmfit", ours, ours_extra)):
            vg, _ = common.compile_aot(jax.jit(jax.value_and_grad(loss)), params, *extra,
                                       jax.random.key(0))
            def call(i, vg=vg, extra=extra, params=params):
                return vg(params, *extra, jax.random.key(100 + i))

            calls[name] = call
        out[which] = common.paired_runs(calls, rounds)
    return out


def run(args) -> dict:
    repeats = args.repeats or (2 if args.quick else 5)
    peers = not args.no_peers and common.peer_available("tvboptim") is None
    rows, cases = [], {}
    variants = {"a": "(a) d/d(G, w)", "b": "(b) d/d(w_1..w_80)"}
    if args.quick:
        variants.pop("b")
    for dtype in common.precisions(args.quick):
        paired = {}
        if peers and not args.quick:  # quick: separate processes only
            paired = common.run_case(MODULE, "case_paired",
                                     {"dtype": dtype, "whiches": list(variants),
                                      "rounds": repeats + 2, "unroll": args.unroll},
                                     x64=dtype == "float64")
            cases[f"paired/{dtype}"] = paired
        for which, label in variants.items():
            ours = common.run_case(MODULE, "case_bnmfit",
                                   {"dtype": dtype, "which": which, "repeats": repeats,
                                    "unroll": args.unroll}, x64=True)
            cases[f"bnmfit/{which}/{dtype}"] = ours
            peer = None
            if peers:
                peer = common.run_case(MODULE, "case_tvboptim",
                                       {"dtype": dtype, "which": which, "repeats": repeats},
                                       x64=dtype == "float64", xla_defaults=False)
                cases[f"tvboptim/{which}/{dtype}"] = peer
            vs = common.speedup(peer, ours)
            if peers:  # the ratio alone, from runs alternated between the two processes
                kw = {"dtype": dtype, "which": which}
                alone = cases[f"alone/{which}/{dtype}"] = common.alone_runs(
                    MODULE, dtype, repeats + 2, peer=("_vg_call", {"library": "tvboptim", **kw}),
                    ours=("_vg_call", {"library": "bnmfit", "unroll": args.unroll, **kw}))
                pair = paired.get(which) if not paired.get("error") else None
                vs = common.ratio_texts(alone=alone, paired=pair) or vs
            rows.append(common.row("W3", "bnmfit", dtype,
                                   f"{label}, coupling per step, checkpoint per TR", ours,
                                   _figure(ours), vs))
            if peers:
                rows.append(common.row("W3", "tvboptim 0.4.0", dtype,
                                       f"{label}, full tape (default)", peer, _figure(peer)))
    notes = [
        "Figure = value-and-gradient median / forward-loss median of the same library, same "
        "process and precision (the forward's own median is in the JSON). Peak RSS covers "
        "forward + gradient in that process.",
        "(b): 80 regional w free, G fixed at 0.75 (tvboptim: dynamics.w set to an (80,) array).",
        "vs tvboptim: tvboptim / bnmfit value-and-gradient time, median and range of the "
        f"per-round ratios of {repeats + 2} rounds of alternate runs, as in W1: 'alone' "
        "alternates between two processes, each library with its own XLA settings; 'paired' "
        "runs both in one extra process (tvboptim then gets bnmfit's XLA settings).",
    ]
    return common.report(NAME, TITLE, rows, cases, args, notes)


def _figure(res: dict) -> str:
    if res.get("error"):
        return ""
    fwd = common.fmt_s(res["forward"]["median_s"])
    return f"{res['ratio_to_forward']:.2f}× own forward ({fwd} s); |grad| {res['grad_norm']:.3g}"


def main(argv=None) -> dict:
    return run(common.parser(__doc__.splitlines()[0]).parse_args(argv))


if __name__ == "__main__":
    main()
