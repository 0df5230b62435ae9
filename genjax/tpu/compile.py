"""`genjax compile`: compile a config for a TPU slice on a machine without a TPU.

libtpu describes any slice (`v5e:4x4`, `v5p-128`, several slices) as compile-only devices; the
train step is lowered from sharded abstract arguments and compiled by the real TPU compiler,
so nothing is allocated. XLA's reports give per-chip memory (`memory_analysis`) and a cost
model (`cost_analysis`: FLOPs, HBM bytes accessed, `optimal_seconds`). The step is compiled
twice, with and without the config's hooks, so the difference is what monitoring costs.

Cost-model figures are estimates, and labelled so: they leave out most communication and all
host time. XLA's cost model counts a loop's body once (scanned layers, the chunked
cross-entropy, hook micro-batches, `train.grad_accum`), so the estimates come from the same step
compiled with every loop unrolled (`model.scan_layers=False`, each `lax.scan` / `lax.map` traced
with `unroll=True`: `unrolled_loops`); memory and compile time come from the program that runs.
It also gives Pallas kernels (splash attention: `tpu_custom_call`s) no FLOPs and no time: their
FLOPs are counted analytically from the kernel calls in the compiled HLO (`splash_kernel_cost`)
and their time added at an assumed fraction of peak (`kernel_efficiency`). On larger slices the
compiled per-chip FLOPs also miss matmuls that XLA splits into collective pieces (measured:
a sharded MLP counts 1.00x its matmul FLOPs on v5e:2x2, 0.71x on v5e:4x4), so FLOPs are also
counted on the whole unpartitioned step (lowered for one CPU device, never compiled); hook
FLOP shares come from that count, and the report flags chips that compute more or less than
an even split of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import json
import math
import os
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from genjax import paths

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


# ------------------------------------------------------------------------------ measuring
DEFAULT_KERNEL_EFFICIENCY = 0.5  # assumed fraction of peak for Pallas kernels: not a measurement

# Matmuls in each splash kernel (jax.experimental.pallas.ops.tpu.splash_attention, separate dq
# and dkv backward kernels), each 2 * T_q * T_kv * head_dim FLOPs per row and query head over
# the mask's visible part: fwd QK^T, PV; dq recomputes QK^T, then dO V^T, dS K; dkv recomputes
# QK^T, then P^T dO, dO V^T, dS^T Q. A forward that remat recomputes is one more fwd call.
SPLASH_MATMULS = {"fwd": 2, "dq": 3, "dkv": 4}
_CUSTOM_CALL = re.compile(r'^\s*(?:ROOT )?%(\S+) = .*custom_call_target="tpu_custom_call"', re.M)
_SPLASH_NAME = re.compile(r"splash_mha_(fwd|dq|dkv)")
_FLOAT_SHAPE = re.compile(r"\b(?:bf16|f16|f32)\[([\d,]+)\]")


@dataclasses.dataclass
class KernelCost:
    """Pallas kernels in a compiled program, which XLA's cost model gives no FLOPs or time."""

    calls: dict[str, int] = dataclasses.field(default_factory=dict)  # splash calls by kind
    flops: float = 0.0  # per chip, analytic, over each mask's visible part (causal: ~half)
    block_flops: float = 0.0  # the same over the whole blocks the kernels compute
    other_calls: int = 0  # tpu_custom_calls that are not splash kernels: not accounted

    @property
    def splash_calls(self) -> int:
        return sum(self.calls.values())


def mask_fractions(t: int) -> tuple[float, float]:
    """(visible fraction of the T x T square, fraction of its blocks that splash computes) of
    the causal mask."""
    from genjax.model.attention import splash_block

    mask = np.tril(np.ones((t, t), np.bool_))
    b = splash_block(t)
    blocks = mask.reshape(t // b, b, t // b, b).any(axis=(1, 3))
    return float(mask.mean()), float(blocks.mean())


def splash_kernel_cost(hlo_text: str) -> KernelCost:
    """Analytic FLOPs of the splash kernel calls in a compiled TPU program's HLO text (counted
    once per call site: compile with loops unrolled). Shapes come from each call's operand
    layouts, q [B, N, T_q, H] then k [B, K, T_kv, H]; every call's static mask is causal.
    Segment ids (packed probe rows) mask more inside the blocks the causal mask keeps: their
    visible FLOPs are counted as causal, an upper bound, and the blocks computed are the same."""
    cost = KernelCost()
    for m in _CUSTOM_CALL.finditer(hlo_text):
        kind = _SPLASH_NAME.match(m.group(1))
        line = hlo_text[m.start():hlo_text.find("\n", m.start())]
        if kind is None:
            cost.other_calls += 1
            continue
        operands = line.split("operand_layout_constraints={", 1)
        shapes = [tuple(int(d) for d in s.split(","))
                  for s in _FLOAT_SHAPE.findall(operands[1] if len(operands) > 1 else "")]
        shapes = [s for s in shapes if len(s) >= 3]
        if len(shapes) < 2:
            cost.other_calls += 1
            continue
        (*lead, n, tq, h), (*_, tk, _) = shapes[0], shapes[1]
        visible, blocks = mask_fractions(tq) if tq == tk else (1.0, 1.0)
        full = SPLASH_MATMULS[kind.group(1)] * 2.0 * math.prod(lead) * n * tq * tk * h
        cost.calls[kind.group(1)] = cost.calls.get(kind.group(1), 0) + 1
        cost.flops += full * visible
        cost.block_flops += full * blocks
    return cost


@contextlib.contextmanager
def unrolled_loops():
    """While tracing: every `jax.lax.scan` fully unrolled and `jax.lax.map` run as one, so the
    compiled program has no while loop whose body XLA's cost model would count once."""
    import jax

    scan, lax_map = jax.lax.scan, jax.lax.map

    @functools.wraps(scan)
    def unrolled_scan(f, init, xs=None, length=None, **kwargs):
        kwargs["unroll"] = True
        return scan(f, init, xs, length, **kwargs)

    @functools.wraps(lax_map)
    def unrolled_map(f, xs, *, batch_size=None):
        if batch_size is not None:
            return lax_map(f, xs, batch_size=batch_size)
        return unrolled_scan(lambda carry, x: (carry, f(x)), (), xs)[1]

    jax.lax.scan, jax.lax.map = unrolled_scan, unrolled_map
    try:
        yield
    finally:
        jax.lax.scan, jax.lax.map = scan, lax_map


def estimate_config(config):
    """The config whose step, compiled under `unrolled_loops`, gives the estimates: the same
    step with a Python loop over layers (each block's remat keeps `prevent_cse`)."""
    est = config.copy_and_resolve_references()
    est.model.scan_layers = False
    return est


def _attention_standin(q, k, v, prefix=None):
    """Attention's shapes and gradient paths at ~no FLOPs: where the TPU program runs splash
    kernels, the CPU count leaves them out and `splash_kernel_cost` adds them."""
    del prefix
    import jax.numpy as jnp

    return q + jnp.repeat(k + v, q.shape[2] // k.shape[2], axis=2)


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
    kernels: KernelCost = dataclasses.field(default_factory=lambda: KernelCost())
    loops: int = 0  # while loops in the compiled HLO (each body counted once by the cost model)
    unrolled: bool = False  # compiled under `unrolled_loops` (for the estimates)

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


def compile_program(program, topology: Topology, unrolled: bool = False,
                    hlo_out: list | None = None) -> ProgramCost:
    """Compiles `program.step_fn` from abstract arguments; per-chip memory and cost, and the
    splash kernels in its HLO. `unrolled`: traced under `unrolled_loops` (for the estimates);
    `hlo_out`: a list that receives the compiled HLO text."""
    import jax

    start = time.perf_counter()
    try:
        with unrolled_loops() if unrolled else contextlib.nullcontext():
            lowered = program.step_fn.lower(*program.abstract_args())
        compiled = lowered.compile()
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
    hlo = compiled.as_text()
    if hlo_out is not None:
        hlo_out.append(hlo)
    return ProgramCost(
        argument_bytes=int(mem.argument_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
        code_bytes=int(mem.generated_code_size_in_bytes), flops=float(cost.get("flops", 0.0)),
        bytes_accessed=float(cost.get("bytes accessed", 0.0)),
        est_compiler_seconds=float(optimal) if optimal and optimal > 0 else None,
        compile_seconds=seconds,
        kernels=splash_kernel_cost(hlo),
        loops=len(re.findall(r" while\(", hlo)), unrolled=unrolled)


def whole_program_flops(config, data, hooks: Sequence[Any],
                        kernels_as_standin: bool = False) -> float | None:
    """XLA's FLOP count of the whole, unpartitioned step, hooks included: the same program
    lowered (not compiled) for one CPU device, where sharding is a no-op, with every loop
    unrolled (`estimate_config`, `unrolled_loops`: a loop body would count once). It counts
    every matmul once, however the TPU compiler later splits it; None if the backend cannot
    say. `kernels_as_standin`: attention is a FLOP-free stand-in with the same shapes and
    gradient paths, for a TPU program whose attention runs in splash kernels (add their
    FLOPs, `splash_kernel_cost`, to this count)."""
    import jax

    from genjax.model import attention
    from genjax.train.trainer import TrainProgram

    try:
        cpu = jax.devices("cpu")[:1]
    except RuntimeError:  # JAX_PLATFORMS without cpu
        return None
    single = estimate_config(config)
    single.mesh.update(data=1, fsdp=1, tensor=1)
    if kernels_as_standin:
        single.model.attention = "xla"
    make = attention.make_attention
    if kernels_as_standin:
        attention.make_attention = lambda *args, **kwargs: _attention_standin
    try:
        program = TrainProgram(single, data=data, hooks=hooks, devices=cpu)
    finally:
        attention.make_attention = make
    with unrolled_loops():
        lowered = program.step_fn.lower(*program.abstract_args())
    cost = lowered.cost_analysis()
    return float(cost["flops"]) if cost and "flops" in cost else None


def _share(with_hooks: float | None, without: float | None) -> float | None:
    if not with_hooks or without is None:
        return None
    return (with_hooks - without) / with_hooks


def _cost_section(cost: ProgramCost, whole_flops: float | None, chips: int, peak: float,
                  bandwidth: float, model_flops: float, compiler_time: bool,
                  est: ProgramCost | None = None,
                  kernel_efficiency: float = DEFAULT_KERNEL_EFFICIENCY) -> dict[str, Any]:
    """Per-chip estimates of one program: memory and compile time from `cost` (the program
    that runs), FLOPs, bytes and time from `est` (the same step with its loops unrolled;
    default `cost`). `whole_flops`: XLA's count of the unpartitioned step without the splash
    kernels, whose analytic FLOPs (`est.kernels`) are added, their time at `kernel_efficiency`
    of peak. `compiler_time`: use XLA's `optimal_seconds` for the rest (only when every
    compared program has one, so that time shares compare like with like)."""
    est = est or cost
    kernels = est.kernels
    whole = whole_flops + kernels.flops * chips if whole_flops is not None else None
    even_xla = whole_flops / chips if whole_flops is not None else None
    xla_flops = max(est.flops, even_xla or 0.0)  # the compiled count can miss split matmuls
    xla_roofline = max(xla_flops / peak, est.bytes_accessed / bandwidth)
    kernel_seconds = kernels.flops / (kernel_efficiency * peak)
    xla_seconds = est.est_compiler_seconds if compiler_time else xla_roofline
    est_seconds = xla_seconds + kernel_seconds
    source = ("XLA cost model (optimal_seconds)" if compiler_time
              else "roofline max(FLOPs / peak, bytes accessed / HBM bandwidth), FLOPs the "
                   "larger of the compiled count and the whole program's split evenly")
    if kernels.splash_calls:
        source += (f" + splash kernels' analytic FLOPs at {kernel_efficiency:.0%} of peak "
                   f"(assumed)")
    return {
        "est_flops_per_chip": est.flops + kernels.flops,
        "est_program_flops_per_chip": whole / chips if whole is not None else None,
        "est_program_flops_vs_model": whole / model_flops if whole else None,
        "est_kernel_flops_per_chip": kernels.flops,
        "est_kernel_block_flops_per_chip": kernels.block_flops,
        "splash_kernel_calls": dict(kernels.calls),
        "other_custom_calls": kernels.other_calls,
        "est_bytes_accessed_per_chip": est.bytes_accessed,
        "est_step_seconds": est_seconds,
        "est_step_seconds_source": source,
        "est_xla_seconds": xla_seconds,
        "est_compiler_seconds": est.est_compiler_seconds,  # optimal_seconds (None: unusable)
        "est_kernel_seconds": kernel_seconds,
        "est_roofline_seconds": xla_roofline + kernel_seconds,
        "est_mfu": (model_flops / chips / (est_seconds * peak) if est_seconds and est_seconds > 0
                    else None),
        "peak_memory_bytes_per_chip": cost.total_bytes,
        "compile_seconds": round(cost.compile_seconds, 2),
        "estimate_compiled_unrolled": est.unrolled,
        "estimate_compile_seconds": round(est.compile_seconds, 2) if est is not cost else None,
        "loops_in_program": cost.loops,
        "program_xla_flops_per_chip": cost.flops,  # the running program: loop bodies once
        "loops_in_estimate": est.loops,
    }


def _hook_shares(hooks: Sequence[Any], units: Sequence[Any],
                 sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """(with - without) / with, per chip: FLOPs from the whole-program count when there is one
    (the compiled counts can miss split matmuls), bytes and time from the compiled programs.
    `units`: the hooks as they run (eval hooks sharing a pass joined by "+")."""
    w, wo = sections["with_hooks"], sections.get("without_hooks", {})
    flops_key = ("est_program_flops_per_chip" if w["est_program_flops_per_chip"]
                 else "est_flops_per_chip")
    return {
        "names": [h.name for h in hooks],
        "units": [u.name for u in units],
        "est_flops_share": _share(w[flops_key], wo.get(flops_key)),
        "est_bytes_accessed_share": _share(w["est_bytes_accessed_per_chip"],
                                           wo.get("est_bytes_accessed_per_chip")),
        "est_step_time_share": _share(w["est_step_seconds"], wo.get("est_step_seconds")),
        "memory_share": _share(w["peak_memory_bytes_per_chip"],
                               wo.get("peak_memory_bytes_per_chip")),
    }


def _notes(config, sections: dict[str, dict[str, Any]],
           shares: dict[str, Any]) -> list[str]:
    """Caveats that apply to this report's estimates."""
    notes = ["est_*: XLA's cost model, not a measurement: it leaves out most inter-chip "
             "communication and all host time"]
    w = sections["with_hooks"]
    if w.get("estimate_compiled_unrolled"):
        notes.append(f"loops: the program that runs has {w['loops_in_program']} while loops "
                     f"(scanned layers, loss chunks, hook micro-batches, grad_accum), whose "
                     f"bodies XLA's cost model counts once; FLOPs, bytes and time come from the "
                     f"same step compiled with every loop unrolled (model.scan_layers=False, "
                     f"lax.scan/lax.map unrolled; {w['loops_in_estimate']} loops left), memory "
                     f"and compile time from the program that runs")
    elif w.get("loops_in_program"):
        notes.append(f"loops: the program has {w['loops_in_program']} while loops whose bodies "
                     f"XLA's cost model counts once, and no unrolled estimate was compiled: "
                     f"FLOPs, bytes and time are undercounted")
    if w.get("splash_kernel_calls") or w.get("other_custom_calls"):
        k, ratio = w["splash_kernel_calls"], None
        if w["est_kernel_flops_per_chip"]:
            ratio = w["est_kernel_block_flops_per_chip"] / w["est_kernel_flops_per_chip"]
        calls = ", ".join(f"{n} {kind}" for kind, n in sorted(k.items())) or "none"
        notes.append(f"kernels: {sum(k.values())} splash attention kernel calls per chip per "
                     f"step ({calls}; tpu_custom_call in the compiled HLO), which XLA's cost "
                     f"model gives no FLOPs or time: their FLOPs are counted analytically "
                     f"(fwd 2, dq 3, dkv 4 matmuls of 2*B*heads*T*T*head_dim, times the mask's "
                     f"visible fraction: causal ~1/2, also for packed rows, whose segment ids "
                     f"mask more: an upper bound), "
                     f"{_si(w['est_kernel_flops_per_chip'], 'FLOP')} per chip, and their time "
                     f"added at an assumed fraction of peak: {_seconds(w['est_kernel_seconds'])}"
                     f" (an assumption, not a measurement)"
                     + (f"; the kernels compute whole blocks, {ratio:.2f}x the visible FLOPs"
                        if ratio else ""))
        if w["other_custom_calls"]:
            notes.append(f"kernels: {w['other_custom_calls']} other tpu_custom_calls have no "
                         f"FLOPs or time in these estimates")
    optimal = {name.replace("_", " "): sec.get("est_compiler_seconds")
               for name, sec in sections.items()}
    if any(optimal.values()) and not all(optimal.values()):
        said = ", ".join(f"{k} {_seconds(v) if v else 'none (absent or not positive)'}"
                         for k, v in optimal.items())
        notes.append(f"time: XLA's optimal_seconds ({said}) is not usable for every program, "
                     f"so all are timed by the roofline, to compare like with like")
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


def compile_report(config, topology: Topology, hooks: Sequence[Any] | None = None,
                   kernel_efficiency: float = DEFAULT_KERNEL_EFFICIENCY,
                   estimates: bool = True) -> dict[str, Any]:
    """Compiles the train step with and without its hooks (the config's, or `hooks`) for
    `topology` and returns the per-chip report as a JSON-ready dict. Raises `CompileError`
    when the mesh does not match the slice or the compiler runs out of HBM; a step that
    compiles but exceeds HBM comes back with `fits` False (see `compile_command`).

    Memory and compile time are the program's that runs; when it has loops, FLOPs, bytes and
    time come from the same step compiled again with every loop unrolled (`estimate_config`,
    `unrolled_loops`), splash kernels added analytically at `kernel_efficiency` of peak.
    `estimates=False` skips the unrolled compiles and the whole-program count (memory and
    compile time stay exact; FLOPs, bytes and time then count each loop body once and the
    report's notes say so)."""
    if not 0 < kernel_efficiency <= 1:
        raise CompileError(f"kernel_efficiency must be in (0, 1], got {kernel_efficiency}")
    from genjax.model import ModelConfig
    from genjax.perf import peak_flops
    from genjax.sharding import MeshError
    from genjax.train.trainer import TrainProgram

    devices = topology_devices(topology)
    gen = topology.generation

    def program(**kwargs) -> TrainProgram:
        try:
            return TrainProgram(config, devices=devices, **kwargs)
        except MeshError as e:
            raise CompileError(f"{topology.describe()}, {topology.chips} chips: {e}") from e

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

    failed: list[str] = []

    def estimate(c: ProgramCost, program_hooks: Sequence[Any]) -> ProgramCost:
        """The same step with every loop unrolled (the program itself when it has none)."""
        if not c.loops or not estimates:
            return c
        unrolled = TrainProgram(estimate_config(config), devices=devices,
                                data=with_hooks.data, hooks=program_hooks)
        try:
            return compile_program(unrolled, topology, unrolled=True)
        except CompileError as e:  # e.g. the unrolled program needs more HBM than it has
            failed.append(str(e))
            return c

    est_cost = estimate(cost, with_hooks.hooks)
    est_bare = estimate(bare_cost, []) if bare_cost is not None else None
    compiler_time = all(c.est_compiler_seconds for c in (est_cost, est_bare) if c is not None)
    standin = with_hooks.attention == "splash"

    def section(c: ProgramCost, e: ProgramCost, program_hooks: Sequence[Any]) -> dict[str, Any]:
        whole = (whole_program_flops(config, with_hooks.data, program_hooks,
                                     kernels_as_standin=standin) if estimates else None)
        return _cost_section(c, whole, topology.chips, peak, gen.hbm_bytes_per_s, model_flops,
                             compiler_time, est=e, kernel_efficiency=kernel_efficiency)

    sections = {"with_hooks": section(cost, est_cost, with_hooks.hooks)}
    if bare_cost is not None:
        sections["without_hooks"] = section(bare_cost, est_bare, [])
    shares = _hook_shares(with_hooks.hooks, with_hooks.monitor.units, sections)
    mem = {"params": params_bytes, "optimizer_state": opt_bytes,
           "hook_data": bytes_per_chip(with_hooks.abstract_args()[2]),
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
                  "model_flops_per_chip": model_flops / topology.chips,
                  "model_seconds_at_peak": model_flops / topology.chips / peak},
        "attention": with_hooks.attention,
        "chip": {"hbm_bytes": gen.hbm_bytes, "hbm_bytes_per_s": gen.hbm_bytes_per_s,
                 "peak_flops": peak, "peak_flops_source": peak_source},
        "kernel_efficiency": kernel_efficiency,
        "memory_per_chip": mem,
        **sections,
        "hooks": shares,
        "notes": _notes(config, sections, shares) + [
            f"loops: the unrolled estimate did not compile ({e}); FLOPs, bytes and time are "
            f"those of the program that runs, its loop bodies counted once" for e in failed],
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
        f"{_si(model['model_flops_per_step'], 'FLOP')}/step analytic (6N + causal attention "
        f"at half), {_seconds(model['model_seconds_at_peak'])} per step at peak (the FLOP "
        f"bound); attention {report['attention']}",
    ]
    unit, scale = ("GiB", GiB) if mem["total"] >= GiB else ("MiB", 2**20)
    lines += ["", f"{'memory per chip':<40}{unit:>10}"]
    rows = [("parameters", "params"), ("optimizer state", "optimizer_state"),
            ("other inputs (batch, hook data)", "other_inputs"),
            ("  of which hook data", "hook_data"),
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
        row("  of which splash kernels (analytic)", "est_kernel_flops_per_chip",
            lambda x: _si(x, "FLOP")),
        row("est. HBM bytes accessed (XLA)", "est_bytes_accessed_per_chip",
            lambda x: _si(x, "B"), "est_bytes_accessed_share"),
        row("est. step time", "est_step_seconds", _seconds, "est_step_time_share"),
        row("  of which splash kernels (assumed)", "est_kernel_seconds", _seconds),
        row("est. roofline time", "est_roofline_seconds", _seconds),
        row("est. program FLOPs / model FLOPs", "est_program_flops_vs_model", _ratio),
        row("est. MFU (model FLOPs / time / peak)", "est_mfu", _pct),
        row("peak memory", "peak_memory_bytes_per_chip", lambda x: f"{x / GiB:.2f} GiB",
            "memory_share"),
        row("compile time (this machine)", "compile_seconds", lambda x: f"{x:.1f} s"),
        row("  unrolled estimate's compile time", "estimate_compile_seconds",
            lambda x: "-" if x is None else f"{x:.1f} s"),
        "",
        f"est. step time source: {w['est_step_seconds_source']}; peak "
        f"{_si(report['chip']['peak_flops'], 'FLOP/s')} ({report['chip']['peak_flops_source']}),"
        f" HBM {_si(report['chip']['hbm_bytes_per_s'], 'B/s')}; splash kernels at "
        f"{report['kernel_efficiency']:.0%} of peak (assumed: --kernel_efficiency)",
        f"hooks: {', '.join(hooks['names']) or 'none enabled (config.hooks.*.enabled)'}"
        + (f" (run as: {', '.join(hooks['units'])})"
           if hooks.get("units", hooks["names"]) != hooks["names"] else ""),
    ]
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def compile_command(config, topology: str, num_slices: int = 1, out: str = "",
                    kernel_efficiency: float = DEFAULT_KERNEL_EFFICIENCY) -> int:
    """`genjax compile`: prints the report, writes it as JSON to `out`; raises `CompileError`
    (exit status 2) for a bad topology or mesh, or when the step does not fit in HBM.
    `kernel_efficiency`: the fraction of peak assumed for splash kernels' FLOPs."""
    topo = parse_topology(topology, num_slices)
    report = compile_report(config, topo, kernel_efficiency=kernel_efficiency)
    print(format_report(report))
    if out:
        path = paths.as_path(out)  # local or gs://
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {path}")
    mem = report["memory_per_chip"]
    if not mem["fits"]:
        gen = topo.generation
        raise CompileError(f"does not fit: needs {mem['total'] / GiB:.2f} GiB per chip, "
                           f"{gen.name} has {gen.hbm_gib:g} GiB")
    return 0
