"""torchrl-o3f: offline-to-online RL with optimistic action selection (O3F) for TorchRL.

The package is a set of TorchRL components, in layers that import only downwards
(``docs/architecture.md``):

- :mod:`torchrl_o3f.envs`: the task registry and environment factory;
- :mod:`torchrl_o3f.modules`: :class:`QEnsemble` (m critics in one vectorised module),
  :class:`O3FActionSelector` (the optimistic post-policy module), actors and LAPO's networks;
- :mod:`torchrl_o3f.data`: offline datasets built and loaded without a hub, normalised scores;
- :mod:`torchrl_o3f.objectives`: the loss protocol and the registered algorithms' losses (IQL,
  LAPO, SAC, CQL, AWAC, ...) on the shared ensemble;
- :mod:`torchrl_o3f.trainers`: the offline-then-online trainer used by the recipes, and
  :func:`load_policy`, a trained policy for deployment, and :func:`export_policy`, one file
  that acts without this package (TorchScript, ``torch.export``, ONNX);
- :mod:`torchrl_o3f.analysis`: the statistics and figures of sweeps.

The names below are imported on first use, so ``import torchrl_o3f.data`` loads the data layer
and what it needs, not the trainer.
"""

import importlib

from torchrl_o3f._version import __version__

_EXPORTS = {
    "get_task": "torchrl_o3f.envs",
    "list_tasks": "torchrl_o3f.envs",
    "make_env": "torchrl_o3f.envs",
    "O3FActionSelector": "torchrl_o3f.modules",
    "QEnsemble": "torchrl_o3f.modules",
    "IQLLoss": "torchrl_o3f.objectives",
    "LAPOLoss": "torchrl_o3f.objectives",
    "make_iql_loss": "torchrl_o3f.objectives",
    "make_lapo_loss": "torchrl_o3f.objectives",
    "load_policy": "torchrl_o3f.trainers.deploy",
    "export_policy": "torchrl_o3f.trainers.export",
}

__all__ = [
    "IQLLoss",
    "LAPOLoss",
    "O3FActionSelector",
    "QEnsemble",
    "__version__",
    "export_policy",
    "get_task",
    "list_tasks",
    "load_policy",
    "make_env",
    "make_iql_loss",
    "make_lapo_loss",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'torchrl_o3f' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
