"""Trained policies for deployment: the policy-only file a run writes, and :func:`load_policy`.

A finished run writes ``policy.pt`` next to its checkpoints: the acting network's parameters
and buffers (observation statistics included), the action bounds, the observation size and the
run's resolved config. :func:`load_policy` turns it (or any checkpoint, or a run directory) back
into the acting module, built by the algorithm's registered policy builder from the recorded
config alone: no loss, no critic, no optimiser, no dataset, no environment. :func:`evaluate_run`
scores it as the trainer does, :func:`render_episode` films one episode; a file that acts without
this package is written by :func:`~torchrl_o3f.trainers.export.export_policy`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_o3f.envs import get_task, make_env, make_gym_env
from torchrl_o3f.errors import O3FError
from torchrl_o3f.objectives.registry import get_algorithm
from torchrl_o3f.trainers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from torchrl_o3f.trainers.config import resolve_device
from torchrl_o3f.trainers.evaluation import evaluate
from torchrl_o3f.trainers.record import config_from_record

__all__ = [
    "DeployedPolicy",
    "ObservationError",
    "RenderError",
    "evaluate_run",
    "load_policy",
    "render_episode",
    "save_policy",
    "video_writer",
]

POLICY_FORMAT = "torchrl-o3f-policy/1"


class ObservationError(O3FError, ValueError):
    """An observation a deployed policy cannot act on: the wrong size, or not numbers."""


class RenderError(O3FError, RuntimeError):
    """An episode that cannot be filmed: a missing video writer, or an env that cannot render."""


class DeployedPolicy(TensorDictModuleBase):
    """A trained acting module: reads ``observation``, writes ``action`` (env units, in bounds).

    Deterministic by default (the policy's mean / mode, as in evaluation); with
    ``deterministic=False`` it samples under RANDOM exploration like the behavior policy
    (without any post-policy exploration module). Works on tensordicts with and without batch
    dimensions; ``act(observation)`` takes a tensor, a numpy array or a list and returns a
    tensor, ``predict(observation)`` returns a float32 numpy array (what a gymnasium loop
    wants).

    Observations are converted once to the policy's dtype (float32) and device, so float64
    numpy arrays (what gymnasium returns) are accepted; with ``observation_dim`` given (as
    :func:`load_policy` does) an observation of another size is refused with
    :class:`ObservationError` naming both sizes.

    Args:
        policy: the algorithm's acting module (``loss.policy``).
        deterministic: act with the deterministic policy.
        observation_dim: the size of the observations the policy was trained on (``None``: not
            checked).
        action_low: lower action bounds ``[act_dim]`` in env units (``None``: not known);
            :meth:`predict` clips into them, and so does an exported file.
        action_high: upper action bounds ``[act_dim]``.
        action_key: the key of the action among the policy's outputs (a probabilistic actor
            also writes ``loc`` and ``scale``).

    Example:
        >>> import numpy as np
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.modules import make_iql_actor
        >>> actor = make_iql_actor(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=8)
        >>> policy = DeployedPolicy(actor, observation_dim=3)
        >>> policy.act(np.zeros(3)).shape  # float64 numpy, as gymnasium gives it
        torch.Size([2])
        >>> action = policy.predict(np.zeros((4, 3)))
        >>> action.shape, action.dtype
        ((4, 2), dtype('float32'))
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
        action_low: torch.Tensor | None = None,
        action_high: torch.Tensor | None = None,
        action_key: str = "action",
    ):
        self.in_keys = list(policy.in_keys)
        self.out_keys = list(policy.out_keys)
        super().__init__()
        self.policy = policy
        self.deterministic = deterministic
        self.observation_dim = observation_dim
        self.action_key = action_key
        if (action_low is None) != (action_high is None):
            raise ValueError("give both action_low and action_high, or neither")
        low = high = None
        if action_low is not None:
            low = torch.as_tensor(action_low, dtype=torch.float32).reshape(-1).clone()
            high = torch.as_tensor(action_high, dtype=torch.float32).reshape(-1).clone()
            if low.shape != high.shape or bool((high < low).any()):
                raise ValueError(f"need action_low <= action_high, got {low}, {high}")
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

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
        return self(td)[self.action_key]

    def predict(self, observation) -> np.ndarray:
        """The action for one observation ``[obs_dim]`` or a batch ``[B, obs_dim]``, as numpy.

        Args:
            observation: a numpy array, a tensor or a list of floats (any float dtype).

        Returns:
            float32 actions in env units, ``[act_dim]`` or ``[B, act_dim]``, clipped into the
            action bounds when the policy knows them (:func:`load_policy` gives them).

        Raises:
            ObservationError: for an observation of the wrong size, not made of numbers, or
                with more than one batch dimension.
        """
        obs = self._observation(observation)
        if obs.dim() not in (1, 2):
            raise ObservationError(
                f"predict takes one observation [obs_dim] or a batch [B, obs_dim], got shape "
                f"{list(obs.shape)}; flatten the batch dimensions first"
            )
        action = self.act(obs)
        if self.action_low is not None:
            action = torch.clamp(action, self.action_low, self.action_high)
        return action.detach().cpu().numpy().astype(np.float32, copy=False)


def _build_policy(record: dict[str, Any], observation_dim: int, spec: Bounded, device):
    """The recorded run's acting module and its algorithm (identity statistics until loaded)."""
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
    return _load_run(source, device=device, deterministic=deterministic)[0]


def _load_run(
    source: str | os.PathLike, *, device="cpu", deterministic: bool = True
) -> tuple[DeployedPolicy, dict[str, Any]]:
    """:func:`load_policy`'s policy and the run's recorded config."""
    device = resolve_device(device)  # before reading anything: a missing GPU is one line
    path = Path(source)
    if path.is_dir() and (path / "policy.pt").exists():
        path = path / "policy.pt"
    state = load_checkpoint(path)
    if state.get("format") == POLICY_FORMAT:
        spec = Bounded(state["action_low"], state["action_high"], shape=state["action_low"].shape)
        obs_dim = int(state["observation_dim"])
        record = state["config"]
        acting, _ = _build_policy(record, obs_dim, spec, device)
        acting.load_state_dict(state["policy"])
    else:
        record = state.get("meta", {}).get("config") if isinstance(state, dict) else None
        if not isinstance(record, dict) or "derived" not in record:
            raise CheckpointError(
                f"{path} is neither a torchrl-o3f policy file nor a checkpoint that records its "
                "config; give a run directory, its policy.pt or one of its checkpoints"
            )
        probe = make_env(record["task"])
        spec = probe.action_spec
        obs_dim = probe.observation_spec["observation"].shape[-1]
        probe.close()
        acting, algorithm = _build_policy(record, obs_dim, spec, device)
        acting.load_state_dict(algorithm.loss_class.policy_state_dict(state["agent"]["loss"]))
    policy = DeployedPolicy(
        acting,
        deterministic=deterministic,
        observation_dim=obs_dim,
        action_low=spec.space.low,
        action_high=spec.space.high,
    )
    policy = policy.to(device)
    return policy, record


def _run_env_settings(record: dict[str, Any]):
    """``(config, task, episode cap)`` of a recorded run, refusing one that acted in its own env."""
    cfg = config_from_record(record)
    env_used = (record.get("derived") or {}).get("env", "")
    if "given as env=" in str(env_used):
        raise O3FError(
            f"the run acted in an env given to the trainer ({env_used}), which a run directory "
            "cannot rebuild; evaluate it with torchrl_o3f.trainers.evaluate(load_policy(run), "
            "your_env, task)"
        )
    return cfg, cfg.task, cfg.max_episode_steps()


def evaluate_run(
    source: str | os.PathLike,
    *,
    num_episodes: int | None = None,
    seed: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Score a finished run's deterministic policy as its trainer does.

    The run's task env (with the run's episode cap) seeded with ``seed``, and
    :func:`~torchrl_o3f.trainers.evaluate` (the trainer's own evaluation: whole episodes, the
    D4RL-scale normalised score of :func:`~torchrl_o3f.data.normalized_score`). With the
    defaults, the episodes are the trainer's evaluation episodes (seed ``cfg.seed + 10000``,
    ``budget.eval_episodes`` of them), so the score is the run's final evaluation.

    Args:
        source: a run directory, its ``policy.pt`` or one of its checkpoints.
        num_episodes: episodes to run (``None``: the run's ``budget.eval_episodes``).
        seed: the evaluation env's seed (``None``: the trainer's, ``cfg.seed + 10000``).
        device: where the policy and the env's tensors live.

    Returns:
        :func:`~torchrl_o3f.trainers.evaluate`'s dictionary (``score``, ``score_std``,
        ``return``, ``eval_episodes``, ...).

    Raises:
        CheckpointError: when ``source`` holds no policy file or checkpoint.
        O3FError: for a run that acted in an env given to the trainer (not rebuildable), or
            ``num_episodes`` below 1.

    Example:
        >>> evaluate_run("runs/my-iql", num_episodes=10)["score"]  # doctest: +SKIP
        42.0
    """
    if num_episodes is not None and (not isinstance(num_episodes, int) or num_episodes < 1):
        raise O3FError(f"num_episodes must be an integer >= 1, got {num_episodes!r}")
    policy, record = _load_run(source, device=device)
    cfg, task, cap = _run_env_settings(record)
    seed = cfg.seed + 10_000 if seed is None else int(seed)
    derived = record.get("derived") or {}
    env = make_env(task, seed=seed, device=_policy_device(policy), max_episode_steps=cap)
    try:
        return evaluate(
            policy,
            env,
            task,
            num_episodes=num_episodes or cfg.budget.eval_episodes,
            dataset_id=derived.get("dataset_id") if derived.get("num_offline") else None,
            dataset_root=cfg.dataset_root,
        )
    finally:
        env.close()


def _policy_device(policy: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for a module without any)."""
    for tensor in (*policy.parameters(), *policy.buffers()):
        return tensor.device
    return torch.device("cpu")


def video_writer(path: str | os.PathLike):
    """``imageio``'s ``mimsave`` for a video file ``path``, checked before any episode runs.

    Raises:
        RenderError: when ``imageio`` is not installed, or ``imageio-ffmpeg`` for a suffix other
            than ``.gif``; the message gives the pip command.
        O3FError: when the folder of ``path`` does not exist.

    Example:
        >>> video_writer("no/such/folder/episode.gif")
        Traceback (most recent call last):
        ...
        torchrl_o3f.errors.O3FError: cannot write no/such/folder/episode.gif: its folder ...
    """
    import importlib.util

    path = Path(path)
    if not path.parent.is_dir():
        raise O3FError(f"cannot write {path}: its folder {path.parent} does not exist")
    if importlib.util.find_spec("imageio") is None:
        raise RenderError(
            f"writing {path.name} needs imageio, which is not installed: pip install imageio"
        )
    if path.suffix.lower() != ".gif" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RenderError(
            f"writing {path.name} ({path.suffix or 'no suffix'}) needs imageio-ffmpeg, which is "
            "not installed: pip install imageio-ffmpeg (or write a .gif)"
        )
    import imageio

    return imageio.mimsave


def render_episode(
    source: str | os.PathLike | DeployedPolicy,
    path: str | os.PathLike,
    *,
    task: str | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Film one episode of a run's deterministic policy into a video file (``.mp4``, ``.gif``).

    A plain gymnasium loop on the run's task env (``render_mode="rgb_array"``) with
    :meth:`DeployedPolicy.predict`; the frames are written with ``imageio`` (``.gif``: pillow;
    other suffixes: ``imageio-ffmpeg``).

    Args:
        source: a run directory, its ``policy.pt`` or a checkpoint; or a
            :class:`DeployedPolicy` (then ``task`` is needed).
        path: the video file; its folder must exist.
        task: the task whose env to film (``None``: the run's).
        seed: the env's reset seed (``None``: the trainer's evaluation seed).
        max_steps: the episode cap (``None``: the run's, or the task's).

    Returns:
        ``{"return": ..., "length": ..., "frames": ...}`` of the filmed episode.

    Raises:
        RenderError: when imageio (or imageio-ffmpeg for an mp4) is missing, or the env cannot
            render (MuJoCo without an OpenGL backend: set ``MUJOCO_GL``).
        O3FError: for a folder that does not exist, or a policy given without its task.

    Example:
        >>> render_episode("runs/my-iql", "episode.gif", seed=0)  # doctest: +SKIP
        {'return': 1523.4, 'length': 1000, 'frames': 1001}
    """
    path = Path(path)
    write = video_writer(path)
    if isinstance(source, DeployedPolicy):
        if task is None:
            raise O3FError("render_episode of a DeployedPolicy needs its task= (a task name)")
        policy, seed = source, 0 if seed is None else seed
        cap = max_steps or get_task(task).max_episode_steps
    else:
        policy, record = _load_run(source)
        cfg, run_task, cap = _run_env_settings(record)
        task = task or run_task
        seed = cfg.seed + 10_000 if seed is None else int(seed)
        cap = max_steps or cap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MuJoCo's GL backends warn about a missing display
        env = make_gym_env(task, render_mode="rgb_array", max_episode_steps=cap)
    frames, total, steps = [], 0.0, 0
    try:
        obs, _ = env.reset(seed=seed)
        frames.append(_render(env, task))
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.predict(obs))
            total, steps, done = total + float(reward), steps + 1, terminated or truncated
            frames.append(_render(env, task))
    finally:
        env.close()
    fps = int(env.metadata.get("render_fps") or 30)
    if path.suffix.lower() == ".gif":
        write(str(path), frames, duration=1000 / fps, loop=0)  # pillow: ms per frame
    else:
        write(str(path), frames, fps=fps)
    return {"return": total, "length": steps, "frames": len(frames)}


def _render(env, task: str) -> np.ndarray:
    """One ``rgb_array`` frame, or a :class:`RenderError` saying why the env cannot render."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = env.render()
    except Exception as err:  # MuJoCo raises its own, OpenGL's or AttributeErrors here
        raise RenderError(
            f"the {task} env cannot render ({type(err).__name__}: {err}); without a display "
            "set MUJOCO_GL=egl (a GPU) or MUJOCO_GL=osmesa"
        ) from None
    if frame is None:
        raise RenderError(f"the {task} env rendered no frame (render_mode rgb_array unsupported)")
    return np.asarray(frame)
