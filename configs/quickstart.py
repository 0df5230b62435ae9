"""Quickstart: a small LM on the three built-in domains, every hook on at every step.

About two minutes on 2 CPU cores. Watch train loss fall well below the data's unigram entropy
(~2.9 nats/byte), held-out loss follow it per domain, and the probe families' accuracies move.
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    c.model.update(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_ff=192)
    c.train.update(steps=300, batch_size=16, seq_len=64)
    c.optim.update(lr=3e-3, warmup_steps=30, weight_decay=0.05)
    c.data.domains = ConfigDict({
        "arith": {"kind": "modular_arithmetic", "weight": 1.0, "modulus": 23},
        "grammar": {"kind": "grammar", "weight": 1.0},
        "kv": {"kind": "kv_lookup", "weight": 1.0, "num_pairs": 3},
    })
    for name in ("heldout", "train_domains", "probes", "memorization"):
        c.hooks[name].enabled = True
        c.hooks[name].every = 1
    c.hooks.probes.builtin_items = 32
    c.hooks.memorization.examples = 12
    c.checkpoint.every = 100
    c.log.every = 25
    return c
