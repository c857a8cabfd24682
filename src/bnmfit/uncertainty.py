"""Standard errors of fitted parameters: the Fisher information of the expected FC.

At a stage's fitted point (its unconstrained free values ``u``), the FC upper triangle of
one simulation, f(u, ξ) with noise ξ, has mean μ(u) (the expected FC) and sampling
covariance Σ. The subject's empirical FC is modelled as the mean of ``runs`` independent
simulated FCs, ``runs`` = the empirical recording's length / the simulated BOLD's length
(FC's sampling covariance shrinks as one over the recording's length), so approximately
Gaussian with mean μ(u) and covariance Σ / runs. Its Fisher information about ``u`` is

    F_u = runs · Jᵀ Σ⁻¹ J,      J = ∂μ/∂u   (M entries × P free numbers),

and F_u⁻¹ is the least covariance of any unbiased estimate of ``u`` from that FC (the
Cramér–Rao bound), the usual large-sample covariance of a fit that matches FC.

Estimation (:func:`fc_information`, :func:`fisher_information`):

* J: the forward-mode Jacobian (``jax.jacfwd``) of each of ``n_jacobian`` simulations'
  FC, with common noise across the tangents; their mean Ĵ estimates ∂μ/∂u without bias,
  but its noise adds to ĴᵀΣ⁻¹Ĵ (noise read as sensitivity: too small standard errors,
  badly so for many parameters and few seeds). The Fisher information is therefore the
  U-statistic over pairs of different seeds, Σ_{k≠l} J_kᵀΣ⁻¹J_l / (n(n − 1)), whose
  expectation is JᵀΣ⁻¹J exactly (independent noise has no cross terms); directions where
  it is not positive are those the seeds cannot resolve (n_jacobian 1: Ĵ as it is).
* Σ: the FC of ``n_noise`` single simulations at the fitted point, as ``factors`` leading
  principal components plus a diagonal rest (FC's entries are strongly correlated: a run's
  mean FC moves all of them together), inverted by the Woodbury identity.
* Directions of ``u`` in F_u's numerical null space carry no information: every number
  that depends on them has an infinite standard error; elsewhere Cov_u is F_u's inverse on
  its range. F_u = AᵀA with A = Σ^(-1/2) J known to J's precision ε (float32: 1.2e-7), so
  A's singular values below P·ε of the largest, i.e. F's eigenvalues below (P·ε)² of the
  largest, are rounding; P·ε₆₄ of the largest is the eigendecomposition's own floor.

The reported numbers are :meth:`ParameterSet.free_values` (the values of global, regional
and edge parameters; other scopes report their own numbers), with the delta method
Cov = D Cov_u Dᵀ, D = ∂ values / ∂u, a standard error per number and their correlation
matrix. A number is *identified* when its standard error is at most ``fraction`` of its
scale (:meth:`ParameterSet.free_scales`: the domain's width, or |value| where the
transform enforces no upper bound).

The sandwich (``n_fit`` given; what :func:`bnmfit.fit.refine` reports): F_u⁻¹ is the
covariance of an estimator that weighs FC's entries by Σ⁻¹, which no fit runs, with a Σ
known exactly, which no sample of it gives (Σ̂⁻¹ from tens of samples in thousands of
dimensions overstates the information). A stage minimises its configured loss L of the
mean FC of its own ``n_fit`` noise seeds instead; to first order its error is
δu = −H⁻¹ Bᵀ δ, with W the loss's Gauss–Newton curvature with respect to the simulated FC's
upper triangle at the expected FC (Rᵀ R, R the Jacobian of the residuals whose squared norm
is the loss, :func:`bnmfit.losses.fc_residual_blocks`: positive semi-definite, where the
loss's full Hessian need not be away from a perfect fit), B = W J, H = Jᵀ W J, and δ the
difference between the simulated mean FC's noise and the empirical FC's, of covariance
Σ_δ = (1/runs + 1/n_fit) Σ. So

    Cov_u = H⁻¹ Bᵀ Σ_δ B H⁻¹,

with H over pairs of different Jacobian seeds, and Bᵀ Σ B with the seeds' mean Jacobian
from the centred sample directly (Σ is never inverted; a pairs estimate of it need not be
positive, and J̄'s noise can only enlarge it). A stage that minimises the mean of its
seeds' single-FC losses (``noise_average`` ``loss``) gets the same covariance, an
approximation: to first order its gradient is Jᵀ W times the seeds' mean deviation, as
above, but its curvature is the mean over single noisy FCs, whose larger RMSE weighs
fc_rmse against fc_corr slightly differently than W at the expected FC does; and the two
fits differ in their bias, which no standard error holds. On a synthetic 80-region subject
with three map coefficients the library's Cramér–Rao errors were 7–8 times smaller than
the scatter of repeated fits, the sandwich's within 20 % of it (docs/science.md). The
sandwich needs a loss of FC alone (fc_corr, fc_rmse); with an FCD term the Cramér–Rao
bound is reported (:attr:`Uncertainty.method` says which).

Neglected: Σ's dependence on ``u``, FCD (only FC enters), model misspecification (the
data are taken to come from the model: the residual's curvature term of the fit's Hessian
is dropped), and the curvature beyond the delta method's first order; the Cramér–Rao
bound also neglects the fit's own simulation noise. A fit's *bias* (the loss of a noisy
mean FC prefers less noisy parameters: :func:`bnmfit.losses.debiased_fc_terms`) is not
in any standard error.

Noise keys: from ``seed`` folded with :data:`UNCERTAINTY_FOLD` and the stage index, so they
never coincide with the fit's (:mod:`bnmfit.fit` folds 0 for steps, 1 for selection into
``PRNGKey(seed)``) or with the held-out ones (``PRNGKey(heldout_seed)`` itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.flatten_util import ravel_pytree

from bnmfit.errors import ConfigError
from bnmfit.losses import FC_TERMS, fc_residual_blocks
from bnmfit.observables import upper

if TYPE_CHECKING:  # pragma: no cover
    from bnmfit.params import ParameterSet
    from bnmfit.problem import Problem

__all__ = [
    "NOISE_FACTORS",
    "UNCERTAINTY_FOLD",
    "Uncertainty",
    "covariance",
    "fc_information",
    "fisher_information",
    "least_error_var",
    "mean_fc",
    "noise_keys",
    "per_key",
    "sample_fc",
    "sandwich",
    "standard_errors",
]

#: principal components of FC's noise covariance (plus a diagonal rest), at most
#: (n_noise − 1) // 2 of them
NOISE_FACTORS = 20
#: folded into ``PRNGKey(seed)`` for the uncertainty's noise (fit.py uses 0 and 1)
UNCERTAINTY_FOLD = 2


def per_key(f: Callable[[Array], Any], keys: Array) -> Any:
    """``f`` over the noise keys: one after the other on CPU, where one simulation's loops run
    compiled whole (:mod:`bnmfit.xla_defaults`) and a few batched ones are slower per
    simulation (W5 problem: gradient of 2 noise seeds 1.28 s batched, 2 × 0.28 s in turn);
    batched (vmap) on accelerators."""
    if jax.default_backend() == "cpu":
        return jax.lax.map(f, keys)
    return jax.vmap(f)(keys)


def sample_fc(problem: Problem, params: Mapping[str, Array], keys: Array) -> Array:
    """The FCs (K, N, N) of one simulation per noise key (``keys``: (K, 2))."""
    return per_key(lambda k: problem.observe(params, k).fc, keys)


def mean_fc(problem: Problem, params: Mapping[str, Array], keys: Array) -> Array:
    """The mean FC (N, N) of one simulation per noise key (``keys``: (K, 2))."""
    return sample_fc(problem, params, keys).mean(axis=0)


@dataclasses.dataclass(frozen=True, eq=False)
class Uncertainty:
    """Standard errors of a stage's fitted numbers (see the module docstring).

    Attributes:
        labels: one per number (:meth:`ParameterSet.free_labels`).
        values: (P,) the fitted numbers.
        se: (P,) standard errors; inf where the data carry no information about a number,
            NaN where the simulation at the fitted point diverged.
        corr: (P, P) correlation matrix (NaN in the rows and columns of numbers without a
            finite, positive standard error; 1 on the diagonal).
        scale: (P,) the width each standard error is judged against.
        identified: (P,) bool: se ≤ fraction · scale.
        fraction: the identifiability threshold used.
        runs: simulated BOLD lengths the empirical FC averages.
        n_jacobian, n_noise: simulations of the Jacobian and of FC's noise sample.
        method: ``sandwich`` (the covariance of the fit that is run, with its ``n_fit``
            noise seeds) or ``cramer-rao`` (the bound; files from before the sandwich).
        n_fit: the fit's noise seeds in the sandwich (0 for the bound).
        n_simulations: the cost in simulations: n_jacobian × (1 + tangents), a
            forward-mode pass carrying the simulation and one tangent per free
            unconstrained number, plus n_noise.
    """

    labels: tuple[str, ...]
    values: np.ndarray
    se: np.ndarray
    corr: np.ndarray
    scale: np.ndarray
    identified: np.ndarray
    fraction: float
    runs: float
    n_jacobian: int
    n_noise: int
    n_simulations: int
    method: str = "cramer-rao"
    n_fit: int = 0

    @property
    def relative_se(self) -> np.ndarray:
        """se / scale per number."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.se / self.scale

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON/HDF5 attributes); inf and NaN stay floats."""
        return {
            "labels": list(self.labels),
            "values": self.values.tolist(),
            "se": self.se.tolist(),
            "corr": self.corr.tolist(),
            "scale": self.scale.tolist(),
            "identified": self.identified.tolist(),
            "fraction": float(self.fraction),
            "runs": float(self.runs),
            "n_jacobian": int(self.n_jacobian),
            "n_noise": int(self.n_noise),
            "n_simulations": int(self.n_simulations),
            "method": self.method,
            "n_fit": int(self.n_fit),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Uncertainty:
        """The inverse of :meth:`to_dict`."""
        n = len(d["labels"])
        return cls(
            labels=tuple(str(x) for x in d["labels"]),
            values=np.asarray(d["values"], np.float64).reshape(n),
            se=np.asarray(d["se"], np.float64).reshape(n),
            corr=np.asarray(d["corr"], np.float64).reshape(n, n),
            scale=np.asarray(d["scale"], np.float64).reshape(n),
            identified=np.asarray(d["identified"], bool).reshape(n),
            fraction=float(d["fraction"]),
            runs=float(d["runs"]),
            n_jacobian=int(d["n_jacobian"]),
            n_noise=int(d["n_noise"]),
            n_simulations=int(d["n_simulations"]),
            method=str(d.get("method", "cramer-rao")),
            n_fit=int(d.get("n_fit", 0)),
        )


def _flat(values: Mapping[str, Array]) -> Array:
    """The numbers of ``free_values`` in their order, raveled and concatenated."""
    return jnp.concatenate([jnp.ravel(v) for v in values.values()])


@jax.jit
def _information(problem, pset, u, fixed, jacobian_keys, noise_keys):
    """(J per key (n_jacobian, M, P), FC sample (n_noise, M), values (V,), D (V, P),
    scales (V,)) at ``u``."""
    flat, unravel = ravel_pytree(u)

    def params(x):
        return {**fixed, **pset.constrain(unravel(x))}

    def fc(x, key):
        return upper(problem.observe(params(x), key).fc)

    def values(x):
        return _flat(pset.free_values(unravel(x)))

    jac = per_key(lambda k: jax.jacfwd(fc)(flat, k), jacobian_keys)
    sample = per_key(lambda k: upper(problem.observe(params(flat), k).fc), noise_keys)
    return jac, sample, values(flat), jax.jacfwd(values)(flat), pset.free_scales(u)


def fc_information(
    problem: Problem,
    pset: ParameterSet,
    u: Mapping[str, Array],
    fixed: Mapping[str, Array],
    jacobian_keys: Array,
    noise_keys: Array,
) -> tuple[np.ndarray, np.ndarray]:
    """(J, noise) at one start's unconstrained free values ``u`` (``fixed``: the values of
    the parameters the set does not free): the Jacobians (n_jacobian, M, P) of the FC upper
    triangle of one simulation per ``jacobian_keys`` with respect to ``u`` flattened by
    ``ravel_pytree`` (names sorted), and the FC upper triangles of one simulation per
    ``noise_keys`` minus their mean (n_noise, M), float64."""
    jac, sample, *_ = _information(problem, pset, u, fixed, jacobian_keys, noise_keys)
    sample = np.asarray(sample, np.float64)
    return np.asarray(jac, np.float64), sample - sample.mean(axis=0)


def _pairs(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Σ_{k≠l} A_kᵀ B_l / (K(K − 1)) of stacks (K, M, P) (K = 1: A_1ᵀ B_1): the product
    of two means without the noise their seeds share."""
    k = A.shape[0]
    if k == 1:
        return A[0].T @ B[0]
    own = sum(a.T @ b for a, b in zip(A, B, strict=True))
    return (A.sum(axis=0).T @ B.sum(axis=0) - own) / (k * (k - 1))


def fisher_information(
    J: np.ndarray, noise: np.ndarray, runs: float, factors: int = NOISE_FACTORS
) -> np.ndarray:
    """runs · JᵀΣ⁻¹J, Σ from the centred sample ``noise`` (n, M) as its ``factors`` (at
    most (n − 1) // 2) leading principal components plus a diagonal rest, inverted by the
    Woodbury identity. ``J``: one Jacobian (M, P), or one per noise seed (K, M, P), K ≥ 2:
    then the mean over pairs of different seeds Σ_{k≠l} J_kᵀΣ⁻¹J_l / (K(K − 1)), free of
    the bias that J's noise gives the square of their mean (module docstring)."""
    s = noise.shape[0] - 1
    k = max(1, min(int(factors), s // 2))
    _, sv, vt = np.linalg.svd(noise, full_matrices=False)
    lam, V = sv[:k] ** 2 / s, vt[:k].T  # leading variances and directions
    d = np.maximum((noise**2).sum(axis=0) / s - (V**2) @ lam, 1e-12)  # diagonal rest
    DV = V / d[:, None]
    inner = np.linalg.inv(np.diag(1.0 / lam) + V.T @ DV)

    J = J.reshape((-1,) + J.shape[-2:])
    weighted = J / d[:, None] - DV @ inner @ np.einsum("mf,kmp->kfp", DV, J)  # Σ⁻¹ J_k
    return runs * _pairs(J, weighted)


def covariance(
    fisher: np.ndarray,
    D: np.ndarray | None = None,
    eps: float | None = None,
    middle: np.ndarray | None = None,
) -> np.ndarray:
    """D F⁺ Dᵀ, or with ``middle`` the sandwich D F⁺ middle F⁺ Dᵀ (D: the Jacobian of
    reported numbers with respect to F's parameters; None: the identity), with infinite
    variance (and NaN covariances) for every number that depends on a direction of F's
    numerical null space or where F is not positive: eigenvalues ≤ ((P·eps)² + P·ε₆₄)
    times the largest (``eps``: the machine precision of the Jacobian F was made of;
    float64's unless given; see the module docstring)."""
    p = fisher.shape[0]
    D = np.eye(p) if D is None else np.asarray(D, np.float64)
    eps64 = np.finfo(np.float64).eps
    eps = eps64 if eps is None else eps
    lam, vec = np.linalg.eigh(0.5 * (fisher + fisher.T))
    keep = lam > ((p * eps) ** 2 + p * eps64) * max(lam.max(initial=0.0), 0.0)
    proj = D @ vec
    if middle is None:
        cov = (proj[:, keep] / lam[keep]) @ proj[:, keep].T
    else:
        half = proj[:, keep] / lam[keep]  # D F⁺ on F's range
        inner = vec[:, keep].T @ (0.5 * (middle + middle.T)) @ vec[:, keep]
        cov = half @ inner @ half.T
    row = np.sqrt((D**2).sum(axis=1))
    lost = np.sqrt((proj[:, ~keep] ** 2).sum(axis=1)) > 1e-8 * np.maximum(row, 1e-300)
    cov[lost, :] = np.nan
    cov[:, lost] = np.nan
    cov[lost, lost] = np.inf
    return cov


def least_error_var(
    J: np.ndarray, noise: np.ndarray, runs: float, factors: int = NOISE_FACTORS
) -> np.ndarray:
    """Cramér–Rao: each parameter's least error variance from an FC averaged over ``runs``
    simulations (the diagonal of :func:`covariance` of :func:`fisher_information`)."""
    return np.diag(covariance(fisher_information(J, noise, runs, factors)))


@jax.jit
def _curvature_times(problem, expected, tangents):
    """W t for each row t of ``tangents`` (T, M): W = Rᵀ R, the Gauss–Newton curvature of
    the problem's loss with respect to the simulated FC's upper triangle at ``expected``
    (M,), R the Jacobian of the loss's residuals (:func:`bnmfit.losses.fc_residual_blocks`,
    whose squared norm is the loss)."""
    emp = upper(problem.empirical.fc)
    weights = {n: w for n, w in problem.loss_weights if w > 0}

    def residuals(v):
        return jnp.concatenate(list(fc_residual_blocks(weights, v, emp).values()))

    _, along = jax.linearize(residuals, expected)
    _, back = jax.vjp(residuals, expected)
    return jax.vmap(lambda t: back(along(t))[0])(tangents)


def sandwich(
    problem: Problem, J: np.ndarray, noise: np.ndarray, runs: float, n_fit: int
) -> tuple[np.ndarray, np.ndarray]:
    """(H, M) of the sandwich H⁻¹ M H⁻¹ (module docstring): H = Jᵀ W J over pairs of
    different seeds of ``J`` (K, M, P), and M = (1/runs + 1/n_fit) B̄ᵀ Σ B̄ with B̄ = W J̄,
    J̄ the seeds' mean (positive semi-definite; J̄'s noise can only enlarge it); W the
    Gauss–Newton curvature of ``problem``'s loss (FC terms only) with respect to the
    simulated FC's upper triangle at the expected FC, ``noise``'s mean (its rows: FC upper
    triangles of single simulations, (n, M)); Σ their sample covariance."""
    J = J.reshape((-1,) + J.shape[-2:])
    k, m, p = J.shape
    dtype = problem.weights.dtype
    expected = jnp.asarray(noise.mean(axis=0), dtype)
    tangents = jnp.asarray(J.transpose(0, 2, 1).reshape(k * p, m), dtype)
    WJ = np.asarray(_curvature_times(problem, expected, tangents), np.float64)
    B = WJ.reshape(k, p, m).transpose(0, 2, 1)
    nb = (noise - noise.mean(axis=0)) @ B.mean(axis=0)  # (n, P)
    middle = (1.0 / runs + 1.0 / n_fit) * nb.T @ nb / (noise.shape[0] - 1)
    return _pairs(J, B), middle


def noise_keys(seed: int, stage: int, n_jacobian: int, n_noise: int) -> tuple[Array, Array]:
    """(Jacobian keys (n_jacobian, 2), noise-sample keys (n_noise, 2)) of a fit's ``seed``
    and stage index (the module docstring says why they never meet the fit's)."""
    k = jax.random.fold_in(jax.random.PRNGKey(int(seed)), UNCERTAINTY_FOLD)
    k = jax.random.fold_in(k, stage)
    return (
        jax.random.split(jax.random.fold_in(k, 0), n_jacobian),
        jax.random.split(jax.random.fold_in(k, 1), n_noise),
    )


def standard_errors(
    problem: Problem,
    pset: ParameterSet,
    u: Mapping[str, Array],
    fixed: Mapping[str, Array],
    *,
    seed: int,
    runs: float,
    stage: int = 0,
    n_jacobian: int = 4,
    n_noise: int = 32,
    fraction: float = 0.25,
    factors: int = NOISE_FACTORS,
    labels: Sequence[str] | None = None,
    n_fit: int | None = None,
) -> Uncertainty:
    """Standard errors, correlations and identifiability of a stage's fitted numbers.

    Args:
        problem: the subject's problem.
        pset: the stage's free parameters, bound to ``problem``.
        u: one start's unconstrained free values (the fitted point).
        fixed: the values of the parameters ``pset`` does not free (name → array).
        seed: the fit's seed (folded, see the module docstring); ``stage``: its index.
        runs: the empirical recording's length / the simulated BOLD's length (> 0).
        n_jacobian: simulations averaged in the Jacobian (≥ 1).
        n_noise: single simulations sampling FC's noise (≥ 4).
        fraction: a number is identified when se ≤ fraction · its scale (> 0).
        factors: principal components of the noise covariance (≤ (n_noise − 1) // 2).
        labels: region labels for :meth:`ParameterSet.free_labels`.
        n_fit: the noise seeds of the fit's objective (the stage's n_noise): the sandwich
            covariance of that fit; None, or a loss with an FCD term: the Cramér–Rao bound.
    Returns:
        :class:`Uncertainty`.

    One compilation per settings and shapes: the problem and the set are arguments.
    """
    for name, value, ok, want in (
        ("n_jacobian", n_jacobian, isinstance(n_jacobian, int) and n_jacobian >= 1, "≥ 1"),
        ("n_noise", n_noise, isinstance(n_noise, int) and n_noise >= 4, "≥ 4"),
        ("runs", runs, np.isfinite(runs) and runs > 0, "> 0"),
        ("fraction", fraction, np.isfinite(fraction) and fraction > 0, "> 0"),
        ("n_fit", n_fit, n_fit is None or (isinstance(n_fit, int) and n_fit >= 1), "≥ 1"),
    ):
        if not ok:
            raise ConfigError(f"uncertainty: {name} must be {want}, got {value!r}")
    jkeys, nkeys = noise_keys(seed, stage, n_jacobian, n_noise)
    jac, sample, values, D, scale = (
        np.asarray(a, np.float64) for a in _information(problem, pset, u, fixed, jkeys, nkeys)
    )
    noise = sample - sample.mean(axis=0)
    n_numbers, n_free = D.shape
    use_sandwich = n_fit is not None and set(dict(problem.loss_weights)) <= set(FC_TERMS)
    if np.all(np.isfinite(jac)) and np.all(np.isfinite(noise)) and np.all(np.isfinite(D)):
        eps = float(jnp.finfo(jnp.result_type(*jax.tree.leaves(u))).eps)
        if use_sandwich:
            H, middle = sandwich(problem, jac, sample, runs, n_fit)
            cov = covariance(H, D, eps, middle)
        else:
            cov = covariance(fisher_information(jac, noise, runs, factors), D, eps)
        se = np.sqrt(np.diag(cov))
    else:
        cov = np.full((n_numbers, n_numbers), np.nan)
        se = np.full(n_numbers, np.nan)
    good = np.isfinite(se) & (se > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.clip(cov / np.outer(se, se), -1.0, 1.0)
    corr[~good, :] = np.nan
    corr[:, ~good] = np.nan
    np.fill_diagonal(corr, 1.0)
    with np.errstate(invalid="ignore"):
        identified = np.isfinite(se) & (se <= fraction * scale)
    return Uncertainty(
        labels=tuple(pset.free_labels(labels)),
        values=values,
        se=se,
        corr=corr,
        scale=scale,
        identified=identified,
        fraction=float(fraction),
        runs=float(runs),
        n_jacobian=n_jacobian,
        n_noise=n_noise,
        n_simulations=n_jacobian * (1 + n_free) + n_noise,
        method="sandwich" if use_sandwich else "cramer-rao",
        n_fit=int(n_fit) if use_sandwich else 0,
    )
