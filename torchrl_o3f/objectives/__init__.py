"""Loss modules: IQL and LAPO on the shared :class:`~torchrl_o3f.modules.QEnsemble`."""

from torchrl_o3f.objectives.common import expectile_loss, make_target_params, module_params
from torchrl_o3f.objectives.iql import IQLLoss, make_iql_loss

__all__ = [
    "IQLLoss",
    "expectile_loss",
    "make_iql_loss",
    "make_target_params",
    "module_params",
]
