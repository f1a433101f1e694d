"""Loss modules on the shared :class:`~torchrl_o3f.modules.QEnsemble`, and their registry.

IQL, LAPO, SAC, CQL, AWAC and TD3+BC. Each loss file registers its algorithm
(:func:`~torchrl_o3f.objectives.registry.register_algorithm`); its numbers live in
``torchrl_o3f/config/algo/<name>.yaml``.
"""

from torchrl_o3f.objectives.awac import AWACLoss, make_awac_loss
from torchrl_o3f.objectives.common import (
    episode_returns,
    expectile_loss,
    make_target_params,
    module_params,
)
from torchrl_o3f.objectives.cql import CQLLoss, make_cql_loss
from torchrl_o3f.objectives.iql import IQLConfig, IQLLoss, build_iql, make_iql_loss
from torchrl_o3f.objectives.lapo import (
    LAPOConfig,
    LAPOLoss,
    build_lapo,
    lapo_reward_config,
    make_lapo_loss,
)
from torchrl_o3f.objectives.registry import (
    AlgoConfig,
    Algorithm,
    UnknownAlgorithmError,
    algo_config,
    get_algorithm,
    list_algorithms,
    register_algorithm,
)
from torchrl_o3f.objectives.sac import SACLoss, make_sac_loss
from torchrl_o3f.objectives.td3_bc import TD3BCConfig, TD3BCLoss, build_td3_bc, make_td3_bc_loss

__all__ = [
    "AWACLoss",
    "AlgoConfig",
    "Algorithm",
    "CQLLoss",
    "IQLConfig",
    "IQLLoss",
    "LAPOConfig",
    "LAPOLoss",
    "SACLoss",
    "TD3BCConfig",
    "TD3BCLoss",
    "UnknownAlgorithmError",
    "algo_config",
    "build_iql",
    "build_lapo",
    "build_td3_bc",
    "episode_returns",
    "expectile_loss",
    "get_algorithm",
    "lapo_reward_config",
    "list_algorithms",
    "make_awac_loss",
    "make_cql_loss",
    "make_iql_loss",
    "make_lapo_loss",
    "make_sac_loss",
    "make_td3_bc_loss",
    "make_target_params",
    "module_params",
    "register_algorithm",
]
