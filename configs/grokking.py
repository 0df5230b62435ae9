"""Grokking: modular addition, draft."""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    c.model.update(d_model=128, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=32, d_ff=256)
    c.train.update(steps=3000, batch_size=128, seq_len=5)
    c.optim.update(lr=1e-3, warmup_steps=10, schedule="constant", b2=0.98, weight_decay=1.0)
    c.data.heldout_fraction = 0.6
    c.data.domains = ConfigDict({"mod": {"kind": "modular_symbols", "modulus": 59}})
    c.hooks.heldout.update(enabled=True, every=10, batch_size=512)
    c.hooks.train_domains.enabled = True
    c.checkpoint.every = 100000
    c.log.update(every=100, progress="lines")
    c.stream.enabled = False
    return c
