"""Llama-style ~1.1B-parameter LM (Llama-3.2-1B shape, smaller vocabulary) for a TPU slice.

What it is for: the largest preset, sized for v5p-8, where `genjax compile --config
configs/llama_1b.py --topology v5p-8` puts it at 79 of 95 GiB per chip. On v5e-16 the step
needs 28.7 GiB per 16 GiB chip: raise train.grad_accum or use more chips. d_model 2048,
16 layers, 32 query heads and 8 KV heads of width 64 (grouped-query attention), SwiGLU d_ff
8192, untied 32768-token vocabulary, context 2048; bf16 compute, f32 params and optimizer
state, FSDP over every chip, remat per block. Data are the built-in synthetic domains so it
runs anywhere; set `data.files` and `data.tokenizer='sentencepiece'` for a real run. Every
built-in hook is on, so a compile report shows what monitoring costs.
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    c.model.update(vocab_size=32768, d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8,
                   head_dim=64, d_ff=8192, tie_embeddings=False, rope_theta=500_000.0,
                   compute_dtype="bfloat16", remat=True)
    c.train.update(steps=50_000, batch_size=256, seq_len=2048)
    c.optim.update(lr=3e-4, warmup_steps=2000, weight_decay=0.1)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    # Four domains so that the hooks' rows per step (64 held-out, 32 seen + 32 fresh for
    # memorization) split evenly over up to 64 chips: with three domains they would be 63
    # and 60 rows, and hook data that does not divide the batch axes is replicated on every chip.
    c.data.domains = ConfigDict({
        "arith": {"kind": "modular_arithmetic", "weight": 1.0, "modulus": 97},
        "grammar": {"kind": "grammar", "weight": 1.0},
        "kv": {"kind": "kv_lookup", "weight": 1.0},
        "kv_long": {"kind": "kv_lookup", "weight": 1.0, "num_pairs": 8},
    })
    for name in ("heldout", "train_domains", "probes", "memorization"):
        c.hooks[name].enabled = True
    c.hooks.heldout.batch_size = 64  # held-out rows per step: a quarter of the train batch
    c.hooks.memorization.examples = 32  # 32 seen + 32 fresh rows
    c.checkpoint.every = 1000
    c.log.every = 50
    return c
