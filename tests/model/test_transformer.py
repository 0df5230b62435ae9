"""Scanned vs looped layers, every remat policy, chunked vs full cross-entropy: the same
losses and gradients (float32)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genjax.model import ModelConfig, init_model, make_apply
from genjax.model.loss import next_token_stats
from genjax.model.transformer import REMAT_CHOICES, remat_policy

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8,
                  d_ff=64, tie_embeddings=False, loss_chunk=0)
TOL = 1e-5


def _batch(b=4, t=24, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CFG.vocab_size, (b, t + 1)).astype(np.int32)
    return jnp.asarray(tokens[:, :-1]), jnp.asarray(tokens[:, 1:])


def _stacked(pure):
    """The looped model's parameters (a pure dict) laid out as the scanned model's."""
    pure = dict(pure)
    blocks = [pure["blocks"][i] for i in range(CFG.n_layers)]
    pure["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
    return pure


def _loss_and_grads(cfg, params, use_token_stats=True):
    """Mean loss and its gradient, as a pure dict, through the model's chunked head or
    (independently) through its full logits and a plain log-softmax."""
    graphdef, template = init_model(cfg, seed=0)
    inputs, targets = _batch()
    apply = make_apply(graphdef)

    def loss_fn(pure):
        state = jax.tree.map(lambda x: x, template)  # a fresh State to fill
        nnx.replace_by_pure_dict(state, pure)
        if use_token_stats:
            loss_BxT, _ = apply.token_stats(state, inputs, targets)
        else:
            logp = jax.nn.log_softmax(apply(state, inputs), axis=-1)
            loss_BxT = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        return loss_BxT.mean()

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    return float(loss), grads


def _assert_same(a, b, tol=TOL):
    (la, ga), (lb, gb) = a, b
    assert abs(la - lb) <= tol, (la, lb)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=tol)


@pytest.fixture(scope="module")
def reference():
    """The looped, un-rematerialized model with full logits and log-softmax."""
    _, params = init_model(CFG, seed=0)
    pure = nnx.to_pure_dict(params)
    return pure, _loss_and_grads(CFG, pure, use_token_stats=False)


def test_scan_matches_loop(reference):
    pure, ref = reference
    scanned = dataclasses.replace(CFG, scan_layers=True)
    loss, grads = _loss_and_grads(scanned, _stacked(pure))
    ref_loss, ref_grads = ref
    stacked_ref = dict(ref_grads)
    stacked_ref["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                         *[ref_grads["blocks"][i] for i in range(CFG.n_layers)])
    _assert_same((loss, grads), (ref_loss, stacked_ref))
    _, params = init_model(scanned, seed=0)
    wq = nnx.get_partition_spec(params)["blocks"]["attn"]["wq"]
    assert tuple(wq.value) == ("layers", "embed", "heads", "head_dim")


@pytest.mark.parametrize("remat", [r for r in REMAT_CHOICES if r != "none"])
@pytest.mark.parametrize("scan", [False, True])
def test_remat_policies_match(reference, remat, scan):
    pure, ref = reference
    cfg = dataclasses.replace(CFG, remat=remat, scan_layers=scan)
    loss, grads = _loss_and_grads(cfg, _stacked(pure) if scan else pure)
    if scan:
        ref = (ref[0], dict(ref[1], blocks=jax.tree.map(
            lambda *xs: jnp.stack(xs), *[ref[1]["blocks"][i] for i in range(CFG.n_layers)])))
    _assert_same((loss, grads), ref)


@pytest.mark.parametrize("chunk", [8, 7, 24, 100])  # divides T, does not (padded), T, > T
def test_chunked_loss_matches_full(reference, chunk):
    pure, ref = reference
    _assert_same(_loss_and_grads(dataclasses.replace(CFG, loss_chunk=chunk), pure), ref)


def test_chunked_loss_keeps_no_full_logits():
    """With chunks of 8 positions no [B, T, V] float32 array appears in the compiled step."""
    cfg = dataclasses.replace(CFG, vocab_size=512, loss_chunk=8)
    graphdef, params = init_model(cfg, seed=0)
    apply = make_apply(graphdef)
    inputs, targets = _batch(t=64)

    def loss(p):
        return apply.token_stats(p, inputs, targets)[0].mean()

    hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
    full = f"f32[4,64,{cfg.vocab_size}]"
    assert full not in hlo
    assert f"f32[4,8,{cfg.vocab_size}]" in hlo
    full_hlo = jax.jit(jax.grad(lambda p: next_token_stats(apply(p, inputs), targets)[0].mean())
                       ).lower(params).compile().as_text()
    assert full in full_hlo  # the check can fail: the unchunked program has it


def test_bad_remat_name():
    with pytest.raises(ValueError, match="model.remat must be one of"):
        remat_policy("save_only_these_names")
