"""One subject's fitting problem: simulation settings, observation, empirical data and loss.

A :class:`Problem` binds everything that is fixed during a fit, and maps a dictionary of
free parameter values to a loss with an explicit PRNG key. Exploration (``explore.py``) vmaps
:meth:`Problem.loss` over grid points and seeds; refinement (``fit.py``) differentiates it.

Free parameter names: ``G`` (global coupling), ``sigma`` (noise), ``weights`` (the SC, N × N),
or any parameter of the model (scalar or one value per region).

A Problem is a JAX pytree: its arrays and numbers (model parameters, weights, delays, the
empirical observables, G, sigma) are leaves, its settings (simulation spec, observation, loss
terms, ``ks_smooth``) are static. A function jitted with the problem as an *argument*, e.g.
``jax.jit(Problem.loss)(problem, params, key)``, therefore compiles once per settings and
shapes and serves every subject with the same number of regions; one that closes over a
problem bakes its arrays into the program as constants and compiles again for each subject.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax import Array

from bnmfit import losses, observables
from bnmfit.errors import ConfigError, unknown_choice
from bnmfit.models.base import NeuralMass
from bnmfit.simulate import SimOutput, SimSpec, simulate

__all__ = ["NETWORK_PARAMETERS", "Observation", "Problem"]

#: free-parameter names that belong to the network, not to the model.
NETWORK_PARAMETERS = ("G", "sigma", "weights")


@dataclasses.dataclass(frozen=True)
class Observation:
    """How BOLD becomes observables: the same for simulated and empirical BOLD.

    Attributes:
        tr: BOLD sampling period in seconds.
        discard: initial TRs dropped before anything else.
        detrend, bandpass, zscore: preprocessing (band-pass edges in Hz, or None).
        fcd_window, fcd_step: FCD window and step in TRs (window 0: no FCD).
    """

    tr: float
    discard: int = 0
    detrend: bool = True
    bandpass: tuple[float, float] | None = None
    zscore: bool = True
    fcd_window: int = 0
    fcd_step: int = 1

    def preprocess(self, bold: Array) -> Array:
        return observables.preprocess(
            bold,
            self.tr,
            discard=self.discard,
            detrend=self.detrend,
            bandpass=self.bandpass,
            zscore=self.zscore,
        )

    def observe(self, bold: Array) -> losses.Observed:
        """FC (and FCD when a window is set) of BOLD (T, N)."""
        x = self.preprocess(bold)
        fcd = observables.fcd(x, self.fcd_window, self.fcd_step) if self.fcd_window else None
        return losses.Observed(observables.fc(x), fcd)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["model", "weights", "empirical", "G", "sigma", "delays", "validation"],
    meta_fields=["spec", "observation", "loss_weights", "ks_smooth"],
)
@dataclasses.dataclass(frozen=True)
class Problem:
    """A subject's fit: everything but the free parameters and the noise key.

    Attributes:
        model: the neural mass with its fixed parameter values.
        weights: (N, N) SC weights (float32 or float64: sets the precision).
        spec: simulation settings.
        observation: BOLD → observables.
        empirical: the subject's observables.
        loss_weights: named loss terms of :data:`bnmfit.losses.LOSSES` and their weights.
        G, sigma: fixed global coupling and noise unless freed.
        delays: (N, N) integer delays in steps when ``spec.max_delay > 0``.
        ks_smooth: width of the smooth KS distance (None: exact).
        validation: the subject's validation observables (a second run or a held-out part
            of the run), which no loss or gradient uses: only scoring and the stages'
            acceptance (:meth:`validation_problem`); None without.
    """

    model: NeuralMass
    weights: Array
    spec: SimSpec
    observation: Observation
    empirical: losses.Observed
    loss_weights: tuple[tuple[str, float], ...] = (("fc_corr", 1.0),)
    G: float = 1.0
    sigma: float = 0.0
    delays: Array | None = None
    ks_smooth: float | None = None
    validation: losses.Observed | None = None

    def __post_init__(self):
        names = dict(self.loss_weights)
        losses.check_terms(names)
        if "fcd_ks" in names and (self.empirical.fcd is None or not self.observation.fcd_window):
            raise ConfigError(
                "the loss uses fcd_ks but no FCD is available: set an FCD window and give BOLD "
                "(not a precomputed FC) for the subject"
            )

    def validation_problem(self) -> Problem | None:
        """This problem with the validation observables as its target (its loss is the
        validation loss), or None without validation data or when the loss needs an FCD
        that the validation data lack (a validation FC file)."""
        v = self.validation
        if v is None or ("fcd_ks" in dict(self.loss_weights) and v.fcd is None):
            return None
        return dataclasses.replace(self, empirical=v, validation=None)

    @property
    def n_regions(self) -> int:
        return self.weights.shape[0]

    def parameter_names(self) -> tuple[str, ...]:
        return NETWORK_PARAMETERS + self.model.parameter_names()

    def check_names(self, names) -> None:
        for name in sorted(set(names) - set(self.parameter_names())):
            raise ConfigError(
                unknown_choice(
                    "free parameter",
                    name,
                    self.parameter_names(),
                    f" of {type(self.model).__name__}",
                )
            )

    def simulate(self, params: Mapping[str, Array], key: Array) -> SimOutput:
        """Simulate with some parameters replaced by ``params``."""
        self.check_names(params)
        dtype = self.weights.dtype
        model_params = {
            k: jnp.asarray(v, dtype) for k, v in params.items() if k not in NETWORK_PARAMETERS
        }
        return simulate(
            self.model.replace(**model_params) if model_params else self.model,
            jnp.asarray(params.get("weights", self.weights), dtype),
            key,
            self.spec,
            G=params.get("G", self.G),
            sigma=params.get("sigma", self.sigma),
            delays=self.delays,
        )

    def observe(self, params: Mapping[str, Array], key: Array) -> losses.Observed:
        return self.observation.observe(self.simulate(params, key).bold)

    def loss_of(self, observed: losses.Observed) -> Array:
        return losses.combined(dict(self.loss_weights), observed, self.empirical, self.ks_smooth)

    def debiased_loss_of(self, fcs: Array) -> Array:
        """The loss of the expected FC estimated from (K, N, N) simulated FCs, K ≥ 2, free of
        their noise's bias (:func:`bnmfit.losses.combined_debiased`; FC terms only)."""
        return losses.combined_debiased(dict(self.loss_weights), fcs, self.empirical)

    def loss(self, params: Mapping[str, Array], key: Array) -> Array:
        """The loss of one simulation; non-finite when the simulation diverges."""
        return self.loss_of(self.observe(params, key))
