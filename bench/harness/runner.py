"""One run: an algorithm trained on a dataset with one seed, evaluated, and described.

A run lives in its own directory, keyed by a hash of everything that decides its numbers
(algorithm, dataset, full config, evaluation protocol), so the same request always finds the same
directory: a finished run is not redone and an interrupted one resumes from its checkpoints.
`execute` is what an executor calls in a worker; it returns a `RunResult` for the driver to
record, and turns any failure into a failed result carrying its traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.harness.diagnostics import CriticTrend, run_diagnostics
from bench.harness.evaluation import AtScale, check_eval_env, evaluate, evaluate_scales
from bench.harness.locks import atomic_write_text, run_lock
from bench.harness.provenance import code_version, hardware, package_versions
from bench.harness.scalars import Scalars
from bench.harness.store import RunResult
from envs import catalog, families, minari_source
from envs.dataset import OfflineDataset
from envs.errors import DatasetNotFoundError
from envs.transitions import REWARD_TRANSFORMS
from policies import config as cfg_tools
from policies import registry
from policies.base import Algorithm
from policies.errors import ConfigError
from policies.core.networks import mish_kernels
from policies.core.training import StageClock, TrainHooks


SHARED_DIR = "shared-stages"  # under the results directory: stage checkpoints several algorithms restore
SELECTION_SEED_OFFSET = 1_000_000  # env seeds of the scale-selection episodes, apart from the reported ones
CURVE_SEED_OFFSET = 2_000_000  # env seeds of the learning-curve episodes, apart from both
CURVE_POINTS = 10  # learning-curve evaluations per policy-making stage (the final evaluation is one more point)
NO_CURVES = ("tiny", "quick")  # presets that evaluate only at the end unless asked (tests; the quick start's budget)
# the learning-curve settings at their defaults: a run's identity leaves them out (`RunSpec.run_id`)
CURVE_DEFAULTS = {"eval_every": 0, "curve_points": None, "curve_episodes": 10}
# the keys of `RunSpec.protocol` a run takes from its dataset's family (reward transform, evaluation
# episodes, the env cap of heavy envs) unless its spec sets them
FAMILY_PROTOCOL = ("reward_transform", "episodes", "eval_envs_at_once")


@dataclass(frozen=True)
class RunSpec:
    """What to run. Overrides are `key: value` pairs on top of the preset (dotted keys reach nested fields).

    The evaluation protocol, recorded with every run and part of its identity:
    - rewards: the dataset family's published transform (`envs.families`) unless `reward_transform` names one;
    - final evaluation: `episodes` on env seeds eval_seed + i, at the last checkpoint;
    - guided algorithms evaluated at several scales choose one on `selection_episodes` other episodes
      (env seeds eval_seed + SELECTION_SEED_OFFSET + i) and report the chosen scale's score on the final
      episodes, so the choice never sees the episodes it is scored on.
    """

    algorithm: str
    dataset: str
    seed: int = 0
    preset: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    episodes: int | None = None  # final evaluation; None: 100 for maze datasets, 10 otherwise (D4RL practice)
    guidance_scales: tuple[float, ...] | None = None  # evaluate each; None: the algorithm's default for the preset
    eval_every: int = 0  # gradient steps between learning-curve evaluations (0: none at a fixed interval)
    # learning-curve evaluations at evenly spaced fractions of each stage that makes the policy; None: CURVE_POINTS,
    # or 0 for the presets in NO_CURVES
    curve_points: int | None = None
    curve_episodes: int = 10
    checkpoint_every: int = 1000  # gradient steps between mid-stage checkpoints
    eval_seed: int = 0
    reward_transform: str | None = None  # None: the dataset family's (locomotion, antmaze or none)
    selection_episodes: int | None = None  # None: as many as the final evaluation

    def __post_init__(self) -> None:
        for name, low in (("seed", 0), ("eval_seed", 0), ("eval_every", 0), ("checkpoint_every", 0),
                          ("curve_episodes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, low in (("episodes", 1), ("selection_episodes", 1), ("curve_points", 0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.guidance_scales is not None:
            object.__setattr__(self, "guidance_scales", unique_scales(self.guidance_scales))
        if self.reward_transform is not None and self.reward_transform not in REWARD_TRANSFORMS:
            raise ConfigError(f"unknown reward transform {self.reward_transform!r}; choose one of "
                              f"{', '.join(REWARD_TRANSFORMS)}")

    @property
    def family(self) -> str:
        return families.family(self.dataset)

    def config(self) -> Any:
        cls = registry.get(self.algorithm)
        if self.guidance_scales is not None and not cls.guided:
            raise ConfigError(f"{self.algorithm} has no guidance scale to sweep; drop guidance_scales")
        if self.preset not in cls.presets:  # before the domain settings, which are per preset
            registry.make_config(self.algorithm, self.preset)
        domain = {**cls.domain_overrides(self.preset, self.family), **cls.dataset_overrides(self.preset, self.dataset)}
        return registry.make_config(self.algorithm, self.preset, {**domain, **self.overrides, "seed": self.seed})

    def scales(self) -> tuple[float, ...] | None:
        """The guidance scales evaluated: the asked-for ones, else the algorithm's default for this preset
        and dataset family; None for an algorithm with no guidance scale."""
        cls = registry.get(self.algorithm)
        if not cls.guided:
            return None
        if self.guidance_scales is not None:
            return self.guidance_scales
        default = cls.default_guidance_scales(self.preset, self.family)
        return unique_scales(default) if default is not None else None

    def transform(self) -> str:
        return self.reward_transform if self.reward_transform is not None else catalog.default_reward_transform(self.dataset)

    def final_episodes(self) -> int:
        """Default: 100 where an episode's score is near binary (mazes; OGBench's success), else D4RL's 10."""
        if self.episodes is not None:
            return self.episodes
        return 100 if "maze" in self.dataset.lower() or families.family(self.dataset) == "ogbench-manipulation" else 10

    def selecting(self) -> int:
        """Episodes per scale spent choosing the scale (0 when there is nothing to choose)."""
        scales = self.scales()
        if scales is None or len(scales) < 2:
            return 0
        return self.selection_episodes if self.selection_episodes is not None else self.final_episodes()

    def curves(self) -> int:
        """Learning-curve evaluations per policy-making stage."""
        if self.curve_points is not None:
            return self.curve_points
        return 0 if self.preset in NO_CURVES else CURVE_POINTS

    def protocol(self) -> dict[str, Any]:
        """The settings that change reported numbers besides the config (and so the run's identity);
        those in `FAMILY_PROTOCOL` come from the dataset's family unless the spec sets them."""
        scales = self.scales()
        out = {"reward_transform": self.transform(), "episodes": self.final_episodes(), "eval_seed": self.eval_seed,
               "guidance_scales": list(scales) if scales is not None else None,
               "scale_selection": "held-out" if self.selecting() else "none",
               "selection_episodes": self.selecting() or None, "checkpoint": "last",
               "eval_every": self.eval_every,
               "curve_episodes": self.curve_episodes if self.eval_every or self.curves() else None}
        if self.curves():  # absent when off, so that runs from before curve points keep their identity
            out["curve_points"] = self.curves()
        limit = families.max_vector_envs(self.dataset)
        counts = (self.final_episodes(), self.selecting(), self.curve_episodes if out["curve_episodes"] else 0)
        if families.waves_always(self.dataset) or max(counts) > limit:
            out["eval_envs_at_once"] = limit  # evaluated in waves, which orders the policy's noise: part of the numbers
        return out

    def run_id(self, content: str | None = None) -> str:
        """The hash of what makes the numbers: algorithm, dataset content, config and evaluation protocol. The
        learning-curve settings only add evaluations beside training (which they leave bit for bit the same), so
        runs that differ in them alone are one run: they are hashed at their defaults. `content`: a content other
        than the local copy's (`catalog.fingerprint`), to read a store's runs made on other data (`read_ids`)."""
        same = dataclasses.replace(self, **CURVE_DEFAULTS)
        return cfg_tools.config_hash(self.algorithm, self.dataset, content or catalog.fingerprint(self.dataset),
                                     self.config().identity(), same.protocol())

    def directory(self, results: Path) -> Path:
        return run_directory(results, self.algorithm, self.dataset, self.seed, self.run_id())

    def shared_directory(self, results: Path) -> Path:
        """Where stages shared across algorithms live for this dataset (its content) and reward transform."""
        return (Path(results) / SHARED_DIR / dataset_slug(self.dataset)
                / f"{catalog.fingerprint(self.dataset)}-{self.transform()}")

    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in sorted(self.overrides.items()))
        return f"{self.algorithm} {self.dataset} seed {self.seed} ({self.preset}{extra})"


SLUG_MAX = 120  # a folder name; file systems allow 255 bytes


def run_directory(results: Path, algorithm: str, dataset: str, seed: int, run_id: str) -> Path:
    """Where a run keeps its checkpoints and logs under a results directory."""
    return Path(results) / algorithm / dataset_slug(dataset) / f"seed{seed}-{run_id}"


def dataset_slug(dataset: str) -> str:
    """A dataset id (or path) as one folder name: slashes flattened; a long one (a deep path) cut, with a
    digest of the whole, so it fits the file system's limit and stays unique."""
    slug = dataset.replace("/", "_").replace(":", "_")
    if len(slug.encode()) <= SLUG_MAX:
        return slug
    return f"{slug.encode()[-80:].decode(errors='ignore').lstrip('_')}-{hashlib.sha256(dataset.encode()).hexdigest()[:12]}"


def unique_scales(scales: Any) -> tuple[float, ...]:
    """Guidance scales as finite floats >= 0, each once, in the order given (1 and 1.0 are one scale)."""
    if isinstance(scales, (str, bytes)) or not hasattr(scales, "__iter__"):
        raise ConfigError(f"guidance scales must be a list of numbers, got {scales!r}")
    out: list[float] = []
    for value in scales:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"guidance scales must be finite numbers >= 0 (0 is diffusion BC), got {value!r}")
        if float(value) not in out:
            out.append(float(value))
    if not out:
        raise ConfigError("guidance scales must name at least one scale; leave them out to use the default")
    return tuple(out)


def preflight(specs: list[RunSpec]) -> None:
    """Everything about a batch of runs that can be wrong before training: names, config values, each
    dataset (loaded once: missing, corrupt, NaN/inf) and its evaluation env (made once, shapes checked).
    Raises the one error that says what to fix."""
    for spec in specs:
        spec.config()
    missing = catalog.missing_generatable(list(dict.fromkeys(s.dataset for s in specs)))
    if len(missing) > 1:  # one is the loader's own error, below
        raise DatasetNotFoundError(
            f"{len(missing)} datasets these runs need are not on disk: {', '.join(missing)} (datasets root "
            f"{minari_source.datasets_root()}, set by MINARI_DATASETS_PATH). Generate them all with: "
            f"diffbench datasets generate {' '.join(missing)}")
    for dataset, transform in sorted({(s.dataset, s.transform()) for s in specs}):
        check_eval_env(catalog.load_dataset(dataset, reward_transform=transform))


def _evaluate_rows(algo: Algorithm, ds: OfflineDataset, scales: list[float | None], episodes: int, seed: int,
                   max_steps: int) -> list[tuple[dict, Any]]:
    """One row (and result) per scale; several scales are evaluated in one batched evaluation."""
    if len(scales) > 1:
        results = evaluate_scales(algo, ds, scales, episodes=episodes, seed=seed, max_steps=max_steps)
    else:
        results = [evaluate(AtScale(algo, scales[0]), ds, episodes=episodes, seed=seed, max_steps=max_steps)]
    out = []
    for scale, res in zip(scales, results):
        summary = res.summary()
        steps = float(res.lengths.sum())
        row = {"guidance_scale": scale, "variant": _variant(scale), "episodes": summary["episodes"],
               "return_mean": summary["return_mean"], "return_std": summary["return_std"],
               "score_mean": summary.get("score_mean"), "score_std": summary.get("score_std"),
               "seconds": res.seconds, "actions_per_second": steps / res.seconds if res.seconds > 0 else None,
               "episodes_per_second": res.episodes_per_second}
        out.append((row, res))
    return out


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
                                                   "protocol": spec.protocol()},
                    dataset_content=catalog.fingerprint(spec.dataset))
        if device is not None:
            config = cfg_tools.apply(config, {"device": device})
        return _execute(spec, config, Path(results), base, log)
    except Exception:  # recorded with its traceback; the sweep goes on with the other runs
        return RunResult(**base, status="failed", error=traceback.format_exc(), finished=time.time())


def _execute(spec: RunSpec, config: Any, results: Path, base: dict, log: Any) -> RunResult:
    cls = registry.get(spec.algorithm)  # the config, guidance scales included, was checked by the caller
    workdir = spec.directory(results)
    workdir.mkdir(parents=True, exist_ok=True)
    with run_lock(workdir, lambda: log(f"[{spec.label()}] another process is running it; waiting for it to finish")):
        done = _finished_result(workdir)
        if done is not None:  # another driver finished it while this one waited
            return done
        ds = catalog.load_dataset(spec.dataset, reward_transform=spec.transform())
        max_steps = check_eval_env(ds)
        result = _train_and_evaluate(spec, cls, config, ds, workdir, base, log, max_steps, results)
        atomic_write_text(workdir / RESULT_FILE, json.dumps(dataclasses.asdict(result), default=str))
        return result


RESULT_FILE = "result.json"
# the variant (and evaluation stage) of a run's start (`Algorithm.start`: a fine-tuner's chain before fine-tuning),
# evaluated on the final episodes: a reference the run carries, never an entry of its own
START = "start"
PROGRESS_FILE = "progress.json"


def write_progress(workdir: Path, stage: str, done: int, steps: int, seconds: float) -> None:
    """Where a running job stands, for the driver's progress line (`read_progress`)."""
    atomic_write_text(Path(workdir) / PROGRESS_FILE, json.dumps(
        {"stage": stage, "step": done, "steps": steps, "seconds": seconds, "time": time.time()}))


def read_progress(workdir: Path, since: float) -> dict | None:
    """A job's last progress written after `since` (a sweep's start), or None; None too once the job has its result
    (another driver on the same store may have finished it: its last progress would stand on the bar for good)."""
    try:
        out = json.loads((Path(workdir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return out if out.get("time", 0) >= since and not (Path(workdir) / RESULT_FILE).exists() else None


def _finished_result(workdir: Path) -> RunResult | None:
    try:
        return RunResult(**json.loads((workdir / RESULT_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _train_and_evaluate(spec: RunSpec, cls: type[Algorithm], config: Any, ds: OfflineDataset, workdir: Path,
                        base: dict, log: Any, max_steps: int, results: Path) -> RunResult:
    (workdir / "config.json").write_text(json.dumps({"spec": spec.label(), **base["config"]}, indent=2, default=str))
    metrics = workdir / "metrics.jsonl"
    algo = cls.for_dataset(ds, config)
    scalars = Scalars(workdir / "tensorboard")
    base["hardware"]["device"] = str(getattr(algo, "device", "cpu"))

    clock = StageClock()
    critic_trend = CriticTrend(algo, ds)

    def on_eval(stage: str, step: int) -> None:
        point = critic_trend(stage, step)
        if point is not None and point["outside_bounds"]:
            log(f"[{spec.label()}] {stage} step {step}: the critic's Q on dataset actions {point['q_data_mean']:.1f} "
                f"is OUTSIDE what the rewards allow")
        if stage not in algo.curve_stages:
            return
        (row, _), = _evaluate_rows(algo, ds, [algo.curve_scale(stage)], spec.curve_episodes,
                                   spec.eval_seed + CURVE_SEED_OFFSET, max_steps)
        wall, cpu = _seconds_before(algo, stage)
        row |= {"stage": stage, "step": step, "gradient_steps": _steps_before(algo, stage) + step,
                "policy_stage": stage, "policy_step": step, "train_seconds": wall + clock.seconds,
                "cpu_seconds": cpu + clock.cpu_seconds}
        with metrics.open("a") as f:
            f.write(json.dumps(row) + "\n")
        scalars.add("curve/score", row["score_mean"], row["gradient_steps"])
        scalars.add("curve/return", row["return_mean"], row["gradient_steps"])
        log(f"[{spec.label()}] {stage} step {step}: return {row['return_mean']:.2f}"
            + (f", score {row['score_mean']:.1f}" if row["score_mean"] is not None else ""))

    def on_progress(stage: str, done: int, steps: int, seconds: float) -> None:
        write_progress(workdir, stage, done, steps, seconds)

    hooks = TrainHooks(checkpoint_every=spec.checkpoint_every, eval_every=spec.eval_every, curve_points=spec.curves(),
                       on_eval=on_eval, log=lambda msg: log(f"[{spec.label()}] {msg}"),
                       shared_stages=spec.shared_directory(results), clock=clock, on_progress=on_progress)
    try:
        calls = mish_kernels()[0]
        record = algo.fit(ds, workdir, hooks=hooks)
        if mish_kernels()[0] > calls:  # fused (torch.compile) or eager Mish: equal to rounding, not bit for bit
            base["hardware"]["mish"] = mish_kernels()[1]
        scalars.add_stage_losses(record["stages"])
        evaluations, final, episodes, cost, selected = _final_evaluation(spec, algo, ds, workdir, metrics, log,
                                                                         scalars, max_steps)
    finally:
        scalars.close()
    aps = [r["actions_per_second"] for r in episodes if r["actions_per_second"]]
    finished = time.time()
    return RunResult(**base, status="finished", finished=finished,
                     wall_seconds=finished - base["started"] + _reused_seconds(record),
                     stage_seconds={k: v.get("seconds", 0.0) for k, v in record["stages"].items()},
                     stage_losses={k: v["history"] for k, v in record["stages"].items() if v.get("history")},
                     shared_stages=sorted(k for k, where in getattr(algo, "restored", {}).items() if where == "shared"),
                     gradient_steps=cost["gradient_steps_total"], nfe_per_action=cost.get("nfe_per_action"),
                     actions_per_second=float(np.mean(aps)) if aps else None, selected_guidance_scale=selected,
                     evaluations=evaluations, final=final,
                     diagnostics=run_diagnostics(record, algo, ds, trend=critic_trend))


def _final_evaluation(spec: RunSpec, algo: Algorithm, ds: OfflineDataset, workdir: Path, metrics: Path, log: Any,
                      scalars: Scalars, max_steps: int) -> tuple[list[dict], list[dict], list[dict], dict, float | None]:
    """Choose the scale on the selection episodes (when there is a choice), then evaluate every scale on the
    final episodes: (evaluation rows, episode rows, summaries, cost, selected scale)."""
    cost = algo.cost
    total = cost["gradient_steps_total"]
    evaluations, final = _read_curve(metrics), []
    scales = list(spec.scales()) if spec.scales() is not None else [None]
    selected = None
    if spec.selecting():
        chosen = []
        for row, _ in _evaluate_rows(algo, ds, scales, spec.selecting(), spec.eval_seed + SELECTION_SEED_OFFSET, max_steps):
            scale = row["guidance_scale"]
            evaluations.append(row | {"stage": "selection", "step": total, "gradient_steps": total})
            chosen.append((row["score_mean"] if row["score_mean"] is not None else row["return_mean"], scale))
        selected = max(chosen, key=lambda c: c[0])[1]  # ties: the first scale listed
        log(f"[{spec.label()}] selected guidance scale {selected:g} on {spec.selecting()} held-out episodes per scale")
    episodes = []
    for row, res in _evaluate_rows(algo, ds, scales, spec.final_episodes(), spec.eval_seed, max_steps):
        scale = row["guidance_scale"]
        evaluations.append(row | {"stage": "final", "step": total, "gradient_steps": total} | _policy_end(algo, scale))
        final += _episode_rows(row["variant"], scale, res)
        episodes.append(row)
        scalars.add(f"final/score/{row['variant']}", row["score_mean"], total)
        log(f"[{spec.label()}] final {row['variant']}: return {row['return_mean']:.2f} ± {row['return_std']:.2f}"
            + (f", score {row['score_mean']:.1f} ± {row['score_std']:.1f}" if row["score_mean"] is not None else "")
            + f" ({row['episodes']} episodes)" + (" [selected]" if selected is not None and scale == selected else ""))
    start = evaluate_start(algo, ds, spec.final_episodes(), spec.eval_seed, max_steps)
    if start is not None:
        row, rows = start
        evaluations.append(row)
        final += rows
        log(f"[{spec.label()}] its start, before {algo.policy_stage(None) or 'training'}, on the same episodes: "
            f"return {row['return_mean']:.2f}" + (f", score {row['score_mean']:.1f}" if row["score_mean"] is not None else ""))
    (workdir / "final.json").write_text(json.dumps({"evaluations": episodes, "episodes": final, "cost": cost,
                                                    "selected_guidance_scale": selected}, indent=2))
    if spec.curves() or spec.eval_every:
        evaluations += _curve_ends(spec, algo, ds, scales, max_steps)
    return evaluations, final, episodes, cost, selected


def evaluate_start(algo: Algorithm, ds: OfflineDataset, episodes: int, seed: int,
                   max_steps: int) -> tuple[dict, list[dict]] | None:
    """The run's start (`Algorithm.start`) on the final evaluation's episodes: its evaluation row and its episodes'
    rows (variant START); None for an algorithm without one."""
    start = algo.start()
    if start is None:
        return None
    (row, res), = _evaluate_rows(start, ds, [None], episodes, seed, max_steps)
    stage = algo.policy_stage(None)
    before = _steps_before(algo, stage) if stage is not None else algo.cost["gradient_steps_total"]
    return (row | {"variant": START, "stage": START, "step": before, "gradient_steps": before},
            _episode_rows(START, None, res))


def _episode_rows(variant: str, scale: float | None, res: Any) -> list[dict]:
    return [{"variant": variant, "guidance_scale": scale, "episode": i, "return": float(res.returns[i]),
             "length": int(res.lengths[i]), "score": float(res.normalized[i]) if res.normalized is not None else None}
            for i in range(len(res.returns))]


def _curve_ends(spec: RunSpec, algo: Algorithm, ds: OfflineDataset, scales: list[float | None],
                max_steps: int) -> list[dict]:
    """Each learning curve's point at the end of its stage, on the curve's own episodes: the final evaluation's
    episodes are others, and a few fixed env seeds can sit apart from many in level (the dense UMaze's 10 curve
    starts lie 1.6 from the goal on average, 2.1 for its final 100), so a curve whose last point were the final
    one would show that difference as a change in the policy. After the final evaluation, which it leaves as is."""
    curved = [s for s in scales if algo.policy_stage(s) in algo.curve_stages
              and algo.curve_scale(algo.policy_stage(s)) == s]
    if not curved:
        return []
    rows = []
    for row, _ in _evaluate_rows(algo, ds, curved, spec.curve_episodes, spec.eval_seed + CURVE_SEED_OFFSET, max_steps):
        end = _policy_end(algo, row["guidance_scale"])
        if end.get("policy_step") is None:
            continue
        rows.append(row | {"stage": end["policy_stage"], "step": end["policy_step"],
                           "gradient_steps": _steps_before(algo, end["policy_stage"]) + end["policy_step"]} | end)
    return rows


def _reused_seconds(record: dict) -> float:
    """Training time spent by earlier attempts: stages restored whole, and the steps before a mid-stage resume."""
    return sum(r.get("seconds", 0.0) if stage in record["resumed"] else r.get("earlier_seconds", 0.0)
               for stage, r in record["stages"].items())


def _steps_before(algo: Algorithm, stage: str) -> int:
    """Gradient steps of the stages finished before `stage`, so curves share one x axis."""
    steps = algo.cost["gradient_steps"]
    order = list(steps)
    return sum(steps[s] for s in order[: order.index(stage)]) if stage in order else sum(steps.values())


def _seconds_before(algo: Algorithm, stage: str, through: bool = False) -> tuple[float, float]:
    """Training seconds (wall, process CPU) of the stages before `stage` (`through`: and of `stage` itself), restored
    stages at what they cost when trained; a record from before CPU time was kept counts its wall time."""
    records, order = getattr(algo, "records", {}), list(getattr(algo, "stages", ()))
    upto = order[: order.index(stage) + through] if stage in order else order
    done = [records[s] for s in upto if s in records]
    return (sum(r.get("seconds", 0.0) for r in done),
            sum(r.get("cpu_seconds", r.get("seconds", 0.0)) for r in done))


def _policy_end(algo: Algorithm, scale: float | None) -> dict[str, Any]:
    """Where the final evaluation at `scale` sits on its learning curve: the end of the stage that made that policy,
    after the training time up to that stage's end."""
    stage = algo.policy_stage(scale)
    if stage is None:
        return {}
    wall, cpu = _seconds_before(algo, stage, through=True)
    steps = getattr(algo, "records", {}).get(stage, {}).get("steps")
    return {"policy_stage": stage, "policy_step": steps, "train_seconds": wall, "cpu_seconds": cpu}


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
