"""The `genjax` command: bad input gives one clear line and a non-zero exit."""

import os
import subprocess
import sys

import pytest

from tests.conftest import CONFIGS, ROOT


def genjax(*args, cwd=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "genjax.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["--config.train.stepz=5"], "stepz"),
    (["--config.train.steps=abc"], "train.steps"),
    (["--config.mesh.data=3", "--config.mesh.fsdp=-1"], "does not divide"),
    (["--config.mesh.data=3"], "3 devices, but"),
    (["--config.train.batch_size=12", "--config.mesh.data=8", "--cpu_devices=8"],
     "not divisible by the data x fsdp"),
    (["--config.data.files=/nonexistent/corpus.txt"], "/nonexistent/corpus.txt"),
    (["--config.model.compute_dtype=float16"], "compute_dtype"),
])
def test_bad_input_fails_clearly(tmp_path, args, message):
    r = genjax("train", "--config", str(CONFIGS / "tiny.py"), "--workdir", str(tmp_path / "w"),
               *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_key_in_config_file(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from genjax.config import base_config\n"
                   "def get_config():\n    c = base_config()\n    c.train.stepz = 3\n"
                   "    return c\n")
    r = genjax("train", "--config", str(bad), "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2
    assert "unknown config key 'train.stepz'" in r.stderr


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = genjax("train", "--config", str(CONFIGS / "tiny.py"), "--workdir", str(blocker / "w"))
    assert r.returncode == 2
    assert "not writable" in r.stderr


def test_train_then_resume_from_cli(tmp_path):
    args = ["train", "--config", str(CONFIGS / "tiny.py"), "--workdir", str(tmp_path),
            "--config.train.steps=4", "--config.checkpoint.every=2"]
    first = genjax(*args)
    assert first.returncode == 0, first.stderr
    assert "step      4/4" in first.stderr
    again = genjax(*args[:-2], "--config.train.steps=6", "--config.checkpoint.every=2")
    assert again.returncode == 0, again.stderr
    assert "resumed from checkpoint at step 4" in again.stderr
