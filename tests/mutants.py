"""Mutation checks: does the suite see the wiring? Each mutant is one small edit that breaks an algorithm's
bookkeeping while everything still runs; the named tests must fail on it.

    python -m tests.mutants [NAME ...]      # every mutant, or those named; exit 1 if any survives

Each mutant is applied to a copy of the tracked tree in a temporary folder (the checkout is never edited),
and its tests run there with pytest -x.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    why: str


MUTANTS = (
    Mutant("ddpo-no-later-kl", "policies/algorithms/finetune.py",
           "return beta * rewards[None] - later", "return beta * rewards[None] - 0 * later",
           ("tests/test_finetune.py",), "returns-to-go ignore the later steps' KLs"),
    Mutant("ddpo-own-kl", "policies/algorithms/finetune.py",
           "later = traj.kl.flip(0).cumsum(0).flip(0) - traj.kl", "later = traj.kl.flip(0).cumsum(0).flip(0)",
           ("tests/test_finetune.py",), "a step's own KL is counted in its return"),
    Mutant("ddpo-group-mean", "policies/algorithms/finetune.py",
           "* (group / (group - 1))", "* 1.0",
           ("tests/test_finetune.py",), "the group mean includes the chain itself (beta acts as beta (1 - 1/G))"),
    Mutant("ppo-max", "policies/algorithms/ddpo.py",
           "pg = -torch.minimum(", "pg = -torch.maximum(",
           ("tests/test_finetune.py",), "PPO's pessimistic min replaced by max"),
    Mutant("ctrl-kl-no-path-gradient", "policies/algorithms/finetune.py",
           "kls.append(step_kl(mean, self.means(self.pretrained, x, k, states), stds[k]))",
           "kls.append(step_kl(self.means(self.model, x.detach(), k, states), "
           "self.means(self.pretrained, x.detach(), k, states), stds[k]))",
           ("tests/test_ctrl.py",), "CTRL's KL without its gradient through x_k"),
    # issue 36: the offline wiring of the fine-tuning methods and baselines
    Mutant("finetune-reward-negated", "policies/algorithms/finetune.py",
           "return lambda s, a: q(s, torch.clamp(a, low, high))", "return lambda s, a: -q(s, torch.clamp(a, low, high))",
           ("tests/test_finetune.py", "tests/test_dxmi.py", "tests/test_contract.py"),
           "DDPO's and DxMI's reward Q_0 negated"),
    Mutant("dxmi-terminal-sign", "policies/algorithms/dxmi.py",
           "terminal = lambda s, a: -cfg.beta * reward(s, a)", "terminal = lambda s, a: cfg.beta * reward(s, a)",
           ("tests/test_dxmi.py",), "DxMI's terminal cost +beta Q_0 (the tilt away from Q_0)"),
    Mutant("ctrl-acting-label", "policies/algorithms/ctrl.py",
           "len(self.classes)), self.config.act_label, device",
           "len(self.classes)), 1 - self.config.act_label, device",
           ("tests/test_ctrl.py",), "CTRL acts on the other label than the one asked"),
    Mutant("td3bc-no-terminals", "policies/algorithms/td3bc.py",
           "y = r + cfg.gamma * (1 - d) * critic_t(s2, a2)", "y = r + cfg.gamma * critic_t(s2, a2)",
           ("tests/test_td3bc.py", "tests/test_critics.py"), "TD3+BC bootstraps through terminals"),
    Mutant("iql-acts-unnormalised", "policies/algorithms/iql.py",
           "self.actor.mean(self.critic.norm(self.observations(observations)))",
           "self.actor.mean(self.observations(observations))",
           ("tests/test_iql.py",), "IQL acts on unnormalised states (trained on normalised ones)"),
    Mutant("iql-weight-sign", "policies/algorithms/iql.py",
           "weights = torch.exp(cfg.temperature * adv)", "weights = torch.exp(-cfg.temperature * adv)",
           ("tests/test_iql.py",), "IQL's advantage weight exp(-beta adv)"),
    # issue 37: the one-step and flow policies
    Mutant("srpo-guidance-sign", "policies/algorithms/srpo.py",
           "- beta * (q_grad * actions).sum(-1)).mean()", "+ beta * (q_grad * actions).sum(-1)).mean()",
           ("tests/test_srpo.py",), "SRPO's policy descends Q"),
    Mutant("srpo-weight", "policies/algorithms/srpo.py",
           '{"vds": lambda alpha, sigma: sigma ** 2,', '{"vds": lambda alpha, sigma: sigma,',
           ("tests/test_srpo.py",), "SRPO's VDS weighting sigma_t instead of sigma_t^2"),
    Mutant("srpo-baseline-sign", "policies/algorithms/srpo.py",
           "eps = eps - z", "eps = eps + z",
           ("tests/test_srpo.py",), "SRPO's noise baseline adds the injected noise instead of removing it"),
    Mutant("srpo-critic-unseeded", "policies/algorithms/srpo.py",
           "with reseeded(cfg.seed):  # as IDQL builds it, first", "if True:  # as IDQL builds it, first",
           ("tests/test_srpo.py",), "SRPO's critic starts from other weights than IDQL's (the shared stage differs)"),
    # issue 38: speed without changing a number
    Mutant("mish-gradient", "policies/core/networks.py",
           "slope = (u + 1.0).mul_(u).mul_(inv).mul_(inv).mul_(4.0).mul_(x)",
           "slope = (u + 1.0).mul_(u).mul_(inv).mul_(inv).mul_(2.0).mul_(x)",
           ("tests/test_networks_mish.py",), "the one-exp Mish's gradient is off by half its slope term"),
    Mutant("fql-critic-in-actor-loss", "policies/algorithms/fql.py",
           "    with frozen(critic):", "    if True:",
           ("tests/test_fql.py",), "FQL's actor loss moves the critic's weights"),
    Mutant("fql-no-terminals", "policies/algorithms/fql.py",
           "y = r + cfg.gamma * (1 - d) * next_q", "y = r + cfg.gamma * next_q",
           ("tests/test_critics.py::test_each_critic_stops_at_terminals_and_bootstraps_through_time_limits[fql]",),
           "FQL bootstraps through terminals"),
    Mutant("dac-lcb-sign", "policies/algorithms/dac.py",
           "return v.mean(0) - cfg.rho * v.std(0, unbiased=False)", "return v.mean(0) + cfg.rho * v.std(0, unbiased=False)",
           ("tests/test_dac.py",), "DAC's backup takes the upper confidence bound"),
    Mutant("dac-guidance-sign", "policies/algorithms/dac.py",
           "return eta * bc + guidance, bc.detach()", "return eta * bc - guidance, bc.detach()",
           ("tests/test_dac.py",), "DAC's noise target shifted toward lower Q"),
    Mutant("flow-velocity-reversed", "policies/core/flow.py",
           "(self.net(xt, t, states) - (actions - x0))", "(self.net(xt, t, states) - (x0 - actions))",
           ("tests/test_flow.py",), "the flow's velocity regresses x_0 - x_1 (it carries the data to noise)"),
)


def tracked_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def failures(tree: Path, tests: tuple[str, ...]) -> list[str] | None:
    """None when the tests pass, else the failing tests pytest -x names (the first failure)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rf", *tests],
                            cwd=tree, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    return [line.split()[1] for line in result.stdout.splitlines() if line.startswith("FAILED ")] or ["(no test named)"]


def passes(tree: Path, tests: tuple[str, ...]) -> bool:
    return failures(tree, tests) is None


def check(mutant: Mutant) -> list[str] | None:
    """The tests that fail on the mutant (it is killed), or None (it survived)."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutant.name}-") as tmp:
        tree = Path(tmp)
        tracked_copy(tree)
        target = tree / mutant.path
        text = target.read_text()
        if text.count(mutant.old) != 1:
            raise SystemExit(f"mutant {mutant.name}: {mutant.old!r} is not found exactly once in {mutant.path}; "
                             "update tests/mutants.py to the code")
        target.write_text(text.replace(mutant.old, mutant.new))
        return failures(tree, mutant.tests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"mutants to check (default all: {', '.join(m.name for m in MUTANTS)})")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutant(s) {', '.join(sorted(unknown))}; known: {', '.join(m.name for m in MUTANTS)}")
    tests = tuple(sorted({t for m in chosen for t in m.tests}))
    with tempfile.TemporaryDirectory(prefix="mutant-none-") as tmp:  # a mutant is only killed by tests that pass
        tracked_copy(Path(tmp))
        if not passes(Path(tmp), tests):
            raise SystemExit(f"the unmutated tree fails {' '.join(tests)}: fix that first (pytest {' '.join(tests)})")
    print(f"unmutated: {' '.join(tests)} pass", flush=True)
    survived = []
    for mutant in chosen:
        failed = check(mutant)
        print(f"{'killed  ' if failed else 'SURVIVED'} {mutant.name}: {mutant.why}"
              + (f" (by {', '.join(failed)})" if failed else ""), flush=True)
        survived += [] if failed else [mutant.name]
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
