"""Multi-host start-up: which cluster this process is part of, then `jax.distributed` for it.

`genjax train --distributed=auto` (the default) initializes only where a multi-process job is
detected, so one command works on a laptop, a TPU pod slice and a SLURM allocation:
  - `--coordinator host:port --num_processes N --process_id I`: explicit (any machines);
  - SLURM with more than one task (`srun`, `sbatch`): SLURM_* variables;
  - Open MPI (`mpirun`): OMPI_* variables;
  - a Cloud TPU VM (Google TPU chips on the PCI bus): the slice's hosts, from the TPU
    metadata server or GKE's TPU_WORKER_HOSTNAMES (one host: one process).
`--distributed=on` requires one of them; `off` never initializes.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping

GOOGLE_PCI_VENDOR = "0x1ae0"
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID")


class ClusterError(RuntimeError):
    """Multi-host initialization was asked for and cannot happen."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    kind: str  # coordinator | slurm | mpi | tpu
    detail: str  # for the start-up line


def tpu_chips() -> int:
    """Google TPU chips on this machine's PCI bus (0 elsewhere)."""
    count = 0
    for vendor in glob.glob("/sys/bus/pci/devices/*/vendor"):
        try:
            with open(vendor) as f:
                count += f.read().strip() == GOOGLE_PCI_VENDOR
        except OSError:
            continue
    return count


def detect(env: Mapping[str, str], chips: int, coordinator: str = "") -> Cluster | None:
    """The multi-process job this process belongs to, or None (a single process)."""
    if coordinator:
        return Cluster("coordinator", f"coordinator {coordinator}")
    if all(v in env for v in SLURM_VARS) and int(env["SLURM_NTASKS"]) > 1:
        return Cluster("slurm", f"SLURM job {env['SLURM_JOB_ID']}, {env['SLURM_NTASKS']} tasks")
    size = int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1)
    if "OMPI_MCA_orte_hnp_uri" in env and size > 1:
        return Cluster("mpi", f"Open MPI, {size} processes")
    if chips:
        hosts = env.get("TPU_WORKER_HOSTNAMES", "")
        where = f"{len(hosts.split(','))} hosts" if hosts else "hosts from the TPU metadata"
        return Cluster("tpu", f"Cloud TPU VM ({chips} chips here, {where})")
    return None


def slurm_local_devices(env: Mapping[str, str]) -> list[int] | None:
    """One SLURM task per node: every GPU of the node (SLURM_GPUS_ON_NODE). jax's own SLURM
    detection gives each task the one GPU numbered by its SLURM_LOCALID (one task per GPU,
    every GPU visible to every task); None keeps that."""
    nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 0)
    gpus = int(env.get("SLURM_GPUS_ON_NODE") or 0)
    if nodes and gpus and int(env.get("SLURM_NTASKS", 0)) == nodes:
        return list(range(gpus))
    return None


def initialize(mode: str, coordinator: str = "", num_processes: int = 1,
               process_id: int = 0) -> Cluster | None:
    """Initializes `jax.distributed` as `mode` (auto | on | off) says; returns the cluster."""
    if mode == "off":
        return None
    cluster = detect(os.environ, tpu_chips(), coordinator)
    if cluster is None:
        if mode == "on":
            raise ClusterError("--distributed=on, but no cluster was found (no --coordinator, "
                               "SLURM job with several tasks, Open MPI job or TPU VM)")
        return None
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; harmless
    try:
        if cluster.kind == "coordinator":
            jax.distributed.initialize(coordinator, num_processes, process_id)
        elif cluster.kind == "slurm":
            jax.distributed.initialize(local_device_ids=slurm_local_devices(os.environ))
        else:  # jax's own cluster detection reads the same variables
            jax.distributed.initialize()
    except (RuntimeError, ValueError) as e:
        raise ClusterError(f"cannot join the {cluster.detail}: {e}") from e
    return cluster
