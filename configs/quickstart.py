"""Quickstart: mode hops and a held-out gap that opens and closes, every hook on, on CPU.

Two domains. `arith` is the pattern-vs-compute world (configs/pattern_vs_compute.py): episodes
of 4 demos and a query, `a+b= c` over Z_11, 40% plain computation, 20% repeating one answer,
20% counting answers up, 20% flipping every answer to 10 - c; its probes pit the computation
against the shallow pattern (`arith/repeat`, `arith/successive`, `arith/flipped`). `mod` is a
grokking table (configs/grokking.py): (a + b) mod 41, one symbol per residue, 30% of the
unordered pairs never trained on. AdamW at a constant lr 3e-3 with weight decay 1.0, which
makes the table grok within the run.

What it shows (`genjax analyze`, report.html's first screen):
- a pattern-matching -> generalizing hop: a repeat/successive family leaves the pattern for
  the computation once the sum table is learned (steps ~100-200);
- a reverse hop: `arith/flipped` falls from generalizing to pattern matching once the flip is
  learned (the context's labels win; steps ~400-700);
- `mod`'s held-out gap opening (the table memorized: train accuracy ~1, held-out ~0) and
  closing (held-out accuracy rising to ~0.85-0.9: grokking).

Measured (seed 0, 2 CPU cores): see the README's quickstart line for the wall time. Runs are
not bit-reproducible across machines (XLA's CPU code changes float rounding), so read every
step here as approximate (tens of steps).
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    shots = 4
    c.model.update(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, d_ff=128)
    c.train.update(steps=800, batch_size=64, seq_len=7 * shots + 5)  # one episode per row
    c.optim.update(lr=3e-3, warmup_steps=50, schedule="constant", weight_decay=1.0)
    c.data.heldout_fraction = 0.3
    c.data.domains = ConfigDict({
        "arith": {"kind": "pattern_arithmetic", "weight": 0.7, "modulus": 11, "shots": shots,
                  "repeat": 0.2, "successive": 0.2, "flipped": 0.2, "loss_on": "answers"},
        "mod": {"kind": "modular_symbols", "weight": 0.3, "modulus": 41},
    })
    c.hooks.heldout.update(enabled=True, every=5, batch_size=256)
    c.hooks.train_domains.update(enabled=True, every=1)
    c.hooks.probes.update(enabled=True, every=2, builtin_items=32)
    c.hooks.memorization.update(enabled=True, every=5, examples=8)
    c.hooks.attribution.update(enabled=True, every=10)
    c.hooks.norms.update(enabled=True, every=1)
    c.hooks.predictors.update(enabled=True, every=10, examples=16)
    c.analysis.update(online_hops=True, save_on_hop=True)
    c.checkpoint.update(every=100, keep=20)
    c.log.every = 100
    return c
