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

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.fit import FitResult
    from bnmfit.problem import Problem

__all__ = ["METRICS", "Heldout", "score_heldout"]

#: the metrics of a held-out score, in the order reports show them
METRICS: tuple[str, ...] = ("fc_r", "fc_rmse", "fcd_ks", "loss")


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
    return out


_run_jit = jax.jit(_run)


@dataclasses.dataclass(frozen=True)
class Heldout:
    """A fit scored on held-out noise seeds.

    Attributes:
        seeds: the held-out seeds.
        metrics: the fit's ``fc_r``, ``fc_rmse``, ``loss`` (and ``fcd_ks`` with an FCD),
            each the mean over the seeds, NaN when any seed's simulation is degenerate.
        stages: per refinement stage, its result's ``fc_r`` and ``loss`` and its start's
            ``start_fc_r`` and ``start_loss``; the last stage's result is the fit, so it
            also carries every metric of ``metrics``.
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
    for k in METRICS:
        if k in runs[0]:
            vals = np.array([float(r[k]) for r in runs])
            metrics[k] = float(np.mean(vals)) if np.all(np.isfinite(vals)) else float("nan")
    if "loss" in metrics:
        metrics["loss"] += offset
    nan = float("nan")
    stages = {}
    for rec in result.stages if result is not None else ():
        h = rec.heldout
        stages[rec.name] = {
            "fc_r": float(h.get("fc_r", nan)),
            "loss": float(h.get("loss", nan)) + offset,
            "start_fc_r": float(h.get("start_fc_r", nan)),
            "start_loss": float(h.get("start_loss", nan)) + offset,
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
