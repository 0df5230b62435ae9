"""Models: genjax's NNX transformer and the `LanguageModel` interface any model can fill."""

from genjax.model.attention import make_attention
from genjax.model.lm import (
    LanguageModel,
    abstract_model,
    from_linen,
    from_nnx,
    init_model,
    make_apply,
    token_stats,
    transformer,
)
from genjax.model.transformer import ModelConfig, Transformer

__all__ = ["LanguageModel", "ModelConfig", "Transformer", "abstract_model", "from_linen",
           "from_nnx", "init_model", "make_apply", "make_attention", "token_stats",
           "transformer"]
