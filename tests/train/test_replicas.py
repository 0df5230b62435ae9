"""Processes that hold replicas of a batch shard (a tensor axis spanning hosts) feed identical
rows: the start-up check, and a 4-process run whose processes pair up on each batch shard."""

import subprocess

import numpy as np
import pytest

from genjax.data import DataError
from genjax.stream import read
from genjax.train.trainer import check_replica_rows
from tests.conftest import ROOT
from tests.train.test_multihost import processes, same_metrics, train


def test_check_replica_rows():
    rows = np.array([[0, 4], [0, 4], [4, 8], [4, 8]])
    check_replica_rows(rows, np.array([7, 7, 9, 9]), 8)
    with pytest.raises(DataError, match=r"processes \[2, 3\] hold replicas of batch rows 4..7 "
                                        r"but read different rows"):
        check_replica_rows(rows, np.array([7, 7, 9, 1]), 8)
    with pytest.raises(DataError, match=r"no process reads batch rows \[6, 7\]"):
        check_replica_rows(np.array([[0, 6], [0, 6]]), np.array([1, 1]), 8)


@pytest.mark.slow
def test_four_processes_pairing_on_batch_shards_match_one(tmp_path):
    mesh = ["--config.mesh.data=2", "--config.mesh.fsdp=1", "--config.mesh.tensor=4",
            "--config.model.n_kv_heads=4"]
    cmd, env = train(tmp_path / "one", 8, *mesh)
    single = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    processes(tmp_path / "four", 4, 2, *mesh)  # processes 0,1 hold rows 0..3; 2,3 rows 4..7
    same_metrics(read(tmp_path / "one" / "metrics"), read(tmp_path / "four" / "metrics"))
