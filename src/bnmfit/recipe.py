"""The recipe: a validated workflow configuration → the library objects of one subject.

Every function takes a configuration already validated (and completed with the schema's
defaults) by :func:`bnmfit.config.validate_config`, and reads its keys directly:

* :func:`build_problem` / :func:`problem_from_files` — one subject's
  :class:`~bnmfit.problem.Problem` (model, connectome, simulation, observation, empirical
  observables, loss), from arrays or from the subject's connectome and empirical-FC files;
  :func:`build_model`, :func:`build_spec`, :func:`build_observation` and
  :func:`build_connectome` are its parts.
* :func:`build_space` and :func:`noise_seeds` — the exploration
  :class:`~bnmfit.explore.Space` and its noise seeds.
* :func:`build_stages` — the refinement :class:`~bnmfit.fit.Stage` list.

The loss of a configuration is :func:`bnmfit.losses.loss_spec`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from bnmfit.config import bounds, stage_steps
from bnmfit.errors import ConfigError, DataError

__all__ = [
    "build_connectome",
    "build_model",
    "build_observation",
    "build_problem",
    "build_space",
    "build_spec",
    "build_stages",
    "choose_dt",
    "fit_subject",
    "length_warnings",
    "noise_seeds",
    "problem_from_files",
    "simulated_tr_count",
    "simulation_dt",
    "subject_warnings",
    "transient_tr_count",
    "uncertainty_settings",
]


def noise_seeds(config: Mapping[str, Any]) -> list[int]:
    """The exploration noise seeds: noise.seed, noise.seed + 1, ..."""
    base = int(config["noise"]["seed"])
    return [base + r for r in range(int(config["exploration"]["seeds"]))]


def build_connectome(config: Mapping[str, Any], weights, lengths, labels):
    """A normalised :class:`~bnmfit.connectome.Connectome` from raw matrices."""
    from bnmfit.connectome import Connectome

    c = config["connectome"]
    return Connectome.from_arrays(
        weights,
        lengths,
        labels,
        normalise=c["normalise"],
        symmetrise=c["symmetrise"],
        isolated=c["isolated"],
    )


def build_observation(config: Mapping[str, Any], tr: float):
    """How simulated BOLD (TR ``tr`` s) becomes FC/FCD, as the empirical BOLD did."""
    from bnmfit.problem import Observation

    b, o = config["bold"], config["observation"]
    return Observation(
        tr=float(tr),
        discard=0,
        detrend=bool(b["detrend"]),
        bandpass=tuple(b["bandpass"]) if b["bandpass"] is not None else None,
        zscore=True,
        fcd_window=int(o["fcd_window"]),
        fcd_step=int(o["fcd_step"]),
    )


def choose_dt(tr_ms: float, max_dt: float, *, model: str = "the model") -> float:
    """The largest integration step (ms) not above ``max_dt`` that divides the TR ``tr_ms``
    exactly, in whole µs (TR / k for the smallest such whole k): 7.2 ms for 720 ms under a
    cap of 7.2 ms, 10 ms for 720, 1000 or 2000 ms under 10 ms.

    Raises:
        ConfigError: no step between ``max_dt / 4`` and ``max_dt`` divides the TR (a TR
            that is no whole number of µs, or one with no divisor in that range).
    """
    tr_us = round(float(tr_ms) * 1000.0)
    cap_us = float(max_dt) * 1000.0
    if tr_us > 0 and abs(float(tr_ms) * 1000.0 - tr_us) < 1e-3:
        k_min = max(1, math.ceil(tr_us / cap_us - 1e-9))
        for k in range(k_min, math.floor(4 * tr_us / cap_us) + 1):
            if tr_us % k == 0:
                return (tr_us // k) / 1000.0
    raise ConfigError(
        f"no integration step between {max_dt / 4:g} and {max_dt:g} ms (the largest stable "
        f"step of {model}, or simulation.dt_max) divides the TR ({tr_ms:.10g} ms) exactly; set "
        "simulation.dt to a step that divides the TR, or observation.tr to a simulated TR"
    )


def simulation_dt(config: Mapping[str, Any], tr: float) -> float:
    """``simulation.dt``, or (null) the step :func:`choose_dt` picks for a TR of ``tr`` s
    under ``simulation.dt_max`` or the model's max_dt."""
    from bnmfit.models import MODELS

    s = config["simulation"]
    if s["dt"] is not None:
        return float(s["dt"])
    name = config["model"]["name"]
    cap = s["dt_max"] if s["dt_max"] is not None else MODELS[name].max_dt
    return choose_dt(float(tr) * 1000.0, float(cap), model=name)


def simulated_tr_count(config: Mapping[str, Any], tr: float, n_tr: int | None) -> int:
    """The simulated BOLD's length in TRs of ``tr`` s: ``simulation.n_tr``, or
    ``simulation.duration`` in whole TRs, or (``all``) ``n_tr``, the empirical length."""
    s = config["simulation"]
    tr_ms = float(tr) * 1000.0
    if isinstance(s["n_tr"], int):
        return int(s["n_tr"])
    if s["duration"] is not None:
        n = int(s["duration"] // tr_ms)
        if n < 1:
            raise ConfigError(
                f"simulation.duration = {s['duration']:g} ms is shorter than one TR ({tr_ms:g} ms)"
            )
        return n
    if n_tr is None:
        raise ConfigError(
            "the subject has no BOLD time series (only an FC), so simulation.n_tr: all has no "
            "length: set simulation.n_tr (TRs), or set simulation.duration (ms)"
        )
    return int(n_tr)


def transient_tr_count(config: Mapping[str, Any], tr: float) -> int:
    """TRs simulated before the BOLD is kept: ``simulation.transient_tr``, or
    ``simulation.transient`` (ms) in whole TRs of ``tr`` s."""
    s = config["simulation"]
    if s["transient_tr"] is not None:
        return int(s["transient_tr"])
    return int((s["transient"] or 0.0) // (float(tr) * 1000.0))


def length_warnings(spec, tr: float | None, n_tr: int | None) -> list[str]:
    """A warning when the simulated BOLD (``spec``) is shorter than the empirical one
    (``n_tr`` TRs of ``tr`` s after discard; nothing when only an FC was given)."""
    if not tr or n_tr is None:
        return []
    sim_s, emp_s = spec.n_tr * spec.tr / 1000.0, float(n_tr) * float(tr)
    if sim_s >= emp_s * (1 - 1e-9):
        return []
    return [
        f"the simulated BOLD ({spec.n_tr} TRs, {sim_s:g} s) is shorter than the empirical one "
        f"({n_tr} TRs, {emp_s:g} s): the fitted FC comes from {sim_s / emp_s:.0%} of the "
        "recording's length; simulation.n_tr: all simulates all of it"
    ]


def build_spec(config: Mapping[str, Any], tr: float, n_tr: int | None, max_delay: int = 0):
    """The :class:`~bnmfit.simulate.SimSpec`: ``simulation.n_tr`` TRs of ``tr`` s (``all``:
    ``n_tr``, the empirical length after discard), or ``simulation.duration`` ms, after the
    transient; the step ``simulation.dt`` or, when null, chosen for the TR."""
    from bnmfit.simulate import SimSpec

    s, n = config["simulation"], config["noise"]
    tr_ms = float(tr) * 1000.0
    n_tr = simulated_tr_count(config, tr, n_tr)
    dt = simulation_dt(config, tr)
    ratio = tr_ms / dt
    if abs(ratio - round(ratio)) > 1e-6 * ratio or round(ratio) < 1:
        ok = [d for d in range(1, int(dt) + 1) if abs(tr_ms / d - round(tr_ms / d)) < 1e-9]
        hint = f" (e.g. {', '.join(str(d) for d in ok[-3:])} ms)" if ok else ""
        raise ConfigError(
            f"simulation.dt = {dt:g} ms does not divide the TR ({tr_ms:g} ms): choose a dt "
            f"that divides it{hint}, or null to let the workflow choose one"
        )
    return SimSpec(
        dt=dt,
        tr=tr_ms,
        n_tr=int(n_tr),
        n_transient=transient_tr_count(config, tr),
        integrator=s["integrator"],
        noise=n["kind"],
        noise_tau=float(n["tau"]),
        coupling=config["coupling"]["function"],
        max_delay=int(max_delay),
        checkpoint=bool(s["checkpoint"]),
        heun_coupling=s["heun_coupling"],
        unroll=int(s["unroll"]),
        bold_dt=None if s["bold_dt"] is None else float(s["bold_dt"]),
    )


def build_model(config: Mapping[str, Any], n_regions: int):
    """The configured neural mass; per-region parameter lists must have one value per region."""
    import numpy as np

    from bnmfit.models import get_model

    m = config["model"]
    params = {}
    for k, v in m["parameters"].items():
        if isinstance(v, list):
            if len(v) != n_regions:
                raise ConfigError(
                    f"model.parameters.{k} has {len(v)} values but the connectome has "
                    f"{n_regions} regions; give one value, or one per region"
                )
            v = np.asarray(v, dtype=float)
        params[k] = v
    return get_model(m["name"], **params)


def build_problem(
    config: Mapping[str, Any],
    *,
    weights,
    lengths,
    fc,
    fcd=None,
    tr: float,
    n_tr: int | None,
    validation=None,
):
    """One subject's :class:`~bnmfit.problem.Problem` from its (normalised) connectome and
    empirical observables.

    Args:
        weights, lengths: (N, N) from ``sub-X_connectome.h5``.
        fc, fcd: the empirical FC (and FCD) from ``sub-X_desc-empirical_fc.h5``.
        validation: its :class:`~bnmfit.results.ValidationData` (fc, fcd), or None.
        tr: the subject's TR in s (``observation.tr`` overrides it for the simulation).
        n_tr: the empirical TRs after discard (the simulated length when
            ``simulation.n_tr`` is ``all``); None when only an FC was given.
    """
    import jax.numpy as jnp
    import numpy as np

    from bnmfit import losses
    from bnmfit.connectome import delay_steps
    from bnmfit.problem import Problem

    dtype = jnp.float64 if config["simulation"]["precision"] == "float64" else jnp.float32
    weights = np.asarray(weights, dtype=np.float64)
    n = weights.shape[0]
    obs_tr = config["observation"]["tr"] or tr
    if obs_tr is None:
        raise ConfigError("no TR for the simulated BOLD: set observation.tr (s)")
    sim_tr = float(obs_tr)
    speed = config["coupling"]["speed"]
    delays, max_delay = None, 0
    if speed is not None and lengths is not None and np.any(np.asarray(lengths) > 0):
        steps = delay_steps(
            np.asarray(lengths, dtype=np.float64) / float(speed), simulation_dt(config, sim_tr)
        )
        max_delay = int(steps.max())
        if max_delay > 0:
            delays = jnp.asarray(steps)
    sim = config["simulation"]
    if (
        config["observation"]["tr"]
        and tr
        and n_tr is not None
        and not isinstance(sim["n_tr"], int)
        and sim["duration"] is None
    ):
        n_tr = int(n_tr * float(tr) // sim_tr)  # the same duration at another TR
    spec = build_spec(config, sim_tr, n_tr, max_delay)
    observation = build_observation(config, sim_tr)
    if observation.fcd_window:
        from bnmfit.observables import n_windows

        if n_windows(spec.n_tr, observation.fcd_window, observation.fcd_step) < 2:
            raise ConfigError(
                f"the simulation returns {spec.n_tr} TRs, too few for two FCD windows of "
                f"{observation.fcd_window} TRs (step {observation.fcd_step}); lengthen "
                "simulation.n_tr (the BOLD kept after the transient) or shorten "
                "observation.fcd_window"
            )
    spec_loss = losses.loss_spec(config)
    if fcd is None and any(t == "fcd_ks" for t, _ in spec_loss.terms):
        raise DataError(
            "the loss uses fcd_ks but the subject has no empirical FCD (only an FC was given, "
            "or observation.fcd_window is 0); drop the fcd_ks term for this cohort"
        )
    empirical = losses.Observed(
        jnp.asarray(fc, dtype),
        jnp.asarray(fcd, dtype) if (fcd is not None and observation.fcd_window) else None,
    )
    if empirical.fcd is None and observation.fcd_window:
        observation = dataclasses.replace(observation, fcd_window=0)
    if validation is not None:
        vfcd = validation.fcd if observation.fcd_window else None
        validation = losses.Observed(
            jnp.asarray(validation.fc, dtype), None if vfcd is None else jnp.asarray(vfcd, dtype)
        )
    return Problem(
        model=build_model(config, n),
        weights=jnp.asarray(weights, dtype),
        spec=spec,
        observation=observation,
        empirical=empirical,
        loss_weights=spec_loss.terms,
        G=float(config["coupling"]["G"]),
        sigma=float(config["noise"]["sigma"]),
        delays=delays,
        ks_smooth=config["loss"]["ks_smooth"],
        validation=validation,
    )


def problem_from_files(config: Mapping[str, Any], connectome_h5, empirical_h5):
    """:func:`build_problem` from ``sub-X_connectome.h5`` and ``sub-X_desc-empirical_fc.h5``."""
    from bnmfit.results import ConnectomeFile, EmpiricalFile

    conn = ConnectomeFile.read(connectome_h5)
    emp = EmpiricalFile.read(empirical_h5)
    return build_problem(
        config,
        weights=conn.weights,
        lengths=conn.lengths,
        fc=emp.fc,
        fcd=emp.fcd,
        tr=emp.tr,
        n_tr=emp.n_tr,
        validation=emp.validation,
    )


def subject_warnings(problem, empirical_h5) -> list[str]:
    """:func:`length_warnings` of a problem built from ``sub-X_desc-empirical_fc.h5``."""
    from bnmfit.results import EmpiricalFile

    emp = EmpiricalFile.read(empirical_h5)
    return length_warnings(problem.spec, emp.tr, emp.n_tr)


def build_space(config: Mapping[str, Any]):
    """The exploration :class:`~bnmfit.explore.Space` (cmaes/nsga2: with its
    :class:`~bnmfit.explore.Strategy` from ``exploration.evolution``)."""
    from bnmfit import explore

    ex = config["exploration"]
    axes = []
    for ax in ex["parameters"]:
        lo, hi = bounds(ax, "exploration axis")
        axes.append(explore.Axis(ax["name"], lo, hi, n=int(ax["n"]), scale=ax["scale"]))
    strategy = None
    if ex["sampler"] in explore.EVOLUTIONARY:
        strategy = explore.Strategy(**(ex.get("evolution") or {}))
    return explore.Space(
        tuple(axes),
        sampler=ex["sampler"],
        n_samples=int(ex["n_samples"]),
        seed=int(config["noise"]["seed"]),
        strategy=strategy,
    )


def build_stages(config: Mapping[str, Any]) -> list:
    """The refinement :class:`~bnmfit.fit.Stage` list, in order."""
    from bnmfit import fit
    from bnmfit.params import FreeParameter

    stages = []
    for i, st in enumerate(config["refinement"]["stages"]):
        free = []
        for fp in st["free_parameters"]:
            lo, hi = bounds(fp, f"refinement.stages[{i}]")
            free.append(
                FreeParameter(
                    fp["name"],
                    lo,
                    hi,
                    scope=fp["scope"],
                    transform=fp["transform"],
                    init=fp["init"],
                    symmetric=bool(fp["symmetric"]),
                    maps=tuple(fp.get("maps") or ()),
                    groups=fp.get("groups"),
                )
            )
        stages.append(
            fit.Stage(
                name=st["name"],
                free=tuple(free),
                optimizer=st["optimizer"],
                learning_rate=float(st["learning_rate"]),
                steps=stage_steps(st, f"refinement.stages[{i}]"),
                n_noise=int(st["n_noise"]),
                fresh_noise=bool(st["fresh_noise"]),
                clip_norm=st["clip_norm"],
                schedule=st["schedule"],
                patience=int(st["patience"]),
                min_delta=float(st["min_delta"]),
                l2_regional=float(st["l2_regional"]),
                noise_average=st["noise_average"],
                accept_level=float(config["validation"]["level"]),
                map_screen=st["map_screen"],
                map_screen_keep=int(st["map_screen_keep"]),
            )
        )
    return stages


def uncertainty_settings(config: Mapping[str, Any], problem, empirical) -> dict | None:
    """The keyword arguments of :func:`bnmfit.uncertainty.standard_errors` for a subject
    (``refinement.uncertainty``), None when disabled. ``runs``, the simulated BOLD lengths
    that the empirical FC averages, is the training recording's length over the simulated
    one; for an FC file of unknown length it is 1 (said in the fit's warnings)."""
    u = config["refinement"]["uncertainty"]
    if not u["enabled"]:
        return None
    runs = 1.0
    if empirical.n_tr and empirical.tr:
        runs = empirical.n_tr * empirical.tr * 1000.0 / (problem.spec.n_tr * problem.spec.tr)
    return {
        "runs": float(runs),
        "n_jacobian": int(u["n_jacobian"]),
        "n_noise": int(u["n_noise"]),
        "fraction": float(u["fraction"]),
        "labels": list(empirical.labels),
    }


def _unidentified(result) -> list[str]:
    """One message per stage with numbers that its data do not identify."""
    import numpy as np

    out = []
    for rec in result.stages if result is not None else ():
        u = rec.uncertainty
        if u is None or u.identified.all():
            continue
        bad = [i for i in range(len(u.labels)) if not u.identified[i]]
        shown = ", ".join(
            f"{u.labels[i]} (SE {u.se[i]:.3g} = {u.relative_se[i]:.0%} of its domain)"
            if np.isfinite(u.se[i])
            else f"{u.labels[i]} (no information: SE unbounded)"
            for i in bad[:4]
        ) + (", ..." if len(bad) > 4 else "")
        out.append(
            f"stage {rec.name!r}: {len(bad)} of {len(u.labels)} fitted numbers not identified "
            f"by these data (standard error above {u.fraction:.0%} of the domain): {shown}; "
            "fit fewer numbers (scope map or group instead of regional) or more data"
        )
    return out


def fit_subject(
    config: Mapping[str, Any],
    subject: str,
    connectome_h5,
    empirical_h5,
    explore_h5,
    *,
    maps_tsv=None,
    checkpoint_dir=None,
    progress=None,
):
    """Refine one subject from its explored landscape and judge the fit: the refinement
    stages (:func:`bnmfit.fit.refine`, with standard errors per stage), held-out-noise and
    validation scores (:func:`bnmfit.scoring.score_heldout`) and the fit's flags
    (:func:`bnmfit.scoring.fit_flags`).

    Returns:
        (:class:`~bnmfit.results.FitFile`, :class:`~bnmfit.results.FittedParams`), ready to
        be written together.
    """
    from bnmfit import fit, results, scoring
    from bnmfit.losses import loss_spec
    from bnmfit.maps import RegionalMaps

    problem = problem_from_files(config, connectome_h5, empirical_h5)
    emp = results.EmpiricalFile.read(empirical_h5)
    landscape = results.Landscape.read(explore_h5)
    starts = landscape.start_points()
    stages, spec, ref = build_stages(config), loss_spec(config), config["refinement"]
    heldout_seeds, seed = [int(s) for s in ref["heldout_seeds"]], int(config["noise"]["seed"])
    unc = uncertainty_settings(config, problem, emp)
    warnings = list(length_warnings(problem.spec, emp.tr, emp.n_tr))
    if unc is not None and not (emp.n_tr and emp.tr):
        warnings.append(
            "the empirical FC's recording length is unknown (an FC file): its standard errors "
            "assume it is as long as the simulated BOLD"
        )
    if problem.validation is not None and problem.validation_problem() is None:
        warnings.append(
            "the validation data have no FCD (an FC file) but the loss uses fcd_ks: stages "
            "are judged on the fit's own noise, the fit is scored on validation FC only"
        )
    result = None
    if stages:
        result = fit.refine(
            problem,
            stages,
            starts,
            seed=seed,
            heldout_seeds=tuple(heldout_seeds),
            checkpoint_dir=checkpoint_dir,
            checkpoint_every=int(ref["checkpoint_every"]),
            progress=progress,
            regions=RegionalMaps.read(maps_tsv) if maps_tsv else None,
            uncertainty=unc,
        )
    params = dict(result.params) if result is not None else dict(starts[0])
    heldout = scoring.score_heldout(
        problem, params, heldout_seeds, offset=spec.offset, result=result
    )
    edge = landscape.edge_warning()
    flags = scoring.fit_flags(
        result,
        stages,
        problem,
        starts[result.best_start if result is not None else 0],
        box_edge=[edge] if edge else [],
        unidentified=_unidentified(result),
        labels=emp.labels,
    )
    inputs = [connectome_h5, empirical_h5, explore_h5] + ([maps_tsv] if maps_tsv else [])
    seeds = {"fit": seed, "heldout": heldout_seeds, "explore": landscape.seeds}
    prov = results.provenance(config, inputs, seeds)
    fit_file = results.FitFile.of(
        result,
        heldout,
        subject=subject,
        stages=stages,
        landscape=landscape,
        spec=spec,
        provenance=prov,
        flags=flags,
    )
    fixed = {"G": problem.G, "sigma": problem.sigma, **(config["model"]["parameters"] or {})}
    fitted = results.FittedParams.of(
        fit_file,
        heldout,
        params=params,
        model=config["model"]["name"],
        starts=starts,
        fixed=fixed,
        warnings=warnings + heldout.warnings,
    )
    return fit_file, fitted
