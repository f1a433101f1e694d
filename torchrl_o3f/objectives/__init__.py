"""Loss modules on the shared :class:`~torchrl_o3f.modules.QEnsemble`, and their registry.

IQL, LAPO, SAC, CQL, AWAC and TD3+BC. Each loss file defines its
:class:`~torchrl_o3f.objectives.registry.Algorithm` (config, loss builder, policy builder); the
package registers them here, in one explicit list (:data:`BUILTIN_ALGORITHMS`), and importing a
loss file registers nothing. Their numbers live in ``torchrl_o3f/config/algo/<name>.yaml``.
"""

from torchrl_o3f.objectives.awac import AWAC, AWACLoss, make_awac_loss
from torchrl_o3f.objectives.common import (
    episode_returns,
    expectile_loss,
    make_target_params,
    module_params,
)
from torchrl_o3f.objectives.cql import CQL, CQLLoss, make_cql_loss
from torchrl_o3f.objectives.iql import IQL, IQLConfig, IQLLoss, build_iql, make_iql_loss
from torchrl_o3f.objectives.lapo import (
    LAPO,
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
    add_algorithm,
    algo_config,
    get_algorithm,
    list_algorithms,
    register_algorithm,
)
from torchrl_o3f.objectives.sac import SAC, SACLoss, make_sac_loss
from torchrl_o3f.objectives.td3_bc import (
    TD3_BC,
    TD3BCConfig,
    TD3BCLoss,
    build_td3_bc,
    make_td3_bc_loss,
)

BUILTIN_ALGORITHMS: tuple[Algorithm, ...] = (AWAC, CQL, IQL, LAPO, SAC, TD3_BC)
"""The algorithms the package ships, registered by :func:`register_builtin_algorithms`."""


def register_builtin_algorithms() -> None:
    """Register every algorithm of :data:`BUILTIN_ALGORITHMS` (idempotent).

    Called once when :mod:`torchrl_o3f.objectives` is imported.

    Example:
        >>> register_builtin_algorithms()
        >>> sorted(a.name for a in list_algorithms())[:3]
        ['awac', 'cql', 'iql']
    """
    for algorithm in BUILTIN_ALGORITHMS:
        add_algorithm(algorithm)


register_builtin_algorithms()

__all__ = [
    "BUILTIN_ALGORITHMS",
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
    "register_builtin_algorithms",
]
