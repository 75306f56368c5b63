"""QGPO performance benchmark with the official network sizes (`diffbench perf qgpo`).

Times one training step of each stage and guided action sampling (15 DPM-Solver steps, energy
gradient every step). With `--official PATH` the official QGPO code is timed in the same run on the
same shapes (`bench.studies.official`), and only such same-run figures are divided into ratios. Medians over
repeats after warm-up; CUDA is synchronised per repeat.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.harness.provenance import code_version, hardware, made_by
from bench.harness.store import ResultsStore
from bench.studies.stacked_seeds import BATCH, CASES, HIDDEN, POINTMAZE, SEEDS, bitwise_equal
from policies.algorithms.pretrain import generate_support
from policies.core.acting import GuidedActor
from policies.core.diffusion import DiffusionModel
from policies.core.networks import EnergyNet, TwinQ
from policies.algorithms.qgpo import QGPOConfig, cep_loss, td_loss
from policies.core.samplers import SamplerSpec
from policies.core.training import optimiser_step, polyak_update

TARGET = {"behaviour_step_ms": 2.0, "q_step_ms": 2.0, "cep_step_ms": 2.0,
          "actions_per_s_batch10": 10.0, "actions_per_s_batch4096": 2.0, "support_actions_per_s": 2.0}
OBS_DIM, ACT_DIM, M = 17, 6, 16  # HalfCheetah's shapes
SUPPORT_STATES = 256  # the official code draws support actions for 256 states (x M) per call
PATHS = ("plain", "compiled")  # acting paths timed beside the default ("lean"), as name suffixes


def reference_key(name: str) -> str:
    """The official figure a measure compares with: every acting path of ours against the same one."""
    for path in PATHS:
        name = name.removesuffix(f"_{path}")
    return name


def _time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    """Median seconds of one call."""
    return _time_interleaved([fn], device, repeats, warmup)[0]


def _time_interleaved(fns: list[Callable[[], object]], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Median seconds of one call of each, the calls taken in turn (a, b, c, a, b, c, ...): the machine's speed
    drifts over minutes, and taking turns puts the same drift into every median, so their ratios hold."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def measure(device: torch.device, repeats: int = 10, warmup: int = 3,
            official: dict[str, Callable[[], object]] | None = None) -> tuple[dict, dict, float, dict | None]:
    """Our figures, their matmul FLOPs per step or action, the acting step's compile seconds, and the official
    code's figures (`official`: its calls by measure, from `official_cases`), each timed in turn with ours."""
    cfg = QGPOConfig()
    g = torch.Generator(device=device).manual_seed(0)
    torch.manual_seed(0)
    model = DiffusionModel(ACT_DIM, OBS_DIM, cfg.score_widths).to(device)
    q = TwinQ(ACT_DIM, OBS_DIM, cfg.q_hidden, cfg.q_layers).to(device)
    q_target = TwinQ(ACT_DIM, OBS_DIM, cfg.q_hidden, cfg.q_layers).to(device).requires_grad_(False)
    energy = EnergyNet(ACT_DIM, OBS_DIM, cfg.energy_hidden, cfg.energy_layers).to(device)
    opt_b = torch.optim.Adam(model.parameters(), lr=cfg.behaviour_lr)
    opt_q = torch.optim.Adam(q.parameters(), lr=cfg.q_lr)
    opt_f = torch.optim.Adam(energy.parameters(), lr=cfg.energy_lr)
    rand = lambda *shape: torch.randn(*shape, device=device, generator=g)  # noqa: E731

    s_b, a_b = rand(cfg.behaviour_batch, OBS_DIM), rand(cfg.behaviour_batch, ACT_DIM).clamp(-1, 1)

    def behaviour_step():
        optimiser_step(opt_b, model.loss(a_b, s_b, g))

    B = cfg.q_batch
    s, a, r, d, s2 = rand(B, OBS_DIM), rand(B, ACT_DIM), rand(B), torch.zeros(B, device=device), rand(B, OBS_DIM)
    support_next, support = rand(B, M, ACT_DIM), rand(B, M, ACT_DIM)

    def q_step():
        optimiser_step(opt_q, td_loss(q, q_target, s, a, r, d, s2, support_next, cfg.gamma, cfg.beta_q))
        polyak_update(q_target, q, cfg.tau)

    support_q = rand(B, M)  # Q_0 is frozen after stage 3, so its values on the support are precomputed once

    def cep_step():
        optimiser_step(opt_f, cep_loss(energy, model.schedule, s, support, support_q, cfg.beta, g))

    sampler = SamplerSpec()  # DPM-Solver-2, 15 steps

    def act(states, path="lean"):
        if path == "plain":
            return lambda: model.sample(states, 1, sampler, energy, 1.0, g)
        actor = GuidedActor(model, energy, sampler, 1.0, path)
        return lambda: actor(states, g)

    model.eval()
    states10, support_states = rand(10, OBS_DIM), rand(SUPPORT_STATES, OBS_DIM)
    compiled = act(states10, "compiled")
    t0 = time.perf_counter()
    compiled()  # the one-off compile, reported beside the rate it buys
    compile_s = time.perf_counter() - t0
    cases = {  # name -> (callable, repeats, items per call)
        "behaviour_step_ms": (behaviour_step, repeats, 1),
        "q_step_ms": (q_step, repeats * 5, 1),
        "cep_step_ms": (cep_step, repeats * 5, 1),
        "actions_per_s_batch10": (act(states10), repeats * 10, 10),
        "actions_per_s_batch10_plain": (act(states10, "plain"), repeats * 10, 10),
        "actions_per_s_batch10_compiled": (compiled, repeats * 10, 10),
        "actions_per_s_batch4096": (act(rand(4096, OBS_DIM)), repeats, 4096),
        "actions_per_s_batch4096_plain": (act(rand(4096, OBS_DIM), "plain"), repeats, 4096),
        "support_actions_per_s": (lambda: generate_support(model, support_states, M, sampler, SUPPORT_STATES * M, g),
                                  repeats, SUPPORT_STATES * M),
    }
    figures, flops, reference = {}, {}, {}
    rate = lambda name, seconds, items: 1e3 * seconds if name.endswith("_ms") else items / seconds  # noqa: E731
    for base in dict.fromkeys(reference_key(name) for name in cases):
        names = [name for name in cases if reference_key(name) == base]
        fns = [cases[name][0] for name in names] + ([official[base]] if official and base in official else [])
        _, n, items = cases[base]
        seconds = _time_interleaved(fns, device, n, warmup)
        for name, sec in zip(names, seconds):
            figures[name] = rate(name, sec, items)
        if len(seconds) > len(names):
            reference[base] = rate(base, seconds[-1], items)
    for name, (fn, _, items) in cases.items():
        with FlopCounterMode(display=False) as counter:
            fn()
        flops[name] = counter.get_total_flops() / items  # per step, or per action
    return figures, flops, compile_s, (reference if official is not None else None)


EVAL_DATASET = "diffbench/pointmaze/umaze-small-v0"  # generated in a scratch directory: evaluation needs an env
EVAL_SCALES = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0)  # the paper's locomotion sweep
EVAL_EPISODES, EVAL_STEPS = 10, 100


def measure_evaluation(device: torch.device) -> dict[str, float]:
    """A guided scale sweep evaluated scale by scale (as before) and as one K x N evaluation: episodes/s of
    EVAL_STEPS-step episodes, and the share of the time in the policy (what overlapping env steps could save
    at most). QGPO at the official sizes, untrained (speed does not depend on the weights)."""
    import tempfile

    from bench.harness.evaluation import AtScale, evaluate, evaluate_scales
    from envs.catalog import generate, load_dataset
    from envs.minari_source import pinned_root
    from policies import registry
    from policies.algorithms.qgpo import QGPO

    with tempfile.TemporaryDirectory() as root, pinned_root(Path(root)):
        generate(EVAL_DATASET, steps=2_000, seed=0, ref_episodes=2, progress=False)
        ds = load_dataset(EVAL_DATASET)
        algo = QGPO.for_dataset(ds, registry.make_config("qgpo", "paper", device=str(device)))
        scales = list(EVAL_SCALES)
        evaluate_scales(algo, ds, scales[:2], episodes=2, seed=0, max_steps=3)  # warm-up
        t0 = time.perf_counter()
        alone = [evaluate(AtScale(algo, k), ds, EVAL_EPISODES, seed=0, max_steps=EVAL_STEPS) for k in scales]
        alone_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        together = evaluate_scales(algo, ds, scales, EVAL_EPISODES, seed=0, max_steps=EVAL_STEPS)
        together_s = time.perf_counter() - t0
    episodes = len(scales) * EVAL_EPISODES
    return {"eval_episodes_per_s_scale_by_scale": episodes / alone_s,
            "eval_episodes_per_s_scales_batched": episodes / together_s,
            "eval_policy_share_scale_by_scale": sum(r.policy_seconds for r in alone) / sum(r.seconds for r in alone),
            "eval_policy_share_scales_batched": sum(r.policy_seconds for r in together) / sum(r.seconds for r in together)}


def measure_seeds(device: torch.device, repeats: int, warmup: int = 3, seeds: int = SEEDS) -> dict:
    """Per small-batch step (`stacked_seeds.CASES`): one seed's step and the step of `seeds` seeds stacked, timed
    in turn, their ratio in seed-steps per second, one seed's matmul rate beside the device's (on a CPU both on
    one thread, as a sweep's workers run), and whether the stacked numbers are each seed's own bit for bit."""
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        out = {"matmul_gflops": matmul_gflops(device), "steps": {}}
        for name, case in CASES.items():
            timed = case(seeds, OBS_DIM, ACT_DIM, device)
            one, together = _time_interleaved([timed.steps[0], timed.stacked_step], device, repeats, warmup)
            with FlopCounterMode(display=False) as counter:
                timed.steps[0]()
            out["steps"][name] = {
                "single_ms": 1e3 * one, "stacked_ms": 1e3 * together, "seeds": seeds, "gain": seeds * one / together,
                "single_gflops": counter.get_total_flops() / one / 1e9,
                "bitwise": bitwise_equal(case(3, OBS_DIM, ACT_DIM, device)),
                "bitwise_pointmaze": bitwise_equal(case(3, *POINTMAZE, device))}
        return out
    finally:
        torch.set_num_threads(threads)


def device_label(name: str) -> str:
    """"cpu: <processor>" or "cuda: <GPU name>", the row label of a timed device."""
    device = torch.device(name)
    return f"{name}: {hardware()}" if device.type == "cpu" else f"{name}: {torch.cuda.get_device_name(device)}"


def matmul_gflops(device: torch.device, n: int = 2048) -> float:
    """Sustained float32 matmul rate of the device: the ceiling for these matmul-bound workloads."""
    a, b = torch.randn(2 * n, n, device=device), torch.randn(n, n, device=device)
    seconds = _time(lambda: a @ b, device, 10, 3)
    return 2 * 2 * n * n * n / seconds / 1e9


def speedups(figures: dict[str, float], reference: dict[str, float]) -> dict[str, float]:
    """Ours against the official code timed in the same run: >1 means ours is faster."""
    return {k: (reference[r] / v if k.endswith("_ms") else v / reference[r]) for k, v in figures.items()
            if (r := reference_key(k)) in reference}


# QGPO with the fine-tuning methods built on its stages; then every algorithm built on the shared stages
SHARING_SCOPES = (("qgpo", "ddpo", "ctrl", "dxmi"), ("qgpo", "ddpo", "ctrl", "dxmi", "sfbc"))


def sharing_section(sweep: ResultsStore | None) -> list[str]:
    """A sweep's shared stages against each run alone, from its results store (`--sweep DIR`)."""
    from bench.reports.sharing import shared_stage_savings

    lines = ["", "## A sweep's shared stages", ""]
    if sweep is None:
        return lines + ["Not shown: pass `--sweep DIR` (a sweep's results directory, e.g. the leaderboard's) to add it."]
    runs = sweep.table("runs")
    table = shared_stage_savings(runs)
    versions = ", ".join(sorted({str(v)[:12] for v in runs["code_version"].dropna()})) or "none"
    lines += [f"From the results store {sweep.path} ({len(runs)} runs; code {versions}). Algorithms built on the same "
              "behaviour model, support actions and critic (QGPO, SfBC and the fine-tuning methods) restore "
              "those stages from the sweep's shared store when another run on the same dataset, reward transform and "
              "seed trained them. `alone`: the runs' wall time each as if run alone (a restored stage counted at the "
              "seconds the run that trained it measured); `sweep`: less the restored stages' seconds, what the sweep "
              "spent. Per dataset, preset and seed with a shared stage; runs recorded before schema 3 are left out.", ""]
    if table.empty:
        return lines + ["No run in this store restored a shared stage."]
    lines += ["| dataset | preset | seed | runs | stages shared | alone (h) | sweep (h) | saving |",
              "|---|---|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r.dataset} | {r.preset} | {r.seed} | {r.runs} | {r.shared} | {r.alone_hours:.2f} | "
              f"{r.sweep_hours:.2f} | {r.saving:.2f}× |" for r in table.itertuples()]
    count, cells = _total(table)
    lines += [f"| all | | | {count} | | {cells}", "",
              "The same over fewer algorithms (runs that share nothing dilute the ratio above):", "",
              "| algorithms | runs | alone (h) | sweep (h) | saving |", "|---|---:|---:|---:|---:|"]
    for names in SHARING_SCOPES:
        part = shared_stage_savings(runs[runs["algorithm"].isin(names)])
        if not part.empty:
            count, cells = _total(part)
            lines.append(f"| {', '.join(names)} | {count} | {cells}")
    return lines


def _total(table: pd.DataFrame) -> tuple[int, str]:
    """A savings table's runs, and its summed `alone (h) | sweep (h) | saving |` cells."""
    alone, spent = table["alone_hours"].sum(), table["sweep_hours"].sum()
    return int(table["runs"].sum()), f"{alone:.2f} | {spent:.2f} | {alone / spent:.2f}× |"


def write_report(rows: list[tuple], out: Path, command: str, version: str, source: str | None,
                 sweep: ResultsStore | None = None) -> None:
    where = (f"the official QGPO code from {source}, timed in this same run on the same machine and shapes"
             if source else "none: pass `--official PATH` (a checkout of ChenDRAG/CEP-energy-guided-diffusion) to time "
             "the official code beside ours; no ratio is shown without it")
    lines = [
        "# QGPO performance",
        "",
        made_by(command, None, version, ("torch",)),
        "",
        f"Official network sizes (score net 512-256-128, energy 4x256, twin Q 3x256), HalfCheetah shapes "
        f"(obs {OBS_DIM}, action {ACT_DIM}), float32. Steps: behaviour batch 4096; Q and CEP batch 256 × M {M}. "
        "Actions: guided (energy gradient each step), DPM-Solver-2 singlestep, 15 steps. Medians after warm-up; "
        "a measure's variants and the official call are timed in turn (a, b, c, a, b, c, ...), so the machine's drift "
        "over minutes enters all their medians alike and their ratios hold.",
        f"Reference: {where}. Speed-up = reference time / ours (or ours / reference rate). The official f_phi step "
        "(`update_qt`) evaluates Q_0 on the 256 × 16 support actions every step; ours reads them precomputed, as our "
        "separate energy stage does.",
        "",
        "Acting paths (`QGPOConfig.acting`): `lean`, the default (unsuffixed rows): time-only terms once, every "
        "evaluation's conditioning in one product, each state's once for its M support actions; `plain`: "
        "`DiffusionModel.sample`; `compiled`: lean with its solver step compiled by `torch.compile` (CUDA graphs on a "
        "GPU), a one-off compile per batch size (its seconds are below the table). All three give the same actions "
        "up to float rounding (tests/test_acting.py). Support actions: 256 states × M, unguided, as the official "
        "`sample` draws them.",
        "",
        "`GFLOP/s` is the matmul work (counted by torch's FlopCounterMode) per second achieved; "
        "`at target` is the rate the target speed-up would need. The device's sustained float32 matmul "
        "rate (a 4096×2048 by 2048×2048 product) is the ceiling for these matmul-bound workloads: a target whose "
        "`at target` is above it cannot be met by running the same float32 arithmetic faster.",
        "",
        "| device | measure | ours | official (same run) | speed-up | target | met | GFLOP/s | at target |",
        "|---|---|---:|---:|---:|---:|:-:|---:|---:|",
    ]
    compiles, evaluation = [], ["", "## Evaluation", "",
                                f"QGPO (official sizes, lean acting) on {EVAL_DATASET}'s env, the paper's locomotion sweep of "
                                f"{len(EVAL_SCALES)} guidance scales × {EVAL_EPISODES} episodes of {EVAL_STEPS} steps: "
                                "each scale evaluated alone (one vector env of N per scale), and all scales as one "
                                "evaluation (one vector env of K × N, one policy call per step; each scale sees the env "
                                "seeds and noise of its own evaluation, tests/test_qgpo.py). `policy share`: the part of "
                                "the time spent in the policy call, the rest stepping the envs: overlapping the two "
                                "could save at most the smaller part.", "",
                                "| device | scale by scale (episodes/s) | scales batched (episodes/s) | speed-up | "
                                "policy share, by scale | policy share, batched |", "|---|---:|---:|---:|---:|---:|"]
    seeds = ["", "## Many seeds in one process", "",
             f"A small-batch stage's step (batch {BATCH}, width {HIDDEN}, HalfCheetah shapes) for one seed, as a "
             "sweep's worker runs it, beside the same step for several seeds stacked into one model "
             "(`bench/studies/stacked_seeds.py`: hidden layers as one batched product over the seed axis, the output "
             "layer per seed, Adam on the stacked parameters), timed in turn, on one thread on a CPU (a sweep's "
             "workers take one core each). `gain`: seed-steps per second stacked over one seed's, i.e. seeds per "
             "hour on the same cores. `bit for bit`: whether 3 stacked steps give every seed its own run's losses and "
             f"parameters exactly, at these shapes and at PointMaze's (obs {POINTMAZE[0]}, action {POINTMAZE[1]}), "
             "where the BLAS picks other kernels for the narrow first layer's weight gradient. `GFLOP/s`: one seed's "
             "matmul work per second, beside the device's sustained matmul rate on the same thread(s): stacking "
             "removes per-call overhead, not arithmetic, so its gain is at most their ratio.", "",
             "| device | step | one seed (ms) | one seed GFLOP/s | matmul GFLOP/s | seeds stacked | stacked step (ms) | "
             "gain | target | met | bit for bit | bit for bit, PointMaze |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|:-:|:-:|:-:|"]
    for device, figures, flops, peak, reference, compile_s, ev, many in rows:
        for step, m in many["steps"].items():
            seeds.append(f"| {device} | {step} | {m['single_ms']:.2f} | {m['single_gflops']:.1f} | "
                         f"{many['matmul_gflops']:.1f} | {m['seeds']} | {m['stacked_ms']:.2f} | "
                         f"{m['gain']:.2f}× | ≥ 2× | {'yes' if m['gain'] >= 2 else 'no'} | "
                         f"{'yes' if m['bitwise'] else 'no'} | {'yes' if m['bitwise_pointmaze'] else 'no'} |")
        ratios = speedups(figures, reference or {})
        for k, v in figures.items():
            target = TARGET[reference_key(k)]
            per_second = flops[k] / (v / 1e3) if k.endswith("_ms") else flops[k] * v
            if k in ratios:
                ref, ratio = f"{reference[reference_key(k)]:.1f}", f"{ratios[k]:.2f}×"
                met = "yes" if ratios[k] >= target else "no"
                at_target = f"{per_second / 1e9 * target / ratios[k]:.1f}"
            else:
                ref = ratio = met = at_target = "–"
            lines.append(f"| {device} | {k} | {v:.1f} | {ref} | {ratio} | ≥ {target:g}× | {met} | {per_second / 1e9:.1f} | "
                         f"{at_target} |")
        lines.append(f"| {device} | sustained matmul | | | | | | {peak:.1f} | |")
        compiles.append(f"- {device}: compiling the acting step for batch 10 took {compile_s:.1f} s.")
        alone, together = ev["eval_episodes_per_s_scale_by_scale"], ev["eval_episodes_per_s_scales_batched"]
        evaluation.append(f"| {device} | {alone:.2f} | {together:.2f} | {together / alone:.2f}× | "
                          f"{ev['eval_policy_share_scale_by_scale']:.0%} | {ev['eval_policy_share_scales_batched']:.0%} |")
    lines += ["", *compiles, *evaluation, *seeds, *sharing_section(sweep)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def run(devices: list[str], out: Path | None, command: str, repeats: int = 10,
        official: Path | None = None, sweep: ResultsStore | None = None) -> list[tuple]:
    """Rows of (device label, our figures, their matmul FLOPs per step or action, the device's matmul rate, official
    figures or None, seconds to compile the acting step, evaluation figures, many-seeds figures (`measure_seeds`))."""
    from bench.studies.official import describe, official_cases

    version = code_version()
    source = describe(official) if official is not None else None  # a bad path fails before anything is timed
    rows = []
    for name in devices:
        device = torch.device(name)
        label = device_label(name)
        cases = official_cases(official, device, OBS_DIM, ACT_DIM, M) if official is not None else nullcontext(None)
        with cases as reference_calls:
            figures, flops, compile_s, reference = measure(device, repeats, official=reference_calls)
        rows.append((label, figures, flops, matmul_gflops(device), reference, compile_s, measure_evaluation(device),
                     measure_seeds(device, repeats * 5)))
    if out is not None:
        write_report(rows, out, command, version, source, sweep)
    return rows
