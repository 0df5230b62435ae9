"""GPT-2-small-sized LM (~124M parameters) for a TPU slice.

What it is for: a first real-accelerator run and the reference for `genjax compile`:
`genjax compile --config configs/gpt2_124m.py --topology v5e:4x4` puts it at 8.5 of 16 GiB
per v5e chip (21.5 of 95 GiB per chip on v5p-8). Same shape as
GPT-2 small (d_model 768, 12 layers, 12 heads, context 1024, vocab padded to 50304 so it splits
over any tensor axis up to 128) with this repo's blocks (RoPE, RMSNorm, SwiGLU with d_ff 2048
keeps the MLP at GPT-2's 4.7M parameters per layer). bf16 compute, f32 params and optimizer
state, FSDP over every chip, remat per block. Data are the built-in synthetic domains, so it
runs anywhere; point `data.files` at real text for a real run. Every built-in hook is on, so a
compile report shows what monitoring costs.
"""

from genjax.config import ConfigDict, base_config


def get_config() -> ConfigDict:
    c = base_config()
    c.model.update(vocab_size=50304, d_model=768, n_layers=12, n_heads=12, n_kv_heads=12,
                   head_dim=64, d_ff=2048, tie_embeddings=True, compute_dtype="bfloat16",
                   remat="full", scan_layers=True)
    c.train.update(steps=20_000, batch_size=256, seq_len=1024)
    c.optim.update(lr=6e-4, warmup_steps=700, weight_decay=0.1)
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
