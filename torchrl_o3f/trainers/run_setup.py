"""What a run is built from: its data, env, agents, exploration, guard and logs.

:class:`RunSetup` is the part of :class:`~torchrl_o3f.trainers.OfflineOnlineTrainer` that
builds a run's objects from its config when training starts (``_build``), and rebuilds the
agent's surroundings at an objective switch (``_switch``). Every factory it calls lives in the
package's lower layers; this class only wires them to the run's config.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from tensordict.nn import TensorDictSequential

from torchrl_o3f.data import TED_KEYS, DatasetFormatError, run_dataset, transition_buffer
from torchrl_o3f.envs import cap_episodes, make_env, make_env_from_id
from torchrl_o3f.modules import make_exploration
from torchrl_o3f.trainers.agents import Agent, build_agent, switch_agent
from torchrl_o3f.trainers.checkpoint import seed_everything, write_atomic
from torchrl_o3f.trainers.config import ConfigError
from torchrl_o3f.trainers.diagnostics import RunLog
from torchrl_o3f.trainers.guard import NonFiniteGuard
from torchrl_o3f.trainers.record import flatten, method_name, resolved_record, write_config
from torchrl_o3f.trainers.run_dir import clear_output_dir

__all__ = ["RunSetup"]

_LOG = logging.getLogger("torchrl_o3f.trainers.trainer")  # the trainer's log, as before


class RunSetup:
    """Builds a trainer's run from its config (a base class of the trainer).

    Sets, in ``_build``: ``action_spec``, ``observation_dim``, ``dataset_id``,
    ``num_offline``, ``data``, ``agent`` (and the online algorithm's agent of a switching run),
    ``guard``, ``buffer``, ``online_data``, ``exploration``, ``behavior``, ``eval_env``,
    ``run_log`` and ``config_record`` (written to ``config.yaml``).
    """

    def _build(self) -> None:
        cfg, task = self.cfg, self.task
        if cfg.overwrite:
            clear_output_dir(self.out)
        if not cfg.offline_data:
            dataset_id, data = "none", None
        else:
            dataset_id, data = run_dataset(
                task,
                self._dataset if self._dataset is not None else cfg.dataset,
                size=cfg.budget.dataset_size,
                seed=cfg.dataset_seed,
                root=cfg.dataset_root,
                progress=cfg.progress,
            )
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
        self.observation_dim, self.dataset_id, self.num_offline = obs_dim, dataset_id, len(data)
        # seeded here, after the data: building a dataset draws from the global generators
        # (its networks' initialisation), so a seed set before it would give one run with a
        # fresh dataset folder and another with the dataset already on disk
        seed_everything(cfg.seed)
        self.data = data
        self.agent = self._make_agent(cfg.algo)
        # the online algorithm's agent is built now: its config errors show before any work
        if cfg.switches():
            self._online_agent = self._make_agent(cfg.online_config())
        self._check_anneal_target()
        self._make_guard()
        self.buffer = transition_buffer(
            data,
            online_capacity=max(cfg.budget.online_frames, 1),
            offline_fraction=cfg.offline_fraction,
            device=self.device,
        )
        # every online transition, preallocated on the CPU (checkpoints save the filled part)
        if self.num_offline:  # laid out as the offline data, whatever the env's dtypes
            template = data[:1].cpu()
        self.online_data = torch.zeros_like(template).expand(max(cfg.budget.online_frames, 1))
        self.online_data = self.online_data.clone()
        self._make_behavior()
        self.eval_env = self._make_env(seed=cfg.seed + 10_000, device=self.device)
        self._start_log()

    def _make_agent(self, algo) -> Agent:
        c = self.cfg.compile
        return build_agent(
            algo,
            self.action_spec,
            observation_dim=self.observation_dim,
            data=self.data if self.cfg.offline_data else None,
            device=self.device,
            compile=c.compile,
            compile_mode=c.mode,
            cudagraphs=c.cudagraphs,
        )

    def _check_anneal_target(self) -> None:
        target = self.cfg.anneal_target()
        annealed = self._online_agent or self.agent
        if target is not None and target[0] not in annealed.loss.annealable:
            raise ConfigError(
                f"anneal.param={target[0]!r}: the {annealed.cfg.name} loss has no such "
                f"hyper-parameter (it anneals {list(annealed.loss.annealable)}); see its yaml's "
                "loosening entry"
            )

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

    def _make_behavior(self) -> None:
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
        self.behavior = (
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
        self._make_behavior()
        self._make_guard()

    def resolved_config(self) -> dict[str, Any]:
        """Every number the run uses (see :mod:`torchrl_o3f.trainers.record`)."""
        return resolved_record(self)

    def _start_log(self) -> None:
        """Open the run's logs and write ``config.yaml`` (the resolved config)."""
        self.run_log = RunLog(self.out, self.cfg.logger, name=self.exp_name())
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
        self.run_log.log_hparams(flatten(self.config_record))

    def exp_name(self) -> str:
        """The experiment name: ``logger.exp_name`` or ``<algo>[-><online algo>]-<task>``."""
        if self.cfg.logger.exp_name:
            return self.cfg.logger.exp_name
        algo = self.cfg.algo.name
        if self.cfg.switches():
            algo = f"{algo}-{self.cfg.online_algo}"
        return f"{algo}-{self.task.name}"
