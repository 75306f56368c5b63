"""One run: an algorithm trained on a dataset with one seed, evaluated, and described.

A run lives in its own directory, keyed by a hash of everything that decides its numbers
(algorithm, dataset, full config, evaluation protocol), so the same request always finds the same
directory: a finished run is not redone and an interrupted one resumes from its checkpoints.
`execute` is what an executor calls in a worker; it returns a `RunResult` for the driver to
record, and turns any failure into a failed result carrying its traceback.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.evaluation import evaluate
from bench.provenance import code_version, hardware, package_versions
from bench.scalars import Scalars
from bench.store import RunResult
from envs import catalog
from envs.dataset import OfflineDataset
from policies import config as cfg_tools
from policies import registry
from policies.base import Algorithm
from policies.errors import ConfigError
from policies.training import TrainHooks


@dataclass(frozen=True)
class RunSpec:
    """What to run. Overrides are `key: value` pairs on top of the preset (dotted keys reach nested fields)."""

    algorithm: str
    dataset: str
    seed: int = 0
    preset: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    episodes: int | None = None  # final evaluation; None: 100 for maze datasets, 10 otherwise (D4RL practice)
    guidance_scales: tuple[float, ...] | None = None  # evaluate each; None: the config's own
    eval_every: int = 0  # gradient steps between learning-curve evaluations (0: final evaluation only)
    curve_episodes: int = 10
    checkpoint_every: int = 1000  # gradient steps between mid-stage checkpoints
    eval_seed: int = 0

    def config(self) -> Any:
        return registry.make_config(self.algorithm, self.preset, {**self.overrides, "seed": self.seed})

    def final_episodes(self) -> int:
        return self.episodes if self.episodes is not None else (100 if "maze" in self.dataset.lower() else 10)

    def protocol(self) -> dict[str, Any]:
        """The evaluation settings that change reported numbers (and so the run's identity)."""
        return {"episodes": self.final_episodes(), "eval_seed": self.eval_seed,
                "guidance_scales": list(self.guidance_scales) if self.guidance_scales is not None else None,
                "eval_every": self.eval_every, "curve_episodes": self.curve_episodes if self.eval_every else None}

    def run_id(self) -> str:
        return cfg_tools.config_hash(self.algorithm, self.dataset, catalog.fingerprint(self.dataset),
                                     cfg_tools.to_dict(self.config()), self.protocol())

    def directory(self, results: Path) -> Path:
        slug = self.dataset.replace("/", "_").replace(":", "_")
        return Path(results) / self.algorithm / slug / f"seed{self.seed}-{self.run_id()}"

    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.overrides.items()))
        return f"{self.algorithm} {self.dataset} seed {self.seed} ({self.preset}{extra})"


class _AtScale:
    """An algorithm seen through one guidance scale, for `evaluate`."""

    def __init__(self, algo: Algorithm, scale: float | None):
        self.algo, self.scale = algo, scale

    def act(self, observations: np.ndarray) -> np.ndarray:
        return self.algo.act(observations) if self.scale is None else self.algo.act(observations, guidance_scale=self.scale)

    def seed(self, seed: int) -> None:
        self.algo.seed(seed)


def _evaluate_row(algo: Algorithm, ds: OfflineDataset, scale: float | None, episodes: int, seed: int) -> tuple[dict, Any]:
    res = evaluate(_AtScale(algo, scale), ds, episodes=episodes, seed=seed)
    summary = res.summary()
    steps = float(res.lengths.sum())
    row = {"guidance_scale": scale, "variant": _variant(scale), "episodes": summary["episodes"],
           "return_mean": summary["return_mean"], "return_std": summary["return_std"],
           "score_mean": summary.get("score_mean"), "score_std": summary.get("score_std"),
           "seconds": res.seconds, "actions_per_second": steps / res.seconds if res.seconds > 0 else None}
    return row, res


def _variant(scale: float | None) -> str:
    return "default" if scale is None else f"guidance_scale={scale:g}"


def execute(spec: RunSpec, results: Path, threads: int = 0, device: str | None = None,
            log: Any = print) -> RunResult:
    """Train (resuming), evaluate and describe one run; never raises for a failure inside the run."""
    if threads:
        torch.set_num_threads(threads)
    started = time.time()
    base = dict(run_id="?", algorithm=spec.algorithm, dataset=spec.dataset, seed=spec.seed, preset=spec.preset,
                config={"overrides": spec.overrides}, code_version=code_version(), packages=package_versions(),
                hardware={"description": hardware(), "torch_threads": torch.get_num_threads()}, started=started)
    try:
        config = spec.config()
        base.update(run_id=spec.run_id(), config={**cfg_tools.to_dict(config), "preset": spec.preset,
                                                   "protocol": spec.protocol()})
        if device is not None:
            config = cfg_tools.apply(config, {"device": device})
        return _execute(spec, config, Path(results), base, log)
    except Exception:  # recorded with its traceback; the sweep goes on with the other runs
        return RunResult(**base, status="failed", error=traceback.format_exc(), finished=time.time())


def _execute(spec: RunSpec, config: Any, results: Path, base: dict, log: Any) -> RunResult:
    cls = registry.get(spec.algorithm)
    if spec.guidance_scales is not None and not cls.guided:
        raise ConfigError(f"{spec.algorithm} has no guidance scale to sweep; drop guidance_scales")
    ds = catalog.load_dataset(spec.dataset)
    workdir = spec.directory(results)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(json.dumps({"spec": spec.label(), **base["config"]}, indent=2, default=str))
    metrics = workdir / "metrics.jsonl"
    algo = cls.for_dataset(ds, config)
    scalars = Scalars(workdir / "tensorboard")
    base["hardware"]["device"] = str(getattr(algo, "device", "cpu"))

    def on_eval(stage: str, step: int) -> None:
        if stage not in algo.curve_stages:
            return
        row, _ = _evaluate_row(algo, ds, None, spec.curve_episodes, spec.eval_seed)
        row |= {"stage": stage, "step": step, "gradient_steps": _steps_before(algo, stage) + step}
        with metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")
        scalars.add("curve/score", row["score_mean"], row["gradient_steps"])
        scalars.add("curve/return", row["return_mean"], row["gradient_steps"])
        log(f"[{spec.label()}] {stage} step {step}: return {row['return_mean']:.2f}"
            + (f", score {row['score_mean']:.1f}" if row["score_mean"] is not None else ""))

    hooks = TrainHooks(checkpoint_every=spec.checkpoint_every, eval_every=spec.eval_every, on_eval=on_eval,
                       log=lambda msg: log(f"[{spec.label()}] {msg}"))
    try:
        record = algo.fit(ds, workdir, hooks=hooks)
        scalars.add_stage_losses(record["stages"])
        evaluations, final, episodes, cost = _final_evaluation(spec, algo, ds, workdir, metrics, log, scalars)
    finally:
        scalars.close()
    aps = [r["actions_per_second"] for r in episodes if r["actions_per_second"]]
    finished = time.time()
    return RunResult(**base, status="finished", finished=finished,
                     wall_seconds=finished - base["started"] + _reused_seconds(record),
                     stage_seconds={k: v.get("seconds", 0.0) for k, v in record["stages"].items()},
                     gradient_steps=cost["gradient_steps_total"], nfe_per_action=cost.get("nfe_per_action"),
                     actions_per_second=float(np.mean(aps)) if aps else None, evaluations=evaluations, final=final)


def _final_evaluation(spec: RunSpec, algo: Algorithm, ds: OfflineDataset, workdir: Path, metrics: Path, log: Any,
                      scalars: Scalars) -> tuple[list[dict], list[dict], list[dict], dict]:
    """Every guidance scale over the final episodes: (evaluation rows, episode rows, summaries, cost)."""
    cost = algo.cost
    total = cost["gradient_steps_total"]
    evaluations, final = _read_curve(metrics), []
    scales = list(spec.guidance_scales) if spec.guidance_scales is not None else [None]
    episodes = []
    for scale in scales:
        row, res = _evaluate_row(algo, ds, scale, spec.final_episodes(), spec.eval_seed)
        evaluations.append(row | {"stage": "final", "step": total, "gradient_steps": total})
        for i in range(len(res.returns)):
            final.append({"variant": row["variant"], "guidance_scale": scale, "episode": i,
                          "return": float(res.returns[i]), "length": int(res.lengths[i]),
                          "score": float(res.normalized[i]) if res.normalized is not None else None})
        episodes.append(row)
        scalars.add(f"final/score/{row['variant']}", row["score_mean"], total)
        log(f"[{spec.label()}] final {row['variant']}: return {row['return_mean']:.2f} ± {row['return_std']:.2f}"
            + (f", score {row['score_mean']:.1f} ± {row['score_std']:.1f}" if row["score_mean"] is not None else "")
            + f" ({row['episodes']} episodes)")
    (workdir / "final.json").write_text(json.dumps({"evaluations": episodes, "episodes": final, "cost": cost}, indent=2))
    return evaluations, final, episodes, cost


def _reused_seconds(record: dict) -> float:
    """Training time spent by earlier attempts: stages restored whole, and the steps before a mid-stage resume."""
    return sum(r.get("seconds", 0.0) if stage in record["resumed"] else r.get("earlier_seconds", 0.0)
               for stage, r in record["stages"].items())


def _steps_before(algo: Algorithm, stage: str) -> int:
    """Gradient steps of the stages finished before `stage`, so curves share one x axis."""
    steps = algo.cost["gradient_steps"]
    order = list(steps)
    return sum(steps[s] for s in order[: order.index(stage)]) if stage in order else sum(steps.values())


def _read_curve(metrics: Path) -> list[dict]:
    """Learning-curve rows, including those written before an interruption (the last of duplicates wins)."""
    if not metrics.exists():
        return []
    rows: dict[tuple, dict] = {}
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        rows[(row["stage"], row["step"], row["variant"])] = row
    return list(rows.values())
