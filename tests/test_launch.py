"""launch/: local.sh runs N processes over loopback; slurm.sbatch under a stand-in `srun`
(two tasks with SLURM's variables) joins them by --distributed=on's SLURM detection;
tpu_pod.sh refuses a workdir the hosts cannot share before it calls gcloud."""

import os
import stat
import subprocess

import numpy as np
import pytest

from genjax.stream import read
from tests.conftest import CONFIGS, ROOT
from tests.train.test_multihost import free_slurm_job_id

TRAIN = ["--config", str(CONFIGS / "tiny.py"), "--config.train.steps=4",
         "--config.mesh.fsdp=2", "--config.log.every=2"]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}


def ran_like_one_process(workdir, reference):
    run, ref = read(workdir / "metrics"), read(reference / "metrics")
    np.testing.assert_array_equal(run.steps, np.arange(4))
    for name, series in ref.metrics.items():
        np.testing.assert_allclose(run.metrics[name].values, series.values, rtol=0, atol=1e-5,
                                   err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one")
    r = subprocess.run(["genjax", "train", *TRAIN, "--workdir", str(workdir),
                        "--cpu_devices", "8"], env=ENV, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return workdir


@pytest.mark.slow
def test_local_sh_runs_n_processes(tmp_path, reference):
    r = subprocess.run(["bash", "launch/local.sh", "2", "--", *TRAIN, "--workdir",
                        str(tmp_path / "w")], env=ENV, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ran_like_one_process(tmp_path / "w", reference)


@pytest.mark.slow
def test_slurm_sbatch_joins_its_tasks(tmp_path, reference):
    fake = tmp_path / "bin" / "srun"
    fake.parent.mkdir()
    fake.write_text(f"""#!/usr/bin/env bash
# stand-in for srun: two tasks of job $JOB on this machine, with SLURM's variables
while [[ $1 == --* ]]; do shift; done
pids=()
for task in 0 1; do
  SLURM_JOB_ID={free_slurm_job_id()} SLURM_STEP_NODELIST=localhost SLURM_NTASKS=2 \\
  SLURM_PROCID=$task SLURM_LOCALID=$task SLURM_STEP_NUM_NODES=1 "$@" &
  pids+=($!)
done
status=0
for pid in "${{pids[@]}}"; do wait $pid || status=$?; done
exit $status
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {**ENV, "PATH": f"{fake.parent}:{ENV['PATH']}"}
    r = subprocess.run(["bash", "launch/slurm.sbatch", str(CONFIGS / "tiny.py"),
                        str(tmp_path / "w"), *TRAIN[2:], "--cpu_devices", "4"], env=env,
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "distributed: SLURM job" in r.stderr and "2 processes, 8 devices" in r.stderr
    ran_like_one_process(tmp_path / "w", reference)


def test_tpu_pod_needs_a_shared_workdir_and_launchers_need_arguments(tmp_path):
    r = subprocess.run(["bash", "launch/tpu_pod.sh", "my-tpu", "us-east5-a", "configs/x.py",
                        str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "WORKDIR must be a gs:// path" in r.stderr
    for script in ("launch/tpu_pod.sh", "launch/slurm.sbatch", "launch/local.sh"):
        r = subprocess.run(["bash", script], cwd=ROOT, capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "usage" in (r.stderr + r.stdout).lower(), script
