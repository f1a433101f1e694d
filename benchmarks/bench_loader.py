"""Loading a 1M-transition Minari dataset: torchrl_o3f's loader against minari's own iteration.

Makes a synthetic HalfCheetah-shaped Minari dataset (1000 episodes of 1000 steps, float32
observations of 17, actions of 6) in a temporary folder, then times, in interleaved rounds in
one process (2 torch threads), the median wall time of:

- ``ours-cold``: ``torchrl_o3f.data.load_offline_dataset(..., cache=False)`` (reads the
  hdf5 file; TED TensorDict, checks included), i.e. a first load;
- ``ours-cached``: the same with its default cache (later loads: a copy of the memory-mapped
  TED tensors kept next to the dataset after the first load);
- ``minari``: the peer, ``MinariDataset.iterate_episodes()`` then ``np.concatenate`` of the
  fields into the same TED arrays (observation, next observation, action, reward, flags).

Peak memory of each is measured once in a fresh subprocess: the growth of the peak resident
size (``VmHWM``, reset through ``/proc/self/clear_refs`` after loading a tiny dataset the same
way, so imports do not count; Linux), against the raw size of the resulting arrays.

    python benchmarks/bench_loader.py [--steps 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np


def make_dataset(
    root: str,
    steps: int,
    episode_len: int = 1000,
    dataset_id: str = "bench/halfcheetah/synthetic-v0",
) -> str:
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    from torchrl_o3f.data import minari_root

    rng = np.random.default_rng(0)
    episodes = []
    for i in range(steps // episode_len):
        n = episode_len
        episodes.append(
            EpisodeBuffer(
                id=i,
                observations=rng.standard_normal((n + 1, 17), dtype=np.float32),
                actions=rng.uniform(-1, 1, (n, 6)).astype(np.float32),
                rewards=rng.standard_normal(n),
                terminations=np.zeros(n, bool),
                truncations=np.arange(n) == n - 1,
            )
        )
    with minari_root(root), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(
            dataset_id,
            episodes,
            observation_space=gym.spaces.Box(-np.inf, np.inf, (17,), np.float32),
            action_space=gym.spaces.Box(-1, 1, (6,), np.float32),
        )
    return dataset_id


TINY = "bench/halfcheetah/tiny-v0"


def load_cold(root: str, dataset_id: str):
    from torchrl_o3f.data import load_offline_dataset

    return load_offline_dataset(dataset_id, root=root, cache=False)


def load_cached(root: str, dataset_id: str):
    from torchrl_o3f.data import load_offline_dataset

    return load_offline_dataset(dataset_id, root=root)


LOADERS = {"ours-cold": None, "ours-cached": None, "minari": None}


def load_minari(root: str, dataset_id: str):
    import minari

    from torchrl_o3f.data import minari_root

    with minari_root(root):
        dataset = minari.load_dataset(dataset_id)
    obs, nxt, act, rew, term, trunc = [], [], [], [], [], []
    for ep in dataset.iterate_episodes():
        obs.append(ep.observations[:-1])
        nxt.append(ep.observations[1:])
        act.append(ep.actions)
        rew.append(ep.rewards)
        term.append(ep.terminations)
        trunc.append(ep.truncations)
    return {
        "observation": np.concatenate(obs).astype(np.float32, copy=False),
        "next_observation": np.concatenate(nxt).astype(np.float32, copy=False),
        "action": np.concatenate(act).astype(np.float32, copy=False),
        "reward": np.concatenate(rew).astype(np.float32)[:, None],
        "terminated": np.concatenate(term)[:, None],
        "truncated": np.concatenate(trunc)[:, None],
    }


def nbytes(result) -> int:
    if isinstance(result, dict):
        return sum(v.nbytes for v in result.values())
    return sum(t.numel() * t.element_size() for t in result.values(True, True))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_child(which: str, root: str, dataset_id: str) -> None:
    import torch

    torch.set_num_threads(2)
    load = LOADERS[which]
    load(root, TINY)  # every lazy import happens before the baseline
    with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) to the current RSS
        f.write("5")
    base = _status_kib("VmRSS")
    result = load(root, dataset_id)
    peak = _status_kib("VmHWM")
    print(max(peak - base, 0) * 1024, nbytes(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        peak_child(*args.child)
        return
    import torch

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        dataset_id = make_dataset(root, args.steps)
        make_dataset(root, 1000, dataset_id=TINY)
        hdf5 = os.path.getsize(os.path.join(root, dataset_id, "data", "main_data.hdf5"))
        print(
            f"made {args.steps} steps in {time.perf_counter() - t0:.1f}s, "
            f"hdf5 {hdf5 / 2**20:.0f} MiB"
        )
        ours = load_cached(root, dataset_id)  # first call: reads the file, writes the cache
        load_cached(root, TINY)
        peer = load_minari(root, dataset_id)
        assert np.array_equal(ours["observation"].numpy(), peer["observation"])
        assert np.array_equal(ours["next", "observation"].numpy(), peer["next_observation"])
        del ours, peer
        times = {name: [] for name in LOADERS}
        for _ in range(args.rounds):
            for name, fn in LOADERS.items():
                t = time.perf_counter()
                result = fn(root, dataset_id)
                times[name].append(time.perf_counter() - t)
                del result
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"median of {args.rounds} interleaved rounds:")
        for k, v in med.items():
            print(f"  {k:11s} {v:6.2f} s  ({args.steps / v / 1e6:.2f} M steps/s)")
        for k in ("ours-cold", "ours-cached"):
            print(f"  speed-up of {k} over minari: {med['minari'] / med[k]:.2f}x")
        for which in LOADERS:
            out = subprocess.run(
                [sys.executable, __file__, "--child", which, root, dataset_id],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            peak, raw = int(out[-2]), int(out[-1])
            print(
                f"  {which:11s} peak memory +{peak / 2**20:.0f} MiB for {raw / 2**20:.0f} MiB "
                f"of arrays ({peak / raw:.2f}x)"
            )


LOADERS.update({"ours-cold": load_cold, "ours-cached": load_cached, "minari": load_minari})

if __name__ == "__main__":
    main()
