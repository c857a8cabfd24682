"""How good a fit is, on noise the fit never used: held-out scoring of fitted parameters.

:func:`score_heldout` simulates the fitted parameters on each held-out noise seed and
scores the simulated FC (and FCD) against the subject's empirical ones with the problem's
loss and the standard metrics (FC Pearson r of the upper triangles, FC RMSE, FCD KS). Every
loss value it returns is that of the configured loss expression: the problem's weighted
terms plus the expression's constant ``offset`` (:attr:`bnmfit.losses.LossSpec.offset`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from bnmfit import losses
from bnmfit.observables import upper
from bnmfit.params import current_value

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.fit import FitResult
    from bnmfit.problem import Problem

__all__ = ["METRICS", "VALIDATION_METRICS", "Heldout", "fit_flags", "score_heldout"]

#: the metrics of a held-out score, in the order reports show them: against the fit's
#: target on held-out noise, then against the validation data (a second run or a held-out
#: part of the run) on the same simulations
METRICS: tuple[str, ...] = ("fc_r", "fc_rmse", "fcd_ks", "loss")
VALIDATION_METRICS: tuple[str, ...] = tuple(f"validation_{k}" for k in METRICS)


def _run(problem: Problem, params, key):
    """Metrics and simulated observables of one seed; jitted with the problem as an argument
    (a pytree), so it compiles once per settings and shapes, not per subject."""
    emp = problem.empirical
    bold = problem.simulate(params, key).bold
    obs = problem.observation.observe(bold)
    out = {
        "fc_r": losses.pearson(upper(obs.fc), upper(emp.fc)),
        "fc_rmse": losses.fc_rmse(obs.fc, emp.fc),
        "loss": problem.loss_of(obs),
        "fc": obs.fc,
        "bold_raw": bold,
        "bold": problem.observation.preprocess(bold),
    }
    if obs.fcd is not None and emp.fcd is not None:
        out["fcd_ks"] = losses.fcd_ks(obs.fcd, emp.fcd, None)
        out["fcd"] = obs.fcd
    val = problem.validation
    if val is not None:  # the same simulation against the data the fit never saw
        out["validation_fc_r"] = losses.pearson(upper(obs.fc), upper(val.fc))
        out["validation_fc_rmse"] = losses.fc_rmse(obs.fc, val.fc)
        if obs.fcd is not None and val.fcd is not None:
            out["validation_fcd_ks"] = losses.fcd_ks(obs.fcd, val.fcd, None)
        vproblem = problem.validation_problem()
        if vproblem is not None:
            out["validation_loss"] = vproblem.loss_of(obs)
    return out


_run_jit = jax.jit(_run)


@dataclasses.dataclass(frozen=True)
class Heldout:
    """A fit scored on held-out noise seeds.

    Attributes:
        seeds: the held-out seeds.
        metrics: the fit's ``fc_r``, ``fc_rmse``, ``loss`` (and ``fcd_ks`` with an FCD),
            each the mean over the seeds, NaN when any seed's simulation is degenerate;
            with validation data the same against them as ``validation_<metric>`` (the
            loss only where the validation data have what the loss needs).
        stages: per refinement stage, its result's metrics (those of ``metrics``, on the
            same seeds), its start's as ``start_<metric>``, whether it was rejected
            (``kept_start``) and on what (``judged_on``); the last stage's result is the fit,
            so its metrics are ``metrics``.
        fc, fcd, bold, bold_raw: the simulated observables on the first seed (``fcd``
            None without one).
    """

    seeds: tuple[int, ...]
    metrics: dict[str, float]
    stages: dict[str, dict[str, float]]
    fc: np.ndarray
    fcd: np.ndarray | None
    bold: np.ndarray
    bold_raw: np.ndarray

    @property
    def warnings(self) -> list[str]:
        """What the user must know before using this fit."""
        bad = [
            k
            for k in ("fc_r", "fc_rmse", "loss")
            if k in self.metrics and not np.isfinite(self.metrics[k])
        ]
        if not bad:
            return []
        return [
            f"the fitted parameters give non-finite held-out {', '.join(sorted(bad))} (the "
            "simulation diverged or is flat): do not use this fit; narrow the refinement "
            "domains or the exploration ranges"
        ]


def score_heldout(
    problem: Problem,
    params: Mapping[str, Any],
    seeds: Sequence[int],
    *,
    offset: float = 0.0,
    result: FitResult | None = None,
) -> Heldout:
    """Simulate ``params`` on each of ``seeds`` and score it (see :class:`Heldout`).

    ``result``, the :func:`bnmfit.fit.refine` that produced ``params``, adds the per-stage
    scores it recorded on the same seeds; ``offset`` is the loss expression's constant.
    """
    dtype = problem.weights.dtype
    values = {k: jnp.asarray(v, dtype) for k, v in params.items()}
    runs = [
        jax.tree.map(np.asarray, _run_jit(problem, values, jax.random.PRNGKey(int(s))))
        for s in seeds
    ]
    metrics = {}
    for k in METRICS + VALIDATION_METRICS:
        if k in runs[0]:
            vals = np.array([float(r[k]) for r in runs])
            metrics[k] = float(np.mean(vals)) if np.all(np.isfinite(vals)) else float("nan")
    for k in ("loss", "validation_loss"):
        if k in metrics:
            metrics[k] += offset
    nan = float("nan")
    stages = {}
    for rec in result.stages if result is not None else ():
        h = rec.heldout
        scores = {}
        for k in METRICS + VALIDATION_METRICS:
            for key in (k, f"start_{k}"):
                scores[key] = float(h.get(key, nan)) + (offset if k.endswith("loss") else 0.0)
        stages[rec.name] = {
            **scores,
            "kept_start": bool(rec.kept_start),
            "judged_on": str(rec.acceptance.get("judged_on", "")),
        }
    if stages:  # the last stage's result is the final fit: all its metrics are known
        stages[result.stages[-1].name].update(metrics)
    first = runs[0]
    return Heldout(
        tuple(int(s) for s in seeds),
        metrics,
        stages,
        first["fc"],
        first.get("fcd"),
        first["bold"],
        first["bold_raw"],
    )


#: a fitted value this close to a bound (fraction of the domain) counts as "at the bound"
BOUND_MARGIN = 0.01
#: a fit whose free values all moved less than this fraction of their domain "never moved"
MOVED_MARGIN = 1e-3


def _flag(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def fit_flags(
    result: FitResult | None,
    stages: Sequence,
    problem: Problem,
    start: Mapping[str, Any],
    *,
    box_edge: Sequence[str] = (),
    unidentified: Sequence[str] = (),
    labels: Sequence[str] | None = None,
) -> list[dict[str, str]]:
    """What a user must know before trusting a fit, as ``{"code", "message"}`` flags:

    * ``not_moved``: refinement handed on its start (every free value within
      :data:`MOVED_MARGIN` of its domain of where the fit started, or no stage ran);
    * ``at_bound``: a fitted value (or how many regions' values) within
      :data:`BOUND_MARGIN` of its domain's bound — the data may want a value outside it;
    * ``stage_rejected``: a stage ended worse on its judge (validation data, else the fit's
      noise) and handed on its start;
    * ``box_edge``: the best explored point lies on an edge of the explored box
      (``box_edge``: one message per edge, from the exploration);
    * ``not_identified``: a parameter whose standard error is too large for the data to
      determine it (``unidentified``: one message per parameter).

    ``result`` is :func:`bnmfit.fit.refine`'s outcome for ``problem`` and ``stages`` from
    ``start`` (the start the fit descends from; values it lacks are the problem's);
    ``labels`` name regions in messages.
    """
    flags = [_flag("box_edge", m) for m in box_edge]
    if result is None or not result.stages:
        flags.append(_flag("not_moved", "no refinement stage ran: the fit is the explored start"))
        return flags + [_flag("not_identified", m) for m in unidentified]
    last: dict[str, Any] = {}  # each free parameter's domain in the last stage freeing it
    for stage in stages:
        for p in stage.free:
            if p.scope != "edges":
                last[p.name] = (p, stage.name)
    moved = False
    for name, (p, stage_name) in last.items():
        x = np.asarray(result.params[name], np.float64)
        width = p.hi - p.lo if np.isfinite(p.hi - p.lo) else max(1.0, float(np.abs(x).max()))
        x0 = start.get(name)
        x0 = current_value(problem, name) if x0 is None else x0
        x0 = np.broadcast_to(np.asarray(x0, np.float64), x.shape)
        moved |= bool(np.any(np.abs(x - x0) > MOVED_MARGIN * width))
        if not p.bounded:
            continue
        for side, bound in (("lower", p.lo), ("upper", p.hi)):
            at = np.abs(x - bound) <= BOUND_MARGIN * width
            if not at.any():
                continue
            where = f"{name} = {float(x.reshape(-1)[np.argmax(at)]):.4g}"
            if x.ndim:
                regions = np.flatnonzero(at)
                names = ", ".join(
                    labels[i] if labels is not None else str(i) for i in regions[:5]
                ) + (", ..." if regions.size > 5 else "")
                where = f"{name} in {regions.size} of {x.size} regions ({names})"
            flags.append(
                _flag(
                    "at_bound",
                    f"{where} at the {side} bound {bound:g} of stage {stage_name!r}: the data "
                    "may want a value beyond it; widen refinement.stages[].free_parameters"
                    "[].domain if the model allows it",
                )
            )
    for rec in result.stages:
        if rec.kept_start:
            a = rec.acceptance
            flags.append(
                _flag(
                    "stage_rejected",
                    f"stage {rec.name!r} ended worse on the {a.get('judged_on', 'fit noise')} "
                    f"data (loss {a.get('start_loss', float('nan')):.4g} → "
                    f"{a.get('end_loss', float('nan')):.4g}, p = "
                    f"{a.get('p_value', float('nan')):.2g}) and handed on its start",
                )
            )
    if not moved:
        flags.append(
            _flag(
                "not_moved",
                "refinement never moved from its start (every stage handed on its start, or "
                "its steps were too small): the fit is the explored point",
            )
        )
    return flags + [_flag("not_identified", m) for m in unidentified]
