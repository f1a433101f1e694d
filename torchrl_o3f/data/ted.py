"""Datasets given as objects: the TED transition keys and the coercion of a user's dataset.

The trainer reads transitions in TorchRL's TED layout. :func:`as_ted_dataset` accepts what a
user may hand it (a TED TensorDict, a Minari dataset id on disk, a torchrl replay buffer) and
returns flat, checked, float32 transitions.
"""

from __future__ import annotations

import os

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, OfflineToOnlineReplayBuffer, ReplayBuffer
from torchrl.data.replay_buffers import RandomSampler

from torchrl_o3f.data.builder import ensure_dataset
from torchrl_o3f.data.loader import MAX_ABS_VALUE, load_offline_dataset
from torchrl_o3f.envs import Task

__all__ = ["TED_KEYS", "as_ted_dataset", "run_dataset", "transition_buffer"]

TED_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "done"),
    ("next", "terminated"),
    ("next", "truncated"),
)
"""The keys of one transition the trainer stores and samples (flat, TED layout)."""


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
    # the loader's bound, on every load path
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


def run_dataset(
    task: Task,
    dataset=None,
    *,
    size: int | None,
    seed: int,
    root: str | os.PathLike | None,
    progress: bool,
) -> tuple[str, TensorDictBase]:
    """``(dataset id, TED transitions)`` a run trains on offline.

    With ``dataset`` ``None``, the task's dataset: built locally first if it is not on disk
    (:func:`~torchrl_o3f.data.ensure_dataset` with ``size`` and ``seed``); otherwise whatever
    :func:`as_ted_dataset` accepts.

    Raises:
        DatasetMismatchError, DatasetNotFoundError: from the task's dataset.
        TypeError, KeyError, ValueError: for a given dataset :func:`as_ted_dataset` refuses.
    """
    if dataset is not None:
        return as_ted_dataset(dataset, root=root)
    dataset_id = ensure_dataset(task, size=size, seed=seed, root=root, progress=progress)
    return dataset_id, load_offline_dataset(dataset_id, root=root)


def transition_buffer(
    data: TensorDictBase,
    *,
    online_capacity: int,
    offline_fraction: float | None = None,
    device: torch.device | str | None = None,
) -> ReplayBuffer:
    """The replay buffer of an offline-then-online run, holding ``data`` (TED transitions).

    ``offline_fraction`` ``None``: one buffer, offline then online transitions sampled
    uniformly (the paper's setting); a fraction in [0, 1]: torchrl's
    ``OfflineToOnlineReplayBuffer``, each batch drawing that share from the offline data.

    Args:
        data: the offline transitions ``[N]`` (``N`` may be 0: an online-only run).
        online_capacity: how many online transitions the run will add.
        offline_fraction: the offline share of each batch, or ``None``.
        device: where the storage lives.

    Example:
        >>> from tensordict import TensorDict
        >>> data = TensorDict({"observation": torch.zeros(5, 3)}, [5])
        >>> len(transition_buffer(data, online_capacity=10))
        5
    """
    num_offline = data.shape[0]
    if offline_fraction is None:
        buffer = ReplayBuffer(
            storage=LazyTensorStorage(num_offline + online_capacity, device=device),
            sampler=RandomSampler(),
        )
        if num_offline:
            buffer.extend(data)
        return buffer
    offline_rb = ReplayBuffer(
        storage=LazyTensorStorage(num_offline, device=device), sampler=RandomSampler()
    )
    offline_rb.extend(data)
    return OfflineToOnlineReplayBuffer(
        offline_rb,
        online_storage=LazyTensorStorage(online_capacity, device=device),
        offline_fraction=offline_fraction,
    )
