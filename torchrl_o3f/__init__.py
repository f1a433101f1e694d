"""torchrl-o3f: offline-to-online RL with optimistic action selection (O3F) for TorchRL.

The package is a set of TorchRL components:

- :mod:`torchrl_o3f.modules`: :class:`QEnsemble` (m critics in one vectorised module),
  :class:`O3FActionSelector` (the optimistic post-policy module), actors and LAPO's networks;
- :mod:`torchrl_o3f.objectives`: :class:`IQLLoss` and :class:`LAPOLoss` on the shared ensemble;
- :mod:`torchrl_o3f.data`: offline datasets built and loaded without a hub, normalised scores;
- :mod:`torchrl_o3f.envs`: the task registry and environment factory;
- :mod:`torchrl_o3f.trainers`: the offline-then-online trainer used by the recipes, and
  :func:`load_policy`, a trained policy for deployment.
"""

__version__ = "0.1.0"

from torchrl_o3f.envs import get_task, list_tasks, make_env  # noqa: E402
from torchrl_o3f.modules import O3FActionSelector, QEnsemble  # noqa: E402
from torchrl_o3f.objectives import IQLLoss, LAPOLoss, make_iql_loss, make_lapo_loss  # noqa: E402
from torchrl_o3f.trainers.deploy import load_policy  # noqa: E402

__all__ = [
    "IQLLoss",
    "LAPOLoss",
    "O3FActionSelector",
    "QEnsemble",
    "__version__",
    "get_task",
    "list_tasks",
    "load_policy",
    "make_env",
    "make_iql_loss",
    "make_lapo_loss",
]
