"""The offline-then-online trainer (the paper's Algorithm 1) for any loss of the package."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, OfflineToOnlineReplayBuffer, ReplayBuffer
from torchrl.data.replay_buffers import RandomSampler
from tqdm.auto import tqdm

from torchrl_o3f.envs import get_task, make_env
from torchrl_o3f.trainers.agents import Agent, build_agent, switch_agent
from torchrl_o3f.trainers.checkpoint import (
    CheckpointError,
    StopNow,
    StopSignals,
    copy_checkpoint,
    copy_state,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    write_atomic,
)
from torchrl_o3f.trainers.config import ConfigError, TrainerConfig, resolve_device
from torchrl_o3f.trainers.evaluation import evaluate
from torchrl_o3f.trainers.guard import NonFiniteError, NonFiniteGuard, check_finite_state

__all__ = [
    "OfflineOnlineTrainer",
    "as_ted_dataset",
    "make_env_from_id",
    "cap_episodes",
    "make_exploration",
    "resolve_device",
    "TED_KEYS",
]

_LOG = logging.getLogger(__name__)  # hydra's job log (<recipe>.log) receives these lines

RUN_FILES = (
    "config.yaml",
    "checkpoints",
    "metrics.jsonl",
    "summary.json",
    "evaluations.csv",
    "learning_curve.png",
    "policy.pt",
    "switch.json",
    "logs",
)
"""The files a run writes into its ``output_dir`` (what ``overwrite=True`` removes)."""

_RUN_MARKERS = ("checkpoints", "metrics.jsonl", "summary.json", "policy.pt")
"""Names only a run writes, the first two as it starts: a folder with one of them holds a run
(``config.yaml`` or ``logs/`` alone may be anyone's)."""

TED_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
)


def as_ted_dataset(dataset, *, root=None) -> tuple[str, TensorDictBase]:
    """``(dataset id, TED TensorDict)`` of a dataset given to the trainer.

    Accepts a TED TensorDict (``observation``, ``action``, ``next/{observation, reward, done,
    terminated}``, float32 observations and actions), the id of a Minari dataset on disk, or a
    torchrl replay buffer holding such transitions.

    Raises:
        TypeError: for anything else.
        KeyError: when a TED key is missing (naming it and what is there).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> td = TensorDict({"observation": torch.zeros(4, 3), "action": torch.zeros(4, 1),
        ...     "next": {"observation": torch.zeros(4, 3), "reward": torch.zeros(4, 1),
        ...              "done": torch.zeros(4, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(4, 1, dtype=torch.bool),
        ...              "truncated": torch.zeros(4, 1, dtype=torch.bool)}}, [4])
        >>> as_ted_dataset(td)[1].shape
        torch.Size([4])
    """
    from torchrl_o3f.data import load_offline_dataset

    if isinstance(dataset, str):
        return dataset, load_offline_dataset(dataset, root=root)
    if isinstance(dataset, ReplayBuffer):
        if len(dataset) == 0:
            raise ValueError("the replay buffer given as dataset is empty")
        dataset = dataset.storage[: len(dataset)]
        name = "replay-buffer"
    elif isinstance(dataset, TensorDictBase):
        name = "tensordict"
    else:
        raise TypeError(
            "dataset must be a TED TensorDict, a Minari dataset id on disk or a torchrl "
            f"ReplayBuffer, got {type(dataset).__name__}"
        )
    data = dataset.reshape(-1)
    if ("next", "truncated") not in data.keys(True):
        done, term = data["next", "done"], data["next", "terminated"]
        data.set(("next", "truncated"), done.bool() & ~term.bool())
    missing = [k for k in TED_KEYS if k not in data.keys(True)]
    if missing:
        raise KeyError(
            f"the dataset lacks {missing}; a TED dataset has {list(TED_KEYS)} (it has "
            f"{sorted(map(str, data.keys(True, True)))})"
        )
    from torchrl_o3f.data.loader import MAX_ABS_VALUE  # the loader's bound, on every load path

    for key in ("observation", "action", ("next", "observation"), ("next", "reward")):
        if not data[key].is_floating_point():
            raise ValueError(f"dataset[{key!r}] must hold floating-point values")
        value = data[key].float()  # checked as it will be used: after the float32 cast
        if not bool((torch.isfinite(value) & (value.abs() <= MAX_ABS_VALUE)).all()):
            raise ValueError(
                f"dataset[{key!r}] must hold finite values of magnitude <= {MAX_ABS_VALUE:g} "
                "in float32 (NaN, infinity or an overflow found)"
            )
        data.set(key, value)
    return name, data


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


def make_exploration(
    mode: str,
    qvalue_network,
    action_spec,
    *,
    sigma: float,
    num_candidates: int = 100,
    omega: float = 0.0,
    include_policy_action: bool = False,
    device=None,
) -> TensorDictModuleBase | None:
    """The post-policy exploration module of an exploration mode.

    ``"o3f"``: :class:`~torchrl_o3f.modules.O3FActionSelector` (with diagnostics) on the
    trained critic: ``qvalue_network`` is a critic the selector accepts (a ``QEnsemble``, a
    ``StackedCritic``, a callable) or a torchrl loss, read through
    :meth:`~torchrl_o3f.modules.O3FActionSelector.from_loss`; ``"gaussian"``: torchrl's
    ``AdditiveGaussianModule`` with the same constant sigma, projected onto the action spec
    (the paper's ablation); ``"none"``: ``None`` (the policy's own sampling). The module is
    moved to ``device`` when given.

    Raises:
        ConfigError: for an unknown mode.
    """
    if mode == "o3f":
        from torchrl.objectives import LossModule

        from torchrl_o3f.modules import O3FActionSelector

        kwargs = {
            "num_candidates": num_candidates,
            "sigma": sigma,
            "omega": omega,
            "include_policy_action": include_policy_action,
            "diagnostics": True,
        }
        if isinstance(qvalue_network, LossModule):
            selector = O3FActionSelector.from_loss(qvalue_network, action_spec, **kwargs)
        else:
            selector = O3FActionSelector(qvalue_network, action_spec, **kwargs)
        return selector if device is None else selector.to(device)
    if mode == "gaussian":
        from torchrl.modules import AdditiveGaussianModule

        return AdditiveGaussianModule(
            action_spec,
            sigma_init=sigma,
            sigma_end=sigma,
            annealing_num_steps=1,
            safe=True,
            device=device,
        )
    if mode == "none":
        return None
    raise ConfigError(f"unknown exploration mode {mode!r}; choose 'o3f', 'gaussian' or 'none'")


def method_name(cfg: TrainerConfig) -> str:
    """A run's method for titles: ``O3F-IQL``, ``IQL + gaussian``, ``CQL -> SAC (none)``."""
    algo = cfg.algo.name.upper()
    if cfg.switches():
        return f"{algo} -> {cfg.online_algo.upper()} ({cfg.exploration.mode})"
    if cfg.exploration.mode == "o3f":
        return f"O3F-{algo}"
    return f"{algo} + {cfg.exploration.mode}" if cfg.exploration.mode != "none" else algo


def _checkpoint_file(src: str) -> str:
    """The checkpoint file ``src`` (a run directory or a file) names."""
    path = Path(src)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        path = folder / "latest.pt"
    return str(path)


class _StopRequested(Exception):
    def __init__(self, counters: dict):
        super().__init__()
        self.counters = counters  # those of the checkpoint written to resume from


class OfflineOnlineTrainer:
    """Offline pre-training then online fine-tuning (Algorithm 1), for any registered algorithm.

    Offline: ``budget.offline_steps`` gradient steps of ``algo`` on a replay buffer holding the
    offline dataset. Online: a torchrl :class:`~torchrl.collectors.Collector` runs
    ``TensorDictSequential(policy, exploration)`` on the task's env, one frame at a time;
    every transition is appended to the same buffer and ``algo.utd_ratio`` updates follow each
    frame. By default the same loss goes on training (O3F's point: the objective does not
    change). With ``online_algo`` the objective switches at the phase boundary: the online
    agent starts from the offline policy and critics (:func:`~torchrl_o3f.trainers.agents.
    switch_agent`; what was copied is written to ``switch.json``) and the exploration module is
    rebuilt on the online critic. Evaluation (deterministic policy, whole episodes) runs every
    ``eval_every`` steps/frames and at each phase boundary.

    Every online episode also logs what the paper's Figure 2 plots: the critic's mean Q on the
    episode's transitions (``online/q_mean``, members averaged), the discounted Monte-Carlo
    return from each of those transitions to the episode's end (``online/mc_return``, rewards
    as the critic sees them: the loss's ``reward_shift``/``reward_scale`` applied) and their
    ratio (``online/q_overestimation``).

    Outputs in ``output_dir``: ``config.yaml`` (the resolved config: every number the run
    uses, library versions), ``logs/`` (torchrl logger, CSV by default), ``metrics.jsonl``
    (every logged row, one JSON object a line), ``evaluations.csv``, ``learning_curve.png``,
    ``summary.json`` and ``checkpoints/`` (``latest.pt``, ``offline.pt`` at the phase boundary,
    ``final.pt``, with ``latest.prev.pt`` the previous ``latest.pt``), all written
    atomically; checkpoints are verified on load and never hold a non-finite state.

    Resuming: ``resume=<run dir or checkpoint>`` continues where the run stopped. Offline
    checkpoints are exact at any step; online checkpoints are taken at episode ends (the env
    is reseeded from the run seed and the episode index at every episode end), so a resumed
    run reproduces the uninterrupted one. ``offline_checkpoint=<path>`` starts a fresh online
    phase from a phase-boundary checkpoint, e.g. to compare exploration modes fairly.

    Online-only runs (``offline_data=False``, e.g. SAC from scratch): no dataset, an empty
    buffer, ``budget.warmup_frames`` frames of uniform random actions before the first update.
    ``on_evaluation(trainer, row)`` is called after every evaluation (``row``: phase, counters,
    score, return, ...); when it returns ``True`` during the online phase the run ends there, as
    finished (final checkpoint, ``policy.pt`` and ``summary.json`` with the frames done):
    :func:`torchrl_o3f.trainers.train_behavior` stops at its target return this way.
    SIGINT/SIGTERM: the offline phase checkpoints after the current update; the online phase
    stops after the current frame's updates, discards the partial episode and writes the state
    of the last episode end (a resumed run redoes those frames exactly); a second signal stops
    at once. A NaN or infinity in a loss, gradient or parameter stops the run with
    :class:`~torchrl_o3f.trainers.guard.NonFiniteError` (see docs/reliability.md).

    Example:
        >>> from torchrl_o3f.trainers import OfflineOnlineTrainer, TrainerConfig, BUDGETS
        >>> import tempfile
        >>> cfg = TrainerConfig(task="hopper-medium", algo="iql", budget=BUDGETS["smoke"],
        ...                     output_dir=tempfile.mkdtemp(), progress=False)
        >>> cfg.algo.num_cells = 32
        >>> summary = OfflineOnlineTrainer(cfg).train()  # doctest: +SKIP
    """

    def __init__(self, cfg: TrainerConfig, *, dataset=None, env=None, on_evaluation=None):
        self._dataset = dataset
        self._env_fn = env
        self._on_evaluation = on_evaluation
        self._end_requested = False
        self.cfg = cfg.validate()
        if dataset is not None and not cfg.offline_data:
            raise ConfigError(
                "a dataset was given but offline_data=false (an online-only run); drop the "
                "dataset or set offline_data=true"
            )
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.task = get_task(cfg.task)
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self._check_output_dir()
        self._signals = StopSignals(message="stopping after the current update")
        self._episode_end: dict[str, Any] | None = None  # online: state at the last episode end
        self._saved_state: dict[str, Any] | None = None
        self._writing = False
        self._check_resume_compatible()

    @property
    def _stop(self) -> bool:
        return self._signals.requested

    # ------------------------------------------------------------------ set-up
    def _check_output_dir(self) -> None:
        """Refuse an ``output_dir`` that holds another run, unless resumed or overwritten."""
        held = [name for name in _RUN_MARKERS if (self.out / name).exists()]
        if not held or self.cfg.overwrite:
            return
        resume = Path(self.cfg.resume) if self.cfg.resume else None
        if resume is not None and self.out.resolve() in (
            resume.resolve(),
            *resume.resolve().parents[:2],
        ):
            return  # the run resumed here is this folder's run
        raise ConfigError(
            f"output_dir={self.out} holds another run ({', '.join(held[:3])}); resume it with "
            f"resume={self.out}, give this run another output_dir, or set overwrite=true to "
            "replace it"
        )

    def _clear_output_dir(self) -> None:
        """Remove the files of the run ``overwrite=True`` replaces (only the trainer's own)."""
        for name in RUN_FILES:
            path = self.out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def _check_resume_compatible(self) -> None:
        src = self.cfg.resume or self.cfg.offline_checkpoint
        if not src:
            self._resume_state = None
            return
        key = "resume" if self.cfg.resume else "offline_checkpoint"
        try:
            state = load_checkpoint(src)
        except CheckpointError as err:
            raise CheckpointError(f"{key}={src}: {err}") from None
        meta = state.get("meta", {})
        for key in ("task", "algo"):
            mine = self.cfg.task if key == "task" else self.cfg.algo.name
            if meta.get(key) != mine:
                raise CheckpointError(
                    f"checkpoint {src} is from {key}={meta.get(key)!r}, this run has "
                    f"{key}={mine!r}; resume with the same {key} or start a new run"
                )
        if self.cfg.resume:
            self._check_same_run(src, state)
        if self.cfg.offline_checkpoint and state["counters"]["phase"] != "online":
            raise CheckpointError(
                f"{src} is not a phase-boundary checkpoint (phase="
                f"{state['counters']['phase']!r}); use checkpoints/offline.pt of a run"
            )
        self._resume_state = state
        self.resumed_from = _checkpoint_file(src)

    def _check_same_run(self, src, state: dict[str, Any]) -> None:
        """A resumed run is the same run: its config, and a budget not below what is done."""
        from torchrl_o3f.trainers.record import resume_conflicts

        stored = state.get("meta", {}).get("config")
        if isinstance(stored, dict) and "derived" in stored:
            conflicts = resume_conflicts(self.cfg, stored)
            if conflicts:
                lines = "; ".join(f"{k}={a!r} (the run has {b!r})" for k, a, b in conflicts[:6])
                raise ConfigError(
                    f"resume={src} would change the run: {lines}. Resume without these overrides "
                    "(the run's config.yaml is reloaded), or start a new run"
                )
        c, b = state["counters"], self.cfg.budget
        if c["frames"] > b.online_frames or c["step"] > b.offline_steps:
            raise ConfigError(
                f"resume={src}: the run has done {c['step']} offline steps and {c['frames']} "
                f"online frames, more than budget.offline_steps={b.offline_steps} / "
                f"budget.online_frames={b.online_frames}; a resumed budget cannot shrink"
            )
        finished = c["phase"] == "online" and c["frames"] >= b.online_frames
        if finished and c["step"] >= b.offline_steps and not self.cfg.extend:
            raise ConfigError(
                f"resume={src}: the run has finished its budget ({c['step']} offline steps, "
                f"{c['frames']} online frames); to continue it, pass extend=true with a larger "
                "budget.online_frames"
            )

    def _build(self) -> None:
        from torchrl_o3f.data import DatasetFormatError, ensure_dataset, load_offline_dataset

        cfg, task = self.cfg, self.task
        if cfg.overwrite:
            self._clear_output_dir()
        if not cfg.offline_data:
            dataset_id, data = "none", None
        elif self._dataset is None:
            dataset_id = ensure_dataset(
                task,
                size=cfg.budget.dataset_size,
                seed=cfg.dataset_seed,
                root=cfg.dataset_root,
                progress=cfg.progress,
            )
            data = load_offline_dataset(dataset_id, root=cfg.dataset_root)
        else:
            dataset_id, data = as_ted_dataset(self._dataset, root=cfg.dataset_root)
        env_kwargs = {"max_episode_steps": cfg.max_episode_steps()}
        self.env_kwargs = env_kwargs
        probe = self._make_env()
        self.action_spec = probe.action_spec.to(self.device)
        obs_dim = probe.observation_spec["observation"].shape[-1]
        # one transition as the collector writes it: the layout of the online data
        template = probe.fake_tensordict().select(*TED_KEYS).reshape(-1)[:1].cpu()
        probe.close()
        if data is None:  # an online-only run: no offline data
            data = torch.zeros_like(template)[:0].to(self.device)
        data = data.select(*TED_KEYS).to(self.device)
        if data["observation"].shape[-1] != obs_dim or (
            data["action"].shape[-1] != self.action_spec.shape[-1]
        ):
            raise DatasetFormatError(
                f"dataset {dataset_id} has observations of size {data['observation'].shape[-1]} "
                f"and actions of size {data['action'].shape[-1]}, but {task.env_id} has "
                f"{obs_dim} and {self.action_spec.shape[-1]}: the dataset is not for this task"
            )
        self.observation_dim = obs_dim
        self.dataset_id = dataset_id
        self.num_offline = data.shape[0]
        # seeded here, after the data: building a dataset draws from the global generators
        # (its networks' initialisation), so a seed set before it would give one run with a
        # fresh dataset folder and another with the dataset already on disk
        seed_everything(cfg.seed)
        self.data = data
        given = data if cfg.offline_data else None
        capture = {
            "compile": cfg.compile.compile,
            "compile_mode": cfg.compile.mode,
            "cudagraphs": cfg.compile.cudagraphs,
        }
        self.agent: Agent = build_agent(
            cfg.algo,
            self.action_spec,
            observation_dim=obs_dim,
            data=given,
            device=self.device,
            **capture,
        )
        self.switched = False
        self.switch_info: dict[str, list[str]] | None = None
        # the online algorithm's agent is built now: its config errors show before any work
        self._online_agent = None
        if cfg.switches():
            self._online_agent = build_agent(
                cfg.online_config(),
                self.action_spec,
                observation_dim=obs_dim,
                data=given,
                device=self.device,
                **capture,
            )
        target = cfg.anneal_target()
        if target is not None:
            annealed = (self._online_agent or self.agent).loss
            if target[0] not in annealed.annealable:
                raise ConfigError(
                    f"anneal.param={target[0]!r}: the {(self._online_agent or self.agent).cfg.name}"
                    f" loss has no such hyper-parameter (it anneals {list(annealed.annealable)}); "
                    "see its yaml's loosening entry"
                )
        self._make_guard()
        online = cfg.budget.online_frames
        if cfg.offline_fraction is None:
            self.buffer = ReplayBuffer(
                storage=LazyTensorStorage(self.num_offline + max(online, 1), device=self.device),
                sampler=RandomSampler(),
            )
            if self.num_offline:
                self.buffer.extend(data)
        else:
            offline_rb = ReplayBuffer(
                storage=LazyTensorStorage(self.num_offline, device=self.device),
                sampler=RandomSampler(),
            )
            offline_rb.extend(data)
            self.buffer = OfflineToOnlineReplayBuffer(
                offline_rb,
                online_storage=LazyTensorStorage(max(online, 1), device=self.device),
                offline_fraction=cfg.offline_fraction,
            )
        # every online transition, preallocated on the CPU (checkpoints save the filled part)
        if self.num_offline:  # laid out as the offline data, whatever the env's dtypes
            template = data[:1].cpu()
        self.online_data = torch.zeros_like(template).expand(max(online, 1)).clone()
        self._make_behaviour()
        self.counters = {"phase": "offline", "step": 0, "frames": 0, "episodes": 0}
        self.evaluations: list[dict[str, Any]] = []
        self.anneal_start: dict[str, float] = {}
        self.eval_env = self._make_env(seed=cfg.seed + 10_000, device=self.device)
        self._make_logger()

    def env_used(self) -> str:
        """What env the run acts in: the task's gymnasium id, or the ``env`` given to it."""
        if self._env_fn is None:
            return self.task.env_id
        if callable(self._env_fn):
            name = getattr(self._env_fn, "__qualname__", type(self._env_fn).__name__)
            return f"{getattr(self._env_fn, '__module__', '?')}.{name} (given as env=)"
        return f"{self._env_fn} (given as env=)"

    def _make_env(self, *, seed: int | None = None, device=None):
        """A new env of the run: the task's, or the ``env`` given to it, with the episode cap."""
        cap = self.env_kwargs["max_episode_steps"]
        if self._env_fn is None:
            return make_env(self.task, seed=seed, device=device, **self.env_kwargs)
        if callable(self._env_fn):
            env = cap_episodes(self._env_fn(), cap)
        else:
            env = make_env_from_id(self._env_fn, max_episode_steps=cap)
        if device is not None:
            env = env.to(device)
        if seed is not None:
            env.set_seed(seed)
        return env

    def _make_behaviour(self) -> None:
        """The exploration module on the current agent's critic, chained after its policy."""
        cfg = self.cfg
        self.exploration = make_exploration(
            cfg.exploration.mode,
            self.agent.qvalue_network,
            self.action_spec,
            sigma=cfg.sigma(),
            num_candidates=cfg.exploration.num_candidates,
            omega=cfg.exploration.omega,
            include_policy_action=cfg.exploration.include_policy_action,
            device=self.device,
        )
        policy = self.agent.policy
        self.behaviour = (
            policy if self.exploration is None else TensorDictSequential(policy, self.exploration)
        )

    def _make_guard(self) -> None:
        """The non-finite guard on the current agent's loss (rebuilt after a switch)."""
        rewards = self.data["next", "reward"]
        context = {"lr": dict(self.agent.cfg.lr), "batch_size": self.agent.cfg.batch_size}
        if rewards.numel():
            context["rewards"] = (float(rewards.min()), float(rewards.max()))
        # a captured agent flags non-finite updates on its device: read back every
        # log_every updates and before every evaluation and checkpoint, not at every update
        flags = (self.agent.nonfinite, self.agent.first_nonfinite) if self.agent.captured else None
        self.guard = NonFiniteGuard(
            self.agent.loss,
            context=context,
            device_flags=flags,
            sync_every=self.cfg.budget.log_every,
        )

    def _switch(self, *, copy: bool) -> None:
        """Replace the offline agent by the online algorithm's (``copy``: from the offline one)."""
        online = self._online_agent
        if copy:
            self.switch_info = switch_agent(self.agent, online, fresh=self.cfg.switch_fresh)
            _LOG.info(
                "objective switch %s -> %s: copied %d entries (policy, critics, targets), kept "
                "%d at their initial values, of which %d of networks it acts with "
                "(switch_fresh; see switch.json)",
                self.cfg.algo.name,
                online.cfg.name,
                len(self.switch_info["copied"]),
                len(self.switch_info["kept"]),
                len(self.switch_info["fresh"]),
            )
            text = json.dumps(
                {"from": self.cfg.algo.name, "to": online.cfg.name, **self.switch_info}, indent=2
            ).encode()
            write_atomic(self.out / "switch.json", lambda f: f.write(text))
        self.agent = online
        self.switched = True
        self._make_behaviour()
        self._make_guard()

    def resolved_config(self) -> dict[str, Any]:
        """Every number the run uses (see :mod:`torchrl_o3f.trainers.record`)."""
        from torchrl_o3f.trainers.record import resolved_record

        return resolved_record(self)

    def _make_logger(self) -> None:
        from torchrl.record.loggers import get_logger

        self.out.mkdir(parents=True, exist_ok=True)
        name = self.exp_name()
        lc = self.cfg.logger
        self.logger = None
        if lc.backend != "none":
            kwargs = {}
            if lc.backend == "wandb":
                wandb = {"project": lc.project, "mode": lc.mode, "offline": lc.mode == "offline"}
                wandb.update({k: v for k, v in (("group", lc.group), ("entity", lc.entity)) if v})
                kwargs["wandb_kwargs"] = wandb
            self.logger = get_logger(
                lc.backend, logger_name=str(self.out / "logs"), experiment_name=name, **kwargs
            )
        from torchrl_o3f.trainers.record import flatten, write_config

        self.config_record = self.resolved_config()
        write_config(self.config_record, self.out / "config.yaml")
        _LOG.info(
            "%s on %s: dataset %s (%d transitions), device %s, %d offline steps + %d online "
            "frames (%d updates per frame), exploration %s; outputs in %s",
            method_name(self.cfg),
            self.task.name,
            self.dataset_id,
            self.num_offline,
            self.device,
            self.cfg.budget.offline_steps,
            self.cfg.budget.online_frames,
            self.cfg.online_config().utd_ratio,
            self.cfg.exploration.mode,
            self.out,
        )
        if self.logger is not None and hasattr(self.logger, "log_hparams"):
            self.logger.log_hparams(flatten(self.config_record))
        self._metrics_file = open(self.out / "metrics.jsonl", "a")  # noqa: SIM115

    def exp_name(self) -> str:
        """The experiment name: ``logger.exp_name`` or ``<algo>[-><online algo>]-<task>``."""
        if self.cfg.logger.exp_name:
            return self.cfg.logger.exp_name
        algo = self.cfg.algo.name
        if self.cfg.switches():
            algo = f"{algo}-{self.cfg.online_algo}"
        return f"{algo}-{self.task.name}"

    def _log(self, row: dict[str, float], step: int) -> None:
        if self.logger is not None:
            for k, v in row.items():
                self.logger.log_scalar(k, v, step=step)
        record = {"step": step, **row}
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()

    # ------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        online = self.online_data[: self.counters["frames"]]  # save_checkpoint copies the rows
        return {
            "meta": {
                "task": self.task.name,
                "algo": self.cfg.algo.name,
                "dataset_id": self.dataset_id,
                "config": self.config_record,
                "switched": self.switched,
            },
            "counters": dict(self.counters),
            "agent": self.agent.state_dict(),
            "exploration": self.exploration.state_dict() if self.exploration else None,
            "online_data": online,
            "rng": rng_state(),
            "evaluations": list(self.evaluations),
            "anneal_start": dict(self.anneal_start),
        }

    def save(self, name: str = "latest", state: dict[str, Any] | None = None) -> Path:
        """Write ``checkpoints/<name>.pt`` (and ``latest.pt``) atomically.

        ``state`` defaults to the current one; a non-finite one is refused
        (:class:`~torchrl_o3f.trainers.guard.NonFiniteError`), the previous file kept.
        """
        self.guard.flush()
        state = self._state() if state is None else state
        check_finite_state(state["agent"], what="the agent")
        self._writing = True
        path = save_checkpoint(state, self.ckpt_dir / f"{name}.pt", keep_previous=name == "latest")
        if name != "latest":
            copy_checkpoint(path, self.ckpt_dir / "latest.pt", keep_previous=True)
        self._writing, self._saved_state = False, state
        return path

    def _restore(self, state: dict[str, Any], *, fresh_online: bool) -> None:
        if state["meta"].get("switched") and not fresh_online:
            self._switch(copy=False)  # the checkpoint holds the online algorithm's agent
        self.agent.load_state_dict(state["agent"])
        if fresh_online and self.cfg.switches():
            self._switch(copy=True)
        if self.exploration is not None and state["exploration"] is not None and not fresh_online:
            self.exploration.load_state_dict(state["exploration"])
        self.counters = dict(state["counters"])
        self.evaluations = list(state["evaluations"])
        self.anneal_start = dict(state.get("anneal_start", {}))
        online = state["online_data"]
        if fresh_online:
            online = online[:0]
            self.counters.update(frames=0, episodes=0)
            self.evaluations = [e for e in self.evaluations if e["phase"] == "offline"]
        if len(online):
            self.buffer.extend(online.to(self.device))
            self.online_data[: len(online)] = online
        set_rng_state(state["rng"])
        if fresh_online:
            seed_everything(self.cfg.seed + 1)

    # --------------------------------------------------------------- signals
    def _install_signals(self) -> None:
        self._signals.install()

    def _restore_signals(self) -> None:
        self._signals.restore()

    def _stop_online(self) -> None:
        """Write the state of the last episode end (the partial episode is discarded), stop."""
        state = self._episode_end
        lost = self.counters["frames"] - state["counters"]["frames"]
        if lost:
            print(
                f"discarding the partial episode ({lost} frames since frame "
                f"{state['counters']['frames']}, the last episode end): a resumed run redoes "
                "them exactly",
                file=sys.stderr,
            )
        if self._saved_state is not state:
            self.save(state=state)
        raise _StopRequested(dict(state["counters"]))

    def _stopped_at_once(self) -> dict[str, Any]:
        """After a second signal: write the last episode end unless a write was cut short."""
        self._signals.restore()  # a third signal ends the process
        state = self._episode_end
        if state is not None and not self._writing and self._saved_state is not state:
            self.save(state=state)
        saved = self._saved_state if self._saved_state is not None else self._resume_state
        return dict(saved["counters"]) if saved is not None else {"resumable": False}

    # ------------------------------------------------------------------ phases
    def _evaluate(self, phase: str, step: int) -> dict[str, Any]:
        self.guard.flush()
        # the same evaluation episodes every time: curves compare policies, not start states
        self.eval_env.set_seed(self.cfg.seed + 10_000)
        res = evaluate(
            self.agent.policy,
            self.eval_env,
            self.task,
            num_episodes=self.cfg.budget.eval_episodes,
            dataset_id=self.dataset_id if self.num_offline else None,
            dataset_root=self.cfg.dataset_root,
        )
        row = {"phase": phase, "step": step, **self.counters, **res}
        row["phase"] = phase
        _LOG.info(
            "evaluation (%s, step %d, frame %d): normalised score %.1f +- %.1f, return %.1f "
            "over %d episodes",
            phase,
            self.counters["step"],
            self.counters["frames"],
            res["score"],
            res["score_std"],
            res["return"],
            res["eval_episodes"],
        )
        self.evaluations.append(row)
        self._log({f"eval/{k}": v for k, v in res.items()}, step=self._global_step())
        if self._on_evaluation is not None and self._on_evaluation(self, dict(row)):
            self._end_requested = phase == "online"
        return row

    def _global_step(self) -> int:
        return self.counters["step"] + self.counters["frames"]

    def _update_metrics(self, out: TensorDictBase, elapsed: float, count: int) -> dict:
        row = {}
        for k, v in out.items():
            if isinstance(k, str) and v.numel() == 1:
                row[f"train/{k}"] = float(v)
        row["train/updates_per_s"] = count / max(elapsed, 1e-9)
        return row

    def _offline_phase(self) -> None:
        b = self.cfg.budget
        start = self.counters["step"]
        bar = tqdm(
            total=b.offline_steps,
            initial=start,
            desc="offline",
            disable=not self.cfg.progress,
            dynamic_ncols=True,
        )
        t0, n0 = time.perf_counter(), start
        batch_size = self.agent.cfg.batch_size
        for step in range(start, b.offline_steps):
            self.agent.set_offline_progress(step, b.offline_steps)
            out = self.agent.update(self.buffer.sample(batch_size))
            self.guard.check(out, phase="offline", step=step + 1)
            self.counters["step"] = step + 1
            bar.update(1)
            if (step + 1) % b.log_every == 0:
                now = time.perf_counter()
                row = self._update_metrics(out, now - t0, step + 1 - n0)
                t0, n0 = now, step + 1
                self._log(row, step=self._global_step())
                bar.set_postfix(q=f"{row.get('train/qvalue_mean', float('nan')):.1f}")
            if (step + 1) % b.eval_every == 0 and step + 1 < b.offline_steps:
                self._evaluate("offline", step + 1)
            if (step + 1) % b.checkpoint_every == 0 or self._stop:
                self.save()
            if self._stop:
                bar.close()
                raise _StopRequested(dict(self.counters))
        bar.close()
        self.counters["phase"] = "online"
        ev = self._evaluate("offline", self.counters["step"])
        self.offline_eval = ev
        self.save("offline")
        if self.cfg.switches():
            self._switch(copy=True)

    def _compile_kwargs(self) -> dict[str, Any] | None:
        """The collector's ``compile_policy`` (``None``: acting runs eagerly)."""
        c = self.cfg.compile
        if not c.compile:
            return None
        return {"mode": c.mode}

    def _episode_seed(self) -> int:
        return self.cfg.seed + 1 + 7919 * self.counters["episodes"]

    def _apply_anneal(self) -> None:
        param, end = self._anneal
        frames = self.counters["frames"]
        loss = self.agent.loss
        start = self.anneal_start.setdefault(param, float(getattr(loss, param)))
        if self.cfg.anneal.mode == "abrupt":
            value = end
        else:
            value = start + (end - start) * min(1.0, frames / self.cfg.anneal.frames)
        setattr(loss, param, value)

    def _episode_q_record(self, start: int, end: int) -> dict[str, float]:
        """Mean Q on online transitions ``[start, end)`` against their discounted MC returns."""
        ep = self.online_data[start:end].to(self.device)
        loss = self.agent.loss
        gamma = float(loss.gamma)
        reward = loss.transform_reward(ep["next", "reward"].reshape(-1).double())
        returns = torch.empty_like(reward)
        running = 0.0
        for t in range(reward.numel() - 1, -1, -1):
            running = float(reward[t]) + gamma * running
            returns[t] = running
        with torch.no_grad():
            q = self.agent.qvalue_network.values(ep["observation"], ep["action"]).mean(0)
        q_mean, mc = float(q.mean()), float(returns.mean())
        ratio = q_mean / mc if abs(mc) > 1e-8 else float("nan")
        return {"online/q_mean": q_mean, "online/mc_return": mc, "online/q_overestimation": ratio}

    def _online_phase(self) -> None:
        b = self.cfg.budget
        remaining = b.online_frames - self.counters["frames"]
        if remaining <= 0:
            return
        rng = rng_state()
        env = self._make_env(device=self.device)
        collector = Collector(
            env,
            self.behaviour,
            frames_per_batch=1,
            total_frames=remaining,
            # the warm-up's uniform random actions (env.rand_action), the policy not called
            init_random_frames=max(0, b.warmup_frames - self.counters["frames"]),
            device=self.device,
            # the package's policies are not recurrent: nothing to add to the env
            auto_register_policy_transforms=False,
            # acting (policy + selector) compiled / graph-replayed like the update step
            compile_policy=self._compile_kwargs(),
            cudagraph_policy=self.cfg.compile.cudagraphs or None,
        )
        # every episode starts from a seed derived from the run seed and the episode index,
        # so a run resumed at an episode end sees the very same episodes.
        # building the collector must not move the global generators: a run resumed here
        # then draws the same candidates and batches as the uninterrupted one.
        collector.env.set_seed(self._episode_seed())
        collector.reset()
        set_rng_state(rng)
        plan = self.agent.cfg
        utd, actor_utd, batch_size = plan.utd_ratio, plan.actor_utd_ratio, plan.batch_size
        self.agent.set_offline_progress(None, b.offline_steps)
        self._anneal = self.cfg.anneal_target()
        ep_start = self.counters["frames"]
        self._episode_end = copy_state(self._state(), share=("online_data",))
        bar = tqdm(
            total=b.online_frames,
            initial=self.counters["frames"],
            desc="online",
            disable=not self.cfg.progress,
            dynamic_ncols=True,
        )
        t0, f0 = time.perf_counter(), self.counters["frames"]
        ep_return, gains = 0.0, []
        try:
            for batch in collector:
                batch = batch.reshape(-1)
                trans = batch.select(*TED_KEYS)
                self.buffer.extend(trans)
                f = self.counters["frames"]
                self.online_data[f : f + trans.numel()] = trans.cpu()
                if "o3f_score_gain" in batch.keys():
                    gains.append(batch["o3f_score_gain"].mean())
                ep_return += float(batch["next", "reward"].sum())
                self.counters["frames"] += batch.numel()
                frames = self.counters["frames"]
                if self._anneal is not None:
                    self._apply_anneal()
                warming_up = frames <= b.warmup_frames
                if frames == b.warmup_frames:  # update rates count from the first update
                    t0, f0 = time.perf_counter(), frames
                for u in range(0 if warming_up else utd):
                    out = self.agent.update(
                        self.buffer.sample(batch_size), update_actor=u >= utd - actor_utd
                    )
                    self.guard.check(out, phase="online", step=(frames - 1) * utd + u + 1)
                if self.exploration is not None:
                    self.exploration.step(1)
                bar.update(batch.numel())
                if frames % b.log_every == 0 and not warming_up:
                    now = time.perf_counter()
                    row = self._update_metrics(out, now - t0, (frames - f0) * utd)
                    row["online/frames_per_s"] = (frames - f0) / max(now - t0, 1e-9)
                    if gains:
                        row["online/score_gain"] = float(torch.stack(gains).mean())
                        gains = []
                    t0, f0 = now, frames
                    self._log(row, step=self._global_step())
                if frames % b.eval_every == 0 and frames < b.online_frames:
                    self._evaluate("online", frames)
                    if self._end_requested:
                        _LOG.info("the run ends at frame %d, as on_evaluation asked", frames)
                        break
                if bool(batch["next", "done"].any()):
                    self.counters["episodes"] += 1
                    row = {"online/episode_return": ep_return}
                    row.update(self._episode_q_record(ep_start, frames))
                    self._log(row, step=self._global_step())
                    ep_start = frames
                    bar.set_postfix(ret=f"{ep_return:.0f}")
                    ep_return = 0.0
                    collector.env.set_seed(self._episode_seed())
                    collector.reset()
                    ep_len = self.cfg.max_episode_steps()
                    due = self.counters["episodes"] % max(1, b.checkpoint_every // ep_len)
                    self._episode_end = copy_state(self._state(), share=("online_data",))
                    if due == 0:
                        self.save(state=self._episode_end)
                if self._stop:
                    self._stop_online()
        finally:
            bar.close()
            collector.shutdown()

    def train(self) -> dict[str, Any]:
        """Run (or resume) both phases; returns the summary also written to summary.json."""
        self._build()
        state = self._resume_state
        if state is not None:
            self._restore(state, fresh_online=bool(self.cfg.offline_checkpoint))
            c = state["counters"]
            _LOG.info(
                "%s from %s: phase %s, offline step %d, online frame %d",
                "resumed" if self.cfg.resume else "online phase started",
                self.resumed_from,
                c["phase"],
                c["step"],
                c["frames"],
            )
        self._install_signals()
        t_start = time.perf_counter()
        try:
            if self.counters["phase"] == "offline":
                first = self.counters["step"] == 0 and not self.evaluations
                if first and self.cfg.budget.offline_steps:  # else the phase's end evaluates
                    self._evaluate("offline", 0)
                self._offline_phase()
            self._online_phase()
        except _StopRequested as stop:
            _LOG.info(
                "stopped by a signal at offline step %d / online frame %d; resume with resume=%s",
                stop.counters["step"],
                stop.counters["frames"],
                self.out,
            )
            self._close()
            return {"stopped": True, **stop.counters}
        except StopNow:
            counters = self._stopped_at_once()
            self._close()
            return {"stopped": True, "at_once": True, **counters}
        except NonFiniteError:
            self._close()
            raise
        finally:
            self._restore_signals()
        last = self.evaluations[-1] if self.evaluations else None
        if (
            last is not None
            and last["step"] == self.counters["step"]
            and (last["frames"] == self.counters["frames"])
        ):
            final = last  # nothing trained since the last evaluation (e.g. no online phase)
        else:
            final = self._evaluate("online", self.counters["frames"])
        self.save("final")
        from torchrl_o3f.trainers.deploy import save_policy

        save_policy(self, self.out / "policy.pt")
        summary = self._summary(final, time.perf_counter() - t_start)
        _LOG.info(
            "finished: normalised score %.1f after offline -> %.1f after online, %.1f min",
            summary["score_after_offline"],
            summary["score_after_online"],
            summary["wall_time_s"] / 60,
        )
        self._close()
        return summary

    def _summary(self, final: dict, wall: float) -> dict[str, Any]:
        from torchrl_o3f.data.scores import SCORE_LABELS
        from torchrl_o3f.trainers.plotting import plot_learning_curve, write_evaluations

        offline = next(
            (e for e in reversed(self.evaluations) if e["phase"] == "offline"), self.evaluations[0]
        )
        summary = {
            "task": self.task.name,
            "algo": self.cfg.algo.name,
            "online_algo": self.agent.cfg.name,
            "exploration": self.cfg.exploration.mode,
            "seed": self.cfg.seed,
            "offline_steps": self.counters["step"],
            "online_frames": self.counters["frames"],
            "score_after_offline": offline["score"],
            "score_after_online": final["score"],
            "score_std_after_offline": offline.get("score_std", float("nan")),
            "score_std_after_online": final.get("score_std", float("nan")),
            "eval_episodes": self.cfg.budget.eval_episodes,
            "return_after_offline": offline["return"],
            "return_after_online": final["return"],
            "wall_time_s": wall,
            "device": str(self.device),
        }
        write_evaluations(self.evaluations, self.out / "evaluations.csv")
        plot_learning_curve(
            self.evaluations,
            self.out / "learning_curve.png",
            title=f"{method_name(self.cfg)} on {self.task.name} (seed {self.cfg.seed})",
            score_label=SCORE_LABELS[self.task.score],
        )
        text = json.dumps(summary, indent=2).encode()
        write_atomic(self.out / "summary.json", lambda f: f.write(text))
        return summary

    def _close(self) -> None:
        if not self._metrics_file.closed:
            self._metrics_file.close()
        self.eval_env.close()
