"""O3F inside torchrl's own ``OfflineToOnlineTrainer`` (torchrl 0.14, SAC-based, experimental).

torchrl's :class:`~torchrl.trainers.algorithms.OfflineToOnlineTrainer` trains a SAC loss on
batches mixing an offline dataset with the transitions its collector gathers. Three things
stand between it and an O3F run; this module handles them:

* **Dataset keys** (this package's side). The trainer projects online transitions onto the
  offline dataset's keys and concatenates the two halves of each batch, so every offline key
  must be one the collector writes. :func:`~torchrl_o3f.data.load_offline_dataset` also
  returns ``episode`` (each step's episode index), which online data lacks: the first mixed
  batch fails in ``torch.cat`` with a ``KeyError``. :func:`select_online_keys` keeps the
  transition keys the env writes (checking shapes and dtypes), and
  :func:`offline_to_online_buffer` builds the buffer from them.
* **Weight sync** (torchrl's side). After each batch the trainer sends
  ``TensorDict.from_module(loss.actor_network)`` to the collector, which writes it into its
  policy key for key. That assumes the collector's policy *is* the actor; torchrl's own
  post-policy pattern, ``TensorDictSequential(actor, exploration_module)``, nests the actor's
  keys under ``module.0`` and the update raises ``KeyError``. :class:`PolicyWithSelector` is
  the workaround: actor then selector, carrying exactly the actor's parameters under the
  actor's names.
* **Logging** (torchrl's side). With ``enable_logging=True`` the trainer's UTD-ratio hook reads
  ``replay_buffer.write_count``, which :class:`~torchrl.data.OfflineToOnlineReplayBuffer`
  lacks (``AttributeError``). :class:`CountedOfflineToOnlineReplayBuffer` adds it (online
  transitions written). Reward logging needs the episode return in the collected batch: add
  :class:`~torchrl.envs.RewardSum` to the env and pass ``episode_reward_key="episode_reward"``
  (its default output key), or ``log_rewards=False``.

:class:`O3FSelectorHook` advances the selector's schedules by the frames collected and logs
its diagnostics. The O3F-compatible loss is torchrl's :class:`~torchrl.objectives.SACLoss`
with ``num_qvalue_nets=5``: its ``qvalue_network_params`` are the trained stacked critics, and
the selector scores with them (``O3FActionSelector.from_loss(loss, spec)``), never with the
module given to the loss (the loss copies it). ``tests/test_torchrl_trainer.py`` keeps
``xfail(strict=True)`` checks of both torchrl defects: when one of them passes, torchrl fixed it
and the matching workaround can go.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tensordict import NestedKey, TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.data import LazyTensorStorage, OfflineToOnlineReplayBuffer, ReplayBuffer
from torchrl.envs import EnvBase
from torchrl.trainers import TrainerHookBase

from torchrl_o3f.data import TED_KEYS, load_offline_dataset

__all__ = [
    "CountedOfflineToOnlineReplayBuffer",
    "O3FSelectorHook",
    "PolicyWithSelector",
    "offline_to_online_buffer",
    "select_online_keys",
]

# what torchrl's SACLoss reads from a batch: the TED transition less its truncation flag
SAC_KEYS: tuple[NestedKey, ...] = tuple(k for k in TED_KEYS if k != ("next", "truncated"))
# the TED transition keys a single-agent env writes (used when no env is given): the
# transition and the root done flags
ENV_TRANSITION_KEYS: tuple[NestedKey, ...] = (*TED_KEYS, "done", "terminated", "truncated")


def _leaf_keys(td: TensorDictBase) -> list:
    return list(td.keys(include_nested=True, leaves_only=True))


def select_online_keys(
    data: TensorDictBase,
    env: EnvBase | None = None,
    *,
    required: Sequence[NestedKey] = SAC_KEYS,
) -> TensorDictBase:
    """The dataset restricted to the transition keys online data carries.

    With ``env``, the kept keys are the dataset's keys that the env's transitions
    (``env.fake_tensordict()``: action, observations, reward, done flags) also hold, and each
    kept entry is checked against the env's shape (per step) and dtype. Without ``env``, the
    TED keys (``observation``, ``action``, the done flags and their ``next`` entries,
    ``next/observation``, ``next/reward``) present in ``data`` are kept. Everything else,
    e.g. the ``episode`` index of :func:`~torchrl_o3f.data.load_offline_dataset`, is dropped.

    Args:
        data: offline transitions in TorchRL's TED layout, batch size ``[T]``.
        env: the env the online phase collects from.
        required: keys the loss reads; each must survive the selection (default: what
            :class:`~torchrl.objectives.SACLoss` reads).

    Returns:
        ``data.select(*kept_keys)`` (no copy of the tensors).

    Raises:
        KeyError: a required key is missing from the dataset or from the env's transitions.
        ValueError: a kept entry's per-step shape or dtype differs between dataset and env.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.envs import GymEnv
        >>> data = TensorDict({
        ...     "observation": torch.randn(10, 3), "action": torch.rand(10, 1),
        ...     "episode": torch.zeros(10, dtype=torch.long),
        ...     "next": {"observation": torch.randn(10, 3), "reward": torch.randn(10, 1),
        ...              "done": torch.zeros(10, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(10, 1, dtype=torch.bool)}}, [10])
        >>> kept = select_online_keys(data, GymEnv("Pendulum-v1"))
        >>> "episode" in kept.keys(), ("next", "reward") in kept.keys(True)
        (False, True)
    """
    if not isinstance(data, TensorDictBase) or data.ndim != 1:
        raise TypeError(
            "select_online_keys expects the offline transitions as a TensorDict of batch size "
            f"[T] (e.g. load_offline_dataset(...)), got {type(data).__name__}"
            + (
                f" of batch size {tuple(data.batch_size)}"
                if isinstance(data, TensorDictBase)
                else ""
            )
        )
    dataset_keys = _leaf_keys(data)
    if env is None:
        keys = [k for k in ENV_TRANSITION_KEYS if k in dataset_keys]
        source = "the TED transition keys"
    else:
        fake = env.fake_tensordict()
        online = _leaf_keys(fake)
        keys = [k for k in dataset_keys if k in online]
        source = "the env's transitions"
        for key in keys:
            expected, got = fake.get(key), data.get(key)
            step_shape = tuple(expected.shape[fake.ndim :])
            if tuple(got.shape[1:]) != step_shape or got.dtype != expected.dtype:
                raise ValueError(
                    f"dataset entry {key!r} has per-step shape {tuple(got.shape[1:])} and dtype "
                    f"{got.dtype}, the env writes {step_shape} and {expected.dtype}: the "
                    "dataset is not from this env (or convert it, e.g. data.set(key, "
                    "data.get(key).to(dtype)))"
                )
    for key in required:
        if key not in keys:
            where = "the dataset" if key not in dataset_keys else source
            raise KeyError(
                f"{key!r} is needed by the loss but missing from {where}; the kept keys are "
                f"{keys}. Pass required= to change what the loss needs"
            )
    return data.select(*keys)


class CountedOfflineToOnlineReplayBuffer(OfflineToOnlineReplayBuffer):
    """torchrl's offline-to-online buffer, plus the ``write_count`` its trainer's logging reads.

    Identical to :class:`~torchrl.data.OfflineToOnlineReplayBuffer` (same arguments, same
    sampling), with two read-only attributes the UTD-ratio hook of torchrl's
    ``OfflineToOnlineTrainer`` needs when ``enable_logging=True``:

    * ``write_count``: transitions written to the online buffer so far (so the logged UTD
      ratio is gradient-step samples per online transition);
    * ``batch_size``: the default sample size given at construction (``None`` if none).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, ReplayBuffer
        >>> offline = ReplayBuffer(storage=LazyTensorStorage(100))
        >>> _ = offline.extend(TensorDict({"observation": torch.randn(100, 3)}, [100]))
        >>> rb = CountedOfflineToOnlineReplayBuffer(offline, online_capacity=50, batch_size=8)
        >>> _ = rb.extend(TensorDict({"observation": torch.randn(5, 3)}, [5]))
        >>> rb.write_count, rb.sample().batch_size
        (5, torch.Size([8]))
    """

    def __init__(self, offline_dataset, *, batch_size: int | None = None, **kwargs):
        super().__init__(offline_dataset, batch_size=batch_size, **kwargs)
        self._default_batch_size = batch_size

    @property
    def write_count(self) -> int:
        """Transitions written to the online buffer so far."""
        return self.online_buffer.write_count

    @property
    def batch_size(self) -> int | None:
        """The default sample size (``None``: every :meth:`sample` call must give one)."""
        return self._default_batch_size


def offline_to_online_buffer(
    data: TensorDictBase | str,
    *,
    online_capacity: int,
    batch_size: int,
    env: EnvBase | None = None,
    offline_fraction: float = 0.5,
    root: str | None = None,
    device: torch.device | str | None = None,
    required: Sequence[NestedKey] = SAC_KEYS,
) -> CountedOfflineToOnlineReplayBuffer:
    """The replay buffer torchrl's ``OfflineToOnlineTrainer`` needs, from a package dataset.

    The offline half holds the dataset restricted by :func:`select_online_keys` (so online
    batches concatenate with it), in a :class:`~torchrl.data.LazyTensorStorage` of exactly
    its size; the online half is a FIFO :class:`~torchrl.data.LazyTensorStorage` of
    ``online_capacity`` transitions. Each sample of ``batch_size`` draws
    ``round(offline_fraction * batch_size)`` offline transitions (the trainer anneals that
    fraction to 0 over its ``anneal_frames``).

    Args:
        data: offline transitions (a TensorDict in TED layout, batch size ``[T]``), or a
            task name / Minari dataset id, loaded with
            :func:`~torchrl_o3f.data.load_offline_dataset` from ``root``.

    Keyword Args:
        online_capacity: size of the online buffer, in transitions.
        batch_size: transitions per sample.
        env: the env of the online phase: keep the keys its transitions hold and check their
            shapes and dtypes (recommended; without it the TED keys are kept).
        offline_fraction: initial share of offline transitions per batch, in ``(0, 1)``.
        root: the Minari datasets folder when ``data`` is a name.
        device: device of both storages (and so of the sampled batches); default CPU.
        required: keys the loss reads (see :func:`select_online_keys`).

    Returns:
        A :class:`CountedOfflineToOnlineReplayBuffer`.

    Raises:
        KeyError, ValueError: see :func:`select_online_keys`; ``ValueError`` also for
            ``online_capacity`` or ``batch_size`` below 1 or a fraction outside ``(0, 1)``.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.envs import GymEnv
        >>> data = TensorDict({
        ...     "observation": torch.randn(10, 3), "action": torch.rand(10, 1),
        ...     "episode": torch.zeros(10, dtype=torch.long),
        ...     "next": {"observation": torch.randn(10, 3), "reward": torch.randn(10, 1),
        ...              "done": torch.zeros(10, 1, dtype=torch.bool),
        ...              "terminated": torch.zeros(10, 1, dtype=torch.bool)}}, [10])
        >>> rb = offline_to_online_buffer(data, env=GymEnv("Pendulum-v1"),
        ...                               online_capacity=100, batch_size=4)
        >>> len(rb.offline_buffer), "episode" in rb.sample().keys()
        (10, False)
    """
    for name, value in (("online_capacity", online_capacity), ("batch_size", batch_size)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if isinstance(data, str):
        data = load_offline_dataset(data, root=root)
    data = select_online_keys(data, env, required=required)
    device = torch.device("cpu") if device is None else torch.device(device)
    offline = ReplayBuffer(storage=LazyTensorStorage(len(data), device=device))
    offline.extend(data)
    return CountedOfflineToOnlineReplayBuffer(
        offline,
        online_storage=LazyTensorStorage(online_capacity, device=device),
        offline_fraction=offline_fraction,
        batch_size=batch_size,
    )


class PolicyWithSelector(TensorDictModuleBase):
    """The collector's policy: the actor, then a post-policy module, with the actor's weights.

    Runs ``selector(actor(tensordict))``, as ``TensorDictSequential(actor, selector)`` does,
    but its parameters and buffers are the actor's own tensors under the actor's own names
    (``TensorDict.from_module(policy)`` has exactly the keys of
    ``TensorDict.from_module(actor)``). torchrl 0.14's SAC-based trainers send
    ``TensorDict.from_module(loss.actor_network)`` to the collector after every batch and
    write it into the collector's policy key for key, which fails for a
    ``TensorDictSequential`` (the actor's keys sit under ``module.0``); with this policy the
    update lands. The selector is held by reference, not registered: its state (sigma,
    omega, frame counter) is saved by :class:`O3FSelectorHook`, and it keeps scoring with the
    critic parameters it was given (the loss's, trained in place).

    Use it with a collector that runs the policy where it lives (``policy_device`` the
    actor's device, the default): a collector that copies its policy to another device
    would copy the selector's critic reference too.

    Args:
        actor: the policy module the loss trains (``loss.actor_network`` shares its weights).
        selector: the post-policy module, e.g. an
            :class:`~torchrl_o3f.modules.O3FActionSelector` or torchrl's
            :class:`~torchrl.modules.AdditiveGaussianModule`.

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import TensorDictModule
        >>> from torchrl.envs import GymEnv
        >>> from torchrl_o3f.modules import O3FActionSelector, QEnsemble
        >>> env = GymEnv("Pendulum-v1")
        >>> actor = TensorDictModule(torch.nn.Linear(3, 1), ["observation"], ["action"])
        >>> selector = O3FActionSelector(QEnsemble(3, 1, num_members=5, num_cells=16),
        ...                              env.action_spec, num_candidates=10)
        >>> policy = PolicyWithSelector(actor, selector)
        >>> keys = lambda m: set(TensorDict.from_module(m).keys(True, True))
        >>> keys(policy) == keys(actor)
        True
        >>> policy(env.reset())["action"].shape
        torch.Size([1])
    """

    def __init__(self, actor: TensorDictModuleBase, selector: TensorDictModuleBase):
        for name, module in (("actor", actor), ("selector", selector)):
            if not isinstance(module, TensorDictModuleBase):
                raise TypeError(
                    f"PolicyWithSelector needs TensorDict modules; {name} is a "
                    f"{type(module).__name__} (wrap it in a TensorDictModule)"
                )
        produced = set(actor.out_keys)
        extra = [k for k in selector.in_keys if k not in produced]
        self.in_keys = list(dict.fromkeys([*actor.in_keys, *extra]))
        self.out_keys = list(dict.fromkeys([*actor.out_keys, *selector.out_keys]))
        super().__init__()
        # the actor's own sub-modules, parameters and buffers, registered under their names
        for name, child in actor.named_children():
            self.add_module(name, child)
        for name, param in actor.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in actor.named_buffers(recurse=False):
            self.register_buffer(name, buffer)
        self._modules_by_reference = (actor, selector)

    @property
    def actor(self) -> TensorDictModuleBase:
        """The wrapped actor."""
        return self._modules_by_reference[0]

    @property
    def selector(self) -> TensorDictModuleBase:
        """The post-policy module (held by reference)."""
        return self._modules_by_reference[1]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the actor's action, then let the selector replace it."""
        return self.selector(self.actor(tensordict))


class O3FSelectorHook(TrainerHookBase):
    """Trainer hook: advance the selector's schedules per batch and log its diagnostics.

    Registered on a torchrl :class:`~torchrl.trainers.Trainer` it

    * on ``batch_process`` (each collected batch, before the replay buffer sees it) calls
      ``selector.step(frames)`` with the batch's valid frames, and, when the selector writes
      diagnostics, keeps the batch's means: ``o3f_score_gain`` (score of the executed action
      minus that of the policy action) and ``o3f_changed`` (share of steps whose executed
      action differs from the policy's);
    * on ``pre_steps_log`` returns those means (plus ``o3f_sigma``, ``o3f_omega``) for the
      trainer's logger and progress bar;
    * saves the selector's state dict with the trainer's (``register_module``).

    Args:
        selector: an :class:`~torchrl_o3f.modules.O3FActionSelector` (anything with
            ``step(frames)`` and a state dict; ``sigma``/``omega`` are logged when present).

    Attributes:
        last: the diagnostics of the last batch, ``{name: float}`` (empty before the first).

    Example:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.envs import GymEnv
        >>> from torchrl_o3f.modules import O3FActionSelector, QEnsemble
        >>> selector = O3FActionSelector(QEnsemble(3, 1, num_members=5, num_cells=16),
        ...                              GymEnv("Pendulum-v1").action_spec, diagnostics=True)
        >>> hook = O3FSelectorHook(selector)
        >>> batch = selector(TensorDict({"observation": torch.randn(20, 3),
        ...                              "action": torch.zeros(20, 1)}, [20]))
        >>> _ = hook(batch)
        >>> int(selector.frames), sorted(hook.last)
        (20, ['o3f_changed', 'o3f_omega', 'o3f_score_gain', 'o3f_sigma'])
    """

    def __init__(self, selector: TensorDictModuleBase):
        if not callable(getattr(selector, "step", None)):
            raise TypeError(
                "O3FSelectorHook needs a selector with a step(frames) method (an "
                f"O3FActionSelector), got {type(selector).__name__}"
            )
        self.selector = selector
        self.last: dict[str, float] = {}

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        """Step the selector by the batch's valid frames and record its diagnostics."""
        keys = batch.keys(include_nested=True)
        mask = batch.get(("collector", "mask")) if ("collector", "mask") in keys else None
        frames = int(mask.sum()) if mask is not None else batch.numel()
        self.selector.step(frames)
        valid = batch[mask] if mask is not None else batch
        last = {}
        if "o3f_score_gain" in keys:
            last["o3f_score_gain"] = float(valid.get("o3f_score_gain").float().mean())
        if "policy_action" in keys:
            changed = (valid.get("policy_action") != valid.get("action")).any(-1)
            last["o3f_changed"] = float(changed.float().mean())
        for name in ("sigma", "omega"):
            value = getattr(self.selector, name, None)
            if isinstance(value, torch.Tensor):
                last[f"o3f_{name}"] = float(value.float().mean())
        self.last = last
        return batch

    def log(self, batch: TensorDictBase) -> dict[str, Any] | None:
        """The last batch's diagnostics, for the trainer's ``pre_steps_log`` stage."""
        if not self.last:
            return None
        return {**self.last, "log_pbar": False}

    def state_dict(self) -> dict[str, Any]:
        """The selector's state dict."""
        return {"selector": self.selector.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the selector's state dict."""
        self.selector.load_state_dict(state_dict["selector"])

    def register(self, trainer, name: str = "o3f_selector") -> None:
        """Register on ``batch_process``, ``pre_steps_log`` and as a saved module."""
        trainer.register_op("batch_process", self)
        trainer.register_op("pre_steps_log", self.log)
        trainer.register_module(name, self)
