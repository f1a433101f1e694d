"""TensorDict modules: the Q ensemble, the O3F action selector and its critics, networks."""

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
from torchrl_o3f.modules.networks import build_mlp, get_activation
from torchrl_o3f.modules.selector import O3FActionSelector

__all__ = [
    "O3FActionSelector",
    "QEnsemble",
    "StackedCritic",
    "build_mlp",
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
