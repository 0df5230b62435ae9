"""Models genjax did not define: an NNX MLP LM and a Linen transformer, trained and monitored on
1 and 8 devices; their hooks equal an independent numpy recomputation; FLOPs come from the
model actually trained."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from genjax.hooks.base import HookError
from genjax.model import LanguageModel, from_linen, from_nnx
from genjax.train.trainer import Trainer, TrainProgram

VOCAB = 288  # the byte tokenizer's vocabulary, as in configs/tiny.py


class MlpLM(nnx.Module):
    """Predicts the next token from the current and the previous one (causal by shifting)."""

    def __init__(self, rngs: nnx.Rngs, d: int = 32, hidden: int = 64):
        init = nnx.initializers.lecun_normal()
        self.embed = nnx.Embed(VOCAB, d, rngs=rngs,
                               embedding_init=nnx.with_partitioning(init, ("vocab", "embed")))
        self.up = nnx.Linear(2 * d, hidden, rngs=rngs,
                             kernel_init=nnx.with_partitioning(init, ("embed", "mlp")))
        self.out = nnx.Linear(hidden, VOCAB, rngs=rngs,
                              kernel_init=nnx.with_partitioning(init, ("mlp", "vocab")))

    def __call__(self, tokens_BxT):
        x = self.embed(tokens_BxT)
        prev = jnp.pad(x, ((0, 0), (1, 0), (0, 0)))[:, :-1]
        return self.out(nnx.gelu(self.up(jnp.concatenate([x, prev], -1))))


class LinenBlock(nn.Module):
    d: int = 32

    @nn.compact
    def __call__(self, x):
        t = x.shape[1]
        causal = nn.make_causal_mask(jnp.ones((x.shape[0], t)))
        x = x + nn.SelfAttention(num_heads=4, qkv_features=self.d, deterministic=True,
                                 kernel_init=nn.with_logical_partitioning(
                                     nn.initializers.lecun_normal(), ("embed", "heads")))(
            nn.LayerNorm()(x), mask=causal)
        dense = lambda f, axes: nn.Dense(f, kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), axes))
        return x + dense(self.d, ("mlp", "embed"))(nn.gelu(dense(64, ("embed", "mlp"))(
            nn.LayerNorm()(x))))


class LinenTransformer(nn.Module):
    d: int = 32

    @nn.compact
    def __call__(self, tokens_BxT):
        emb = nn.Embed(VOCAB, self.d, embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(0.02), ("vocab", "embed")))
        x = emb(tokens_BxT) + self.param("pos", nn.initializers.normal(0.02),
                                         (tokens_BxT.shape[1], self.d))
        for _ in range(2):
            x = LinenBlock(self.d)(x)
        return emb.attend(nn.LayerNorm()(x))


def _config(tiny_hooks_config, devices: int):
    c = tiny_hooks_config
    c.hooks.probes.enabled = False  # needs positions and a shared-prefix mask: see below
    c.train.steps = 4
    if devices == 8:
        c.mesh.update(data=2, fsdp=2, tensor=2)
    return c


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _heldout_reference(apply, params, rows, num_domains):
    """Token-weighted held-out loss per domain from the model's logits, in numpy."""
    logp = log_softmax(np.asarray(jax.jit(apply)(params, rows["inputs"]), np.float64))
    nll = -np.take_along_axis(logp, rows["targets"][..., None], -1)[..., 0] * rows["loss_mask"]
    return np.array([nll[rows["domain"] == d].sum() / rows["loss_mask"][rows["domain"] == d].sum()
                     for d in range(num_domains)])


@pytest.mark.parametrize("devices", [1, 8])
def test_nnx_model_trains_and_hooks_match(tiny_hooks_config, tmp_path, devices):
    c = _config(tiny_hooks_config, devices)
    model = from_nnx(MlpLM)
    tx = optax.adam(1e-2)
    program = TrainProgram(c, model=model, tx=tx, devices=jax.devices()[:devices])
    assert program.param_shardings["up"]["kernel"].value.spec == P("fsdp", "tensor")
    state, hook_data = program.init_state(), program.place_hook_data()
    batches = program.data.train_batches(c.train.batch_size)
    losses = []
    for _ in range(4):
        params = jax.device_get(state.params)
        state, metrics = program.step_fn(state, program.global_batch(next(batches)), hook_data)
        losses.append(float(metrics["train/loss"]))
    assert losses[-1] < losses[0]
    heldout = next(h for h in program.hooks if h.name == "heldout")
    ref = _heldout_reference(model.apply, params, heldout.rows, len(program.data.names))
    np.testing.assert_allclose(np.asarray(metrics["heldout/loss"]), ref, rtol=0, atol=1e-5)
    assert np.isnan(float(metrics["train/lr"]))  # an optax optimizer without a schedule
    # FLOPs for MFU: XLA's count of this model's step, 6 x matmul params x tokens plus the
    # elementwise work (measured 1.03x); the embedding is a lookup, not a matmul
    matmul_params = sum(x.size for x in jax.tree.leaves(params["up"]) +
                        jax.tree.leaves(params["out"]))
    tokens = c.train.batch_size * c.train.seq_len
    assert 1.0 < program.flops_per_step() / (6 * matmul_params * tokens) < 1.1


def test_linen_model_trains_with_the_trainer(tiny_hooks_config, tmp_path):
    c = _config(tiny_hooks_config, 8)
    model = from_linen(LinenTransformer(), c.train.seq_len)
    result = Trainer(c, tmp_path, model=model).run()
    assert result.losses[3] < result.losses[0]
    program = TrainProgram(c, model=model)
    kernel = program.param_shardings["Embed_0"]["embedding"]
    assert kernel.spec == P("tensor", "fsdp")  # vocab -> tensor, embed -> fsdp


def test_probe_hook_refuses_a_model_without_its_arguments(tiny_hooks_config):
    c = tiny_hooks_config
    with pytest.raises(HookError, match="hook 'probes' needs a model whose apply takes "
                                        "positions, segments"):
        TrainProgram(c, model=from_nnx(MlpLM), devices=jax.devices()[:1])


def test_hand_built_model_with_sharding_function(tiny_config):
    """A plain pytree model: params dict, logical axes by hand."""
    def init(seed):
        return {"w": jax.random.normal(jax.random.key(seed), (VOCAB, VOCAB)) * 0.01}

    model = LanguageModel(init=init, apply=lambda p, tokens, *a, **k: p["w"][tokens],
                          logical_axes=lambda p: {"w": ("vocab", None)},
                          flops_per_token=lambda t: 6.0 * VOCAB * VOCAB)
    tiny_config.mesh.update(data=1, fsdp=4, tensor=2)
    program = TrainProgram(tiny_config, model=model)
    assert program.param_shardings["w"].spec == P("tensor", None)
    assert program.flops_per_step() == 6.0 * VOCAB * VOCAB * 8 * 32


def test_two_programs_in_one_process_do_not_interfere(tiny_config):
    """genjax's transformer on 1 device and a foreign model on 8, their steps interleaved:
    each loss sequence equals the same program stepped alone."""
    import copy

    one = copy.deepcopy(tiny_config)
    eight = copy.deepcopy(tiny_config)
    eight.mesh.update(data=2, fsdp=2, tensor=2)

    def make():
        return [TrainProgram(one, devices=jax.devices()[:1]),
                TrainProgram(eight, model=from_nnx(MlpLM), tx=optax.adam(1e-2))]

    def steps(programs, order):
        states = [p.init_state() for p in programs]
        hook_data = [p.place_hook_data() for p in programs]
        batches = [p.data.train_batches(p.config.train.batch_size) for p in programs]
        losses = [[], []]
        for i in order:
            p = programs[i]
            states[i], m = p.step_fn(states[i], p.global_batch(next(batches[i])), hook_data[i])
            losses[i].append(float(m["train/loss"]))
        return losses

    alone = [steps(make(), [0] * 3)[0], steps(make(), [1] * 3)[1]]
    assert steps(make(), [0, 1, 0, 1, 0, 1]) == alone
