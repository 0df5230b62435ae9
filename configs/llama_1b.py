"""Llama-style ~1.1B-parameter LM (Llama-3.2-1B shape, smaller vocabulary) for a TPU slice.

What it is for: the largest preset, sized for v5p-8, where `genjax compile --config
configs/llama_1b.py --topology v5p-8` puts it at 34.4 of 95 GiB per chip with every hook
(v5e-16: 10.6 of 16 GiB; v5e-256: 1.1 of 16; benchmarks/TPU_ESTIMATES.md). d_model 2048,
16 layers, 32 query heads and 8 KV heads of width 64 (grouped-query attention), SwiGLU d_ff
8192, untied 32768-token vocabulary, context 2048; bf16 compute, f32 params and optimizer
state, remat per block. Everything else (FSDP over every chip, the four synthetic domains,
every built-in hook, checkpoint and log cadence) is gpt2_124m's run setup. Set `data.files` and
`data.tokenizer='sentencepiece'` for a real run.
"""

import pathlib

from genjax.config import ConfigDict, load


def get_config() -> ConfigDict:
    c = load(pathlib.Path(__file__).with_name("gpt2_124m.py"))
    c.model.update(vocab_size=32768, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                   head_dim=64, d_ff=8192, tie_embeddings=False, rope_theta=500_000.0,
                   compute_dtype="bfloat16", remat="full", scan_layers=True)
    c.train.update(steps=50_000, batch_size=256, seq_len=2048)
    c.optim.update(lr=3e-4, warmup_steps=2000, weight_decay=0.1)
    return c
