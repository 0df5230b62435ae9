"""genjax.model.attention: the splash kernels (Pallas interpreter on CPU) against the XLA path,
the shared-prefix probe mask, and a compile-only splash program for a TPU topology."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from genjax.model.attention import (
    SEG_CONTEXT,
    SEG_CORRECT,
    SEG_INCORRECT,
    SEG_PAD,
    SharedPrefix,
    make_attention,
    probe_mask,
    resolve,
    shared_prefix_mask,
    splash_block,
)
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


def probe_segments(b: int, t: int, answer_len: int, seed: int = 0) -> np.ndarray:
    """Rows [left pads | context | correct + pads | incorrect + pads] of random lengths."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((b, t), np.int32)
    lp = t - 2 * answer_len
    for i in range(b):
        seg[i, rng.integers(0, lp):lp] = SEG_CONTEXT
        seg[i, lp:lp + rng.integers(1, answer_len + 1)] = SEG_CORRECT
        seg[i, lp + answer_len:lp + answer_len + rng.integers(1, answer_len + 1)] = SEG_INCORRECT
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


def test_probe_mask_semantics():
    """probe_mask (moved from genjax.hooks.probes, still importable there) against a loop."""
    from genjax.hooks import probes

    assert probes.probe_mask is probe_mask and probes.SEG_CORRECT == SEG_CORRECT
    seg = probe_segments(3, 24, 5, seed=1)
    mask = np.asarray(probe_mask(jnp.asarray(seg)))
    for b, row in enumerate(seg):
        for i, sq in enumerate(row):
            for j, sk in enumerate(row):
                want = i == j or (j <= i and (sk == SEG_CONTEXT or (sk == sq != SEG_PAD)))
                assert mask[b, i, j] == want, (b, i, j)


def test_splash_static_mask_matches_probe_mask():
    """Splash's static mask AND same pad-or-not segment id == probe_mask on non-pad queries."""
    t, a = 40, 7
    static = shared_prefix_mask(t, a)
    seg = probe_segments(16, t, a, seed=2)
    full = np.asarray(probe_mask(jnp.asarray(seg)))
    ids = seg != SEG_PAD
    splash = static[None] & (ids[:, :, None] == ids[:, None, :])
    np.testing.assert_array_equal(splash[ids], full[ids])
    assert splash[:, np.arange(t), np.arange(t)].all()  # no query row is fully masked


def test_xla_shared_prefix_matches_masked_softmax():
    """The xla SharedPrefix path == softmax(q k^T / sqrt(H) masked by probe_mask) v, GQA."""
    b, t, n, kv, h, a = 2, 32, 4, 2, 8, 6
    q, k, v = qkv(b, t, n, kv, h)
    seg = probe_segments(b, t, a, seed=3)
    out = make_attention("xla")(q, k, v, SharedPrefix(jnp.asarray(seg), a))
    mask = np.asarray(probe_mask(jnp.asarray(seg)))
    qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
    kn, vn = np.repeat(kn, n // kv, axis=2), np.repeat(vn, n // kv, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", qn, kn) / np.sqrt(h)
    logits = np.where(mask[:, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    want = np.einsum("bnts,bsnh->btnh", p / p.sum(-1, keepdims=True), vn)
    np.testing.assert_allclose(np.asarray(out), want, atol=1e-6)  # measured: 3.1e-7


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


def test_splash_interpret_shared_prefix_matches_xla():
    q, k, v = qkv()
    a = 40
    seg = probe_segments(2, 256, a, seed=4)
    prefix = SharedPrefix(jnp.asarray(seg), a)
    got = jax.jit(make_attention("splash", interpret=True))(q, k, v, prefix)
    want = make_attention("xla")(q, k, v, prefix)
    keep = seg != SEG_PAD
    assert np.isfinite(np.asarray(got)).all()
    np.testing.assert_allclose(np.asarray(got)[keep], np.asarray(want)[keep], atol=FWD_ATOL)


def test_splash_interpret_sharded_matches_xla():
    """Under shard_map on a data x fsdp x tensor = 2 x 2 x 2 CPU mesh: batch over (data, fsdp),
    heads over tensor (N=4, K=2: one kv head and its two query heads per shard)."""
    mesh = make_mesh(dict(data=2, fsdp=2, tensor=2))
    q, k, v = qkv(b=4)
    a = 40
    seg = probe_segments(4, 256, a, seed=5)
    prefix = SharedPrefix(jnp.asarray(seg), a)
    attn = make_attention("splash", mesh=mesh, rules=RULES, interpret=True)
    got = jax.jit(attn)(q, k, v, prefix)
    want = make_attention("xla")(q, k, v, prefix)
    keep = seg != SEG_PAD
    np.testing.assert_allclose(np.asarray(got)[keep], np.asarray(want)[keep], atol=FWD_ATOL)
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
    SharedPrefix forward in one program; output shape and sharding as the XLA path's."""
    from genjax.tpu import compile as tc

    mesh = make_mesh(dict(data=1, fsdp=2, tensor=2),
                     tc.topology_devices(tc.parse_topology("v5e:2x2")))
    b, t, n, kv, h, a = 4, 256, 4, 2, 128, 40
    spec = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None))
    args = (jax.ShapeDtypeStruct((b, t, n, h), jnp.bfloat16, sharding=spec),
            jax.ShapeDtypeStruct((b, t, kv, h), jnp.bfloat16, sharding=spec),
            jax.ShapeDtypeStruct((b, t, kv, h), jnp.bfloat16, sharding=spec),
            jax.ShapeDtypeStruct((b, t), jnp.int32, sharding=NamedSharding(mesh, P("fsdp"))))

    def program(attn):
        def f(q, k, v, seg):
            out, vjp = jax.vjp(attn, q, k, v)
            return out, vjp(out), attn(q, k, v, SharedPrefix(seg, a))
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
