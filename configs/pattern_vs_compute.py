"""Pattern vs compute: mode-hopping-style probes on synthetic arithmetic (the families of Wen
et al. 2026: repetitive answer, successive answer, flipped labels), about 3 minutes on CPU.

Episodes of 4 demos and a query, `a+b= c` over Z_11 (one symbol per residue), loss on every
answer. 40% of the episodes are plain computation; 20% repeat one answer, 20% count answers up
(both still correct: the shallow pattern and the computation predict the same answers); 20%
flip every answer to 10 - c (the context redefines the labels: learnable only by computing and
comparing). A two-layer transformer, AdamW at a constant lr 1e-3.

Probes (`probes/*[arith_*]`, every 2 steps): the same demos, then a query on which the pattern
and the computation disagree; correct = the computation, incorrect = the pattern (accuracy and
soft margin > 0.5 / 0: GENERALIZING; < 0.5 / 0: PATTERN_MATCHING, as `genjax analyze` labels
regimes).

What it should show, in three phases: (1) the cheap patterns first: arith_repeat and
arith_successive fall to ~0 (pattern matching) while the sum table is still unknown; (2) once
the table is learned, an abrupt hop to the computation on both (and arith_flipped rises to ~0.9
since the flip is not learned yet); (3) the flip is learned: arith_flipped hops down to ~0.05
(the context's labels win), and at the same time repeat/successive become cleaner (margins
0.65/0.45 -> 0.94): the model now checks demos against its own computation.

Measured (seed 0; `genjax train --config configs/pattern_vs_compute.py --workdir
/tmp/pattern_vs_compute`: 153 s wall on 2 CPU cores shared with other jobs, load average ~7):
arith_repeat accuracy 0.03 at steps 100-160, 0.75 at 180, 1.0 at 200; arith_successive 0.03 at
120-160, 0.94 at 200; arith_flipped 0.56 at 160, 0.94 at 200, 0.78 at 540, 0.31 at 580, 0.06
from 640 on. `genjax analyze` labels the regimes and finds three hops: arith_repeat and
arith_successive pattern_matching (from steps 70 and 90) -> generalizing at step 180;
arith_flipped generalizing (170-562) -> pattern_matching at step 590.
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    shots = 4
    c.model.update(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, d_ff=128)
    c.train.update(steps=800, batch_size=64, seq_len=7 * shots + 5)  # one episode per row
    c.optim.update(lr=1e-3, warmup_steps=50, schedule="constant", weight_decay=0.01)
    c.data.heldout_fraction = 0.1
    c.data.domains = ConfigDict({"arith": {
        "kind": "pattern_arithmetic", "modulus": 11, "shots": shots, "repeat": 0.2,
        "successive": 0.2, "flipped": 0.2, "loss_on": "answers"}})
    c.hooks.heldout.update(enabled=True, every=10, batch_size=128)
    c.hooks.train_domains.enabled = True
    c.hooks.probes.update(enabled=True, every=2, builtin_items=32)
    c.checkpoint.every = 400
    c.log.every = 100
    return c
