"""The offline-then-online trainer: phases, evaluation, logging, checkpoints."""

from torchrl_o3f.modules import make_exploration  # re-exported: its old home
from torchrl_o3f.trainers.agents import Agent, build_agent
from torchrl_o3f.trainers.behavior import train_behavior
from torchrl_o3f.trainers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from torchrl_o3f.trainers.config import (
    BUDGETS,
    AlgoConfig,
    AnnealConfig,
    BudgetConfig,
    ConfigError,
    ExplorationConfig,
    LoggerConfig,
    TrainerConfig,
)
from torchrl_o3f.trainers.deploy import (
    DeployedPolicy,
    ObservationError,
    RenderError,
    evaluate_run,
    load_policy,
    render_episode,
    save_policy,
)
from torchrl_o3f.trainers.evaluation import evaluate
from torchrl_o3f.trainers.export import (
    EXPORT_FORMATS,
    ActingNetwork,
    ExportError,
    export_policy,
    read_export_metadata,
)
from torchrl_o3f.trainers.plotting import plot_learning_curve
from torchrl_o3f.trainers.torchrl_trainer import (
    CountedOfflineToOnlineReplayBuffer,
    O3FSelectorHook,
    PolicyWithSelector,
    offline_to_online_buffer,
    select_online_keys,
)
from torchrl_o3f.trainers.trainer import OfflineOnlineTrainer

__all__ = [
    "train_behavior",
    "BUDGETS",
    "Agent",
    "AlgoConfig",
    "AnnealConfig",
    "BudgetConfig",
    "CheckpointError",
    "ConfigError",
    "DeployedPolicy",
    "ExplorationConfig",
    "LoggerConfig",
    "ObservationError",
    "OfflineOnlineTrainer",
    "TrainerConfig",
    "build_agent",
    "evaluate",
    "evaluate_run",
    "EXPORT_FORMATS",
    "ActingNetwork",
    "ExportError",
    "export_policy",
    "read_export_metadata",
    "RenderError",
    "render_episode",
    "load_checkpoint",
    "load_policy",
    "make_exploration",
    "plot_learning_curve",
    "CountedOfflineToOnlineReplayBuffer",
    "O3FSelectorHook",
    "PolicyWithSelector",
    "offline_to_online_buffer",
    "select_online_keys",
    "save_checkpoint",
    "save_policy",
]
