"""A trained policy as one file that acts without this package: TorchScript, ``torch.export``, ONNX.

:func:`export_policy` takes a run (or its ``policy.pt``, a checkpoint, a
:class:`~torchrl_o3f.trainers.deploy.DeployedPolicy`) and writes its deterministic acting path as
a function of one tensor: a float32 observation batch ``[B, obs_dim]`` (raw env units) to the
float32 actions ``[B, act_dim]`` in env units, inside the action bounds. The file holds the
policy's own modules, traced by ``torch.export`` from :class:`ActingNetwork` (the algorithm's
acting module called under ``ExplorationType.DETERMINISTIC``), so whatever the networks hold
is in the file: observation normalisation buffers, LAPO's latent policy and target decoder, the
tanh squashing and the clipping to the bounds.

- ``torchscript`` (``.pt``): ``torch.jit.load(path)``;
- ``export`` (``.pt2``): ``torch.export.load(path).module()``;
- ``onnx`` (``.onnx``): ``onnxruntime.InferenceSession(path)``, input ``observation``, output
  ``action`` (the ``onnx`` extra: ``pip install 'torchrl-o3f[onnx]'``).

Each file carries a small JSON record (``o3f.json``: sizes, bounds, algorithm, task): in
TorchScript's and ``torch.export``'s extra files and in the ONNX model's metadata.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_o3f.errors import O3FError
from torchrl_o3f.trainers.deploy import DeployedPolicy, _load_run

__all__ = [
    "EXPORT_FORMATS",
    "ActingNetwork",
    "ExportError",
    "export_policy",
    "read_export_metadata",
]

EXPORT_FORMATS: dict[str, str] = {"torchscript": ".pt", "export": ".pt2", "onnx": ".onnx"}
"""The export formats and their usual file suffixes."""

EXPORT_RECORD = "torchrl-o3f-exported-policy/1"
METADATA_NAME = "o3f.json"


class ExportError(O3FError, ValueError):
    """A policy that cannot be exported as asked: the format, the output path, a missing extra."""


class ActingNetwork(nn.Module):
    """A deployed policy's deterministic acting path as a plain ``observation -> action`` module.

    ``forward`` wraps the float32 observation batch in a tensordict, runs the algorithm's own
    acting module (``policy.policy``: its networks, normalisation buffers and squashing) under
    ``ExplorationType.DETERMINISTIC`` and clips the action into the policy's bounds (when it
    knows them). Nothing of the network's maths is written here again: tracing this module
    records the policy's own operations.

    Args:
        policy: the :class:`~torchrl_o3f.trainers.deploy.DeployedPolicy` (from
            :func:`~torchrl_o3f.trainers.load_policy`).

    Example:
        >>> import torch
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.modules import make_iql_actor
        >>> actor = make_iql_actor(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=8)
        >>> net = ActingNetwork(DeployedPolicy(actor, observation_dim=3))
        >>> net(torch.zeros(4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(self, policy: DeployedPolicy):
        super().__init__()
        self.policy = policy.policy
        self.observation_key = policy.in_keys[0]
        self.action_key = policy.action_key
        self.register_buffer("action_low", policy.action_low)
        self.register_buffer("action_high", policy.action_high)

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        """Deterministic actions ``[*batch, act_dim]`` for observations ``[*batch, obs_dim]``."""
        td = TensorDict({self.observation_key: observation}, batch_size=observation.shape[:-1])
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            action = self.policy(td).get(self.action_key)
        if self.action_low is not None:
            action = torch.clamp(action, self.action_low, self.action_high)
        return action


def _check_output(path: Path, format: str) -> None:
    if format not in EXPORT_FORMATS:
        valid = ", ".join(EXPORT_FORMATS)
        raise ExportError(f"unknown export format {format!r}; choose one of: {valid}")
    if path.is_dir():
        raise ExportError(
            f"{path} is a folder; give a file path such as {path}/policy{EXPORT_FORMATS[format]}"
        )
    if not path.parent.is_dir():
        raise ExportError(f"cannot write {path}: its folder {path.parent} does not exist")
    if format == "onnx":
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise ExportError(
                f"the onnx format needs {' and '.join(missing)}, not installed: "
                "pip install 'torchrl-o3f[onnx]'"
            )


def _source_file(source: Path) -> Path:
    return source / "policy.pt" if source.is_dir() else source


def export_policy(
    source: str | os.PathLike | DeployedPolicy,
    path: str | os.PathLike,
    *,
    format: str = "torchscript",
) -> Path:
    """Write a trained policy's deterministic acting path as a file that needs only torch (or ONNX).

    The file maps a float32 observation batch ``[B, obs_dim]`` (raw env observations, any
    ``B >= 1``) to float32 actions ``[B, act_dim]`` in env units within the action bounds,
    equal to :func:`~torchrl_o3f.trainers.load_policy`'s deterministic actions; the policy's
    observation normalisation is inside. The module's docstring says how each format loads. A
    run is exported on the CPU; a given ``DeployedPolicy`` on the device it lives on.

    Args:
        source: a run directory, its ``policy.pt``, a trainer checkpoint, or a
            :class:`~torchrl_o3f.trainers.deploy.DeployedPolicy` (with its ``observation_dim``).
        path: the file to write (its folder must exist; written whole or not at all).
        format: ``"torchscript"``, ``"export"`` (a ``torch.export`` ``.pt2``) or ``"onnx"``.

    Returns:
        The path written.

    Raises:
        ExportError: for an unknown format (the message names the valid ones), an output path
            whose folder is missing or that is the run's own policy file, a policy without
            ``observation_dim``, or, for ``onnx``, the ``onnx`` extra not installed.
        CheckpointError: when ``source`` is missing or is not a run, policy file or checkpoint.

    Example:
        >>> import tempfile, torch
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.modules import make_iql_actor
        >>> actor = make_iql_actor(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=8)
        >>> policy = DeployedPolicy(actor, observation_dim=3)
        >>> out = export_policy(policy, tempfile.mkdtemp() + "/policy.pt")
        >>> torch.jit.load(out)(torch.zeros(5, 3)).shape
        torch.Size([5, 2])
        >>> export_policy(policy, "policy.bin", format="pickle")
        Traceback (most recent call last):
        ...
        torchrl_o3f.trainers.export.ExportError: unknown export format 'pickle'; choose one of: ...
    """
    path = Path(path)
    _check_output(path, format)
    record: dict[str, Any] = {}
    if isinstance(source, DeployedPolicy):
        policy = source
    else:
        source_file = _source_file(Path(source))
        if path.exists() and source_file.exists() and path.resolve() == source_file.resolve():
            raise ExportError(f"{path} is the run's own policy file; give another output path")
        policy, record = _load_run(source)
    if policy.observation_dim is None:
        raise ExportError("the DeployedPolicy has no observation_dim; give it one to export")
    net = ActingNetwork(policy).eval()
    example = torch.zeros(2, policy.observation_dim, device=_device(net))
    batch = torch.export.Dim("batch")
    with torch.no_grad():
        action_dim = net(example).shape[-1]
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    meta = _metadata(policy, action_dim, record, format)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        if format == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # jit.trace's deprecation and tracer notices
                scripted = torch.jit.trace(program.module(), (example,), check_trace=False)
            torch.jit.save(scripted, str(tmp), _extra_files={METADATA_NAME: meta})
        elif format == "export":
            torch.export.save(program, str(tmp), extra_files={METADATA_NAME: meta})
        else:
            _save_onnx(program, example, batch, meta, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _metadata(policy: DeployedPolicy, action_dim: int, record: dict[str, Any], fmt: str) -> str:
    low, high = policy.action_low, policy.action_high
    algo = record.get("online") or record.get("algo") or {}
    return json.dumps(
        {
            "record": EXPORT_RECORD,
            "format": fmt,
            "input": "observation: float32 [batch, observation_dim], raw env units",
            "output": "action: float32 [batch, action_dim], env units, within the bounds",
            "observation_dim": int(policy.observation_dim),
            "action_dim": int(action_dim),
            "action_low": None if low is None else low.tolist(),
            "action_high": None if high is None else high.tolist(),
            "algorithm": algo.get("name"),
            "task": record.get("task"),
        }
    )


def _save_onnx(program, example, batch, meta: str, path: Path) -> None:
    import contextlib
    import io
    import logging

    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            onnx_program = torch.onnx.export(
                program,
                (example,),
                input_names=["observation"],
                output_names=["action"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    onnx_program.model.metadata_props[METADATA_NAME] = meta
    onnx_program.save(str(path), external_data=False)  # one file: the weights inside


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``o3f.json`` record an exported file carries (sizes, bounds, algorithm, task).

    Raises:
        ExportError: for a file that is not one :func:`export_policy` wrote.

    Example:
        >>> import tempfile
        >>> from torchrl.data import Bounded
        >>> from torchrl_o3f.modules import make_iql_actor
        >>> actor = make_iql_actor(3, Bounded(-1.0, 1.0, shape=(2,)), num_cells=8)
        >>> policy = DeployedPolicy(actor, observation_dim=3)
        >>> out = export_policy(policy, tempfile.mkdtemp() + "/policy.pt2", format="export")
        >>> read_export_metadata(out)["observation_dim"], read_export_metadata(out)["action_dim"]
        (3, 2)
    """
    path = Path(path)
    try:
        if path.suffix == ".onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
            text = props[METADATA_NAME]
        elif path.suffix == ".pt2":
            extra = {METADATA_NAME: ""}
            torch.export.load(str(path), extra_files=extra)
            text = extra[METADATA_NAME]
        else:
            extra = {METADATA_NAME: ""}
            torch.jit.load(str(path), _extra_files=extra)
            text = extra[METADATA_NAME]
        meta = json.loads(text)
    except Exception as err:  # each loader raises its own error types
        raise ExportError(
            f"{path} is not a policy exported by torchrl-o3f ({type(err).__name__}: {err})"
        ) from None
    if meta.get("record") != EXPORT_RECORD:
        raise ExportError(f"{path} is not a policy exported by torchrl-o3f")
    return meta
