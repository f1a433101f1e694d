"""The smoke-budget trainer config the trainer, registry, deployment and switch tests share."""

from __future__ import annotations

import dataclasses
import os
import signal

from torchrl_o3f.trainers import BUDGETS, TrainerConfig
from torchrl_o3f.trainers.agents import Agent

TASK = "hopper-random"  # buildable without a behavior policy, cheap env


def smoke_config(out, dataset_root, algo: str = "iql", **kw) -> TrainerConfig:
    """A smoke run of ``algo`` on a tiny network; ``kw``: fields, dotted paths allowed.

    ``task``, ``online_algo`` and the other constructor fields are set before the algorithm's
    values are resolved; ``"algo.num_cells"``-style keys after.
    """
    init = {k: kw.pop(k) for k in list(kw) if "." not in k and k != "budget"}
    cfg = TrainerConfig(
        task=init.pop("task", TASK),
        algo=algo,
        budget=dataclasses.replace(kw.pop("budget", BUDGETS["smoke"])),
        output_dir=str(out),
        dataset_root=dataset_root,
        progress=False,
        device="cpu",
        **init,
    )
    cfg.algo.num_cells = 32
    cfg.algo.batch_size = 64
    cfg.algo.utd_ratio = min(cfg.algo.utd_ratio, 2)
    cfg.exploration.num_candidates = 16
    for key, value in kw.items():
        obj = cfg
        *path, last = key.split(".")
        for part in path:
            obj = getattr(obj, part)
        setattr(obj, last, value)
    return cfg


def signal_at(monkeypatch, trainer, online_update: int, times: int = 1):
    """Send SIGTERM to this process inside the given online update; record what follows."""
    original = Agent.update
    seen = {"online": 0, "after": 0, "frames": None}

    def update(self, batch, **kw):
        if trainer.counters["phase"] == "online":
            seen["online"] += 1
            if seen["frames"] is not None:
                seen["after"] += 1
            if seen["online"] == online_update:
                seen["frames"] = trainer.counters["frames"]
                for _ in range(times):
                    os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, **kw)

    monkeypatch.setattr(Agent, "update", update)
    return seen
