"""genjax.model.attention: the splash kernels (Pallas interpreter on CPU) against the XLA path,
segment ids (packed rows), and a compile-only splash program for a TPU topology."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from genjax.model.attention import make_attention, resolve, segment_mask, splash_block
from genjax.sharding import make_mesh

# Before anything in this session loads libtpu (see tests/tpu/test_compile.py).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason='needs libtpu: pip install -e ".[tpu]"')
RULES = (("batch", ("data", "fsdp")), ("heads", "tensor"), ("kv_heads", "tensor"))
# float32, T=256, N=4, K=2, H=32, interpreter vs XLA: measured max |diff| 7.2e-7 (outputs) and
# 4.5e-6 (gradients, whose entries reach 15); the tolerances leave about 3x / 2x of that.
FWD_ATOL, GRAD_ATOL = 2e-6, 1e-5


def qkv(b=2, t=256, n=4, kv=2, h=32, dtype=jnp.float32, seed=0):
    kq, kk, kv_ = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(kq, (b, t, n, h), dtype), jax.random.normal(kk, (b, t, kv, h), dtype),
            jax.random.normal(kv_, (b, t, kv, h), dtype))


def packed_segments(b: int, t: int, seed: int = 0) -> np.ndarray:
    """Rows of consecutive segments 1, 2, ... of random lengths, then padding (segment 0)."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((b, t), np.int32)
    for i in range(b):
        start, sid = 0, 1
        end = rng.integers(t // 2, t + 1)
        while start < end:
            n = int(rng.integers(1, t // 3))
            seg[i, start:min(start + n, end)] = sid
            start, sid = start + n, sid + 1
    return seg


def test_resolve():
    assert resolve("auto", "cpu") == "xla"
    assert resolve("auto", "tpu") == "splash"
    assert resolve("auto", "tpu", seq_len=2048) == "splash"
    assert resolve("auto", "tpu", seq_len=32) == "xla"  # no splash block divides 32
    assert resolve("auto", "gpu") == "cudnn"
    assert resolve("auto", "gpu", jnp.bfloat16) == "cudnn"
    assert resolve("auto", "gpu", jnp.float32) == "xla"  # cuDNN refuses float32
    assert resolve("splash", "cpu") == "splash"  # explicit names are kept
    with pytest.raises(ValueError, match="auto, xla, splash, cudnn"):
        resolve("flash", "tpu")
    with pytest.raises(ValueError, match="auto, xla, splash, cudnn"):
        make_attention("flash")


def test_splash_block_sizes():
    assert [splash_block(t) for t in (128, 256, 384, 1024, 2560)] == [128, 256, 128, 512, 512]
    with pytest.raises(ValueError, match="got 200"):
        splash_block(200)
    q, k, v = qkv(t=200)
    with pytest.raises(ValueError, match="multiple of 128, got 200"):
        make_attention("splash", interpret=True)(q, k, v)


def test_segment_mask_semantics():
    seg = packed_segments(3, 24, seed=1)
    mask = np.asarray(segment_mask(jnp.asarray(seg)))
    for b, row in enumerate(seg):
        for i, sq in enumerate(row):
            for j, sk in enumerate(row):
                assert mask[b, i, j] == (j <= i and sk == sq), (b, i, j)


def test_xla_segments_match_masked_softmax():
    """The xla segment-id path == softmax(q k^T / sqrt(H) masked by segment_mask) v, GQA."""
    b, t, n, kv, h = 2, 32, 4, 2, 8
    q, k, v = qkv(b, t, n, kv, h)
    seg = packed_segments(b, t, seed=3)
    out = make_attention("xla")(q, k, v, jnp.asarray(seg))
    mask = np.asarray(segment_mask(jnp.asarray(seg)))
    qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
    kn, vn = np.repeat(kn, n // kv, axis=2), np.repeat(vn, n // kv, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", qn, kn) / np.sqrt(h)
    logits = np.where(mask[:, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    want = np.einsum("bnts,bsnh->btnh", p / p.sum(-1, keepdims=True), vn)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-6)


def test_packed_segments_equal_separate_sequences():
    """Each segment of a packed row, its positions restarted, gives what that sequence gives
    alone: the model's logits on every token of every segment."""
    from genjax.model import ModelConfig, init_model, make_apply

    cfg = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      head_dim=8, d_ff=64)
    graphdef, params = init_model(cfg, 0)
    apply = make_apply(graphdef)
    rng = np.random.default_rng(0)
    lengths = [5, 9, 3, 7]
    seqs = [rng.integers(1, 50, n).astype(np.int32) for n in lengths]
    row, seg, pos = np.zeros((1, 32), np.int32), np.zeros((1, 32), np.int32), \
        np.zeros((1, 32), np.int32)
    start = 0
    for i, s_ in enumerate(seqs):
        row[0, start:start + len(s_)], seg[0, start:start + len(s_)] = s_, i + 1
        pos[0, start:start + len(s_)] = np.arange(len(s_))
        start += len(s_)
    packed = np.asarray(apply(params, row, pos, seg))[0]
    start = 0
    for s_ in seqs:
        alone = np.asarray(apply(params, s_[None]))[0]
        np.testing.assert_allclose(packed[start:start + len(s_)], alone, atol=2e-6)
        start += len(s_)


def test_splash_interpret_causal_and_grads_match_xla():
    q, k, v = qkv()
    splash, xla = make_attention("splash", interpret=True), make_attention("xla")
    np.testing.assert_allclose(jax.jit(splash)(q, k, v), xla(q, k, v), atol=FWD_ATOL)

    def loss(attn):  # a non-uniform cotangent
        return lambda q, k, v: jnp.sum(attn(q, k, v) * jnp.cos(jnp.arange(q.shape[-1])))

    got = jax.jit(jax.grad(loss(splash), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(loss(xla), argnums=(0, 1, 2))(q, k, v)
    for name, g, w in zip("qkv", got, want):
        np.testing.assert_allclose(g, w, atol=GRAD_ATOL, err_msg=f"d{name}")


def test_splash_interpret_segments_match_xla():
    q, k, v = qkv()
    seg = jnp.asarray(packed_segments(2, 256, seed=4))
    got = jax.jit(make_attention("splash", interpret=True))(q, k, v, seg)
    want = make_attention("xla")(q, k, v, seg)
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=FWD_ATOL)


def test_splash_interpret_sharded_matches_xla():
    """Under shard_map on a data x fsdp x tensor = 2 x 2 x 2 CPU mesh: batch over (data, fsdp),
    heads over tensor (N=4, K=2: one kv head and its two query heads per shard)."""
    mesh = make_mesh(dict(data=2, fsdp=2, tensor=2))
    q, k, v = qkv(b=4)
    seg = jnp.asarray(packed_segments(4, 256, seed=5))
    attn = make_attention("splash", mesh=mesh, rules=RULES, interpret=True)
    got = jax.jit(attn)(q, k, v, seg)
    want = make_attention("xla")(q, k, v, seg)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=FWD_ATOL)
    assert got.sharding.is_equivalent_to(
        NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None)), 4)


def test_cudnn_dtype_and_host():
    q, k, v = qkv(t=128)
    cudnn = make_attention("cudnn")
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        cudnn(q, k, v)
    if jax.default_backend() != "gpu":  # jax traces cuDNN attention only with its CUDA plugin
        with pytest.raises(RuntimeError, match="cuDNN"):
            cudnn(*(x.astype(jnp.bfloat16) for x in (q, k, v)))


@needs_libtpu
@pytest.mark.filterwarnings("ignore:Error reading persistent compilation cache entry:UserWarning")
def test_splash_compiles_for_tpu_topology():
    """Compile-only for v5e:2x2 from this CPU host: splash forward + backward (causal) and the
    segment-id forward in one program; output shape and sharding as the XLA path's."""
    from genjax.tpu import compile as tc

    mesh = make_mesh(dict(data=1, fsdp=2, tensor=2),
                     tc.topology_devices(tc.parse_topology("v5e:2x2")))
    b, t, n, kv, h = 4, 256, 4, 2, 128
    spec = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None))
    args = (jax.ShapeDtypeStruct((b, t, n, h), jnp.bfloat16, sharding=spec),
            jax.ShapeDtypeStruct((b, t, kv, h), jnp.bfloat16, sharding=spec),
            jax.ShapeDtypeStruct((b, t, kv, h), jnp.bfloat16, sharding=spec),
            jax.ShapeDtypeStruct((b, t), jnp.int32, sharding=NamedSharding(mesh, P("fsdp"))))

    def program(attn):
        def f(q, k, v, seg):
            out, vjp = jax.vjp(attn, q, k, v)
            return out, vjp(out), attn(q, k, v, seg)
        return jax.jit(f).lower(*args).compile()

    splash = program(make_attention("splash", mesh=mesh, rules=RULES))
    xla = program(make_attention("xla"))
    assert "tpu_custom_call" in splash.as_text()
    out_shapes = [x.shape for x in jax.tree.leaves(splash.out_info)]
    assert out_shapes == [x.shape for x in jax.tree.leaves(xla.out_info)]
    assert out_shapes[0] == out_shapes[-1] == (b, t, n, h)
    for got, want in zip(jax.tree.leaves(splash.output_shardings),
                         jax.tree.leaves(xla.output_shardings)):
        assert got.is_equivalent_to(want, 4)
