"""TensorDict modules: the Q ensemble, the O3F action selector and its critics, networks."""

from torchrl_o3f.errors import renamed
from torchrl_o3f.modules.actors import (
    TanhDeterministicNet,
    TanhMeanGaussianNet,
    action_bounds,
    make_deterministic_actor,
    make_iql_actor,
    make_value_network,
)
from torchrl_o3f.modules.critics import StackedCritic
from torchrl_o3f.modules.ensemble import QEnsemble, ensemble_reduce
from torchrl_o3f.modules.exploration import make_exploration
from torchrl_o3f.modules.lapo import LAPOCVAE, LAPOPolicy, LatentActor, LatentDecoder
from torchrl_o3f.modules.networks import get_activation, make_mlp
from torchrl_o3f.modules.selector import O3FActionSelector

__all__ = [
    "O3FActionSelector",
    "QEnsemble",
    "StackedCritic",
    "make_mlp",
    "ensemble_reduce",
    "get_activation",
    "make_exploration",
]
__all__ += [
    "LAPOCVAE",
    "LAPOPolicy",
    "LatentActor",
    "LatentDecoder",
    "TanhDeterministicNet",
    "TanhMeanGaussianNet",
    "action_bounds",
    "make_deterministic_actor",
    "make_iql_actor",
    "make_value_network",
]


def __getattr__(name: str):
    """The renamed ``build_mlp`` (factories from keywords are ``make_*``), with a warning."""
    if name == "build_mlp":
        return renamed(f"{__name__}.build_mlp", f"{__name__}.make_mlp", make_mlp)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
