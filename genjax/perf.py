"""Peak FLOP/s per device kind and MFU from analytic FLOPs."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

# Dense bf16 peak per chip/GPU (vendor figures).
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
    "A100": 312e12,
    "H100": 989e12,
    "H200": 989e12,
}

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
    """(peak FLOP/s of one device, where the figure comes from)."""
    device = device or jax.devices()[0]
    kind = device.device_kind
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return flops, f"{name} bf16 spec"
    if kind not in _measured:
        _measured[kind] = measure_matmul_flops(device=device)
    return _measured[kind], f"measured {kind} f32 matmul"
