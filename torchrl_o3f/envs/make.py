"""Making a registered task's environment as a TorchRL env with float32 flat observations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from torchrl_o3f.envs.tasks import Task, get_task

__all__ = [
    "cap_episodes",
    "flatten_observation",
    "make_env",
    "make_env_from_id",
    "make_gym_env",
    "observation_layout",
]

_ROBOTICS_REGISTERED = False


def _register_robotics() -> None:
    global _ROBOTICS_REGISTERED
    if not _ROBOTICS_REGISTERED:
        import contextlib
        import io
        import warnings

        # gymnasium-robotics prints a notice about the Adroit envs (not used here) to stderr
        # at import; keep the package's output readable.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        _ROBOTICS_REGISTERED = True


def _leaves(obs: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key in sorted(obs):
        value = obs[key]
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.extend(_leaves(value, name + "/"))
        else:
            out.append((name, value))
    return out


def _ordered_leaves(obs: Mapping[str, Any]) -> list[tuple[str, Any]]:
    # "observation" first, then the goal entries (achieved_goal/*, desired_goal/*) sorted.
    first = [(k, v) for k, v in _leaves(obs) if k == "observation"]
    rest = [(k, v) for k, v in _leaves(obs) if k != "observation"]
    return first + rest


def observation_layout(space_or_obs: gym.spaces.Dict | Mapping[str, Any]) -> list[tuple[str, int]]:
    """The flat layout of a dict observation: ``(leaf path, size)`` in concatenation order.

    The order is ``observation`` first, then every other leaf sorted by its path
    (``achieved_goal/...`` before ``desired_goal/...``). The same order is used for the
    environment and for datasets, so both agree element by element.

    Example:
        >>> import numpy as np
        >>> observation_layout({"observation": np.zeros(4), "desired_goal": np.zeros(2),
        ...                     "achieved_goal": np.zeros(2)})
        [('observation', 4), ('achieved_goal', 2), ('desired_goal', 2)]
    """
    if isinstance(space_or_obs, gym.spaces.Dict):
        space_or_obs = dict(space_or_obs.spaces)
    out = []
    for key, value in _ordered_leaves(space_or_obs):
        shape = value.shape
        out.append((key, int(np.prod(shape[-1:])) if len(shape) else 1))
    return out


def flatten_observation(obs: Mapping[str, Any]) -> np.ndarray:
    """Flatten a (nested) dict observation into one float32 vector (or batch of vectors).

    Works on a single observation (leaves of shape ``[d]``) and on a stack of them (leaves of
    shape ``[T, d]``, as stored in a Minari episode), concatenating along the last dimension in
    the order of :func:`observation_layout`.

    Example:
        >>> import numpy as np
        >>> flatten_observation({"observation": np.ones(3), "desired_goal": np.zeros(2)})
        array([1., 1., 1., 0., 0.], dtype=float32)
    """
    parts = [np.asarray(v, dtype=np.float32) for _, v in _ordered_leaves(obs)]
    parts = [p[..., None] if p.ndim == 0 else p for p in parts]
    return np.concatenate(parts, axis=-1)


class FlattenDictObservation(gym.ObservationWrapper):
    """Gymnasium wrapper turning a dict observation into one float32 Box (see flatten)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        size = sum(n for _, n in observation_layout(env.observation_space))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)

    def observation(self, observation):  # noqa: D102
        return flatten_observation(observation)


class Float32Action(gym.ActionWrapper):
    """Gymnasium wrapper exposing a float64 Box action space as float32 (FrankaKitchen)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.action_space
        self.action_space = gym.spaces.Box(
            space.low.astype(np.float32), space.high.astype(np.float32), space.shape, np.float32
        )

    def action(self, action):  # noqa: D102
        return np.asarray(action, dtype=self.env.action_space.dtype)


def make_gym_env(task: str | Task, **overrides: Any) -> gym.Env:
    """Make the task's gymnasium env with flat float32 observations and float32 actions.

    Args:
        task: a task name or :class:`Task`.
        **overrides: keyword arguments for ``gymnasium.make`` that replace the task's own.

    Example:
        >>> env = make_gym_env("hopper-medium")
        >>> env.observation_space.shape, env.action_space.shape
        ((11,), (3,))
    """
    task = get_task(task)
    _register_robotics()
    kwargs = {**task.env_kwargs, **overrides}
    kwargs.setdefault("max_episode_steps", task.max_episode_steps)
    env = gym.make(task.env_id, **kwargs)
    if isinstance(env.observation_space, gym.spaces.Dict):
        env = FlattenDictObservation(env)
    elif env.observation_space.dtype != np.float32:
        env = gym.wrappers.TransformObservation(
            env,
            lambda o: np.asarray(o, dtype=np.float32),
            gym.spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32),
        )
    if env.action_space.dtype != np.float32:
        env = Float32Action(env)
    return env


def make_env(
    task: str | Task,
    *,
    device: str | None = None,
    seed: int | None = None,
    num_envs: int = 1,
    **overrides: Any,
):
    """Make a registered task's environment as a TorchRL env.

    The env has float32 ``observation`` (dict observations of the goal-conditioned robotics
    envs flattened in the layout of :func:`observation_layout`, the same as datasets), float32
    ``action`` within the env's bounds, and the task's episode cap (``next/truncated`` when it
    is reached). Success (antmaze: any positive reward in an episode) and tasks completed
    (kitchen: the episode return) are read off the rewards by the scoring functions.

    Args:
        task: a task name or :class:`Task`.
        device: the device of the env's tensors (``None``: CPU).
        seed: seed the env (and its action spec).
        num_envs: more than one gives a :class:`torchrl.envs.SerialEnv` of that many copies
            with batch size ``[num_envs]``.
        **overrides: keyword arguments for ``gymnasium.make``.

    Example:
        >>> from torchrl.envs.utils import check_env_specs
        >>> env = make_env("halfcheetah-medium", seed=0)
        >>> check_env_specs(env)
        >>> env.observation_spec["observation"].shape
        torch.Size([17])
    """
    from torchrl.envs import GymWrapper, SerialEnv

    task = get_task(task)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if num_envs > 1:
        env = SerialEnv(num_envs, lambda: make_env(task, device=device, **overrides))
        if seed is not None:
            env.set_seed(seed)
        return env
    gym_env = make_gym_env(task, **overrides)
    env = GymWrapper(gym_env, device=device)
    if seed is not None:
        env.set_seed(seed)
    return env


def make_env_from_id(env_id: str, *, max_episode_steps: int | None = None):
    """A torchrl env of a gymnasium id with float32 observations (for ``env=<id>``).

    ``max_episode_steps`` (``None``: the id's own) is the episode cap given to
    ``gymnasium.make``.

    Example:
        >>> make_env_from_id("Pendulum-v1").action_spec.shape
        torch.Size([1])
    """
    from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv

    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    return TransformedEnv(GymEnv(env_id, **kwargs), DoubleToFloat())


def cap_episodes(env, max_steps: int):
    """``env`` with its episodes truncated after ``max_steps`` steps (a run's episode cap).

    Appends a torchrl ``StepCounter`` (on a key of its own, so an env that counts its steps
    already keeps its count): an episode then ends at the cap or at the env's own end,
    whichever comes first.

    Example:
        >>> env = cap_episodes(make_env_from_id("Pendulum-v1"), 7)
        >>> env.rollout(100).shape
        torch.Size([7])
    """
    from torchrl.envs import StepCounter, TransformedEnv

    counter = StepCounter(max_steps=max_steps, step_count_key="o3f_episode_step")
    if isinstance(env, TransformedEnv):
        env.append_transform(counter)
        return env
    return TransformedEnv(env, counter)
