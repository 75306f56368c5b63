"""Typed configs: overrides from key=value and YAML are checked key by key, with errors that name the key."""

import dataclasses
from dataclasses import dataclass, field

import pytest

from policies import config as cfg
from policies.errors import ConfigError
from policies.core.samplers import SamplerSpec


@dataclass(frozen=True)
class Example:
    lr: float = 1e-3
    steps: int = 10
    widths: tuple[int, ...] = (4, 2)
    name: str = "a"
    flag: bool = False
    limit: int | None = None
    sampler: SamplerSpec = SamplerSpec()
    extra: dict = field(default_factory=dict)


def test_overrides_are_coerced_by_field_type():
    got = cfg.apply(Example(), cfg.parse_assignments(["lr=1e-4", "steps=20", "widths=[8, 4, 2]", "flag=true",
                                                      "limit=5", "sampler.steps=7", "extra={a: 1}"]))
    assert got == Example(lr=1e-4, steps=20, widths=(8, 4, 2), flag=True, limit=5, sampler=SamplerSpec(steps=7),
                          extra={"a": 1})
    assert isinstance(got.lr, float) and isinstance(got.widths, tuple)
    # nested mappings and dotted keys are the same thing
    assert cfg.apply(Example(), {"sampler": {"steps": 7, "order": 1}}).sampler == SamplerSpec(steps=7, order=1)
    assert cfg.apply(Example(), {"steps": 3.0}).steps == 3  # a whole float is an integer
    assert cfg.apply(Example(), {"limit": None}).limit is None


@pytest.mark.parametrize("overrides, message", [
    ({"stepz": 3}, "unknown config key 'stepz'; known keys: extra, flag, limit, lr, name, sampler, steps, widths"),
    ({"sampler.stepz": 3}, "unknown config key 'sampler.stepz'; known keys of sampler: eta, method, name, order, steps, t_end"),
    ({"steps": "many"}, "steps must be an integer, got 'many'"),
    ({"steps": 2.5}, "steps must be an integer, got 2.5"),
    ({"lr": True}, "lr must be a number, got True"),
    ({"flag": "yes please"}, "flag must be true or false"),
    ({"widths": [4, "x"]}, r"widths\[1\] must be an integer"),
    ({"limit": "x"}, "limit must be an integer or null, got 'x'"),
    ({"sampler": 3}, "sampler must be a mapping of SamplerSpec fields"),
    ({"sampler.name": "rk4"}, "unknown sampler 'rk4'; choose one of dpm_solver, ddim, sde"),
    ({"lr": "nan"}, "lr must be a number, got 'nan'"),
])
def test_bad_overrides_name_the_key_and_what_it_accepts(overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg.apply(Example(), overrides)


def test_assignments_and_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected key=value, got 'beta'"):
        cfg.parse_assignments(["beta"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("algorithms: [qgpo\nseeds: [0]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line \d+, column \d+"):
        cfg.load_yaml(bad)
    with pytest.raises(ConfigError, match="cannot read .*missing.yaml"):
        cfg.load_yaml(tmp_path / "missing.yaml")
    twice = tmp_path / "twice.yaml"
    twice.write_text("seeds: [0]\nalgorithms: [qgpo]\nseeds: [1, 2]\n")  # plain YAML would keep [1, 2] silently
    with pytest.raises(ConfigError, match=r"twice.yaml is not valid YAML at line 3, column 1: the key 'seeds' is given twice"):
        cfg.load_yaml(twice)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("algorithms: [qgpo]  # café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.yaml is not UTF-8 text"):
        cfg.load_yaml(latin)
    ok = tmp_path / "ok.yaml"
    ok.write_text("a: {b: 1, c: [1, 2]}\nd: !!python/name:os.system ''\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # no tag that builds a Python object
        cfg.load_yaml(ok)


def test_dict_round_trip_and_hash_are_stable():
    e = Example(widths=(3,), sampler=SamplerSpec(name="ddim", eta=1.0))
    assert cfg.from_dict(Example, cfg.to_dict(e)) == e
    assert cfg.config_hash("qgpo", cfg.to_dict(e)) == cfg.config_hash("qgpo", cfg.to_dict(dataclasses.replace(e)))
    assert cfg.config_hash("qgpo", cfg.to_dict(e)) != cfg.config_hash("qgpo", cfg.to_dict(Example()))


def test_a_later_setting_at_its_earlier_value_leaves_run_and_stage_names_alone():
    """Stores and checkpoints made before `behaviour_lr_schedule` existed keep resuming; the other value names
    new runs and new behaviour stages."""
    from bench.harness.runner import RunSpec
    from policies.algorithms.qgpo import QGPO

    before = {"algorithm": "qgpo", "dataset": "toy/bandit-ring-v0", "seed": 0, "preset": "tiny"}
    plain, cosine = RunSpec(**before), RunSpec(**before, overrides={"behaviour_lr_schedule": "cosine"})
    assert "behaviour_lr_schedule" in plain.config().to_dict()  # stored with every run, for the record
    assert "behaviour_lr_schedule" not in plain.config().identity()
    legacy = {k: v for k, v in plain.config().to_dict().items() if k != "behaviour_lr_schedule"}
    assert plain.config().identity() == legacy
    assert plain.run_id() != cosine.run_id()
    def made(spec: RunSpec) -> QGPO:
        return QGPO(spec.config(), observation_dim=3, action_dim=2, action_low=-1.0, action_high=1.0)

    assert "behaviour_lr_schedule" not in made(plain).fingerprint("behaviour")
    assert made(cosine).fingerprint("behaviour")["behaviour_lr_schedule"] == "cosine"
    with pytest.raises(ConfigError, match="behaviour_lr_schedule"):
        RunSpec(**before, overrides={"behaviour_lr_schedule": "linear"}).config()
