"""A SAC actor as data: its weights in a plain tensor file, acting without the library that trained it.

Datasets are regenerated from committed weights, so the weights are read with `torch.load(...,
weights_only=True)` (no pickled code) into this module, which is the squashed-Gaussian MLP of
stable-baselines3's SAC (`latent_pi` ReLU MLP, `mu` and `log_std` heads, log std clipped to [-20, 2],
tanh): the same actions from the same weights and noise.

Two ways to compute an action. `act` runs the module in torch float32, as it trained; its last bits follow
torch's CPU matrix products (MKL), which take other kernels on Intel and AMD CPUs, and a MuJoCo rollout turns
one last-bit difference into other trajectories: data rolled out that way differ between the two vendors.
`portable()` is the same function in numpy float64 without BLAS (elementwise products, numpy's pairwise sums),
whose bits follow numpy's SIMD dispatch (and glibc's libm) alone, which dataset generation pins
(envs/numerics.py): meant to be the same bytes on any x86-64-v3 CPU with the same packages. Checked on one CPU
by moving torch's kernels, which moves torch-rolled data and not these (tests/test_locomotion.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from envs.errors import DatasetError

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # stable-baselines3's SAC bounds
FORMAT = "diffbench-sac-actor-v1"


@dataclass(frozen=True)
class ActorSpec:
    env_id: str
    obs_dim: int
    action_dim: int
    hidden: tuple[int, ...] = (256, 256)


class SquashedGaussianActor(nn.Module):
    """a = tanh(mu(s) + std(s) z), z ~ N(0, I); deterministic: tanh(mu(s))."""

    def __init__(self, spec: ActorSpec):
        super().__init__()
        self.spec = spec
        layers: list[nn.Module] = []
        width = spec.obs_dim
        for h in spec.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.latent_pi = nn.Sequential(*layers)
        self.mu = nn.Linear(width, spec.action_dim)
        self.log_std = nn.Linear(width, spec.action_dim)

    @torch.no_grad()
    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Actions in [-1, 1] for a batch (or one) of observations; `rng` None: the deterministic action."""
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        single = x.dim() == 1
        latent = self.latent_pi(x[None] if single else x)
        mean = self.mu(latent)
        if rng is not None:
            std = self.log_std(latent).clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
            noise = torch.as_tensor(rng.standard_normal(mean.shape), dtype=torch.float32)
            mean = mean + std * noise
        a = torch.tanh(mean).numpy()
        return a[0] if single else a

    def portable(self) -> "Float64Actor":
        """This actor in numpy float64, for rollouts whose bytes must not depend on the CPU's vendor."""
        def weights(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
            return (layer.weight.detach().cpu().numpy().astype(np.float64),
                    layer.bias.detach().cpu().numpy().astype(np.float64))

        return Float64Actor(tuple(weights(m) for m in self.latent_pi if isinstance(m, nn.Linear)),
                            weights(self.mu), weights(self.log_std))


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    # products then numpy's sum over the contiguous last axis: no BLAS, whose kernels and threads vary by CPU
    return (x[..., None, :] * weight).sum(axis=-1) + bias


@dataclass(frozen=True)
class Float64Actor:
    """`SquashedGaussianActor.act` in numpy float64; actions rounded to float32 as the data store them."""

    hidden: tuple[tuple[np.ndarray, np.ndarray], ...]
    mu: tuple[np.ndarray, np.ndarray]
    log_std: tuple[np.ndarray, np.ndarray]

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32).astype(np.float64)  # the observation as the torch actor reads it
        for weight, bias in self.hidden:
            x = np.maximum(_linear(x, weight, bias), 0.0)
        mean = _linear(x, *self.mu)
        if rng is not None:
            std = np.exp(np.clip(_linear(x, *self.log_std), LOG_STD_MIN, LOG_STD_MAX))
            mean = mean + std * rng.standard_normal(mean.shape)
        return np.tanh(mean).astype(np.float32)


def check_spaces(spec: ActorSpec, env: gym.Env, where: str) -> None:
    """The actor must read the env's observations and write its actions (Box [-1, 1])."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(act, gym.spaces.Box) or not np.allclose(act.low, -1) or not np.allclose(act.high, 1):
        raise DatasetError(f"{where}: {spec.env_id}'s actions are not a Box in [-1, 1] ({act}); a tanh actor "
                           "cannot act in it")
    if obs.shape != (spec.obs_dim,) or act.shape != (spec.action_dim,):
        raise DatasetError(f"{where} was trained for observations of dim {spec.obs_dim} and actions of dim "
                           f"{spec.action_dim}; {env.spec.id if env.spec else 'the env'} has {obs.shape} and {act.shape}")


def save_actor(actor: SquashedGaussianActor, path: Path, card: dict[str, Any]) -> None:
    """Weights, shapes and the card in one tensor file (written whole, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = actor.spec
    blob = {"format": FORMAT, "env_id": s.env_id, "obs_dim": s.obs_dim, "action_dim": s.action_dim,
            "hidden": list(s.hidden), "state_dict": {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()},
            "card": card}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def load_actor(path: Path) -> tuple[SquashedGaussianActor, dict[str, Any]]:
    """(actor, card) from `save_actor`'s file; a missing, corrupt or foreign file is one DatasetError."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"no policy weights at {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a damaged file
        raise DatasetError(f"cannot read the policy weights {path} ({type(exc).__name__}: {exc}); the file is "
                           "damaged or not a diffbench actor: restore it from git (git checkout -- <file>)") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a diffbench SAC actor file (format {FORMAT})")
    spec = ActorSpec(blob["env_id"], int(blob["obs_dim"]), int(blob["action_dim"]), tuple(blob["hidden"]))
    actor = SquashedGaussianActor(spec)
    try:
        actor.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise DatasetError(f"{path}: the weights do not fit an actor of the shapes it names: {exc}") from None
    return actor.eval(), dict(blob.get("card") or {})


def from_sb3(model: Any, env_id: str) -> SquashedGaussianActor:
    """Our actor holding a stable-baselines3 SAC model's current actor weights."""
    sd = model.actor.state_dict()
    layers = sorted((k for k in sd if k.startswith("latent_pi.") and k.endswith(".weight")),
                    key=lambda k: int(k.split(".")[1]))
    hidden = tuple(int(sd[k].shape[0]) for k in layers)
    spec = ActorSpec(env_id, int(sd["latent_pi.0.weight"].shape[1]), int(sd["mu.weight"].shape[0]), hidden)
    actor = SquashedGaussianActor(spec)
    actor.load_state_dict({k: v for k, v in sd.items() if k.split(".")[0] in ("latent_pi", "mu", "log_std")})
    return actor.eval()
