"""In-context vs in-weights learning on bursty sequences (Chan et al. 2022; Singh et al. 2023;
the induction-head phase change of Olsson et al. 2022), about 4 minutes on CPU.

Episodes `KQ 3,BD 7,...,KQ 3` over 512 two-letter classes drawn from a Zipf law, each with a
fixed digit label: 8 context items and a query, loss on every label. 90% of the episodes are
bursty (the query's class 3 times in the context, another class 3 times); half of those are
relabeled (the episode permutes all labels), so that both strategies are learnable: memorizing
class -> label (in-weights, IWL) and copying the query's label from the context (in-context,
ICL). A two-layer transformer, AdamW at a constant lr 1e-3.

Probe families (`probes/*[family]`, every 2 steps; each context holds two classes, and both
candidate answers equally often, so copying whatever label the context shows cannot pass):
  - icl_novel: classes never trained on, arbitrary labels: only ICL passes;
  - iwl: a trained class absent from the context: only its memorized label passes;
  - icl_vs_iwl: a trained class shown with another label than its memorized one: accuracy
    (and margin) above 0.5 (0): the context wins; below: the weights win.

What it should show: IWL first (iwl accuracy ~0.8 from ~step 150, icl_vs_iwl margin negative:
the weights win), while icl_novel stays at chance; then the induction-head phase change: within
~80 steps icl_novel jumps from chance to > 0.9 and icl_vs_iwl flips to the context, while the
iwl margin shrinks (the strategies compete for the same answer).

Measured (seed 0; `genjax train --config configs/icl_vs_iwl.py --workdir /tmp/icl_vs_iwl`:
107 s wall on 2 CPU cores shared with another job; families are `icl/icl_novel` etc.):
icl_novel accuracy 0.53-0.62 until step 340, 0.72 at 360, 0.94 at 420, ~1.0 from 580 (soft
margin 0.11 at 340, 0.76 at 420); icl_vs_iwl margin -0.32 at step 100, -0.16 at 300, > 0 from
340, accuracy 0.91 at 360; iwl accuracy ~0.8-0.9 from step 100 on, its margin shrinking from
~0.59 (340) to ~0.4 after the phase change. `genjax analyze`: soft-margin change points at 386
(icl_novel) and 276 and 342 (icl_vs_iwl); icl_novel and iwl generalizing from 388 and 88;
one hop: icl_vs_iwl from pattern_matching (weights win, steps 0-274) to generalizing (context
wins) at step 346.
Across optimizers (`--config.optim.name=NAME` with README's per-optimizer settings: lion at lr
3.3e-4 and weight decay 0.03, muon as it is, sgd at lr 0.03 and weight decay 3.3e-5; seed 0, 2
CPU cores, 2026-12-06; AdamW in the same session: the icl_vs_iwl hop to the context at step 346,
icl_novel accuracy >= 0.9 from 406): the same phase change under each, at another step. lion:
hop at 406, icl_novel >= 0.9 from 424; muon: later, hop at 496, icl_novel >= 0.9 from 632; sgd:
earlier, hop at 364, icl_novel >= 0.9 from 338 (0.95 at 400); iwl accuracy at the end about
under all four (0.92-0.96).
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    pairs = 8
    c.model.update(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, d_ff=128)
    c.train.update(steps=800, batch_size=64, seq_len=5 * pairs + 3)  # one episode per row
    c.optim.update(lr=1e-3, warmup_steps=50, schedule="constant", weight_decay=0.01)
    c.data.heldout_fraction = 0.1
    c.data.domains = ConfigDict({"icl": {"kind": "bursty_icl", "context_pairs": pairs,
                                         "relabel": 0.5, "loss_on": "answers"}})
    c.hooks.heldout.update(enabled=True, every=10, batch_size=128)
    c.hooks.train_domains.enabled = True
    c.hooks.probes.update(enabled=True, every=2, builtin_items=32)
    c.checkpoint.every = 400
    c.log.every = 100
    return c
