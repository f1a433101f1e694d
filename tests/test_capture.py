"""The capturable update step: the same maths as the eager update, no host sync, one graph."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from loss_harness import action_spec, ted_batch
from run_harness import signal_at, smoke_config
from tensordict import TensorDict
from torch.utils._python_dispatch import TorchDispatchMode
from torchrl.modules.distributions import continuous

from torchrl_o3f.objectives import algo_config, list_algorithms
from torchrl_o3f.trainers import OfflineOnlineTrainer, TrainerConfig
from torchrl_o3f.trainers.agents import build_agent
from torchrl_o3f.trainers.capture import CapturedUpdate, adam_step_, compile_step
from torchrl_o3f.trainers.checkpoint import load_checkpoint
from torchrl_o3f.trainers.config import ConfigError
from torchrl_o3f.trainers.guard import NonFiniteError, NonFiniteGuard, check_finite_state

pytestmark = pytest.mark.filterwarnings("ignore:No target network updater")

ALGOS = [a.name for a in list_algorithms()]
# the observation normaliser in the networks of algorithms that default to raw observations
VARIANTS = ALGOS + ["iql+normalize_observations", "sac+normalize_observations"]
OBS = 3


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


def _agent(algo: str, seed: int = 0, **kw):
    torch.manual_seed(seed)
    data = ted_batch(256, generator=torch.Generator().manual_seed(1), terminated_frac=0.02)
    algo, _, flag = algo.partition("+")
    overrides = {"num_cells": 16, "batch_size": 32, **({flag: True} if flag else {})}
    cfg = algo_config(algo, task="hopper-medium", overrides=overrides)
    return build_agent(cfg, action_spec(), observation_dim=OBS, data=data, **kw)


def _state(agent) -> dict[str, torch.Tensor]:
    out = {f"loss.{k}": v for k, v in agent.loss.state_dict().items() if v.is_floating_point()}
    for name, opt in agent.optimizers.items():
        for i, (_, st) in enumerate(opt.state.items()):
            for k, v in st.items():
                out[f"{name}.{i}.{k}"] = v
    return out


def test_the_foreach_adam_is_torch_adam():
    torch.manual_seed(0)
    ours = [torch.randn(4, 3), torch.randn(5)]
    theirs = [p.clone().requires_grad_() for p in ours]
    opt = torch.optim.Adam(theirs, lr=3e-3, betas=(0.8, 0.99), eps=1e-6)
    m = [torch.zeros_like(p) for p in ours]
    v = [torch.zeros_like(p) for p in ours]
    steps = [torch.zeros(()) for _ in ours]
    lr = torch.tensor(3e-3)
    for i in range(5):
        grads = [torch.randn_like(p) * (i + 1) for p in ours]
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        opt.step()
        adam_step_(ours, grads, m, v, steps, lr=lr, betas=(0.8, 0.99), eps=1e-6)
        if i == 2:
            lr.fill_(1e-3)  # a schedule changes the tensor in place
            opt.param_groups[0]["lr"] = 1e-3
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(steps[0], opt.state[theirs[0]]["step"])


@pytest.mark.parametrize("algo", VARIANTS)
def test_the_captured_step_is_the_eager_update(algo):
    """From one state and one random stream, k updates agree (actor and critic-only ones)."""
    eager, captured = _agent(algo), _agent(algo)
    captured.loss.load_state_dict(eager.loss.state_dict())
    steps = {u: CapturedUpdate(captured, update_actor=u) for u in (True, False)}
    for i in range(4):
        batch = ted_batch(32, generator=torch.Generator().manual_seed(10 + i))
        update_actor = i % 2 == 0
        torch.manual_seed(i)
        a = eager.update(batch, update_actor=update_actor)
        torch.manual_seed(i)
        b = steps[update_actor](batch)
        for k in a.keys():
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{algo} {k}")
    ours, theirs = _state(captured), _state(eager)
    assert set(ours) == set(theirs)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-5, msg=f"{algo} {k}")
    assert not bool(captured.nonfinite) and int(captured.update_count) == 4


class _SyncCounter(TorchDispatchMode):
    """Counts the ops that bring a tensor's value to the host (a device sync on a GPU)."""

    SYNCS = ("_local_scalar_dense", "is_nonzero", "item", "equal", "allclose", "nonzero")

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        name = func.__name__.split(".")[0]
        if name in self.SYNCS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("algo", VARIANTS)
def test_k_captured_updates_make_no_host_synchronisation(algo, monkeypatch):
    # torchrl's TanhNormal checks its bounds on the host, except under compilation or CUDA
    # graph capture, which is how the captured step runs: count as it runs there
    monkeypatch.setattr(continuous, "safe_is_current_stream_capturing", lambda: True)
    agent = _agent(algo)
    steps = {u: CapturedUpdate(agent, update_actor=u) for u in (True, False)}
    batch = ted_batch(32)
    steps[True](batch)  # a first call may initialise lazy state
    counter = _SyncCounter()
    with counter:
        for i in range(3):
            steps[i == 0](batch)
    assert counter.ops > 50  # the mode saw the update's work
    assert counter.seen == [], f"{algo}: host synchronisations {counter.seen}"


@pytest.mark.parametrize("algo", VARIANTS)
def test_the_update_step_is_one_graph(algo):
    """``fullgraph=True`` traces each variant without a graph break (what capture needs)."""
    torch._dynamo.reset()
    agent = _agent(algo)
    batch = ted_batch(32)
    fn = compile_step(
        CapturedUpdate(agent, update_actor=True), compile=False, mode=None, cudagraphs=False
    )
    torch._dynamo.config.trace_autograd_ops = True
    out = torch.compile(fn, fullgraph=True, backend="eager")(batch)
    assert torch.isfinite(out["loss_qvalue"]).all()


@torch._inductor.config.patch(fallback_random=True)  # eager's random numbers, to compare
def test_the_compiled_agent_agrees_with_the_eager_one():
    """Inductor itself (IQL, both variants)."""
    eager, compiled = _agent("iql"), _agent("iql", compile=True)
    compiled.loss.load_state_dict(eager.loss.state_dict())
    for i in range(3):
        batch = ted_batch(32, generator=torch.Generator().manual_seed(i))
        eager.update(batch, update_actor=i != 1)
        compiled.update(batch, update_actor=i != 1)
    ours, theirs = _state(compiled), _state(eager)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-5, msg=k)
    # a checkpoint of the compiled agent loads into an eager one and back
    again = _agent("iql")
    again.load_state_dict(compiled.state_dict())
    for k, v in _state(again).items():
        torch.testing.assert_close(v, ours[k])
    compiled.load_state_dict(eager.state_dict())
    held = compiled.adam_state(next(iter(compiled.loss.parameters())))
    assert any(held["exp_avg"] is t for t in _held_tensors(compiled))


def _held_tensors(agent):
    return [
        v for opt in agent.optimizers.values() for st in opt.state.values() for v in st.values()
    ]


def test_the_guard_reads_device_flags_only_where_it_must():
    flag = torch.zeros((), dtype=torch.bool)
    first = torch.zeros((), dtype=torch.int64)
    net = torch.nn.Linear(2, 1)
    guard = NonFiniteGuard(net, device_flags=(flag, first), sync_every=10)
    good = TensorDict(loss_qvalue=torch.tensor(1.0))
    for step in range(1, 6):
        guard.check(good, phase="offline", step=step)
    flag.fill_(True)
    first.fill_(4)  # the step set the flag at its 4th update
    bad = TensorDict(loss_qvalue=torch.tensor(float("nan")), loss_actor=torch.tensor(1.0))
    for step in range(6, 9):
        guard.check(bad, phase="offline", step=step)  # not read yet: nothing raised
    with pytest.raises(NonFiniteError, match="offline update 4: loss_qvalue is nan"):
        guard.flush()


def test_cudagraphs_without_cuda_is_refused_before_any_work():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = TrainerConfig(task="hopper-random", algo="iql", device="cpu")
    cfg.compile.cudagraphs = True
    with pytest.raises(ConfigError, match="compile.cudagraphs=true needs a CUDA device"):
        cfg.validate()
    cfg.compile.cudagraphs, cfg.compile.mode = False, "fast"
    with pytest.raises(ConfigError, match="compile.mode must be one of"):
        cfg.validate()


def test_a_diverging_compiled_run_stops_before_a_non_finite_checkpoint(tmp_path, dataset_root):
    cfg = smoke_config(tmp_path, dataset_root, "iql", **{"compile.compile": True})
    cfg.algo.lr = {k: 1e12 for k in cfg.algo.lr}
    cfg.budget.checkpoint_every = 10
    trainer = OfflineOnlineTrainer(cfg)
    with pytest.raises(NonFiniteError, match=r"non-finite training at offline update \d+") as err:
        trainer.train()
    assert "learning rate" in str(err.value)
    assert re.search(r"offline update [12]: loss_\w+ is nan", str(err.value))  # read on device
    for path in (tmp_path / "checkpoints").glob("*.pt"):  # whatever was written is finite
        check_finite_state(load_checkpoint(path)["agent"])


def _final_state(run) -> dict:
    return load_checkpoint(run / "checkpoints" / "final.pt")


def test_a_compiled_run_resumes_exactly_and_its_checkpoints_load_eagerly(
    tmp_path, dataset_root, monkeypatch
):
    """Updates and acting compiled; stopped online, resumed compiled: the uninterrupted run."""
    compiled = {"compile.compile": True, "budget.online_frames": 40}
    ref = tmp_path / "ref"
    OfflineOnlineTrainer(smoke_config(ref, dataset_root, "iql", **compiled)).train()
    run = tmp_path / "run"
    trainer = OfflineOnlineTrainer(smoke_config(run, dataset_root, "iql", **compiled))
    seen = signal_at(monkeypatch, trainer, online_update=25)
    assert trainer.train()["stopped"] and seen["frames"] is not None
    monkeypatch.undo()
    eager = tmp_path / "eager"
    shutil.copytree(run, eager)
    OfflineOnlineTrainer(
        smoke_config(run, dataset_root, "iql", resume=str(run), **compiled)
    ).train()
    a, b = _final_state(ref), _final_state(run)
    for k, v in a["agent"]["loss"].items():
        torch.testing.assert_close(b["agent"]["loss"][k], v, rtol=0, atol=0, msg=k)
    torch.testing.assert_close(
        b["online_data"]["action"], a["online_data"]["action"], rtol=0, atol=0
    )
    # the compiled run's checkpoint goes on eagerly (compile is how a run runs, not what)
    summary = OfflineOnlineTrainer(
        smoke_config(eager, dataset_root, "iql", resume=str(eager), **{"budget.online_frames": 40})
    ).train()
    assert summary["online_frames"] == 40 and (eager / "checkpoints" / "final.pt").exists()


@pytest.mark.parametrize(
    ("algo", "extra"),
    [("lapo", {}), ("cql", {"online_algo": "sac"})],
    ids=["o3f_lapo", "cql_to_sac"],
)
def test_compiled_smoke_runs_of_the_other_recipes(tmp_path, dataset_root, algo, extra):
    """O3F-LAPO (critic-only and actor updates) and the CQL -> SAC switch, compiled."""
    kw = {"compile.compile": True, "budget.online_frames": 20, "budget.eval_every": 1000, **extra}
    summary = OfflineOnlineTrainer(smoke_config(tmp_path, dataset_root, algo, **kw)).train()
    assert summary["online_frames"] == 20
    assert math.isfinite(summary["score_after_online"])


@pytest.mark.slow
def test_the_gpu_check_runs_end_to_end_on_a_cpu(tmp_path):
    """``gpu_check.sh --cpu --quick``: the one-shot GPU script, here, prints its one table."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        ["bash", str(root / "benchmarks" / "gpu_check.sh"), "--cpu", "--quick", "--algos", "sac"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in res.stdout
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| measure | variant | rate |")
    assert any(r.startswith("| CUDA-marked tests | - | ") and "skipped" in r for r in rows)
    assert {r.split(" | ")[1] for r in rows if r.startswith("| sac update")} == {"eager", "compile"}
    online = [r for r in rows if r.startswith("| recipe online phase, exploration.mode=o3f")]
    assert [r.split(" | ")[1] for r in online] == ["compile off", "compile on"]
    assert any(r.startswith("| paper-budget O3F-IQL run (projected) | compile on |") for r in rows)
