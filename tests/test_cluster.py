"""genjax.cluster.detect: which multi-process job a process is in, from its environment."""

from genjax.cluster import detect, slurm_local_devices

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


def test_slurm_tasks_get_their_gpus():
    per_node = {**SLURM, "SLURM_NTASKS": "2", "SLURM_STEP_NUM_NODES": "2",
                "SLURM_GPUS_ON_NODE": "8"}
    assert slurm_local_devices(per_node) == list(range(8))  # one task drives the node's 8
    per_gpu = {**per_node, "SLURM_NTASKS": "16"}
    assert slurm_local_devices(per_gpu) is None  # jax: task i takes GPU SLURM_LOCALID
    assert slurm_local_devices({**per_node, "SLURM_GPUS_ON_NODE": ""}) is None  # CPU nodes
