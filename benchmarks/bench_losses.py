"""Speed of one offline IQL update: ours vs torchrl's IQLLoss vs a CORL-style PyTorch IQL.

Also LAPO updates/s and the cost of one UTD-20 online step (20 critic updates + one VAE and one
actor update). All peers get the same networks (copied weights), the same batches, 2 threads,
and are timed in interleaved rounds in one process (this machine's speed drifts); medians.

Before timing, the three IQL implementations are loaded with the same parameters and their
three losses compared on one batch (they must agree to float tolerance).

    python benchmarks/bench_losses.py            # full run (a few minutes)
    python benchmarks/bench_losses.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.modules import MLP, ValueOperator
from torchrl.objectives import IQLLoss as TorchRLIQLLoss
from torchrl.objectives import SoftUpdate

from torchrl_o3f.objectives import make_iql_loss, make_lapo_loss

OBS, ACT, M, CELLS, DEPTH = 17, 6, 5, 256, 2
GAMMA, TAU, EXPECTILE, TEMPERATURE = 0.99, 0.005, 0.7, 3.0


def make_data(n: int, seed: int = 0) -> TensorDict:
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
            },
        },
        batch_size=[n],
    )


# --------------------------------------------------------------------------- peers
class _Peer:
    """One update of a peer: its three IQL losses, one backward, every optimiser, soft update."""

    def losses(self, td):
        out = self.loss(td)
        return out["loss_actor"], out["loss_qvalue"], out["loss_value"]

    def step(self, td):
        a, q, v = self.losses(td)
        for o in self.opts:
            o.zero_grad(set_to_none=True)
        (a + q + v).backward()
        for o in self.opts:
            o.step()
        self.updater.step()


class Ours(_Peer):
    name = "torchrl_o3f IQLLoss"

    def __init__(self):
        self.loss = make_iql_loss(OBS, Bounded(-1.0, 1.0, shape=(ACT,)), num_qvalue=M)
        self.loss.make_value_estimator(gamma=GAMMA)
        self.updater = SoftUpdate(self.loss, tau=TAU)
        self.opts = [torch.optim.Adam(p, 3e-4) for p in self.loss.parameter_groups().values()]


class OursAgent(Ours):
    """The same loss driven by the trainer's Agent (fused Adam, one optimiser per group)."""

    name = "torchrl_o3f Agent (trainer)"

    def __init__(self, ours: Ours):
        from torchrl_o3f.trainers.agents import Agent

        super().__init__()
        self.loss.load_state_dict(ours.loss.state_dict())
        self.agent = Agent(self.loss, lr=3e-4, tau=TAU)

    def step(self, td):
        self.agent.update(td)


class TorchRL(_Peer):
    """torchrl's IQLLoss(num_qvalue_nets=5) with the same actor, value and Q weights."""

    name = "torchrl IQLLoss"

    def __init__(self, ours: Ours):
        actor = copy.deepcopy(ours.loss.actor_network)
        value = copy.deepcopy(ours.loss.value_network)
        q = ValueOperator(
            MLP(
                in_features=OBS + ACT,
                out_features=1,
                num_cells=[CELLS] * DEPTH,
                activation_class=nn.ReLU,
            ),
            in_keys=["observation", "action"],
        )
        self.loss = TorchRLIQLLoss(
            actor,
            q,
            value,
            num_qvalue_nets=M,
            loss_function="l2",
            expectile=EXPECTILE,
            temperature=TEMPERATURE,
        )
        self.loss.make_value_estimator(gamma=GAMMA)
        self.updater = SoftUpdate(self.loss, tau=TAU)
        # copy the ensemble: ours holds [m, in, out] weights, torchrl [m, out, in]
        ens = ours.loss.qvalue_network
        with torch.no_grad():
            for name in ("qvalue_network_params", "target_qvalue_network_params"):
                params = getattr(self.loss, name)
                src = ens if name == "qvalue_network_params" else None
                tgt = ours.loss.target_qvalue_network_params
                for i in range(DEPTH + 1):
                    w = ens.weights[i] if src is not None else tgt["weights", str(i)]
                    b = ens.biases[i] if src is not None else tgt["biases", str(i)]
                    params["module", str(2 * i), "weight"].data.copy_(w.transpose(1, 2))
                    params["module", str(2 * i), "bias"].data.copy_(b.squeeze(1))
        groups = [
            list(self.loss.actor_network_params.flatten_keys().values()),
            list(self.loss.qvalue_network_params.flatten_keys().values()),
            list(self.loss.value_network_params.flatten_keys().values()),
        ]
        self.opts = [torch.optim.Adam(g, 3e-4) for g in groups]

    def losses(self, td):
        # torchrl's loss writes into its input: give it a shallow copy
        return super().losses(td.clone(False))


class GaussianPolicy(nn.Module):
    """CORL's IQL policy: tanh-squashed mean, state-independent log std, Normal distribution."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(OBS, CELLS),
            nn.ReLU(),
            nn.Linear(CELLS, CELLS),
            nn.ReLU(),
            nn.Linear(CELLS, ACT),
        )
        self.log_std = nn.Parameter(torch.zeros(ACT))

    def log_prob(self, obs, act):
        mean = torch.tanh(self.net(obs))
        std = self.log_std.clamp(-5.0, 2.0).exp()
        return torch.distributions.Normal(mean, std).log_prob(act).sum(-1, keepdim=True)


def mlp(in_features):
    return nn.Sequential(
        nn.Linear(in_features, CELLS),
        nn.ReLU(),
        nn.Linear(CELLS, CELLS),
        nn.ReLU(),
        nn.Linear(CELLS, 1),
    )


class PlainCORL:
    """IQL written the way CORL writes it (one nn.Module per critic, a Python loop), m=5.

    CORL averages the critics' MSEs; here they are summed, as torchrl does, so the three
    implementations compute the same numbers.
    """

    name = "plain PyTorch (CORL-style)"

    def __init__(self, ours: Ours):
        self.critics = nn.ModuleList(mlp(OBS + ACT) for _ in range(M))
        self.targets = copy.deepcopy(self.critics)
        self.value = mlp(OBS)
        self.policy = GaussianPolicy()
        ens, tgt = ours.loss.qvalue_network, ours.loss.target_qvalue_network_params
        with torch.no_grad():
            for j in range(M):
                for i in range(DEPTH + 1):
                    self.critics[j][2 * i].weight.copy_(ens.weights[i][j].T)
                    self.critics[j][2 * i].bias.copy_(ens.biases[i][j, 0])
                    self.targets[j][2 * i].weight.copy_(tgt["weights", str(i)][j].T)
                    self.targets[j][2 * i].bias.copy_(tgt["biases", str(i)][j, 0])
            self.value.load_state_dict(
                {k: v for k, v in ours.loss.value_network.module.state_dict().items()}
            )
            actor_net = ours.loss.actor_network.module[0].module
            self.policy.net.load_state_dict(actor_net.net.state_dict())
            self.policy.log_std.copy_(actor_net.log_std)
        for p in self.targets.parameters():
            p.requires_grad_(False)
        self.opt_q = torch.optim.Adam(self.critics.parameters(), 3e-4)
        self.opt_v = torch.optim.Adam(self.value.parameters(), 3e-4)
        self.opt_pi = torch.optim.Adam(self.policy.parameters(), 3e-4)

    def losses(self, td):
        s, a = td["observation"], td["action"]
        r, s2 = td["next", "reward"], td["next", "observation"]
        not_done = 1.0 - td["next", "terminated"].float()
        sa = torch.cat([s, a], -1)
        with torch.no_grad():
            target_q = torch.stack([t(sa) for t in self.targets]).min(0).values
            next_v = self.value(s2)
        v = self.value(s)
        adv = target_q - v
        value_loss = (torch.abs(EXPECTILE - (adv < 0).float()) * adv**2).mean()
        targets = r + not_done * GAMMA * next_v
        qs = [c(sa) for c in self.critics]
        q_loss = sum(F.mse_loss(q, targets) for q in qs)
        exp_adv = torch.exp(TEMPERATURE * adv.detach()).clamp(max=100.0)
        policy_loss = -(exp_adv * self.policy.log_prob(s, a)).mean()
        return policy_loss, q_loss, value_loss

    def step(self, td):
        policy_loss, q_loss, value_loss = self.losses(td)
        self.opt_v.zero_grad(set_to_none=True)
        value_loss.backward()
        self.opt_v.step()
        self.opt_q.zero_grad(set_to_none=True)
        q_loss.backward()
        self.opt_q.step()
        self.opt_pi.zero_grad(set_to_none=True)
        policy_loss.backward()
        self.opt_pi.step()
        with torch.no_grad():
            for p, t in zip(self.critics.parameters(), self.targets.parameters()):
                t.lerp_(p, TAU)


# --------------------------------------------------------------------------- LAPO
class LAPOFull:
    """One offline LAPO update: critic, VAE and actor losses, three Adam steps, soft update."""

    def __init__(self, data, batch_size, cells=CELLS, depth=3):
        self.name = f"LAPO update (batch {batch_size}, {depth}x{cells})"
        self.loss = make_lapo_loss(
            OBS,
            Bounded(-1.0, 1.0, shape=(ACT,)),
            data=data,
            num_cells=cells,
            depth=depth,
        )
        self.updater = SoftUpdate(self.loss, tau=TAU)
        self.opts = {k: torch.optim.Adam(v, 2e-4) for k, v in self.loss.parameter_groups().items()}

    def step(self, td):
        out = self.loss(td)
        for o in self.opts.values():
            o.zero_grad(set_to_none=True)
        sum(v for k, v in out.items() if k.startswith("loss_")).backward()
        for o in self.opts.values():
            o.step()
        self.updater.step()

    def critic_step(self, td):
        out = self.loss.critic_loss(td)
        self.opts["critic"].zero_grad(set_to_none=True)
        (out["loss_qvalue"] + out["loss_value"]).backward()
        self.opts["critic"].step()
        self.updater.step()

    def policy_step(self, td):
        vae = self.loss.vae_loss(td)["loss_vae"]
        actor = self.loss.actor_loss(td)["loss_actor"]
        for k in ("vae", "actor"):
            self.opts[k].zero_grad(set_to_none=True)
        (vae + actor).backward()
        self.opts["vae"].step()
        self.opts["actor"].step()


# --------------------------------------------------------------------------- runner
def agreement(ours, peers, td):
    torch.manual_seed(0)
    ref = [x.item() for x in ours.losses(td)]
    rows = []
    for p in peers:
        got = [x.item() for x in p.losses(td)]
        diff = max(abs(a - b) / max(1.0, abs(a)) for a, b in zip(ref, got))
        rows.append((p.name, got, diff))
    return ref, rows


def timed(fn, batches):
    t0 = time.perf_counter()
    for td in batches:
        fn(td)
    return (time.perf_counter() - t0) / len(batches)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20, help="updates per peer per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 3 steps")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps = 2, 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = make_data(20_000)

    ours = Ours()
    peers = [TorchRL(ours), PlainCORL(ours)]
    ref, rows = agreement(ours, peers, data[:256])
    print("Losses on one batch, same parameters (loss_actor, loss_qvalue, loss_value):")
    print(f"  {ours.name:28s} {[round(x, 6) for x in ref]}")
    for name, got, diff in rows:
        print(f"  {name:28s} {[round(x, 6) for x in got]}  max rel. diff {diff:.1e}")
        assert diff < 1e-4, f"{name} disagrees with torchrl_o3f's IQLLoss"

    lapo256 = LAPOFull(data, 256)
    lapo512 = LAPOFull(data, 512)
    iql_peers = [ours, OursAgent(ours), *peers]
    times = {p.name: [] for p in iql_peers}
    extra = {k: [] for k in ("lapo256", "lapo512", "critic", "utd20")}
    g = torch.Generator().manual_seed(1)
    for r in range(args.rounds + 1):  # round 0 warms up
        batches = [
            data[torch.randint(0, len(data), (256,), generator=g)] for _ in range(args.steps)
        ]
        big = [data[torch.randint(0, len(data), (512,), generator=g)] for _ in range(args.steps)]
        order = iql_peers if r % 2 == 0 else iql_peers[::-1]
        for p in order:
            t = timed(p.step, batches)
            if r:
                times[p.name].append(t)
        t_lapo = timed(lapo256.step, batches)
        t_big = timed(lapo512.step, big)
        t_critic = timed(lapo256.critic_step, batches)
        t_policy = timed(lapo256.policy_step, batches)
        if r:
            extra["lapo256"].append(t_lapo)
            extra["lapo512"].append(t_big)
            extra["critic"].append(t_critic)
            extra["utd20"].append(20 * t_critic + t_policy)

    med = {k: statistics.median(v) for k, v in times.items()}
    base = med[TorchRL.name]
    print(
        f"\nOne IQL update, batch 256, m={M}, {DEPTH}x{CELLS}, obs {OBS}, act {ACT}, "
        f"{args.threads} threads; median of {args.rounds} rounds x {args.steps} updates"
    )
    print("| implementation | updates/s | ms/update | vs torchrl IQLLoss |")
    print("|---|---|---|---|")
    for name, t in med.items():
        print(f"| {name} | {1 / t:.1f} | {1000 * t:.2f} | {base / t:.2f}x |")
    m = {k: statistics.median(v) for k, v in extra.items()}
    print("\n| LAPO (O3F critic: 5 Qs, REDQ subset of 2) | updates/s | ms |")
    print("|---|---|---|")
    print(f"| full update, batch 256, 3x256 | {1 / m['lapo256']:.1f} | {1000 * m['lapo256']:.1f} |")
    print(f"| full update, batch 512, 3x256 | {1 / m['lapo512']:.1f} | {1000 * m['lapo512']:.1f} |")
    print(f"| critic-only update, batch 256 | {1 / m['critic']:.1f} | {1000 * m['critic']:.1f} |")
    print(
        f"| UTD-20 online step (20 critic + 1 VAE/actor), batch 256 | {1 / m['utd20']:.2f} "
        f"| {1000 * m['utd20']:.0f} |"
    )


if __name__ == "__main__":
    main()
