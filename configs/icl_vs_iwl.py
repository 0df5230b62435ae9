"""ICL vs IWL draft."""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    pairs = 8
    c.model.update(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, d_ff=128)
    c.train.update(steps=3000, batch_size=64, seq_len=5 * pairs + 3)
    c.optim.update(lr=1e-3, warmup_steps=50, schedule="constant", weight_decay=0.01)
    c.data.heldout_fraction = 0.1
    c.data.domains = ConfigDict({"icl": {"kind": "bursty_icl", "context_pairs": pairs}})
    c.hooks.heldout.update(enabled=True, every=10, batch_size=256)
    c.hooks.train_domains.enabled = True
    c.hooks.probes.update(enabled=True, every=10, builtin_items=32)
    c.checkpoint.every = 100000
    c.log.update(every=100, progress="lines")
    c.stream.enabled = False
    return c
