"""Peak FLOP/s per device kind, analytic FLOPs of train steps and eval passes, MFU, and the
host allocator setting that CPU training needs."""

from __future__ import annotations

import ctypes
import time
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from genjax.model.transformer import ModelConfig

# Dense bf16 peak of one JAX device (vendor figures), matched as a lowercase substring of
# `device.device_kind` in this order, so that specific names come before general ones.
# TPU v2/v3 expose each TensorCore as a device: half a chip's figure.
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("tpu v2", 22.5e12),
    ("tpu v3", 61.5e12),
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),  # v5e
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),  # v5p reports "TPU v5"
    ("tpu v6 lite", 918e12),  # v6e (Trillium)
    ("tpu v6e", 918e12),
    ("tpu7x", 2307e12),  # Ironwood: half of its 4614 TFLOP/s FP8 figure
    ("h100 pcie", 756e12),
    ("h100 nvl", 835e12),
    ("gh200", 989e12),
    ("h200", 989e12),
    ("h100", 989e12),  # SXM
    ("h800", 989e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("l40s", 362e12),
    ("nvidia l4", 121e12),
    ("v100", 125e12),  # fp16 tensor cores; V100 has no bf16
)

_measured: dict[str, float] = {}


def measure_matmul_flops(n: int = 1024, repeats: int = 5, device: jax.Device | None = None,
                         dtype=jnp.float32) -> float:
    """Achieved FLOP/s of an n x n matmul on one device: the CPU's practical peak."""
    device = device or jax.devices()[0]
    a = jax.device_put(jnp.ones((n, n), dtype), device)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def peak_flops(device: jax.Device | None = None) -> tuple[float, str]:
    """(peak FLOP/s of one device, where the figure comes from).

    Known accelerators: the dense bf16 spec. Anything else (a CPU, an unlisted GPU): a measured
    f32 matmul, cached per device kind.
    """
    device = device or jax.devices()[0]
    kind = device.device_kind
    for name, flops in PEAK_FLOPS:
        if name in kind.lower():
            return flops, f"{kind}: bf16 dense spec"
    if kind not in _measured:
        _measured[kind] = measure_matmul_flops(device=device)
    return _measured[kind], f"measured {kind} f32 matmul"


def forward_flops(model: ModelConfig, rows: int, seq_len: int) -> float:
    """Analytic FLOPs of one forward pass over `rows` x `seq_len` tokens: a third of the
    training FLOPs of the same tokens (2P per token plus attention, against 6P)."""
    return rows * seq_len * model.flops_per_token(seq_len) / 3.0


def train_step_flops(model: ModelConfig, batch_size: int, seq_len: int) -> float:
    """Analytic FLOPs of one train step (forward and backward) over the global batch."""
    return batch_size * seq_len * model.flops_per_token(seq_len)


def mfu(flops_per_step: float, step_seconds: float, peak: float) -> float:
    """Model FLOPs utilization: analytic FLOPs per second over the peak of all devices used."""
    return flops_per_step / step_seconds / peak


def keep_large_allocations_in_heap() -> bool:
    """Makes glibc's malloc serve large blocks from its heap, never from fresh mmaps, and keep
    freed memory. XLA:CPU allocates an executable's temporary buffer on every call; glibc maps
    blocks above its mmap threshold (which it never raises past 32 MiB) afresh and unmaps
    them on free, so each step page-faults the whole buffer in again: 9,000 faults and ~25 ms
    of kernel time per step for a 36 MiB buffer (benchmarks/README.md). Process-wide, so it is
    for an application's entry point (`genjax train`, the benchmarks), never done at import.
    Returns False where the C library is not glibc."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**30))
