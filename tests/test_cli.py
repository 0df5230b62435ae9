"""The `genjax` command: bad input gives one clear line and a non-zero exit."""

import os
import subprocess
import sys

import pytest

from genjax import cli
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
    (["--config.data.heldout_fraction=0"], "'data.heldout_fraction' must be in (0, 1), got 0.0"),
    (["--config.hooks.probes.every=0"], "'hooks.probes.every' must be >= 1, got 0"),
    (["--config.hooks.probes.enabled=True", "--config.hooks.probes.files.fam=/nonexistent.jsonl"],
     "probe file not found: /nonexistent.jsonl"),
])
def test_bad_input_fails_clearly(tmp_path, args, message):
    r = genjax("train", "--config", str(CONFIGS / "tiny.py"), "--workdir", str(tmp_path / "w"),
               *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "w").exists()  # a failed start leaves no workdir behind


def test_unknown_key_in_config_file(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from genjax.config import base_config\n"
                   "def get_config():\n    c = base_config()\n    c.train.stepz = 3\n"
                   "    return c\n")
    r = genjax("train", "--config", str(bad), "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2
    assert "unknown config key 'train.stepz'" in r.stderr
    assert not (tmp_path / "w").exists()


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = genjax("train", "--config", str(CONFIGS / "tiny.py"), "--workdir", str(blocker / "w"))
    assert r.returncode == 2
    assert "not writable" in r.stderr


def test_train_then_resume_from_cli(tmp_path):
    args = ["train", "--config", str(CONFIGS / "tiny.py"), "--workdir", str(tmp_path),
            "--config.optim.schedule=constant",  # train.steps may change on resume
            "--config.train.steps=4", "--config.checkpoint.every=2"]
    first = genjax(*args)
    assert first.returncode == 0, first.stderr
    assert "step      4/4" in first.stderr
    again = genjax(*args[:-2], "--config.train.steps=6", "--config.checkpoint.every=2")
    assert again.returncode == 0, again.stderr
    assert "resumed from checkpoint at step 4" in again.stderr


def test_missing_config_file_is_one_line(tmp_path):
    r = genjax("train", "--config", "/nonexistent/c.py", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2
    assert r.stderr == "genjax train: error: config file not found: /nonexistent/c.py\n"
    assert not (tmp_path / "w").exists()
    r = genjax("train", "--config", "gs://b/c.py", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2 and r.stderr.startswith(
        "genjax train: error: config file gs://b/c.py: config files are local Python files")
    assert not (tmp_path / "w").exists() and not (ROOT / "gs:").exists()


def test_unknown_override_is_one_clean_line(tmp_path):
    r = genjax("train", "--config", str(CONFIGS / "tiny.py"), "--workdir", str(tmp_path / "w"),
               "--config.train.stepz=5")
    assert r.returncode == 2
    assert r.stderr.startswith("genjax train: error: unknown config key 'train.stepz' (known "
                               "here: batch_size, grad_accum, ")
    assert len(r.stderr.splitlines()) == 1 and "\\" not in r.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("command,flag", [
    ("train", "--workdir"), ("metrics", "--csv"), ("analyze", "--beta"),
    ("compile", "--topology"), ("config", "--config"),
])
def test_help_on_every_command(command, flag):
    r = genjax(command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: genjax {command}")
    assert f"  {flag} " in r.stdout and "  --[no]verbose " in r.stdout


def test_helpfull_and_config_show_print_every_key(capsys):
    from genjax.config import DESCRIPTIONS

    tiny = str(CONFIGS / "tiny.py")
    assert cli.main(["genjax", "train", "--config", tiny, "--helpfull",
                     "--config.train.steps=7"]) == 0
    out = capsys.readouterr().out
    assert "  --workdir " in out and "config keys (--config.KEY=VALUE):" in out
    assert cli.main(["genjax", "config", "show", tiny, "--config.train.steps=7"]) == 0
    table = capsys.readouterr().out
    assert table in out  # the same table
    line = next(x for x in table.splitlines() if x.startswith("train.steps "))
    assert line.split()[:4] == ["train.steps", "7", "(default", "200)"]
    assert line.endswith(DESCRIPTIONS["train.steps"])


def run_in_process(capsys, workdir, *args) -> tuple[int, str]:
    capsys.readouterr()
    rc = cli.main(["genjax", "train", "--config", str(CONFIGS / "tiny.py"), "--workdir",
                   str(workdir), "--noheap_malloc", *args])
    return rc, capsys.readouterr().err


def test_verbose_adds_the_traceback(tmp_path, capsys):
    args = ("--config.data.files=/nonexistent/corpus.txt",)
    rc, err = run_in_process(capsys, tmp_path / "w", *args)
    assert rc == 2 and err == "genjax train: error: data file not found: /nonexistent/corpus.txt\n"
    rc, err = run_in_process(capsys, tmp_path / "w", "--verbose", *args)
    assert rc == 2 and err.startswith("Traceback") and "DataError" in err
    assert err.endswith("genjax train: error: data file not found: /nonexistent/corpus.txt\n")


def test_failed_start_removes_only_what_it_created(tmp_path, capsys):
    args = ("--config.data.files=/nonexistent/corpus.txt",)  # fails after the workdir is made
    rc, _ = run_in_process(capsys, tmp_path / "new" / "deeper" / "w", *args)
    assert rc == 2 and not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    rc, _ = run_in_process(capsys, tmp_path / "mine", *args)
    assert rc == 2 and (tmp_path / "mine").is_dir()  # the user's own directory stays


PROBE_ROWS = [
    {"split": "test", "prompt": "2+2=", "correct_answer": "4", "incorrect_answer": "5"},
    {"split": "test", "prompt": "3+3=", "correct_answer": "6", "incorrect_answer": "33"},
]


def test_probe_file_from_the_command_line_without_demos_is_zero_shot(tmp_path, capsys):
    import json

    from genjax.stream import read

    probes = tmp_path / "fam.jsonl"
    probes.write_text("".join(json.dumps(r) + "\n" for r in PROBE_ROWS))
    on = ("--config.hooks.probes.enabled=True", "--config.hooks.probes.builtin_items=0")
    rc, err = run_in_process(capsys, tmp_path / "short", *on, "--config.hooks.probes.answer_len=1",
                             "--config.hooks.probes.terminator=none",  # bare answers' lengths
                             f"--config.hooks.probes.files.myfam={probes}")
    assert rc == 2 and err.strip().splitlines()[-1] == (
        "genjax train: error: probe item myfam/1: answer '33' is 2 tokens, longer than "
        "hooks.probes.answer_len=1 (the longest answer is 2 tokens; 0 fits them all)")
    assert not (tmp_path / "short").exists()
    rc, err = run_in_process(capsys, tmp_path / "w", *on, "--config.train.steps=2",
                             "--config.hooks.probes.files.myfam", str(probes))
    assert rc == 0, err
    assert (f"note: probe file {probes} has no demo rows: family 'myfam' is scored zero-shot "
            "(hooks.probes.shots=4 needs demos)") in err.splitlines()
    run = read(tmp_path / "w" / "metrics")
    assert list(run.metrics["probes/item_margin"].labels["item"]) == ["myfam/0", "myfam/1"]
