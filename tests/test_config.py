"""Config schema: every shipped config validates; unknown keys and wrong types are named."""

import pytest

from genjax.config import ConfigDict, ConfigError, base_config, load, validate
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
