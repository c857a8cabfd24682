"""bnmfit: personalised whole-brain network models, fitted subject by subject."""

from importlib.metadata import PackageNotFoundError, version

from bnmfit import xla_defaults  # noqa: F401  (no effect until xla_defaults.apply())
from bnmfit.bold import BalloonWindkessel
from bnmfit.connectome import Connectome
from bnmfit.errors import BnmfitError, ConfigError, DataError
from bnmfit.models import MODELS, get_model
from bnmfit.simulate import SimOutput, SimSpec, simulate

try:
    __version__ = version("bnmfit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "MODELS",
    "BalloonWindkessel",
    "BnmfitError",
    "ConfigError",
    "Connectome",
    "DataError",
    "SimOutput",
    "SimSpec",
    "__version__",
    "get_model",
    "simulate",
]
