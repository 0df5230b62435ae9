"""A gs:// workdir, for real against a GCS emulator: train, SIGKILL at a fixed step, resume,
then `genjax metrics` and `genjax analyze` on the bucket. Nothing lands on local disk."""

import re
import subprocess
import sys

import pytest

from genjax import paths
from tests.conftest import ROOT
from tests.train.test_faults import ONE_DEVICE, STEPS, assert_same_run, cli, run_cli

BUCKET_RUN = "gs://genjax-test/runs/tiny"


@pytest.mark.slow
def test_gs_workdir_survives_sigkill_and_is_analyzed(gcs, tmp_path):
    ref = run_cli(tmp_path / "local")
    assert ref.returncode == 0, ref.stderr
    env = {**ONE_DEVICE, **gcs}
    cmd, kill_env = cli(BUCKET_RUN, "12:SIGKILL", env=env)
    killed = subprocess.run(cmd, env=kill_env, cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    cmd, env = cli(BUCKET_RUN, env=env)
    resumed = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # killed at step 12: the checkpoint of step 10 may still be uploading (async), then 5
    assert re.search(r"resumed from checkpoint at step (5|10) in gs://genjax-test/runs/tiny\n",
                     resumed.stderr), resumed.stderr[-3000:]

    from genjax.stream import read

    assert_same_run(f"{BUCKET_RUN}/metrics", read(tmp_path / "local" / "metrics"))
    steps = sorted(int(p.name) for p in paths.as_path(BUCKET_RUN + "/checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps[-1] == STEPS
    metrics = subprocess.run([sys.executable, "-m", "genjax.cli", "metrics", BUCKET_RUN],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert metrics.returncode == 0 and f"step {STEPS - 1}" in metrics.stdout, metrics.stderr
    analyzed = subprocess.run([sys.executable, "-m", "genjax.cli", "analyze", BUCKET_RUN],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert analyzed.returncode == 0, analyzed.stderr[-2000:]
    report = paths.as_path(BUCKET_RUN + "/analysis/report.html").read_text()
    images = re.findall(r"src='([^']+\.png)'", report)
    assert report.startswith("<!doctype html>") and images
    for name in images:  # every figure the report shows was written beside it
        assert paths.as_path(f"{BUCKET_RUN}/analysis/{name}").read_bytes()[:4] == b"\x89PNG"
    assert not (ROOT / "gs:").exists() and not (tmp_path / "gs:").exists()
