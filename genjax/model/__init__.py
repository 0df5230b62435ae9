"""The LM: an NNX module, split into a static graphdef and a params pytree for pure jit."""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from genjax.model.transformer import Constrain, ModelConfig, Transformer

# (params, tokens_BxT, positions_BxT=None, mask_BxTxS=None, logits_at_BxK=None) -> logits
ApplyFn = Callable[..., jax.Array]


def init_model(cfg: ModelConfig, seed: int, constrain: Constrain | None = None):
    """Returns (graphdef, params): params is an `nnx.State` pytree of arrays."""
    kwargs = {} if constrain is None else {"constrain": constrain}
    model = Transformer(cfg, nnx.Rngs(params=seed), **kwargs)
    return nnx.split(model)


def abstract_model(cfg: ModelConfig, constrain: Constrain | None = None):
    """(graphdef, params as ShapeDtypeStructs with logical-axis metadata): nothing allocated."""
    kwargs = {} if constrain is None else {"constrain": constrain}
    model = nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(params=0), **kwargs))
    return nnx.split(model)


def make_apply(graphdef) -> ApplyFn:
    """A pure `apply(params, tokens_BxT, positions_BxT=None, mask_BxTxS=None,
    logits_at_BxK=None) -> logits` (see `Transformer.__call__`)."""

    def apply(params, tokens_BxT, positions_BxT=None, mask_BxTxS=None, logits_at_BxK=None):
        return nnx.merge(graphdef, params)(tokens_BxT, positions_BxT, mask_BxTxS, logits_at_BxK)

    return apply


__all__ = ["ApplyFn", "ModelConfig", "Transformer", "abstract_model", "init_model", "make_apply"]
