"""Causal self-attention behind one signature: XLA, splash (TPU Pallas) or cuDNN (GPU flash).

`make_attention(name, mesh, rules)` returns `attend(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH,
segments_BxT=None) -> out_BxTxNxH`: grouped-query (N % K == 0), q not pre-scaled (1/sqrt(H) is
applied inside, as `jax.nn.dot_product_attention` does). `segments_BxT=None` is plain causal
attention; with segment ids (int32, one id per packed sequence, 0 for padding) a token sees
the earlier tokens of its own segment only, so that several sequences packed into one row are
each computed exactly as if alone (their positions must restart too: the caller's job).

- "xla": `jax.nn.dot_product_attention`; `is_causal=True`, or the explicit [B, T, T] boolean
  `segment_mask`. Runs everywhere; writes [B, N, T, T] scores to memory.
- "cudnn": the same call with `implementation="cudnn"` (flash attention). Needs a CUDA GPU with
  cuDNN and bf16/fp16 inputs: jax 0.10.2's cuDNN path raises NotImplementedError for float32 q
  and RuntimeError("cuDNN is not detected.") while tracing on a host without the CUDA plugin.
  float32 inputs are refused with a ValueError here rather than cast silently, since a float32
  compute dtype asks for float32 numerics; `resolve("auto", "gpu", dtype)` picks "xla" for them.
- "splash": `jax.experimental.pallas.ops.tpu.splash_attention`, TPU only (on CPU only with
  `interpret=True`, for tests). The static mask is causal, with whole masked blocks skipped;
  segment ids go to the kernel's `SegmentIds` (they mask inside the blocks the causal mask
  keeps, and skip none). T must be a multiple of 128 (ValueError otherwise); blocks are the
  largest of 512/256/128 dividing T. GQA uses the MHA kernel with un-repeated K/V: the kernel
  maps query head h to kv head h // (N // K) in its forward and backward index maps, so K/V are
  never repeated in HBM and dK/dV accumulate over the group inside the kernel. (Compile-only
  for v5e:2x2, fsdp 2 x tensor 2, bf16 B=4 T=2048 N=16 K=4 H=128, forward + backward: XLA's
  cost model puts the ops around the kernels at 157 MiB of HBM traffic per chip with un-repeated
  K/V, 189 MiB with K/V repeated to N heads; the kernels themselves are not counted.)
  With a mesh the kernel runs under `jax.shard_map`: batch over the mesh axes that the rules
  give "batch", heads over those of "heads"/"kv_heads" (an axis is dropped when it does not
  divide the dimension), the sequence never split; kernels are built for the local head count.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

IMPLEMENTATIONS = ("auto", "xla", "splash", "cudnn")
SPLASH_BLOCKS = (512, 256, 128)  # tried in order; the first dividing T is used

# (q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, segments_BxT: jax.Array | None = None) -> out_BxTxNxH
AttentionFn = Callable[..., jax.Array]


def segment_mask(segments_BxT: jax.Array) -> jax.Array:
    """[B, T, T] attention: causal, and only within a token's own segment (padding, segment 0,
    sees earlier padding: never all-masked, and no real token sees it)."""
    t = segments_BxT.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))
    return causal & (segments_BxT[:, :, None] == segments_BxT[:, None, :])


def resolve(implementation: str, platform: str, dtype=None, seq_len: int | None = None) -> str:
    """"auto" -> splash on tpu (xla there when `seq_len` is given and no splash block divides
    it), cudnn on gpu (xla there when `dtype` is given and is neither bf16 nor fp16, which
    cuDNN refuses), xla elsewhere; other names are checked and returned."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"model.attention must be one of {', '.join(IMPLEMENTATIONS)}; "
                         f"got {implementation!r}")
    if implementation != "auto":
        return implementation
    if platform == "tpu":
        return "xla" if seq_len is not None and seq_len % SPLASH_BLOCKS[-1] else "splash"
    if platform in ("gpu", "cuda"):
        if dtype is not None and jnp.dtype(dtype) not in (jnp.bfloat16, jnp.float16):
            return "xla"
        return "cudnn"
    return "xla"


def make_attention(implementation: str, mesh: Mesh | None = None,
                   rules: Sequence = (), interpret: bool = False) -> AttentionFn:
    """The attention function for a resolved implementation name ("auto" resolves against
    the default backend). `mesh`/`rules` are used by splash only (its shard_map); `interpret`
    runs the splash kernels in the Pallas interpreter (CPU tests)."""
    if implementation == "auto":
        implementation = resolve("auto", jax.default_backend())
    resolve(implementation, "")  # validates the name
    if implementation == "xla":
        return _xla_attention
    if implementation == "cudnn":
        return _cudnn_attention
    return functools.partial(_splash_attention, mesh=mesh, rules=tuple(rules),
                             interpret=interpret)


def _check_shapes(q, k, v) -> None:
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4:
        raise ValueError(f"attention wants q [B, T, N, H] and k, v [B, T, K, H]; got q "
                         f"{q.shape}, k {k.shape}, v {v.shape}")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3] or q.shape[2] % k.shape[2]:
        raise ValueError(f"q {q.shape} and k/v {k.shape} must share B, T and H, with the "
                         f"query heads a multiple of the kv heads")


def _check_segments(segments_BxT: jax.Array, q: jax.Array) -> None:
    if segments_BxT.shape != q.shape[:2]:
        raise ValueError(f"segment ids {segments_BxT.shape} do not match q's [B, T] "
                         f"{q.shape[:2]}")


def _xla_attention(q, k, v, segments_BxT=None):
    _check_shapes(q, k, v)
    if segments_BxT is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    _check_segments(segments_BxT, q)
    return jax.nn.dot_product_attention(q, k, v, mask=segment_mask(segments_BxT)[:, None])


def _cudnn_attention(q, k, v, segments_BxT=None):
    _check_shapes(q, k, v)
    if jnp.dtype(q.dtype) not in (jnp.bfloat16, jnp.float16):
        raise ValueError(f"attention 'cudnn' needs bfloat16 or float16 q/k/v, got {q.dtype}: "
                         f"set model.compute_dtype=bfloat16 or model.attention=xla")
    if segments_BxT is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
    _check_segments(segments_BxT, q)
    mask = segment_mask(segments_BxT)[:, None]  # already causal; is_causal skips blocks
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                        implementation="cudnn")


# ------------------------------------------------------------------------------- splash
def splash_block(t: int) -> int:
    """The splash block size for sequence length t (ValueError unless 128 divides t)."""
    for b in SPLASH_BLOCKS:
        if t % b == 0:
            return b
    raise ValueError(f"splash attention needs a sequence length that is a multiple of 128, "
                     f"got {t}: pad the rows (on the left for probe rows) or use "
                     f"model.attention=xla")


@functools.lru_cache(maxsize=64)
def _splash_kernel(t: int, heads: int, interpret: bool):
    """The causal splash MHA kernel for `heads` local query heads, built once per shape."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    b = splash_block(t)
    blocks = sa.BlockSizes(block_q=b, block_kv=b, block_kv_compute=b, block_q_dkv=b,
                           block_kv_dkv=b, block_kv_dkv_compute=b, block_q_dq=b, block_kv_dq=b)
    # Built eagerly (not staged into the caller's trace) and kept as numpy, so the cached
    # kernel is a constant that any later trace, for any backend, can embed.
    with jax.ensure_compile_time_eval():
        kernel = sa.make_splash_mha(sa.MultiHeadMask([sa.CausalMask((t, t))] * heads),
                                    block_sizes=blocks, head_shards=1, q_seq_shards=1,
                                    interpret=interpret)
    return jax.tree.map(np.asarray, kernel)


def _mesh_axes(spec_entry) -> tuple[str, ...]:
    if spec_entry is None:
        return ()
    return (spec_entry,) if isinstance(spec_entry, str) else tuple(spec_entry)


def _fit(mesh: Mesh, axes: tuple[str, ...], *dims: int):
    """`axes` as a PartitionSpec entry if their product divides every dim, else None."""
    n = math.prod(mesh.shape[a] for a in axes)
    if not axes or any(d % n for d in dims):
        return None
    return axes[0] if len(axes) == 1 else axes


def _splash_specs(mesh: Mesh, rules, b: int, n: int, kv: int):
    """(batch entry, heads entry) of the [B, heads, T, H] shard_map specs: q and k/v heads are
    split over the same mesh axes (those of "heads"), so each shard holds whole GQA groups."""
    from genjax.sharding import logical_to_spec

    batch_axes = _mesh_axes(logical_to_spec(("batch",), rules)[0])
    head_axes = _mesh_axes(logical_to_spec(("heads",), rules)[0])
    head_axes = tuple(a for a in head_axes if a not in batch_axes)
    return _fit(mesh, batch_axes, b), _fit(mesh, head_axes, n, kv)


def _splash_attention(q, k, v, segments_BxT=None, *, mesh: Mesh | None, rules: tuple,
                      interpret: bool):
    _check_shapes(q, k, v)
    b, t, n, h = q.shape
    kv = k.shape[2]
    splash_block(t)
    if segments_BxT is not None:
        _check_segments(segments_BxT, q)
    # [B, T, heads, H] -> [B, heads, T, H]; the kernel gets unscaled logits, so scale q here.
    q_BxNxTxH = jnp.swapaxes(q * jnp.asarray(h ** -0.5, q.dtype), 1, 2)
    k_BxKxTxH, v_BxKxTxH = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
    ids_BxT = None if segments_BxT is None else segments_BxT.astype(jnp.int32)

    def local(q_BxNxTxH, k_BxKxTxH, v_BxKxTxH, *ids):
        kernel = _splash_kernel(t, q_BxNxTxH.shape[1], interpret)
        if not ids:
            return jax.vmap(kernel)(q_BxNxTxH, k_BxKxTxH, v_BxKxTxH)
        from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

        return jax.vmap(lambda q1, k1, v1, i1: kernel(q1, k1, v1, SegmentIds(i1, i1)))(
            q_BxNxTxH, k_BxKxTxH, v_BxKxTxH, ids[0])

    args = (q_BxNxTxH, k_BxKxTxH, v_BxKxTxH) + (() if ids_BxT is None else (ids_BxT,))
    if mesh is not None:
        batch, heads = _splash_specs(mesh, rules, b, n, kv)
        qkv_spec = PartitionSpec(batch, heads, None, None)
        specs = (qkv_spec,) * 3 + (() if ids_BxT is None else (PartitionSpec(batch, None),))
        local = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=qkv_spec,
                              check_vma=False)
    return jnp.swapaxes(local(*args), 1, 2)
