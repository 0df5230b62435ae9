"""Train on your own text: every file in `data.files` becomes a domain named by its stem.

    genjax train --config configs/text.py --workdir runs/t \
        --config.data.files='corpus/*.txt,extra/code.jsonl'

`.txt`: one document per line; `.jsonl`: one JSON object per line with a `text` field
(`data.text_field`); `.parquet`: a `text` column. Documents are split into train and held-out
by a hash of their text; files are mixed by their training token counts. Each file is read
whole into memory: for a real corpus, tokenize it once with `genjax data prepare` and use
configs/prepared.py.
Byte-level tokenizer by default; `--config.data.tokenizer=sentencepiece
--config.data.sentencepiece_model=PATH.model` for a local sentencepiece model (then raise
`model.vocab_size` to at least its vocabulary).
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    c.model.update(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32, d_ff=384)
    c.train.update(steps=1000, batch_size=32, seq_len=128)
    c.optim.update(lr=2e-3, warmup_steps=50)
    c.data.heldout_fraction = 0.05
    for name in ("heldout", "train_domains", "memorization"):
        c.hooks[name].enabled = True
    c.hooks.heldout.every = 10
    c.hooks.memorization.every = 10
    c.checkpoint.every = 200
    return c
