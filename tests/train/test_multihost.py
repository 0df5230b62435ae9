"""Two processes x 4 CPU devices (gloo collectives) train exactly like one process x 8."""

import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from genjax.stream import read
from tests.conftest import CONFIGS, ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train(workdir, devices, *extra):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    return [sys.executable, "-m", "genjax.cli", "train", "--config", str(CONFIGS / "tiny.py"),
            "--workdir", str(workdir), "--cpu_devices", str(devices),
            "--config.train.steps=6", "--config.mesh.fsdp=2", *extra], env


def processes(workdir, n: int, devices: int, *extra) -> list[str]:
    """n processes x `devices` over loopback (explicit coordinator); their stderr."""
    port, procs = free_port(), []
    for pid in range(n):
        cmd, env = train(workdir, devices, *extra, "--coordinator", f"localhost:{port}",
                         "--num_processes", str(n), "--process_id", str(pid))
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=400) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    return [o[1] for o in outs]


def same_metrics(a, b, steps: int = 6) -> None:
    np.testing.assert_array_equal(b.steps, np.arange(steps))
    assert set(a.metrics) == set(b.metrics)
    for name, series in a.metrics.items():
        np.testing.assert_allclose(b.metrics[name].values, series.values, rtol=0, atol=1e-5,
                                   err_msg=name)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    cmd, env = train(tmp_path / "one", 8)
    single = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    errs = processes(tmp_path / "two", 2, 4)
    same_metrics(read(tmp_path / "one" / "metrics"), read(tmp_path / "two" / "metrics"))
    assert re.search(r"step +6/6", errs[0]) and not re.search(r"step +\d+/6", errs[1])


# ---------------------------------------------------------------- prepared data, every hook
STEPS = 12


def slurm_env(job_id: int, procid: int) -> dict[str, str]:
    """What srun sets for task `procid` of a 2-task job on this machine (jax's SLURM cluster
    detection reads these; its coordinator port is 61440 + job_id % 4096)."""
    return {"SLURM_JOB_ID": str(job_id), "SLURM_STEP_NODELIST": "localhost",
            "SLURM_NTASKS": "2", "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid),
            "SLURM_STEP_NUM_NODES": "1"}


def free_slurm_job_id() -> int:
    for job in np.random.default_rng().permutation(4096):
        with socket.socket() as s:
            try:
                s.bind(("localhost", 61440 + int(job)))
            except OSError:
                continue
        return int(job)
    raise RuntimeError("no free port in 61440..65535")


@pytest.fixture(scope="module")
def prepared_run(tmp_path_factory):
    """Two prepared datasets, their tokenizer and a probe file; the overrides that train a
    small model on them with every built-in hook."""
    from tests.data.corpus import prepare_two_datasets

    root = tmp_path_factory.mktemp("multihost_data")
    _, tok_file = prepare_two_datasets(root, 600, 0.2)
    probes = root / "probes.jsonl"
    probes.write_text("".join(json.dumps({"prompt": f"the {a}", "correct_answer": " runs",
                                          "incorrect_answer": " red"}) + "\n"
                              for a in ("cat", "dog", "cat near the dog", "dog and then")))
    overrides = [
        f"--config.data.prepared={root / 'web'},{root / 'code'}",
        f"--config.data.tokenizer_file={tok_file}", "--config.model.vocab_size=304",
        "--config.model.d_model=32", "--config.model.n_layers=2", "--config.model.n_heads=4",
        "--config.model.n_kv_heads=2", "--config.model.head_dim=8", "--config.model.d_ff=64",
        f"--config.train.steps={STEPS}", "--config.train.batch_size=8",
        "--config.train.seq_len=32", "--config.optim.warmup_steps=2",
        "--config.mesh.data=4", "--config.mesh.fsdp=2", "--config.checkpoint.every=5",
        "--config.stream.chunk_steps=4", "--config.log.every=4",
        "--config.hooks.heldout.every=1", "--config.hooks.memorization.every=1",
        "--config.hooks.memorization.examples=4", "--config.hooks.probes.enabled=True",
        f"--config.hooks.probes.files.agree={probes}", "--config.hooks.norms.enabled=True",
        "--config.hooks.attribution.enabled=True", "--config.hooks.attribution.every=2",
        "--config.hooks.predictors.enabled=True", "--config.hooks.predictors.every=3",
        "--config.hooks.predictors.examples=8",
    ]
    return overrides


def prepared_cmd(workdir, devices, overrides):
    return [sys.executable, "-m", "genjax.cli", "train", "--config",
            str(CONFIGS / "prepared.py"), "--workdir", str(workdir), "--cpu_devices",
            str(devices), *overrides]


def two_slurm_tasks(workdir, overrides, signal_at=""):
    job = free_slurm_job_id()
    procs = []
    for task in range(2):
        env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", **slurm_env(job, task)}
        if signal_at:
            env["GENJAX_TEST_SIGNAL_AT"] = signal_at
        procs.append(subprocess.Popen(prepared_cmd(workdir, 4, overrides), env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    return [p.returncode for p in procs], [o[1] for o in outs]


def final_state(workdir):
    """The final checkpoint's whole train state (params, optimizer state), onto one device."""
    import orbax.checkpoint as ocp

    path = workdir / "checkpoints" / str(STEPS) / "state"
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    with ocp.StandardCheckpointer() as ckpt:
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one),
                              ckpt.metadata(path).item_metadata)
        return ckpt.restore(path, target)


@pytest.mark.slow
def test_slurm_tasks_on_prepared_data_with_every_hook_match_one_process(tmp_path,
                                                                        prepared_run):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    one = subprocess.run(prepared_cmd(tmp_path / "one", 8, prepared_run), env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    # SIGKILL both tasks when the row of step 8 arrives, then resume both: --distributed=auto
    # finds the SLURM job each time
    codes, errs = two_slurm_tasks(tmp_path / "two", prepared_run, "8:SIGKILL")
    assert all(c != 0 for c in codes), (codes, [e[-1500:] for e in errs])
    assert "distributed: SLURM job" in errs[0], errs[0][-3000:]
    codes, errs = two_slurm_tasks(tmp_path / "two", prepared_run)
    assert codes == [0, 0], [e[-3000:] for e in errs]
    assert sum(e.count("\nmetrics: ") + e.startswith("metrics: ") for e in errs) == 1
    assert "resumed from checkpoint at step 5" in errs[0]
    a, b = read(tmp_path / "one" / "metrics"), read(tmp_path / "two" / "metrics")
    np.testing.assert_array_equal(b.steps, np.arange(STEPS))  # each step exactly once
    np.testing.assert_array_equal(b.tokens_seen, a.tokens_seen)
    assert set(a.metrics) == set(b.metrics) and len(a.metrics) >= 30
    for name, series in a.metrics.items():
        np.testing.assert_allclose(b.metrics[name].values, series.values, rtol=0, atol=1e-5,
                                   err_msg=name)
    sa, sb = final_state(tmp_path / "one"), final_state(tmp_path / "two")
    leaves_a, leaves_b = jax.tree.leaves(sa), jax.tree.leaves(sb)
    assert len(leaves_a) == len(leaves_b) > 10
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-5)
