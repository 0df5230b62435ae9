"""Two processes x 4 CPU devices (gloo collectives) train exactly like one process x 8."""

import os
import re
import socket
import subprocess
import sys

import numpy as np

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


def test_two_processes_match_one(tmp_path):
    cmd, env = train(tmp_path / "one", 8)
    single = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    port = free_port()
    procs = []
    for pid in range(2):
        cmd, env = train(tmp_path / "two", 4, "--coordinator", f"localhost:{port}",
                         "--num_processes", "2", "--process_id", str(pid))
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    a, b = read(tmp_path / "one" / "metrics"), read(tmp_path / "two" / "metrics")
    np.testing.assert_array_equal(b.steps, np.arange(6))
    np.testing.assert_allclose(b.metrics["train/loss"].values, a.metrics["train/loss"].values,
                               atol=1e-5)
    assert re.search(r"step +6/6", outs[0][1]) and not re.search(r"step +\d+/6", outs[1][1])
