"""Picking actions among a behaviour model's candidates by a critic: the acting step of SfBC, IDQL and
Diffusion-QL.

Drawing one of N candidates a_i ~ mu(.|s) with probability ∝ exp(temperature * score_i) is sampling-
importance-resampling of pi(a|s) ∝ mu(a|s) exp(temperature * Q(s, a)), exact as N grows: temperature 0
gives mu back; a large one, the best candidate (`greedy`). Several picks without replacement
(`keep` > 1, SfBC on locomotion) use the Gumbel-top-k trick, which needs no normalised probabilities
and so cannot underflow at SfBC's temperature of 100.
"""

from __future__ import annotations

import torch

from policies.errors import ConfigError

RULES = ("softmax", "greedy", "expectile")


def gumbel(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(like.dtype).tiny)))


def resample(candidates: torch.Tensor, logits: torch.Tensor, keep: int = 1,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """candidates (B, N, A), logits (B, N) -> (B, A): the mean of `keep` candidates drawn without
    replacement with probabilities ∝ exp(logits) (keep = 1: one draw)."""
    if not 1 <= keep <= candidates.shape[1]:
        raise ConfigError(f"keep must be in [1, {candidates.shape[1]}] (the number of candidates), got {keep}")
    picked = (logits + gumbel(logits.shape, logits, generator)).topk(keep, dim=1).indices  # (B, keep)
    return candidates.gather(1, picked[..., None].expand(-1, -1, candidates.shape[-1])).mean(1)


def select(candidates: torch.Tensor, scores: torch.Tensor, rule: str = "softmax", temperature: float = 1.0,
           keep: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """One action per state from (B, N, A) candidates and their (B, N) scores.

    softmax    p_i ∝ exp(temperature * score_i)                          (SfBC, Diffusion-QL; IDQL "exponential")
    greedy     the highest score                                          (IDQL's evaluation, "IDQL-A")
    expectile  p_i ∝ |tau - 1(score_i < 0)|, score an advantage Q - V     (IDQL's implicit policy, tau = temperature)
    """
    if rule == "greedy":
        best = scores.argmax(1)
        return candidates[torch.arange(candidates.shape[0], device=candidates.device), best]
    if rule == "softmax":
        return resample(candidates, temperature * scores, keep, generator)
    if rule == "expectile":
        if not 0 < temperature < 1:
            raise ConfigError(f"the expectile rule takes tau in (0, 1) as its temperature, got {temperature}")
        weights = torch.where(scores < 0, 1 - temperature, temperature)
        return resample(candidates, weights.log(), keep, generator)
    raise ConfigError(f"unknown selection rule {rule!r}; choose one of {', '.join(RULES)}")
