"""Config schema: every shipped config validates; unknown keys and wrong types are named."""

import re

import pytest

from genjax.config import ConfigDict, ConfigError, base_config, load, lookup, validate
from tests.conftest import CONFIGS


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.py")), ids=lambda p: p.stem)
def test_shipped_configs_validate(path):
    c = load(path)
    for key in ("seed", "train.steps", "train.batch_size", "train.seq_len", "mesh.data",
                "mesh.fsdp", "mesh.tensor", "checkpoint.every"):
        node = c
        for part in key.split("."):
            node = node[part]


def test_unknown_key_named():
    c = base_config()
    c.optim.learning_rate = 1.0
    with pytest.raises(ConfigError, match="unknown config key 'optim.learning_rate'"):
        validate(c)


def test_wrong_type_named():
    raw = base_config().to_dict()
    raw["train"]["batch_size"] = "32"
    with pytest.raises(ConfigError, match="'train.batch_size' expects int"):
        validate(ConfigDict(raw))


def test_wrong_type_in_config_file_named(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from genjax.config import base_config\n"
                   "def get_config():\n    c = base_config()\n    c.train.batch_size = 'x'\n"
                   "    return c\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load(bad)


def test_float_accepts_int_but_int_rejects_bool():
    c = base_config()
    c.optim.lr = 1
    validate(c)
    c.train.steps = True
    with pytest.raises(ConfigError, match="train.steps"):
        validate(c)


def test_every_key_has_a_description():
    from genjax.config import DESCRIPTIONS, leaves

    missing = [k for k in leaves(base_config()) if k not in DESCRIPTIONS]
    assert not missing, f"add these keys to genjax.config.DESCRIPTIONS: {missing}"
    assert not set(DESCRIPTIONS) - set(leaves(base_config())), "descriptions of removed keys"


@pytest.mark.parametrize("key,value,message", [
    ("data.heldout_fraction", 0.0, "'data.heldout_fraction' must be in (0, 1), got 0.0"),
    ("data.heldout_fraction", 1.0, "'data.heldout_fraction' must be in (0, 1), got 1.0"),
    ("optim.end_lr_fraction", 1.5, "'optim.end_lr_fraction' must be in [0, 1], got 1.5"),
    ("optim.b2", 1.0, "'optim.b2' must be in [0, 1), got 1.0"),
    ("hooks.heldout.every", 0, "'hooks.heldout.every' must be >= 1, got 0"),
    ("hooks.probes.every", 0, "'hooks.probes.every' must be >= 1, got 0"),
    ("hooks.memorization.every", -2, "'hooks.memorization.every' must be >= 1, got -2"),
    ("hooks.train_domains.every", 0, "'hooks.train_domains.every' must be >= 1, got 0"),
    ("log.every", 0, "'log.every' must be >= 1, got 0"),
    ("checkpoint.every", 0, "'checkpoint.every' must be >= 1, got 0"),
    ("checkpoint.keep", 0, "'checkpoint.keep' must be >= 1, got 0"),
    ("model.vocab_size", 0, "'model.vocab_size' must be >= 1, got 0"),
    ("hooks.probes.answer_len", -1, "'hooks.probes.answer_len' must be >= 0, got -1"),
    ("hooks.probes.seeds", 0, "'hooks.probes.seeds' must be >= 1, got 0"),
    ("seed", -1, "'seed' must be >= 0, got -1"),
    ("optim.lr", 0.0, "'optim.lr' must be positive, got 0.0"),
    ("log.progress", "fancy", "'log.progress' must be one of auto | bar | lines | none"),
    ("model.remat", "sometimes", "'model.remat' must be one of none | full | dots_saveable"),
    ("model.attention", "flash", "'model.attention' must be one of auto | xla | splash"),
])
def test_ranges_are_checked_at_config_time(key, value, message):
    c = base_config()
    section, _, name = key.rpartition(".")
    (c if not section else lookup(c, section))[name] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(c)


def test_modulus_with_no_heldout_problem_fails_at_data_build(tiny_config):
    from genjax.data import build_data
    from genjax.data.sources import DataError

    tiny_config.data.domains.arith.modulus = 3  # 9 problems, none held out at 0.1
    with pytest.raises(DataError, match=re.escape(
            "domain 'arith' (modular_arithmetic): modulus 3 is too small at "
            "data.heldout_fraction=0.1: held-out problems cover 0 answer(s) (2 needed)")):
        build_data(tiny_config)  # sampling a held-out problem would never return
    tiny_config.data.domains = ConfigDict({"mod": {"kind": "modular_symbols", "modulus": 3}})
    tiny_config.data.heldout_fraction = 0.01
    with pytest.raises(DataError, match="has no held-out problem"):
        build_data(tiny_config)


def test_integer_metrics_are_refused_clearly():
    from genjax.hooks.base import MetricSpec

    with pytest.raises(ValueError, match=r"metric skipped: dtype 'int32' is not supported"):
        MetricSpec("skipped", dtype="int32")
    assert MetricSpec("ok", dtype="float64").dtype == "float64"


@pytest.mark.parametrize("body,message", [
    ("def get_config(:\n", r"bad.py:1: SyntaxError"),
    ("def get_config():\n    return 1 / 0\n", r"bad.py:2: ZeroDivisionError: division by zero"),
    ("import nosuchmodule\n", r"bad.py:1: ModuleNotFoundError"),
    ("x = 1\n", r"bad.py has no get_config\(\)"),
    ("def get_config():\n    return {}\n", r"get_config\(\) returned dict, not a ConfigDict"),
])
def test_broken_config_file_is_one_line(tmp_path, body, message):
    bad = tmp_path / "bad.py"
    bad.write_text(body)
    with pytest.raises(ConfigError, match=message) as e:
        load(bad)
    assert "\n" not in str(e.value).strip()


def test_describe_shows_value_default_and_meaning(tiny_config):
    from genjax.config import describe

    table = describe(tiny_config).splitlines()
    steps = next(line for line in table if line.startswith("train.steps "))
    assert steps.split() == ["train.steps", "20", "(default", "200)", *DESC_STEPS.split()]
    seed = next(line for line in table if line.startswith("seed "))
    assert "default" not in seed and seed.endswith("the data order and the probe demos")
    assert any(line.startswith("data.domains.arith.modulus") and " 23" in line for line in table)


DESC_STEPS = "optimizer steps of the run (the cosine schedule decays over them)"


def test_from_stored_fills_keys_added_since_the_run():
    """A run recorded before a key existed reads back with that key's default; its own values
    (including its open sections, replaced whole) are kept."""
    from genjax.config import from_stored

    config = load(CONFIGS / "quickstart.py")
    stored = config.to_dict()
    del stored["hooks"]["attribution"]["domains_at_once"]
    del stored["data"]["order_offset"]
    back = from_stored(stored)
    assert back.hooks.attribution.domains_at_once == 0
    assert back.data.order_offset == base_config().data.order_offset
    assert sorted(back.data.domains) == ["arith", "mod"]  # not merged with the defaults
    assert back.to_dict() == config.to_dict()
