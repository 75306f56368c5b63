"""Networks of the diffusion core: the QGPO noise network, the time-conditioned energy, twin Q.

Conditioning that does not change during sampling is split out (`condition`) so a solver
computes the state's contribution once per call, not once per step.
"""

from __future__ import annotations

import math
import os
import warnings
from contextlib import contextmanager
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def allow_empty_state():
    """state_dim 0 (unconditional models, toy bandits) gives empty weights; torch warns, harmlessly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        yield


def _mish_value(x: torch.Tensor) -> torch.Tensor:
    u = x.clamp(max=20.0).exp_()
    n = (u + 2.0).mul_(u)
    return n.div(n + 2.0).mul_(x)


def _mish_grad(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    u = x.clamp(max=20.0).exp_()
    n = (u + 2.0).mul_(u)
    inv = (n + 2.0).reciprocal_()
    slope = (u + 1.0).mul_(u).mul_(inv).mul_(inv).mul_(4.0).mul_(x)  # x d/dx tanh(softplus(x))
    return slope.add_(n.mul_(inv)).mul_(grad)


class _Fused:
    """An elementwise function fused into one loop by torch.compile (inductor), per device type; eager where
    compiling fails (no C++ compiler, no Triton) or DIFFBENCH_COMPILE=0. Eager, Mish is seven passes over its
    tensor: on DAC's backup shape (10 critics x 2,560 rows x 256) the fused loop is about 7x faster; training steps
    gain 1.33x for DAC, 1.08x for IDQL's behaviour model and 1.04x for Diffusion-QL (quiet 2-core EPYC,
    results/perf_kernels.md). Fused values differ from eager ones by float rounding only
    (tests/test_networks_mish.py), so a long run's numbers are not bit-equal between the two. Inputs are
    flattened, so one graph serves every shape; a later compile that fails (a new shape, a new mode) falls back
    to eager for good rather than end the run."""

    def __init__(self, fn):
        self.fn, self.compiled, self.kernel, self.calls, self.eager = fn, None, {}, 0, False

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        device = args[0].device.type
        self.calls += 1
        if device not in self.kernel:
            self.kernel[device] = "eager"
            if os.environ.get("DIFFBENCH_COMPILE", "1") != "0":
                try:
                    self.compiled = self.compiled or torch.compile(self.fn, dynamic=True)
                    probe = torch.linspace(-30.0, 30.0, 7, device=args[0].device)
                    self.compiled(*[probe] * len(args))
                    self.kernel[device] = "inductor"
                except Exception as err:  # any backend failure: the eager path gives the same values to rounding
                    warnings.warn(f"torch.compile failed on {device} ({type(err).__name__}); {self.fn.__name__} "
                                  f"runs eager, slower (set DIFFBENCH_COMPILE=0 to skip the attempt)")
        if self.eager or self.kernel[device] == "eager":
            return self.fn(*args)
        try:
            return self.compiled(*[a.reshape(-1) for a in args]).view(args[0].shape)
        except Exception as err:
            self.kernel[device] = "eager"
            warnings.warn(f"torch.compile of {self.fn.__name__} failed on {device} mid-run ({type(err).__name__}); "
                          "eager from here on")
            return self.fn(*args)


_fused_value, _fused_grad = _Fused(_mish_value), _Fused(_mish_grad)


@contextmanager
def eager_mish():
    """Mish eager inside the block, fused or not outside: `diffbench perf kernels` times both in one process."""
    saved = _fused_value.eager, _fused_grad.eager
    _fused_value.eager = _fused_grad.eager = True
    try:
        yield
    finally:
        _fused_value.eager, _fused_grad.eager = saved


def mish_kernels() -> tuple[int, dict[str, str]]:
    """Mish's calls so far in this process, and which kernel served each device type: a run records the kernel
    beside its hardware when it called Mish."""
    return _fused_value.calls, dict(_fused_value.kernel)


class _Mish(torch.autograd.Function):
    """mish(x) = x tanh(softplus(x)) = x n / (n + 2), n = e^x (e^x + 2): one exp instead of the exp, log1p and tanh
    of torch's CPU kernel, which spent about half of a Diffusion-QL training step (profiled on 2-core EPYC). Equal
    to torch's mish to float rounding (tests/test_networks_mish.py); for x > 20 both give x exactly."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _fused_value(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, = ctx.saved_tensors
        return _fused_grad(x, grad)


def mish(x: torch.Tensor) -> torch.Tensor:
    """torch.nn.functional.mish, computed with one exp (`_Mish`), fused into one loop where torch.compile works."""
    return _Mish.apply(x)


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mish(x)


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class FourierTime(nn.Module):
    """Gaussian random Fourier features of t (fixed, saved with the weights), as in score-SDE."""

    def __init__(self, dim: int = 32, scale: float = 30.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2) * (scale * 2 * math.pi))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        p = t[..., None] * self.freqs
        return torch.cat([p.sin(), p.cos()], -1)


def _time_tensor(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    # a float time is shared by the whole batch: embed it once, broadcast later
    return t if isinstance(t, torch.Tensor) else torch.full((1,), t, device=like.device, dtype=like.dtype)


class ResidualBlock(nn.Module):
    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.dense1 = nn.Linear(d_in, d_out)
        self.dense2 = nn.Linear(d_out, d_out)
        self.skip = nn.Linear(d_in, d_out) if d_in != d_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.dense1(x)) + cond
        return F.silu(self.dense2(h)) + self.skip(x)


class ScoreNet(nn.Module):
    """eps_theta(a_t, t, s): QGPO's residual MLP U-Net (512-256-128-128-256-512 by default).

    Time: 32-d Fourier features (scale 30) + Linear; state: Linear(32) + SiLU; the two mixed by
    Linear(64,128)-SiLU-Linear(128,128). Every block adds Linear(SiLU(mix)); the six projections
    are one matmul here. Predicts the noise (the official net predicts -noise; same function).
    """

    def __init__(self, action_dim: int, state_dim: int, widths: Sequence[int] = (512, 256, 128),
                 time_dim: int = 32, state_embed_dim: int = 32, cond_dim: int = 128):
        super().__init__()
        w = list(widths)
        self.time_dim = time_dim
        self.time_embed = nn.Sequential(FourierTime(time_dim), nn.Linear(time_dim, time_dim))
        with allow_empty_state():
            self.state_embed = nn.Sequential(nn.Linear(state_dim, state_embed_dim), nn.SiLU())
        self.mix_time = nn.Linear(time_dim, cond_dim)  # Linear(64, 128) on [state, time], split in two
        self.mix_state = nn.Linear(state_embed_dim, cond_dim, bias=False)
        self.mix_out = nn.Linear(cond_dim, cond_dim)
        ins = [action_dim] + w[:-1] + [w[-1]] + [2 * v for v in reversed(w[1:])]
        outs = w + [w[-1]] + list(reversed(w[:-1]))
        self.blocks = nn.ModuleList(ResidualBlock(i, o) for i, o in zip(ins, outs))
        self.block_widths = outs
        self.cond_proj = nn.Linear(cond_dim, sum(outs))
        self.out = nn.Linear(2 * w[0], action_dim)
        self.n_down = len(w)

    def condition(self, states: torch.Tensor) -> torch.Tensor:
        """The state's share of the mixing layer's pre-activation, computed once per sampling call."""
        return self.mix_state(self.state_embed(states))

    def eps(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor,
            time_shift: torch.Tensor | None = None) -> torch.Tensor:
        """`time_shift` (N, time_dim), added to the time embedding, is how a new control enters (CTRL)."""
        te = self.time_embed(_time_tensor(t, x))
        if time_shift is not None:
            te = te + time_shift
        return self.trunk(x, self.projections(self.mix_time(te) + cond))

    def projections(self, mixed: torch.Tensor) -> torch.Tensor:
        """Every block's conditioning input, concatenated, from the mixing layer's pre-activation
        (time's share + the state's); a sampler with a fixed time grid computes all its steps' at once."""
        return self.cond_proj(F.silu(self.mix_out(F.silu(mixed))))

    def trunk(self, x: torch.Tensor, projections: torch.Tensor) -> torch.Tensor:
        """The residual U-Net on a_t given `projections` (the conditioning, from `projections`)."""
        skips, h = [], x
        for i, (block, c) in enumerate(zip(self.blocks, projections.split(self.block_widths, -1))):
            if i > self.n_down:  # up path: concatenate the matching down activation
                h = torch.cat([skips[2 * self.n_down - i], h], -1)
            h = block(h, c)
            if i < self.n_down:
                skips.append(h)
        return self.out(torch.cat([skips[0], h], -1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.eps(x, t, self.condition(states))


class EnergyNet(nn.Module):
    """f_phi(a_t, s, t): QGPO's intermediate energy, an MLP (4x256 SiLU) on [a_t, emb(t), s].

    `action_grad` is the analytic input gradient (a backward pass written out), so guided
    sampling runs in inference mode without building an autograd graph at every solver step.
    """

    def __init__(self, action_dim: int, state_dim: int, hidden: int = 256, layers: int = 4, time_dim: int = 32):
        super().__init__()
        self.action_dim, self.time_dim = action_dim, time_dim
        self.time_embed = nn.Sequential(FourierTime(time_dim), nn.Linear(time_dim, time_dim))
        # the first Linear on [a, emb(t), s], split by input so that each part is computed where it changes
        self.inp_action = nn.Linear(action_dim, hidden, bias=False)
        self.inp_time = nn.Linear(time_dim, hidden, bias=False)
        with allow_empty_state():
            self.inp_state = nn.Linear(state_dim, hidden)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, 1)

    def condition(self, states: torch.Tensor) -> torch.Tensor:
        """The state's share (plus bias) of the first layer's pre-activation."""
        return self.inp_state(states)

    def _first(self, a: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        return self.inp_action(a) + self.time_offset(t, a) + cond

    def time_offset(self, t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
        """Time's share of the first layer's pre-activation."""
        return self.inp_time(self.time_embed(_time_tensor(t, like)))

    def energy(self, a: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        h = F.silu(self._first(a, t, cond))
        for layer in self.hidden:
            h = F.silu(layer(h))
        return self.out(h).squeeze(-1)

    def forward(self, a: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Energies for a (..., A) with t (...) and states broadcastable to (..., S) after `condition`."""
        return self.energy(a, t, self.condition(states))

    def action_grad(self, a: torch.Tensor, t: float, cond: torch.Tensor) -> torch.Tensor:
        return self._input_grad(self._first(a, t, cond))

    def action_grad_at(self, a: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """grad_a f given the first layer's pre-activation less its action share (time's + the state's)."""
        return self._input_grad(self.inp_action(a) + offset)

    def _input_grad(self, first: torch.Tensor) -> torch.Tensor:
        zs = [first]
        sig = [torch.sigmoid(zs[0])]
        for layer in self.hidden:
            zs.append(layer(zs[-1] * sig[-1]))
            sig.append(torch.sigmoid(zs[-1]))
        g = self.out.weight  # (1, H), broadcast over the batch
        for i in range(len(zs) - 1, -1, -1):
            z, s = zs[i], sig[i]
            g = g * (s * (1 + z * (1 - s)))  # silu'(z)
            weight = self.hidden[i - 1].weight if i > 0 else self.inp_action.weight
            g = g @ weight
        return g

    def grad_fn(self, states: torch.Tensor):
        """grad_a f(a, s, t) for a batch laid out like `states`, as the samplers' guidance takes it."""
        cond = self.condition(states)
        return lambda a, t: self.action_grad(a, t, cond)


class TwinQ(nn.Module):
    """Two Q(s, a) MLPs (3x256 ReLU; Diffusion-QL's: Mish); the pessimistic value is their minimum."""

    def __init__(self, action_dim: int, state_dim: int, hidden: int = 256, layers: int = 3,
                 activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        sizes = [state_dim + action_dim] + [hidden] * layers + [1]
        self.q1, self.q2 = mlp(sizes, activation), mlp(sizes, activation)

    def both(self, states: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if actions.dim() == states.dim() + 1:  # many actions per state: (B, M, A) with (B, S)
            states = states.unsqueeze(-2).expand(*actions.shape[:-1], states.shape[-1])
        sa = torch.cat([states, actions], -1)
        return self.q1(sa).squeeze(-1), self.q2(sa).squeeze(-1)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return torch.minimum(*self.both(states, actions))

    def regression_loss(self, states: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Both twins' mean squared error to the (fixed) targets, summed."""
        q1, q2 = self.both(states, actions)
        return (q1 - targets).pow(2).mean() + (q2 - targets).pow(2).mean()


# ---------------------------------------------------------------- noise networks on discrete levels (`policies.core.ddpm`)

class SinusoidalTime(nn.Module):
    """Transformer-style sinusoidal features of a (level) index: [sin(t w_k), cos(t w_k)], w_k = 10000^(-k/(d/2-1))."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1))))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        p = t[..., None] * self.freqs
        return torch.cat([p.sin(), p.cos()], -1)


class DQLNoiseNet(nn.Module):
    """Diffusion-QL's noise network (agents/model.py): an MLP of `layers` x `hidden` Mish units on
    [a_i, emb(i), s], emb = Linear-Mish-Linear of 16 sinusoidal features of the level i."""

    def __init__(self, action_dim: int, state_dim: int, hidden: int = 256, layers: int = 3, time_dim: int = 16):
        super().__init__()
        self.time_embed = nn.Sequential(SinusoidalTime(time_dim), nn.Linear(time_dim, 2 * time_dim), Mish(),
                                        nn.Linear(2 * time_dim, time_dim))
        self.mid = mlp([action_dim + time_dim + state_dim, *[hidden] * layers], Mish)
        self.out = nn.Linear(hidden, action_dim)

    def condition(self, states: torch.Tensor) -> torch.Tensor:
        return states

    def eps(self, x: torch.Tensor, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.out(mish(self.mid(torch.cat([x, self.time_embed(level), cond], -1))))

    def forward(self, x: torch.Tensor, level: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.eps(x, level, states)


class LearnedFourierTime(nn.Module):
    """[cos(2 pi t W), sin(2 pi t W)] with a trained W, initialised N(0, 0.2^2) (IDQL's FourierFeatures)."""

    def __init__(self, dim: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(dim // 2) * 0.2)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        p = 2 * math.pi * t[..., None] * self.kernel
        return torch.cat([p.cos(), p.sin()], -1)


class LNResNetBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.dropout, self.norm = nn.Dropout(dropout), nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(mish(self.up(self.norm(self.dropout(x)))))


class LNResNetNoiseNet(nn.Module):
    """IDQL's noise network (MLPResNetV3 with layer norm): Linear to `hidden` from [a_i, s, cond(i)], `blocks`
    residual blocks (dropout, LayerNorm, Linear to 4x, Mish, Linear back), Mish, Linear out; cond(i) =
    Linear-Mish-Linear (128) of 64 learned Fourier features of the level i. Dropout acts in training only."""

    def __init__(self, action_dim: int, state_dim: int, hidden: int = 256, blocks: int = 3, dropout: float = 0.1,
                 time_dim: int = 64, cond_dim: int = 128):
        super().__init__()
        self.time_embed = nn.Sequential(LearnedFourierTime(time_dim), nn.Linear(time_dim, cond_dim), Mish(),
                                        nn.Linear(cond_dim, cond_dim))
        self.inp = nn.Linear(action_dim + state_dim + cond_dim, hidden)
        self.blocks = nn.Sequential(*(LNResNetBlock(hidden, dropout) for _ in range(blocks)))
        self.out = nn.Linear(hidden, action_dim)

    def condition(self, states: torch.Tensor) -> torch.Tensor:
        return states

    def eps(self, x: torch.Tensor, level: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.inp(torch.cat([x, cond, self.time_embed(level)], -1)))
        return self.out(mish(h))

    def forward(self, x: torch.Tensor, level: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.eps(x, level, states)


# ---------------------------------------------------------------- ensembles and the flow core's network

class EnsembleLinear(nn.Module):
    """E independent Linear layers applied as one batched matmul: (E, N, in) -> (E, N, out). Each member is
    initialised as `nn.Linear` initialises one layer, so an ensemble of one trains as a plain MLP does."""

    def __init__(self, members: int, d_in: int, d_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(members, 1, d_out))
        bound = 1 / math.sqrt(d_in) if d_in > 0 else 0.0
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleQ(nn.Module):
    """E critics Q_e(s, a), trained as one network: DAC's ensemble (10, Mish) and FQL's pair (GELU, layer norm
    after each hidden activation, as the official `Value`). `members` gives every member's value, (E, ...); called,
    it gives their mean, the value both methods' actors climb (and what a critic check reads, as of `TwinQ`)."""

    def __init__(self, members: int, action_dim: int, state_dim: int, hidden: int = 256, layers: int = 3,
                 activation: type[nn.Module] = Mish, layer_norm: bool = False):
        super().__init__()
        self.size = members
        sizes = [state_dim + action_dim] + [hidden] * layers
        body: list[nn.Module] = []
        for d_in, d_out in zip(sizes[:-1], sizes[1:]):
            body += [EnsembleLinear(members, d_in, d_out), activation()]
            if layer_norm:
                body.append(nn.LayerNorm(d_out))
        self.body = nn.Sequential(*body, EnsembleLinear(members, hidden, 1))

    def members(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if actions.dim() == states.dim() + 1:  # many actions per state: (B, M, A) with (B, S)
            states = states.unsqueeze(-2).expand(*actions.shape[:-1], states.shape[-1])
        sa = torch.cat([states, actions], -1)
        lead = sa.shape[:-1]
        out = self.body(sa.reshape(1, -1, sa.shape[-1]).expand(self.size, -1, -1))
        return out.reshape(self.size, *lead)

    def forward(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.members(states, actions).mean(0)

    def regression_loss(self, states: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Every member's mean squared error to the (fixed) targets, averaged over members."""
        return (self.members(states, actions) - targets).pow(2).mean()


def gelu_mlp(sizes: Sequence[int], layer_norm: bool = False) -> nn.Sequential:
    """FQL's MLP: GELU after every hidden layer (then LayerNorm, where asked), a linear output."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
            if layer_norm:
                layers.append(nn.LayerNorm(sizes[i + 1]))
    return nn.Sequential(*layers)


class VectorField(nn.Module):
    """v(x, t, s): an MLP on [s, x, t] (FQL's ActorVectorField), t a (B,) tensor or a float shared by the batch.
    Built `timed=False` it is a map of [s, x] alone: FQL's one-step policy, noise in, action out."""

    def __init__(self, action_dim: int, state_dim: int, hidden: int = 512, layers: int = 4, layer_norm: bool = False,
                 timed: bool = True):
        super().__init__()
        self.timed = timed
        with allow_empty_state():
            self.net = gelu_mlp([state_dim + action_dim + int(timed), *[hidden] * layers, action_dim], layer_norm)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float | None, states: torch.Tensor) -> torch.Tensor:
        parts = [states, x]
        if self.timed:
            t = _time_tensor(t, x)
            parts.append(t.expand(x.shape[0])[:, None] if t.numel() == 1 else t[:, None])
        return self.net(torch.cat(parts, -1))
