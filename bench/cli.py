"""The `diffbench` command line."""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import math
import os
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Sequence

from envs.errors import DatasetError
from envs.toy import TASKS
from bench.studies.quick import ALGORITHMS as QUICK_ALGORITHMS, DATASET as QUICK_DATASET, \
    SELECTION_EPISODES as QUICK_SELECTION
from policies.config import parse_assignments
from policies.errors import CheckpointError, ConfigError


class _Deferred:
    """A module imported on its first use here: torch, Minari and MuJoCo take seconds to load, and `diffbench --help`
    (or a mistyped option) needs none of them."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)


catalog = _Deferred("envs.catalog")
registry = _Deferred("policies.registry")
DEFERRED_LISTED = 20  # a time limit can defer hundreds of runs: the first ones, then a count



def _names(text: str, option: str) -> list[str]:
    """A comma-separated option's items, blanks dropped; none at all is one error naming the option."""
    names = [t.strip() for t in str(text).split(",") if t.strip()]
    if not names:
        raise ConfigError(f"{option} needs at least one value, got {text!r}")
    return names


def _numbers(text: str, kind: type, option: str) -> list:
    """A comma-separated option as numbers; anything else is one error naming the option."""
    items = _names(text, option)  # outside the try: a ConfigError is a ValueError
    try:
        return [kind(t) for t in items]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated {'integers' if kind is int else 'numbers'}, "
                          f"got {text!r}") from None


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False, default=str))


def cmd_list(args) -> int:
    rows = catalog.list_datasets()
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'id':45s} {'source':10s} {'on disk':8s} {'generatable':12s} same bytes on")
    for r in rows:
        print(f"{r['id']:45s} {r['source']:10s} {'yes' if r['on_disk'] else 'no':8s} "
              f"{'yes' if r['generatable'] else 'no':12s} {r.get('same_bytes_on') or '-'}")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("diffbench")
    except PackageNotFoundError:  # a source tree that is not installed
        return "(not installed)"


def cmd_algorithms(args) -> int:
    rows = [{"name": n, "presets": list(cls.presets), "stages": list(getattr(cls, "stages", ())),
             "guided": bool(cls.guided), "description": cls.description,
             "short_of_competence": dict(cls.short_of_competence)}
            for n in registry.available() for cls in (registry.get(n),)]
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        print(f"{r['name']:13s} {r['description']}\n{'':13s} presets: {', '.join(r['presets'])}; "
              f"stages: {', '.join(r['stages'])}" + ("; guided (--guidance-scales)" if r["guided"] else "")
              + "".join(f"\n{'':13s} {p}: short of competence, ranked nowhere (`diffbench algorithms --json` says why)"
                        for p in r["short_of_competence"]))
    from policies.competence import FAMILY_SHORTFALLS

    for (preset, family), why in sorted(FAMILY_SHORTFALLS.items()):
        print(f"\nevery algorithm's {preset} preset on {family}: short of competence, ranked nowhere: {why}")
    return 0


def cmd_info(args) -> int:
    ds = catalog.load_dataset(args.id, reward_transform=args.reward_transform, action_tolerance=args.action_tolerance)
    summary = ds.summary() | {"reward_transform": ds.reward_transform, "card": ds.metadata.get("card")}
    if args.json:
        _print_json(summary)
    else:
        _print_summary(summary)
    return 0


def _print_summary(s: dict) -> None:
    print(f"{s['id']}  ({s['source']}, {s['location']})")
    print(f"  episodes {s['episodes']}, transitions {s['transitions']}, obs dim {s['observation_dim']}, action dim {s['action_dim']}")
    layout = ", ".join(f"{p['key']}[{p['start']}:{p['stop']}]" for p in s["observation_layout"])
    print(f"  observation layout: {layout}")
    print(f"  terminals {s['terminals']}, timeouts {s['timeouts']}")
    el, ret = s["episode_length"], s["return"]
    print(f"  episode length {el['mean']:.1f} ± {el['std']:.1f} (min {el['min']:g}, max {el['max']:g})")
    print(f"  episode return {ret['mean']:.3f} ± {ret['std']:.3f} (min {ret['min']:g}, max {ret['max']:g})")
    if s.get("score") == "success":
        print("  score: success rate x 100 (the task's success at an episode's end)")
    else:
        print(f"  normalised-score references: random {s['ref_min_score']}, expert {s['ref_max_score']}")
    print(f"  eval env: {s['eval_env']} (max {s['eval_max_episode_steps']} steps)" + (f"; {s['eval_env_note']}" if s.get("eval_env_note") else ""))
    card = s.get("card")
    if card:
        made = f" in {card['generation_seconds']:.0f} s" if card.get("generation_seconds") is not None else ""
        print(f"  generated: seed {card['seed']}, {card['steps']} steps{' (custom size)' if card.get('custom_size') else ''}"
              f"{made}, checksum {card['content_checksum']}")


def cmd_generate(args) -> int:
    makes = catalog.generatable()
    unknown = [i for i in args.ids if i not in makes]
    if unknown:
        raise DatasetError(f"diffbench cannot generate {', '.join(map(repr, unknown))}; it makes: {', '.join(makes)}")
    off = catalog.version_mismatches()
    if off:
        print("diffbench: warning: generating under other versions than the committed results were made with ("
              + ", ".join(f"{k} {v}" for k, v in off.items()) + "); the dataset may hold other bytes, and its runs "
              "will be kept apart from theirs (the card records the versions)", file=sys.stderr)
    for dataset in dict.fromkeys(args.ids):
        path = catalog.generate(dataset, steps=args.steps, seed=args.seed, ref_episodes=args.ref_episodes,
                                overwrite=args.overwrite, progress=not args.no_progress,
                                policies=Path(args.policies) if args.policies else None)
        print(f"wrote {dataset} to {path}", flush=True)
    return 0


def cmd_policies_train(args) -> int:
    from envs.locomotion.sac import SacSettings, train

    settings = SacSettings(steps=args.steps, seed=args.seed, checkpoint_every=args.checkpoint_every,
                           state_every=args.state_every, eval_episodes=args.eval_episodes)
    out = Path(args.out or f"runs/sac/{args.env}-seed{args.seed}")
    curve = train(args.env, out, settings)
    print(f"{args.env}: {len(curve)} checkpoints in {out}; then: diffbench policies pick {args.env} --run {out}")
    return 0


def cmd_policies_pick(args) -> int:
    from envs.locomotion.recipes import pick_policies

    index = pick_policies(args.env, Path(args.run), Path(args.dest) if args.dest else None, args.replay_every,
                          medium_step=args.medium_step, keep_medium=args.keep_medium,
                          heldout_episodes=args.heldout_episodes)
    for role in ("random", "medium", "expert"):
        card = index["cards"][index[role]]
        how = f", {index['medium_choice']}" if role == "medium" else ""
        print(f"{role}: {index[role]} (step {card['training_steps']}, return {card['return_mean']:.1f}, "
              f"D4RL score {card['d4rl_score']:.1f}{how}{_fresh(card)})")
    print(f"replay: {len(index['replay'])} checkpoints up to step {index['replay'][-1]['to'] if index['replay'] else 0}")
    return 0


def _fresh(card: dict) -> str:
    h = card.get("heldout")
    return f"; on {h['episodes']} fresh episodes: return {h['return_mean']:.1f}, D4RL score {h['d4rl_score']:.1f}" if h else ""


def cmd_policies_list(args) -> int:
    from envs.locomotion.recipes import policy_index
    from envs.locomotion.sac import ENVS

    for env in ENVS:
        try:
            index = policy_index(env)
        except DatasetError as exc:
            print(f"{env}: {exc}")
            continue
        for role in ("random", "medium", "expert"):
            card = index["cards"][index[role]]
            print(f"{env} {role}: step {card['training_steps']}, return {card['return_mean']:.1f}, "
                  f"D4RL score {card['d4rl_score']:.1f}{_fresh(card)}")
    return 0


def cmd_verify(args) -> int:
    mode = "always" if args.make_env else "never" if args.no_env else "trusted"
    report = catalog.verify(args.id, action_tolerance=args.action_tolerance, make_env=mode)
    if report["eval_env"].startswith("not checked: its entry point"):
        print(f"diffbench: warning: {report['eval_env']}", file=sys.stderr)
    if args.against is not None:
        report["against"], matches = _against_store(args.id, report, Path(args.against))
        report["ok"] = report["ok"] and matches is not False
    if args.json:
        _print_json(report)
    else:
        for k, v in report.items():
            print(f"{k:22s} {v}")
    return 0 if report["ok"] else 1


def _against_store(dataset: str, report: dict, results: Path) -> tuple[str, bool | None]:
    """Whether the runs a results store holds on `dataset` trained on this copy's content (None: nothing to say);
    where not, what differed: the versions, the CPU, and which of the two the dataset's kind depends on."""
    mine = report["fingerprint"]
    runs = _existing_store(str(results)).table("runs")
    runs = runs[(runs["dataset"] == dataset) & (runs["status"] == "finished")]
    if runs.empty:
        return f"no finished run on {dataset} in {results}", None
    recorded = runs[runs["dataset_content"].notna()]
    if recorded.empty:
        return (f"none of the {len(runs)} run(s) in {results} recorded its dataset content (made before diffbench "
                "recorded it)"), None
    same = int((recorded["dataset_content"] == mine).sum())
    other = recorded[recorded["dataset_content"] != mine]
    if other.empty:
        return f"same content as the {same} run(s) on it in {results} ({mine})", True
    versions = sorted({json.loads(p).get("mujoco", "?") for p in other["packages"].dropna()})
    cpus = sorted({json.loads(h).get("description", "?").split(",")[0] for h in other["hardware"].dropna()})
    kinds = ", ".join(sorted(other["dataset_content"].unique()))
    text = (f"{len(other)} run(s) in {results} trained on other content ({kinds}) than this copy ({mine}); "
            f"{same} on this one. Those runs had mujoco {', '.join(versions)} on {', '.join(cpus)}; "
            + (f"this copy was made on {report['generated_on']} ({report['numerics']})"
               if report["generated_on"] != "not recorded" else "this copy's card does not say on which CPU it was made")
            + ". Regenerate under the versions in their dataset card to match them")
    from envs.families import family

    if family(dataset) == "locomotion":
        text += ("; where the versions are the same, the CPU is the difference: the SAC actor that rolls these data "
                 "out multiplies in torch (MKL), whose kernels differ between Intel and AMD CPUs, so make these cells "
                 "on a machine like theirs (README: The same bytes on another machine)"
                 if report.get("actor_math", "torch") == "torch" else
                 "; this copy's actor acted in numpy float64, the same bytes on any x86-64-v3 CPU, so where the "
                 "versions are the same those runs were trained on the data of the recipe before it left torch: "
                 "make their cells again on this copy (`diffbench sweep ... --other-data`)")
    return text, False


def cmd_budgets(args) -> int:
    """The budget study: run what is missing (unless --no-run), then write its table from the store."""
    from bench.harness.executors import run_all
    from bench.harness.provenance import code_version, hardware
    from bench.harness.runner import preflight
    from bench.studies import budgets

    algorithms = [a for a in args.algorithms.split(",") if a]
    datasets = [d for d in args.datasets.split(",") if d]
    specs = budgets.study_specs(algorithms, datasets, _numbers(args.seeds, int, "--seeds"),
                                _numbers(args.factors, float, "--factors"), args.preset)
    results = Path(args.results)
    if not args.no_run:
        preflight(specs)
        print(f"budget study: {len(specs)} runs ({', '.join(algorithms)} on {len(datasets)} datasets) into {results}",
              flush=True)
        code = _print_outcome(run_all(specs, results, **_run_options(args)), results)
        if code:
            return code
    table = budgets.budget_table(_existing_store(args.results), args.preset)
    command = "diffbench budgets " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "diffbench budgets"
    return _wrote([budgets.write(table, Path(args.out), command, code_version(), hardware(), args.preset)])


def cmd_competence(args) -> int:
    """The competence checks of a store's runs, written to --out."""
    from bench.harness.provenance import code_version, hardware
    from bench.studies import competence

    store = _existing_store(args.results)
    tried = None
    with tempfile.TemporaryDirectory() as scratch:
        if args.preset:
            tried = competence.variant_checks(competence.variants(store, args.preset, Path(scratch)))
            store = competence.at_preset(store, args.preset, Path(scratch))
        table, report = competence.checks(store)
    command = "diffbench competence " + " ".join(sys.argv[2:])
    return _wrote([competence.write(table, report, Path(args.out), command, code_version(), hardware(),
                                    _notes(args.notes), tried)])


def cmd_critics(args) -> int:
    """Fitted-Q evaluation of the behaviour policy with each algorithm's critic, written to --out."""
    from bench.harness.provenance import code_version, hardware
    from bench.studies import competence, critics
    from policies import registry as policy_registry

    algorithms = [a for a in args.algorithms.split(",") if a]
    for name in algorithms:
        policy_registry.get(name)  # an unknown name fails before any training
    datasets = [d for d in args.datasets.split(",") if d]
    seeds = _numbers(args.seeds, int, "--seeds")
    if args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    import torch

    torch.set_num_threads(args.threads)
    rows = Path(args.rows) if args.rows else None
    df = critics.study(algorithms, datasets, seeds, args.steps, args.preset, rows_path=rows, run=not args.no_run,
                       code=code_version(),
                       on_row=lambda r: print(f"{r['algorithm']} {r['dataset']} seed {r['seed']} step {r['step']}: "
                                              f"Q {r['q_data_mean']:.1f} against {r['mc_return_mean']:.1f}, "
                                              f"correlation {r['mc_correlation'] if r['mc_correlation'] is None else round(r['mc_correlation'], 2)}",
                                              flush=True))
    scores, variants, checks = {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for i, where in enumerate(w for w in (args.scores or "").split(",") if w):
            store = _existing_store(where)
            scores[where], checks[where] = critics.store_rows(store, args.preset, Path(scratch) / str(i))
            variants[where] = competence.variant_checks(competence.variants(store, args.preset,
                                                                            Path(scratch) / f"{i}-variants"))
    command = "diffbench critics " + " ".join(sys.argv[2:])
    return _wrote([critics.write(df, Path(args.out), command, code_version(), hardware(), args.preset, scores,
                                 _notes(args.notes), variants, checks)])


def _notes(path: str | None) -> list[str] | None:
    """A Markdown list file's items (`--notes`), printed under a study's tables."""
    if not path:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"--notes {path}: no such file; give a Markdown list of what was tried")
    lines = Path(path).read_text().strip().splitlines()
    return [n[2:] if n.startswith("- ") else n for n in lines if n.strip()]


def cmd_quick(args) -> int:
    """The embedded default job: QGPO, its s = 0 ablation and the fine-tuning methods for two seeds, then the
    comparison table."""
    from bench.studies import quick
    from bench.harness.executors import run_all

    scales = _numbers(args.guidance_scales, float, "--guidance-scales")  # every argument before the minute of generation
    if 0.0 not in scales:
        scales.insert(0, 0.0)  # the ablation is the point of the comparison
    seeds = _numbers(args.seeds, int, "--seeds")
    algorithms = [a for a in args.algorithms.split(",") if a]
    if not algorithms:
        raise ConfigError("--algorithms takes comma-separated algorithm names, e.g. qgpo,ddpo")
    for spec in quick.specs(args.dataset, seeds, args.preset, scales, args.episodes, algorithms,
                            args.selection_episodes)[::len(seeds)]:
        spec.config()  # bad names, presets and episode counts fail here, before the dataset is generated
    if not any(r["id"] == args.dataset and r["on_disk"] for r in catalog.list_datasets()):
        if args.dataset not in catalog.generatable():
            catalog.load_dataset(args.dataset)  # a path, or the one-line "not on disk" error
        print(f"generating {args.dataset} (once; about a minute on two cores)", flush=True)
        catalog.generate(args.dataset, seed=0, progress=not args.no_progress)
    report = catalog.verify(args.dataset)
    if not report["ok"]:
        print(f"diffbench: error: {args.dataset} failed verification: {report}", file=sys.stderr)
        return 2
    specs = quick.specs(args.dataset, seeds, args.preset, scales, args.episodes, algorithms, args.selection_episodes)
    results = Path(args.results)
    print(f"{', '.join(dict.fromkeys(s.algorithm for s in specs))} ({args.preset} preset) on {args.dataset}, seeds "
          f"{args.seeds}, qgpo's guidance scales {', '.join(f'{s:g}' for s in scales)}, {specs[0].final_episodes()} "
          f"episodes each; results in {results}", flush=True)
    code = _print_outcome(run_all(specs, results, **_run_options(args)), results)
    store = _existing_store(str(results))
    ids = [s.run_id() for s in specs]
    table = quick.comparison(store, ids)
    print()
    for line in quick.summary_lines(store, ids):
        print(line)
    if table.empty:
        print("no finished run to compare")
        return 1
    print(f"\nnormalised score on {args.dataset} (mean over episodes per seed):\n")
    print(quick.format_table(table))
    (results / "quick.md").write_text(quick.format_table(table) + "\n")
    return code


def cmd_toy_floor(args) -> int:
    from bench.studies.toy_floor import run

    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DatasetError(f"unknown toy task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    betas = _numbers(args.betas, float, "--betas")
    df = run(tasks, betas, args.n, args.repeats, args.seed, Path(args.out), _command(args))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {args.out}")
    return 0


def _tasks(spec: str) -> list[str]:
    tasks = spec.split(",")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DatasetError(f"unknown toy task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    return tasks


def _command(args) -> str:
    return "diffbench " + " ".join(shlex.quote(a) for a in args.argv)


def _from_rows(args) -> list[Path] | None:
    """--from-rows A.csv[,B.csv...]: earlier runs' rows, a report written again from them."""
    return [Path(p) for p in _names(args.from_rows, "--from-rows")] if getattr(args, "from_rows", None) else None


def cmd_toy_exactness(args) -> int:
    from bench.studies.exactness import BUDGETS, headline, run

    if args.budget not in BUDGETS:
        raise ConfigError(f"unknown budget {args.budget!r}; choose from {', '.join(BUDGETS)}")
    summary = run(_tasks(args.tasks), _numbers(args.betas, float, "--betas"), _numbers(args.seeds, int, "--seeds"),
                  args.budget, Path(args.out), _command(args), Path(args.floor), workers=args.workers)
    print(headline(summary))
    print(f"wrote {args.out}")
    return 0


def cmd_toy_finetune(args) -> int:
    from bench.studies.finetune import FINETUNE_BUDGETS, run

    if args.budget not in FINETUNE_BUDGETS:
        raise ConfigError(f"unknown budget {args.budget!r}; choose from {', '.join(FINETUNE_BUDGETS)}")
    rewards = tuple(_names(args.rewards, "--rewards")) if args.rewards else None
    summary = run(_tasks(args.tasks), _numbers(args.betas, float, "--betas"), _numbers(args.seeds, int, "--seeds"),
                  args.budget, Path(args.out), _command(args), Path(args.floor), workers=args.workers,
                  from_rows=_from_rows(args), rewards=rewards)
    print(Path(args.out).read_text().splitlines()[-1])
    print(f"wrote {args.out} ({len(summary)} summary rows)")
    return 0


def cmd_toy_dxmi(args) -> int:
    from bench.studies.dxmi import DXMI_BUDGETS, run

    if args.budget not in DXMI_BUDGETS:
        raise ConfigError(f"unknown budget {args.budget!r}; choose from {', '.join(DXMI_BUDGETS)}")
    summary = run(_tasks(args.tasks), _numbers(args.seeds, int, "--seeds"), args.budget, Path(args.out), _command(args),
                  workers=args.workers, finetune_csv=Path(args.finetune), speed_repeats=args.speed_repeats,
                  from_rows=_from_rows(args))
    print("\n".join(line for line in Path(args.out).read_text().splitlines() if line.startswith(("DxMI against", "- DxD"))))
    print(f"wrote {args.out} ({len(summary)} summary rows)")
    return 0


def cmd_toy_flow(args) -> int:
    from bench.studies.flow_toy import BUDGETS, report_lines, run

    if args.budget not in BUDGETS:
        raise ConfigError(f"unknown budget {args.budget!r}; choose from {', '.join(BUDGETS)}")
    table = run(_tasks(args.tasks), _numbers(args.seeds, int, "--seeds"), args.budget, Path(args.out), _command(args),
                workers=args.workers)
    print("\n".join(report_lines(table, BUDGETS[args.budget])))
    print(f"wrote {args.out}")
    return 0


def cmd_toy_ctrl(args) -> int:
    from bench.studies.ctrl import CTRL_BUDGETS, run

    if args.budget not in CTRL_BUDGETS:
        raise ConfigError(f"unknown budget {args.budget!r}; choose from {', '.join(CTRL_BUDGETS)}")
    sizes = _numbers(args.sizes, int, "--sizes")
    if min(sizes) < 10:
        raise ConfigError(f"--sizes are labelled points per control; each must be >= 10, got {min(sizes)}")
    summary = run(_tasks(args.tasks), _numbers(args.seeds, int, "--seeds"), sizes, args.budget, Path(args.out),
                  _command(args), workers=args.workers, redo=tuple(_names(args.redo, "--redo")) if args.redo else (),
                  from_rows=_from_rows(args))
    print(Path(args.out).read_text().splitlines()[-1])
    print(f"wrote {args.out} ({len(summary)} summary rows)")
    return 0


def cmd_perf(args) -> int:
    from bench.studies.perf import reference_key, run, speedups

    rows = run(_devices(args.device), Path(args.out) if args.out else None, _command(args), repeats=args.repeats,
               official=Path(args.official) if args.official else None,
               sweep=_existing_store(args.sweep) if args.sweep else None)
    for device, figures, _, peak, reference, compile_s, evaluation, many in rows:
        print(f"{device} (sustained matmul {peak:.1f} GFLOP/s; acting step compiled in {compile_s:.1f} s)")
        ratios = speedups(figures, reference or {})
        for k, v in figures.items():
            print(f"  {k:32s} {v:10.1f}" + (f"   official {reference[reference_key(k)]:10.1f}   {ratios[k]:5.2f}x"
                                            if k in ratios else ""))
        for k, v in evaluation.items():
            print(f"  {k:36s} {v:10.2f}")
        for k, m in many["steps"].items():
            print(f"  {k} x{m['seeds']} seeds stacked: {m['single_ms']:.2f} ms one seed ({m['single_gflops']:.1f} of "
                  f"{many['matmul_gflops']:.1f} GFLOP/s), {m['stacked_ms']:.2f} ms "
                  f"stacked, gain {m['gain']:.2f}x, bit for bit {m['bitwise']} (PointMaze shapes {m['bitwise_pointmaze']})")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_perf_samplers(args) -> int:
    from bench.studies.perf_samplers import BATCHES, run

    rows = run(_devices(args.device), Path(args.out) if args.out else None, _command(args), repeats=args.repeats)
    for device, figures in rows:
        print(device)
        for name, rates in figures.items():
            print(f"  {name:40s} " + "  ".join(f"batch {b}: {rates[b]:10,.0f}/s" for b in BATCHES))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_perf_acting(args) -> int:
    from bench.studies.perf_acting import measure, write_report
    from policies import registry

    names = [n for n in args.algorithms.split(",") if n] or registry.available()
    for name in names:
        registry.get(name)  # an unknown name: one clear error before anything is timed
    rows, skipped = measure(names, args.preset, args.device, args.repeats)
    for (name, batch), rate in rows.set_index(["algorithm", "batch"])["actions_per_second"].items():
        print(f"  {name:14s} batch {batch:5d}: {rate:10,.0f} actions/s")
    for name, why in skipped.items():
        print(f"  {name:14s} not timed: {why}")
    if args.out:
        write_report(rows, skipped, Path(args.out), _command(args))
        print(f"wrote {args.out}")
    return 0


def cmd_perf_sweep(args) -> int:
    from bench.harness.sweep import load_sweep
    from bench.reports import sweep_cost

    spec = load_sweep(Path(args.spec))
    store = _existing_store(args.results)
    out = Path(args.out)
    _writable(out.parent)
    speedup = _speedup_table(args.speedup) if args.speedup else None
    costs = sweep_cost.write(store, spec, args.spec, out, _command(args), speedup)
    print(f"{costs['run_id'].nunique()} runs, {sweep_cost.total_core_hours(costs):.2f} core-hours; wrote {out}")
    return 0


def _speedup_table(path: str):
    from bench.studies.sweep_speedup import read_ratios

    try:
        return read_ratios(Path(path))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--speedup {path}: not a `diffbench perf speedup` CSV ({exc}); make one with "
                          "`diffbench perf speedup SPEC --before REV`") from None


def cmd_perf_speedup(args) -> int:
    from bench.harness.sweep import load_sweep
    from bench.studies import sweep_speedup as sp

    spec = load_sweep(Path(args.spec))
    dataset = args.dataset or spec.datasets[0]
    workdir = Path(args.workdir)
    _writable(workdir, "--workdir")
    out = Path(args.out)
    _writable(out.parent)
    before_code = sp.before_code(args.before, args.before_tree, workdir)  # its errors before any run
    print(f"probe runs of {len(spec.algorithms)} algorithms on {dataset} at {args.fraction:g} of their budgets: "
          f"{args.before or args.before_tree} (before) and this checkout (after), in turn; stores in {workdir}")
    costs = sp.measure(spec, before_code, sp.ROOT, dataset, args.fraction, workdir)
    table = sp.ratios(costs)
    agree = sp.agreement(workdir, dataset)
    before, after = sp.made_with(workdir, dataset).values()  # what the runs recorded, resumed or not
    sp.write_report(table, agree, out, _command(args), before, after, dataset, args.fraction,
                    sp.probe_seconds(workdir, dataset), sp.core_shares(workdir, dataset))
    whole = table.dropna(subset=["before", "after"])
    print(f"probe total: {whole['before'].sum() / 60:.1f} core-min before, {whole['after'].sum() / 60:.1f} after; "
          f"wrote {out} and its CSV (`diffbench perf sweep SPEC --speedup {out.with_suffix('.csv')}` projects it "
          "onto a whole sweep)")
    return 0


def cmd_perf_kernels(args) -> int:
    from bench.studies.perf_kernels import measure, write_report

    rows = measure(tuple(_names(args.algorithms, "--algorithms")), args.preset, args.device, args.steps, args.repeats)
    for r in rows:
        print(f"  {r['algorithm']:14s} eager {r['eager_ms']:7.1f} ms/step, fused {r['fused_ms']:7.1f} ms/step "
              f"({r['speedup']:.2f}x, {r['kernel']})")
    if args.out:
        write_report(rows, Path(args.out), _command(args))
        print(f"wrote {args.out}")
    return 0


def cmd_perf_layout(args) -> int:
    from bench.studies.worker_layout import measure, write_report

    rows = measure(tuple(_names(args.algorithms, "--algorithms")), args.preset, args.steps, args.cores)
    for r in rows:
        print(f"  {r['algorithm']:14s} {r['cores']} workers x 1 thread {r['workers_steps_per_s']:8.1f} steps/s, "
              f"1 worker x {r['cores']} threads {r['threads_steps_per_s']:8.1f} ({r['gain']:.2f}x; same numbers: "
              f"{'yes' if r['same_numbers'] else 'no'})")
    if args.out:
        write_report(rows, Path(args.out), _command(args))
        print(f"wrote {args.out}")
    return 0


def cmd_perf_sac(args) -> int:
    from bench.studies.perf_sac import run

    rates = run([e for e in args.envs.split(",") if e], args.steps, Path(args.out) if args.out else None, _command(args))
    for env, r in rates.items():
        print(f"{env}: " + ", ".join(f"{lib} {v:.0f} steps/s" for lib, v in r.items()))
    if args.out:
        print(f"wrote {args.out}")
    return 0


def cmd_perf_critic(args) -> int:
    import time

    from bench.studies import critic_agreement

    def show(r: dict) -> None:
        print(f"{r['critic']:9s} step {r['step']:7,d}: Q_0 {r['q_data_mean']:10.1f} (allowed [{r['low']:.4g}, "
              f"{r['high']:.4g}]), spread {r['spread_median']:8.2f}, correlation {r['mc_correlation']:5.2f}"
              + ("  OUTSIDE" if r["outside"] else ""), flush=True)

    began = time.perf_counter()
    df = critic_agreement.compare(Path(args.official), Path(args.support), steps=args.steps, every=args.every,
                                  on_row=show)
    if args.out:
        critic_agreement.write(df, Path(args.out), _command(args), Path(args.official), Path(args.support),
                               time.perf_counter() - began)
        print(f"wrote {args.out}")
    return 0


def _devices(option: str | None) -> list[str]:
    """--device of the perf benchmarks: the devices named, or cuda when there is one, else cpu."""
    if option:
        return option.split(",")
    import torch

    return ["cuda" if torch.cuda.is_available() else "cpu"]


def _print_outcome(outcome: dict, results: Path) -> int:
    for spec in outcome["skipped"]:
        print(f"skipped (finished before): {spec.label()}")
    for r in outcome["failed"]:
        print(f"FAILED {r.algorithm} {r.dataset} seed {r.seed} [{r.run_id}]: {r.error.strip().splitlines()[-1]}")
    deferred = outcome.get("deferred", [])
    for spec, projected in deferred[:DEFERRED_LISTED]:
        print(f"deferred (the time limit was reached): {spec.label()}" if math.isnan(projected)
              else f"deferred (projected {projected / 60:.0f} min, past the time limit): {spec.label()}")
    if len(deferred) > DEFERRED_LISTED:
        print(f"... and {len(deferred) - DEFERRED_LISTED} more deferred (`diffbench sweep SPEC --plan` lists what is "
              "left)")
    print(f"{len(outcome['finished'])} finished, {len(outcome['skipped'])} skipped, {len(outcome['failed'])} failed"
          + (f", {len(deferred)} deferred" if deferred else "") + f"; store: {_existing_store(str(results)).path}")
    if deferred:
        print("deferred runs were not started; run the same command again (with a new --time-limit) to make them")
    if outcome["failed"]:
        print("failed runs keep their traceback in the store (runs.error); run the same command again to retry them")
    return 1 if outcome["failed"] else 0


def _run_options(args) -> dict:
    from bench.harness.deadline import parse_duration

    return {"executor": args.executor, "workers": args.workers, "address": args.address, "device": args.device,
            "progress": not args.no_progress,
            "time_limit": parse_duration(args.time_limit) if getattr(args, "time_limit", None) else None,
            "on_result": lambda r: print(f"{r.status}: {r.algorithm} {r.dataset} seed {r.seed} [{r.run_id}]"
                                         + (f" in {r.wall_seconds:.0f} s" if r.wall_seconds else ""), flush=True)}


def _protocol_line(spec) -> str:
    p = spec.protocol()
    scales = ", ".join(f"{s:g}" for s in p["guidance_scales"]) if p["guidance_scales"] else "the config's"
    chosen = (f"scale chosen on {p['selection_episodes']} held-out episodes each" if p["scale_selection"] == "held-out"
              else "no scale choice")
    return (f"rewards {p['reward_transform']}; {p['episodes']} episodes at the last checkpoint; guidance scales "
            f"{scales}; {chosen}")


def cmd_run(args) -> int:
    from bench.harness.executors import run_all
    from bench.harness.runner import RunSpec, preflight

    scales = tuple(_numbers(args.guidance_scales, float, "--guidance-scales")) if args.guidance_scales else None
    spec = RunSpec(algorithm=args.algorithm, dataset=args.dataset, seed=args.seed, preset=args.preset,
                   overrides=parse_assignments(args.overrides), episodes=args.episodes, guidance_scales=scales,
                   eval_every=args.eval_every, curve_points=args.curve_points,
                   checkpoint_every=args.checkpoint_every, eval_seed=args.eval_seed,
                   reward_transform=args.reward_transform, selection_episodes=args.selection_episodes)
    preflight([spec])
    print(f"run {spec.label()} -> {spec.directory(Path(args.results))}")
    print(f"  protocol: {_protocol_line(spec)}")
    return _print_outcome(run_all([spec], Path(args.results), **_run_options(args)), Path(args.results))


def cmd_sweep(args) -> int:
    from bench.harness.executors import run_all
    from bench.harness.runner import preflight
    from bench.harness.sweep import load_sweep

    specs = load_sweep(Path(args.spec)).runs()
    preflight(specs)
    if args.plan:  # what would run, against the store, and why a stored run would not be reused
        import pandas as pd

        from bench.harness.plan import describe, other_data, plan

        runs = _existing_store(args.results).table("runs") if (Path(args.results) / "results.sqlite").exists() \
            else pd.DataFrame(columns=["run_id", "status"])
        from bench.harness.deadline import cost_line, projected_runs, where_the_hours_go
        from bench.harness.executors import threads_per_worker

        print(f"sweep {args.spec} against {args.results}: {len(specs)} runs")
        forked = other_data(specs, runs)
        if forked:
            print(f"warning: {forked}")
        planned = plan(specs, runs)
        print("\n".join(describe(planned)))
        left = [p.spec for p in planned if p.status != "finished"]
        if left:
            rows = projected_runs(left, runs, threads_per_worker(args.workers), Path(args.results))
            print("\n".join(where_the_hours_go(rows)))
            print(cost_line(rows, args.workers))
        return 0
    if args.other_data != "run" and (Path(args.results) / "results.sqlite").exists():
        from bench.harness.plan import apart, other_data

        runs = _existing_store(args.results).table("runs")
        if args.other_data == "skip":
            left_out = apart(specs, runs)
            specs = [s for s in specs if s.dataset not in left_out]
            for dataset, (mine, theirs) in left_out.items():
                print(f"left out: {dataset} (this copy {mine}, the store's runs {theirs}; "
                      f"`diffbench datasets verify {dataset} --against {args.results}`)")
        elif forked := other_data(specs, runs):
            raise DatasetError(forked + "; or pass --other-data run to make them here all the same")
    rerun = [a.strip() for a in args.rerun.split(",") if a.strip()]
    print(f"sweep {args.spec}: {len(specs)} runs into {args.results}" + (f"; {', '.join(rerun)} made again" if rerun else ""))
    return _print_outcome(run_all(specs, Path(args.results), **_run_options(args), rerun=rerun), Path(args.results))


def cmd_export(args) -> int:
    return _wrote(_existing_store(args.results).export(Path(args.out or Path(args.results) / "export"), args.format))


def cmd_drop(args) -> int:
    dropped = _existing_store(args.results).drop(args.run_ids)
    for r in dropped.itertuples():
        print(f"dropped run {r.run_id}: {r.algorithm} on {r.dataset}, seed {r.seed} ({r.preset}, {r.status})")
    return 0


def cmd_starts(args) -> int:
    from bench.harness.starts import add_starts

    outcomes = add_starts(_existing_store(args.results), dry_run=args.dry_run)
    added = sum(o.added for o in outcomes)
    print(f"{added} start(s) {'would be ' if args.dry_run else ''}added, {len(outcomes) - added} run(s) left as they were"
          if outcomes else "every run with a start holds it already")
    return 0


def _wrote(paths: list[Path]) -> int:
    for path in paths:
        print(f"wrote {path}")
    return 0


def _writable(directory: Path, option: str = "--out") -> Path:
    """Fail before any work if `directory` cannot be made or written (read-only, or under a file)."""
    from policies.core.checkpoint import probe_write

    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe_write(directory / "probe")
    except OSError as exc:
        raise ConfigError(f"cannot write to {directory}: {exc.strerror or exc}; choose a writable {option}") from None
    return directory


def _built_report(args, doing: str):
    """The report of `--results`' store (with `--spec`, of that sweep's runs alone), or None after saying there is
    nothing to `doing`."""
    from bench.reports.report import build

    store = _existing_store(args.results)
    ids = None
    if getattr(args, "spec", None):
        from bench.harness.plan import read_ids
        from bench.harness.sweep import load_sweep

        ids = set(read_ids(load_sweep(Path(args.spec)).runs(), store.table("runs")))
    report = build(store, Path(args.reference) if getattr(args, "reference", None) else None, ids)
    if report.empty:
        print(f"nothing to {doing}: {store.path} holds no finished run" + (f" of {args.spec}'s" if ids else "")
              + " with evaluation episodes")
        return None
    return report


def cmd_report(args) -> int:
    from bench.reports import render

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    render.check_formats(formats)  # before the report is computed
    report = _built_report(args, "report")
    if report is None:
        return 1
    out = _writable(Path(args.out or Path(args.results) / "report"))
    return _wrote(render.write(report, out, formats, command=_command(args)))


def cmd_leaderboard(args) -> int:
    from bench.reports.leaderboard import headline_block, write_headline, write_leaderboard

    if args.top < 1:
        raise ConfigError(f"--top must be at least 1, got {args.top}")
    if args.readme:
        if not Path(args.readme).is_file():
            raise ConfigError(f"--readme {args.readme}: no such file (name the README whose headline block to rewrite)")
        headline_block(Path(args.readme))  # before the report is computed
    report = _built_report(args, "rank")
    if report is None:
        return 1
    out = Path(args.out) if args.out else Path(args.results) / "LEADERBOARD.md"
    _writable(out.parent)
    written = write_leaderboard(report, out, args.metric, _command(args))
    if args.readme:
        written.append(write_headline(report, Path(args.readme), args.metric, _command(args), args.top))
    return _wrote(written)


def cmd_findings(args) -> int:
    import pandas as pd

    from bench.harness.deadline import projected_cost
    from bench.harness.plan import read_ids
    from bench.harness.sweep import load_sweep
    from bench.reports.findings import coverage, write_findings
    from bench.reports.reference import load_reference

    if not args.spec:
        raise ConfigError("findings needs --spec (e.g. bench/sweeps/leaderboard.yaml): the page says how much of that "
                          "sweep the store holds, and reads only its runs")
    checked = Path(args.checked) if args.checked else None
    if checked is not None and not checked.is_file():
        raise ConfigError(f"--checked {args.checked}: no such file (name the hand-written notes on checked cells, "
                          "or leave the option out)")
    report = _built_report(args, "write findings from")
    if report is None:
        return 1
    runs, stored = load_sweep(Path(args.spec)).runs(), _existing_store(args.results).table("runs")
    planned = pd.DataFrame({"run_id": read_ids(runs, stored), "algorithm": [r.algorithm for r in runs],
                            "dataset": [r.dataset for r in runs]})
    finished = set(stored.loc[stored["status"] == "finished", "run_id"]) if not stored.empty else set()
    out = Path(args.out) if args.out else Path(args.results) / "FINDINGS.md"
    _writable(out.parent)
    reference = load_reference(Path(args.reference) if args.reference else None)
    left = [r for r, run_id in zip(runs, planned["run_id"]) if run_id not in finished]  # ids made once, above
    said = ""
    if left:  # in core-hours, which do not depend on the machine that writes the page
        core_hours, _, short, unknown = projected_cost(left, stored, 1, Path(args.results))
        said = (f"Left to run: {len(left)} run{'s' * (len(left) != 1)}, projected {core_hours:.1f} core-hours at "
                f"the costs of the store's finished runs ({short:.1f} of them runs declared short of competence, "
                "made last" + (f"; {unknown} runs of algorithms with no finished run not counted" if unknown else "") + ").")
    return _wrote([write_findings(report, out, reference, coverage(planned, finished), checked, _command(args),
                                  args.metric, said)])


def cmd_compare(args) -> int:
    from bench.reports.leaderboard import compare
    from bench.reports.render import markdown_table
    from bench.reports.report import entry_footnotes

    if args.spec:
        return _compare_spec(args)
    if not (args.a and args.b):
        raise ConfigError("compare needs two entries, algorithms or run ids (diffbench compare A B), or a sweep "
                          "spec (diffbench compare --spec SPEC --baseline ALGO)")
    report = _built_report(args, "compare")
    if report is None:
        return 1
    table = compare(report, args.a, args.b)
    if table.empty:
        print(f"{args.a} and {args.b} share no dataset with normalised scores")
        return 1
    print(markdown_table(table))
    named = set(table["A"]) | set(table["B"])
    for note in entry_footnotes(report.scores[report.scores["entry"].isin(named)]):
        print(f"- {note}")  # what each #tag in the table stands for
    return 0


def _compare_spec(args) -> int:
    from bench.harness.sweep import load_sweep
    from bench.reports import versus
    from bench.reports.render import markdown_table
    from bench.studies.perf_acting import rates

    if args.a or args.b:
        raise ConfigError("compare takes either two entries or --spec, not both")
    spec = load_sweep(Path(args.spec))
    speed = rates(Path(args.speed)) if args.speed else None
    store = _existing_store(args.results)
    if args.out:
        out = Path(args.out)
        _writable(out.parent)
        versus.write(store, spec, args.spec, args.baseline, out, _command(args), speed, args.speed)
        print(f"wrote {out}")
        return 0
    table, notes, _ = versus.table(store, spec, args.baseline, speed)
    print(markdown_table(table) if not table.empty else "no finished run of the spec's in the store")
    for note in notes:
        print(f"- {note}")
    return 0


def _existing_store(results: str):
    from bench.harness.store import ResultsStore

    path = Path(results)
    if not (path / "results.sqlite").exists() and not path.is_file():
        raise ConfigError(f"no results store in {path}; run `diffbench run`, `sweep` or `quick` first, "
                          "or point --results at the directory that holds results.sqlite")
    return ResultsStore(path)


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" where there is one to show and the help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == "" or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub)command's --help shows each option's default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Defaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="diffbench", description="Offline-RL benchmark suite for diffusion policies.")
    p.add_argument("--version", action="version", version=f"diffbench {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    alg = sub.add_parser("algorithms", help="the registered algorithms (built-in and plug-ins), their presets and what each is")
    alg.add_argument("--json", action="store_true", help='print as JSON (name, presets, stages, description)')
    alg.set_defaults(func=cmd_algorithms)

    ds = sub.add_parser("datasets", help="list, inspect, generate and verify offline datasets")
    dsub = ds.add_subparsers(dest="datasets_command", required=True)
    ls = dsub.add_parser("list", help="datasets on disk and those diffbench can generate")
    ls.add_argument("--json", action="store_true", help='print as JSON (one object per dataset)')
    ls.set_defaults(func=cmd_list)

    def dataset_arg(sp):
        sp.add_argument("id", help="Minari id, legacy D4RL id, HDF5 file or Minari dataset directory")
        sp.add_argument("--action-tolerance", type=float, default=1e-3, help="how far actions may exceed the action space")
        sp.add_argument("--json", action="store_true", help="machine-readable output")

    info = dsub.add_parser("info", help="sizes, dims, return statistics and score references of a dataset")
    dataset_arg(info)
    info.add_argument("--reward-transform", default="none", choices=["none", "locomotion", "antmaze"], help='the reward transform to load it with (locomotion: x1000/(max - min return); antmaze: r - 1)')
    info.set_defaults(func=cmd_info)

    gen = dsub.add_parser("generate", help="make a D4RL-style dataset and write it as a Minari dataset")
    gen.add_argument("ids", nargs="+", metavar="ID", help="datasets diffbench makes (`diffbench datasets list` marks "
                                                          "them), made one after another")
    gen.add_argument("--steps", type=int, help="transitions to collect (default: the recipe's size)")
    gen.add_argument("--seed", type=int, default=0, help="seed of the collection (the controller's noise, the envs' resets)")
    gen.add_argument("--ref-episodes", type=int, help="PointMaze: episodes per reference score (default 100)")
    gen.add_argument("--policies", help="locomotion: a directory of actors (index.json) instead of the committed ones")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing dataset once the new one is complete")
    gen.add_argument("--no-progress", action="store_true", help='no progress bar')
    gen.set_defaults(func=cmd_generate)

    ver = dsub.add_parser("verify", help="recheck structure, checksum and environment of a dataset")
    dataset_arg(ver)
    env_mode = ver.add_mutually_exclusive_group()
    env_mode.add_argument("--make-env", action="store_true",
                          help="make the env even when its entry point is code from outside Gymnasium and diffbench "
                               "(importing it runs that code)")
    env_mode.add_argument("--no-env", action="store_true", help="do not make the evaluation env at all")
    ver.add_argument("--against", metavar="RESULTS", default=None,
                     help="a results directory (e.g. results/leaderboard): say whether its runs on this dataset "
                          "trained on the same content as this copy (exit 1 if any did not)")
    ver.set_defaults(func=cmd_verify)

    pol = sub.add_parser("policies", help="the SAC behaviour policies the locomotion datasets are rolled out from")
    psub_ = pol.add_subparsers(dest="policies_command", required=True)
    ptrain = psub_.add_parser("train", help="SAC on a MuJoCo v5 env, the actor saved and scored along the curve; "
                                            "resumes what --out holds")
    ptrain.add_argument("env", help="halfcheetah, hopper or walker2d")
    ptrain.add_argument("--steps", type=int, default=1_000_000, help='SAC environment steps')
    ptrain.add_argument("--seed", type=int, default=0, help='seed of the SAC run')
    ptrain.add_argument("--out", help="run directory (default runs/sac/ENV-seedN)")
    ptrain.add_argument("--checkpoint-every", type=int, default=10_000, help='environment steps between saved actors')
    ptrain.add_argument("--state-every", type=int, default=50_000, help="steps between resumable learner states")
    ptrain.add_argument("--eval-episodes", type=int, default=10, help='episodes scoring each saved actor')
    ptrain.set_defaults(func=cmd_policies_train)
    ppick = psub_.add_parser("pick", help="copy the checkpoints the recipes need (random, medium, expert, replay) "
                                          "from a run into envs/data/policies/ENV with index.json")
    ppick.add_argument("env", help='the MuJoCo env whose SAC run to pick from (e.g. hopper)')
    ppick.add_argument("--run", required=True, help="a `policies train` run directory")
    ppick.add_argument("--replay-every", type=int, default=20_000, help="steps between the replay's checkpoints")
    ppick.add_argument("--dest", help="default: the committed policies directory")
    ppick.add_argument("--medium-step", type=int, help="the medium checkpoint's training step (default: the medium "
                       "the destination already holds from this run, else the return closest to a third of D4RL's "
                       "expert)")
    ppick.add_argument("--keep-medium", action="store_true", help="when this run's files at the held medium's or "
                       "replay's steps were rewritten (training resumed from before them), keep the destination's "
                       "files and take only the expert from the run")
    ppick.add_argument("--heldout-episodes", type=int, default=50, help="fresh episodes (other env seeds than "
                       "training's readings) on which medium and expert are read again, the score the card names "
                       "them by (0: none)")
    ppick.set_defaults(func=cmd_policies_pick)
    plist = psub_.add_parser("list", help="the committed behaviour policies and their cards")
    plist.set_defaults(func=cmd_policies_list)

    toy = sub.add_parser("toy", help="toy bandits with exact targets")
    tsub = toy.add_subparsers(dest="toy_command", required=True)
    fl = tsub.add_parser("floor", help="noise floor of the sample distances, per task and beta")
    fl.add_argument("--tasks", default=",".join(TASKS), help='comma-separated toy tasks')
    fl.add_argument("--betas", default="0,3,10,20", help='comma-separated tilt temperatures')
    fl.add_argument("--n", type=int, default=5000, help="samples per set")
    fl.add_argument("--repeats", type=int, default=5, help='draws of two exact samples per (task, beta)')
    fl.add_argument("--seed", type=int, default=0, help='seed of the draws')
    fl.add_argument("--out", default="results/toy_noise_floor.md", help='the report (its CSV is written beside it)')
    fl.set_defaults(func=cmd_toy_floor)
    for name, text, betas, func in (
            ("exactness", "CEP vs MSE energy guidance against exact targets", "3,10,20", cmd_toy_exactness),
            ("finetune", "DDPO fine-tuning beside CEP guidance against exact targets", "3,10", cmd_toy_finetune)):
        study = tsub.add_parser(name, help=text)
        study.add_argument("--tasks", default=",".join(TASKS), help='comma-separated toy tasks')
        study.add_argument("--betas", default=betas, help='comma-separated tilt temperatures')
        study.add_argument("--seeds", default="0,1,2,3,4", help='comma-separated seeds (one job per task and seed)')
        study.add_argument("--budget", default="default", help="training budget preset: default or test")
        study.add_argument("--workers", type=int, default=1, help="single-threaded worker processes")
        study.add_argument("--floor", default="results/toy_noise_floor.csv", help="noise floor table to show beside")
        study.add_argument("--out", default=f"results/{name}.md", help='the report (its CSV is written beside it)')
        if name == "finetune":
            study.add_argument("--from-rows", help="write the report again from earlier runs' rows (their CSVs, "
                               "comma-separated, e.g. results/finetune.csv,results/finetune_q0.csv: a row two make is "
                               "kept from the first), running nothing; the report names the code that made them")
            study.add_argument("--rewards", help="make only these rows: exact (the task's Q), learned (a Q0 fitted on "
                               "the data), or both (default), e.g. to add the Q0 rows to an earlier run's")
        study.set_defaults(func=func)

    fw = tsub.add_parser("flow", help="the flow-matching behaviour model (FQL's) against the exact behaviour")
    fw.add_argument("--tasks", default=",".join(TASKS), help='comma-separated toy tasks')
    fw.add_argument("--seeds", default="0,1,2", help='comma-separated seeds (one job per task and seed)')
    fw.add_argument("--budget", default="default", help="training budget preset: default or test")
    fw.add_argument("--workers", type=int, default=1, help="single-threaded worker processes")
    fw.add_argument("--out", default="results/flow_toy.md", help='the report (its CSV is written beside it)')
    fw.set_defaults(func=cmd_toy_flow)

    ct = tsub.add_parser("ctrl", help="CTRL beside classifier and classifier-free guidance against exact conditionals")
    ct.add_argument("--tasks", default=",".join(TASKS), help='comma-separated toy tasks')
    ct.add_argument("--seeds", default="0,1,2,3,4", help='comma-separated seeds (one job per task and seed)')
    ct.add_argument("--sizes", default="1000,10000,100000", help="labelled points per control")
    ct.add_argument("--budget", default="default", help="training budget preset: default or test")
    ct.add_argument("--workers", type=int, default=1, help="single-threaded worker processes")
    ct.add_argument("--out", default="results/ctrl.md", help='the report (its CSV is written beside it)')
    ct.add_argument("--redo", default="", help="methods (cfg) whose rows in the partial file made at another code "
                    "version are made again at this one, keeping the other rows (after a fix to that method)")
    ct.add_argument("--from-rows", help="write the report again from earlier runs' rows (results/ctrl.csv; several "
                    "CSVs comma-separated, each (task, seed) job's rows from the first that has it), running nothing; "
                    "the report names the code that made them")
    ct.set_defaults(func=cmd_toy_ctrl)

    dx = tsub.add_parser("dxmi", help="DxMI: few-step imitation, the beta Q tilt and the EBM's anomaly AUROC against "
                                      "exact samples")
    dx.add_argument("--tasks", default=",".join(TASKS), help='comma-separated toy tasks')
    dx.add_argument("--seeds", default="0,1,2,3,4", help='comma-separated seeds (one job per task and seed)')
    dx.add_argument("--budget", default="default", help="training budget preset: default, imitation-tilt (that tilt "
                    "alone, T = 4) or test")
    dx.add_argument("--workers", type=int, default=1, help="single-threaded worker processes")
    dx.add_argument("--finetune", default="results/finetune.csv", help="DDPO's rows to show beside (same targets)")
    dx.add_argument("--out", default="results/dxmi.md", help='the report (its CSV is written beside it)')
    dx.add_argument("--speed-repeats", type=int, default=10,
                    help="claim 4: timing repeats of the acting-speed measurement made after the jobs (0: skip it)")
    dx.add_argument("--from-rows", help="write the report again from earlier runs' rows (results/dxmi.csv; several "
                    "CSVs comma-separated, each (task, seed) job's rows from the first that has it), running no job "
                    "(the speed of claim 4 is measured again); the report names the code that made them")
    dx.set_defaults(func=cmd_toy_dxmi)

    def executor_args(sp, results: str = "runs", workers: int = 1):
        sp.add_argument("--results", default=results, help="results directory: run directories and results.sqlite")
        sp.add_argument("--executor", default="local", choices=["local", "ray"], help='where runs execute: local worker processes, or a Ray cluster (pip install -e ".[ray]")')
        sp.add_argument("--workers", type=int, default=workers, help="local: runs at once, each on its share of the cores")
        sp.add_argument("--address", help="ray: cluster address (auto, HOST:PORT); default starts a local Ray")
        sp.add_argument("--device", help="override every run's device (cpu, cuda)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
        sp.add_argument("--time-limit", metavar="DURATION",
                        help="local: start only runs projected (from the store's finished runs) to end within this "
                             "time from now (5400, 90m, 2h, 1h30m); the rest are deferred to the next call")
        sp.add_argument("--trust-env", action="store_true",
                        help="make a dataset's evaluation env even when its entry point is code from outside Gymnasium, "
                             "Gymnasium-Robotics, OGBench and diffbench (making it imports and runs that code)")

    bud = sub.add_parser("budgets", help="each algorithm at several training budgets with its learning curve, seeds "
                                         "apart: where its score stops moving and what a run costs")
    bud.add_argument("--algorithms", default="bc,qgpo", help="comma-separated registered names")
    bud.add_argument("--datasets", default="diffbench/hopper/medium-small-v0,diffbench/walker2d/medium-small-v0,"
                                          "diffbench/pointmaze/umaze-dense-small-v0", help="comma-separated datasets")
    bud.add_argument("--seeds", default="0,1,2", help='comma-separated seeds')
    bud.add_argument("--factors", default="0.5,1,2", help="budgets, as factors on the preset's step counts")
    bud.add_argument("--preset", default="cpu", help='the preset whose step budgets are scaled')
    bud.add_argument("--out", default="results/budgets.md", help='the report')
    bud.add_argument("--no-run", action="store_true", help="only write the table from the runs already in the store")
    executor_args(bud, results="runs/budgets", workers=2)
    bud.set_defaults(func=cmd_budgets)

    comp = sub.add_parser("competence", help="is each method trained to competence? diffusion BC against MLP BC and "
                                             "the data, guidance against s = 0, curves flat, cost per run")
    comp.add_argument("--results", default="runs", help="results directory of the runs to check")
    comp.add_argument("--out", default="results/competence.md", help='the report')
    comp.add_argument("--preset", help="only the runs at this preset's own budget (e.g. a budget study's store)")
    comp.add_argument("--notes", help="a Markdown list of what was tried where a check fails, printed under the table")
    comp.set_defaults(func=cmd_competence)

    crit = sub.add_parser("critics", help="fitted-Q evaluation of the behaviour policy with each algorithm's critic, "
                                          "against the data's Monte-Carlo returns")
    crit.add_argument("--algorithms", default="td3bc,iql,diffusion_ql,idql,qgpo", help='comma-separated algorithms whose critics are followed')
    crit.add_argument("--datasets", default="diffbench/hopper/medium-small-v0,diffbench/walker2d/medium-small-v0", help='comma-separated datasets')
    crit.add_argument("--seeds", default="0,1,2", help='comma-separated seeds')
    crit.add_argument("--steps", type=int, default=40_000, help="SARSA steps per critic")
    crit.add_argument("--preset", default="cpu", help='the preset the critics train at')
    crit.add_argument("--threads", type=int, default=1, help='torch threads per fit')
    crit.add_argument("--out", default="results/critics.md", help='the report')
    crit.add_argument("--rows", help="CSV the fits are kept in: fits already there are read back, not made again "
                                     "(e.g. results/critics/fqe.csv)")
    crit.add_argument("--no-run", action="store_true", help="only write the page from --rows and --scores")
    crit.add_argument("--scores", help="results directories (comma-separated) whose runs' scores are set beside MLP "
                                       "BC's in the page")
    crit.add_argument("--notes", help="a Markdown list of what was tried where a claim does not hold")
    crit.set_defaults(func=cmd_critics)

    quick = sub.add_parser("quick", help="the embedded default job: QGPO, its s = 0 ablation (diffusion BC), DDPO, "
                                         "CTRL and DxMI from the same behaviour model and critic, two seeds, on a "
                                         "small generated PointMaze; at most 15 minutes on two cores")
    quick.add_argument("--dataset", default=QUICK_DATASET, help="generated here if missing and generatable")
    quick.add_argument("--algorithms", default=",".join(QUICK_ALGORITHMS),
                       help="qgpo and the fine-tuning methods that share its stages")
    quick.add_argument("--preset", default="quick", help="every algorithm's preset (quick, cpu, paper, tiny)")
    quick.add_argument("--seeds", default="0,1", help='comma-separated seeds')
    quick.add_argument("--episodes", type=int, help="evaluation episodes per scale (default 100, as for mazes)")
    quick.add_argument("--guidance-scales", default="0,1,3", help="0, the ablation, is always included")
    quick.add_argument("--selection-episodes", type=int, default=QUICK_SELECTION,
                       help="held-out episodes per scale on which each qgpo seed chooses its scale")
    executor_args(quick, results="runs/quick", workers=2)
    quick.set_defaults(func=cmd_quick)

    rn = sub.add_parser("run", help="one run (algorithm, dataset, seed) into the results store; resumes if interrupted")
    rn.add_argument("algorithm", help='a registered algorithm (`diffbench algorithms` lists them)')
    rn.add_argument("dataset", help='a dataset id (`diffbench datasets list`) or a path to a Minari directory or D4RL HDF5 file')
    rn.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. beta=10 sampler.steps=20")
    rn.add_argument("--seed", type=int, default=0, help='seed of the run (initialisation, batches, sampling)')
    rn.add_argument("--preset", default="cpu", help="config preset: every algorithm has tiny, cpu and paper, some also "
                                                    "quick (`diffbench algorithms` lists each one's)")
    rn.add_argument("--episodes", type=int, help="final evaluation episodes (default 100 for maze and OGBench datasets, 10 others)")
    rn.add_argument("--guidance-scales", default="", help="guided algorithms only (`diffbench algorithms` marks them): "
                                                          "comma-separated scales to evaluate (default: the config's)")
    rn.add_argument("--eval-every", type=int, default=0, help="gradient steps between learning-curve evaluations")
    rn.add_argument("--curve-points", type=int, default=None,
                    help="learning-curve evaluations per policy-making stage, at k/N of its steps (default 10; 0 for "
                         "the tiny and quick presets), on other env seeds than the final evaluation's")
    rn.add_argument("--checkpoint-every", type=int, default=1000, help="gradient steps between mid-stage checkpoints")
    rn.add_argument("--eval-seed", type=int, default=0, help='first env seed of the evaluation episodes (episode i is reset with eval_seed + i)')
    rn.add_argument("--reward-transform", choices=["none", "locomotion", "antmaze"],
                    help="default: the dataset family's (locomotion x1000/(max-min return), antmaze r-1, else none)")
    rn.add_argument("--selection-episodes", type=int,
                    help="held-out episodes per scale that choose the guidance scale (default: as --episodes)")
    executor_args(rn)
    rn.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="algorithms x datasets x seeds x grid from a YAML spec; skips finished runs")
    sw.add_argument("spec", help="sweep YAML (see bench/harness/sweep.py)")
    sw.add_argument("--plan", action="store_true",
                    help="run nothing: say which runs the store already has finished, which are new, and for each "
                         "that differs from a stored run of the same algorithm, dataset and seed, what differs")
    sw.add_argument("--rerun", default="", help="algorithms (comma-separated) whose finished runs are made again, "
                                                "e.g. after a fix: their old files are set aside until each new run "
                                                "finishes (back if it fails or is cut), shared stages kept")
    sw.add_argument("--other-data", nargs="?", const="run", choices=("run", "skip"), default=None,
                    help="datasets whose local copy holds other bytes than the store's runs on them were trained on "
                         "(made on another kind of CPU, or regenerated): without this option the sweep names them and "
                         "runs nothing; 'run' (the option alone) starts their cells again on this copy; 'skip' makes "
                         "the rest of the spec and leaves them out")
    executor_args(sw)
    sw.set_defaults(func=cmd_sweep)

    res = sub.add_parser("results", help="the results store")
    rsub = res.add_subparsers(dest="results_command", required=True)
    exp = rsub.add_parser("export", help="every table of the store as CSV or Parquet")
    exp.add_argument("--results", default="runs", help='results directory holding results.sqlite')
    exp.add_argument("--format", default="csv", choices=["csv", "parquet"], help='file format of the exported tables')
    exp.add_argument("--out", help="output directory (default RESULTS/export)")
    exp.set_defaults(func=cmd_export)
    drop = rsub.add_parser("drop", help="delete runs from the store, e.g. those a fix superseded under another config "
                                        "(reports keep every config apart, so stale runs would stand beside new ones)")
    drop.add_argument("run_ids", nargs="+", metavar="RUN_ID", help="the run ids to drop (`diffbench results export` lists them)")
    drop.add_argument("--results", default="runs", help='results directory holding results.sqlite')
    drop.set_defaults(func=cmd_drop)
    st = rsub.add_parser("starts", help="evaluate the start (a fine-tuner's chain before fine-tuning) of runs made before "
                                        "runs evaluated it, from their run directories, where their final episodes "
                                        "reproduce exactly here")
    st.add_argument("--results", default="runs", help='results directory holding results.sqlite')
    st.add_argument("--dry-run", action="store_true", help="evaluate and say what would be added; record nothing")
    st.set_defaults(func=cmd_starts)

    def store_args(sp, reference: bool = True):
        sp.add_argument("--results", default="runs", help="results directory holding results.sqlite")
        if reference:
            sp.add_argument("--reference", help="directory of published reference CSVs (default results/reference)")
            sp.add_argument("--spec", help="a sweep spec: only its runs (by run id), not the store's probes and runs "
                                           "of earlier configs")

    rep = sub.add_parser("report", help="comparison report from the results store: tables, intervals, aggregates, plots")
    store_args(rep)
    rep.add_argument("--out", help="output directory (default RESULTS/report)")
    rep.add_argument("--format", default="md,html,csv,tex", help="comma-separated: md, html, csv, tex")
    rep.set_defaults(func=cmd_report)

    lb = sub.add_parser("leaderboard", help="rank entries by an aggregate metric into LEADERBOARD.md and .html")
    store_args(lb)
    lb.add_argument("--out", help="where LEADERBOARD.md (and .html) go (default RESULTS/LEADERBOARD.md, beside the store; "
                    "the committed results/LEADERBOARD.md changes only when named here)")
    lb.add_argument("--metric", default="IQM", help="IQM, mean, median or optimality gap")
    lb.add_argument("--readme", help="also rewrite this file's headline block (between <!-- headline:start --> and "
                                     "<!-- headline:end -->): per domain, the top entries with intervals and cost")
    lb.add_argument("--top", type=int, default=3, help="with --readme: entries shown per domain (more on a shared rank)")
    lb.set_defaults(func=cmd_leaderboard)

    fi = sub.add_parser("findings", help="FINDINGS.md: what the leaderboard says (tie groups, gains over diffusion BC, "
                                         "P(X > IQL), the published order), from the store, with the hand-written "
                                         "notes on checked cells")
    store_args(fi)
    fi.add_argument("--out", help="where FINDINGS.md goes (default RESULTS/FINDINGS.md)")
    fi.add_argument("--checked", help="hand-written Markdown on the cells that looked wrong and what was run to check "
                                      "them, included as it stands")
    fi.add_argument("--metric", default="IQM", help="IQM, mean, median or optimality gap")
    fi.set_defaults(func=cmd_findings)

    cmp_ = sub.add_parser("compare", help="two algorithms, entries or runs side by side on their shared datasets; or "
                                          "with --spec, every algorithm of a sweep against one baseline by paired "
                                          "per-seed intervals")
    cmp_.add_argument("a", nargs="?", help="an entry (as the report names it), an algorithm or a run id")
    cmp_.add_argument("b", nargs="?", help='the other entry, algorithm or run id')
    cmp_.add_argument("--spec", help="a sweep spec: its runs' algorithms against --baseline, dataset by dataset")
    cmp_.add_argument("--baseline", default="qgpo", help="with --spec: the algorithm every other is paired against")
    cmp_.add_argument("--speed", help="with --spec: a `diffbench perf acting` CSV whose batch-10 rates to show")
    cmp_.add_argument("--out", help="with --spec: the markdown report to write (its CSV beside it); default: print")
    store_args(cmp_, reference=False)
    cmp_.set_defaults(func=cmd_compare)

    perf = sub.add_parser("perf", help="performance benchmarks")
    psub = perf.add_subparsers(dest="perf_command", required=True)
    pq = psub.add_parser("qgpo", help="QGPO step times and guided sampling throughput, official network sizes")
    pq.add_argument("--device", default=None, help="comma-separated devices (default: cuda when available, else cpu)")
    pq.add_argument("--repeats", type=int, default=10, help='timed repetitions (the median is reported)')
    pq.add_argument("--out", default="results/perf.md", help="report file ('' to print only)")
    pq.add_argument("--official", help="a checkout of the official QGPO code (ChenDRAG/CEP-energy-guided-diffusion), "
                                       "timed in the same run on the same shapes")
    pq.add_argument("--sweep", help="a sweep's results directory: adds what its shared stages saved")
    pq.set_defaults(func=cmd_perf)
    ps = psub.add_parser("samplers", help="acting throughput of every policy's sampler (QGPO, DDPO/CTRL, DxMI) in one run")
    ps.add_argument("--device", default=None, help="comma-separated devices (default: cuda when available, else cpu)")
    ps.add_argument("--repeats", type=int, default=10, help='timed repetitions (the median is reported)')
    ps.add_argument("--out", default="results/perf_samplers.md", help="report file ('' to print only)")
    ps.set_defaults(func=cmd_perf_samplers)
    pa = psub.add_parser("acting", help="acting throughput of every registered algorithm at a preset, through its own "
                                        "act, in one run")
    pa.add_argument("--algorithms", default="", help="comma-separated algorithms (default: every registered one)")
    pa.add_argument("--preset", default="cpu", help="the preset whose networks and acting settings are timed")
    pa.add_argument("--device", default="cpu", help="torch device")
    pa.add_argument("--repeats", type=int, default=20, help="timed calls per algorithm and batch (x10 at batch 10)")
    pa.add_argument("--out", default="results/perf_acting.md", help="report file, its CSV beside it ('' to print only)")
    pa.set_defaults(func=cmd_perf_acting)
    pw = psub.add_parser("sweep", help="where a sweep's core-hours go: per algorithm and per stage, from its runs in "
                                       "the store")
    pw.add_argument("spec", help="sweep YAML whose runs to account for")
    pw.add_argument("--results", default="runs", help="results directory holding results.sqlite")
    pw.add_argument("--out", default="results/sweep_cost.md", help="report file, its per-run CSV beside it")
    pw.add_argument("--speedup", help="a `diffbench perf speedup` CSV: adds the sweep's cost before that change, "
                                      "each algorithm's categories times the measured before/after ratios")
    pw.set_defaults(func=cmd_perf_sweep)
    pu = psub.add_parser("speedup", help="a sweep's cost before and after a code change: every algorithm of SPEC run "
                                         "at a fraction of its budget with the code at --before and with this "
                                         "checkout's, in turn, on one machine; ratios per stage, and whether the "
                                         "numbers agree")
    pu.add_argument("spec", help="sweep YAML whose algorithms, preset and protocol to probe")
    pu.add_argument("--before", help="a commit of this repository: the code before the change (a worktree of it "
                                     "is made under --workdir)")
    pu.add_argument("--before-tree", help="instead of --before: a checkout to run as the code before")
    pu.add_argument("--dataset", help="the dataset to probe on (default: the spec's first)")
    pu.add_argument("--fraction", type=float, default=0.03, help="of each budget field of the preset")
    pu.add_argument("--workdir", default="runs/speedup", help="the two versions' stores (a rerun resumes them)")
    pu.add_argument("--out", default="results/sweep_speedup.md", help="report file, its CSV beside it")
    pu.set_defaults(func=cmd_perf_speedup)
    pk = psub.add_parser("kernels", help="training steps of the Mish networks (Diffusion-QL, DAC, IDQL's behaviour) "
                                         "with the fused Mish beside the eager one, in one run")
    pk.add_argument("--algorithms", default="diffusion_ql,dac,idql", help="comma-separated algorithms")
    pk.add_argument("--preset", default="cpu", help="the preset whose networks and batch are timed")
    pk.add_argument("--device", default="cpu", help="torch device")
    pk.add_argument("--steps", type=int, default=20, help="gradient steps per timed call")
    pk.add_argument("--repeats", type=int, default=5, help="timed calls per kernel (the median is reported)")
    pk.add_argument("--out", default="results/perf_kernels.md", help="report file ('' to print only)")
    pk.set_defaults(func=cmd_perf_kernels)
    pl = psub.add_parser("layout", help="N single-threaded workers against one worker on N threads: each "
                                        "algorithm's costliest stage both ways, on an otherwise idle machine")
    pl.add_argument("--algorithms", default="dac,fql,diffusion_ql,idql,td3bc", help="comma-separated algorithms")
    pl.add_argument("--preset", default="cpu", help="the preset whose networks and batch are timed")
    pl.add_argument("--steps", type=int, default=30, help="gradient steps each worker times")
    pl.add_argument("--cores", type=int, default=None, help="N (default: the machine's logical CPUs)")
    pl.add_argument("--out", default="results/perf_layout.md", help="report file ('' to print only)")
    pl.set_defaults(func=cmd_perf_layout)
    pc = psub.add_parser("sac", help="SAC training steps/s: stable-baselines3 beside sbx (when installed), one run")
    pc.add_argument("--envs", default="halfcheetah,hopper,walker2d", help='comma-separated MuJoCo envs')
    pc.add_argument("--steps", type=int, default=3000, help="timed steps per library and env")
    pc.add_argument("--out", default="results/perf_sac.md", help="report file ('' to print only)")
    pc.set_defaults(func=cmd_perf_sac)
    pcr = psub.add_parser("critic", help="the official CEP critic beside ours: same dataset, support actions and "
                                         "batches; does Q_0 stay within what the rewards allow?")
    pcr.add_argument("--official", required=True, help="a checkout of the official QGPO code")
    pcr.add_argument("--support", required=True, help="a support stage checkpoint (a qgpo run's support.pt, or "
                                                      "shared-stages/.../support-*.pt): it names its dataset")
    pcr.add_argument("--steps", type=int, default=30_000, help='gradient steps of the critic')
    pcr.add_argument("--every", type=int, default=2_500, help='steps between checks of the critic')
    pcr.add_argument("--out", default="results/critic_official.md", help="report file ('' to print only)")
    pcr.set_defaults(func=cmd_perf_critic)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    # `kill PID` stops a run or sweep as Ctrl-C does: the finished work kept, the rest resumable. A job started in
    # the background (`nohup diffbench sweep ... &`) ignores SIGINT, so SIGTERM is the signal that reaches it
    before = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, before)


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # KEY=VALUE overrides may come after options: `run qgpo D --seed 1 beta=10`
        if getattr(args, "overrides", None) is None or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    args.argv = argv
    if getattr(args, "trust_env", False):  # read where envs are made, in this process and the workers it starts
        from envs.dataset import TRUST_ENV_VARIABLE

        os.environ[TRUST_ENV_VARIABLE] = "1"
    try:
        return args.func(args)
    except (DatasetError, ConfigError, CheckpointError) as exc:
        print(f"diffbench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused a path: too long a name, no space, not permitted
        if exc.errno is None:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        hint = ("; a folder or file name may be at most 255 bytes, use a shorter one" if exc.errno == errno.ENAMETOOLONG
                else "")
        print(f"diffbench: error: {exc.strerror}{where}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffbench: interrupted; finished work is kept, run the same command again to go on", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
