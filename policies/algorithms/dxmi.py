"""DxMI: maximum-entropy IRL of a few-step diffusion sampler with an energy-based model, trained by DxDP
(Yoon et al., NeurIPS 2024), on a pretrained mu_theta.

The sampler pi is a T-step Gaussian chain x_0 ~ N(0, I) -> ... -> x_T = a, initialised from mu_theta on
its chain (`policies.algorithms.finetune.Chain`) with a learned noise std per step (the last one fixed,
as the official `fix_last`). One network V(x, t, s) is both the value of the denoising steps and, at
the chain's last time, the energy E(s, a) = V(a, t_T, s) (the official code's single value net).
Per iteration (Algorithm 1, one batch of dataset pairs (s, a)):
  1. sample chains x_0..x_T from pi for the batch's states
  2. EBM       min  E_data[E] - E_pi[E] + gamma (E_data[E^2] + E_pi[E^2])       (no MCMC)
  3. value     for k = T-1 .. 0, one TD step each (backward over the steps):
                 V(x_k, t_k) <- c_T(x_{k+1}) if k = T-1 else V(x_{k+1}, t_{k+1}),  plus the step's cost
                 c_k = tau2 ||x_{k+1} - x_k||^2 / (2 s_k^2) - tau1 d log sigma_k,
               x_{k+1} drawn afresh from the current sampler (the official `value_resample`)
  4. sampler   for each step k (random order): min V(x_{k+1}, t_{k+1}) (c_T at the last step) + c_k
               through the reparameterised step x_{k+1} = mean_theta(x_k) + sigma_k z
The running cost's reference variance s_k^2 tracks the mean squared step size (the official adaptive
velocity regulariser, EMA 0.99), or stays the chain's own std^2 (`velocity_ema = 0`).

At equilibrium the sampler's law is the data's; the EBM is the reward and the value makes each step's
update local (no backpropagation through time).

Offline RL (`beta` > 0), this project's extension: neither the paper nor the official code
(swyoon/Diffusion-by-MaxEntIRL) fine-tunes toward a reward; DxMI there is imitation only (the stage above).
Here a second stage, `finetune`, runs DxDP (steps 3-4 only) from the imitation
sampler pi_0 with terminal cost c_T = -beta Q_0(s, a) and running cost KL(pi_k || pi_0,k), each step's
KL to pi_0's step (Gaussians: in closed form). The optimal path measure is pi_0's tilted by
exp(beta Q(x_T)), so the sampler targets pi_0(a|s) exp(beta Q(s, a)) (~ mu exp(beta Q), CEP's target at
scale 1) with T network evaluations per action. Why not Q added during the joint training: the EBM is
trained against the sampler, so at equilibrium pi is the data whatever the terminal cost, and E would
learn to cancel beta Q. Why not E frozen with c_T = E - tau1 beta Q and the imitation's running cost:
E is only the sampler's optimum while it trains against it (at equilibrium the EBM's gradient vanishes
for any E; its gamma E^2 term shrinks it), so DxDP toward a frozen E leaves pi_0 even at beta = 0
(8gaussians, T = 4: SWD to pi_0's own samples 0.03 -> 0.58 in 250 iterations, 0.75 after 1500).

Where this differs from the official code, and why:
- Costs are SUMMED over action dimensions (the entropy of a step is d log sigma); the official code
  averages both over the image's dimensions, which is the same as dividing tau1 and tau2 by d.
- The value's targets include the step costs (the exact soft Bellman recursion; `costs_in_value`);
  the official configs leave them out (`velocity_in_value`/`entropy_in_value` None). The entropy term is
  constant in x, so it moves V but not its gradients.
- Learning rates: the official ones are sampler 1e-7, value 1e-5, sigma 1e-5 (image U-Nets); here the
  sampler's is 1e-6 and the value's 1e-4 (small action networks), sigma's 1e-5 as the official.
- tau2 = tau1 (0.1): with the forward kernel the step costs are then tau1 times a KL; the official
  tau2 = tau1 / 10 makes the entropy bonus win, and with stds learned at a useful rate they grow until
  sigma_k^2 = (tau1 / tau2) s_k^2 under the velocity cost.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from envs.dataset import OfflineDataset
from policies import config as cfg_tools
from policies.algorithms.finetune import (Chain, FinetuneAlgorithm, FinetuneConfig, FinetunedPolicy, NoiseModel,
                                          RewardFn, finetune_stage_fields, step_kl)
from policies.algorithms.pretrain import PRETRAIN_FIELDS, PRETRAIN_PRESETS, PRETRAIN_STAGES, pretrain_settings
from policies.core.networks import EnergyNet
from policies.core.training import TrainHooks, optimiser_step, run_steps, stage_generator
from policies.errors import CheckpointError, ConfigError

REFERENCES = ("forward", "velocity")
TILTS = ("kl", "imitation")
Actions = Callable[[torch.Tensor], torch.Tensor]  # dataset row indices -> actions drawn for those rows
Terminal = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (states, actions) -> (N,) terminal cost


@dataclass(frozen=True)
class DxMIConfig(FinetuneConfig):
    chain: str = "ddim"  # the pretrained model's DDIM steps (eta = 1 at init; the stds are then learned)
    chain_steps: int = 4  # T
    tau1: float = 0.1  # entropy weight (the official value)
    tau2: float = 0.1  # running-cost weight; = tau1 makes the objective a KL (official: 0.01, see above)
    energy_reg: float = 1.0  # gamma: weight of E_data[E^2] + E_pi[E^2]
    reference: str = "forward"  # the running cost's kernel q: "forward" (VP noising) or "velocity" (official)
    velocity_ema: float = 0.0  # "velocity" only: s_k^2 as an EMA of the squared step (official 0.99); 0: std^2
    costs_in_value: bool = True
    value_hidden: int = 256
    value_layers: int = 4
    # stage "imitation": EBM, value and sampler together
    imitation_iterations: int = 20_000
    # stage "finetune" (beta > 0), from the imitation sampler pi_0 and its EBM/value: "kl", DxDP toward -beta Q with a KL
    # to pi_0 per step; "imitation", DxMI's own imitation of actions resampled by exp(beta Q) from the support actions
    tilt: str = "kl"
    iterations: int = 5_000
    batch: int = 256  # dataset pairs (and chains) per iteration
    # the sampler's network: its first steps multiply eps by ~10 (x_0 is predicted from t = 1), so small moves of
    # the weights move the samples far; on 8gaussians (T = 4, DDIM start) 1e-4 and 1e-5 oscillate, 1e-6 improves
    # steadily (the official 1e-7 is for image U-Nets)
    lr: float = 1e-6
    sigma_lr: float = 1e-5  # the sampler's log stds
    value_lr: float = 1e-4  # value and energy (one network)
    max_grad_norm: float = 0.1  # the sampler's (the official value)

    LATER: ClassVar[dict[str, Any]] = {**FinetuneConfig.LATER, "tilt": "kl"}  # runs from before the choice keep their ids

    def __post_init__(self) -> None:
        self.check_finetune("dxmi")
        if self.tilt not in TILTS:
            raise ConfigError(f"dxmi: unknown tilt {self.tilt!r}; choose one of {', '.join(TILTS)}")
        cfg_tools.check_bounds(self, "dxmi", at_least_one=("value_hidden", "value_layers", "batch"),
                               non_negative=("imitation_iterations", "iterations"),
                               positive=("lr", "sigma_lr", "value_lr", "max_grad_norm"),
                               finite_non_negative=("tau1", "tau2", "energy_reg"))
        if not 0 <= self.velocity_ema < 1:
            raise ConfigError(f"dxmi: velocity_ema must be in [0, 1) (0: a fixed reference variance), "
                              f"got {self.velocity_ema}")
        if self.reference not in REFERENCES:
            raise ConfigError(f"dxmi: unknown reference {self.reference!r}; choose one of {', '.join(REFERENCES)}")
        if self.velocity_ema and self.reference != "velocity":
            raise ConfigError("dxmi: velocity_ema tracks the step size of the 'velocity' reference; set "
                              "reference=velocity or velocity_ema=0")
        if self.train_last:
            raise ConfigError("dxmi: train_last must be 0: DxDP trains every step of the sampler, each by its value")


class DxMISampler(FinetunedPolicy):
    """The few-step sampler: the chain's means from a trainable copy of mu_theta, and learned stds.

    It also holds the running cost's reference kernel q(x_k | x_{k+1}) = N(r_k x_{k+1}, v_k I), per step:
    "forward", the VP noising from t_{k+1} back to t_k (r_k = alpha_{t_k} / alpha_{t_{k+1}},
    v_k = 1 - r_k^2), with which tau1 = tau2 makes the sampler's objective KL(pi || p~ q), whose
    optimum has the law p~ of x_T; or "velocity", the official ||x_{k+1} - x_k||^2 / (2 s_k^2)
    (r_k = 1, v_k = s_k^2: the chain's std^2, tracked by an EMA when `velocity_ema` > 0)."""

    def __init__(self, pretrained: NoiseModel, chain: Chain, reference: str = "forward"):
        super().__init__(pretrained, chain)
        if reference not in REFERENCES:
            raise ConfigError(f"dxmi: unknown reference {reference!r}; choose one of {', '.join(REFERENCES)}")
        init = self.coef[:, 2].clamp_min(1e-6).log()
        self.log_std = nn.Parameter(init[:-1].clone())  # every step's std but the last is learned
        self.register_buffer("last_log_std", init[-1:].clone())
        if reference == "forward":
            alphas = torch.tensor([pretrained.schedule.alpha_sigma(t)[0] for t in self.times], dtype=torch.float64)
            gain = alphas[:-1] / alphas[1:]
            var = 1 - gain.pow(2)
        else:
            gain, var = torch.ones(chain.steps, dtype=torch.float64), self.coef[:, 2].double().pow(2)
        self.register_buffer("ref_gain", gain.float())
        self.register_buffer("ref_var", var.float())

    def stds(self) -> torch.Tensor:
        return self.log_stds().exp()

    def log_stds(self) -> torch.Tensor:
        return torch.cat([self.log_std, self.last_log_std])

    def transition(self, x: torch.Tensor, k: int, states: torch.Tensor, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean_theta(x_k), x_{k+1} = mean + sigma_k z), differentiable in theta and sigma (reparameterised)."""
        mean = self.means(self.model, x, k, states)
        return mean, mean + self.stds()[k] * torch.randn(mean.shape, device=mean.device, generator=generator)

    def step(self, x: torch.Tensor, k: int, states: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        return self.transition(x, k, states, generator)[1]

    @torch.no_grad()
    def trajectory(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(T + 1, N, A): x_0 ~ N(0, I), ..., x_T = the actions."""
        x = torch.randn((states.shape[0], self.pretrained.action_dim), device=states.device, generator=generator)
        xs = [x]
        for k in range(self.chain.steps):
            x = self.step(x, k, states, generator)
            xs.append(x)
        return torch.stack(xs)

    @torch.no_grad()
    def track_velocity(self, xs: torch.Tensor, ema: float) -> None:
        """s_k^2 <- ema s_k^2 + (1 - ema) mean squared step (per dimension), as the official `adavelreg`."""
        if ema > 0:  # "velocity" only (the config checks)
            self.ref_var.mul_(ema).add_((1 - ema) * (xs[1:] - xs[:-1]).pow(2).mean((1, 2)))

    def trained_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "log_std": self.log_std.detach().clone(),
                "ref_var": self.ref_var.clone()}

    def load_trained_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        with torch.no_grad():
            self.log_std.copy_(state["log_std"])
            self.ref_var.copy_(state["ref_var"])


def ebm_loss(e_data: torch.Tensor, e_model: torch.Tensor, gamma: float) -> torch.Tensor:
    """E_data[E] - E_pi[E] + gamma (E_data[E^2] + E_pi[E^2]): low energy on data, bounded by the square."""
    return e_data.mean() - e_model.mean() + gamma * (e_data.pow(2).mean() + e_model.pow(2).mean())


def step_cost(sampler: DxMISampler, x: torch.Tensor, nxt: torch.Tensor, k: int, tau1: float, tau2: float
              ) -> torch.Tensor:
    """c_k = tau2 (-log q(x_k | x_{k+1}), up to a constant) - tau1 d log sigma_k (the step's entropy, likewise)."""
    running = (x - sampler.ref_gain[k] * nxt).pow(2).sum(-1) / (2 * sampler.ref_var[k])
    return tau2 * running - tau1 * x.shape[-1] * sampler.log_stds()[k]


StepCost = Callable[[torch.Tensor, int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# (x_k, k, states, mean of the step, x_{k+1}) -> (N,): the running cost of step k, differentiable in the sampler


def entropy_cost(sampler: DxMISampler, tau1: float, tau2: float) -> StepCost:
    """DxMI's running cost: the reference kernel's negative log-density and the step's entropy bonus."""
    return lambda x, k, states, mean, nxt: step_cost(sampler, x, nxt, k, tau1, tau2)


def kl_cost(sampler: DxMISampler, reference: DxMISampler) -> StepCost:
    """KL of the step to a frozen sampler's step: with terminal cost -beta Q, the optimal path measure is the
    reference's tilted by exp(beta Q(x_T)), whose law of x_T is the reference's times exp(beta Q)."""
    def cost(x: torch.Tensor, k: int, states: torch.Tensor, mean: torch.Tensor, nxt: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref_mean = reference.means(reference.model, x, k, states)
        return step_kl(mean, ref_mean, sampler.stds()[k], reference.stds()[k])
    return cost


class DxDP:
    """Dynamic programming over the T steps: the value's TD updates and the sampler's local updates.

    `value(a, t, s)` -> (N,); `terminal(s, a)` -> (N,), the cost of the final action. With `surrogate`, the
    terminal cost need not be differentiable (a toy's piecewise-constant Q): the value at the chain's last
    time is regressed onto it, and the sampler's last step descends that smooth fit instead."""

    def __init__(self, sampler: DxMISampler, value: nn.Module, terminal: Terminal, cost: StepCost, cfg: DxMIConfig,
                 generator: torch.Generator, surrogate: bool = False):
        self.sampler, self.value, self.terminal, self.cfg, self.gen = sampler, value, terminal, cfg, generator
        self.cost = cost
        self.surrogate = surrogate
        self.value_opt = torch.optim.Adam(value.parameters(), lr=cfg.value_lr)
        self.sampler_opt = torch.optim.Adam([{"params": list(sampler.model.parameters()), "lr": cfg.lr},
                                             {"params": [sampler.log_std], "lr": cfg.sigma_lr}])

    def cost_to_go(self, states: torch.Tensor, nxt: torch.Tensor, k: int, exact: bool = True) -> torch.Tensor:
        """What follows step k: c_T(x_T) after the last step (its fit, for gradients, with `surrogate`), else
        V(x_{k+1}, t_{k+1})."""
        if k == self.sampler.chain.steps - 1 and (exact or not self.surrogate):
            return self.terminal(states, nxt)
        return self.value(nxt, self.sampler.times[k + 1], states)

    def update_value(self, xs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """One TD step per chain step, from the last back to the first; returns the mean TD loss."""
        cfg, total, steps = self.cfg, 0.0, self.sampler.chain.steps
        if self.surrogate:  # V(., t_T) fitted to the terminal cost at the chains' final actions
            with torch.no_grad():
                target = self.terminal(states, xs[-1])
            optimiser_step(self.value_opt, (self.value(xs[-1], self.sampler.times[-1], states) - target).pow(2).mean())
        for k in reversed(range(steps)):
            with torch.no_grad():
                mean, nxt = self.sampler.transition(xs[k], k, states, self.gen)
                target = self.cost_to_go(states, nxt, k)
                if cfg.costs_in_value:
                    target = target + self.cost(xs[k], k, states, mean, nxt)
            total = total + optimiser_step(self.value_opt,
                                           (self.value(xs[k], self.sampler.times[k], states) - target).pow(2).mean())
        return total / steps

    def update_sampler(self, xs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """One gradient step per chain step (random order), each through that step alone; returns the mean
        objective V(x_{k+1}) + c_k."""
        cfg, steps, total = self.cfg, self.sampler.chain.steps, 0.0
        params = [p for group in self.sampler_opt.param_groups for p in group["params"]]
        self.value.requires_grad_(False)
        for k in torch.randperm(steps, generator=self.gen, device=self.gen.device).tolist():
            mean, nxt = self.sampler.transition(xs[k], k, states, self.gen)
            loss = (self.cost_to_go(states, nxt, k, exact=False) + self.cost(xs[k], k, states, mean, nxt)).mean()
            self.sampler_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            self.sampler_opt.step()
            total = total + loss.detach()
        self.value.requires_grad_(True)
        return total / steps

    def state(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "value": self.value, "value_opt": self.value_opt,
                "sampler_opt": self.sampler_opt, "generator": self.gen}


def value_energy(value: nn.Module, sampler: DxMISampler) -> Terminal:
    """E(s, a) = V(a, t_T, s): the value network at the chain's last time is the energy."""
    t_end = sampler.times[-1]
    return lambda states, actions: value(actions, t_end, states)


def train_imitation(sampler: DxMISampler, value: nn.Module, states: torch.Tensor, actions: torch.Tensor | Actions,
                    cfg: DxMIConfig, generator: torch.Generator, workdir: Path | None = None,
                    hooks: TrainHooks | None = None, progress: bool = False, fingerprint: Any = None,
                    iterations: int | None = None, name: str = "imitation (dxmi)") -> dict[str, Any]:
    """DxMI (Algorithm 1): EBM, value and sampler in turn; the loss logged is the EBM's. `actions`: the data's
    actions per state row, or a draw of them for given rows (the imitation tilt's resampled support actions)."""
    energy = value_energy(value, sampler)
    dp = DxDP(sampler, value, energy, entropy_cost(sampler, cfg.tau1, cfg.tau2), cfg, generator)
    n, last = states.shape[0], {}
    draw = actions if callable(actions) else (lambda rows: actions[rows])
    iterations = cfg.imitation_iterations if iterations is None else iterations

    def step(_: int) -> torch.Tensor:
        i = torch.randint(n, (cfg.batch,), device=states.device, generator=generator)
        s = states[i]
        xs = sampler.trajectory(s, generator)
        sampler.track_velocity(xs, cfg.velocity_ema)
        loss = optimiser_step(dp.value_opt, ebm_loss(energy(s, draw(i)), energy(s, xs[-1]), cfg.energy_reg))
        last["value"] = dp.update_value(xs, s)
        last["sampler"] = dp.update_sampler(xs, s)
        return loss

    record = run_steps(step, iterations, name, progress=progress, workdir=workdir, hooks=hooks,
                       fingerprint=fingerprint, state=dp.state())
    return record | _dp_record(sampler, iterations, cfg, last, energy_steps=1)


def tilted_support(support: torch.Tensor, q: torch.Tensor, beta: float, generator: torch.Generator) -> Actions:
    """Per state row, one of its M support actions (M samples of mu_theta) drawn with probability
    softmax(beta Q) over them, afresh at every draw: self-normalised importance resampling of the tilt
    mu_theta exp(beta Q), which the imitation then learns as it learns the data (support (N, M, A), q (N, M))."""
    weights = torch.softmax(beta * q, -1)

    def draw(rows: torch.Tensor) -> torch.Tensor:
        j = torch.multinomial(weights[rows], 1, generator=generator)[:, 0]
        return support[rows, j]

    return draw


def train_dxdp(sampler: DxMISampler, value: nn.Module, states: torch.Tensor, terminal: Terminal, cost: StepCost,
               cfg: DxMIConfig, generator: torch.Generator, workdir: Path | None = None, hooks: TrainHooks | None = None,
               progress: bool = False, fingerprint: Any = None, surrogate: bool = False, reference_nfe: int = 0
               ) -> dict[str, Any]:
    """DxDP alone toward a fixed terminal cost (steps 3-4); the loss logged is the sampler's objective.
    `reference_nfe`: network evaluations per sample and iteration that `cost` makes (for the record)."""
    dp = DxDP(sampler, value, terminal, cost, cfg, generator, surrogate)
    n, last = states.shape[0], {}

    def step(_: int) -> torch.Tensor:
        s = states[torch.randint(n, (cfg.batch,), device=states.device, generator=generator)]
        xs = sampler.trajectory(s, generator)
        sampler.track_velocity(xs, cfg.velocity_ema)
        last["value"] = dp.update_value(xs, s)
        return dp.update_sampler(xs, s)

    record = run_steps(step, cfg.iterations, "finetune (dxdp)", progress=progress, workdir=workdir, hooks=hooks,
                       fingerprint=fingerprint, state=dp.state())
    return record | _dp_record(sampler, cfg.iterations, cfg, last, energy_steps=0, reference_nfe=reference_nfe)


def _dp_record(sampler: DxMISampler, iterations: int, cfg: DxMIConfig, last: dict[str, torch.Tensor],
               energy_steps: int, reference_nfe: int = 0) -> dict[str, Any]:
    steps = sampler.chain.steps
    samples = iterations * cfg.batch
    return {"gradient_steps": iterations * (energy_steps + 2 * steps), "samples": samples,
            # per iteration: the chains (T), the value's fresh steps (T), the sampler's steps (T), and the
            # running cost's own evaluations per sample (a reference sampler's means: 2T)
            "nfe": samples * (3 * steps + reference_nfe), "stds": [float(v) for v in sampler.stds().detach()],
            "final_value_loss": float(last["value"]) if "value" in last else None}


def _preset(name: str, **dxmi: Any) -> DxMIConfig:
    return DxMIConfig(**{**pretrain_settings(PRETRAIN_PRESETS[name]), **dxmi})


PRESETS: dict[str, DxMIConfig] = {
    "paper": _preset("paper"),
    "cpu": _preset("cpu", value_hidden=128, imitation_iterations=2_000, iterations=1_000),
    # `diffbench quick`: about 3 minutes per seed on one core after the shared stages (0.11 s per iteration)
    "quick": _preset("quick", value_hidden=128, imitation_iterations=1_000, iterations=500),
    "tiny": _preset("tiny", value_hidden=32, value_layers=2, imitation_iterations=5, iterations=5, batch=16),
}

IMITATION_FIELDS = ("chain", "chain_grid", "chain_steps", "tau1", "tau2", "energy_reg", "reference", "velocity_ema",
                    "costs_in_value", "value_hidden", "value_layers", "imitation_iterations", "batch", "lr",
                    "sigma_lr", "value_lr", "max_grad_norm")


class DxMI(FinetuneAlgorithm):
    """Stages: behaviour, support, critic (shared with QGPO, DDPO), imitation (DxMI), finetune (DxDP with beta Q)."""

    name = "dxmi"
    description = ("DxMI (Yoon et al., NeurIPS 2024): a T-step sampler and an energy-based model trained by max-"
                   "ent IRL on the data; its tilt toward Q_0 by DxDP is this project's extension")
    budget_fields = ("behaviour_steps", "q_steps", "imitation_iterations", "iterations")
    config_cls = DxMIConfig
    presets = PRESETS
    stages = (*PRETRAIN_STAGES, "imitation", "finetune")
    # the few-step sampler acts from the imitation stage on: its curve says whether more imitation would close its
    # gap to the behaviour model it imitates (halfcheetah: 3.9-16.0 after imitation against 27.6-33.7)
    curve_stages = ("imitation", "finetune")
    stage_fields = finetune_stage_fields(("tilt", "iterations"), before={**PRETRAIN_FIELDS,
                                                                           "imitation": IMITATION_FIELDS})

    def build(self, observation_dim: int, action_dim: int) -> None:
        super().build(observation_dim, action_dim)
        cfg = self.config
        self.value = EnergyNet(action_dim, observation_dim, cfg.value_hidden, cfg.value_layers).to(self.device)
        self.sampler: DxMISampler | None = None

    def new_sampler(self) -> DxMISampler:
        return DxMISampler(self.behaviour, self.config.chain_spec(), self.config.reference).to(self.device)

    def fit_reward_model(self, dataset: OfflineDataset, t: Any, workdir: Path | None, hooks: TrainHooks | None,
                         progress: bool) -> None:
        super().fit_reward_model(dataset, t, workdir, hooks, progress)
        cfg = self.config
        with self.stage("imitation", workdir, hooks) as todo:
            if todo:
                self.sampler = self.new_sampler()
                self.records["imitation"] = train_imitation(
                    self.sampler, self.value, t.observations, t.actions, cfg,
                    stage_generator(cfg.seed, "imitation", self.device), workdir, hooks, progress,
                    fingerprint=self.fingerprint("imitation"))
                self.save(workdir, "imitation", {**self.sampler.trained_state(), "value": self.value.state_dict()})

    def new_policy(self) -> FinetunedPolicy:
        """The imitation stage's sampler, to be tilted by beta Q (or kept, at beta = 0)."""
        policy = self.new_sampler()
        if self.sampler is not None:
            policy.load_trained_state(self.sampler.trained_state())
        return policy

    def keeps_support(self) -> bool:
        return self.config.tilt == "imitation"

    def start(self) -> FinetuneAlgorithm | None:
        if self.policy is not None and self.sampler is None:  # loaded for acting alone: no imitation sampler
            raise CheckpointError("DxMI's start is its imitation sampler, which a policy loaded for acting does not "
                                  "restore; load the run with every_stage=True")
        return super().start()

    def acting_policy(self) -> FinetunedPolicy | None:
        """Before the finetune stage (a learning curve's point during imitation), the imitation sampler."""
        return self.policy if self.policy is not None else self.sampler

    def finetune(self, policy: FinetunedPolicy, states: torch.Tensor, reward: RewardFn, generator: torch.Generator,
                 workdir: Path | None, hooks: TrainHooks | None, progress: bool) -> dict[str, Any]:
        cfg = self.config
        if cfg.tilt == "imitation":  # DxMI's own mechanism, from pi_0 and its EBM/value, on exp(beta Q)-resampled data
            support = self._support["support"][: states.shape[0]]  # the dataset states' rows come first
            with torch.no_grad():  # Q_0 (a TwinQ) takes each state's M actions at once: (B, S) with (B, M, A)
                q = torch.cat([reward(s, a) for s, a in zip(states.split(4096), support.split(4096))])
            record = train_imitation(policy, copy.deepcopy(self.value), states,
                                     tilted_support(support, q, cfg.beta, generator), cfg, generator, workdir, hooks,
                                     progress, fingerprint=self.fingerprint("finetune"), iterations=cfg.iterations,
                                     name="finetune (dxmi imitation tilt)")
            self._support = {}
            return record | {"support_q_evaluations": int(q.numel())}
        reference = copy.deepcopy(policy).requires_grad_(False)  # pi_0, the imitation sampler
        terminal = lambda s, a: -cfg.beta * reward(s, a)  # noqa: E731
        # the value starts from the imitation's (a warm start of its features; its targets are new)
        return train_dxdp(policy, copy.deepcopy(self.value), states, terminal, kl_cost(policy, reference), cfg,
                          generator, workdir, hooks, progress, fingerprint=self.fingerprint("finetune"),
                          reference_nfe=2 * cfg.chain_steps)

    def stage_steps(self) -> dict[str, int]:
        cfg = self.config  # per iteration: one EBM step, T value steps, T sampler steps
        return {**super().stage_steps(), "imitation": cfg.imitation_iterations * (1 + 2 * cfg.chain_steps)}

    def restore(self, stage: str, ckpt: dict[str, Any]) -> None:
        if stage == "imitation":
            self.sampler = self.new_sampler()
            self.sampler.load_trained_state(ckpt)
            self.value.load_state_dict(ckpt["value"])
        else:
            super().restore(stage, ckpt)
