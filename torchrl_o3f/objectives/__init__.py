"""Loss modules on the shared :class:`~torchrl_o3f.modules.QEnsemble`: IQL, LAPO, SAC, CQL, AWAC."""

from torchrl_o3f.objectives.awac import AWACLoss, make_awac_loss
from torchrl_o3f.objectives.common import expectile_loss, make_target_params, module_params
from torchrl_o3f.objectives.cql import CQLLoss, make_cql_loss
from torchrl_o3f.objectives.iql import IQLLoss, make_iql_loss
from torchrl_o3f.objectives.lapo import (
    LAPOLoss,
    lapo_family_defaults,
    lapo_reward_config,
    make_lapo_loss,
)
from torchrl_o3f.objectives.sac import SACLoss, make_sac_loss

__all__ = [
    "AWACLoss",
    "CQLLoss",
    "IQLLoss",
    "LAPOLoss",
    "SACLoss",
    "expectile_loss",
    "lapo_family_defaults",
    "lapo_reward_config",
    "make_awac_loss",
    "make_cql_loss",
    "make_iql_loss",
    "make_lapo_loss",
    "make_sac_loss",
    "make_target_params",
    "module_params",
]
