"""Offline datasets without a hub: Minari loading, a local D4RL-style builder, scores.

- :func:`load_offline_dataset` reads any Minari dataset on disk (or downloads a hub id) into
  a TensorDict of transitions in TorchRL's TED layout.
- :func:`ensure_dataset` / :func:`build_dataset` build a task's dataset locally from the
  shipped behavior policies (``python -m torchrl_o3f.data build <task>``).
- :func:`normalized_score` puts returns on the D4RL 0-100 scale, the dataset's own reference
  scale, a success rate (antmaze) or tasks completed (kitchen).
"""

from torchrl_o3f.data.behavior import (
    BehaviorPolicy,
    PolicyInfo,
    evaluate_policy,
    install_policy,
    list_policies,
    load_behavior_policy,
    make_behavior_actor,
    measure_policy,
)
from torchrl_o3f.data.builder import (
    DEFAULT_SIZE,
    DatasetMismatchError,
    build_dataset,
    dataset_id_for,
    ensure_dataset,
    reference_returns,
)
from torchrl_o3f.data.loader import (
    DatasetFormatError,
    DatasetNotFoundError,
    dataset_path,
    load_offline_dataset,
    minari_root,
    read_metadata,
    resolve_dataset,
)
from torchrl_o3f.data.minari_task import dataset_task, dataset_task_name
from torchrl_o3f.data.pointmaze import WaypointController
from torchrl_o3f.data.scores import SCORE_LABELS, normalized_score, score_label
from torchrl_o3f.data.ted import TED_KEYS, as_ted_dataset, run_dataset, transition_buffer
from torchrl_o3f.errors import renamed

__all__ = [
    "DEFAULT_SIZE",
    "SCORE_LABELS",
    "TED_KEYS",
    "BehaviorPolicy",
    "DatasetFormatError",
    "DatasetMismatchError",
    "DatasetNotFoundError",
    "PolicyInfo",
    "WaypointController",
    "as_ted_dataset",
    "build_dataset",
    "make_behavior_actor",
    "dataset_id_for",
    "dataset_path",
    "dataset_task",
    "dataset_task_name",
    "ensure_dataset",
    "evaluate_policy",
    "install_policy",
    "list_policies",
    "load_offline_dataset",
    "load_behavior_policy",
    "measure_policy",
    "minari_root",
    "normalized_score",
    "read_metadata",
    "reference_returns",
    "resolve_dataset",
    "run_dataset",
    "score_label",
    "transition_buffer",
]


def __getattr__(name: str):
    """The data layer's renamed public names, each with a ``DeprecationWarning``."""
    if name == "train_behavior":
        # training a behavior policy is a trainer run, so it lives in torchrl_o3f.trainers; the
        # data layer imports nothing above it until this old name is used
        from torchrl_o3f.trainers.behavior import train_behavior

        return renamed(f"{__name__}.{name}", "torchrl_o3f.trainers.train_behavior", train_behavior)
    moved = {"build_sac_actor": make_behavior_actor, "load_policy": load_behavior_policy}
    if name in moved:
        new = f"{__name__}.{moved[name].__name__}"
        return renamed(f"{__name__}.{name}", new, moved[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
