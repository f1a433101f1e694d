"""A run that never lies: checkpoint and cache integrity, safe loading, the non-finite guard,
clear operational errors and bounded stops (docs/reliability.md)."""

import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from run_harness import signal_at

from torchrl_o3f._atomic import DiskFullError, remove_stale_temporaries, write_atomic
from torchrl_o3f.data import (
    DatasetFormatError,
    DatasetNotFoundError,
    build_dataset,
    dataset_path,
    ensure_dataset,
    load_offline_dataset,
)
from torchrl_o3f.trainers import BUDGETS, CheckpointError, OfflineOnlineTrainer, TrainerConfig
from torchrl_o3f.trainers.agents import Agent
from torchrl_o3f.trainers.checkpoint import (
    CheckpointFallbackWarning,
    load_checkpoint,
    save_checkpoint,
)
from torchrl_o3f.trainers.guard import NonFiniteError, NonFiniteGuard, check_finite_state

TASK = "hopper-random"


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("datasets"))


def _cfg(out, dataset_root, **kw) -> TrainerConfig:
    cfg = TrainerConfig(
        task=TASK,
        budget=dataclasses.replace(BUDGETS["smoke"]),
        output_dir=str(out),
        dataset_root=dataset_root,
        progress=False,
        device="cpu",
    )
    cfg.algo.num_cells = 32
    cfg.algo.batch_size = 64
    cfg.algo.utd_ratio = 2
    cfg.exploration.num_candidates = 16
    for k, v in kw.items():
        obj = cfg
        *path, last = k.split(".")
        for p in path:
            obj = getattr(obj, p)
        setattr(obj, last, v)
    return cfg


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, dataset_root):
    """One uninterrupted smoke run: the reference of the resume tests."""
    out = tmp_path_factory.mktemp("reference")
    OfflineOnlineTrainer(_cfg(out, dataset_root)).train()
    return out


def _assert_same_final(a, b):
    pa = load_checkpoint(Path(a) / "checkpoints" / "final.pt")
    pb = load_checkpoint(Path(b) / "checkpoints" / "final.pt")
    assert pa["agent"]["loss"].keys() == pb["agent"]["loss"].keys()
    for k, v in pa["agent"]["loss"].items():
        torch.testing.assert_close(pb["agent"]["loss"][k], v, rtol=0, atol=0, msg=k)
    torch.testing.assert_close(
        pa["online_data"]["action"], pb["online_data"]["action"], rtol=0, atol=0
    )


# ------------------------------------------------------------------ integrity, safe loading
def test_every_checkpoint_loads_with_weights_only(finished_run):
    files = sorted((finished_run / "checkpoints").glob("*.pt"))
    assert {f.name for f in files} >= {"latest.pt", "latest.prev.pt", "offline.pt", "final.pt"}
    for f in files:
        raw = torch.load(f, weights_only=True)  # plain torch, no allow-listing
        assert raw["o3f_format"] == "torchrl-o3f-checkpoint/2" and len(raw["o3f_sha256"]) == 64
    state = load_checkpoint(finished_run)
    assert state["online_data"].batch_size == (BUDGETS["smoke"].online_frames,)


def test_changed_values_and_overwritten_bytes_are_caught(finished_run, tmp_path):
    # a value changed and the file re-saved by torch: the recorded sha256 no longer matches
    raw = torch.load(finished_run / "checkpoints" / "final.pt", weights_only=True)
    key = next(iter(raw["agent"]["loss"]))
    raw["agent"]["loss"][key] = raw["agent"]["loss"][key] + 1e-3
    edited = tmp_path / "edited.pt"
    torch.save(raw, edited)
    with pytest.raises(CheckpointError, match="damaged") as err:
        load_checkpoint(edited)
    assert str(edited) in str(err.value) and "\n" not in str(err.value)
    # 4096 overwritten bytes in the middle of the file (torch.load alone does not notice)
    data = bytearray((finished_run / "checkpoints" / "final.pt").read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = bytes(4096)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged|unreadable") as err:
        load_checkpoint(broken)
    assert str(broken) in str(err.value)


def test_resume_falls_back_to_the_newest_intact_checkpoint(finished_run, tmp_path, dataset_root):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "checkpoints" / "final.pt").unlink()  # as if stopped before its end
    (run / "summary.json").unlink()
    latest = run / "checkpoints" / "latest.pt"
    raw = torch.load(latest, weights_only=True)
    raw["counters"]["frames"] = 59  # an edit: the checksum no longer matches
    torch.save(raw, latest)
    previous = load_checkpoint(run / "checkpoints" / "latest.prev.pt")
    with pytest.warns(CheckpointFallbackWarning, match="latest.pt.*damaged.*using the newest"):
        state = load_checkpoint(run)
    assert state["counters"] == previous["counters"]
    assert 0 < previous["counters"]["frames"] < BUDGETS["smoke"].online_frames
    # the trainer resumes from it and ends where the uninterrupted run ended
    with pytest.warns(CheckpointFallbackWarning):
        OfflineOnlineTrainer(_cfg(run, dataset_root, resume=str(run))).train()
    _assert_same_final(finished_run, run)


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling it would create the marker file
        return (open, (self.marker, "w"))


def test_a_planted_pickle_payload_is_refused_without_running(finished_run, tmp_path):
    marker = tmp_path / "payload-ran"
    raw = torch.load(finished_run / "checkpoints" / "final.pt", weights_only=True)
    raw["meta"]["extra"] = _Payload(marker)
    planted = tmp_path / "planted.pt"
    torch.save(raw, planted)
    with pytest.raises(CheckpointError, match=r"refused to load.*\(io.open\)"):
        load_checkpoint(planted)
    assert not marker.exists()


def test_a_foreign_file_says_what_it_is(tmp_path, dataset_root):
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3, 4), tensor_file)
    with pytest.raises(CheckpointError, match=r"single tensor \(shape \[3, 4\].*expected"):
        OfflineOnlineTrainer(_cfg(tmp_path / "x", dataset_root, offline_checkpoint=tensor_file))
    weights = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), weights)
    with pytest.raises(CheckpointError, match="state dict of 2 tensors"):
        load_checkpoint(weights)


# ----------------------------------------------------------------- operational errors
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    import tempfile

    target = tmp_path / "checkpoints" / "latest.pt"
    save_checkpoint({"step": 1}, target)

    def full_mkstemp(prefix="", suffix="", dir=None):
        return os.open("/dev/full", os.O_WRONLY), os.path.join(dir, f"{prefix}x{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", full_mkstemp)
    with pytest.raises(DiskFullError, match="no space left") as err:
        save_checkpoint({"step": 2, "w": torch.zeros(100_000)}, target)
    assert str(target) in str(err.value) and " free in " in str(err.value)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(target)["step"] == 1  # the previous file is intact


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path, dataset_root):
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:40]
    dead = _dead_pid()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    killed = folder / f".latest.pt.o3ftmp-{dead}-{host}-abc.tmp"
    legacy = folder / ".latest.pt.k2j4h5g6.tmp"  # named as before the tags, two days old
    running = folder / f".latest.pt.o3ftmp-{os.getpid()}-{host}-def.tmp"
    elsewhere = folder / f".latest.pt.o3ftmp-{dead}-otherhost-ghi.tmp"
    unrelated = folder / ".notes.tmp"
    for f in (killed, legacy, running, elsewhere, unrelated):
        f.write_bytes(b"partial")
    old = time.time() - 2 * 86400
    os.utime(legacy, (old, old))
    os.utime(unrelated, (old, old))
    write_atomic(folder / "latest.pt", lambda f: f.write(b"new"))
    assert not killed.exists() and not legacy.exists()
    assert running.exists() and elsewhere.exists() and unrelated.exists()
    # a killed dataset build, found by the next ensure_dataset under the same root
    root = Path(dataset_root)
    ensure_dataset(TASK, size=BUDGETS["smoke"].dataset_size, root=root, progress=False)
    build_dir = root / f".o3f-build-o3ftmp-{dead}-{host}-xyz"
    (build_dir / "o3f").mkdir(parents=True)
    ensure_dataset(TASK, size=BUDGETS["smoke"].dataset_size, root=root, progress=False)
    assert not build_dir.exists()
    assert remove_stale_temporaries(folder) == []


def test_rebuild_hints_give_the_exact_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="--size 300 --seed 3 --root"):
        load_offline_dataset("o3f/hopper/random-n300-seed3-v0", root=tmp_path)
    dataset_id = build_dataset(
        TASK, size=40, seed=2, root=tmp_path, progress=False, num_reference_episodes=1
    )
    (dataset_path(dataset_id, tmp_path) / "data" / "metadata.json").write_text("{")
    with pytest.raises(DatasetFormatError) as err:
        load_offline_dataset(dataset_id, root=tmp_path)
    assert f"build {TASK} --size 40 --seed 2 --root {tmp_path} --overwrite" in str(err.value)
    with pytest.raises(FileExistsError, match="--size 40 --seed 2 .*--overwrite"):
        build_dataset(TASK, size=40, seed=2, root=tmp_path, progress=False)


# -------------------------------------------------------------------------- the cache
@pytest.fixture
def cached(tmp_path):
    dataset_id = build_dataset(
        TASK, size=500, seed=1, root=tmp_path, progress=False, num_reference_episodes=1
    )
    ref = load_offline_dataset(dataset_id, root=tmp_path, cache=False)
    load_offline_dataset(dataset_id, root=tmp_path)  # writes the cache
    cache = dataset_path(dataset_id, tmp_path) / "o3f_cache" / "td"
    assert (cache / "observation.memmap").exists()
    return dataset_id, tmp_path, ref, cache


def test_a_truncated_cache_file_is_reported_and_read_again(cached):
    dataset_id, root, ref, cache = cached
    f = cache / "observation.memmap"
    f.write_bytes(f.read_bytes()[: -3 * 11 * 4])  # 497 of 500 observations left
    with pytest.warns(UserWarning, match="cache of .* is damaged .*observation.memmap"):
        td = load_offline_dataset(dataset_id, root=root)
    assert (td == ref).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rewritten: the next load is clean
        assert (load_offline_dataset(dataset_id, root=root) == ref).all()


@pytest.mark.parametrize("value", [float("nan"), 1e30])
def test_values_written_into_the_cache_are_caught(cached, value, tmp_path):
    dataset_id, root, ref, cache = cached
    f = cache / "next" / "reward.memmap"
    rewards = np.fromfile(f, dtype=np.float32)
    rewards[7] = value
    rewards.tofile(f)
    with pytest.warns(UserWarning, match="reward.memmap: sha256 mismatch"):
        td = load_offline_dataset(dataset_id, root=root, memmap_prefix=tmp_path / "mm")
    assert (td == ref).all()


@pytest.mark.parametrize(
    "reward,what", [(1e40, "NaN/inf rewards.*inf in float32"), (3e38, "overflowing rewards")]
)
def test_rewards_are_checked_as_float32(tmp_path, reward, what):
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    from torchrl_o3f.data import minari_root

    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    rng = np.random.default_rng(0)
    rewards = np.zeros(4, dtype=np.float64)
    rewards[2] = reward
    episode = EpisodeBuffer(
        id=0,
        observations=rng.uniform(-1, 1, (5, 3)).astype(np.float32),
        actions=rng.uniform(-1, 1, (4, 2)).astype(np.float32),
        rewards=rewards,
        terminations=np.array([False, False, False, True]),
        truncations=np.zeros(4, dtype=bool),
    )
    with minari_root(tmp_path), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            "test/big-v0", [episode], observation_space=obs_space, action_space=act_space
        )
    with pytest.raises(DatasetFormatError, match=f"{what}.*episode 0|{what}"):
        load_offline_dataset("test/big-v0", root=tmp_path)


# ------------------------------------------------------------------ the non-finite guard
def test_the_guard_names_the_first_non_finite_term():
    from tensordict import TensorDict

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    guard = NonFiniteGuard(net, check_state_every=2, context={"lr": 3e-4, "rewards": (0, 1e30)})
    out = TensorDict(loss_actor=torch.tensor(1.0), loss_qvalue=torch.tensor(2.0))
    net(torch.ones(3)).sum().backward()
    guard.check(out, phase="offline", step=1)
    bad = TensorDict(
        loss_actor=torch.tensor(1.0),
        loss_qvalue=torch.tensor(float("inf")),
        loss_value=torch.tensor(float("nan")),
    )
    with pytest.raises(NonFiniteError, match="offline update 7: loss_qvalue is inf") as err:
        guard.check(bad, phase="offline", step=7)
    assert "learning rate" in str(err.value) and "1e+30" in str(err.value)
    net[1].weight.grad[0, 2] = float("nan")
    # gradients: every second check (this is the second: the failed one does not count)
    with pytest.raises(NonFiniteError, match="online update 8: the gradient of 1.weight"):
        guard.check(out, phase="online", step=8)
    net.zero_grad()
    with torch.no_grad():
        net[0].bias[1] = float("inf")
    guard = NonFiniteGuard(net, check_state_every=2)
    guard.check(out, phase="online", step=10)  # parameters and buffers: every second check
    with pytest.raises(NonFiniteError, match="online update 11: 0.bias holds a NaN"):
        guard.check(out, phase="online", step=11)
    with pytest.raises(NonFiniteError, match="loss.w is non-finite"):
        check_finite_state({"loss": {"w": torch.tensor([0.0, float("-inf")])}})


def test_training_stops_at_a_non_finite_update_and_keeps_the_last_good_checkpoint(
    tmp_path, dataset_root, monkeypatch
):
    original = Agent.update
    calls = {"n": 0}

    def poisoned(self, batch, **kw):
        calls["n"] += 1
        if calls["n"] == 25:  # after the checkpoint of step 20: a parameter turns NaN
            with torch.no_grad():
                next(self.loss.qvalue_network.parameters()).view(-1)[0] = float("nan")
        return original(self, batch, **kw)

    monkeypatch.setattr(Agent, "update", poisoned)
    trainer = OfflineOnlineTrainer(_cfg(tmp_path, dataset_root))
    with pytest.raises(NonFiniteError, match=r"offline update 2[56]: loss_\w+ is nan") as err:
        trainer.train()
    assert "learning rate" in str(err.value) and "rewards" in str(err.value)
    assert calls["n"] <= 26  # stopped within one update of the fault
    ckpt = tmp_path / "checkpoints"
    assert not (ckpt / "final.pt").exists() and not (ckpt / "offline.pt").exists()
    state = load_checkpoint(tmp_path)
    assert state["counters"]["step"] == 20
    check_finite_state(state["agent"])


# -------------------------------------------------------------------------- stopping
def test_sigterm_online_stops_after_the_frame_and_resumes_exactly(
    tmp_path, dataset_root, finished_run, monkeypatch, capfd
):
    run = tmp_path / "run"
    trainer = OfflineOnlineTrainer(_cfg(run, dataset_root))
    utd = trainer.cfg.algo.utd_ratio
    # frame 36: episodes of this run end at frames 12, 30, 42 and 52
    seen = signal_at(monkeypatch, trainer, online_update=2 * 35 + 1)
    summary = trainer.train()
    assert summary["stopped"] and seen["after"] < utd  # the rest of one frame's updates
    saved = load_checkpoint(run)["counters"]
    assert saved == {k: summary[k] for k in saved}
    assert saved["phase"] == "online" and 0 < saved["frames"] < seen["frames"]
    assert f"discarding the partial episode ({seen['frames'] - saved['frames']} frames" in (
        capfd.readouterr().err
    )
    assert not (run / "checkpoints" / "final.pt").exists()
    monkeypatch.undo()
    OfflineOnlineTrainer(_cfg(run, dataset_root, resume=str(run))).train()
    _assert_same_final(finished_run, run)


def test_a_second_signal_stops_at_once(tmp_path, dataset_root, monkeypatch):
    trainer = OfflineOnlineTrainer(_cfg(tmp_path, dataset_root))
    seen = signal_at(monkeypatch, trainer, online_update=2 * 35 + 1, times=2)
    summary = trainer.train()
    assert summary["stopped"] and summary["at_once"]
    assert seen["after"] == 0  # not even the update in progress completed
    state = load_checkpoint(tmp_path)
    assert state["counters"]["frames"] == summary["frames"] < seen["frames"]
    check_finite_state(state["agent"])


def test_a_stopped_recipe_exits_with_the_resumable_code(tmp_path, dataset_root):
    from torchrl_o3f.trainers.checkpoint import EXIT_RESUMABLE

    root = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        str(root / "recipes" / "o3f_iql.py"),
        "budget=smoke",
        f"task={TASK}",
        "device=cpu",
        "progress=false",
        "algo.num_cells=32",
        "algo.batch_size=64",
        "algo.utd_ratio=2",
        "budget.offline_steps=100000",
        f"dataset_root={dataset_root}",
        f"output_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and '"train/' in metrics.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_RESUMABLE, err[-3000:]
    assert "resume with: resume=" in out
    counters = load_checkpoint(tmp_path)["counters"]
    assert counters["phase"] == "offline" and 0 < counters["step"] < 100_000
    assert json.loads(metrics.read_text().splitlines()[-1])["step"] <= counters["step"]
