"""Task registry and environment factory.

``get_task(name)`` resolves a task name to everything the package knows about it;
``make_env(name)`` builds its TorchRL environment.
"""

from torchrl_o3f.envs.make import (
    cap_episodes,
    flatten_observation,
    make_env,
    make_env_from_id,
    make_gym_env,
    observation_layout,
)
from torchrl_o3f.envs.tasks import (
    D4RL_REFERENCE_RETURNS,
    Task,
    UnknownTaskError,
    get_task,
    list_tasks,
    register_task,
)

__all__ = [
    "D4RL_REFERENCE_RETURNS",
    "Task",
    "UnknownTaskError",
    "cap_episodes",
    "flatten_observation",
    "get_task",
    "list_tasks",
    "make_env",
    "make_env_from_id",
    "make_gym_env",
    "observation_layout",
    "register_task",
]
