"""Pre-training on prepared token shards: tokenize once with `genjax data prepare`, then train
on any number of datasets by name, each a domain of the hooks (held-out loss, gap and
memorization per dataset), mixed by token count unless a weight is given.

    genjax data prepare 'corpus/web/*.jsonl' --out gs://BUCKET/tok/web \\
        --tokenizer_file tokenizer.json
    genjax data prepare 'corpus/code/*.parquet' --out gs://BUCKET/tok/code \\
        --tokenizer_file tokenizer.json
    genjax train --config configs/prepared.py --workdir gs://BUCKET/runs/r1 \\
        --config.data.prepared=gs://BUCKET/tok/web,gs://BUCKET/tok/code \\
        --config.data.tokenizer_file=tokenizer.json --config.model.vocab_size=32768

Explicit weights: `data.domains.NAME = {"kind": "prepared", "path": ..., "weight": w}`
instead of `data.prepared`. Held-out documents were split off by a hash of their text when
the data was prepared (`--heldout_fraction`), so they are never trained on.
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    c.model.update(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=384,
                   vocab_size=32768)
    c.train.update(steps=1000, batch_size=32, seq_len=256)
    c.optim.update(lr=2e-3, warmup_steps=50)
    c.data.tokenizer = "huggingface"
    for name in ("heldout", "train_domains", "memorization"):
        c.hooks[name].enabled = True
    c.hooks.heldout.every = 10
    c.hooks.memorization.every = 10
    c.checkpoint.every = 200
    return c
