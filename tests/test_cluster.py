"""genjax.cluster.detect: which multi-process job a process is in, from its environment."""

from genjax.cluster import detect

SLURM = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[1-4]", "SLURM_NTASKS": "4",
         "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}


def test_detect():
    assert detect({}, chips=0) is None
    assert detect({}, chips=0, coordinator="h:1").kind == "coordinator"
    assert detect(SLURM, chips=0).detail == "SLURM job 77, 4 tasks"
    assert detect({**SLURM, "SLURM_NTASKS": "1"}, chips=0) is None  # one task: one process
    assert detect({k: v for k, v in SLURM.items() if k != "SLURM_PROCID"}, chips=0) is None
    assert detect({"OMPI_MCA_orte_hnp_uri": "x", "OMPI_COMM_WORLD_SIZE": "8"}, 0).kind == "mpi"
    tpu = detect({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}, chips=4)
    assert tpu.kind == "tpu" and "4 chips here, 4 hosts" in tpu.detail
    assert detect(SLURM, chips=4).kind == "slurm"  # SLURM on TPU hosts: SLURM's tasks
