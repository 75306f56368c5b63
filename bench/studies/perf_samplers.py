"""Acting throughput of every sampler a policy here acts with, in one run on one machine
(`diffbench perf samplers`): QGPO's guided 15-step DPM-Solver-2, the s = 0 ablation, the K-step chain of
DDPO and CTRL, DxMI's T-step samplers, and the one-step policies of SRPO and FQL beside DAC's pick among 10
draws of its 5-step chain. Official network sizes, HalfCheetah shapes; actions per second
at batch 10 (one environment step of a small vector env) and 4096 (evaluation of many states at once).
Ratios are taken only between rows of this one run."""

from __future__ import annotations

from pathlib import Path

import torch

from bench.harness.provenance import code_version, made_by
from bench.studies.perf import ACT_DIM, OBS_DIM, _time, device_label
from policies.algorithms.bc import BCPolicy
from policies.algorithms.dac import DAC, DACConfig
from policies.algorithms.dxmi import DxMISampler
from policies.algorithms.finetune import Chain, FinetunedPolicy
from policies.algorithms.qgpo import QGPOConfig
from policies.core.diffusion import DiffusionModel
from policies.core.networks import EnergyNet, VectorField
from policies.core.samplers import SamplerSpec

BATCHES = (10, 4096)


def measure(device: torch.device, repeats: int = 10, warmup: int = 3, names: tuple[str, ...] | None = None,
            batches: tuple[int, ...] = BATCHES) -> dict[str, dict[int, float]]:
    """sampler -> batch -> actions per second (median over repeats); `names`: only those samplers."""
    cfg = QGPOConfig()
    torch.manual_seed(0)
    model = DiffusionModel(ACT_DIM, OBS_DIM, cfg.score_widths).to(device).eval()
    energy = EnergyNet(ACT_DIM, OBS_DIM, cfg.energy_hidden, cfg.energy_layers).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    low, high = -torch.ones(ACT_DIM, device=device), torch.ones(ACT_DIM, device=device)
    srpo = BCPolicy(OBS_DIM, ACT_DIM, 256, 2, low, high).to(device).eval()  # the Dirac policy
    fql = VectorField(ACT_DIM, OBS_DIM, 512, 4, timed=False).to(device).eval()  # the one-step policy
    dac = DAC(DACConfig(device=str(device)), OBS_DIM, ACT_DIM, low.cpu().numpy(), high.cpu().numpy())
    policies = {
        "qgpo: guided DPM-Solver-2, 15 steps": lambda s: model.sample(s, 1, SamplerSpec(), energy, 1.0, g),
        "qgpo s = 0: DPM-Solver-2, 15 steps": lambda s: model.sample(s, 1, SamplerSpec(), generator=g),
        "ddpo / ctrl: sde chain, K = 10": FinetunedPolicy(model, Chain("sde", 10, "quadratic")).to(device).sample,
        "dxmi: T = 10": DxMISampler(model, Chain("ddim", 10, "quadratic")).to(device).sample,
        "dxmi: T = 4": DxMISampler(model, Chain("ddim", 4, "quadratic")).to(device).sample,
        "dac: greedy of 10 draws, 5-step chain": dac.choose,
        "srpo: deterministic policy": srpo,
        "fql: one-step policy": lambda s: fql(torch.randn((s.shape[0], ACT_DIM), device=device, generator=g), None, s),
    }
    unknown = set(names or ()) - set(policies)
    if unknown:
        raise ValueError(f"no sampler {', '.join(sorted(unknown))}; samplers: {', '.join(policies)}")
    out: dict[str, dict[int, float]] = {}
    for name, act in policies.items():
        if names is not None and name not in names:
            continue
        out[name] = {}
        for batch in batches:
            states = torch.randn(batch, OBS_DIM, device=device, generator=g)
            with torch.inference_mode():
                seconds = _time(lambda: act(states), device, repeats * (10 if batch == 10 else 1), warmup)
            out[name][batch] = batch / seconds
    return out


def write_report(rows: list[tuple[str, dict]], out: Path, command: str, version: str) -> None:
    lines = ["# Acting throughput: every policy's sampler, one run", "", made_by(command, None, version, ("torch",)), "",
             f"Official network sizes (score net 512-256-128, energy 4x256; SRPO's policy 2x256, FQL's 4x512 GELU, DAC's "
             "noise net 3x256 Mish with 10 critics of 3x256), HalfCheetah shapes (obs {OBS_DIM}, action "
             f"{ACT_DIM}), float32, inference mode; medians after warm-up. `vs QGPO`: actions/s over QGPO's guided "
             "sampler's, measured in this same run on this machine.", "",
             "| device | sampler | NFE per action | " + " | ".join(f"actions/s, batch {b}" for b in BATCHES) + " | " +
             " | ".join(f"vs QGPO, batch {b}" for b in BATCHES) + " |",
             "|---|---|---:|" + "---:|" * (2 * len(BATCHES))]
    nfe = {"qgpo: guided": "15 (+15 energy gradients)", "qgpo s = 0": "15", "ddpo": "10", "dxmi: T = 10": "10",
           "dxmi: T = 4": "4", "dac": "50 (+10 x 10 critics)", "srpo": "1", "fql": "1"}
    for device, figures in rows:
        ref = next(iter(figures.values()))
        for name, rates in figures.items():
            n = next(v for k, v in nfe.items() if name.startswith(k))
            lines.append(f"| {device} | {name} | {n} | " + " | ".join(f"{rates[b]:,.0f}" for b in BATCHES) + " | " +
                         " | ".join(f"{rates[b] / ref[b]:.2f}×" for b in BATCHES) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def run(devices: list[str], out: Path | None, command: str, repeats: int = 10) -> list[tuple[str, dict]]:
    rows = []
    for name in devices:
        rows.append((device_label(name), measure(torch.device(name), repeats)))
    if out is not None:
        write_report(rows, out, command, code_version())
    return rows
