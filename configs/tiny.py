"""Tiny config for tests: a 2-layer model on the three built-in domains, seconds on CPU."""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    c.model.update(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=64)
    c.train.update(steps=20, batch_size=8, seq_len=32)
    c.optim.update(lr=3e-3, warmup_steps=2)
    c.data.domains = ConfigDict({
        "arith": {"kind": "modular_arithmetic", "weight": 1.0, "modulus": 23},
        "grammar": {"kind": "grammar", "weight": 1.0},
        "kv": {"kind": "kv_lookup", "weight": 1.0},
    })
    c.checkpoint.every = 10
    c.log.every = 5
    return c


def with_all_hooks(c: ConfigDict) -> ConfigDict:
    """Every built-in hook on, every step (used by tests and the quickstart)."""
    for name in ("heldout", "train_domains", "probes", "memorization"):
        c.hooks[name].enabled = True
        c.hooks[name].every = 1
    c.hooks.probes.builtin_items = 8
    c.hooks.memorization.examples = 6
    return c
