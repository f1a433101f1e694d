"""Trained policies for deployment: the policy-only file a run writes, and :func:`load_policy`.

A finished run writes ``policy.pt`` next to its checkpoints: the acting network's parameters,
the action bounds, the observation size and the run's resolved config. :func:`load_policy` turns
it (or any checkpoint, or a run directory) back into the acting module, built from the recorded
config alone: no loss, no optimiser, no dataset, no environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_o3f.trainers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["DeployedPolicy", "load_policy", "save_policy"]

POLICY_FORMAT = "torchrl-o3f-policy/1"


class DeployedPolicy(TensorDictModuleBase):
    """A trained acting module: reads ``observation``, writes ``action`` (env units, in bounds).

    Deterministic by default (the policy's mean / mode, as in evaluation); with
    ``deterministic=False`` it samples under RANDOM exploration like the behaviour policy
    (without any post-policy exploration module). Works on tensordicts with and without batch
    dimensions; ``act(observation)`` takes a tensor.

    Args:
        policy: the algorithm's acting module (``loss.policy``).
        deterministic: act with the deterministic policy.

    Example:
        >>> import torch
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.modules import make_iql_actor
        >>> policy = DeployedPolicy(make_iql_actor(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=8))
        >>> policy.act(torch.zeros(3)).shape
        torch.Size([2])
    """

    def __init__(self, policy: TensorDictModuleBase, *, deterministic: bool = True):
        self.in_keys = list(policy.in_keys)
        self.out_keys = list(policy.out_keys)
        super().__init__()
        self.policy = policy
        self.deterministic = deterministic

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``action`` into ``tensordict``."""
        kind = ExplorationType.DETERMINISTIC if self.deterministic else ExplorationType.RANDOM
        with set_exploration_type(kind), torch.no_grad():
            return self.policy(tensordict)

    def act(self, observation: torch.Tensor) -> torch.Tensor:
        """The action for an observation tensor ``[*batch, obs_dim]`` -> ``[*batch, act_dim]``."""
        td = TensorDict({self.in_keys[0]: observation}, batch_size=observation.shape[:-1])
        return self(td)["action"]


def _placeholder_data(observation_dim: int, action_dim: int) -> TensorDict:
    """Four transitions, two episodes: data-derived settings the loaded state then replaces."""
    n = 4
    return TensorDict(
        {
            "observation": torch.zeros(n, observation_dim),
            "action": torch.zeros(n, action_dim),
            "next": {
                "observation": torch.zeros(n, observation_dim),
                "reward": torch.tensor([[0.0], [1.0], [0.0], [2.0]]),
                "done": torch.tensor([[False], [True], [False], [True]]),
                "terminated": torch.zeros(n, 1, dtype=torch.bool),
            },
        },
        batch_size=[n],
    )


def _build_policy(record: dict[str, Any], observation_dim: int, spec: Bounded, device):
    from torchrl_o3f.objectives.registry import get_algorithm
    from torchrl_o3f.trainers.record import config_from_record

    cfg = config_from_record(record).online_config()  # the policy that acted last
    data = _placeholder_data(observation_dim, spec.shape[-1])
    loss = get_algorithm(cfg.name).make_loss(
        cfg, observation_dim=observation_dim, action_spec=spec, data=data, device=device
    )
    return loss


def save_policy(trainer, path: str | os.PathLike) -> Path:
    """Write the policy-only file of a trained :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer`.

    Holds the acting network's state, the action bounds, the observation size and the run's
    resolved config (tensors and plain data only; written atomically with an integrity record).
    """
    spec = trainer.action_spec
    state = {
        "format": POLICY_FORMAT,
        "config": trainer.config_record,
        "observation_dim": int(trainer.observation_dim),
        "action_low": spec.space.low.detach().cpu().reshape(-1).clone(),
        "action_high": spec.space.high.detach().cpu().reshape(-1).clone(),
        "policy": {k: v.detach().cpu() for k, v in trainer.agent.policy.state_dict().items()},
    }
    return save_checkpoint(state, path)


def load_policy(
    source: str | os.PathLike, *, device: str | torch.device = "cpu", deterministic: bool = True
) -> DeployedPolicy:
    """The trained acting module of a run, built from its recorded config.

    Args:
        source: a run directory (its ``policy.pt``, else its latest checkpoint), a policy file
            or a checkpoint of the trainer.
        device: where the module lives.
        deterministic: act deterministically (the default, as in evaluation).

    Returns:
        A :class:`DeployedPolicy` reading ``observation`` and writing ``action``.

    Raises:
        CheckpointError: when ``source`` is neither a policy file nor a trainer checkpoint, or
            records no config.

    Example:
        >>> import tempfile
        >>> from torchrl_o3f.trainers import BUDGETS, OfflineOnlineTrainer, TrainerConfig
        >>> cfg = TrainerConfig(task="hopper-random", algo="iql", budget=BUDGETS["smoke"],
        ...                     output_dir=tempfile.mkdtemp(), progress=False)
        >>> cfg.algo.num_cells = 16
        >>> _ = OfflineOnlineTrainer(cfg).train()  # doctest: +SKIP
        >>> policy = load_policy(cfg.output_dir)  # doctest: +SKIP
    """
    path = Path(source)
    if path.is_dir() and (path / "policy.pt").exists():
        path = path / "policy.pt"
    state = load_checkpoint(path)
    device = torch.device(device)
    if state.get("format") == POLICY_FORMAT:
        spec = Bounded(state["action_low"], state["action_high"], shape=state["action_low"].shape)
        loss = _build_policy(state["config"], state["observation_dim"], spec, device)
        loss.policy.load_state_dict(state["policy"])
    else:
        record = state.get("meta", {}).get("config") if isinstance(state, dict) else None
        if not isinstance(record, dict) or "derived" not in record:
            raise CheckpointError(
                f"{path} is neither a torchrl-o3f policy file nor a checkpoint that records its "
                "config; give a run directory, its policy.pt or one of its checkpoints"
            )
        from torchrl_o3f.envs import make_env

        probe = make_env(record["task"])
        spec = probe.action_spec
        obs_dim = probe.observation_spec["observation"].shape[-1]
        probe.close()
        loss = _build_policy(record, obs_dim, spec, device)
        loss.load_state_dict(state["agent"]["loss"])
    policy = DeployedPolicy(loss.policy, deterministic=deterministic).to(device)
    return policy
