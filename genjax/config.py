"""The config schema: every key genjax understands, with its default and type.

Experiment files in `configs/` start from `base_config()` and change values; `validate` rejects
any key the schema does not know and any value of the wrong type, naming the key. Open sections
(`data.domains`, `hooks.probes.files`) hold user-named entries checked by their own owners.
"""

from __future__ import annotations

import importlib.util
import pathlib
import traceback
from typing import Any

import ml_collections

ConfigDict = ml_collections.ConfigDict


class ConfigError(ValueError):
    """A config that genjax cannot run: names the offending key."""


def base_config() -> ConfigDict:
    """Every key genjax understands with its default: experiment files start from this."""
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
            attention="auto",  # auto | xla | splash (TPU Pallas) | cudnn (GPU flash)
            scan_layers=False,  # one lax.scan over stacked layers instead of a Python loop
            remat="none",  # none | full | a jax.checkpoint_policies name (dots_saveable, ...)
            loss_chunk=512,  # cross-entropy over sequence chunks: no [B, T, V] f32 logits
        )
    )
    c.train = ConfigDict(dict(steps=200, batch_size=32, seq_len=128, grad_accum=1,
                              on_nonfinite="stop"))  # stop | skip
    c.optim = ConfigDict(
        dict(
            name="adamw",  # adamw | sgd | lion | muon
            lr=3e-3,
            momentum=0.9,  # sgd's momentum, muon's beta
            muon_rms=0.2,  # muon: update RMS matched to AdamW's (0: width scaling)
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
            tokenizer="byte",  # or "sentencepiece", "huggingface"
            sentencepiece_model="",
            tokenizer_file="",  # tokenizer.json (data.tokenizer=huggingface), local or gs://
            files="",  # comma-separated paths/globs; each file's stem becomes a text domain
            prepared="",  # comma-separated prepared datasets; each one's name becomes a domain
            text_field="text",
            heldout_fraction=0.1,
            order_offset=0,  # train batches start this many batches later in the stream
            prefetch=4,
        )
    )
    c.checkpoint = ConfigDict(dict(every=100, keep=3, async_save=True))
    c.log = ConfigDict(dict(every=10, progress="auto"))  # progress: auto | bar | lines | none
    c.hooks = ConfigDict(
        dict(
            micro_batch=0,  # eval rows per hook micro-batch (0: the train micro-batch)
            fuse_passes="auto",  # auto | on | off: eval rows in one forward pass (auto: not CPU)
            gate="cond",  # cond | programs: how hooks with every > 1 skip steps
            heldout=ConfigDict(dict(enabled=False, every=1, batches=1, batch_size=0,
                                    min_tokens=256, min_documents=5,
                                    on_small="warn")),  # warn | error
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
                    terminator="joiner",  # after each answer: joiner | eos | none
                    max_items=256,
                    prompt_len=0,  # 0: fit to the longest item
                    answer_len=0,
                )
            ),
            memorization=ConfigDict(dict(enabled=False, every=1, examples=16)),
            attribution=ConfigDict(dict(enabled=False, every=1, rows_per_domain=4,
                                        train_cosines=False, domains_at_once=0)),
            norms=ConfigDict(dict(enabled=False, every=1)),
            predictors=ConfigDict(dict(enabled=False, every=1, examples=16,
                                       source="heldout")),  # heldout | probes
        )
    )
    c.stream = ConfigDict(dict(enabled=True, path="", chunk_steps=4096, flush_every_s=5.0,
                               fsync=False, overwrite=False, tensorboard=False,
                               wandb_project=""))
    c.analysis = ConfigDict(
        dict(online_hops=False, save_on_hop=False, window=50, min_regime_steps=20,
             spike_window=100, spike_sigmas=6.0, margin_floor=0.02)
    )
    return c


# What each key means: `genjax config show CONFIG` prints it beside the value and the default.
DESCRIPTIONS = {
    "seed": "seed of the parameter init, the data order and the probe demos",
    "model.vocab_size": "embedding rows: >= the tokenizer's vocabulary, a multiple of mesh.tensor",
    "model.d_model": "width of the residual stream",
    "model.n_layers": "transformer blocks",
    "model.n_heads": "query heads per block",
    "model.n_kv_heads": "key/value heads (grouped-query attention): divides model.n_heads",
    "model.head_dim": "width of one attention head",
    "model.d_ff": "hidden width of the SwiGLU MLP",
    "model.tie_embeddings": "share the input embedding and the output projection",
    "model.rope_theta": "RoPE base frequency",
    "model.norm_eps": "RMSNorm epsilon",
    "model.param_dtype": "dtype of the stored params and optimizer state: float32 | bfloat16",
    "model.compute_dtype": "dtype of the matmuls: float32 | bfloat16",
    "model.attention": "attention kernel: auto | xla | splash (TPU Pallas) | cudnn (GPU flash)",
    "model.scan_layers": "one lax.scan over stacked layers instead of a Python loop",
    "model.remat": "rematerialization: none | full | a jax.checkpoint_policies name",
    "model.loss_chunk": "sequence positions per cross-entropy chunk (0: the whole row)",
    "train.steps": "optimizer steps of the run (the cosine schedule decays over them)",
    "train.batch_size": "sequences per global batch",
    "train.seq_len": "tokens per sequence",
    "train.grad_accum": "micro-batches per step (divides train.batch_size)",
    "train.on_nonfinite": "a NaN/inf loss or gradient: stop (at the last good checkpoint) | skip "
                          "(that update is not applied; train/skipped_updates counts them)",
    "optim.name": "optimizer: adamw | sgd (momentum) | lion | muon (optax.contrib; matrices, "
                  "AdamW for embeddings, norms and biases)",
    "optim.lr": "peak learning rate",
    "optim.momentum": "sgd: momentum; muon: beta of its momentum, in [0, 1)",
    "optim.muon_rms": "muon: scale its orthogonalized updates to this RMS x sqrt(max(fan_in, "
                      "fan_out)) (Liu et al. 2025: 0.2 matches AdamW's, so that AdamW's lr and "
                      "weight decay carry over); 0: Keller Jordan's sqrt(fan_out / fan_in)",
    "optim.warmup_steps": "linear warmup steps (clipped to train.steps - 1)",
    "optim.schedule": "after warmup: cosine | constant",
    "optim.end_lr_fraction": "cosine: final learning rate as a fraction of optim.lr, in [0, 1]",
    "optim.b1": "AdamW and Lion beta1 (also muon's AdamW part), in [0, 1)",
    "optim.b2": "AdamW and Lion beta2 (also muon's AdamW part), in [0, 1)",
    "optim.eps": "AdamW epsilon",
    "optim.weight_decay": "decoupled weight decay of every optimizer (matrices only)",
    "optim.clip_norm": "global gradient-norm clip",
    "mesh.data": "devices on the data axis (-1: the rest)",
    "mesh.fsdp": "devices on the fsdp axis, params sharded over it (-1: the rest)",
    "mesh.tensor": "devices on the tensor axis (heads, MLP, vocab)",
    "sharding_rules": "logical axis -> mesh axes; a logical axis absent here is replicated",
    "data.domains": "domain name -> {kind, weight, kind-specific options}",
    "data.tokenizer": "byte | sentencepiece | huggingface",
    "data.tokenizer_file": "Hugging Face tokenizer.json (data.tokenizer=huggingface), local or "
                           "gs://",
    "data.sentencepiece_model": "path of the sentencepiece model (data.tokenizer=sentencepiece)",
    "data.files": "comma-separated paths/globs of .txt/.jsonl files; each stem is a domain",
    "data.prepared": "comma-separated datasets from genjax data prepare (local or gs://); each "
                     "is a domain named by its last path component, weighted by token count",
    "data.text_field": "the text field of .jsonl rows",
    "data.heldout_fraction": "share of problems/documents held out (by a hash of the text), "
                             "in (0, 1)",
    "data.prefetch": "host batches prefetched by the data loader",
    "data.order_offset": "the batch of step s is the stream's batch s + order_offset: another "
                         "data order with the same mixture and held-out split (the stability "
                         "reruns of genjax analyze --explain)",
    "checkpoint.every": "steps between checkpoints",
    "checkpoint.keep": "checkpoints kept",
    "checkpoint.async_save": "write checkpoints in the background",
    "log.every": "steps between progress lines",
    "log.progress": "auto | bar | lines | none",
    "hooks.micro_batch": "eval rows per hook micro-batch (0: the train micro-batch)",
    "hooks.fuse_passes": "auto | on | off: the held-out, memorization and probe rows in one "
                         "forward pass (weights read once, same metrics); auto: on except CPU",
    "hooks.gate": "how hooks with every > 1 skip steps: cond (one compiled step, each such hook "
                  "under lax.cond) | programs (one compiled step per set of hooks due together, "
                  "chosen on the host: more compiles; on CPU a gated hook that reads the "
                  "step's update overlaps with the train step)",
    "hooks.heldout.enabled": "held-out loss/accuracy per domain and the train-vs-held-out gap",
    "hooks.heldout.every": "steps between held-out evaluations (NaN on other steps)",
    "hooks.heldout.batches": "held-out batches evaluated",
    "hooks.heldout.batch_size": "rows per held-out batch (0: train.batch_size)",
    "hooks.heldout.min_tokens": "distinct held-out loss tokens a domain should have (fewer: "
                                "see hooks.heldout.on_small)",
    "hooks.heldout.min_documents": "held-out documents a text domain should have",
    "hooks.heldout.on_small": "a domain below hooks.heldout.min_tokens or min_documents: "
                              "warn | error",
    "hooks.train_domains.enabled": "train loss/accuracy/tokens per domain (no extra FLOPs)",
    "hooks.train_domains.every": "steps between per-domain train metrics",
    "hooks.probes.enabled": "contrastive probes: correct vs pattern-matching continuation",
    "hooks.probes.every": "steps between probe evaluations",
    "hooks.probes.builtin_items": "items per built-in probe family (0: none)",
    "hooks.probes.files": "family name -> probe JSONL path (--config.hooks.probes.files.NAME=PATH)",
    "hooks.probes.shots": "in-context demos per item (a file without demo rows: zero-shot)",
    "hooks.probes.sampling": "demo sampling: none | random | ordered | balanced",
    "hooks.probes.seeds": "demo-sampling seeds; items are repeated per seed",
    "hooks.probes.joiner": "text between demo blocks and the test prompt",
    "hooks.probes.terminator": "scored after each file answer: joiner | eos | none (answers "
                               "that already end)",
    "hooks.probes.max_items": "items kept per probe file",
    "hooks.probes.prompt_len": "context tokens kept per item, its last ones (0: all of it)",
    "hooks.probes.answer_len": "most answer tokens an item may have (0: any)",
    "hooks.memorization.enabled": "loss on early training rows vs fresh held-out rows",
    "hooks.memorization.every": "steps between memorization evaluations",
    "hooks.memorization.examples": "rows in each of the seen and fresh sets",
    "hooks.attribution.enabled": "per-domain held-out gradients against the applied update "
                                 "(about 3x the held-out forward FLOPs)",
    "hooks.attribution.every": "steps between attribution evaluations",
    "hooks.attribution.rows_per_domain": "held-out rows per domain whose loss gradient is "
                                         "taken (its cost grows with rows x domains)",
    "hooks.attribution.domains_at_once": "held-out domain gradients computed together "
                                          "(0: all; each is a copy of the parameters' size: "
                                          "1 for the least memory)",
    "hooks.attribution.train_cosines": "also cosines between the train batch's per-domain "
                                       "gradients (one backward per domain; holds D gradients)",
    "hooks.norms.enabled": "weight, gradient and update norms per layer (no extra FLOPs)",
    "hooks.norms.every": "steps between norm evaluations",
    "hooks.predictors.enabled": "hop predictors per layer: RankMe and participation ratio of "
                                "activations, Fisher trace, top eigenvalue / trace and mean "
                                "|cos| of per-example gradients",
    "hooks.predictors.every": "steps between predictor evaluations (one backward per row)",
    "hooks.predictors.examples": "rows N of the Gram matrices (>= 2), taken from the "
                                 "domains or probe families in turn",
    "hooks.predictors.source": "heldout (held-out rows) | probes (probe items' correct "
                               "continuation)",
    "stream.enabled": "write metrics to TensorStore (zarr3)",
    "stream.path": "store location (empty: WORKDIR/metrics; file://, gs://, memory://)",
    "stream.chunk_steps": "steps per stored chunk",
    "stream.flush_every_s": "seconds between writes of a partial chunk",
    "stream.fsync": "fsync every write",
    "stream.overwrite": "replace a store whose schema differs",
    "stream.tensorboard": "also mirror scalars to TensorBoard (WORKDIR/tensorboard)",
    "stream.wandb_project": "also mirror scalars to this Weights & Biases project",
    "analysis.online_hops": "detect mode hops during training and log them",
    "analysis.save_on_hop": "checkpoint right after each detected hop",
    "analysis.window": "rows before a hop used by the attribution",
    "analysis.min_regime_steps": "rows a regime must last to count",
    "analysis.margin_floor": "|mean soft margin| a decided regime needs besides its CI",
    "analysis.spike_window": "steps of history for the online loss/grad-norm spike detector",
    "analysis.spike_sigmas": "a spike exceeds the window's median by this many robust sigmas",
}

_OPEN_SECTIONS = ("data.domains", "hooks.probes.files")


def leaves(config: Any, path: str = "") -> dict[str, Any]:
    """Flattened {dotted key: value}; an open section's entries appear below its key."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        sub = f"{path}.{key}" if path else key
        if isinstance(value, ConfigDict | dict) and (len(value) or sub not in _OPEN_SECTIONS):
            out.update(leaves(value, sub))
        else:
            out[sub] = value.to_dict() if isinstance(value, ConfigDict) else value
    return out


def describe(config: ConfigDict) -> str:
    """The resolved config, one key a line: value, the default where it differs, meaning."""
    defaults, values = leaves(base_config()), leaves(config)
    cells = []
    for key, value in values.items():
        section = next((s for s in _OPEN_SECTIONS if key.startswith(s + ".")), None)
        if section and not any(c[0].startswith(section + ".") for c in cells):
            cells.append((section, "", "", DESCRIPTIONS[section]))
        default = "" if section or (key in defaults and defaults[key] == value) else \
            f"(default {defaults.get(key)!r})"
        cells.append((key, repr(value), default, "" if section else DESCRIPTIONS.get(key, "")))
    w = [min(max(len(c[i]) for c in cells), cap) for i, cap in ((0, 36), (1, 24), (2, 22))]
    rows = [f"{k:<{w[0]}}  {v:<{w[1]}}  {d:<{w[2]}}  {m}".rstrip() for k, v, d, m in cells]
    return "\n".join([f"{'key':<{w[0]}}  {'value':<{w[1]}}  {'':<{w[2]}}  meaning", *rows])


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


# Value ranges checked by `validate` (types are checked against `base_config()` first).
_AT_LEAST_1 = ("train.steps", "train.batch_size", "train.seq_len", "train.grad_accum",
               "model.vocab_size", "model.d_model", "model.n_layers", "model.n_heads",
               "model.n_kv_heads", "model.head_dim", "model.d_ff", "checkpoint.every",
               "checkpoint.keep", "log.every", "stream.chunk_steps", "hooks.heldout.batches",
               "hooks.probes.seeds", "hooks.probes.max_items", "hooks.memorization.examples",
               "hooks.predictors.examples", "hooks.attribution.rows_per_domain",
               "analysis.window", "analysis.min_regime_steps", "analysis.spike_window")
_AT_LEAST_0 = ("seed", "data.order_offset", "hooks.attribution.domains_at_once",
               "model.loss_chunk", "optim.warmup_steps", "data.prefetch",
               "hooks.micro_batch", "hooks.heldout.batch_size", "hooks.probes.builtin_items",
               "hooks.probes.shots", "hooks.probes.prompt_len", "hooks.probes.answer_len",
               "optim.weight_decay", "optim.muon_rms", "hooks.heldout.min_tokens",
               "hooks.heldout.min_documents", "analysis.margin_floor")
_POSITIVE = ("analysis.spike_sigmas", "optim.lr", "optim.eps", "optim.clip_norm",
             "model.rope_theta", "model.norm_eps", "stream.flush_every_s")
# key -> (low, high, brackets): "()" open, "[]" closed, "[)" half-open
_INTERVALS = {"data.heldout_fraction": (0, 1, "()"), "optim.end_lr_fraction": (0, 1, "[]"),
              "optim.b1": (0, 1, "[)"), "optim.b2": (0, 1, "[)"),
              "optim.momentum": (0, 1, "[)")}
_CHOICES = {"model.param_dtype": ("float32", "bfloat16"),
            "model.compute_dtype": ("float32", "bfloat16"),
            "optim.schedule": ("cosine", "constant"),
            "optim.name": ("adamw", "sgd", "lion", "muon"),
            "train.on_nonfinite": ("stop", "skip"),
            "data.tokenizer": ("byte", "sentencepiece", "huggingface"),
            "log.progress": ("auto", "bar", "lines", "none"),
            "hooks.probes.sampling": ("none", "random", "ordered", "balanced"),
            "hooks.probes.terminator": ("joiner", "eos", "none"),
            "hooks.heldout.on_small": ("warn", "error"),
            "hooks.predictors.source": ("heldout", "probes"),
            "hooks.fuse_passes": ("auto", "on", "off"), "hooks.gate": ("cond", "programs")}


def lookup(config: Any, key: str) -> Any:
    """`config` at a dotted key."""
    for part in key.split("."):
        config = config[part]
    return config


def _choices() -> dict[str, tuple[str, ...]]:
    from genjax.model.attention import IMPLEMENTATIONS
    from genjax.model.transformer import REMAT_CHOICES

    return {**_CHOICES, "model.attention": tuple(IMPLEMENTATIONS),
            "model.remat": tuple(REMAT_CHOICES)}


def validate(config: ConfigDict) -> ConfigDict:
    """Checks keys and types against `base_config()` and value ranges; returns config."""
    _check(config, base_config(), "")
    every = [f"hooks.{name}.every" for name, section in config.hooks.items()
             if isinstance(section, ConfigDict) and "every" in section]
    for key in (*_AT_LEAST_1, *every):
        if lookup(config, key) < 1:
            raise ConfigError(f"config key '{key}' must be >= 1, got {lookup(config, key)}")
    for key in _AT_LEAST_0:
        if lookup(config, key) < 0:
            raise ConfigError(f"config key '{key}' must be >= 0, got {lookup(config, key)}")
    for key in _POSITIVE:
        if not lookup(config, key) > 0:
            raise ConfigError(f"config key '{key}' must be positive, got {lookup(config, key)}")
    for key, (low, high, brackets) in _INTERVALS.items():
        v = lookup(config, key)
        above = v > low if brackets[0] == "(" else v >= low
        below = v < high if brackets[1] == ")" else v <= high
        if not (above and below):
            raise ConfigError(f"config key '{key}' must be in {brackets[0]}{low}, {high}"
                              f"{brackets[1]}, got {v}")
    for key, allowed in _choices().items():
        if lookup(config, key) not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {' | '.join(allowed)}, "
                              f"got {lookup(config, key)!r}")
    if config.model.n_heads % config.model.n_kv_heads:
        raise ConfigError("config key 'model.n_heads' must be a multiple of 'model.n_kv_heads'")
    if config.train.batch_size % config.train.grad_accum:
        raise ConfigError("config key 'train.batch_size' must be divisible by 'train.grad_accum'")
    return config


def from_stored(stored: dict) -> ConfigDict:
    """A run's recorded config (the stream's or run.json's) over today's defaults, validated:
    keys added since that run was written take their defaults."""
    def merge(node: ConfigDict, values: dict, path: str) -> None:
        for key, value in values.items():
            sub = f"{path}.{key}" if path else key
            if (isinstance(value, dict) and isinstance(node.get(key), ConfigDict)
                    and sub not in _OPEN_SECTIONS):
                merge(node[key], value, sub)
            else:
                node[key] = ConfigDict(value) if isinstance(value, dict) else value

    config = base_config()
    with config.unlocked():
        merge(config, stored, "")
    return validate(config)


def load(path: str | pathlib.Path, check: bool = True) -> ConfigDict:
    """Imports a config file, calls its `get_config()` and (`check`) validates the result.
    Any failure of the file itself is a ConfigError naming the file and line. Config files are
    Python modules, imported from local disk (a URL is refused, never read as a path)."""
    if "://" in str(path):
        raise ConfigError(f"config file {path}: config files are local Python files (copy it "
                          "here first); workdirs and data can be gs:// URLs")
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"genjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ConfigError(f"config file {path} has no get_config()")
        config = module.get_config()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's file: say where it failed, in one line
        raise ConfigError(f"config file {_where(path, e)}: {type(e).__name__}: {e}") from e
    if not isinstance(config, ConfigDict):
        raise ConfigError(f"config file {path}: get_config() returned "
                          f"{type(config).__name__}, not a ConfigDict")
    return validate(config) if check else config


def _where(path: pathlib.Path, error: Exception) -> str:
    """`path:line` of the deepest frame of `error` in `path` (a SyntaxError's own line)."""
    if isinstance(error, SyntaxError) and error.lineno:
        return f"{path}:{error.lineno}"
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if pathlib.Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return f"{path}:{line}" if line else str(path)
