"""Map recovery and calibration — a 2-map heterogeneity of w on sub-01 (80 regions).

Issue 23, "How it is checked": a synthetic subject whose truth is a map heterogeneity
w_i = T(a + c1 z_strength(i) + c2 z_gradient(i)) (bnmfit.params scope ``map``; T the
sigmoid onto the config's w domain (0.001, 1); z the z-scored maps of bnmfit.maps: the SC's
node strength and the principal FC gradient of the other six bundled subjects, leaving
sub-01 out), G fixed at ``G_FIXED``, on sub-01's SC with config/config.yaml's simulation
(dt 7.2 ms, float32) and loss (1 − r + RMSE of FC). The synthetic "empirical" FC is the
mean FC of ``RUNS`` simulations at the truth (4 × 300 TRs = one HCP session of 1200 TRs).

* ``bound``: first, at candidate truths (w0 = T(a), c1, c2) on ``N_TR`` TRs, the
  Cramér–Rao bound of bnmfit.uncertainty on each coefficient from such an FC (the
  forward-mode Jacobian J of the expected FC with respect to (a, c1, c2) per noise seed,
  ``BOUND_JACOBIAN`` seeds; FC's noise covariance Σ from ``BOUND_NOISE`` single simulations
  as 20 principal components plus a diagonal), also with half the Jacobian seeds; and
  beside it the errors two estimators reach, from the same J and samples:
  ``cross-fitted``, the estimator weighted by the inverse of Σ estimated from half the
  samples (the bound's weighting), its error measured on the other half; ``fit``, the
  sandwich covariance (below) of the fit that is actually run.
* ``noise study``: at the truth, the bound and the cross-fitted error from the first n of
  ``NOISE_STUDY`` samples of FC's noise (does the bound's Σ⁻¹ hold out of sample?), and
  the unweighted least-squares error (Σ not inverted).
* ``recovery``: one synthetic subject on ``N_TR`` TRs (replicate 0), fitted as the workflow
  does without the grid over G: a 1-D exploration of a homogeneous w (the config's w axis,
  ``EXPLORE_W`` points), then the map stage from c = 0, a = T⁻¹(w) (with ``--map-screen
  S``: also from the best ``--map-screen-keep`` others of the 27 starts a, c1, c2 each ± S
  around that, ``Stage.map_screen``, keeping the lowest end), Levenberg–Marquardt on
  the ``--noise-average`` loss of ``FIT_NOISE`` fixed noise seeds (``fc_debiased``, the
  default, or ``fc``: the loss of their mean FC, which prefers less noisy FC); fitted vs
  true coefficients (target: within 10 %).
* ``calibration``: ``--replicates`` synthetic subjects at the truth on ``CAL_TR`` TRs (a
  shorter simulation, for time), each from new noise seeds, each fitted as above and given
  standard errors by ``refine(uncertainty=...)`` (:func:`bnmfit.uncertainty.standard_errors`,
  runs = RUNS, its default n_jacobian 4 and n_noise 32: the sandwich covariance of the fit
  that is run, H⁻¹ Bᵀ Σ_δ B H⁻¹ with B = W J, H = Jᵀ W J, W the Hessian of the loss with
  respect to the simulated FC's upper triangle, Σ_δ = (1/RUNS + 1/FIT_NOISE) Σ, the
  target's noise and the fit's own — no inverse of Σ); how often |fitted − true| ≤ 2 SE
  per coefficient (target: 90–98 %). Beside them the Cramér–Rao bound from the same J and
  noise sample (same keys). Each fit also records its objective at its end and at the
  truth (same fixed noise seeds): an end above the truth's is a fit that stopped short.
* ``bias check``: whether the objective itself prefers the calibration fits' mean to the
  truth, with the fit's ``FIT_NOISE`` seeds and with more, debiased or not
  (:func:`case_bias`).

``TRUTH`` is chosen from the bound table (docs/science.md, "Map recovery and calibration").

    python -m tests.benchmarks.map_recovery [--quick] [--replicates 20] [--jobs 2] [--out DIR]
        [--noise-average fc_debiased|fc] [--fits-only] [--cal-tr N] [--fit-steps N]
        [--map-screen S] [--map-screen-keep K]
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

from tests.benchmarks import common, w5_fit

NAME = "map_recovery"
MODULE = f"tests.benchmarks.{NAME}"
TITLE = "Map recovery — 2-map heterogeneity of w on sub-01 (80 regions): bound, fit, calibration"
SUBJECT = "01"
MAPS = ("strength", "fc_gradient")
COEFFICIENTS = ("a", "c1", "c2")
DOMAIN = (0.001, 1.0)  # the config's w domain (sigmoid)
G_FIXED = 0.33  # sub-01's global fit (G 0.31–0.33, w 0.31)
N_TR = 300  # the config's simulated length: the bound and the recovery
CAL_TR = 150  # the calibration replicates' simulated length
RUNS = 4  # simulations averaged into the synthetic empirical FC
TRUTH_KEY = 777  # the targets' noise: fold_in(PRNGKey(TRUTH_KEY), replicate), split RUNS
FIT_SEED = 5000  # replicate r explores and fits with seed FIT_SEED + r
HELDOUT = (9000,)  # refine's held-out report (one seed: not what this benchmark measures)
#: candidate truths (w0, c1, c2): w0 = T(a), the w of a region at the maps' means; c in
#: η units per SD of the map
CANDIDATES = (
    (0.17, 0.5, -0.5),
    (0.17, 1.0, -1.0),
    (0.17, 1.5, -1.5),
)
TRUTH = (0.17, 1.0, -1.0)
BOUND_JACOBIAN = 8
BOUND_NOISE = 64
BOUND_RUNS = (1, RUNS, 16)
NOISE_STUDY = (32, 128, 256)  # samples of FC's noise in the noise study
EXPLORE_W = 16  # points of the exploration over a homogeneous w (the config's axis)
FIT_NOISE = 8  # fixed noise seeds of the fit's mean FC
NOISE_AVERAGES = ("fc_debiased", "fc")  # the fit's loss: debiased (default) or of the mean FC
FIT_STEPS = 15  # at most this many LM iterations
CHUNK = 5  # replicates per child process
WITHIN = 0.1  # the recovery target: |fitted / true − 1| ≤ 10 %
BIAS_KEYS = (4242, 4343)  # the bias check's targets and fit seeds: fold_in(PRNGKey(key), draw)
BIAS_DRAWS = 12  # independent (target, fit seeds) draws of the bias check
BIAS_FIT_NOISE = (FIT_NOISE, 32)  # fit seeds compared by the bias check


def _setup(n_tr: int):
    """(problem with G fixed, sub-01's regional maps, labels, the w axis of the config's
    exploration with EXPLORE_W points) on ``n_tr`` simulated TRs."""
    import dataclasses

    import jax.numpy as jnp

    from bnmfit.explore import Space
    from bnmfit.maps import subject_maps
    from bnmfit.recipe import build_space

    cfg = w5_fit._config(EXPLORE_W, 1)
    cfg["simulation"]["n_tr"] = int(n_tr)
    subjects = {f"{k:02d}": w5_fit._subject(cfg, f"sub-{k:02d}") for k in range(1, 8)}
    s = subjects[SUBJECT]
    problem = w5_fit.problem_of(cfg, s)
    problem = dataclasses.replace(problem, G=jnp.asarray(G_FIXED, problem.weights.dtype))
    regions = subject_maps(
        SUBJECT,
        s["labels"],
        s["weights"],
        fcs={k: (v["labels"], v["fc"]) for k, v in subjects.items()},
        maps=MAPS,
    )
    space = Space(tuple(a for a in build_space(cfg).axes if a.name == "w"))
    return problem, regions, s["labels"], space


def _free():
    from bnmfit.params import FreeParameter

    return FreeParameter("w", *DOMAIN, scope="map", maps=MAPS)


def _stage(
    n_noise: int,
    steps: int,
    noise_average: str = "fc_debiased",
    map_screen: float | None = None,
    map_screen_keep: int = 1,
):
    """The map stage: Levenberg–Marquardt on the mean FC of ``n_noise`` fixed noise seeds,
    its loss debiased (``fc_debiased``) or not (``fc``), from the explored w and (with
    ``map_screen``, the spread) the best ``map_screen_keep`` other of the 27 screened
    starts."""
    from bnmfit.fit import Stage

    return Stage(
        "map",
        (_free(),),
        optimizer="levenberg-marquardt",
        steps=steps,
        n_noise=n_noise,
        fresh_noise=False,
        noise_average=noise_average,
        map_screen=map_screen,
        map_screen_keep=map_screen_keep,
    )


def _coefficients(w0: float, c1: float, c2: float) -> list[float]:
    """(a, c1, c2) of a candidate: a = T⁻¹(w0)."""
    return [float(_free().to_unconstrained(w0)), float(c1), float(c2)]


def _target(problem, pset, coef, replicate: int):
    """The problem whose empirical FC is the mean FC of RUNS simulations at ``coef``."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from bnmfit.losses import Observed
    from bnmfit.uncertainty import mean_fc

    key = jax.random.fold_in(jax.random.PRNGKey(TRUTH_KEY), replicate)
    params = pset.constrain({"w": jnp.asarray(coef, problem.weights.dtype)})
    fc = mean_fc(problem, params, jax.random.split(key, RUNS))
    return dataclasses.replace(problem, empirical=Observed(fc))


def _crossfit(J, noise, runs: float):
    """(P,) the error SD of the estimator weighted by the bound's Σ⁻¹ estimated from the
    first half of ``noise``, on a target of ``runs`` simulations, measured on the second
    half (linearised: the error of one run is F⁻¹ Jᵀ Σ̂⁻¹ x, x a held-out run's noise; J:
    the Jacobians per seed (K, M, P), F their pairs' information as the bound's)."""
    import numpy as np

    from bnmfit.uncertainty import fisher_information

    half = noise.shape[0] // 2
    first, second = noise[:half], noise[half:]
    first, second = first - first.mean(axis=0), second - second.mean(axis=0)
    p = J.shape[-1]
    cross = fisher_information(np.column_stack([J.mean(axis=0), second.T]), first, 1.0)
    errors = np.linalg.solve(fisher_information(J, first, 1.0), cross[:p, p:])
    return np.sqrt(errors.var(axis=1, ddof=1) / runs)


def _sandwich(target, J, noise, expected, runs: float, n_fit: int):
    """The (P, P) sandwich covariance of a fit of ``target``'s loss with ``n_fit`` seeds
    (:func:`bnmfit.uncertainty.sandwich`; ``noise`` centred, ``expected`` its mean)."""
    from bnmfit.uncertainty import covariance, sandwich

    H, middle = sandwich(target, J, noise + expected, runs, n_fit)
    return covariance(H, middle=middle)


def _information(problem, pset, coef, jkeys, nkeys):
    """(J per seed (K, M, P), noise, expected FC upper triangle) at coefficients ``coef``."""
    import jax.numpy as jnp
    import numpy as np

    from bnmfit.observables import upper
    from bnmfit.uncertainty import fc_information, mean_fc

    u = {"w": jnp.asarray(coef, problem.weights.dtype)}
    J, noise = fc_information(problem, pset, u, {}, jkeys, nkeys)
    expected = np.asarray(upper(mean_fc(problem, pset.constrain(u), jkeys)), np.float64)
    return J, noise, expected


def case_bound(candidates: list, n_tr: int, n_jacobian: int, n_noise: int) -> dict:
    """Per candidate truth (w0, c1, c2), the SDs of a, c1, c2 (module docstring):
    ``bound_<runs>`` (Cramér–Rao, bnmfit.uncertainty), ``crossfit`` and ``fit`` for a
    RUNS target; w's range, the expected FC's mean and its r with sub-01's own FC."""
    import time

    import jax.numpy as jnp
    import numpy as np

    from bnmfit.observables import upper
    from bnmfit.params import ParameterSet
    from bnmfit.uncertainty import least_error_var, noise_keys

    problem, regions, _, _ = _setup(n_tr)
    pset = ParameterSet((_free(),)).bind(problem, regions=regions)
    emp = np.asarray(upper(problem.empirical.fc), np.float64)
    out = []
    for i, cand in enumerate(candidates):
        t0 = time.perf_counter()
        coef = _coefficients(*cand)
        J, noise, expected = _information(
            problem, pset, coef, *noise_keys(TRUTH_KEY, i, n_jacobian, n_noise)
        )
        w = np.asarray(pset.constrain({"w": jnp.asarray(coef)})["w"], np.float64)
        row = {
            "candidate": list(cand),
            "coefficients": coef,
            "w_range": [float(w.min()), float(w.max())],
            "mean_fc": float(expected.mean()),
            "fc_r_subject": float(np.corrcoef(expected, emp)[0, 1]),
            "finite": bool(np.all(np.isfinite(J)) and np.all(np.isfinite(noise))),
        }
        if row["finite"]:
            for runs in BOUND_RUNS:
                row[f"bound_{runs}"] = np.sqrt(least_error_var(J, noise, runs)).tolist()
            half = J[: n_jacobian // 2]
            row["bound_half_jacobian"] = np.sqrt(least_error_var(half, noise, RUNS)).tolist()
            row["crossfit"] = _crossfit(J, noise, RUNS).tolist()
            target = _target(problem, pset, coef, i)
            cov = _sandwich(target, J, noise, expected, RUNS, FIT_NOISE)
            row["fit"] = np.sqrt(np.diag(cov)).tolist()
        row["wall_s"] = time.perf_counter() - t0
        out.append(row)
    return {"candidates": out, "n_tr": n_tr, "n_jacobian": n_jacobian, "n_noise": n_noise}


def case_noise(truth: list, n_tr: int, n_jacobian: int, sizes: list) -> dict:
    """At ``truth``: the bound (RUNS) and the cross-fitted SD from the first n samples of
    FC's noise, for each n in ``sizes`` (one Jacobian, one pool of max(sizes) samples); the
    bound from all samples with the Jacobian of half the seeds (its noise); and the SD of
    the unweighted least-squares fit of the expected FC (Σ not inverted) from all
    samples."""
    import numpy as np

    from bnmfit.params import ParameterSet
    from bnmfit.uncertainty import least_error_var, noise_keys

    problem, regions, _, _ = _setup(n_tr)
    pset = ParameterSet((_free(),)).bind(problem, regions=regions)
    coef = _coefficients(*truth)
    jkeys, nkeys = noise_keys(TRUTH_KEY + 1, 0, n_jacobian, max(sizes))
    J, pool, _ = _information(problem, pset, coef, jkeys, nkeys)
    rows = []
    for n in sizes:
        x = pool[:n] - pool[:n].mean(axis=0)
        rows.append(
            {
                "samples": n,
                "bound": np.sqrt(least_error_var(J, x, RUNS)).tolist(),
                "crossfit": _crossfit(J, x, RUNS).tolist(),
            }
        )
    pool = pool - pool.mean(axis=0)
    k = np.linalg.pinv(J.mean(axis=0))
    ols = np.sqrt(np.diag(k @ (pool.T @ pool / (len(pool) - 1)) @ k.T) / RUNS)
    return {
        "coefficients": coef,
        "sizes": rows,
        "bound_half_jacobian": np.sqrt(least_error_var(J[: n_jacobian // 2], pool, RUNS)).tolist(),
        "n_jacobian": n_jacobian,
        "least_squares": ols.tolist(),
    }


def case_fits(
    truth: list,
    n_tr: int,
    replicates: list,
    n_noise: int,
    steps: int,
    noise_average: str,
    map_screen: float | None = None,
    map_screen_keep: int = 1,
) -> dict:
    """Per replicate: a new synthetic subject at ``truth`` (w0, c1, c2) on ``n_tr`` TRs,
    explored over a homogeneous w and fitted by the map stage (:func:`_stage`) with its
    standard errors from ``refine(uncertainty={"runs": RUNS})`` (the sandwich of the fit),
    the Cramér–Rao bound from the same J and noise sample, and the stage's objective (its
    loss over its fixed noise seeds) at its end and at the truth."""
    import time

    import jax.numpy as jnp
    import numpy as np

    from bnmfit import explore, fit
    from bnmfit.params import ParameterSet
    from bnmfit.uncertainty import least_error_var, noise_keys

    problem, regions, labels, space = _setup(n_tr)
    pset = ParameterSet((_free(),)).bind(problem, regions=regions)
    stage = _stage(n_noise, steps, noise_average, map_screen, map_screen_keep)
    coef = _coefficients(*truth)
    dtype = problem.weights.dtype
    out = []
    for r in replicates:
        t0 = time.perf_counter()
        target = _target(problem, pset, coef, r)
        seed = FIT_SEED + r
        land = explore.evaluate(target, space.names, space.points(), [seed], batch_size=16)
        start = land.starts(1, space=space)[0]
        res = fit.refine(
            target,
            [stage],
            [start],
            seed=seed,
            heldout_seeds=HELDOUT,
            regions=regions,
            uncertainty={"runs": float(RUNS), "labels": labels},
        )
        (rec,) = res.stages
        unc = rec.uncertainty
        fitted = np.asarray(rec.u["w"], np.float64)
        fit_keys = fit._step_keys(fit._root_key(seed), 0, 0, n_noise, fresh=False)

        def objective(c, target=target, fit_keys=fit_keys):
            params = pset.constrain({"w": jnp.asarray(c, dtype)})
            return float(fit._data_loss(target, noise_average)(params, fit_keys))

        keys = noise_keys(seed, 0, unc.n_jacobian, unc.n_noise)  # refine's for stage 0
        J, noise, _ = _information(target, pset, fitted, *keys)
        bound = np.sqrt(least_error_var(J, noise, RUNS))
        out.append(
            {
                "replicate": r,
                "w_explored": start["w"],
                "fitted": fitted.tolist(),
                "se": unc.se.tolist(),
                "se_method": unc.method,
                "se_bound": bound.tolist(),
                "labels": list(unc.labels),
                "steps_run": rec.steps_run,
                "kept_start": bool(rec.kept_start),
                "screen": rec.screen,
                "objective_end": objective(fitted),
                "objective_truth": objective(coef),
                "fit_wall_s": rec.wall_time,
                "wall_s": time.perf_counter() - t0,
            }
        )
    return {
        "coefficients": coef,
        "n_tr": n_tr,
        "n_noise": n_noise,
        "noise_average": noise_average,
        "fits": out,
    }


def case_bias(point: list, n_tr: int, draws: int, n_fits: list) -> dict:
    """Whether the loss itself prefers ``point`` (the calibration fits' mean) to the truth:
    for each number n of fit seeds in ``n_fits`` and each of NOISE_AVERAGES, over ``draws``
    independent draws of a target (the mean FC of RUNS simulations at the truth) and of n
    fit seeds, the paired difference of the objective (the loss of the n seeds' mean FC, or
    its debiased loss) at ``point`` minus at the truth: its mean, standard error and how
    many draws are below 0."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    from bnmfit.fit import _data_loss
    from bnmfit.losses import Observed
    from bnmfit.params import ParameterSet
    from bnmfit.uncertainty import mean_fc

    problem, regions, _, _ = _setup(n_tr)
    pset = ParameterSet((_free(),)).bind(problem, regions=regions)
    dtype = problem.weights.dtype
    truth = jnp.asarray(_coefficients(*TRUTH), dtype)
    at = jnp.asarray(point, dtype)

    @jax.jit
    def fc_of(c, keys):
        return mean_fc(problem, pset.constrain({"w": c}), keys)

    def keys(which: int, draw: int, n: int):
        return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(which), draw), n)

    @functools.partial(jax.jit, static_argnames="average")
    def objective(target, c, keys, average):
        return _data_loss(target, average)(pset.constrain({"w": c}), keys)

    rows = []
    for n in n_fits:
        d = {a: [] for a in NOISE_AVERAGES}
        for k in range(draws):
            fc = fc_of(truth, keys(BIAS_KEYS[0], k, RUNS))
            target = dataclasses.replace(problem, empirical=Observed(fc))
            fit_keys = keys(BIAS_KEYS[1], k, n)
            for a in NOISE_AVERAGES:
                loss = [float(objective(target, c, fit_keys, a)) for c in (at, truth)]
                d[a].append(loss[0] - loss[1])
        for a, diff in d.items():
            diff = np.asarray(diff)
            rows.append(
                {
                    "n_fit": int(n),
                    "noise_average": a,
                    "mean": float(diff.mean()),
                    "se": float(diff.std(ddof=1) / np.sqrt(draws)),
                    "below": int((diff < 0).sum()),
                }
            )
    return {"point": list(point), "n_tr": n_tr, "draws": draws, "rows": rows}


#: standard errors compared in the calibration: key in a fit's record → label
SE_KINDS = {"se": "library (sandwich of the fit)", "se_bound": "Cramér–Rao bound"}


def summary(fits: list[dict], coef: list[float]) -> dict:
    """Recovery and calibration numbers of :func:`case_fits` records: per coefficient the
    bias, SD and RMS relative error of the fitted values, the share within WITHIN of the
    truth, and per kind of standard error its mean, the RMS of (fitted − true) / SE, the
    coverage of ±2 SE (per coefficient and over all) and, apart from the fits' bias, of the
    replicates' mean fitted value."""
    import numpy as np

    coef = np.asarray(coef)
    fitted = np.array([f["fitted"] for f in fits])
    rel = fitted / coef - 1.0
    out = {
        "replicates": len(fits),
        "bias": (fitted.mean(axis=0) - coef).tolist(),
        "sd": fitted.std(axis=0, ddof=1).tolist() if len(fits) > 1 else None,
        "rel_error_rms": np.sqrt((rel**2).mean(axis=0)).tolist(),
        "within": (np.abs(rel) <= WITHIN).mean(axis=0).tolist(),
        "reached_optimum": int(sum(f["objective_end"] <= f["objective_truth"] for f in fits)),
    }
    for kind in SE_KINDS:
        se = np.array([f[kind] for f in fits])
        inside = np.abs(fitted - coef) <= 2.0 * se
        out[kind] = {
            "mean_se": se.mean(axis=0).tolist(),
            "z_rms": np.sqrt((((fitted - coef) / se) ** 2).mean(axis=0)).tolist(),
            "coverage": inside.mean(axis=0).tolist(),
            "coverage_all": float(inside.mean()),
            "coverage_about_mean": (np.abs(fitted - fitted.mean(axis=0)) <= 2.0 * se)
            .mean(axis=0)
            .tolist(),
        }
    return out


def _pct(values, scale=None) -> str:
    import numpy as np

    v = np.asarray(values, np.float64) / (1.0 if scale is None else np.abs(scale))
    return ", ".join(f"{n} {x:.1%}" for n, x in zip(COEFFICIENTS, v, strict=True))


def _row(case: str, wall: float, figure: str) -> dict:
    res = {"median_s": wall, "min_s": wall, "max_s": wall, "runs": 1}
    return common.row("map recovery", "bnmfit", "float32", case, res, figure)


def run(args) -> dict:
    """The bound and the noise study (unless ``--fits-only``), the recovery and the
    calibration chunks, each in a child process, ``--jobs`` of them at a time; then the
    bias check at the calibration's mean."""
    import numpy as np

    quick = bool(args.quick)
    n_tr, cal_tr = (150, 100) if quick else (N_TR, getattr(args, "cal_tr", None) or CAL_TR)
    candidates = [TRUTH, CANDIDATES[0]] if quick else list(CANDIDATES)
    replicates = getattr(args, "replicates", None) or (2 if quick else 20)
    average = getattr(args, "noise_average", NOISE_AVERAGES[0])
    fit_kw = {
        "truth": list(TRUTH),
        "n_noise": FIT_NOISE,
        "steps": 10 if quick else getattr(args, "fit_steps", None) or FIT_STEPS,
        "noise_average": average,
        "map_screen": getattr(args, "map_screen", None),
        "map_screen_keep": getattr(args, "map_screen_keep", 1),
    }
    cases = {
        "bound": (
            "case_bound",
            {
                "candidates": candidates,
                "n_tr": n_tr,
                "n_jacobian": BOUND_JACOBIAN,
                "n_noise": 32 if quick else BOUND_NOISE,
            },
        ),
        "noise": (
            "case_noise",
            {
                "truth": list(TRUTH),
                "n_tr": n_tr,
                "n_jacobian": BOUND_JACOBIAN,
                "sizes": [16, 32] if quick else list(NOISE_STUDY),
            },
        ),
        "recovery": ("case_fits", {**fit_kw, "n_tr": n_tr, "replicates": [0]}),
    }
    if getattr(args, "fits_only", False):
        del cases["bound"], cases["noise"]
    for first in range(0, replicates, CHUNK):
        reps = list(range(first, min(first + CHUNK, replicates)))
        cases[f"calibration {first}"] = (
            "case_fits",
            {**fit_kw, "n_tr": cal_tr, "replicates": reps},
        )

    def one(item):
        func, kwargs = item
        return common.run_case(MODULE, func, kwargs, x64=False, timeout_s=4 * 3600)

    order = sorted(cases, key=lambda k: not k.startswith("calibration"))  # longest first
    with ThreadPoolExecutor(max_workers=max(1, getattr(args, "jobs", 1))) as pool:
        done = dict(zip(order, pool.map(one, [cases[k] for k in order]), strict=True))
    cases = {k: done[k] for k in cases}
    coef = _coefficients(*TRUTH)
    chunks = [v for k, v in cases.items() if k.startswith("calibration")]
    fits = [f for c in chunks if not c.get("error") for f in c["fits"]]
    cases["summary"] = summary(fits, coef) if fits else None
    if fits:
        cases["bias"] = common.run_case(
            MODULE,
            "case_bias",
            {
                "point": np.mean([f["fitted"] for f in fits], axis=0).tolist(),
                "n_tr": cal_tr,
                "draws": 4 if quick else BIAS_DRAWS,
                "n_fits": list(BIAS_FIT_NOISE),
            },
            x64=False,
            timeout_s=4 * 3600,
        )
    rows = _bound_rows(cases["bound"]) + _noise_rows(cases["noise"]) if "bound" in cases else []
    rows += _recovery_rows(cases["recovery"], coef)
    rows += _calibration_rows(fits, cases["summary"], [c for c in chunks if c.get("error")])
    rows += _bias_rows(cases["bias"]) if fits else []
    notes = [
        f"sub-01's SC, config/config.yaml's simulation (TR 0.72 s, dt 7.2 ms, float32) and "
        f"loss; G = {G_FIXED}; w_i = sigmoid onto (0.001, 1) of a + c1 z_strength(i) + c2 "
        "z_gradient(i) (leave-one-out gradient of sub-02..07's FC); synthetic FC = the mean "
        f"FC of {RUNS} simulations at the truth; bound and recovery on {n_tr} TRs, "
        f"calibration on {cal_tr} TRs.",
        f"bound: Jacobian of the expected FC over {BOUND_JACOBIAN} seeds, FC's noise from "
        f"{cases.get('bound', {}).get('n_noise')} single simulations; 'cross-fitted': weights Σ̂⁻¹ "
        "from half of them, error measured on the other half; 'fit': sandwich of the "
        f"configured loss's fit of the mean FC of {FIT_NOISE} simulations. All as SD / "
        f"|coefficient|, target of {RUNS} runs.",
        f"fits: 1-D exploration of a homogeneous w ({EXPLORE_W} points), then the map stage, "
        + (
            f"from c = 0 and the best {fit_kw['map_screen_keep']} others of 27 screened starts "
            f"(a, c1, c2 each ± {fit_kw['map_screen']} around the explored w's), "
            if fit_kw["map_screen"]
            else "from c = 0, "
        )
        + f"Levenberg–Marquardt on the {average} loss of {FIT_NOISE} fixed seeds (≤ "
        f"{fit_kw['steps']} iterations); standard errors of refine(uncertainty={{runs: "
        f"{RUNS}}}) (the sandwich; n_jacobian 4, n_noise 32) and the Cramér–Rao bound from "
        "the same J and sample.",
        f"truth (w0, c1, c2) = {TRUTH}: a = {coef[0]:.3f}.",
    ]
    return common.report(NAME, TITLE, rows, cases, args, notes)


def _bound_rows(res: dict) -> list[dict]:
    if res.get("error"):
        return [common.row("map recovery", "bnmfit", "float32", "bound", res)]
    rows = []
    for c in res["candidates"]:
        coef = c["coefficients"]
        head = (
            f"w0 {c['candidate'][0]}, c1 {coef[1]:+.2f}, c2 {coef[2]:+.2f}: w in "
            f"[{c['w_range'][0]:.3f}, {c['w_range'][1]:.2f}], mean FC {c['mean_fc']:.3f}, "
            f"FC r with sub-01 {c['fc_r_subject']:.2f}"
        )
        if not c["finite"]:
            rows.append(_row("bound", c["wall_s"], head + "; not finite"))
            continue
        figure = (
            f"{head}; bound ({RUNS} runs) {_pct(c[f'bound_{RUNS}'], coef)} (half the "
            f"Jacobian seeds: {_pct(c['bound_half_jacobian'], coef)}); cross-fitted "
            f"{_pct(c['crossfit'], coef)}; fit {_pct(c['fit'], coef)}"
        )
        rows.append(_row("bound", c["wall_s"], figure))
    return rows


def _noise_rows(res: dict) -> list[dict]:
    if res.get("error"):
        return [common.row("map recovery", "bnmfit", "float32", "noise study", res)]
    coef = res["coefficients"]
    figure = "; ".join(
        f"{r['samples']} samples: bound {_pct(r['bound'], coef)}, cross-fitted "
        f"{_pct(r['crossfit'], coef)}"
        for r in res["sizes"]
    )
    n = res["n_jacobian"]
    figure += (
        f"; bound from {max(r['samples'] for r in res['sizes'])} samples with the Jacobian "
        f"of {n // 2} seeds instead of {n}: {_pct(res['bound_half_jacobian'], coef)}; "
        f"unweighted least squares {_pct(res['least_squares'], coef)}"
    )
    return [_row("noise study", res.get("child_wall_s", float("nan")), figure)]


def _recovery_rows(res: dict, coef: list[float]) -> list[dict]:
    if res.get("error"):
        return [common.row("map recovery", "bnmfit", "float32", "recovery", res)]
    (f,) = res["fits"]
    rel = [x / t - 1.0 for x, t in zip(f["fitted"], coef, strict=True)]
    figure = (
        "truth "
        + ", ".join(f"{n} {t:+.3f}" for n, t in zip(COEFFICIENTS, coef, strict=True))
        + "; fitted "
        + ", ".join(
            f"{n} {x:+.3f} ± {s:.3f} ({e:+.1%}; Cramér–Rao ± {w:.3f})"
            for n, x, s, e, w in zip(
                COEFFICIENTS, f["fitted"], f["se"], rel, f["se_bound"], strict=True
            )
        )
        + f"; {f['steps_run']} LM steps; objective {f['objective_end']:.4f} (truth "
        f"{f['objective_truth']:.4f})"
    )
    return [_row(f"recovery ({res['n_tr']} TRs)", f["wall_s"], figure)]


def _calibration_rows(fits: list, s: dict | None, failed: list) -> list[dict]:
    rows = [common.row("map recovery", "bnmfit", "float32", "calibration", c) for c in failed]
    if s is None:
        return rows
    coef = _coefficients(*TRUTH)
    wall = sum(f["wall_s"] for f in fits) / len(fits)
    rows.append(
        _row(
            f"calibration fits ({s['replicates']} replicates)",
            wall,
            f"within {WITHIN:.0%}: {_pct(s['within'])}; RMS relative error "
            f"{_pct(s['rel_error_rms'])}; SD {_pct(s['sd'] or [float('nan')] * 3, coef)}, "
            f"bias {_pct(s['bias'], coef)}; {s['reached_optimum']} of {s['replicates']} "
            "fits end at or below the truth's objective",
        )
    )
    for kind, label in SE_KINDS.items():
        k = s[kind]
        rows.append(
            _row(
                f"calibration: {label}",
                wall,
                f"±2 SE holds the truth in {k['coverage_all']:.0%} ({_pct(k['coverage'])}), "
                f"the fits' mean in {_pct(k['coverage_about_mean'])}; "
                f"RMS z {', '.join(f'{x:.2f}' for x in k['z_rms'])}; mean SE "
                f"{_pct(k['mean_se'], coef)}",
            )
        )
    return rows


def _bias_rows(res: dict) -> list[dict]:
    if res.get("error"):
        return [common.row("map recovery", "bnmfit", "float32", "bias check", res)]
    figure = "the objective at the fits' mean − at the truth: " + "; ".join(
        f"{r['n_fit']} fit seeds, {r['noise_average']} {r['mean']:+.4f} ± {r['se']:.4f} "
        f"({r['below']} of "
        f"{res['draws']} draws below 0)"
        for r in res["rows"]
    )
    return [_row("bias check", res.get("child_wall_s", float("nan")), figure)]


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=None, help="synthetic subjects fitted")
    p.add_argument("--jobs", type=int, default=1, help="child processes at a time")
    p.add_argument(
        "--noise-average",
        choices=NOISE_AVERAGES,
        default=NOISE_AVERAGES[0],
        help="the fits' loss of their noise seeds: debiased (default) or of their mean FC",
    )
    p.add_argument(
        "--fits-only", action="store_true", help="only the recovery, calibration and bias check"
    )
    p.add_argument(
        "--cal-tr", type=int, default=None, help=f"TRs of the calibration (default {CAL_TR})"
    )
    p.add_argument(
        "--fit-steps", type=int, default=None, help=f"LM iterations at most (default {FIT_STEPS})"
    )
    p.add_argument(
        "--map-screen",
        type=float,
        default=None,
        help="the map stage's map_screen spread (default: no screen, only from c = 0)",
    )
    p.add_argument("--map-screen-keep", type=int, default=1, help="screened starts LM runs from")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    main()
