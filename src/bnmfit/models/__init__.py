"""Neural-mass models: one file per model, all driven by the one loop in ``bnmfit.simulate``."""

from bnmfit.errors import ConfigError, unknown_choice
from bnmfit.models.base import NeuralMass, neural_mass
from bnmfit.models.hopf import Hopf
from bnmfit.models.reduced_wong_wang import ReducedWongWang
from bnmfit.models.wilson_cowan import WilsonCowan
from bnmfit.models.wong_wang_ei import WongWangEI

__all__ = [
    "MODELS",
    "Hopf",
    "NeuralMass",
    "ReducedWongWang",
    "WilsonCowan",
    "WongWangEI",
    "get_model",
    "neural_mass",
]

MODELS: dict[str, type[NeuralMass]] = {
    "reduced_wong_wang": ReducedWongWang,
    "wong_wang_ei": WongWangEI,
    "hopf": Hopf,
    "wilson_cowan": WilsonCowan,
}


def get_model(name: str, **params) -> NeuralMass:
    """The model registered under ``name`` with some parameters set."""
    if name not in MODELS:
        raise ConfigError(unknown_choice("model", name, MODELS))
    cls = MODELS[name]
    unknown = set(params) - set(cls.parameter_names())
    if unknown:
        raise ConfigError(
            f"model {name!r} has no parameter {', '.join(sorted(unknown))}; "
            f"its parameters are {', '.join(cls.parameter_names())}"
        )
    return cls(**params)
