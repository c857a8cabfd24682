"""Refinement: gradient fitting of one subject's model, in stages, from several starts.

:func:`refine` runs a sequence of :class:`Stage` s (e.g. global (G, w), then w per region,
then optionally the SC edges), each warm-started from the best result of the previous one.
The first stage refines every start together (``jax.vmap`` over starts: multi-start) and
keeps the best; later stages start from that best.

Within a stage:

* Parameters are bounded by transforms (:mod:`bnmfit.params`): the optimiser works on
  unconstrained values, and parameters never leave their domain.
* The objective at each step is the problem's loss averaged over a mini-batch of
  ``n_noise`` noise realisations, fresh ones every step (``fresh_noise``) or the same ones
  throughout, plus an optional L2 penalty on regional deviations from the start value.
* optax optimisers (``adam``, ``adamw``, ``sgd`` with momentum 0.9, ``lbfgs`` with a zoom
  line search) run as a jitted ``lax.scan`` over segments of ``checkpoint_every`` steps,
  with gradient clipping and an optional learning-rate schedule. SciPy's ``minimize`` runs
  ``scipy-lbfgsb`` (bounds, gradient from JAX) and the gradient-free ``nelder-mead`` and
  ``powell`` on a fixed set of noise realisations (a deterministic objective).
* The jitted functions take the problem and the bound free parameters as arguments (pytrees,
  see :mod:`bnmfit.problem`), not as constants: they compile once per settings and shapes
  and serve every subject with the same number of regions (SC stages: and of edges), and,
  with JAX's persistent compilation cache, later processes too.
* NaN guard: a step whose loss, gradient or new parameters are not finite is rejected (the
  parameters and optimiser state stay), that start's learning rate is halved, and the step
  is marked in the history (``rejected``).
* Early stopping: a start stops when an exponential moving average of its loss has not
  improved by ``min_delta`` for ``patience`` steps; the stage ends when every start stopped.
* Which start is best is decided by its loss in the fit: the smoothed (EMA) loss of its
  last steps, i.e. many fitting noise realisations (SciPy: its final objective); only if no
  start has one, on selection seeds derived from ``seed`` (never the held-out ones). Fit
  quality is reported on ``heldout_seeds``, which nothing in the fit uses: not the steps,
  not early stopping, not the choice of the best start.
* A stage never hands on a clearly worse result than it started from: the best start's
  data loss as the stage sees it (``n_noise`` realisations, averaged by ``noise_average``)
  is evaluated at its start and at its end on the same ``SELECTION_DRAWS`` draws of
  selection seeds — against the problem's validation data (a second run or a held-out part
  of the run, which nothing else in the fit uses) when it has them, else against its
  target — and if the end is worse by more than the noise explains (one-sided paired
  t-test at the stage's ``accept_level``; or it diverges where the start does not), the
  stage returns its start values (``kept_start``, the stage is rejected). A difference
  within the noise keeps the fitted values.
* With ``checkpoint_dir``, the parameters, optimiser state and history are written
  atomically every ``checkpoint_every`` steps and after every stage; a re-run with the same
  arguments resumes from the last checkpoint and gives the same result as an uninterrupted
  run (the noise of step t is a function of ``seed``, the stage and t only).

What FC can and cannot identify (measured on synthetic subjects, tests/test_fit.py): in the
noise-driven regime of the reduced Wong-Wang model, global G and homogeneous w act mostly
through one combination (the distance to the network's instability), so FC fixes a ridge
in (G, w) along which the FC level and pattern are equal within noise: a joint fit lands on
that ridge, not necessarily at the true pair; with w known, G is recovered within a few per
cent. A loss of one noisy simulated FC against the empirical FC (``1 − r`` in particular)
is biased towards parameters whose simulated FC is less noisy, i.e. closer to criticality;
``noise_average='fc'`` averages the FC of the n_noise simulations before the loss and
reduces that bias by the factor n_noise. A regional w pattern (G known) is recovered as well
as the noise left in the objective allows: on an 8-region synthetic subject, r = 0.87–0.94
with the truth for n_noise 8 and 80 steps (fit seeds 0–2), 0.74–0.75 for n_noise 4 and 40
steps.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optimistix as optx
import scipy.optimize
import scipy.stats
from jax.flatten_util import ravel_pytree

from bnmfit.errors import ConfigError, unknown_choice
from bnmfit.losses import (
    FC_TERMS,
    LOSSES,
    Observed,
    debiased_fc_terms,
    fc_residual_blocks,
    fc_rmse,
    fcd_ks,
    pearson,
)
from bnmfit.observables import upper
from bnmfit.params import FreeParameter, ParameterSet, current_value
from bnmfit.results import Checkpoint
from bnmfit.uncertainty import mean_fc, per_key, sample_fc

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.maps import RegionalMaps
    from bnmfit.problem import Problem
    from bnmfit.uncertainty import Uncertainty

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "FitResult",
    "Stage",
    "StageRecord",
    "make_optimizer",
    "refine",
]

OPTIMIZERS: tuple[str, ...] = (
    "adam",
    "adamw",
    "sgd",
    "lbfgs",
    "scipy-lbfgsb",
    "nelder-mead",
    "powell",
    "gauss-newton",
    "levenberg-marquardt",
)
OPTAX_OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd", "lbfgs")
SCIPY_METHODS = {"scipy-lbfgsb": "L-BFGS-B", "nelder-mead": "Nelder-Mead", "powell": "Powell"}
#: least-squares optimisers (optimistix) on the residuals of the simulated FC (:func:`_residuals`)
LEAST_SQUARES = {"gauss-newton": optx.GaussNewton, "levenberg-marquardt": optx.LevenbergMarquardt}
#: optimistix's termination: every change of the unconstrained values and of the residuals
#: in one step below LSQ_ATOL + LSQ_RTOL · |value| (max norm; 1e-3 in sigmoid units moves a
#: value by at most 1/4000 of its range)
LSQ_RTOL = 1e-3
LSQ_ATOL = 1e-3
#: a least-squares start also stops after this many proposals refused in a row (each one
#: shrinks LM's step 4-fold: the loss cannot be lowered within the objective's precision)
LSQ_REFUSALS = 4
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "exponential", "warmup_cosine")
NOISE_AVERAGES: tuple[str, ...] = ("loss", "fc", "fc_debiased")
#: noise averages that take the loss of the n_noise simulations' FC together (no FCD)
FC_AVERAGES: tuple[str, ...] = ("fc", "fc_debiased")

#: smoothing of the loss for early stopping (weight of the newest loss)
EMA_WEIGHT = 0.2
#: draws of the stage's objective (each of n_noise selection seeds) on which a stage's end
#: is compared with its start
SELECTION_DRAWS = 8
#: significance of "the end is worse than the start" that makes a stage keep its start
GUARD_LEVEL = 0.05
#: what SciPy's optimisers see for a diverging simulation
SCIPY_PENALTY = 1e6
#: the most map coefficients a stage screens starts for (3^k candidates: 243)
MAX_SCREENED = 5
#: candidates evaluated together when screening (a fixed batch: one compilation)
SCREEN_BATCH = 9
CHECKPOINT_NAME = "refine-checkpoint.pkl"
CHECKPOINT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Stage:
    """One refinement stage.

    Attributes:
        name: the stage's name (``global``, ``regional``, ``sc``, ...).
        free: the free parameters (see :class:`bnmfit.params.FreeParameter`).
        optimizer: one of :data:`OPTIMIZERS`.
        learning_rate: the optax learning rate (in unconstrained units).
        steps: optimiser steps (SciPy: iterations).
        n_noise: noise realisations averaged in the loss of each step.
        fresh_noise: new realisations every step (False: the same ones throughout;
            SciPy optimisers always use fixed ones).
        clip_norm: clip the gradient to this global norm (None: no clipping).
        schedule: learning-rate schedule, one of :data:`SCHEDULES` (None: constant).
        patience, min_delta: early stopping (patience 0: never stop early).
        l2_regional: weight of the mean squared regional deviation from the start value,
            in units of each parameter's range (hi - lo).
        noise_average: ``loss`` (the mean of the n_noise losses) or ``fc`` (the loss of the
            mean FC of the n_noise simulations). A loss of one noisy simulated FC against the
            empirical FC is biased towards parameters whose FC is less noisy (stronger
            correlations, closer to criticality); averaging the FCs first divides that bias
            by n_noise. ``fc_debiased``: the loss of the expected FC estimated from the
            n_noise ≥ 2 FCs with their noise's contribution subtracted
            (:func:`bnmfit.losses.debiased_fc_terms`), which removes that bias instead of
            dividing it. Not with FCD losses (FCDs do not average). ``loss`` is what the
            held-out and validation scores measure (one simulation's FC against the data,
            its bias included); least-squares optimisers fit each of them (see
            :func:`_residuals`).
        accept_level: the stage hands on its result unless it is worse than its start at
            this significance (see :func:`_judge`; config ``validation.level``).
        map_screen: for stages with parameters of scope map: before the optimiser runs,
            every map coefficient (intercepts included) is set to its start value − s, + 0
            and + s (3^k candidates for k coefficients, the stage's other numbers at their
            start values), each candidate is scored by the stage's data loss on its fixed
            noise seeds, and the optimiser runs from the start it was handed and from the
            best ``map_screen_keep`` other candidates (:func:`_screen`; in turn for least
            squares, together for optax) and keeps the one that ends lowest. A descent from
            the previous stage's homogeneous result can stop in a minimum where a map's
            coefficient stays near 0; the screen also starts it in the basins the data
            favour, and never ends higher than the descent from the start alone would. The
            stage is still judged against, and falls back to, the start it was handed.
            None: no screen.
        map_screen_keep: how many screened candidates, besides the start it was handed,
            the optimiser runs from.
    """

    name: str
    free: tuple[FreeParameter, ...]
    optimizer: str = "adam"
    learning_rate: float = 0.05
    steps: int = 100
    n_noise: int = 1
    fresh_noise: bool = True
    clip_norm: float | None = 1.0
    schedule: str | None = None
    patience: int = 20
    min_delta: float = 1e-4
    l2_regional: float = 0.0
    noise_average: str = "loss"
    accept_level: float = GUARD_LEVEL
    map_screen: float | None = None
    map_screen_keep: int = 1

    def __post_init__(self):
        object.__setattr__(self, "free", tuple(self.free))
        try:
            ParameterSet(self.free)
        except ConfigError as e:
            raise ConfigError(f"stage {self.name!r}: {e}") from None
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"stage {self.name!r}: " + unknown_choice("optimizer", self.optimizer, OPTIMIZERS)
            )
        if self.noise_average not in NOISE_AVERAGES:
            raise ConfigError(
                f"stage {self.name!r}: "
                + unknown_choice("noise_average", self.noise_average, NOISE_AVERAGES)
            )
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ConfigError(
                f"stage {self.name!r}: "
                + unknown_choice("schedule", self.schedule, SCHEDULES)
                + " (or none)"
            )
        for field, value, ok, want in (
            ("steps", self.steps, _is_int(self.steps) and self.steps >= 0, "a whole number ≥ 0"),
            (
                "n_noise",
                self.n_noise,
                _is_int(self.n_noise) and self.n_noise >= 1,
                "a whole number ≥ 1",
            ),
            (
                "patience",
                self.patience,
                _is_int(self.patience) and self.patience >= 0,
                "a whole number ≥ 0",
            ),
            ("learning_rate", self.learning_rate, _positive(self.learning_rate), "> 0"),
            (
                "accept_level",
                self.accept_level,
                _finite(self.accept_level) and 0 < self.accept_level <= 0.5,
                "in (0, 0.5]",
            ),
            ("min_delta", self.min_delta, _finite(self.min_delta) and self.min_delta >= 0, "≥ 0"),
            (
                "l2_regional",
                self.l2_regional,
                _finite(self.l2_regional) and self.l2_regional >= 0,
                "≥ 0",
            ),
            (
                "clip_norm",
                self.clip_norm,
                self.clip_norm is None or _positive(self.clip_norm),
                "> 0 or none",
            ),
        ):
            if not ok:
                raise ConfigError(f"stage {self.name!r}: {field} must be {want}, got {value!r}")
        if self.map_screen is not None:
            k = sum(1 + len(p.maps) for p in self.free if p.scope == "map")
            if not _positive(self.map_screen):
                raise ConfigError(
                    f"stage {self.name!r}: map_screen must be a number > 0 or none, got "
                    f"{self.map_screen!r}"
                )
            if k == 0:
                raise ConfigError(
                    f"stage {self.name!r}: map_screen screens the coefficients of parameters "
                    "of scope map, and this stage has none: remove map_screen"
                )
            if k > MAX_SCREENED:
                raise ConfigError(
                    f"stage {self.name!r}: map_screen scores 3^k starts, and this stage has "
                    f"k = {k} map coefficients, intercepts included (at most "
                    f"{MAX_SCREENED}): use fewer maps or remove map_screen"
                )
        keep_ok = _is_int(self.map_screen_keep) and self.map_screen_keep >= 1
        if not keep_ok or (self.map_screen is None and self.map_screen_keep != 1):
            raise ConfigError(
                f"stage {self.name!r}: map_screen_keep must be a whole number ≥ 1 (and 1 "
                f"without map_screen), got {self.map_screen_keep!r}"
            )
        if self.noise_average == "fc_debiased" and self.n_noise < 2:
            raise ConfigError(
                f"stage {self.name!r}: noise_average fc_debiased estimates the noise from the "
                f"spread of the n_noise simulations: set n_noise ≥ 2, got {self.n_noise}"
            )

    @property
    def parameters(self) -> ParameterSet:
        return ParameterSet(self.free)

    @property
    def uses_optax(self) -> bool:
        return self.optimizer in OPTAX_OPTIMIZERS


def _is_int(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, int | np.integer)


def _finite(x) -> bool:
    return isinstance(x, int | float | np.number) and not isinstance(x, bool) and math.isfinite(x)


def _positive(x) -> bool:
    return _finite(x) and x > 0


def _schedule(stage: Stage):
    lr, n = stage.learning_rate, max(stage.steps, 1)
    if stage.schedule in (None, "constant"):
        return lr
    if stage.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, n, alpha=0.1)
    if stage.schedule == "exponential":
        return optax.exponential_decay(lr, transition_steps=n, decay_rate=0.1)
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=max(1, n // 10), decay_steps=n, end_value=0.1 * lr
    )


def make_optimizer(stage: Stage) -> optax.GradientTransformation:
    """The optax chain of an optax stage: clipping, then the optimiser with its schedule.

    ``lbfgs`` uses its zoom line search instead of a learning rate and no clipping."""
    if stage.optimizer == "lbfgs":
        return optax.lbfgs()
    lr = _schedule(stage)
    base = {
        "adam": lambda: optax.adam(lr),
        "adamw": lambda: optax.adamw(lr, weight_decay=1e-4),
        "sgd": lambda: optax.sgd(lr, momentum=0.9),
    }[stage.optimizer]()
    if stage.clip_norm is None:
        return base
    return optax.chain(optax.clip_by_global_norm(stage.clip_norm), base)


# ---------------------------------------------------------------------------------------------
# results


@dataclasses.dataclass
class StageRecord:
    """What one stage did.

    Attributes:
        name, optimizer: the stage's.
        history: arrays shaped (steps, n_starts): ``loss`` (data loss of the step's noise
            batch), ``objective`` (loss + penalty), ``heldout_loss`` (every
            ``checkpoint_every`` steps, NaN elsewhere), ``grad_norm``, ``rejected`` (bool),
            ``lr_scale`` (the NaN guard's learning-rate factor); ``params``: name →
            (steps, n_starts, ...) for global and regional parameters. NaN after a start
            stopped early.
        best_start: index of the start kept.
        selection_loss: (n_starts,) what decided best_start: each start's smoothed fitting
            loss at the end of the stage (inf for a start whose every step was rejected).
        heldout: for the best start, on the held-out seeds: ``loss``, ``fc_corr``
            (1 − r), ``fc_r``, ``fc_r_std``, per-seed ``loss_per_seed``/``fc_r_per_seed``,
            and the same before the stage as ``start_loss``/``start_fc_r``.
        params: the best start's parameter values after the stage (fixed ones included).
        wall_time: seconds spent in the stage (summed over resumed runs).
        steps_run: steps taken until every start stopped.
        n_rejected: rejected steps over all starts.
        kept_start: the best start ended with a significantly higher loss than it started
            with on the selection seeds — on the validation data where the problem has
            them — so the stage returned its start values instead (stage rejected).
        acceptance: how that was decided: ``judged_on`` (``validation`` or ``fit noise``),
            the mean ``start_loss`` and ``end_loss`` on the selection draws, ``p_value``
            and ``draws`` (see :func:`_judge`).
        u: the best start's unconstrained free values after the stage (what it hands on).
        uncertainty: the standard errors of the stage's fitted numbers
            (:class:`bnmfit.uncertainty.Uncertainty`), None when not asked for.
        screen: the map-start screen of the best start (``Stage.map_screen``): ``spread``,
            ``candidates``, the data loss of the start it was handed (``start_loss``) and
            of the candidate it began from (``loss``), that candidate's ``rank`` by loss
            among all candidates (0: the lowest), whether it was the handed start itself
            (``handed``), and its map coefficients (``begin``: name → [intercept,
            coefficients]); empty when the stage screens none.
    """

    name: str
    optimizer: str
    history: dict[str, Any]
    best_start: int
    selection_loss: np.ndarray
    heldout: dict[str, Any]
    params: dict[str, np.ndarray]
    wall_time: float
    steps_run: int
    n_rejected: int
    kept_start: bool = False
    acceptance: dict[str, Any] = dataclasses.field(default_factory=dict)
    u: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    uncertainty: Uncertainty | None = None
    screen: dict[str, Any] = dataclasses.field(default_factory=dict)

    # flat views of the history and held-out report (for writers)
    @property
    def loss(self) -> np.ndarray:
        return self.history["loss"]

    @property
    def heldout_loss(self) -> np.ndarray:
        return self.history["heldout_loss"]

    @property
    def grad_norm(self) -> np.ndarray:
        return self.history["grad_norm"]

    @property
    def rejected(self) -> np.ndarray:
        return self.history["rejected"]

    @property
    def traj(self) -> dict[str, np.ndarray]:
        """Parameter trajectories, name → (steps, n_starts, ...)."""
        return self.history["params"]

    @property
    def heldout_fc_r(self) -> float:
        return self.heldout["fc_r"]

    @property
    def heldout_loss_final(self) -> float:
        return self.heldout["loss"]


@dataclasses.dataclass
class FitResult:
    """The outcome of :func:`refine`.

    Attributes:
        params: the best parameter values after the last stage (name → array; SC weights
            as the full (N, N) matrix).
        stages: one :class:`StageRecord` per stage.
        seed, heldout_seeds: the fit's seed and the held-out noise seeds.
    """

    params: dict[str, np.ndarray]
    stages: list[StageRecord]
    seed: int
    heldout_seeds: tuple[int, ...]

    @property
    def best_start(self) -> int:
        """Which of the starts given to :func:`refine` the result descends from (the best
        start of the first stage; later stages start from that one)."""
        return self.stages[0].best_start if self.stages else 0

    @property
    def heldout(self) -> dict[str, dict[str, Any]]:
        return {s.name: s.heldout for s in self.stages}

    @property
    def wall_time(self) -> dict[str, float]:
        return {s.name: s.wall_time for s in self.stages}


# ---------------------------------------------------------------------------------------------
# noise keys: a pure function of (seed, purpose, stage, step)

_FIT, _SELECT = 0, 1


def _root_key(seed: int) -> jax.Array:
    return jax.random.PRNGKey(int(seed))


def _step_keys(root: jax.Array, stage: int, t, n: int, fresh: bool) -> jax.Array:
    k = jax.random.fold_in(jax.random.fold_in(root, _FIT), stage)
    if fresh:
        k = jax.random.fold_in(k, t)
    return jax.random.split(k, n)


def _select_keys(root: jax.Array, stage: int, n: int) -> jax.Array:
    k = jax.random.fold_in(jax.random.fold_in(root, _SELECT), stage)
    return jax.random.split(k, n)


def _heldout_keys(seeds: Sequence[int]) -> jax.Array:
    return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


# ---------------------------------------------------------------------------------------------
# compiled pieces: the problem and the bound parameter set are arguments (pytrees), not
# constants, so one compilation serves every subject with the same settings and shapes


def _data_loss(problem: Problem, noise_average: str):
    """(params, keys (n_noise, 2)) → the problem's loss over the noise realisations of
    ``keys``: their mean loss, (``noise_average='fc'``) the loss of their mean FC, or
    (``'fc_debiased'``) the loss of the expected FC estimated from their FCs."""

    def data_loss(params, keys):
        if noise_average == "fc":
            return problem.loss_of(Observed(mean_fc(problem, params, keys)))
        if noise_average == "fc_debiased":
            return problem.debiased_loss_of(sample_fc(problem, params, keys))
        return per_key(lambda k: problem.loss(params, k), keys).mean()

    return data_loss


def _objective(problem: Problem, pset: ParameterSet, noise_average: str = "loss"):
    """(constrained values, fixed, ref, keys, l2) → (objective, data loss) for one start;
    ``ref`` holds each regional parameter's start value (the centre of the L2 penalty).
    Built inside the jitted functions, from their problem and pset arguments."""
    scale = {
        p.name: (p.hi - p.lo) if math.isfinite(p.hi - p.lo) else 1.0
        for p in pset.free
        if p.scope == "regional"
    }

    data_loss = _data_loss(problem, noise_average)

    def fn(values, fixed, ref, keys, l2):
        params = {**fixed, **pset.expand(values)}
        loss = data_loss(params, keys)
        if not scale:
            return loss, loss
        penalty = sum(jnp.mean(((values[n] - ref[n]) / s) ** 2) for n, s in scale.items())
        return loss + l2 * penalty / len(scale), loss

    return fn


def _evaluate_one(problem: Problem, pset: ParameterSet, u, fixed, key) -> dict[str, jax.Array]:
    """The metrics of one start on one noise key: ``loss``, ``fc_r``, ``fc_rmse`` and
    ``fcd_ks`` against the target, and the same against the validation data of the same
    simulation as ``validation_<metric>`` (losses inf and the others NaN when not finite; NaN
    where there is nothing to compare: no FCD, no validation data, or a validation FC file
    when the loss needs an FCD)."""
    params = {**fixed, **pset.constrain(u)}
    observed = problem.observe(params, key)
    nan = jnp.asarray(jnp.nan, problem.weights.dtype)

    def score(target: Observed, loss_problem: Problem | None, prefix: str):
        out = {
            "fc_r": pearson(upper(observed.fc), upper(target.fc)),
            "fc_rmse": fc_rmse(observed.fc, target.fc),
            "fcd_ks": nan,
            "loss": nan,
        }
        ok = jnp.isfinite(out["fc_r"]) & jnp.isfinite(out["fc_rmse"])
        if observed.fcd is not None and target.fcd is not None:
            out["fcd_ks"] = fcd_ks(observed.fcd, target.fcd, None)
            ok = ok & jnp.isfinite(out["fcd_ks"])
        if loss_problem is not None:
            loss = loss_problem.loss_of(observed)
            ok = ok & jnp.isfinite(loss) & jnp.isfinite(out["fc_r"])
            out["loss"] = jnp.where(ok, loss, jnp.inf)
        return {prefix + k: v if k == "loss" else jnp.where(ok, v, jnp.nan) for k, v in out.items()}

    out = score(problem.empirical, problem, "")
    if problem.validation is not None:
        out.update(score(problem.validation, problem.validation_problem(), "validation_"))
    else:
        out.update({f"validation_{k}": nan for k in ("fc_r", "fc_rmse", "fcd_ks", "loss")})
    return out


#: jitted (problem, pset, u (S, ...), fixed (S, ...), keys (K, 2)) → metric name → (S, K)
#: (see :func:`_evaluate_one`)
_evaluate = jax.jit(
    jax.vmap(jax.vmap(_evaluate_one, (None, None, None, None, 0)), (None, None, 0, 0, None))
)


@functools.partial(jax.jit, static_argnames="noise_average")
def _stage_loss(problem: Problem, pset: ParameterSet, u, fixed, keys, noise_average: str):
    """The data loss of every start (u, fixed: (S, ...)) on every draw of keys
    (D, n_noise, 2) as a stage with ``noise_average`` sees it → (S, D), inf where not
    finite."""
    data_loss = _data_loss(problem, noise_average)

    def one(u, fixed, draw):
        loss = data_loss({**fixed, **pset.constrain(u)}, draw)
        return jnp.where(jnp.isfinite(loss), loss, jnp.inf)

    return jax.vmap(jax.vmap(one, (None, None, 0)), (0, 0, None))(u, fixed, keys)


@functools.lru_cache(maxsize=32)
def _segment_fn(stage: Stage, length: int):
    """The jitted segment (problem, pset, u, opt, aux, fixed, ref, root, index, t0, cfg):
    ``length`` steps of every start from step t0, and their history; and the optax chain.

    ``stage`` is reduced to its structural fields (:func:`_structural`), so stages that
    differ only in steps, patience, min_delta or l2_regional share the compilation."""
    tx = make_optimizer(stage)
    lbfgs = stage.optimizer == "lbfgs"

    def one(problem, pset, u, opt, aux, fixed, ref, keys, t, cfg):
        of_values = _objective(problem, pset, stage.noise_average)

        def objective(u):
            return of_values(pset.to_values(u), fixed, ref, keys, cfg["l2"])

        active = (t < cfg["steps"]) & ~aux["done"]
        (obj, loss), g = jax.value_and_grad(objective, has_aux=True)(u)
        gnorm = _norm(g)
        ok = jnp.isfinite(obj) & jnp.isfinite(gnorm)
        g = jax.tree.map(lambda x: jnp.where(ok, x, 0.0), g)
        if lbfgs:
            updates, new_opt = tx.update(
                g,
                opt,
                u,
                value=jnp.where(ok, obj, 0.0),
                grad=g,
                value_fn=lambda p: objective(p)[0],
            )
        else:
            updates, new_opt = tx.update(g, opt, u)
        updates = jax.tree.map(lambda x: x * aux["lr_scale"].astype(x.dtype), updates)
        new_u = optax.apply_updates(u, updates)
        ok = ok & jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(new_u)]))
        accept = active & ok
        rejected = active & ~ok
        keep = lambda a, b: jax.tree.map(lambda x, y: jnp.where(accept, x, y), a, b)  # noqa: E731
        u_out, opt_out = keep(new_u, u), keep(new_opt, opt)
        ema = jnp.where(
            jnp.isfinite(aux["ema"]), (1 - EMA_WEIGHT) * aux["ema"] + EMA_WEIGHT * obj, obj
        )
        ema = jnp.where(accept, ema, aux["ema"])
        improved = accept & (ema < aux["best"] - cfg["min_delta"])
        since = jnp.where(improved, 0, aux["since"] + active.astype(aux["since"].dtype))
        done = aux["done"] | (active & (cfg["patience"] > 0) & (since >= cfg["patience"]))
        new_aux = {
            "lr_scale": jnp.where(rejected, 0.5 * aux["lr_scale"], aux["lr_scale"]),
            "ema": ema,
            "best": jnp.where(improved, ema, aux["best"]),
            "since": since,
            "done": done,
        }
        nan = jnp.nan
        values = pset.to_values(u)
        record = {
            "loss": jnp.where(active, loss, nan),
            "objective": jnp.where(active, obj, nan),
            "grad_norm": jnp.where(active, gnorm, nan),
            "rejected": rejected,
            "lr_scale": jnp.where(active, aux["lr_scale"], nan),
            "params": {
                p.name: jnp.where(active, values[p.name], nan)
                for p in pset.free
                if p.scope != "edges"
            },
        }
        return (u_out, opt_out, new_aux), record

    batched = jax.vmap(one, (None, None, 0, 0, 0, 0, 0, None, None, None))

    def segment(problem, pset, u, opt, aux, fixed, ref, root, index, t0, cfg):
        def step(carry, t):
            keys = _step_keys(root, index, t, stage.n_noise, stage.fresh_noise)
            return batched(problem, pset, *carry, fixed, ref, keys, t, cfg)

        return jax.lax.scan(step, (u, opt, aux), t0 + jnp.arange(length))

    return jax.jit(segment), tx


def _norm(tree) -> jax.Array:
    """Global L2 norm of a pytree."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def _structural(stage: Stage) -> Stage:
    """The stage with only the fields that change the compiled step (its name, patience,
    min_delta, l2_regional and, without a schedule, steps are set to the same values for
    every stage: they are arguments of the compiled segment instead; map_screen and
    map_screen_keep act before it)."""
    return dataclasses.replace(
        stage,
        name="",
        steps=stage.steps if stage.schedule else 0,
        patience=0,
        min_delta=0.0,
        l2_regional=0.0,
        map_screen=None,
        map_screen_keep=1,
    )


def _config(stage: Stage, dtype) -> dict[str, jax.Array]:
    return {
        "steps": jnp.asarray(stage.steps, jnp.int32),
        "patience": jnp.asarray(stage.patience, jnp.int32),
        "min_delta": jnp.asarray(stage.min_delta, dtype),
        "l2": jnp.asarray(stage.l2_regional, dtype),
    }


# ---------------------------------------------------------------------------------------------
# checkpoints


def _fingerprint(problem, stages, starts, seed, heldout_seeds, every, regions=None) -> str:
    h = hashlib.sha256()
    h.update(repr((tuple(stages), seed, tuple(heldout_seeds), every)).encode())
    if regions is not None:  # the maps and groupings of map and group parameters
        h.update(repr((regions.labels, sorted(regions.groupings.items()))).encode())
        for name in sorted(regions.maps):
            h.update(name.encode())
            h.update(np.ascontiguousarray(regions.maps[name], np.float64).tobytes())
    for s in starts:
        for k in sorted(s):
            h.update(k.encode())
            h.update(np.ascontiguousarray(np.asarray(s[k], np.float64)).tobytes())
    h.update(
        repr(
            (
                problem.spec,
                problem.observation,
                problem.loss_weights,
                problem.G,
                problem.sigma,
                problem.ks_smooth,
                type(problem.model).__name__,
            )
        ).encode()
    )
    for leaf in jax.tree.leaves(problem):  # model, SC, delays, targets, validation data
        h.update(np.ascontiguousarray(np.asarray(leaf, np.float64)).tobytes())
    return h.hexdigest()


def _to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x), tree)


# ---------------------------------------------------------------------------------------------
# refine


def refine(
    problem: Problem,
    stages: Sequence[Stage],
    starts: Sequence[Mapping[str, float]],
    *,
    seed: int = 0,
    heldout_seeds: Sequence[int] = (1000, 1001, 1002),
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 10,
    progress: Callable[[str, int, int, float], None] | None = None,
    regions: RegionalMaps | None = None,
    uncertainty: Mapping[str, Any] | None = None,
) -> FitResult:
    """Fit ``problem`` stage by stage from ``starts``.

    Args:
        problem: the subject's fitting problem.
        stages: the stages, run in order; each starts from the previous stage's best.
        starts: start values (name → scalar or array); the first stage refines all of them
            together and keeps the best. Names a stage does not free stay fixed at these
            values (e.g. a start's sigma).
        seed: derives every noise realisation of the fit (steps and best-start selection).
        heldout_seeds: noise seeds for the reported fit quality only.
        checkpoint_dir: where to checkpoint and resume from (None: no checkpoints).
        checkpoint_every: steps per jitted segment; history's held-out loss, checkpoints and
            ``progress`` come once per segment.
        progress: ``progress(stage_name, step, steps, best_loss)`` after every segment.
        regions: the subject's regional maps and groupings (:mod:`bnmfit.maps`), needed by
            free parameters of scope map or group; part of the checkpoint's fingerprint.
        uncertainty: when given, the keyword arguments of
            :func:`bnmfit.uncertainty.standard_errors` (``runs``, ``n_jacobian``,
            ``n_noise``, ``fraction``, ``labels``): every stage's fitted numbers get their
            standard errors (:attr:`StageRecord.uncertainty`); None: none.
    Returns:
        :class:`FitResult`.
    """
    stages = list(stages)
    if not stages:
        raise ConfigError("give at least one refinement stage")
    for s in stages:
        if not isinstance(s, Stage):
            raise ConfigError(f"stages must be Stage objects, got {type(s).__name__}")
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"stage names must be unique, got {', '.join(names)}")
    if not starts:
        raise ConfigError("give at least one start (e.g. the top points of the exploration)")
    heldout_seeds = tuple(int(s) for s in heldout_seeds)
    if not heldout_seeds:
        raise ConfigError("give at least one held-out seed")
    if not _is_int(checkpoint_every) or checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be a whole number ≥ 1, got {checkpoint_every}")
    current = _normalise_starts(problem, starts)
    for s in stages:
        s.parameters.bind(problem, regions=regions)  # names, maps and groupings, up front
        if s.optimizer in LEAST_SQUARES:
            _least_squares_terms(problem, s)
        if s.noise_average in FC_AVERAGES and "fcd_ks" in dict(problem.loss_weights):
            raise ConfigError(
                f"stage {s.name!r}: noise_average {s.noise_average!r} cannot be used with the "
                "fcd_ks loss "
                "(FCDs do not average): use noise_average 'loss'"
            )

    ckpt = Checkpoint(
        checkpoint_dir,
        _fingerprint(problem, stages, current, seed, heldout_seeds, checkpoint_every, regions),
        name=CHECKPOINT_NAME,
        version=CHECKPOINT_VERSION,
        run="refinement",
        other="a different refinement (other data, stages, starts or seed)",
    )
    state = ckpt.load() or {"stage": 0, "records": [], "current": current, "partial": None}
    records: list[StageRecord] = list(state["records"])
    current = state["current"]
    root = _root_key(seed)
    hkeys = _heldout_keys(heldout_seeds)

    for index in range(state["stage"], len(stages)):
        stage = stages[index]
        partial = state["partial"] if index == state["stage"] else None
        runner = (
            _run_optax
            if stage.uses_optax
            else _run_least_squares
            if stage.optimizer in LEAST_SQUARES
            else _run_scipy
        )
        record = runner(
            problem,
            stage,
            index,
            current,
            root,
            hkeys,
            checkpoint_every,
            progress,
            partial,
            lambda partial, index=index, current=current: ckpt.save(
                {"stage": index, "records": records, "current": current, "partial": partial}
            ),
            regions=regions,
        )
        if uncertainty is not None:
            record.uncertainty = _standard_errors(
                problem, stage, index, record, seed, regions, uncertainty
            )
        records.append(record)
        current = [record.params]
        ckpt.save({"stage": index + 1, "records": records, "current": current, "partial": None})
        state["partial"] = None

    return FitResult(
        params={k: np.asarray(v) for k, v in current[0].items()},
        stages=records,
        seed=int(seed),
        heldout_seeds=heldout_seeds,
    )


def _standard_errors(problem, stage, index, record, seed, regions, settings):
    """:func:`bnmfit.uncertainty.standard_errors` at a stage's result (its best start's
    unconstrained values, the other parameters fixed at theirs): the sandwich of a fit with
    the stage's n_noise seeds unless ``settings`` names another ``n_fit``."""
    from bnmfit.uncertainty import standard_errors

    pset = stage.parameters.bind(problem, regions=regions)
    dtype = problem.weights.dtype
    u = {k: jnp.asarray(v, dtype) for k, v in record.u.items()}
    fixed = {k: jnp.asarray(v, dtype) for k, v in record.params.items() if k not in pset.names}
    settings = {"n_fit": stage.n_noise, **settings}
    return standard_errors(problem, pset, u, fixed, seed=seed, stage=index, **settings)


def _normalise_starts(problem: Problem, starts) -> list[dict[str, np.ndarray]]:
    """Every start as name → float64 array, over the same names (missing: the problem's)."""
    starts = [dict(s) for s in starts]
    names = sorted(set().union(*starts))
    problem.check_names(names)
    out = []
    for s in starts:
        d = {}
        for n in names:
            v = s.get(n)
            v = current_value(problem, n) if v is None else v
            a = np.asarray(v, dtype=np.float64)
            if not np.all(np.isfinite(a)):
                raise ConfigError(f"the start value of {n!r} is not finite: {v!r}")
            d[n] = a
        out.append(d)
    return out


def _stack(dicts: Sequence[Mapping[str, np.ndarray]], dtype) -> dict[str, jax.Array]:
    """Stack per-start values along a new first axis (scalars broadcast to the widest)."""
    out = {}
    for n in dicts[0]:
        arrs = [np.asarray(d[n]) for d in dicts]
        shape = np.broadcast_shapes(*(a.shape for a in arrs))
        out[n] = jnp.asarray(np.stack([np.broadcast_to(a, shape) for a in arrs]), dtype)
    return out


class _Prepared(NamedTuple):
    """A stage's bound parameter set, its fixed values, the unconstrained values it was
    handed (``u0``: judged against, and handed on when the stage is rejected), the L2
    penalty's centre, the values its optimiser begins from (``begin``: ``u0`` unless the
    stage screens map starts), what the screen did (``screen``, see :func:`_screen`; empty:
    no screen) and the starts as handed, one per optimiser start (``current``: each handed
    start 1 + ``map_screen_keep`` times when screened). Values are stacked over those starts."""

    pset: ParameterSet
    fixed: dict[str, jax.Array]
    u0: dict[str, jax.Array]
    ref: dict[str, jax.Array]
    begin: dict[str, jax.Array]
    screen: dict[str, Any]
    current: list[dict[str, np.ndarray]]


def _prepare(
    problem: Problem,
    stage: Stage,
    current: Sequence[Mapping[str, np.ndarray]],
    root: jax.Array,
    index: int,
    regions: RegionalMaps | None = None,
) -> _Prepared:
    pset = stage.parameters.bind(problem, regions=regions)
    dtype = problem.weights.dtype
    keep = 1 + stage.map_screen_keep if stage.map_screen is not None else 1
    current = [c for c in current for _ in range(keep)]
    fixed = _stack([{k: v for k, v in c.items() if k not in pset.names} for c in current], dtype)
    starts = [pset.start_values(problem, c) for c in current]
    values0 = _stack(starts, dtype)
    u0 = jax.vmap(pset.from_values)(values0)
    ref = {n: jnp.mean(values0[n], axis=-1) for n in pset.regional_names()}
    begin, screen = _screen(problem, stage, pset, u0, fixed, root, index)
    return _Prepared(pset, fixed, u0, ref, begin, screen, current)


def _screen(problem, stage, pset, u0, fixed, root, index):
    """``stage.map_screen`` (s): for the starts ``u0`` (each handed start repeated
    1 + ``map_screen_keep`` times in a row), the 3^k candidates whose k map coefficients
    (every map parameter's intercept and coefficients) are the start's − s, + 0 or + s,
    scored by the stage's data loss on its fixed noise seeds (the keys its first step
    uses); the first repeat of a start begins at the start itself, the j-th further one at
    the j-th best other candidate → (begin, {``spread``, ``candidates``, ``start_loss``
    (S,), ``loss`` (S,), ``rank`` (S,) each begin's place by loss among all candidates (0:
    the lowest), ``handed`` (S,) whether it is the start itself, ``begin``: name →
    (S, k_name) the coefficients begun from}). No screen: (u0, {})."""
    if stage.map_screen is None:
        return u0, {}
    s, keep = float(stage.map_screen), 1 + stage.map_screen_keep
    maps = [p.name for p in pset.free if p.scope == "map"]
    widths = [u0[n].shape[-1] for n in maps]
    offsets = np.asarray(list(itertools.product((0.0, -s, s), repeat=sum(widths))))
    splits = np.cumsum(widths)[:-1]
    keys = _step_keys(root, index, 0, stage.n_noise, fresh=False)[None]

    def batch(tree):
        return {n: jnp.broadcast_to(v, (SCREEN_BATCH, *v.shape)) for n, v in tree.items()}

    padded = np.concatenate([offsets, np.zeros((-len(offsets) % SCREEN_BATCH, offsets.shape[1]))])
    n_starts = len(jax.tree.leaves(u0)[0])
    begin, start_loss, loss_of, ranks, handed = [], [], [], [], []
    for i in range(0, n_starts, keep):
        u, fx = _take(u0, i), batch(_take(fixed, i))
        losses = []
        for b in range(0, len(padded), SCREEN_BATCH):
            cand = batch(u)
            for n, off in zip(
                maps, np.split(padded[b : b + SCREEN_BATCH], splits, axis=1), strict=True
            ):
                cand[n] = cand[n] + jnp.asarray(off, cand[n].dtype)
            loss = _stage_loss(problem, pset, cand, fx, keys, stage.noise_average)
            losses.append(np.asarray(loss)[:, 0])
        losses = np.concatenate(losses)[: len(offsets)]
        order = np.argsort(losses, kind="stable")
        place = np.empty(len(order), int)
        place[order] = np.arange(len(order))
        for j in [0, *(j for j in order if j != 0)][:keep]:  # offsets[0] is the start
            chosen = dict(u)
            for n, off in zip(maps, np.split(offsets[j], splits), strict=True):
                chosen[n] = u[n] + jnp.asarray(off, u[n].dtype)
            begin.append(chosen)
            start_loss.append(float(losses[0]))
            loss_of.append(float(losses[j]))
            ranks.append(int(place[j]))
            handed.append(j == 0)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *begin)
    return stacked, {
        "spread": s,
        "candidates": len(offsets),
        "start_loss": np.asarray(start_loss),
        "loss": np.asarray(loss_of),
        "rank": np.asarray(ranks),
        "handed": np.asarray(handed),
        "begin": {n: np.asarray(stacked[n], np.float64) for n in maps},
    }


def _finish(
    problem,
    stage,
    pset,
    index,
    current,
    fixed,
    u_final,
    u0,
    root,
    hkeys,
    history,
    wall,
    steps_run,
    fit_loss,
    screen,
) -> StageRecord:
    """Pick the best start by its loss in the fit (``fit_loss``: the smoothed loss of the
    last steps, many noise realisations; where no start has one, its mean loss on selection
    seeds derived from the fit's seed), judge its end against the start it was handed
    (``u0``; :func:`_judge`), report it on the held-out seeds, and keep the best start's
    ``screen`` (:func:`_screen`)."""
    skeys = _select_keys(root, index, SELECTION_DRAWS * stage.n_noise).reshape(
        SELECTION_DRAWS, stage.n_noise, -1
    )

    def stage_loss(target, u, fx):
        return np.asarray(_stage_loss(target, pset, u, fx, skeys, stage.noise_average), np.float64)

    sel = np.asarray(fit_loss, np.float64)
    if not np.isfinite(sel).any():
        sel = stage_loss(problem, u_final, fixed).mean(axis=1)
    best = int(np.argmin(np.where(np.isfinite(sel), sel, np.inf))) if np.isfinite(sel).any() else 0
    # the best start's end and start, side by side in one evaluation, on the validation data
    # when there are any (the data the fit never saw), else on the fit's own target
    judge = problem.validation_problem()
    pair = lambda a, b: jnp.stack([a[best], b[best]])  # noqa: E731
    both = stage_loss(
        judge or problem, jax.tree.map(pair, u_final, u0), jax.tree.map(pair, fixed, fixed)
    )
    acceptance = _judge(both[0], both[1], stage.accept_level)
    acceptance["judged_on"] = "validation" if judge is not None else "fit noise"
    kept_start = acceptance["kept_start"]
    if kept_start:
        u_final = jax.tree.map(lambda f, s: f.at[best].set(s[best]), u_final, u0)
    end = {
        k: np.asarray(v)[best] for k, v in _evaluate(problem, pset, u_final, fixed, hkeys).items()
    }
    begin = {k: np.asarray(v)[best] for k, v in _evaluate(problem, pset, u0, fixed, hkeys).items()}
    with np.errstate(invalid="ignore"):
        heldout = {
            **{k: float(np.mean(v)) for k, v in end.items()},
            **{f"start_{k}": float(np.mean(v)) for k, v in begin.items()},
            "fc_corr": float(np.mean(1.0 - end["fc_r"])),
            "fc_r_std": float(np.std(end["fc_r"])),
            "loss_per_seed": end["loss"],
            "fc_r_per_seed": end["fc_r"],
        }
    u_best = jax.tree.map(lambda x: x[best], u_final)
    values = pset.constrain(u_best)
    params = {k: np.asarray(v, np.float64) for k, v in current[best].items()}
    params.update({k: np.asarray(v, np.float64) for k, v in values.items()})
    return StageRecord(
        name=stage.name,
        optimizer=stage.optimizer,
        history=history,
        best_start=best,
        selection_loss=sel,
        heldout=heldout,
        params=params,
        wall_time=float(wall),
        steps_run=int(steps_run),
        n_rejected=int(np.sum(history["rejected"])),
        kept_start=kept_start,
        acceptance={k: v for k, v in acceptance.items() if k != "kept_start"},
        u={k: np.asarray(v) for k, v in u_best.items()},
        screen=_screen_of(screen, best),
    )


def _screen_of(screen: Mapping[str, Any], best: int) -> dict[str, Any]:
    """The best start's part of :func:`_screen`'s report (JSON-ready), empty for none."""
    if not screen:
        return {}
    return {
        "spread": float(screen["spread"]),
        "candidates": int(screen["candidates"]),
        "start_loss": float(screen["start_loss"][best]),
        "loss": float(screen["loss"][best]),
        "rank": int(screen["rank"][best]),
        "handed": bool(screen["handed"][best]),
        "begin": {n: [float(x) for x in v[best]] for n, v in screen["begin"].items()},
    }


def _judge(end: np.ndarray, start: np.ndarray, level: float = GUARD_LEVEL) -> dict[str, Any]:
    """Whether a stage keeps its start: its losses ``end`` are worse than ``start`` (both on
    the same noise draws) beyond the noise — the end diverged where the start did not, or the
    paired differences are positive at significance ``level`` (one-sided t-test; the
    seed-to-seed spread of the differences is the noise). Returns ``kept_start``, the mean
    ``start_loss`` and ``end_loss``, ``p_value`` (NaN where no test was needed), ``draws``
    and, where both are finite, ``spread`` (the standard deviation of the differences)."""
    out = {
        "kept_start": False,
        "start_loss": float(np.mean(start)),
        "end_loss": float(np.mean(end)),
        "p_value": float("nan"),
        "draws": int(np.size(end)),
    }
    if not np.isfinite(start).all():
        return out
    if not np.isfinite(end).all():
        return {**out, "kept_start": True}
    d = end - start
    out["spread"] = float(d.std(ddof=1))  # the seed-to-seed spread of the difference
    se = out["spread"] / math.sqrt(d.size)
    if se == 0.0:
        return {**out, "kept_start": bool(d.mean() > 0.0), "p_value": float(d.mean() <= 0.0)}
    p = float(scipy.stats.t.sf(d.mean() / se, d.size - 1))
    return {**out, "kept_start": p < level, "p_value": p}


def _empty_history(pset: ParameterSet, steps: int, n_starts: int, u0) -> dict[str, Any]:
    values = jax.vmap(pset.to_values)(u0)
    nan = lambda: np.full((steps, n_starts), np.nan)  # noqa: E731
    return {
        "loss": nan(),
        "objective": nan(),
        "heldout_loss": nan(),
        "grad_norm": nan(),
        "rejected": np.zeros((steps, n_starts), bool),
        "lr_scale": nan(),
        "params": {
            p.name: np.full((steps,) + np.shape(values[p.name]), np.nan)
            for p in pset.free
            if p.scope != "edges"
        },
    }


def _run_optax(
    problem, stage, index, current, root, hkeys, every, progress, partial, save, regions=None
):
    t_start = time.perf_counter()
    pset, fixed, u0, ref, begin, screen, current = _prepare(
        problem, stage, current, root, index, regions
    )
    n_starts = len(current)
    dtype = problem.weights.dtype
    segment, tx = _segment_fn(_structural(stage), every)
    cfg = _config(stage, dtype)
    opt0 = jax.vmap(tx.init)(begin)
    aux0 = {
        "lr_scale": jnp.ones(n_starts, dtype),
        "ema": jnp.full(n_starts, jnp.inf, dtype),
        "best": jnp.full(n_starts, jnp.inf, dtype),
        "since": jnp.zeros(n_starts, jnp.int32),
        "done": jnp.zeros(n_starts, bool),
    }
    if partial is None:
        t, u, opt, aux = 0, begin, opt0, aux0
        history = _empty_history(pset, stage.steps, n_starts, u0)
        elapsed = 0.0
    else:
        t = partial["t"]
        u = jax.tree.map(jnp.asarray, partial["u"])
        opt = jax.tree.unflatten(jax.tree.structure(opt0), [jnp.asarray(x) for x in partial["opt"]])
        aux = jax.tree.map(jnp.asarray, partial["aux"])
        history = partial["history"]
        elapsed = partial["wall_time"]

    while t < stage.steps and not bool(np.all(np.asarray(aux["done"]))):
        (u, opt, aux), rec = segment(
            problem,
            pset,
            u,
            opt,
            aux,
            fixed,
            ref,
            root,
            jnp.asarray(index, jnp.int32),
            jnp.asarray(t, jnp.int32),
            cfg,
        )
        stop = min(t + every, stage.steps)
        n = stop - t
        for k in ("loss", "objective", "grad_norm", "rejected", "lr_scale"):
            history[k][t:stop] = np.asarray(rec[k])[:n]
        for k, v in rec["params"].items():
            history["params"][k][t:stop] = np.asarray(v)[:n]
        h_loss = _evaluate(problem, pset, u, fixed, hkeys)["loss"]
        history["heldout_loss"][stop - 1] = np.asarray(h_loss).mean(axis=1)
        t = stop
        wall = elapsed + time.perf_counter() - t_start
        save(
            {
                "t": t,
                "u": _to_numpy(u),
                "opt": [np.asarray(x) for x in jax.tree.leaves(opt)],
                "aux": _to_numpy(aux),
                "history": history,
                "wall_time": wall,
            }
        )
        if progress is not None:
            best = np.asarray(aux["best"])
            progress(stage.name, t, stage.steps, float(np.min(best)) if best.size else np.nan)

    steps_run = t
    wall = elapsed + time.perf_counter() - t_start
    return _finish(
        problem,
        stage,
        pset,
        index,
        current,
        fixed,
        u,
        u0,
        root,
        hkeys,
        history,
        wall,
        steps_run,
        np.asarray(aux["ema"]),
        screen,
    )


@functools.lru_cache(maxsize=4)
def _scipy_fns(noise_average: str):
    """Jitted objective (problem, pset, values, fixed, ref, keys, l2) → (objective, data
    loss) and its value and gradient with respect to the constrained values (SciPy's bounds
    act on those)."""

    def objective(problem, pset, values, fixed, ref, keys, l2):
        return _objective(problem, pset, noise_average)(values, fixed, ref, keys, l2)

    return jax.jit(objective), jax.jit(jax.value_and_grad(objective, argnums=2, has_aux=True))


def _run_scipy(
    problem, stage, index, current, root, hkeys, every, progress, partial, save, regions=None
):
    t_start = time.perf_counter()
    pset, fixed, u0, ref, begin, screen, current = _prepare(
        problem, stage, current, root, index, regions
    )
    n_starts = len(current)
    dtype = problem.weights.dtype
    value_fn, grad_fn = _scipy_fns(stage.noise_average)
    l2 = jnp.asarray(stage.l2_regional, dtype)
    keys = _step_keys(root, index, 0, stage.n_noise, fresh=False)
    history = _empty_history(pset, stage.steps, n_starts, u0)
    values0 = jax.vmap(pset.to_values)(begin)
    finals, final_loss = [], []
    steps_run = 0
    for s in range(n_starts):
        fixed_s, ref_s, values_s = (_take(tree, s) for tree in (fixed, ref, values0))
        x0, unravel = ravel_pytree(values_s)
        bounds = _flat_bounds(pset, values_s)
        state = {"it": 0, "gnorm": np.nan, "rejected": 0}

        def fun(x, fixed_s=fixed_s, ref_s=ref_s, unravel=unravel, state=state):
            values = unravel(jnp.asarray(x, dtype))
            if stage.optimizer == "scipy-lbfgsb":
                (val, _), g = grad_fn(problem, pset, values, fixed_s, ref_s, keys, l2)
                gflat = np.asarray(ravel_pytree(g)[0], np.float64)
                if not (np.isfinite(val) and np.all(np.isfinite(gflat))):
                    state["rejected"] += 1
                    return SCIPY_PENALTY, np.zeros_like(gflat)
                state["gnorm"] = float(np.linalg.norm(gflat))
                return float(val), gflat
            val, _ = value_fn(problem, pset, values, fixed_s, ref_s, keys, l2)
            if not np.isfinite(val):
                state["rejected"] += 1
                return SCIPY_PENALTY
            return float(val)

        callback = _scipy_callback(stage, s, unravel, state, history, dtype, progress)
        if stage.steps > 0:
            res = scipy.optimize.minimize(
                fun,
                np.asarray(x0, np.float64),
                method=SCIPY_METHODS[stage.optimizer],
                jac=stage.optimizer == "scipy-lbfgsb",
                bounds=bounds,
                callback=callback,
                options={"maxiter": stage.steps},
            )
            x = res.x
            final_loss.append(res.fun if res.fun < SCIPY_PENALTY else np.inf)
        else:
            x = np.asarray(x0, np.float64)
            final_loss.append(np.nan)
        steps_run = max(steps_run, state["it"])
        finals.append(unravel(jnp.asarray(x, dtype)))
    # the data loss per iteration is the objective without the penalty; SciPy reports the
    # objective, so both are the same unless l2_regional is set
    history["loss"][:] = history["objective"]
    u_final = jax.vmap(pset.from_values)(_stack(finals, dtype))
    _last_heldout(problem, stage, pset, u_final, fixed, hkeys, history, steps_run)
    return _finish(
        problem,
        stage,
        pset,
        index,
        current,
        fixed,
        u_final,
        u0,
        root,
        hkeys,
        history,
        time.perf_counter() - t_start,
        steps_run,
        np.asarray(final_loss),
        screen,
    )


def _scipy_callback(stage, s, unravel, state, history, dtype, progress):
    """SciPy's per-iteration callback (its one argument must be named intermediate_result)."""

    def callback(intermediate_result):
        i = state["it"]
        if i >= stage.steps:
            return
        res = intermediate_result
        values = unravel(jnp.asarray(res.x, dtype))
        history["objective"][i, s] = res.fun
        history["grad_norm"][i, s] = state["gnorm"]
        history["rejected"][i, s] = state["rejected"] > 0
        state["rejected"] = 0
        history["lr_scale"][i, s] = 1.0
        for n in history["params"]:
            history["params"][n][i, s] = np.asarray(values[n])
        state["it"] = i + 1
        if progress is not None:
            progress(stage.name, i + 1, stage.steps, float(res.fun))

    return callback


# ---------------------------------------------------------------------------------------------
# least squares: Gauss–Newton and Levenberg–Marquardt (optimistix) on fixed noise seeds
#
# Fisher scoring on the stage's n_noise FIXED noise seeds (a deterministic objective, as for
# SciPy): with noise_average 'fc' the loss of their mean FC, written as ½‖r‖² with one
# residual block per loss term (bnmfit.losses.fc_residual_blocks, whose squared norms are
# the terms). With noise_average 'loss' the blocks of each seed's own FC are stacked,
# scaled by 1/sqrt(n_noise): ‖r‖² is the mean of the single simulations' losses, the
# quantity the held-out and validation scores measure (one simulation's FC against the
# data). With noise_average 'fc_debiased' each block of the mean FC is scaled by
# sqrt(debiased term / term of the mean FC), so ‖r‖² is the debiased loss
# (bnmfit.losses.debiased_fc_terms) and r keeps the mean FC's direction.
#
# So ‖r‖² is exactly the configured loss as the stage averages it, the objective that
# best-start selection and the end-of-stage guard judge. Gauss–Newton and LM take J
# (forward mode, jax.linearize) and solve for their step by QR; LM's damping (trust
# region) refuses steps that do not lower ½‖r‖², including steps into a diverging
# simulation. fcd_ks has no residual form.


def _least_squares_terms(problem: Problem, stage: Stage) -> tuple[tuple[str, float], ...]:
    """The loss terms a least-squares stage turns into residuals (weights > 0); ConfigError
    for a term without a residual form (fcd_ks) or a negative weight."""
    for name, weight in problem.loss_weights:
        if name not in FC_TERMS:
            raise ConfigError(
                f"stage {stage.name!r}: the {stage.optimizer} optimizer needs loss terms with "
                f"residuals ({', '.join(FC_TERMS)}), the loss has {name}: remove it "
                "from loss.expression or choose another optimizer for this stage"
            )
        if weight < 0:
            raise ConfigError(
                f"stage {stage.name!r}: the {stage.optimizer} optimizer needs loss terms with "
                f"weights ≥ 0, {name} has {weight:g}: fix loss.expression"
            )
    return tuple((n, float(w)) for n, w in problem.loss_weights if w > 0)


def _residuals(problem: Problem, pset: ParameterSet, noise_average: str):
    """(u, (fixed, keys)) → (residuals, loss) of one simulation per key: the residuals of
    their mean FC and its loss (``fc``), scaled to its debiased loss (``fc_debiased``), or
    each simulation's residuals and their mean loss (``loss``); see the comment above."""
    emp = upper(problem.empirical.fc)
    terms = {n: w for n, w in problem.loss_weights if w > 0}

    def fn(u, args):
        fixed, keys = args
        params = {**fixed, **pset.constrain(u)}
        if noise_average == "loss":  # one block per simulation: ‖r‖² their mean loss
            fcs = sample_fc(problem, params, keys)
            per_sim = jax.vmap(lambda f: fc_residual_blocks(terms, upper(f), emp))(fcs)
            scale = 1.0 / jnp.sqrt(fcs.shape[0])
            loss = jax.vmap(lambda f: problem.loss_of(Observed(f)))(fcs).mean()
            return scale * jnp.concatenate([b.ravel() for b in per_sim.values()]), loss
        if noise_average == "fc":
            fc = mean_fc(problem, params, keys)
            blocks = fc_residual_blocks(terms, upper(fc), emp)
            return jnp.concatenate(list(blocks.values())), problem.loss_of(Observed(fc))
        fcs = sample_fc(problem, params, keys)
        fc = fcs.mean(axis=0)
        debiased = debiased_fc_terms(fcs, problem.empirical.fc)
        blocks = []
        for n, block in fc_residual_blocks(terms, upper(fc), emp).items():
            plain = LOSSES[n](Observed(fc), problem.empirical)
            scale = jnp.where(plain > 0, jnp.sqrt(jnp.maximum(debiased[n], 1e-12) / plain), 1.0)
            blocks.append(scale * block)
        return jnp.concatenate(blocks), problem.debiased_loss_of(fcs)

    return fn


@functools.lru_cache(maxsize=4)
def _least_squares_fns(optimizer: str, noise_average: str):
    """Jitted ``init(problem, pset, u, fixed, keys)`` → solver state and ``step(problem,
    pset, u, state, fixed, keys)`` → (u, state, record) of one optimistix iteration: the
    record holds the data loss and ‖r‖² at the accepted point, whether this iteration's
    point was accepted, whether to stop (optimistix terminates, or :data:`LSQ_REFUSALS`
    refusals in a row), and the constrained values (read from optimistix's Gauss–Newton
    state: f_info, aux, num_steps_since_acceptance). Equinox's filter_jit, as the state
    holds a jaxpr: the problem's and set's arrays are traced, so one compilation serves
    every subject with the same shapes and settings when the problem's number leaves are
    arrays (a Python float would be static)."""
    solver = LEAST_SQUARES[optimizer](rtol=LSQ_RTOL, atol=LSQ_ATOL)
    tags: frozenset = frozenset()

    def init(problem, pset, u, fixed, keys):
        fn, args = _residuals(problem, pset, noise_average), (fixed, keys)
        f_struct, aux_struct = jax.eval_shape(fn, u, args)
        return solver.init(fn, u, args, {}, f_struct, aux_struct, tags)

    def step(problem, pset, u, state, fixed, keys):
        fn, args = _residuals(problem, pset, noise_average), (fixed, keys)
        u, state, _ = solver.step(fn, u, args, {}, state, tags)
        done, _ = solver.terminate(fn, u, args, {}, state, tags)
        record = {
            "loss": state.aux,
            "objective": 2.0 * state.f_info.as_min(),
            "accepted": state.num_steps_since_acceptance == 0,
            "done": done | (state.num_steps_since_acceptance >= LSQ_REFUSALS),
            "values": pset.to_values(u),
        }
        return u, state, record

    return eqx.filter_jit(init), eqx.filter_jit(step)


def _run_least_squares(
    problem, stage, index, current, root, hkeys, every, progress, partial, save, regions=None
):
    """Gauss–Newton / Levenberg–Marquardt (:data:`LEAST_SQUARES`): each start in turn, one
    jitted optimistix iteration per step (a step evaluates the residuals and their
    Jacobian at the proposed point), up to ``stage.steps`` or until optimistix's
    termination (:data:`LSQ_RTOL`, :data:`LSQ_ATOL`) or :data:`LSQ_REFUSALS` refusals in a
    row. History per step at the accepted point: ``loss`` (the data loss as the stage
    averages it), ``objective`` (‖r‖²), ``rejected`` (the proposed point was refused: LM's
    trust region, or a diverging simulation), no gradient norm. Stages resume from their
    start after an interruption (no checkpoint within the stage)."""
    t_start = time.perf_counter()
    _least_squares_terms(problem, stage)
    pset, fixed, u0, _, begin, screen, current = _prepare(
        problem, stage, current, root, index, regions
    )
    n_starts = len(current)
    init, step = _least_squares_fns(stage.optimizer, stage.noise_average)
    arrays = jax.tree.map(jnp.asarray, problem)  # traced, not static (G, sigma as floats)
    keys = _step_keys(root, index, 0, stage.n_noise, fresh=False)
    history = _empty_history(pset, stage.steps, n_starts, u0)
    finals, final_loss, steps_run = [], [], 0
    for s in range(n_starts):
        u, fixed_s = _take(begin, s), _take(fixed, s)
        state = init(arrays, pset, u, fixed_s, keys) if stage.steps > 0 else None
        loss = np.nan
        for i in range(stage.steps):
            new_u, new_state, rec = step(arrays, pset, u, state, fixed_s, keys)
            ok = bool(np.isfinite(rec["loss"])) and bool(np.isfinite(rec["objective"]))
            history["rejected"][i, s] = not (ok and bool(rec["accepted"]))
            steps_run = max(steps_run, i + 1)
            if not ok:  # the start diverges, or Gauss–Newton stepped into a divergence
                loss = np.inf if i == 0 else loss
                break
            u, state, loss = new_u, new_state, float(rec["loss"])
            history["loss"][i, s] = loss
            history["objective"][i, s] = float(rec["objective"])
            history["lr_scale"][i, s] = 1.0
            for n in history["params"]:
                history["params"][n][i, s] = np.asarray(rec["values"][n])
            if progress is not None:
                progress(stage.name, i + 1, stage.steps, loss)
            if bool(rec["done"]):
                break
        finals.append(u)
        final_loss.append(loss)
    u_final = _stack(finals, problem.weights.dtype)
    _last_heldout(problem, stage, pset, u_final, fixed, hkeys, history, steps_run)
    return _finish(
        problem,
        stage,
        pset,
        index,
        current,
        fixed,
        u_final,
        u0,
        root,
        hkeys,
        history,
        time.perf_counter() - t_start,
        steps_run,
        np.asarray(final_loss),
        screen,
    )


def _last_heldout(problem, stage, pset, u_final, fixed, hkeys, history, steps_run) -> None:
    """For the runners that run a stage in one piece (SciPy, least squares): the held-out
    loss of the last step, which they do not score step by step."""
    if stage.steps > 0:
        h_loss = _evaluate(problem, pset, u_final, fixed, hkeys)["loss"]
        history["heldout_loss"][max(steps_run - 1, 0)] = np.asarray(h_loss).mean(axis=1)


def _take(tree, s: int):
    return jax.tree.map(lambda leaf: leaf[s], tree)


def _flat_bounds(pset: ParameterSet, values: Mapping[str, jax.Array]) -> list:
    lo = {n: np.full(np.shape(v), -np.inf) for n, v in values.items()}
    hi = {n: np.full(np.shape(v), np.inf) for n, v in values.items()}
    for p in pset.free:
        a, b = p.scipy_bounds
        lo[p.name][...] = -np.inf if a is None else a
        hi[p.name][...] = np.inf if b is None else b
    lo_flat = np.asarray(ravel_pytree(lo)[0])
    hi_flat = np.asarray(ravel_pytree(hi)[0])
    return [
        (None if not np.isfinite(a) else float(a), None if not np.isfinite(b) else float(b))
        for a, b in zip(lo_flat, hi_flat, strict=True)
    ]
