"""Quickstart: mode hops and a held-out gap that opens and closes, every hook on, on CPU.

Two domains. `arith` is the pattern-vs-compute world (configs/pattern_vs_compute.py): episodes
of 4 demos and a query, `a+b= c` over Z_11, 40% plain computation, 20% repeating one answer,
20% counting answers up, 20% flipping every answer to 10 - c; its probes pit the computation
against the shallow pattern (`arith/repeat`, `arith/successive`, `arith/flipped`). `mod` is a
grokking table (configs/grokking.py): (a + b) mod 41, one symbol per residue, 30% of the
unordered pairs never trained on. AdamW at a constant lr 3e-3 with weight decay 1.0 (which
makes the table generalize within the run), every hook on (gradient monitors every 10 steps).

What it shows (`genjax analyze`, report.html's first screen). Measured on 2 CPU cores, seed 0,
2026-12-03 (67-70 s of training alone, 85-140 s with the analysis and another job on the
machine; the rows were the same in every run here; 2026-12-06, another machine of this kind:
74 s with the analysis, nothing else running, hops at 118 and 424 as on 2026-12-02's):
- pattern-matching -> generalizing hops: arith/repeat at step 112 and arith/successive at 118,
  once the sum table is learned;
- a reverse hop: arith/flipped, generalizing from ~140 (accuracy 0.9), falls to pattern
  matching at step 408 (accuracy 0.16 at 450, ~0.1 from 500 on): the flip is learned and the
  context's labels win (a run on 2026-12-02's machine placed it at 424 and withdrew
  arith/repeat's hop);
- mod's held-out gap opening and closing: train accuracy on the table rises first (0.30 vs
  0.07 held out over steps 200-250, 0.90 vs 0.51 over 300-350), the gap peaks at step 285
  (1.31 nats, about half the held-out loss) and closes at 375-385; held-out accuracy 0.83-0.91
  from step 400 on, train 0.98.
The online detector announces the hops while training (60-350 steps after them, its checks
taking 5% of the wall time). Runs are not bit-reproducible across machines (XLA's CPU code
changes float rounding): read every step here as approximate (tens of steps).
Across optimizers (`--config.optim.name=NAME` with README's per-optimizer settings: lion at lr
1e-3 and weight decay 3, muon as it is, sgd at lr 0.09 and weight decay 3.3e-3; seed 0, 2 CPU
cores, 2026-12-06; AdamW in the same session: successive hop at 118, flipped at 424, mod's gap
190-285-385 peaking at 1.31 nats, held-out accuracy 0.88 at the end):
- lion: the same story a little later or earlier (successive hop at 140, flipped at 408); mod's
  gap smaller and later (opens 270, peak 0.88 nats at 315, closes 470), held-out accuracy 0.92.
- muon: forward hops at 144-146, the flip late (hop at 670); mod is memorized first (train
  accuracy >= 0.95 at 303) and generalizes late: the gap peaks at 5.6 nats (step 430) and closes
  at 670, held-out accuracy 0.43 at the end.
- sgd: forward hops at 352-368, no flip within 800 steps, and mod is not learned (train accuracy
  below 0.95, held-out 0.18; final train loss 0.92 against 0.14).
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
