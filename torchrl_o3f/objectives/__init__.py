"""Loss modules: IQL and LAPO on the shared :class:`~torchrl_o3f.modules.QEnsemble`."""

from torchrl_o3f.objectives.common import expectile_loss, make_target_params, module_params
from torchrl_o3f.objectives.iql import IQLLoss, make_iql_loss
from torchrl_o3f.objectives.lapo import (
    LAPOLoss,
    lapo_family_defaults,
    lapo_reward_config,
    make_lapo_loss,
)

__all__ = [
    "IQLLoss",
    "LAPOLoss",
    "expectile_loss",
    "lapo_family_defaults",
    "lapo_reward_config",
    "make_iql_loss",
    "make_lapo_loss",
    "make_target_params",
    "module_params",
]
