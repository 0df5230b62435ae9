"""What the trainer and the hooks need of a model, whatever framework defined it.

A `LanguageModel` is pure functions over a params pytree: `init(seed) -> params`, `apply(params,
tokens_BxT, ...) -> logits_BxTxV`, the params' logical axes (mapped to the mesh by
`config.sharding_rules`), optionally analytic FLOPs per token, and the extra `apply` arguments
it accepts (`supports`), which hooks that need more than logits check before they run.
Build one from genjax's transformer (`transformer`), any Flax NNX module (`from_nnx`), a Linen
module (`from_linen`), or by hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from genjax.model.attention import AttentionFn
from genjax.model.loss import next_token_stats
from genjax.model.transformer import Constrain, ModelConfig, Transformer

# (params, tokens_BxT, positions_BxT=None, segments_BxT=None) -> logits; may carry
# `.token_stats(params, inputs_BxT, targets_BxT, positions_BxT=None, segments_BxT=None)
# -> (loss_BxT, correct_BxT)`
ApplyFn = Callable[..., jax.Array]

# Optional `apply` arguments a model may accept (packed rows need both: positions that
# restart per segment, and segment ids that keep attention inside a segment), and
# LAYER_OUTPUTS: `apply.layer_outputs(params, tokens_BxT) -> [L, B, T, D]` exists.
POSITIONS, SEGMENTS = "positions", "segments"
LAYER_OUTPUTS = "layer_outputs"


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """A model genjax can shard, train and monitor.

    - `init(seed) -> params`: a pure function; the trainer jits it into the params' shardings.
    - `apply(params, tokens_BxT, positions_BxT=None, segments_BxT=None)`: float logits
      [B, T, V]; segment ids (0: padding) confine attention to a packed sequence. A model
      that does not accept the optional arguments says so in `supports`; it is then called
      with tokens only.
    - `logical_axes(abstract_params)`: a pytree like params whose leaves are tuples of
      logical axis names (`()`: replicated); None reads Flax NNX `sharding` metadata from an
      `nnx.State`, or replicates everything else.
    - `flops_per_token(seq_len)`: training FLOPs per token; None: XLA's count of the step.
    """

    init: Callable[[int], Any]
    apply: ApplyFn
    logical_axes: Callable[[Any], Any] | None = None
    flops_per_token: Callable[[int], float] | None = None
    supports: frozenset[str] = frozenset()


def make_apply(graphdef) -> ApplyFn:
    """A pure `apply(params, tokens_BxT, positions_BxT=None, segments_BxT=None) -> logits`
    for genjax's transformer (see `Transformer.__call__`), with `apply.token_stats(params,
    inputs, targets, positions, segments)` for its chunked cross-entropy."""

    def apply(params, tokens_BxT, positions_BxT=None, segments_BxT=None):
        return nnx.merge(graphdef, params)(tokens_BxT, positions_BxT, segments_BxT)

    def token_stats(params, inputs_BxT, targets_BxT, positions_BxT=None, segments_BxT=None):
        return nnx.merge(graphdef, params).token_stats(inputs_BxT, targets_BxT, positions_BxT,
                                                       segments_BxT)

    def layer_outputs(params, tokens_BxT):
        return nnx.merge(graphdef, params).layer_outputs(tokens_BxT)

    apply.token_stats, apply.layer_outputs = token_stats, layer_outputs
    return apply


def token_stats(apply_fn: ApplyFn, params, inputs_BxT: jax.Array, targets_BxT: jax.Array,
                positions_BxT: jax.Array | None = None,
                segments_BxT: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-token cross-entropy and argmax-correctness: the model's own chunked head when it
    has one (`apply_fn.token_stats`), else from its full logits. Positions and segment ids
    (packed rows) are passed on only when given, so a tokens-only model works without them."""
    extra = () if positions_BxT is None and segments_BxT is None else (positions_BxT,
                                                                       segments_BxT)
    fused = getattr(apply_fn, "token_stats", None)
    if fused is not None:
        return fused(params, inputs_BxT, targets_BxT, *extra)
    return next_token_stats(apply_fn(params, inputs_BxT, *extra), targets_BxT)


def _transformer(cfg: ModelConfig, seed: int, constrain: Constrain | None,
                 attend: AttentionFn | None) -> Transformer:
    kwargs = {} if constrain is None else {"constrain": constrain}
    return Transformer(cfg, nnx.Rngs(params=seed), attend=attend, **kwargs)


def init_model(cfg: ModelConfig, seed: int, constrain: Constrain | None = None,
               attend: AttentionFn | None = None):
    """(graphdef, params) of genjax's transformer: params is an `nnx.State` of arrays."""
    return nnx.split(_transformer(cfg, seed, constrain, attend))


def abstract_model(cfg: ModelConfig, constrain: Constrain | None = None,
                   attend: AttentionFn | None = None):
    """(graphdef, params as ShapeDtypeStructs with logical-axis metadata): nothing allocated."""
    return nnx.split(nnx.eval_shape(lambda: _transformer(cfg, 0, constrain, attend)))


def transformer(cfg: ModelConfig, constrain: Constrain | None = None,
                attend: AttentionFn | None = None) -> LanguageModel:
    """genjax's own transformer as a `LanguageModel` (analytic FLOPs, every capability)."""
    graphdef, _ = abstract_model(cfg, constrain, attend)
    return LanguageModel(init=lambda seed: init_model(cfg, seed, constrain, attend)[1],
                         apply=make_apply(graphdef), flops_per_token=cfg.flops_per_token,
                         supports=frozenset({POSITIONS, SEGMENTS, LAYER_OUTPUTS}))


def from_nnx(make_module: Callable[[nnx.Rngs], nnx.Module],
             supports: frozenset[str] | set[str] = frozenset(),
             flops_per_token: Callable[[int], float] | None = None) -> LanguageModel:
    """Any Flax NNX module `module(tokens_BxT) -> logits_BxTxV`, built by
    `make_module(nnx.Rngs(params=seed))`; parameters annotated with `sharding=(names...)` are
    sharded by the config's rules. `supports`: the optional `apply` arguments its `__call__`
    takes (as keywords `positions_BxT`, `segments_BxT`)."""
    supports = frozenset(supports)

    def build(seed):  # sharding comes from the trainer's jit, not from eager placement
        with nnx.use_eager_sharding(False):
            return nnx.split(make_module(nnx.Rngs(params=seed)))

    graphdef, _ = jax.eval_shape(lambda: build(0))

    def apply(params, tokens_BxT, positions_BxT=None, segments_BxT=None):
        module = nnx.merge(graphdef, params)
        extra = {"positions_BxT": positions_BxT, "segments_BxT": segments_BxT}
        return module(tokens_BxT, **{k: v for k, v in extra.items() if v is not None})

    return LanguageModel(init=lambda seed: build(seed)[1], apply=apply,
                         flops_per_token=flops_per_token, supports=supports)


def from_linen(module, seq_len: int,
               flops_per_token: Callable[[int], float] | None = None) -> LanguageModel:
    """A Flax Linen module `module.apply({"params": p}, tokens_BxT) -> logits_BxTxV`.
    Parameters created with `nn.with_logical_partitioning` are sharded by the config's rules."""
    import flax.linen as nn

    def boxed(seed):
        tokens = jnp.zeros((1, seq_len), jnp.int32)
        return module.init(jax.random.key(seed), tokens)["params"]

    def logical_axes(_abstract):
        specs = nn.get_partition_spec(jax.eval_shape(lambda: boxed(0)))
        return jax.tree.map(tuple, specs,
                            is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))

    def apply(params, tokens_BxT, positions_BxT=None, segments_BxT=None):
        return module.apply({"params": params}, tokens_BxT)

    return LanguageModel(init=lambda seed: nn.unbox(boxed(seed)), apply=apply,
                         logical_axes=logical_axes, flops_per_token=flops_per_token)
