"""Grokking: modular addition (Power et al. 2022; Nanda et al. 2023), about 3 minutes on CPU.

`a+b= c` with c = (a + b) mod 59, one symbol per residue; 40% of the 1770 unordered pairs {a, b}
are trained on (`data.heldout_fraction=0.6`: a problem and its mirror image share a split), loss
on the answer only. A one-layer transformer, AdamW with strong weight decay (2.0 at lr 1.5e-3,
constant), single-problem rows of batch 128.

What it should show: train accuracy (`train_domains/accuracy[mod]`) near 100% within ~100
steps while held-out accuracy (`heldout/accuracy[mod]`, every 10 steps, 512 held-out rows)
stays at ~0 (below chance: confidently wrong) for over a thousand steps; then held-out accuracy
rises abruptly to ~95%, and `genjax analyze` reports change points in that series around the
rise. Train accuracy is answer accuracy (one token), i.e. exact match.

Measured (seed 0; `genjax train --config configs/grokking.py --workdir /tmp/grokking`: 127 s
wall on 2 CPU cores shared with another job): train accuracy >= 95% at step 103; held-out
accuracy 0.01 at step 1000, 0.03 at 1200, 0.15 at 1400, >= 50% at step 1610, 0.85 at 1800,
0.89 at 2000, 0.97 on average over the last 200 steps; `genjax analyze` reports change points
in held-out accuracy at steps 1640, 1720 and 2730 (the rise, its end, a late step up). Runs
repeat exactly on one machine but not across machines (XLA's CPU code and thread count change
float rounding, which the slow rise amplifies): a run on another 2-core machine measured held-out
accuracy 0.555 at step 1600, before this run's 50% at 1610; read the steps of the rise as
approximate (tens of steps).
Across optimizers (`--config.optim.name=NAME` with README's per-optimizer settings: lion at lr
5e-4 and weight decay 6, muon as it is, sgd at lr 0.045 and weight decay 6.7e-3; seed 0, 2 CPU
cores, 2026-12-06; AdamW in the same session: train accuracy >= 95% at step 103, held-out >= 50%
at 1600, 0.98 over the last 200 steps): every optimizer groks. lion: 127, 1610, 0.93; muon: 111,
1120 (earliest), 0.85; sgd: 163, 1430, 1.00.
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    c.model.update(d_model=128, n_layers=1, n_heads=4, n_kv_heads=4, head_dim=32, d_ff=256)
    c.train.update(steps=3000, batch_size=128, seq_len=5)  # a row is one `a+b= c`
    c.optim.update(lr=1.5e-3, warmup_steps=10, schedule="constant", b2=0.98,
                   weight_decay=2.0)
    c.data.heldout_fraction = 0.6
    c.data.domains = ConfigDict({"mod": {"kind": "modular_symbols", "modulus": 59}})
    c.hooks.heldout.update(enabled=True, every=10, batch_size=512)
    c.hooks.train_domains.enabled = True
    c.checkpoint.every = 1000
    c.log.update(every=250)
    return c
