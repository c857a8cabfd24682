"""W5 — one subject's whole fit: 16 × 16 grid → global Adam (100 steps) → regional (100 steps).

bnmfit runs its default pipeline (config/config.yaml, as the workflow's explore → refine rules
run it: exploration on the config's ranges, the best grid point as the start, the config's
stages with fresh noise every step) with the grid and the step counts of W5; early stopping
is off by default so that every one of W5's steps runs (``--patience``), and ``--unroll``
overrides the config's ``simulation.unroll``. tvboptim runs the recipe of its Reduced
Wong-Wang tutorial (docs/workflows/RWW.qmd): a transient run whose end state seeds the
history, the tutorial's HRF ``Bold`` monitor, loss = RMSE(FC, target) with 20 TRs skipped, a
product grid over (G, w) in [0.001, 0.7] (ParallelExecution, both cores),
``optax.adam(0.01, b2=0.9999)`` on global (G, w) from (0.5, 0.5), then
``optax.adam(0.004, b2=0.999)`` on regional w and I_o (the tutorial frees both, unbounded)
with G fixed — one noise key throughout.

Both fit sub-01 of the bundled cohort (SC read and normalised by bnmfit.io/Connectome; the
empirical FC is bnmfit's of the subject's BOLD) and simulate the same BOLD length (the config's
300 TRs of 0.72 s); each keeps its own dt and precision (bnmfit: the config's 7.2 ms, float32;
the tutorial: 4 ms, float64). After every stage the fitted parameters are simulated on five
held-out noise seeds that neither tool used in fitting (always EVAL_TR TRs, whatever the fit
simulates per step, with every parameter the fit changed), and the figure is the Pearson r of
the upper triangles (k = 1) of simulated and empirical FC, mean ± sd over those seeds. Wall time per
stage includes compilation (it is part of a fit); held-out evaluation is not timed.

    python -m tests.benchmarks.w5_fit [--quick] [--steps N] [--grid N] [--patience N]
        [--unroll K] [--subject sub-NN] [--out DIR] [--no-peers]

``--subject`` fits another subject of the bundled cohort (default: BENCHMARKS.md's first).
"""

from __future__ import annotations

import time

from tests.benchmarks import common

NAME = "w5_fit"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "W5 — one subject's fit: 16 × 16 grid → global Adam → regional (held-out FC r)"
CONFIG = common.REPO_ROOT / "config" / "config.yaml"
HELDOUT = tuple(range(2000, 2005))  # noise seeds neither tool fits on
EVAL_TR = 300  # BOLD length (TRs after the transient) of every held-out simulation
DEVICES = 2
#: the physiological domain every fitted parameter is checked against
DOMAIN = {"G": (0.0, float("inf")), "w": (0.0, 1.0), "I_o": (0.0, 1.0)}
#: the tutorial's recipe
TV_DT, TV_SIGMA, TV_RANGE = 4.0, 0.00283, (0.001, 0.7)
TV_GLOBAL_LR, TV_REGIONAL_LR = 0.01, 0.004


def _config(grid: int, steps: int, unroll: int | None = None, patience: int | None = None) -> dict:
    from bnmfit.config import load_config

    cfg = load_config(CONFIG)
    if unroll is not None:
        cfg["simulation"]["unroll"] = int(unroll)
    for ax in cfg["exploration"]["parameters"]:
        ax["n"] = grid
    for st in cfg["refinement"]["stages"]:
        st["steps"] = steps
        st.pop("n_epochs", None)
        if patience is not None:
            st["patience"] = int(patience)
    return cfg


def _subject(cfg: dict, subject: str) -> dict:
    """A subject of the bundled cohort as the workflow reads it: normalised SC, and FC/FCD of
    the subject's BOLD."""
    from bnmfit.empirical import empirical_fc
    from bnmfit.io import align, read_bold, read_connectome
    from bnmfit.recipe import build_connectome

    folder = common.RESOURCES / subject
    w, ln, labels = read_connectome(
        folder / f"{subject}_desc-weights_relmat.tsv", folder / f"{subject}_desc-lengths_relmat.tsv"
    )
    conn = build_connectome(cfg, w, ln, labels)
    bold = read_bold(folder / f"{subject}_task-rest_timeseries.tsv.gz")
    idx = align(
        list(conn.labels),
        bold.labels if bold.labels is not None else bold.n_regions,
        n_sc=conn.n_regions,
    )
    b, o = cfg["bold"], cfg["observation"]
    emp = empirical_fc(
        bold.data[:, idx],
        bold.tr,
        discard=b["discard"],
        detrend=b["detrend"],
        bandpass=tuple(b["bandpass"]) if b["bandpass"] else None,
        fcd_window=o["fcd_window"] or None,
        fcd_step=o["fcd_step"],
    )
    return {
        "weights": conn.weights,
        "lengths": conn.lengths,
        "labels": list(conn.labels),
        "fc": emp.fc,
        "fcd": emp.fcd,
        "tr": float(bold.tr),
        "n_tr": int(emp.bold.shape[0]),
    }


def problem_of(cfg: dict, s: dict):
    """The :class:`bnmfit.problem.Problem` of a subject read by :func:`_subject`, built as the
    workflow builds it from ``cfg``."""
    from bnmfit.recipe import build_problem

    keys = ("weights", "lengths", "fc", "fcd", "tr", "n_tr")
    return build_problem(cfg, **{k: s[k] for k in keys})


def _bounds_report(values: dict) -> dict:
    """Per parameter of ``values``: how many values lie outside :data:`DOMAIN`, and the
    range."""
    import numpy as np

    out = {}
    for name, (lo, hi) in DOMAIN.items():
        if name not in values:
            continue
        v = np.atleast_1d(np.asarray(values[name], np.float64))
        out[name] = {
            "outside": int(np.sum((v < lo) | (v > hi))),
            "min": float(v.min()),
            "max": float(v.max()),
        }
    return out


def fc_scores(fc, fc_emp):
    """(Pearson r, RMSE, mean of the simulated values) of the upper triangles (k = 1) of a
    simulated and the empirical FC: the one held-out score of both tools."""
    import jax.numpy as jnp
    import numpy as np

    i, j = np.triu_indices(fc.shape[0], 1)
    rmse = jnp.sqrt(jnp.mean((fc[i, j] - fc_emp[i, j]) ** 2))
    return 1.0 - common.upper_pearson_loss(fc, fc_emp), rmse, fc[i, j].mean()


def _summary(scores) -> dict:
    """Mean ± sd of r over the held-out seeds, and the mean RMSE and FC level."""
    import numpy as np

    r, rmse, level = np.asarray(scores, np.float64).T
    return {
        "heldout_r": float(r.mean()),
        "heldout_r_sd": float(r.std()),
        "heldout_r_per_seed": r.tolist(),
        "heldout_rmse": float(rmse.mean()),
        "heldout_mean_fc": float(level.mean()),
    }


def case_bnmfit(
    grid: int, steps: int, unroll: int | None = None, patience: int | None = None, *, subject: str
) -> dict:
    """bnmfit's default pipeline: explore → top start → refine (the config's stages)."""
    import copy

    import jax
    import jax.numpy as jnp
    import numpy as np

    from bnmfit import explore, fit
    from bnmfit.observables import upper
    from bnmfit.recipe import build_space, build_stages, noise_seeds

    cfg = _config(grid, steps, unroll, patience)
    s = _subject(cfg, subject)

    problem = problem_of(cfg, s)
    # held-out r on EVAL_TR TRs whatever the fit simulates per noise seed
    ev_cfg = copy.deepcopy(cfg)
    ev_cfg["simulation"].update(n_tr=EVAL_TR, duration=None)  # (n_tr has precedence)
    evaluation = problem_of(ev_cfg, s)
    scores = jax.jit(lambda p, k: fc_scores(evaluation.observe(p, k).fc, evaluation.empirical.fc))

    def on_heldout(params):
        p = {k: jnp.asarray(v, problem.weights.dtype) for k, v in params.items()}
        return _summary([scores(p, jax.random.PRNGKey(sd)) for sd in HELDOUT])

    ex, ref = cfg["exploration"], cfg["refinement"]
    stages_out = {}
    t0 = time.perf_counter()
    space = build_space(cfg)
    landscape = explore.evaluate(
        problem, space.names, space.points(), noise_seeds(cfg), batch_size=int(ex["batch_size"])
    )
    starts = landscape.starts(
        int(ref["starts"]), min_separation=float(ref["min_separation"]), space=space
    )
    stages_out["grid"] = {
        "wall_s": time.perf_counter() - t0,
        "params": starts[0],
        "n_points": int(len(space.points())),
    }
    stages = build_stages(cfg)
    result = fit.refine(
        problem,
        stages,
        starts,
        seed=int(cfg["noise"]["seed"]),
        heldout_seeds=tuple(int(x) for x in ref["heldout_seeds"]),
        checkpoint_every=int(ref["checkpoint_every"]),
    )
    for rec in result.stages:
        stages_out[rec.name] = {
            "wall_s": rec.wall_time,
            "steps_run": rec.steps_run,
            "n_rejected": rec.n_rejected,
            "objective_before_after": [rec.heldout["start_loss"], rec.heldout["loss"]],
            "params": {k: np.asarray(v).tolist() for k, v in rec.params.items()},
        }
    for st in stages_out.values():
        params = st["params"]
        st.update(on_heldout(params))
        full = {"G": params.get("G", problem.G), "w": params.get("w", problem.model.w)}
        full["I_o"] = params.get("I_o", problem.model.I_o)
        st["bounds"] = _bounds_report(full)
    spec = problem.spec
    return {
        "stages": stages_out,
        "dtype": str(problem.weights.dtype),
        "dt": spec.dt,
        "unroll": spec.unroll,
        "n_tr": spec.n_tr,
        "n_transient": spec.n_transient,
        "stage_config": [
            {
                "name": st.name,
                "optimizer": st.optimizer,
                "lr": st.learning_rate,
                "steps": st.steps,
                "n_noise": st.n_noise,
                "patience": st.patience,
            }
            for st in stages
        ],
        "loss": cfg["loss"]["expression"],
        "emp_mean_fc": float(upper(evaluation.empirical.fc).mean()),
    }


def cpu_s() -> float:
    """User + sys CPU seconds of this process so far, all its threads together."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def since(start: tuple[float, float]) -> dict:
    """Wall and CPU (user + sys) seconds since ``start = (time.perf_counter(), cpu_s())``."""
    return {"wall_s": time.perf_counter() - start[0], "cpu_s": cpu_s() - start[1]}


def tvboptim_recipe(
    weights, labels, fc_target, tr: float, *, grid: int, steps: tuple[int, int], n_tr: int
):
    """The tvboptim RWW tutorial's recipe (see the module docstring) fitted to ``fc_target``:
    grid, then ``steps[0]`` global and ``steps[1]`` regional Adam steps, one noise key
    throughout; ``n_tr`` BOLD TRs of ``tr`` s kept after its first 20.

    Returns ``(stages, simulate_fc, fit_key)``: per stage its ``params`` (G, w; the
    regional stage's I_o too) and its ``wall_s``/``cpu_s`` (compilation included);
    ``simulate_fc(params, key)`` the FC that tvboptim's simulator gives for a stage's
    ``params`` on a noise key (jitted, not timed); the key of the fit."""
    import copy

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from tvboptim.execution import ParallelExecution
    from tvboptim.experimental.network_dynamics import Network, prepare
    from tvboptim.experimental.network_dynamics.coupling import FastLinearCoupling
    from tvboptim.experimental.network_dynamics.dynamics.tvb import ReducedWongWang
    from tvboptim.experimental.network_dynamics.graph import DenseGraph
    from tvboptim.experimental.network_dynamics.noise import AdditiveNoise
    from tvboptim.experimental.network_dynamics.solvers import Heun
    from tvboptim.observations.observation import compute_fc, rmse
    from tvboptim.observations.tvb_monitors.bold import Bold
    from tvboptim.optim.optax import OptaxOptimizer
    from tvboptim.types import GridAxis, Parameter, Space

    tr_ms = tr * 1000.0
    weights = jnp.asarray(weights)
    fc_target = jnp.asarray(fc_target)
    n_nodes = weights.shape[0]
    t1 = (n_tr + common.DISCARD_TR) * tr_ms  # the same BOLD kept as bnmfit's, after 20 TRs

    stages_out = {}
    t0 = (time.perf_counter(), cpu_s())
    network = Network(
        dynamics=ReducedWongWang(w=0.5, I_o=0.32, INITIAL_STATE=(0.3,)),
        coupling={"instant": FastLinearCoupling(local_states=["S"], G=0.5)},
        graph=DenseGraph(weights, region_labels=list(labels)),
        noise=AdditiveNoise(sigma=TV_SIGMA, apply_to="S"),
    )
    model, state = prepare(network, Heun(), t1=t1, dt=TV_DT)
    result_init = model(state)  # the transient
    network.update_history(result_init)
    model, state = prepare(network, Heun(), t1=t1, dt=TV_DT)
    bold_monitor = Bold(period=tr_ms, downsample_period=TV_DT, voi=0, history=result_init)

    def observation(st):
        return compute_fc(bold_monitor(model(st)), skip_t=common.DISCARD_TR)

    def loss(st):
        return rmse(observation(st), fc_target)

    grid_state = copy.deepcopy(state)
    grid_state.dynamics.w = GridAxis(*TV_RANGE, grid)
    grid_state.coupling.instant.G = GridAxis(*TV_RANGE, grid)
    space = Space(grid_state, mode="product")
    losses = np.asarray(jnp.stack(ParallelExecution(loss, space, n_pmap=DEVICES).run()))
    pc = space.collect()
    g_all = np.asarray(pc.coupling.instant.G).ravel()
    w_all = np.asarray(pc.dynamics.w).ravel()
    best = int(np.nanargmin(losses.ravel()))
    stages_out["grid"] = {
        **since(t0),
        "params": {"G": float(g_all[best]), "w": float(w_all[best])},
        "n_points": int(losses.size),
    }

    t0 = (time.perf_counter(), cpu_s())
    state.coupling.instant.G = Parameter(state.coupling.instant.G)
    state.dynamics.w = Parameter(state.dynamics.w)
    fitted, _ = OptaxOptimizer(loss, optax.adam(TV_GLOBAL_LR, b2=0.9999)).run(
        state, max_steps=steps[0]
    )
    stages_out["global"] = {
        "steps_run": steps[0],
        "params": {
            "G": float(np.asarray(fitted.coupling.instant.G.value)),
            "w": float(np.asarray(fitted.dynamics.w.value)),
        },
        **since(t0),
    }

    t0 = (time.perf_counter(), cpu_s())
    het = copy.deepcopy(fitted)
    het.dynamics.w.shape = (n_nodes,)
    het.dynamics.I_o = Parameter(het.dynamics.I_o)  # the tutorial frees I_o per region too
    het.dynamics.I_o.shape = (n_nodes,)
    het.coupling.instant.G = het.coupling.instant.G.value
    fitted_het, _ = OptaxOptimizer(loss, optax.adam(TV_REGIONAL_LR, b2=0.999)).run(
        het, max_steps=steps[1]
    )
    stages_out["regional"] = {
        "steps_run": steps[1],
        "params": {
            "G": float(np.asarray(fitted_het.coupling.instant.G)),
            "w": np.asarray(fitted_het.dynamics.w.value).ravel().tolist(),
            "I_o": np.asarray(fitted_het.dynamics.I_o.value).ravel().tolist(),
        },
        **since(t0),
    }

    base = copy.deepcopy(state)
    base.coupling.instant.G = 0.5
    base.dynamics.w = jnp.full((n_nodes,), 0.5)
    base.dynamics.I_o = jnp.full((n_nodes,), 0.32)

    @jax.jit
    def fc_of(st, g, w, i_o, key):
        leaves = {"coupling.instant.G": g, "dynamics.w": w, "dynamics.I_o": i_o, "noise.key": key}
        return observation(common.with_leaves(st, **leaves))

    def simulate_fc(params, key):
        def regional(v):
            return jnp.broadcast_to(jnp.asarray(v, jnp.float64), (n_nodes,))

        g = jnp.asarray(params["G"], jnp.float64)
        return fc_of(base, g, regional(params["w"]), regional(params.get("I_o", 0.32)), key)

    return stages_out, simulate_fc, base.noise.key


def case_tvboptim(grid: int, steps: int, n_tr: int, subject: str) -> dict:
    """The tvboptim RWW tutorial's recipe on the same subject (one noise key throughout),
    scored on held-out noise keys by its own simulator."""
    import jax
    import jax.numpy as jnp

    cfg = _config(grid, steps)
    s = _subject(cfg, subject)
    stages_out, simulate_fc, fit_key = tvboptim_recipe(
        s["weights"], s["labels"], s["fc"], s["tr"], grid=grid, steps=(steps, steps), n_tr=n_tr
    )
    fc_target = jnp.asarray(s["fc"])
    for st in stages_out.values():
        par = st["params"]
        scores = [fc_scores(simulate_fc(par, jax.random.key(sd)), fc_target) for sd in HELDOUT]
        st.update(_summary(scores))
        st["fit_r"] = float(fc_scores(simulate_fc(par, fit_key), fc_target)[0])
        st["bounds"] = _bounds_report(st["params"])
    t1 = (n_tr + common.DISCARD_TR) * s["tr"] * 1000.0
    return {"stages": stages_out, "dtype": "float64", "dt": TV_DT, "t1_ms": t1, "n_tr_kept": n_tr}


def _row(library: str, precision: str, variant: str, stage: str, st: dict, vs: str = "") -> dict:
    b = st.get("bounds", {})
    outside = sum(v["outside"] for v in b.values())
    w = b.get("w", {})
    figure = (
        f"held-out FC r {st['heldout_r']:.3f} ± {st['heldout_r_sd']:.3f}"
        + (f" (on its fitting noise {st['fit_r']:.3f})" if "fit_r" in st else "")
        + f", RMSE {st['heldout_rmse']:.3f}, mean FC {st['heldout_mean_fc']:.3f}"
        + f"; w in [{w.get('min', float('nan')):.3g}, {w.get('max', float('nan')):.3g}]"
        + f", {outside} outside the domain"
    )
    if "objective_before_after" in st:
        figure += "; own loss on its held-out seeds {:.3f} → {:.3f}".format(
            *st["objective_before_after"]
        )
    if st.get("steps_run") is not None:
        figure += f"; {st['steps_run']} steps run"
    res = {"median_s": st["wall_s"], "min_s": st["wall_s"], "max_s": st["wall_s"], "runs": 1}
    return common.row("W5", library, precision, f"{variant}: {stage}", res, figure, vs)


def run(args) -> dict:
    grid = getattr(args, "grid", None) or (4 if args.quick else 16)
    steps = getattr(args, "steps", None) or (10 if args.quick else 100)
    subject = getattr(args, "subject", None) or common.SUBJECT
    cases, rows = {}, []
    bn = common.run_case(
        MODULE,
        "case_bnmfit",
        {
            "grid": grid,
            "steps": steps,
            "unroll": args.unroll,
            "patience": getattr(args, "patience", 0),
            "subject": subject,
        },
        x64=False,
        devices=DEVICES,
        timeout_s=5400,
    )
    cases["bnmfit"] = bn
    peers = not args.no_peers and common.peer_available("tvboptim") is None
    tv = None
    if peers and not bn.get("error"):
        tv = common.run_case(
            MODULE,
            "case_tvboptim",
            {"grid": grid, "steps": steps, "n_tr": EVAL_TR, "subject": subject},
            x64=True,
            devices=DEVICES,
            timeout_s=5400,
            xla_defaults=False,
        )
        cases["tvboptim"] = tv
    for name in ("grid", "global", "regional"):
        if bn.get("error"):
            rows.append(common.row("W5", "bnmfit", "float32", name, bn))
            break
        ours = bn["stages"][name]
        peer = None if tv is None or tv.get("error") else tv["stages"][name]
        vs = "" if peer is None else f"{peer['wall_s'] / ours['wall_s']:.2f}×"
        rows.append(_row("bnmfit", bn["dtype"], "default config", name, ours, vs))
        if peer is not None:
            rows.append(_row("tvboptim 0.4.0", "float64", "RWW tutorial recipe", name, peer))
    if tv is not None and tv.get("error"):
        rows.append(common.row("W5", "tvboptim 0.4.0", "float64", "RWW tutorial recipe", tv))
    notes = [
        f"{subject}; {grid} × {grid} grid, {steps} steps per gradient stage; wall time per "
        "stage includes compilation; 'vs tvboptim' = tvboptim's stage time / bnmfit's (> 1: "
        "bnmfit faster).",
        f"Held-out FC r: mean ± sd over noise seeds {HELDOUT[0]}–{HELDOUT[-1]}, used by neither "
        "fit; '(on its fitting noise)': tvboptim's r on the one noise key it was fitted on; "
        "RMSE and mean FC (upper triangles, mean over the same seeds) show whether the FC "
        "level is matched too (a model can raise r by over-synchronising).",
        "Domain checked: G ≥ 0, 0 ≤ w ≤ 1, 0 ≤ I_o ≤ 1 (bnmfit's bounds are sigmoid "
        "transforms: w in [0.001, 1], I_o in [0.2, 0.5]).",
    ]
    if not bn.get("error"):
        notes.append(
            f"bnmfit: {bn['dtype']}, dt {bn['dt']} ms, unroll {bn['unroll']}, {bn['n_tr']} TRs "
            f"after {bn['n_transient']} transient TRs; loss {bn['loss']}; empirical mean FC "
            f"{bn['emp_mean_fc']:.3f}; stages "
            + "; ".join(
                f"{c['name']}: {c['optimizer']} lr {c['lr']}, {c['steps']} steps, "
                f"n_noise {c['n_noise']}, patience {c['patience']}"
                for c in bn["stage_config"]
            )
        )
    if tv is not None and not tv.get("error"):
        notes.append(
            f"tvboptim: float64, dt {tv['dt']} ms, t1 {tv['t1_ms'] / 1000:.1f} s after a "
            "transient run of the same length, tutorial HRF Bold, first 20 TRs skipped; loss "
            "RMSE(FC); global Adam(0.01, b2=0.9999) from (G, w) = (0.5, 0.5) as in the "
            "tutorial (the grid does not seed it); regional Adam(0.004) on w and I_o, "
            "unbounded, as the tutorial."
        )
    elif not peers:
        notes.append("tvboptim not measured (--no-peers or not installed).")
    return common.report(NAME, TITLE, rows, cases, args, notes)


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="steps per gradient stage")
    p.add_argument("--grid", type=int, default=None, help="grid points per axis")
    p.add_argument(
        "--patience",
        type=int,
        default=0,
        help="bnmfit early-stopping patience (default 0: every step of W5 runs; "
        "the config's is 20)",
    )
    p.add_argument(
        "--subject",
        default=common.SUBJECT,
        help=f"subject of the bundled cohort (default {common.SUBJECT})",
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
