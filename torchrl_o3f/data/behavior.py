"""Behavior policies: the shipped actor checkpoints that the dataset builder rolls out.

D4RL made its locomotion datasets by rolling out SAC policies stopped at a given return
(``medium``: about a third of an expert's). :func:`torchrl_o3f.trainers.train_behavior` trains
such a policy with the registered SAC (a run of the trainer, so it lives in the trainers
layer); this module loads the checkpoints shipped in ``torchrl_o3f/data/policies`` (or written
by that command) as :class:`BehaviorPolicy` objects, measures and installs them.

A checkpoint is two files: ``<name>.pt`` (the actor network's state dict only) and
``<name>.json`` (architecture, env id, mujoco version, training steps and the returns measured
over deterministic and stochastic episodes).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchrl_o3f.envs import Task, list_tasks, make_gym_env
from torchrl_o3f.modules.actors import make_sac_actor
from torchrl_o3f.modules.networks import make_mlp

__all__ = [
    "BehaviorPolicy",
    "PolicyInfo",
    "POLICY_DIR",
    "MEDIUM_TARGETS",
    "make_behavior_actor",
    "evaluate_policy",
    "install_policy",
    "list_policies",
    "measure_policy",
    "load_behavior_policy",
]

POLICY_DIR = Path(__file__).resolve().parent / "policies"
"""Where the shipped behavior checkpoints live."""

MEDIUM_TARGETS: dict[str, float] = {"halfcheetah": 4000.0, "hopper": 1100.0, "walker2d": 1500.0}
"""Deterministic evaluation return at which ``train-behavior`` keeps a ``medium`` policy (v5
envs; about a third of an expert's return, as D4RL's medium policies)."""


@dataclass
class PolicyInfo:
    """The metadata stored next to an actor checkpoint (``<name>.json``).

    Attributes:
        name: checkpoint name, ``<family>-<quality>`` (e.g. ``"halfcheetah-medium"``).
        env_id: the gymnasium env the policy was trained and evaluated on.
        observation_dim: flat observation size.
        action_dim: action size.
        action_low: lower action bounds.
        action_high: upper action bounds.
        num_cells: hidden width of the actor MLP.
        depth: number of hidden layers of the actor MLP.
        train_steps: environment steps of training when the checkpoint was taken.
        seed: training seed.
        mujoco_version: the mujoco version of the measurements.
        returns: measured returns, e.g. ``{"deterministic": {"mean", "std", "episodes"},
            "stochastic": {...}}``.
        extra: free-form details (training hyper-parameters, wall time).

    Example:
        >>> info = PolicyInfo("toy", "Pendulum-v1", 3, 1, [-2.0], [2.0], num_cells=8, depth=1)
        >>> info.name, info.action_high
        ('toy', [2.0])
    """

    name: str
    env_id: str
    observation_dim: int
    action_dim: int
    action_low: list[float]
    action_high: list[float]
    num_cells: int = 256
    depth: int = 2
    train_steps: int = 0
    seed: int = 0
    mujoco_version: str = ""
    returns: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def make_behavior_actor(
    observation_dim: int,
    action_dim: int,
    *,
    action_low: float | torch.Tensor = -1.0,
    action_high: float | torch.Tensor = 1.0,
    num_cells: int = 256,
    depth: int = 2,
):
    """A SAC actor: MLP -> (loc, scale) -> TanhNormal within the action bounds.

    Args:
        observation_dim: flat observation size.
        action_dim: action size.
        action_low: lower action bound(s).
        action_high: upper action bound(s).
        num_cells: hidden width.
        depth: number of hidden layers.

    Returns:
        :func:`torchrl_o3f.modules.actors.make_sac_actor`'s actor, reading ``observation`` and
        writing ``action`` (and ``loc``/``scale``); its MLP is ``actor.module[0].module``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> actor = make_behavior_actor(3, 2, num_cells=16)
        >>> actor(TensorDict({"observation": torch.zeros(4, 3)}, [4]))["action"].shape
        torch.Size([4, 2])
    """
    from torchrl.data import Bounded

    low = torch.as_tensor(action_low, dtype=torch.float32).expand(action_dim).clone()
    high = torch.as_tensor(action_high, dtype=torch.float32).expand(action_dim).clone()
    spec = Bounded(low, high, shape=(action_dim,))
    return make_sac_actor(observation_dim, spec, num_cells=num_cells, depth=depth)


class BehaviorPolicy:
    """A trained actor, rolled out as a plain numpy-in, numpy-out policy.

    The stochastic action is ``low + (high - low) * (tanh(loc + scale * eps) + 1) / 2`` with
    ``eps ~ N(0, I)`` drawn from the given generator (the same TanhNormal as training, sampled
    reproducibly); the deterministic action uses ``eps = 0``.

    Args:
        net: the actor MLP (observation -> ``2 * action_dim``).
        info: the checkpoint metadata.

    Example:
        >>> import numpy as np, torch
        >>> info = PolicyInfo("toy", "Pendulum-v1", 3, 1, [-2.0], [2.0], num_cells=8, depth=1)
        >>> policy = BehaviorPolicy.from_info(info)
        >>> a = policy.act(np.zeros((5, 3), np.float32), generator=torch.Generator().manual_seed(0))
        >>> a.shape, bool((np.abs(a) <= 2).all())
        ((5, 1), True)
    """

    def __init__(self, net: nn.Module, info: PolicyInfo):
        from tensordict.nn import NormalParamExtractor

        self.net = net.eval()
        self.info = info
        self._extract = NormalParamExtractor()
        self._low = torch.tensor(info.action_low, dtype=torch.float32)
        self._high = torch.tensor(info.action_high, dtype=torch.float32)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the network's weights into the fast single-observation path.

        Rolling out one observation at a time through torch modules costs ~0.3 ms of module
        overhead per step; a plain numpy evaluation of the same Linear/ReLU stack takes a few
        microseconds, which makes dataset builds several times faster. The weights are copied
        when the policy is made: call this after changing the network in place.
        """
        from tensordict.nn.utils import biased_softplus

        ops: list | None = []
        for module in self.net.children():
            if isinstance(module, nn.Linear):
                w = module.weight.detach().cpu().numpy().T.copy()
                b = module.bias.detach().cpu().numpy().copy()
                ops.append((w, b))
            elif isinstance(module, nn.ReLU):
                ops.append(None)
            else:  # another activation: keep the torch path
                ops = None
                break
        mapping = self._extract.scale_mapping
        if not isinstance(mapping, biased_softplus):
            ops = None
        self._ops = ops
        if ops is not None:
            self._scale = (float(mapping.bias), float(mapping.min_val), self._extract.scale_lb)
            self._low_np, self._high_np = self._low.numpy(), self._high.numpy()

    @classmethod
    def from_info(cls, info: PolicyInfo, state_dict: dict | None = None) -> BehaviorPolicy:
        """Build the actor MLP described by ``info`` (and load ``state_dict`` if given)."""
        net = make_mlp(
            info.observation_dim, 2 * info.action_dim, num_cells=info.num_cells, depth=info.depth
        )
        if state_dict is not None:
            net.load_state_dict(state_dict)
        return cls(net, info)

    @torch.no_grad()
    def act(
        self,
        observation: np.ndarray,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Actions (float32) for a single observation ``[d]`` or a batch ``[B, d]``."""
        if self._ops is not None and np.ndim(observation) == 1:
            x = np.asarray(observation, dtype=np.float32)
            for op in self._ops:
                x = np.maximum(x, 0) if op is None else x @ op[0] + op[1]
            loc, pre_scale = np.split(x, 2)
            if not deterministic:
                bias, min_val, lb = self._scale
                scale = np.maximum(np.logaddexp(0, pre_scale + bias) + min_val, lb)
                noise = torch.randn(loc.shape, generator=generator).numpy()
                loc = loc + scale * noise
            unit = (np.tanh(loc) + 1) / 2
            return (self._low_np + (self._high_np - self._low_np) * unit).astype(np.float32)
        obs = torch.as_tensor(observation, dtype=torch.float32)
        loc, scale = self._extract(self.net(obs))
        if not deterministic:
            noise = torch.randn(loc.shape, generator=generator, dtype=loc.dtype)
            loc = loc + scale * noise
        unit = (torch.tanh(loc) + 1) / 2
        return (self._low + (self._high - self._low) * unit).numpy()

    def __call__(self, observation: np.ndarray) -> np.ndarray:
        """Deterministic action (the ``expert_policy`` signature Minari expects)."""
        return self.act(observation, deterministic=True)

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``<path>.pt`` (the MLP's state dict) and ``<path>.json`` (the metadata)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pt, js = path.with_suffix(".pt"), path.with_suffix(".json")
        torch.save({k: v.detach().clone() for k, v in self.net.state_dict().items()}, pt)
        js.write_text(json.dumps(asdict(self.info), indent=2) + "\n")
        return pt, js


def list_policies(directory: str | os.PathLike | None = None) -> list[str]:
    """Names of the checkpoints in ``directory`` (default: the shipped ones).

    Example:
        >>> "halfcheetah-medium" in list_policies()
        True
    """
    directory = Path(directory) if directory is not None else POLICY_DIR
    return sorted(p.stem for p in directory.glob("*.json") if p.with_suffix(".pt").exists())


def load_behavior_policy(name: str, directory: str | os.PathLike | None = None) -> BehaviorPolicy:
    """Load a behavior checkpoint by name (``"halfcheetah-medium"``).

    Args:
        name: checkpoint name, ``<family>-<quality>``.
        directory: where to look (default: the checkpoints shipped with the package).

    Raises:
        FileNotFoundError: no such checkpoint; the message lists the available ones and the
            command that trains one.

    Example:
        >>> policy = load_behavior_policy("halfcheetah-medium")
        >>> policy.info.env_id
        'HalfCheetah-v5'
    """
    directory = Path(directory) if directory is not None else POLICY_DIR
    js, pt = directory / f"{name}.json", directory / f"{name}.pt"
    if not (js.exists() and pt.exists()):
        family = name.split("-")[0]
        raise FileNotFoundError(
            f"no behavior policy {name!r} in {directory} (available: "
            f"{', '.join(list_policies(directory)) or 'none'}). Train one with "
            f"`python -m torchrl_o3f.data train-behavior {family}`."
        )
    info = PolicyInfo(**json.loads(js.read_text()))
    state = torch.load(pt, map_location="cpu", weights_only=True)
    return BehaviorPolicy.from_info(info, state)


def evaluate_policy(
    policy: Callable[[np.ndarray], np.ndarray] | BehaviorPolicy,
    task: str | Task,
    *,
    num_episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Undiscounted returns of full episodes of ``policy`` on the task's env.

    Args:
        policy: a :class:`BehaviorPolicy`, or any callable ``obs -> action``
            (``"random"`` is not accepted here; use a lambda sampling the action space).
        task: a task name or :class:`Task` (its env and episode cap are used).
        num_episodes: number of episodes.
        deterministic: for a :class:`BehaviorPolicy`, act with ``eps = 0``.
        seed: the env is reset with ``seed + i`` for episode ``i``; the policy noise is
            seeded with ``seed``.

    Returns:
        The returns, shape ``[num_episodes]`` (float64).

    Example:
        >>> env_returns = evaluate_policy(lambda o: np.zeros(6, np.float32), "halfcheetah-random",
        ...                               num_episodes=1)
        >>> env_returns.shape
        (1,)
    """
    env = make_gym_env(task)
    gen = torch.Generator().manual_seed(seed)
    returns = []
    for i in range(num_episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            if isinstance(policy, BehaviorPolicy):
                action = policy.act(obs, deterministic=deterministic, generator=gen)
            else:
                action = policy(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return np.asarray(returns, dtype=np.float64)


def _summary(returns: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "episodes": len(returns),
    }


def measure_policy(policy: BehaviorPolicy, *, num_episodes: int = 10) -> dict:
    """Measure a policy's returns on its env and record them in ``policy.info`` (in place).

    Runs ``num_episodes`` deterministic and ``num_episodes`` stochastic episodes (env seeds
    ``0..num_episodes-1``, noise seed 0) on ``policy.info.env_id`` and sets ``info.returns``
    (mean, std, episodes of each) and ``info.mujoco_version``.

    Returns:
        ``policy.info.returns``.

    Example:
        >>> info = PolicyInfo("toy", "Hopper-v5", 11, 3, [-1.0] * 3, [1.0] * 3, 8, 1)
        >>> returns = measure_policy(BehaviorPolicy.from_info(info), num_episodes=1)
        >>> sorted(returns)
        ['deterministic', 'stochastic']
    """
    import mujoco

    task = _task_of_env(policy.info.env_id)
    det = evaluate_policy(policy, task, num_episodes=num_episodes, deterministic=True, seed=0)
    sto = evaluate_policy(policy, task, num_episodes=num_episodes, deterministic=False, seed=0)
    policy.info.returns = {"deterministic": _summary(det), "stochastic": _summary(sto)}
    policy.info.mujoco_version = mujoco.__version__
    return policy.info.returns


def _task_of_env(env_id: str) -> Task:
    for task in list_tasks():
        if task.env_id == env_id and task.quality == "random":
            return task
    raise ValueError(f"no registered locomotion task runs {env_id!r}")


def install_policy(
    checkpoint: str | os.PathLike,
    *,
    name: str | None = None,
    num_episodes: int = 10,
    out_dir: str | os.PathLike | None = None,
    extra: dict | None = None,
) -> Path:
    """Measure a training checkpoint and install it as a behavior policy.

    Takes a snapshot of :func:`train_behavior` (``<run_dir>/behavior/<name>-step<N>``), e.g.
    when a run had to stop before reaching its target, measures it with
    :func:`measure_policy` and writes it as ``<out_dir>/<name>.{pt,json}``.

    Args:
        checkpoint: the checkpoint path, with or without the ``.pt``/``.json`` suffix.
        name: the installed name (default: the checkpoint's, e.g. ``"halfcheetah-medium"``).
        num_episodes: episodes of each measurement.
        out_dir: where to install (default: the package's policy folder).
        extra: details merged into ``info.extra``.

    Returns:
        The path of the written ``.pt`` file.
    """
    path = Path(checkpoint)
    stem = path.with_suffix("") if path.suffix in (".pt", ".json") else path
    policy = load_behavior_policy(stem.name, stem.parent)
    policy.info.name = name or policy.info.name
    policy.info.extra = {**policy.info.extra, **(extra or {}), "installed_from": stem.name}
    measure_policy(policy, num_episodes=num_episodes)
    pt, _ = policy.save(Path(out_dir or POLICY_DIR) / policy.info.name)
    return pt
