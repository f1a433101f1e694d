"""torchrl-o3f: offline-to-online RL with optimistic action selection (O3F) for TorchRL.

The package is a set of TorchRL components: a Q ensemble (:class:`~torchrl_o3f.modules.QEnsemble`),
the O3F action selector, IQL and LAPO losses, offline datasets built and loaded without a hub,
a task registry and an offline-then-online trainer.
"""

__version__ = "0.1.0"

from torchrl_o3f.envs import get_task, list_tasks, make_env  # noqa: E402

__all__ = ["__version__", "get_task", "list_tasks", "make_env"]
