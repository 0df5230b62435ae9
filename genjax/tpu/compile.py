"""`genjax compile`: compile a config for a TPU slice on a machine without a TPU.

libtpu describes any slice (`v5e:4x4`, `v5p-128`, several slices) as compile-only devices; the
train step is lowered from sharded abstract arguments and compiled by the real TPU compiler,
so nothing is allocated. XLA's reports give per-chip memory (`memory_analysis`) and a cost
model (`cost_analysis`: FLOPs, HBM bytes accessed, `optimal_seconds`). The step is compiled
twice, with and without the config's hooks, so the difference is what monitoring costs.

Cost-model figures are estimates, and labelled so: they leave out most communication and all
host time, and count a loop's body once (`train.grad_accum > 1`). On larger slices the
compiled per-chip FLOPs also miss matmuls that XLA splits into collective pieces (measured:
a sharded MLP counts 1.00x its matmul FLOPs on v5e:2x2, 0.71x on v5e:4x4), so FLOPs are also
counted on the whole unpartitioned step (lowered for one CPU device, never compiled); hook
FLOP shares come from that count, and the report flags chips that compute more or less than
an even split of it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

GiB = 2**30


class CompileError(ValueError):
    """The config cannot be compiled for (or does not fit) the requested TPU slice."""


@dataclasses.dataclass(frozen=True)
class TpuGeneration:
    """Per-chip figures of one TPU generation (vendor specs) and how its slices are named."""

    name: str
    hbm_gib: float
    hbm_bytes_per_s: float
    ndim: int  # torus dimensions in a topology name: v5e:4x4, v5p:2x2x1
    cores_per_chip_in_name: int  # "v5p-8" counts TensorCores (2 per chip), "v5e-8" chips
    max_chips: int  # one slice (pod)
    accelerator_type: str  # how TPU_ACCELERATOR_TYPE names it: "v5litepod-16"

    @property
    def hbm_bytes(self) -> int:
        return int(self.hbm_gib * GiB)


GENERATIONS = {
    "v4": TpuGeneration("v4", 32, 1.2e12, 3, 2, 4096, "v4"),
    "v5e": TpuGeneration("v5e", 16, 8.19e11, 2, 1, 256, "v5litepod"),
    "v5p": TpuGeneration("v5p", 95, 2.765e12, 3, 2, 8960, "v5p"),
    "v6e": TpuGeneration("v6e", 32, 1.64e12, 2, 1, 256, "v6e"),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e"}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A slice shape (chips per torus dimension) of one generation, times `num_slices`."""

    generation: TpuGeneration
    dims: tuple[int, ...]
    num_slices: int = 1

    @property
    def name(self) -> str:
        """The libtpu topology string, e.g. "v5e:4x4"."""
        return f"{self.generation.name}:{'x'.join(map(str, self.dims))}"

    @property
    def chips_per_slice(self) -> int:
        return math.prod(self.dims)

    @property
    def chips(self) -> int:
        return self.chips_per_slice * self.num_slices

    @property
    def friendly_name(self) -> str:
        """The Cloud name, e.g. "v5p-8" (TensorCores) or "v5e-16" (chips)."""
        g = self.generation
        return f"{g.name}-{self.chips_per_slice * g.cores_per_chip_in_name}"

    def describe(self) -> str:
        slices = f" x {self.num_slices} slices" if self.num_slices > 1 else ""
        return f"{self.name} ({self.friendly_name}){slices}"


def _default_dims(chips: int, ndim: int) -> tuple[int, ...]:
    """The usual slice shape for a power-of-two chip count: 4x8, 2x2x4, 4x4x8, ..."""
    dims = [2, 2, 1] if ndim == 3 else [1, 1]
    while math.prod(dims) < chips:
        smallest = min(dims)
        i = max(j for j, d in enumerate(dims) if d == smallest)  # grow the last smallest dim
        dims[i] *= 2
    return tuple(dims)


def parse_topology(name: str, num_slices: int = 1) -> Topology:
    """"v5e:4x4", "v5p:2x2x1", "v5e-256", "v5p-128" (TensorCores), "v4-64" -> Topology."""
    text = name.strip().lower()
    m = re.fullmatch(r"(v4|v5e|v5p|v6e|v5litepod|v5lite)(?::(\d+(?:x\d+)*)|-(\d+))", text)
    if not m:
        known = ", ".join(GENERATIONS)
        raise CompileError(f"unknown topology {name!r}: expected GEN:AxB[xC] or GEN-N with GEN "
                           f"one of {known}, e.g. v5e:4x4, v5p:2x2x1, v5e-256, v5p-128")
    if num_slices < 1:
        raise CompileError(f"--num_slices must be at least 1, got {num_slices}")
    gen = GENERATIONS[_ALIASES.get(m.group(1), m.group(1))]
    if m.group(2):
        dims = tuple(int(d) for d in m.group(2).split("x"))
        if len(dims) != gen.ndim or min(dims) < 1:
            example = "4x4" if gen.ndim == 2 else "2x2x1"
            raise CompileError(f"topology {name!r}: {gen.name} slices have {gen.ndim} "
                               f"dimensions, e.g. {gen.name}:{example}")
    else:
        n, per_chip = int(m.group(3)), gen.cores_per_chip_in_name
        unit = "TensorCores (2 per chip)" if per_chip == 2 else "chips"
        chips = n // per_chip
        smallest = 4 if gen.ndim == 3 else 1
        if n % per_chip or chips < smallest or chips & (chips - 1):
            raise CompileError(f"topology {name!r}: {gen.name}-N counts {unit} and N must give "
                               f"a power-of-two number of chips >= {smallest}; for other "
                               f"shapes name the torus, e.g. {gen.name}:"
                               f"{'x'.join(map(str, _default_dims(smallest * 4, gen.ndim)))}")
        dims = _default_dims(chips, gen.ndim)
    topo = Topology(gen, dims, num_slices)
    if topo.chips_per_slice > gen.max_chips:
        raise CompileError(f"topology {name!r} has {topo.chips_per_slice} chips; the largest "
                           f"{gen.name} slice has {gen.max_chips}")
    return topo


def _require_libtpu() -> None:
    if importlib.util.find_spec("libtpu") is None and not os.environ.get("TPU_LIBRARY_PATH"):
        raise CompileError('compiling for TPU needs libtpu: pip install -e ".[tpu]" '
                           "(or pip install libtpu)")


def _cpu_host_libtpu_env(topology: Topology) -> None:
    """Environment for libtpu on a host with no TPU, set before its first load (defaults only).
    Its lockfile, which guards real chips, would otherwise make every process but one fail
    (a training run or a test holding it is enough); and unset TPU_* variables make it print
    errors. Left alone on a TPU VM, where both describe the real machine."""
    import glob

    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{topology.generation.accelerator_type}-"
                                                  f"{topology.friendly_name.split('-')[1]}")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")


def topology_devices(topology: Topology) -> list:
    """libtpu's compile-only devices for the slice(s), one per chip (v4 in megacore mode,
    as JAX runs it), slice by slice."""
    _require_libtpu()
    _cpu_host_libtpu_env(topology)
    import jax
    from jax.experimental.topologies import get_topology_desc

    kwargs: dict[str, Any] = {"num_slices": topology.num_slices}
    if topology.generation.name == "v4":
        kwargs["chip_config_name"] = "megacore"
    try:
        desc = get_topology_desc(topology_name=topology.name, platform="tpu", **kwargs)
    except (RuntimeError, jax.errors.JaxRuntimeError) as e:
        raise CompileError(f"libtpu cannot describe {topology.describe()}: {e}") from e
    devices = list(desc.devices)
    if len(devices) != topology.chips:
        raise CompileError(f"libtpu gave {len(devices)} devices for {topology.describe()}, "
                           f"expected {topology.chips} (one per chip)")
    return devices


def mesh_devices(config, topology: Topology, devices: Sequence) -> list:
    """Devices in the order `genjax.sharding.make_mesh` needs: for several slices, the data
    axis spans the slices (only data parallelism crosses the slow inter-slice network) and
    fsdp x tensor stay inside one slice."""
    from genjax.sharding import MeshError, mesh_shape

    try:
        data, fsdp, tensor = mesh_shape(config.mesh, len(devices))
    except MeshError as e:
        raise CompileError(f"the config's mesh does not fit {topology.describe()}, "
                           f"{len(devices)} chips: {e}") from e
    n = topology.num_slices
    if n == 1:
        return list(devices)
    if data % n:
        raise CompileError(f"with {n} slices the data axis must span them, but mesh.data="
                           f"{data} is not a multiple of {n}; set --config.mesh.data={n} "
                           f"(or a multiple) and let fsdp or tensor be -1")
    from jax.experimental import mesh_utils

    try:
        grid = mesh_utils.create_hybrid_device_mesh(
            (data // n, fsdp, tensor), (n, 1, 1), devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError) as e:
        raise CompileError(f"cannot lay mesh data={data // n} x fsdp={fsdp} x tensor={tensor} "
                           f"over each slice of {topology.describe()}: {e}") from e
    return list(grid.flat)


# ------------------------------------------------------------------------------ measuring
def bytes_per_chip(tree: Any) -> int:
    """Bytes one chip holds of a pytree of sharded `ShapeDtypeStruct`s: its own shard of each."""
    import jax

    return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
               for x in jax.tree.leaves(tree))


@dataclasses.dataclass
class ProgramCost:
    """Per-chip figures of one compiled step: XLA's memory report and cost-model estimates."""

    argument_bytes: int
    output_bytes: int
    alias_bytes: int  # outputs written into donated inputs (the new train state)
    temp_bytes: int  # activations and other temporaries
    code_bytes: int
    flops: float
    bytes_accessed: float
    est_compiler_seconds: float | None  # XLA's `optimal_seconds`, when it reports one
    compile_seconds: float

    @property
    def total_bytes(self) -> int:
        """Peak HBM of the step: inputs + new outputs + temporaries + program."""
        return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes
                + self.code_bytes)


def _hbm_exhausted(message: str) -> tuple[str, str] | None:
    """(needed, usable) HBM from the TPU compiler's out-of-memory error; None if not one."""
    if "RESOURCE_EXHAUSTED" not in message or "HBM" not in message.upper():
        return None
    m = (re.search(r"\(([\d.]+[KMGT]?)\) exceeds available HBM \(([\d.]+[KMGT]?)\)", message)
         or re.search(r"Used ([\d.]+[KMGT]?) of ([\d.]+[KMGT]?) hbm", message))
    return (m.group(1), m.group(2)) if m else ("more", "what is")


def compile_program(program, topology: Topology) -> ProgramCost:
    """Compiles `program.step_fn` from abstract arguments; per-chip memory and cost."""
    import jax

    start = time.perf_counter()
    try:
        compiled = program.step_fn.lower(*program.abstract_args()).compile()
    except jax.errors.JaxRuntimeError as e:
        hbm = _hbm_exhausted(str(e))
        if hbm is None:
            raise
        gen = topology.generation
        raise CompileError(f"does not fit: the TPU compiler needs {hbm[0]} of HBM per chip "
                           f"where {hbm[1]} is usable, {gen.name} has {gen.hbm_gib:g} GiB; "
                           f"shrink train.batch_size, raise train.grad_accum, turn on "
                           f"model.remat or use more chips") from e
    seconds = time.perf_counter() - start
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    optimal = cost.get("optimal_seconds")
    return ProgramCost(
        argument_bytes=int(mem.argument_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes), flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        est_compiler_seconds=float(optimal) if optimal and optimal > 0 else None,
        compile_seconds=seconds)


def whole_program_flops(config, data, hooks: Sequence[Any]) -> float | None:
    """XLA's FLOP count of the whole, unpartitioned step, hooks included: the same program
    lowered (not compiled) for one CPU device, where sharding is a no-op. It counts every
    matmul once, however the TPU compiler later splits it; None if the backend cannot say."""
    import jax

    from genjax.train.trainer import TrainProgram

    try:
        cpu = jax.devices("cpu")[:1]
    except RuntimeError:  # JAX_PLATFORMS without cpu
        return None
    single = config.copy_and_resolve_references()
    single.mesh.update(data=1, fsdp=1, tensor=1)
    program = TrainProgram(single, data=data, hooks=hooks, devices=cpu)
    cost = program.step_fn.lower(*program.abstract_args()).cost_analysis()
    return float(cost["flops"]) if cost and "flops" in cost else None


def _share(with_hooks: float | None, without: float | None) -> float | None:
    if not with_hooks or without is None:
        return None
    return (with_hooks - without) / with_hooks


def _cost_section(cost: ProgramCost, whole_flops: float | None, chips: int, peak: float,
                  bandwidth: float, model_flops: float, compiler_time: bool) -> dict[str, Any]:
    """Per-chip estimates of one program; `compiler_time`: use XLA's `optimal_seconds` (only
    when every compared program has one, so that time shares compare like with like)."""
    even = whole_flops / chips if whole_flops is not None else None
    flops = max(cost.flops, even or 0.0)  # the compiled count can miss split matmuls
    roofline = max(flops / peak, cost.bytes_accessed / bandwidth)
    est = cost.est_compiler_seconds if compiler_time else roofline
    source = ("XLA cost model (optimal_seconds)" if compiler_time
              else "roofline max(FLOPs / peak, bytes accessed / HBM bandwidth), FLOPs the "
                   "larger of the compiled count and the whole program's split evenly")
    return {
        "est_flops_per_chip": cost.flops,
        "est_program_flops_per_chip": even,
        "est_program_flops_vs_model": whole_flops / model_flops if whole_flops else None,
        "est_bytes_accessed_per_chip": cost.bytes_accessed,
        "est_step_seconds": est,
        "est_step_seconds_source": source,
        "est_roofline_seconds": roofline,
        "est_mfu": model_flops / chips / (est * peak) if est > 0 else None,
        "peak_memory_bytes_per_chip": cost.total_bytes,
        "compile_seconds": round(cost.compile_seconds, 2),
    }


def _hook_shares(hooks: Sequence[Any], sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(with - without) / with, per chip: FLOPs from the whole-program count when there is one
    (the compiled counts can miss split matmuls), bytes and time from the compiled programs."""
    w, wo = sections["with_hooks"], sections.get("without_hooks", {})
    flops_key = ("est_program_flops_per_chip" if w["est_program_flops_per_chip"]
                 else "est_flops_per_chip")
    return {
        "names": [h.name for h in hooks],
        "est_flops_share": _share(w[flops_key], wo.get(flops_key)),
        "est_bytes_accessed_share": _share(w["est_bytes_accessed_per_chip"],
                                           wo.get("est_bytes_accessed_per_chip")),
        "est_step_time_share": _share(w["est_step_seconds"], wo.get("est_step_seconds")),
    }


def _notes(config, sections: dict[str, dict[str, Any]],
           shares: dict[str, Any]) -> list[str]:
    """Caveats that apply to this report's estimates."""
    notes = ["est_*: XLA's cost model, not a measurement: it leaves out most inter-chip "
             "communication and all host time"]
    if config.train.grad_accum > 1:
        notes.append(f"train.grad_accum={config.train.grad_accum} runs a loop whose body the "
                     f"cost model counts once: the train part of FLOPs, bytes and time is about "
                     f"1/{config.train.grad_accum} of the real figure")
    for name, section in sections.items():
        compiled, even = section["est_flops_per_chip"], section["est_program_flops_per_chip"]
        what = name.replace("_", " ")
        if even and compiled < 0.95 * even:
            notes.append(f"{what}: the compiled per-chip FLOPs are {1 - compiled / even:.0%} "
                         f"below the whole program's split evenly: XLA's cost model misses "
                         f"matmuls it splits into collective pieces; the roofline uses the "
                         f"larger")
        if even and compiled > 1.05 * even:
            notes.append(f"{what}: each chip computes {compiled / even - 1:.0%} more than an "
                         f"even split of the program: some work is replicated (the optimizer "
                         f"update under pure data parallelism, hook rows that do not divide "
                         f"the data x fsdp axes)")
    if (shares["est_bytes_accessed_share"] or 0) < 0:
        notes.append("hooks: the program with hooks was compiled to fewer bytes accessed than "
                     "the one without; their bytes and time shares are within the cost "
                     "model's noise between two separately compiled programs")
    return notes


def compile_report(config, topology: Topology,
                   hooks: Sequence[Any] | None = None) -> dict[str, Any]:
    """Compiles the train step with and without its hooks (the config's, or `hooks`) for
    `topology` and returns the per-chip report as a JSON-ready dict. Raises `CompileError`
    when the mesh does not match the slice or the compiler runs out of HBM; a step that
    compiles but exceeds HBM comes back with `fits` False (see `compile_command`)."""
    from genjax.model import ModelConfig
    from genjax.perf import peak_flops
    from genjax.sharding import MeshError
    from genjax.train.trainer import TrainProgram

    devices = mesh_devices(config, topology, topology_devices(topology))
    gen = topology.generation

    def program(**kwargs) -> TrainProgram:
        try:
            return TrainProgram(config, devices=devices, **kwargs)
        except MeshError as e:
            raise CompileError(f"{topology.describe()}: {e}") from e

    with_hooks = program(hooks=hooks)
    state = with_hooks.abstract_args()[0]
    params_bytes = bytes_per_chip(state.params)
    opt_bytes = bytes_per_chip(state.opt_state)
    if params_bytes + opt_bytes > gen.hbm_bytes:
        raise CompileError(
            f"does not fit: needs {(params_bytes + opt_bytes) / GiB:.2f} GiB per chip for "
            f"parameters and optimizer state alone, {gen.name} has {gen.hbm_gib:g} GiB; use "
            f"more chips or shard more (mesh.fsdp)")
    bare_cost = None
    if with_hooks.hooks:
        try:
            bare_cost = compile_program(program(data=with_hooks.data, hooks=[]), topology)
        except CompileError as e:
            raise CompileError(f"{e} (this is without its hooks)") from e
    try:
        cost = compile_program(with_hooks, topology)
    except CompileError as e:
        if bare_cost is None:
            raise
        raise CompileError(f"{e}; without its hooks the step needs "
                           f"{bare_cost.total_bytes / GiB:.2f} GiB, so the hooks' eval data "
                           f"is what does not fit (fewer hook rows, or rows that divide the "
                           f"data x fsdp axes)") from e

    model = ModelConfig.from_config(config.model)
    tokens = config.train.batch_size * config.train.seq_len
    model_flops = model.flops_per_token(config.train.seq_len) * tokens
    peak, peak_source = peak_flops(devices[0])

    compiler_time = all(c.est_compiler_seconds for c in (cost, bare_cost) if c is not None)

    def section(c: ProgramCost, program_hooks: Sequence[Any]) -> dict[str, Any]:
        whole = whole_program_flops(config, with_hooks.data, program_hooks)
        return _cost_section(c, whole, topology.chips, peak, gen.hbm_bytes_per_s, model_flops,
                             compiler_time)

    sections = {"with_hooks": section(cost, with_hooks.hooks)}
    if bare_cost is not None:
        sections["without_hooks"] = section(bare_cost, [])
    shares = _hook_shares(with_hooks.hooks, sections)
    mem = {"params": params_bytes, "optimizer_state": opt_bytes,
           "other_inputs": cost.argument_bytes - params_bytes - opt_bytes,
           "temporaries": cost.temp_bytes, "outputs": cost.output_bytes - cost.alias_bytes,
           "code": cost.code_bytes, "total": cost.total_bytes,
           "total_without_hooks": bare_cost.total_bytes if bare_cost else cost.total_bytes,
           "hbm": gen.hbm_bytes, "fits": cost.total_bytes <= gen.hbm_bytes}
    return {
        "topology": topology.name,
        "friendly_name": topology.friendly_name,
        "num_slices": topology.num_slices,
        "chips": topology.chips,
        "device_kind": devices[0].device_kind,
        "mesh": {k: int(v) for k, v in with_hooks.mesh.shape.items()},
        "model": {"params": model.num_params(), "tokens_per_step": tokens,
                  "model_flops_per_step": model_flops,
                  "model_flops_per_chip": model_flops / topology.chips},
        "chip": {"hbm_bytes": gen.hbm_bytes, "hbm_bytes_per_s": gen.hbm_bytes_per_s,
                 "peak_flops": peak, "peak_flops_source": peak_source},
        "memory_per_chip": mem,
        **sections,
        "hooks": shares,
        "notes": _notes(config, sections, shares),
    }


# ------------------------------------------------------------------------------ printing
def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _seconds(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 1:
        return f"{x:.3g} s"
    return f"{x * 1e3:.3g} ms" if x >= 1e-3 else f"{x * 1e6:.3g} us"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_report(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    m, mem, model = report["mesh"], report["memory_per_chip"], report["model"]
    slices = f", {report['num_slices']} slices" if report["num_slices"] > 1 else ""
    lines = [
        f"{report['topology']} ({report['friendly_name']}{slices}): {report['chips']} chips "
        f"{report['device_kind']}, mesh data={m['data']} fsdp={m['fsdp']} tensor={m['tensor']}",
        f"model {_si(model['params'])} params, {model['tokens_per_step']:,} tokens/step, "
        f"{_si(model['model_flops_per_step'], 'FLOP')}/step analytic (6N + attention)",
    ]
    unit, scale = ("GiB", GiB) if mem["total"] >= GiB else ("MiB", 2**20)
    lines += ["", f"{'memory per chip':<40}{unit:>10}"]
    rows = [("parameters", "params"), ("optimizer state", "optimizer_state"),
            ("other inputs (batch, hook data)", "other_inputs"),
            ("activations + temporaries", "temporaries"), ("outputs (not donated)", "outputs"),
            ("program code", "code"), ("total", "total"),
            ("total without hooks", "total_without_hooks")]
    lines += [f"  {label:<38}{mem[key] / scale:>10.3f}" for label, key in rows]
    verdict = "fits" if mem["fits"] else "DOES NOT FIT"
    lines.append(f"  {'HBM':<38}{mem['hbm'] / scale:>10.3f}   {_pct(mem['total'] / mem['hbm'])} "
                 f"used: {verdict}")
    w, wo, hooks = report["with_hooks"], report.get("without_hooks"), report["hooks"]
    lines += ["", f"{'per chip per step (estimates)':<40}{'with hooks':>14}"
              f"{'without hooks':>16}{'hooks share':>14}"]

    def row(label: str, key: str, fmt, share_key: str | None = None) -> str:
        share = _pct(hooks[share_key]) if share_key else ""
        return (f"  {label:<38}{fmt(w[key]):>14}{fmt(wo[key]) if wo else '-':>16}"
                f"{share:>14}")

    lines += [
        row("est. FLOPs, whole program / chips", "est_program_flops_per_chip",
            lambda x: _si(x, "FLOP"), "est_flops_share"),
        row("est. FLOPs, compiled for one chip", "est_flops_per_chip", lambda x: _si(x, "FLOP")),
        row("est. HBM bytes accessed (XLA)", "est_bytes_accessed_per_chip",
            lambda x: _si(x, "B"), "est_bytes_accessed_share"),
        row("est. step time", "est_step_seconds", _seconds, "est_step_time_share"),
        row("est. roofline time", "est_roofline_seconds", _seconds),
        row("est. program FLOPs / model FLOPs", "est_program_flops_vs_model", _ratio),
        row("est. MFU (model FLOPs / time / peak)", "est_mfu", _pct),
        row("compile time (this machine)", "compile_seconds", lambda x: f"{x:.1f} s"),
        "",
        f"est. step time source: {w['est_step_seconds_source']}; peak "
        f"{_si(report['chip']['peak_flops'], 'FLOP/s')} ({report['chip']['peak_flops_source']}),"
        f" HBM {_si(report['chip']['hbm_bytes_per_s'], 'B/s')}",
        f"hooks: {', '.join(hooks['names']) or 'none enabled (config.hooks.*.enabled)'}",
    ]
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def compile_command(config, topology: str, num_slices: int = 1, out: str = "") -> int:
    """`genjax compile`: prints the report, writes it as JSON to `out`; raises `CompileError`
    (exit status 2) for a bad topology or mesh, or when the step does not fit in HBM."""
    topo = parse_topology(topology, num_slices)
    report = compile_report(config, topo)
    print(format_report(report))
    if out:
        path = pathlib.Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {path}")
    mem = report["memory_per_chip"]
    if not mem["fits"]:
        gen = topo.generation
        raise CompileError(f"does not fit: needs {mem['total'] / GiB:.2f} GiB per chip, "
                           f"{gen.name} has {gen.hbm_gib:g} GiB")
    return 0
