"""Does a diffusion policy lose to MLP BC because it samples the data's action noise back in? A trained run acting
with the mean of K of its own draws per state, on the final evaluation's episodes, beside its one-draw score.

MLP BC regresses onto the data's conditional mean and acts with it; a diffusion policy samples the conditional
distribution, the behaviour policy's exploration noise included. If the mean of K draws (K large: close to the
conditional mean) scores as MLP BC does, the gap is the noise, not an under-trained model. K = 1 is the run's own
acting, on the same env seeds and noise stream as its final evaluation: the row to read the others against.

    python -m bench.studies.mean_action RUN_DIR [RUN_DIR ...] [--draws 1,16] [--episodes 10] [--scale 0]
        [--acting candidates=1]

`--acting` changes settings that only act (e.g. IDQL's or Diffusion-QL's candidates: with one, the policy is its
behaviour model alone, the critic's choice left out), never one a training stage depends on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from bench.harness.evaluation import evaluate
from envs import catalog
from policies import registry
from policies.core.checkpoint import load_checkpoint


class MeanOf:
    """A policy acting with the mean of `draws` of its own actions per state (at `scale`, for a guided one)."""

    def __init__(self, algo: Any, draws: int, scale: float | None = None):
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        self.algo, self.draws, self.scale = algo, draws, scale

    def act(self, observations: np.ndarray) -> np.ndarray:
        rep = np.repeat(observations, self.draws, axis=0)
        acted = self.algo.act(rep) if self.scale is None else self.algo.act(rep, guidance_scale=self.scale)
        return acted.reshape(len(observations), self.draws, -1).mean(axis=1)

    def seed(self, seed: int) -> None:
        self.algo.seed(seed)


def load_run(workdir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """A finished run's policy (its algorithm named by the run's spec line in config.json, "ALGORITHM DATASET seed
    N (...)"), its dataset as the run trained on it, and the run's protocol."""
    workdir = Path(workdir)
    if not (workdir / "config.json").is_file():
        raise FileNotFoundError(f"{workdir} has no config.json; give a run directory the harness made "
                                "(RESULTS/ALGORITHM/DATASET/RUN)")
    config = json.loads((workdir / "config.json").read_text())
    return (*trained_policy(workdir, registry.get(config["spec"].split()[0])), config.get("protocol", {}))


def trained_policy(workdir: Path, cls: Any) -> tuple[Any, Any]:
    """A finished run's policy, of algorithm class `cls`, on CPU, with the dataset as the run trained on it (the
    reward transform its last policy stage's checkpoint records)."""
    last = cls.policy_stages[-1]
    tag = load_checkpoint(Path(workdir) / f"{last}.pt", algorithm=("shared", cls.name), stage=last)["dataset"]
    ds = catalog.load_dataset(tag["id"], reward_transform=tag.get("reward_transform") or "none")
    return cls.load(workdir, ds, device="cpu"), ds


def with_acting(algo: Any, acting: dict[str, Any]) -> Any:
    """`algo` acting with `acting`'s settings; a setting a training stage depends on is refused, since changing it
    would describe another run than the one trained."""
    trained = {f for fields in algo.stage_fields.values() for f in fields}
    known = algo.config.to_dict()
    for key in acting:
        if key not in known:
            raise ValueError(f"{algo.name} has no setting {key!r}; its settings: {', '.join(sorted(known))}")
        if key in trained:
            raise ValueError(f"{key} is a training setting of {algo.name} (a stage depends on it); --acting changes "
                             "only settings used when acting")
    algo.config = dataclasses.replace(algo.config, **{k: type(known[k])(v) for k, v in acting.items()})
    return algo


def probe(workdir: Path, draws: Sequence[int] = (1, 16), episodes: int | None = None,
          scale: float | None = 0.0, acting: dict[str, Any] | None = None) -> pd.DataFrame:
    """One row per K: the score acting with the mean of K draws on the final evaluation's env seeds."""
    algo, ds, protocol = load_run(workdir)
    algo = with_acting(algo, acting or {})
    episodes = episodes or int(protocol.get("episodes", 10))
    seed = int(protocol.get("eval_seed", 0))
    guided = "guidance_scale" in algo.config.to_dict()
    rows = []
    for k in draws:
        result = evaluate(MeanOf(algo, k, scale if guided else None), ds, episodes=episodes, seed=seed)
        rows.append({"draws averaged": k, "score": float(result.normalized.mean()) if result.normalized is not None
                     else np.nan, "std over episodes": float(result.normalized.std()) if result.normalized is not None
                     else np.nan, "return": float(result.returns.mean()), "episode length": float(result.lengths.mean()),
                     "episodes": episodes})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    from bench.reports.render import markdown_table

    parser = argparse.ArgumentParser(prog="python -m bench.studies.mean_action", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished run directories (RESULTS/ALGORITHM/DATASET/RUN)")
    parser.add_argument("--draws", default="1,16", help="K values: draws averaged per state (1: the run's own acting)")
    parser.add_argument("--episodes", type=int, help="default: the run's final evaluation's")
    parser.add_argument("--scale", type=float, default=0.0, help="guidance scale, for a guided algorithm")
    parser.add_argument("--acting", action="append", default=[], metavar="KEY=VALUE",
                        help="an acting setting to change, e.g. candidates=1 (repeatable)")
    parser.add_argument("--out", help="also write the tables to this Markdown page, with the command that made them")
    args = parser.parse_args(argv)
    draws = [int(k) for k in args.draws.split(",") if k]
    bad = [a for a in args.acting if "=" not in a]
    if bad:
        parser.error(f"--acting takes KEY=VALUE, got {bad[0]!r}")
    acting = dict(a.split("=", 1) for a in args.acting)
    lines = []
    for run in args.runs:
        table = probe(Path(run), draws, args.episodes, args.scale, acting)
        lines += [f"## {run}" + (f" ({', '.join(args.acting)})" if args.acting else ""), "",
                  markdown_table(table.round(2)), ""]
        print("\n".join(lines[-4:]), flush=True)
    if args.out:
        from bench.harness.provenance import code_version, hardware
        from bench.reports.render import study_page, write_page

        command = "python -m bench.studies.mean_action " + " ".join(argv if argv is not None else sys.argv[1:])
        write_page(Path(args.out), study_page("Acting with the mean of a run's own draws", command, code_version(),
                                              hardware(), __doc__.split("\n\n")[1].replace("\n", " ")) + lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
