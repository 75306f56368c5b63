"""Time the official QGPO code beside ours, in the same run, on the same shapes (`diffbench perf qgpo --official`).

A speed-up is only honest when both sides ran on the same machine at the same time, so the reference
figures come from the user's own checkout of the official code (ChenDRAG/CEP-energy-guided-diffusion,
its `Offline_RL_2D` folder), imported from there and timed here; nothing of it is copied into diffbench.
Each official figure times the official entry point for that work: `loss_fn` + Adam (behaviour),
`QGPO_Critic.update_q0` (Q), `update_qt` with method "CEP" (f_phi, which re-evaluates Q_0 on the
support actions every step, as the official schedule does), `select_actions` (guided acting), and `sample`
with the guidance off (support actions, 256 states x M per call, as `train_critic.py` draws them).
Its one hard-coded "cuda" default (the schedule's device) is pointed at the timed device.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import torch

from policies.errors import ConfigError

MODULES = ("diffusion_SDE.model", "diffusion_SDE.loss", "diffusion_SDE.schedule")


def code_root(path: Path) -> Path:
    """The folder holding `diffusion_SDE/`: the checkout's `Offline_RL_2D`, or that folder itself."""
    path = Path(path).expanduser()
    for root in (path / "Offline_RL_2D", path):
        if (root / "diffusion_SDE" / "model.py").is_file():
            return root
    raise ConfigError(f"{path} is not a checkout of the official QGPO code: no Offline_RL_2D/diffusion_SDE/model.py "
                      "in it. Clone ChenDRAG/CEP-energy-guided-diffusion and pass its directory to --official")


def describe(path: Path) -> str:
    """Where the reference figures came from: the checkout and its commit."""
    root = code_root(path)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "not a git checkout"
    return f"{root} (commit {commit})"


@contextlib.contextmanager
def _imported(root: Path) -> Iterator[dict[str, object]]:
    """The official modules, imported from `root` and removed from sys.modules afterwards."""
    sys.path.insert(0, str(root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its schedule wraps tensors in torch.tensor() on every call
            try:
                yield {name.split(".")[-1]: importlib.import_module(name) for name in MODULES}
            except ImportError as exc:
                raise ConfigError(f"cannot import the official code from {root}: {exc}; it needs torch, numpy "
                                  "and scipy") from exc
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "diffusion_SDE" or m.startswith("diffusion_SDE.")]:
            del sys.modules[name]


@contextlib.contextmanager
def official_cases(path: Path, device: torch.device, obs_dim: int, act_dim: int,
                   m: int) -> Iterator[dict[str, Callable[[], object]]]:
    """The official code's calls for the cases `bench.studies.perf.measure` times, with the same shapes, to be
    timed (interleaved with ours) while the context is open."""
    root = code_root(path)
    with _imported(root) as mods, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        std_fn = functools.partial(mods["schedule"].marginal_prob_std, device=device)
        # `update_qt` calls marginal_prob_std with its default device, "cuda": point that default at the device
        # timed (the arithmetic is untouched), so the official code runs on a CPU at all
        mods["schedule"].marginal_prob_std = std_fn
        args = SimpleNamespace(device=str(device), alpha=3.0, q_alpha=1.0, method="CEP", debug=0)
        model = mods["model"].ScoreNet(input_dim=obs_dim + act_dim, output_dim=act_dim, marginal_prob_std=std_fn,
                                       args=args).to(device)
        critic = model.q[0].to(device)
        rand = lambda *shape: torch.randn(*shape, device=device)  # noqa: E731
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        s_b, a_b = rand(4096, obs_dim), rand(4096, act_dim).clamp(-1, 1)

        def behaviour_step():
            model.condition = s_b
            loss = mods["loss"].loss_fn(model, a_b, std_fn)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.condition = None

        b = 256
        data = {"s": rand(b, obs_dim), "a": rand(b, act_dim), "r": rand(b, 1), "s_": rand(b, obs_dim),
                "d": torch.zeros(b, 1, device=device), "fake_a": rand(b, m, act_dim), "fake_a_": rand(b, m, act_dim)}
        critic.guidance_scale = 1.0
        states10, states4096 = rand(10, obs_dim).cpu().numpy(), rand(4096, obs_dim).cpu().numpy()
        support_states = rand(256, obs_dim).cpu().numpy()

        def support():  # train_critic.py's support actions: guidance off, 256 states x M per call
            critic.guidance_scale = 0.0
            model.sample(support_states, sample_per_state=m, diffusion_steps=15)
            critic.guidance_scale = 1.0

        yield {
            "behaviour_step_ms": behaviour_step,
            "q_step_ms": lambda: critic.update_q0(data),
            "cep_step_ms": lambda: critic.update_qt(data),
            "actions_per_s_batch10": lambda: model.select_actions(states10, diffusion_steps=15),
            "actions_per_s_batch4096": lambda: model.select_actions(states4096, diffusion_steps=15),
            "support_actions_per_s": support,
        }


@contextlib.contextmanager
def official_critic(path: Path, device: torch.device, obs_dim: int, act_dim: int,
                    q_alpha: float = 1.0) -> Iterator[tuple[Callable[[dict], None], Callable]]:
    """The official Q_0 update (`QGPO_Critic.update_q0`, its own TwinQ, Adam and Polyak target) and its
    target's min(Q1, Q2) as q(states (B, S), actions (B, A) or (B, M, A)), while the context is open."""
    with _imported(code_root(path)) as mods:
        args = SimpleNamespace(device=str(device), alpha=3.0, q_alpha=q_alpha, method="CEP", debug=0)
        critic = mods["model"].QGPO_Critic(act_dim, obs_dim, args)

        def q(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
            if actions.dim() == 3:
                states = states[:, None].expand(-1, actions.shape[1], -1)
            return critic.q0_target(actions, states).squeeze(-1)

        yield critic.update_q0, q
