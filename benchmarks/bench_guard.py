"""Cost of the non-finite guard per update: the trainer's Agent with and without it.

The guard (`torchrl_o3f.trainers.guard.NonFiniteGuard`) runs after every update: one fused
`torch.isfinite` over the stacked loss terms, and every `check_state_every` updates the total
gradient norm and a check of all parameters and buffers. Timed here as the trainer
runs it: `Agent.update(batch)` then `guard.check(out)`, against `Agent.update(batch)` alone, on
the same agent (HalfCheetah shapes, IQL with m = 5 critics of 2x256 and batch 256, LAPO with
3x256 networks and batch 512; LAPO's critic-only update is what its UTD-20 online phase runs),
in interleaved rounds in one process (this machine's speed drifts); medians.

    python benchmarks/bench_guard.py                 # a few minutes on 2 CPU threads
    python benchmarks/bench_guard.py --quick         # smoke run
    python benchmarks/bench_guard.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tensordict import TensorDict
from torchrl.data import Bounded

from torchrl_o3f.trainers.agents import build_agent
from torchrl_o3f.trainers.config import AlgoConfig
from torchrl_o3f.trainers.guard import NonFiniteGuard

OBS, ACT = 17, 6


def make_data(n: int, device, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    term = torch.rand(n, 1, generator=g) < 0.01
    return TensorDict(
        {
            "observation": torch.randn(n, OBS, generator=g),
            "action": torch.rand(n, ACT, generator=g) * 2 - 1,
            "next": {
                "observation": torch.randn(n, OBS, generator=g),
                "reward": torch.randn(n, 1, generator=g),
                "done": term.clone(),
                "terminated": term,
                "truncated": torch.zeros_like(term),
            },
        },
        batch_size=[n],
    ).to(device)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="updates per timed call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 3, 3
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = Bounded(-torch.ones(ACT), torch.ones(ACT), (ACT,), device=device)
    data = make_data(20_000, device)
    cases = []
    for name, algo, critic_only in (
        ("IQL update (m=5, 2x256, batch 256)", AlgoConfig(name="iql"), False),
        ("LAPO update (3x256, batch 512)", AlgoConfig(name="lapo"), False),
        ("LAPO critic-only update (online UTD)", AlgoConfig(name="lapo"), True),
    ):
        torch.manual_seed(0)
        agent = build_agent(
            algo, "halfcheetah-medium", spec, observation_dim=OBS, data=data, device=device
        )
        guard = NonFiniteGuard(agent.loss)
        bs = algo.resolved()["batch_size"]
        cases.append((name, agent, guard, bs, not critic_only))
    g = torch.Generator().manual_seed(1)
    results = {(c[0], w): [] for c in cases for w in ("plain", "guarded")}
    checks = {c[0]: [] for c in cases}
    states = {c[0]: [] for c in cases}
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, agent, guard, bs, full in cases:
            batches = [
                data[torch.randint(len(data), (bs,), generator=g).to(device)]
                for _ in range(args.steps)
            ]
            order = ("plain", "guarded") if r % 2 else ("guarded", "plain")
            for which in order:
                _sync(device)
                t0 = time.perf_counter()
                for i, b in enumerate(batches):
                    out = agent.update(b, update_actor=full)
                    if which == "guarded":
                        guard.check(out, phase="offline", step=i + 1)
                _sync(device)
                if r:
                    results[name, which].append((time.perf_counter() - t0) / args.steps)
            # the check alone, on the last update's output and gradients
            _sync(device)
            t0 = time.perf_counter()
            for i in range(args.steps):
                guard.check(out, phase="offline", step=i + 1)
            _sync(device)
            if r:
                checks[name].append((time.perf_counter() - t0) / args.steps)
            t0 = time.perf_counter()
            guard.check_gradients(phase="offline", step=0)
            guard.check_state(phase="offline", step=0)
            _sync(device)
            if r:
                states[name].append(time.perf_counter() - t0)
    dev = f"{args.device}, {args.threads} threads" if device.type == "cpu" else args.device
    print(f"\n{dev}; {args.rounds} rounds of {args.steps} updates, medians\n")
    every = NonFiniteGuard.__init__.__kwdefaults__["check_state_every"]
    print(
        "| update | ms/update | with the guard | check (ms) | gradients + state check (ms, "
        f"every {every}) | cost per update |"
    )
    print("|---|---|---|---|---|---|")
    for name, *_ in cases:
        plain = statistics.median(results[name, "plain"]) * 1e3
        guarded = statistics.median(results[name, "guarded"]) * 1e3
        alone = statistics.median(checks[name]) * 1e3
        state = statistics.median(states[name]) * 1e3
        cost = alone + state / every
        print(
            f"| {name} | {plain:.2f} | {guarded:.2f} | {alone:.3f} | {state:.3f} | "
            f"{100 * cost / plain:.2f}% (timed pair: {100 * (guarded / plain - 1):+.1f}%) |"
        )


if __name__ == "__main__":
    main()
