"""Trained policies for deployment: the policy-only file a run writes, and :func:`load_policy`.

A finished run writes ``policy.pt`` next to its checkpoints: the acting network's parameters
and buffers (observation statistics included), the action bounds, the observation size and the
run's resolved config. :func:`load_policy` turns it (or any checkpoint, or a run directory) back
into the acting module, built by the algorithm's registered policy builder from the recorded
config alone: no loss, no critic, no optimiser, no dataset, no environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_o3f.errors import O3FError
from torchrl_o3f.objectives.registry import get_algorithm
from torchrl_o3f.trainers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from torchrl_o3f.trainers.config import resolve_device

__all__ = ["DeployedPolicy", "ObservationError", "load_policy", "save_policy"]

POLICY_FORMAT = "torchrl-o3f-policy/1"


class ObservationError(O3FError, ValueError):
    """An observation a deployed policy cannot act on: the wrong size, or not numbers."""


class DeployedPolicy(TensorDictModuleBase):
    """A trained acting module: reads ``observation``, writes ``action`` (env units, in bounds).

    Deterministic by default (the policy's mean / mode, as in evaluation); with
    ``deterministic=False`` it samples under RANDOM exploration like the behaviour policy
    (without any post-policy exploration module). Works on tensordicts with and without batch
    dimensions; ``act(observation)`` takes a tensor, a numpy array or a list.

    Observations are converted once to the policy's dtype (float32) and device, so float64
    numpy arrays (what gymnasium returns) are accepted; with ``observation_dim`` given (as
    :func:`load_policy` does) an observation of another size is refused with
    :class:`ObservationError` naming both sizes.

    Args:
        policy: the algorithm's acting module (``loss.policy``).
        deterministic: act with the deterministic policy.
        observation_dim: the size of the observations the policy was trained on (``None``: not
            checked).

    Example:
        >>> import numpy as np
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.modules import make_iql_actor
        >>> actor = make_iql_actor(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=8)
        >>> policy = DeployedPolicy(actor, observation_dim=3)
        >>> policy.act(np.zeros(3)).shape  # float64 numpy, as gymnasium gives it
        torch.Size([2])
        >>> policy.act(np.zeros(5))
        Traceback (most recent call last):
        ...
        torchrl_o3f.trainers.deploy.ObservationError: observation of size 5 ...
    """

    def __init__(
        self,
        policy: TensorDictModuleBase,
        *,
        deterministic: bool = True,
        observation_dim: int | None = None,
    ):
        self.in_keys = list(policy.in_keys)
        self.out_keys = list(policy.out_keys)
        super().__init__()
        self.policy = policy
        self.deterministic = deterministic
        self.observation_dim = observation_dim

    def _observation(self, observation) -> torch.Tensor:
        """``observation`` as a tensor of the policy's dtype and device, its size checked."""
        param = next(self.policy.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else None
        try:
            if not isinstance(observation, torch.Tensor):
                observation = np.asarray(observation)
            obs = torch.as_tensor(observation, dtype=dtype, device=device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ObservationError(
                f"observation of type {type(observation).__name__} is not an array of numbers "
                f"({err}); give a tensor, a numpy array or a list of floats"
            ) from None
        size = obs.shape[-1] if obs.dim() else 1
        if self.observation_dim is not None and (obs.dim() == 0 or size != self.observation_dim):
            raise ObservationError(
                f"observation of size {size} (shape {list(obs.shape)}), but the policy was "
                f"trained on observations of size {self.observation_dim}: give the flat "
                f"observation vector of the run's task, shape [{self.observation_dim}] or "
                f"[batch, {self.observation_dim}]"
            )
        return obs

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``action`` into ``tensordict`` (its observation converted and checked)."""
        key = self.in_keys[0]
        tensordict.set(key, self._observation(tensordict.get(key)))
        kind = ExplorationType.DETERMINISTIC if self.deterministic else ExplorationType.RANDOM
        with set_exploration_type(kind), torch.no_grad():
            return self.policy(tensordict)

    def act(self, observation) -> torch.Tensor:
        """The action for an observation ``[*batch, obs_dim]`` -> ``[*batch, act_dim]``.

        Raises:
            ObservationError: for an observation of the wrong size or not made of numbers.
        """
        obs = self._observation(observation)
        td = TensorDict({self.in_keys[0]: obs}, batch_size=obs.shape[:-1], device=obs.device)
        return self(td)["action"]


def _build_policy(record: dict[str, Any], observation_dim: int, spec: Bounded, device):
    """The recorded run's acting module and its algorithm (identity statistics until loaded)."""
    from torchrl_o3f.trainers.record import config_from_record

    cfg = config_from_record(record).online_config()  # the policy that acted last
    algorithm = get_algorithm(cfg.name)
    policy = algorithm.make_policy(
        cfg, observation_dim=observation_dim, action_spec=spec, device=device
    )
    return policy, algorithm


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
        ConfigError: for a device this machine does not have (``device="cuda"`` without CUDA).

    Example:
        >>> import tempfile
        >>> from torchrl_o3f.trainers import BUDGETS, OfflineOnlineTrainer, TrainerConfig
        >>> cfg = TrainerConfig(task="hopper-random", algo="iql", budget=BUDGETS["smoke"],
        ...                     output_dir=tempfile.mkdtemp(), progress=False)
        >>> cfg.algo.num_cells = 16
        >>> _ = OfflineOnlineTrainer(cfg).train()  # doctest: +SKIP
        >>> policy = load_policy(cfg.output_dir)  # doctest: +SKIP
    """
    device = resolve_device(device)  # before reading anything: a missing GPU is one line
    path = Path(source)
    if path.is_dir() and (path / "policy.pt").exists():
        path = path / "policy.pt"
    state = load_checkpoint(path)
    if state.get("format") == POLICY_FORMAT:
        spec = Bounded(state["action_low"], state["action_high"], shape=state["action_low"].shape)
        obs_dim = int(state["observation_dim"])
        policy, _ = _build_policy(state["config"], obs_dim, spec, device)
        policy.load_state_dict(state["policy"])
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
        policy, algorithm = _build_policy(record, obs_dim, spec, device)
        policy.load_state_dict(algorithm.loss_class.policy_state_dict(state["agent"]["loss"]))
    policy = DeployedPolicy(policy, deterministic=deterministic, observation_dim=obs_dim)
    policy = policy.to(device)
    return policy
