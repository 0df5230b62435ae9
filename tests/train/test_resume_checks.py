"""Resuming another run stops with one line naming the key and both values, exit 2, before
anything is restored or written; the documented safe changes resume."""

import hashlib
import json
import shutil

import pytest

from genjax import cli
from genjax.config import base_config
from genjax.train import resume
from tests.conftest import CONFIGS

TINY = str(CONFIGS / "tiny.py")
RUN = ["--config.train.steps=4", "--config.checkpoint.every=2",
       "--config.optim.schedule=constant", "--noheap_malloc"]


def train(workdir, *args) -> int:
    return cli.main(["genjax", "train", "--config", TINY, "--workdir", str(workdir), *RUN, *args])


def snapshot(path) -> dict:
    """Every file under `path`: modification time and content hash."""
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.md5(p.read_bytes()).digest())
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step run (checkpoints at 2 and 4, a metric store, config.json)."""
    workdir = tmp_path_factory.mktemp("resume") / "run"
    assert train(workdir) == 0
    assert (workdir / "config.json").is_file()
    return workdir


@pytest.mark.parametrize("override,key,old,new", [
    ("--config.model.d_model=64", "model.d_model", 32, 64),
    ("--config.model.n_layers=3", "model.n_layers", 2, 3),
    ("--config.optim.lr=0.01", "optim.lr", 0.003, 0.01),
    ("--config.train.seq_len=16", "train.seq_len", 32, 16),
    ("--config.train.batch_size=16", "train.batch_size", 8, 16),
    ("--config.seed=1", "seed", 0, 1),
    ("--config.data.domains.arith.modulus=29", "data.domains.arith.modulus", 23, 29),
    ("--config.data.domains.kv.weight=2.0", "data.domains.kv.weight", 1.0, 2.0),
    ("--config.hooks.train_domains.enabled=True", "hooks.train_domains.enabled", False, True),
])
def test_another_run_is_refused_untouched(trained, capsys, override, key, old, new):
    before = snapshot(trained)
    capsys.readouterr()
    assert train(trained, override) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"genjax train: error: cannot resume {trained}: {key}={new!r} now, but its run has "
        f"{key}={old!r} ({trained}/config.json); use a new --workdir or the saved value")
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2  # no orbax dump
    assert snapshot(trained) == before  # checkpoints, metrics and config.json untouched


def test_several_differences_are_counted(trained, capsys):
    capsys.readouterr()
    assert train(trained, "--config.model.d_model=64", "--config.model.d_ff=128") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"genjax train: error: cannot resume {trained}: model.d_ff=128 now, but its run has "
        f"model.d_ff=64 ({trained}/config.json); also model.d_model; use a new --workdir or "
        "the saved value")


def test_safe_changes_resume(trained, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    capsys.readouterr()
    assert train(workdir, "--config.train.steps=6", "--config.log.every=1",
                 "--config.checkpoint.every=3", "--config.checkpoint.keep=2",
                 "--config.hooks.probes.every=2", "--config.stream.flush_every_s=1.0",
                 "--config.analysis.window=10",
                 "--config.mesh.data=4", "--config.mesh.fsdp=2") == 0
    assert "resumed from checkpoint at step 4" in capsys.readouterr().err
    saved = json.loads((workdir / "config.json").read_text())["config"]
    assert saved["train"]["steps"] == 6 and saved["mesh"]["fsdp"] == 2  # the record follows


def test_workdir_without_record_resumes_and_gets_one(trained, tmp_path, capsys):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    (workdir / "config.json").unlink()  # a workdir written before config.json existed
    assert train(workdir, "--config.seed=1") == 2  # the checkpoint's own data position
    assert (f"cannot resume {workdir}: its checkpoint at step 4 was written with seed=0, but "
            "the config now says 1") in capsys.readouterr().err
    assert train(workdir, "--config.train.steps=5") == 0
    assert (workdir / "config.json").is_file()


# ------------------------------------------------------------------ the comparison itself
def record(**changes):
    c = base_config()
    for key, value in changes.items():
        section, name = key.split("__")
        c[section][name] = value
    return resume.run_record(c, [])


def diff_keys(old, new):
    return [k for k, _, _ in resume.config_differences(old["config"], new["config"])]


def test_train_steps_changes_only_with_a_constant_schedule():
    assert diff_keys(record(train__steps=100), record(train__steps=200)) == ["train.steps"]
    constant = dict(optim__schedule="constant", optim__warmup_steps=20)
    assert diff_keys(record(train__steps=100, **constant),
                     record(train__steps=200, **constant)) == []
    # the warmup is clipped to train.steps - 1: a run shorter than its warmup may not change
    assert diff_keys(record(train__steps=10, **constant),
                     record(train__steps=200, **constant)) == ["train.steps"]
    with pytest.raises(resume.ResumeError, match=r"train.steps=200 now, but its run has "
                       r"train.steps=100 .*only with optim.schedule='constant'"):
        resume.check_resume("w", record(train__steps=200), record(train__steps=100))


def test_every_safe_change_is_documented_and_nothing_else_passes():
    base = record()
    safe = {"log__every": 1, "log__progress": "none", "checkpoint__every": 7,
            "checkpoint__keep": 9, "checkpoint__async_save": False,
            "stream__flush_every_s": 1.0, "stream__fsync": True, "stream__overwrite": True,
            "stream__tensorboard": True, "stream__wandb_project": "p", "data__prefetch": 1,
            "mesh__fsdp": 4, "train__grad_accum": 2, "model__remat": "full",
            "model__attention": "xla", "model__loss_chunk": 64, "analysis__window": 5,
            "analysis__online_hops": True, "hooks__micro_batch": 4, "hooks__gate": "programs"}
    for key, value in safe.items():
        assert diff_keys(base, record(**{key: value})) == [], key
    cadence = record()
    cadence["config"]["hooks"]["probes"]["every"] = 10
    assert diff_keys(base, cadence) == []
    cadence["config"]["hooks"]["probes"]["shots"] = 0
    assert diff_keys(base, cadence) == ["hooks.probes.shots"]
    unsafe = {"model__d_model": 64, "model__scan_layers": True, "model__compute_dtype":
              "bfloat16", "optim__lr": 1.0, "optim__warmup_steps": 3, "data__heldout_fraction":
              0.2, "data__tokenizer": "sentencepiece", "train__seq_len": 64, "stream__path": "x",
              "stream__chunk_steps": 8, "stream__enabled": False, "optim__muon_rms": 0.0}
    for key, value in unsafe.items():
        assert diff_keys(base, record(**{key: value})) == [key.replace("__", ".")], key
    assert {k.split(".")[0] for k in resume.SAFE_CHANGES} <= set(base_config().keys())


def test_new_keys_with_their_default_match_and_removed_keys_are_ignored():
    old, new = record(), record()
    del old["config"]["model"]["loss_chunk"]  # a key genjax added after the run started
    old["config"]["train"]["retired_knob"] = 3  # a key genjax no longer has
    assert diff_keys(old, new) == []
    new["config"]["model"]["loss_chunk"] = 64
    assert diff_keys(old, new) == ["model.loss_chunk"]


def test_schema_difference_is_named():
    from genjax.hooks.base import MetricSpec

    c = base_config()
    old = resume.run_record(c, [MetricSpec("probes/item_margin", ("item",), (16,))])
    new = resume.run_record(c, [MetricSpec("probes/item_margin", ("item",), (24,))])
    with pytest.raises(resume.ResumeError, match=r"metric 'probes/item_margin' shape \[16\] "
                       r"there, \[24\] now"):
        resume.check_resume("w", new, old)
