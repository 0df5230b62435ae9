"""The config schema: every key genjax understands, with its default and type.

Experiment files in `configs/` start from `base_config()` and change values; `validate` rejects
any key the schema does not know and any value of the wrong type, naming the key. Open sections
(`data.domains`, `hooks.probes.files`) hold user-named entries checked by their own owners.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import ml_collections

ConfigDict = ml_collections.ConfigDict


class ConfigError(ValueError):
    """A config that genjax cannot run: names the offending key."""


def base_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0
    c.model = ConfigDict(
        dict(
            vocab_size=288,  # >= tokenizer vocab; a multiple of the tensor axis
            d_model=128,
            n_layers=4,
            n_heads=4,
            n_kv_heads=2,
            head_dim=32,
            d_ff=384,
            tie_embeddings=True,
            rope_theta=10_000.0,
            norm_eps=1e-6,
            param_dtype="float32",
            compute_dtype="float32",
            remat=False,
        )
    )
    c.train = ConfigDict(dict(steps=200, batch_size=32, seq_len=128, grad_accum=1))
    c.optim = ConfigDict(
        dict(
            lr=3e-3,
            warmup_steps=20,
            schedule="cosine",  # or "constant"
            end_lr_fraction=0.1,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            weight_decay=0.1,
            clip_norm=1.0,
        )
    )
    c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    # Logical axis -> mesh axes. A logical axis absent here is replicated.
    c.sharding_rules = (
        ("batch", ("data", "fsdp")),
        ("embed", "fsdp"),
        ("vocab", "tensor"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("mlp", "tensor"),
    )
    c.data = ConfigDict(
        dict(
            domains=ConfigDict(),  # name -> {kind, weight, kind-specific options}
            tokenizer="byte",  # or "sentencepiece"
            sentencepiece_model="",
            files="",  # comma-separated paths/globs; each file's stem becomes a text domain
            text_field="text",
            heldout_fraction=0.1,
            prefetch=4,
        )
    )
    c.checkpoint = ConfigDict(dict(every=100, keep=3, async_save=True))
    c.log = ConfigDict(dict(every=10, progress="auto"))  # progress: auto | bar | lines | none
    c.hooks = ConfigDict(
        dict(
            heldout=ConfigDict(dict(enabled=False, every=1, batches=1, batch_size=0)),
            train_domains=ConfigDict(dict(enabled=False, every=1)),
            probes=ConfigDict(
                dict(
                    enabled=False,
                    every=1,
                    builtin_items=32,  # items per built-in family
                    files=ConfigDict(),  # family name -> JSONL path
                    shots=4,
                    sampling="random",  # none | random | ordered | balanced
                    seeds=1,
                    joiner="\n",
                    max_items=256,
                    prompt_len=0,  # 0: fit to the longest item
                    answer_len=0,
                )
            ),
            memorization=ConfigDict(dict(enabled=False, every=1, examples=16)),
        )
    )
    c.stream = ConfigDict(dict(enabled=True, path="", chunk_steps=4096, flush_every_s=60.0,
                               fsync=False, overwrite=False, tensorboard=False,
                               wandb_project=""))
    c.analysis = ConfigDict(
        dict(online_hops=False, save_on_hop=False, window=50, min_regime_steps=20)
    )
    return c


_OPEN_SECTIONS = ("data.domains", "hooks.probes.files")


def _check(node: Any, schema: Any, path: str) -> None:
    if path in _OPEN_SECTIONS:
        return
    if isinstance(schema, ConfigDict):
        if not isinstance(node, ConfigDict | dict):
            raise ConfigError(f"config key '{path}' must be a section, got {type(node).__name__}")
        for key in node.keys():
            sub = f"{path}.{key}" if path else key
            if key not in schema:
                known = ", ".join(sorted(schema.keys()))
                raise ConfigError(f"unknown config key '{sub}' (known here: {known})")
            _check(node[key], schema[key], sub)
        return
    ok_types: tuple[type, ...] = (type(schema),)
    if isinstance(schema, float):
        ok_types = (float, int)
    if isinstance(schema, tuple | list):
        ok_types = (tuple, list)
    if isinstance(node, bool) and not isinstance(schema, bool):
        ok_types = ()
    if not isinstance(node, ok_types):
        raise ConfigError(
            f"config key '{path}' expects {type(schema).__name__}, "
            f"got {type(node).__name__} ({node!r})"
        )


def validate(config: ConfigDict) -> ConfigDict:
    """Checks keys and types against `base_config()` and basic value ranges; returns config."""
    _check(config, base_config(), "")
    positive = ["train.steps", "train.batch_size", "train.seq_len", "train.grad_accum",
                "model.d_model", "model.n_layers", "model.n_heads", "model.n_kv_heads",
                "model.head_dim", "model.d_ff", "checkpoint.every", "stream.chunk_steps",
                "stream.flush_every_s"]
    for key in positive:
        section, name = key.split(".")
        if config[section][name] <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {config[section][name]}")
    if config.model.n_heads % config.model.n_kv_heads:
        raise ConfigError("config key 'model.n_heads' must be a multiple of 'model.n_kv_heads'")
    for key in ("param_dtype", "compute_dtype"):
        if config.model[key] not in ("float32", "bfloat16"):
            raise ConfigError(f"config key 'model.{key}' must be float32 or bfloat16")
    if config.optim.schedule not in ("cosine", "constant"):
        raise ConfigError("config key 'optim.schedule' must be 'cosine' or 'constant'")
    if config.train.batch_size % config.train.grad_accum:
        raise ConfigError("config key 'train.batch_size' must be divisible by 'train.grad_accum'")
    if config.hooks.probes.sampling not in ("none", "random", "ordered", "balanced"):
        raise ConfigError("config key 'hooks.probes.sampling' must be none|random|ordered|balanced")
    return config


def load(path: str | pathlib.Path) -> ConfigDict:
    """Imports a config file, calls its `get_config()` and validates the result."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"genjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config()")
    try:
        config = module.get_config()
    except (TypeError, KeyError, AttributeError) as e:  # ConfigDict's own type/key checks
        raise ConfigError(f"{path}: {e}") from e
    return validate(config)
