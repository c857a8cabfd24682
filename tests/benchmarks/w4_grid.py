"""W4 — grid exploration: 32 × 32 grid of (G in [0.01, 3], w in [0.01, 1]) on W1, all cores.

Figure: simulations per second over the whole grid (loss of every grid point), and the fraction
of the machine's arithmetic limit (BENCHMARKS.md: ≈ 420 FLOP per node-step, 150 GFLOP/s float32
on 2 cores ⇒ ≈ 3.6e8 node-steps/s). Both libraries use both cores as two XLA host devices:
bnmfit as ``jax.jit(jax.vmap(Problem.loss))`` with the batch sharded over the devices, tvboptim
as ``ParallelExecution(n_pmap=2, n_vmap=k)``. Batch sizes are swept first (bnmfit 32–1024,
tvboptim's n_vmap on a 16 × 16 sub-grid), each library in its own process; then each library
runs the full grid on bnmfit's XLA flags and on XLA's defaults, four processes whose passes
alternate, so that the machine's load hits them alike.

    python -m tests.benchmarks.w4_grid [--quick] [--out DIR] [--unroll K] [--float64]
"""

from __future__ import annotations

import math
import time

from tests.benchmarks import common
from tests.benchmarks.w1_forward import DT, N_TR

NAME = "w4_grid"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "W4 — grid exploration, 32 × 32 (G, w) grid of W1 losses, 2 cores"
DEVICES = 2
G_RANGE = (0.01, 3.0)
W_RANGE = (0.01, 1.0)


def _grid(n, dtype):
    import numpy as np

    g = np.linspace(*G_RANGE, n)
    w = np.linspace(*W_RANGE, n)
    gg, ww = np.meshgrid(g, w, indexing="ij")
    return gg.ravel().astype(dtype), ww.ravel().astype(dtype)


def _bnmfit_grid(subject, dtype: str, n_grid: int, unroll: int | None):
    """bnmfit's batched W1 loss over the grid: compile(batch, devices) and run_pass(...)."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from bnmfit.problem import Problem

    problem = common.bnmfit_problem(subject, dtype, dt=DT, n_tr=N_TR, unroll=unroll)
    G, W = _grid(n_grid, dtype)
    # the problem (SC, empirical FC, fixed parameters) is an argument, as in bnmfit's explore
    batched = jax.vmap(Problem.loss, in_axes=(None, {"G": 0, "w": 0}, None))
    key = jax.random.key(0)

    class Compiled:  # compiled(points, key), the problem passed along
        def __init__(self, fn):
            self.fn = fn

        def __call__(self, points, key):
            return self.fn(problem, points, key)

    def compile_for(batch, devices=None):
        mesh = Mesh(np.array(devices or jax.devices()), ("b",))
        sh = NamedSharding(mesh, P("b"))
        rep = NamedSharding(mesh, P())
        fn = jax.jit(batched, in_shardings=(rep, {"G": sh, "w": sh}, rep), out_shardings=sh)
        zeros = np.zeros(batch, dtype)
        compiled, seconds = common.compile_aot(fn, problem, {"G": zeros, "w": zeros}, key)
        return Compiled(compiled), seconds

    def batch_at(start, batch):
        idx = np.arange(start, start + batch) % G.size
        return {"G": G[idx], "w": W[idx]}

    def run_pass(compiled, batch):
        """The whole grid, batch after batch (dispatched asynchronously); its losses."""
        outs = [compiled(batch_at(k * batch, batch), key) for k in range(math.ceil(G.size / batch))]
        jax.block_until_ready(outs)
        return np.concatenate([np.asarray(o) for o in outs])[: G.size]

    spec = problem.spec
    node_steps = spec.n_tr * spec.steps_per_tr * subject.n
    return compile_for, batch_at, run_pass, key, node_steps, spec


def _tvboptim_grid(subject, dtype: str):
    """tvboptim's W1 loss and a ParallelExecution over an n × n grid, as in its RWW tutorial."""
    import copy

    import jax.numpy as jnp
    from tvboptim.execution import ParallelExecution
    from tvboptim.observations.observation import compute_fc
    from tvboptim.types import GridAxis, Space

    setup = common.tvboptim_setup(subject, dtype, dt=DT, t1=N_TR * common.TR_MS)
    fc_emp = jnp.asarray(subject.fc, dtype)

    def loss(state):  # one noise key (the config's) for the whole grid
        fc = compute_fc(setup.bold_monitor(setup.model(state)), skip_t=common.DISCARD_TR)
        return common.upper_pearson_loss(fc, fc_emp)

    def executor(n, n_vmap):
        st = copy.deepcopy(setup.state)
        st.dynamics.w = GridAxis(*W_RANGE, n)
        st.coupling.instant.G = GridAxis(*G_RANGE, n)
        return ParallelExecution(loss, Space(st, mode="product"), n_vmap=n_vmap, n_pmap=DEVICES)

    def run_pass(ex):
        import numpy as np

        return np.asarray(jnp.stack(list(ex.run())))

    return executor, run_pass, setup.n_steps * subject.n


def case_bnmfit_sweep(
    dtype: str,
    n_grid: int,
    batch_sizes: list[int],
    unroll: int | None = None,
    one_device_batch: int = 0,
) -> dict:
    """Simulations per second of each batch size (about 128 timed simulations each)."""
    import jax

    compile_for, batch_at, _, key, _, spec = _bnmfit_grid(
        common.load_subject(), dtype, n_grid, unroll
    )
    configs = [(b, jax.devices()) for b in batch_sizes if b % len(jax.devices()) == 0]
    if one_device_batch:
        configs.append((one_device_batch, jax.devices()[:1]))
    sweep = []
    for batch, devices in configs:
        compiled, compile_s = compile_for(batch, devices)
        warm = 1 if batch < 512 else 0  # a 1024-batch warm-up would cost ~a whole grid

        def call(i, compiled=compiled, batch=batch):
            return compiled(batch_at(batch * (i % 4), batch), key)

        s = common.stats(common.time_runs(call, max(1, math.ceil(128 / batch)), warmup=warm))
        sweep.append(
            {
                "batch": batch,
                "devices": len(devices),
                "compile_s": compile_s,
                "warmup_runs": warm,
                **s,
                "sims_per_s": batch / s["median_s"],
            }
        )
    full = [r for r in sweep if r["devices"] == len(jax.devices())]
    return {
        "sweep": sweep,
        "best": max(full, key=lambda r: r["sims_per_s"])["batch"],
        "unroll": spec.unroll,
    }


def case_tvboptim_sweep(dtype: str, n_vmaps: list[int], sweep_grid: int) -> dict:
    """Simulations per second of each n_vmap on a sweep_grid × sweep_grid grid."""
    executor, run_pass, _ = _tvboptim_grid(common.load_subject(), dtype)
    sweep = []
    for nv in n_vmaps:
        ex = executor(sweep_grid, nv)
        t = time.perf_counter()
        run_pass(ex)
        first = time.perf_counter() - t
        t = time.perf_counter()
        run_pass(ex)
        second = time.perf_counter() - t
        sweep.append(
            {
                "n_vmap": nv,
                "grid": sweep_grid,
                "first_run_s": first,
                "run_s": second,
                "sims_per_s": sweep_grid**2 / second,
            }
        )
    return {"sweep": sweep, "best": max(sweep, key=lambda r: r["sims_per_s"])["n_vmap"]}


def _bnmfit_serve(dtype: str, n_grid: int, batch: int, unroll: int | None = None):
    """bnmfit's whole-grid pass, served for alternated runs: (call, facts); one pass run here
    (its losses in the facts)."""
    import numpy as np

    compile_for, _, run_pass, _, node_steps, spec = _bnmfit_grid(
        common.load_subject(), dtype, n_grid, unroll
    )
    compiled, compile_s = compile_for(batch)
    losses = run_pass(compiled, batch)
    G, W = _grid(n_grid, dtype)
    facts = {
        "compile_s": compile_s,
        "batch": batch,
        "unroll": spec.unroll,
        "n_points": int(G.size),
        "node_steps": node_steps,
        "finite_losses": int(np.isfinite(losses).sum()),
        "best_point": _best(losses, G, W),
    }
    return (lambda i: run_pass(compiled, batch)), facts


def _tvboptim_serve(dtype: str, n_grid: int, n_vmap: int):
    """tvboptim's whole-grid ParallelExecution pass, served: (call, facts); the first pass
    (which compiles) run here."""
    import numpy as np

    executor, run_pass, node_steps = _tvboptim_grid(common.load_subject(), dtype)
    ex = executor(n_grid, n_vmap)
    t = time.perf_counter()
    losses = run_pass(ex)
    first = time.perf_counter() - t
    G, W = _grid(n_grid, dtype)
    facts = {
        "first_run_s": first,
        "n_vmap": n_vmap,
        "n_points": int(G.size),
        "node_steps": node_steps,
        "finite_losses": int(np.isfinite(losses).sum()),
        "best_point": _best(losses.ravel()[: G.size], G, W),
    }
    return (lambda i: run_pass(ex)), facts


def case_bnmfit_only(
    dtype: str, n_grid: int, batch: int, passes: int, unroll: int | None = None
) -> dict:
    """Whole-grid passes of bnmfit alone (when tvboptim is not available)."""
    import numpy as np

    compile_for, _, run_pass, _, node_steps, spec = _bnmfit_grid(
        common.load_subject(), dtype, n_grid, unroll
    )
    compiled, compile_s = compile_for(batch)
    run_pass(compiled, batch)
    times, losses = [], None
    for _ in range(passes):
        t = time.perf_counter()
        losses = run_pass(compiled, batch)
        times.append(time.perf_counter() - t)
    s = common.stats(times)
    G, W = _grid(n_grid, dtype)
    rate = G.size / s["median_s"]
    return {
        **s,
        "compile_s": compile_s,
        "batch": batch,
        "unroll": spec.unroll,
        "n_points": int(G.size),
        "node_steps": node_steps,
        "sims_per_s": rate,
        "node_steps_per_s": rate * node_steps,
        "fraction_of_limit": rate * node_steps / common.LIMIT_NODE_STEPS,
        "finite_losses": int(np.isfinite(losses).sum()),
        "best_point": _best(losses, G, W),
    }


def _best(losses, G, W):
    import numpy as np

    if losses is None or not np.isfinite(losses).any():
        return None
    i = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.nan)))
    return {"G": float(G[i]), "w": float(W[i]), "loss": float(losses[i])}


def run(args) -> dict:
    quick = args.quick
    n_grid = 8 if quick else 32
    dtypes = ["float32"] + (["float64"] if getattr(args, "float64", False) else [])
    peers = not args.no_peers and common.peer_available("tvboptim") is None
    rows, cases = [], {}
    for dtype in dtypes:
        x64 = dtype == "float64"
        batch, n_vmap, sweep_rss = 32, 16, {}
        if not quick:  # choose the batch sizes, each library in its own process (its RSS)
            sw = common.run_case(
                MODULE,
                "case_bnmfit_sweep",
                {
                    "dtype": dtype,
                    "n_grid": n_grid,
                    "batch_sizes": [32, 64, 128, 256, 1024],
                    "unroll": args.unroll,
                    "one_device_batch": 256,
                },
                x64=x64,
                devices=DEVICES,
                timeout_s=900,
            )
            cases[f"bnmfit-sweep/{dtype}"] = sw
            batch = sw.get("best", batch)
            sweep_rss["bnmfit"] = sw.get("peak_rss_mb")
            if peers:
                sw = common.run_case(
                    MODULE,
                    "case_tvboptim_sweep",
                    {"dtype": dtype, "n_vmaps": [16, 64], "sweep_grid": 16},
                    x64=x64,
                    devices=DEVICES,
                    timeout_s=900,
                    xla_defaults=False,
                )
                cases[f"tvboptim-sweep/{dtype}"] = sw
                n_vmap = sw.get("best", n_vmap)
                sweep_rss["tvboptim"] = sw.get("peak_rss_mb")
        if peers:
            res = cases[f"settings/{dtype}"] = common.settings_runs(
                MODULE,
                dtype,
                2 if quick else 3,
                peer=("_tvboptim_serve", {"dtype": dtype, "n_grid": n_grid, "n_vmap": n_vmap}),
                ours=(
                    "_bnmfit_serve",
                    {"dtype": dtype, "n_grid": n_grid, "batch": batch, "unroll": args.unroll},
                ),
                devices=DEVICES,
                warmup=0,
                timeout_s=3600,
            )
            for name in ("tvboptim/xla", "tvboptim/bnmfit", "bnmfit/bnmfit", "bnmfit/xla"):
                if name in res:  # the sweeps' peak RSS (over all sizes) where there was one
                    res[name]["peak_rss_mb"] = sweep_rss.get(name.split("/")[0]) or res[name].get(
                        "peak_rss_mb"
                    )
            rows += common.settings_rows(
                "W4",
                dtype,
                res,
                f"ParallelExecution n_pmap=2, n_vmap={n_vmap}",
                f"vmap, batch {batch} over 2 devices",
                _figure,
            )
        else:
            res = common.run_case(
                MODULE,
                "case_bnmfit_only",
                {
                    "dtype": dtype,
                    "n_grid": n_grid,
                    "batch": batch,
                    "passes": 2 if quick else 3,
                    "unroll": args.unroll,
                },
                x64=x64,
                devices=DEVICES,
                timeout_s=1500,
            )
            cases[f"bnmfit/{dtype}"] = res
            res = {**res, "peak_rss_mb": sweep_rss.get("bnmfit") or res.get("peak_rss_mb")}
            rows.append(
                common.row(
                    "W4",
                    "bnmfit",
                    dtype,
                    f"vmap, batch {res.get('batch', batch)} over 2 devices, "
                    f"unroll={res.get('unroll', '?')}; bnmfit's XLA flags",
                    res,
                    _figure(res),
                )
            )
    notes = [
        f"One run = the whole {n_grid} × {n_grid} grid ({n_grid**2} simulations, one loss each, "
        "one noise key for all points as tvboptim's ParallelExecution uses). Four 2-device "
        "processes (each library on bnmfit's XLA flags and on XLA's defaults), whole-grid "
        "passes alternated (the first pass, which compiles, run before); vs tvboptim = "
        "tvboptim median / bnmfit median pass time, the two medians printed with it. The batch "
        "size / n_vmap were chosen first in separate processes, whose peak RSS (over all sizes "
        "tried) is the one shown.",
        "Compiled as each library's own grid tool does: bnmfit jits (problem, points, key) "
        "with the problem an argument, as bnmfit.explore; tvboptim's ParallelExecution pmaps "
        "over the grid axes only and closes over the rest of the config (SC, fixed "
        "parameters) as constants.",
        "Figure = grid points / median pass time; % of limit = node-steps/s ÷ 3.57e8 (the "
        "420-FLOP node-step of BENCHMARKS.md counts two coupling mat-vecs per step; both "
        "libraries do one here (coupling per step), ≈ 2·N + 100 = 260 FLOP, which would put "
        "the limit at ≈ 5.8e8 node-steps/s = 480 W1 simulations/s; exp/log/RNG count as one "
        "FLOP there, so either limit is optimistic). "
        "Compile: bnmfit AOT compile of the chosen batch; tvboptim: first_run_s in the "
        "JSON (compile + one pass).",
    ]
    if quick:
        notes.append(
            "Quick: no batch-size sweep (bnmfit batch 32, tvboptim n_vmap 16), "
            "8 × 8 grid, no isolated RSS."
        )
    for key, res in cases.items():
        if res.get("sweep"):
            parts = []
            for r in res["sweep"]:
                label = f"batch {r['batch']}" if "batch" in r else f"n_vmap {r['n_vmap']}"
                if r.get("devices") == 1:
                    label += " (1 device)"
                parts.append(f"{label}: {r['sims_per_s']:.1f}")
            notes.append(f"Sweep {key} (sims/s): " + "; ".join(parts))
    return common.report(NAME, TITLE, rows, cases, args, notes)


def _figure(res: dict) -> str:
    if res.get("error"):
        return ""
    rate = res["n_points"] / res["median_s"]
    node_rate = rate * res["node_steps"]
    return (
        f"{rate:.1f} sims/s = {common.fmt_rate(node_rate)} node-steps/s "
        f"({100 * node_rate / common.LIMIT_NODE_STEPS:.1f}% of limit)"
    )


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--float64", action="store_true", help="also measure float64")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
