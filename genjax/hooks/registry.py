"""Builds the hooks a config enables (`config.hooks.*`)."""

from __future__ import annotations

import json

from genjax import paths
from genjax.batching import EvalBatching
from genjax.data import Data
from genjax.data.pipeline import heldout_summary
from genjax.data.sources import DataError
from genjax.hooks.base import Hook
from genjax.hooks.domains import HeldoutHook, MemorizationHook, TrainDomainsHook
from genjax.hooks.gradients import AttributionHook, NormsHook
from genjax.hooks.layers import layer_labels
from genjax.hooks.predictors import PredictorHook, heldout_rows, probe_rows
from genjax.hooks.probes import ProbeError, ProbeHook, answer_tokens, load_probe_file
from genjax.model import ModelConfig, abstract_model


def probe_items(config, data: Data, note=None) -> list:
    """Built-in families of the synthetic domains plus every file in `hooks.probes.files`.
    A file without demo rows is scored zero-shot (`note(text)` says so; default: stderr), and
    with `hooks.probes.answer_len` set every answer must fit in it."""
    p = config.hooks.probes
    items = data.probe_items(p.builtin_items) if p.builtin_items else []
    builtin = {it.family for it in items}
    terminator = {"joiner": p.joiner, "eos": "", "none": ""}[p.get("terminator", "joiner")]
    eos = p.get("terminator", "joiner") == "eos"
    for family, path in sorted(p.files.items()):
        if not isinstance(path, str):
            raise ProbeError(f"hooks.probes.files.{family} must be a path string")
        if family in builtin:  # built-in families are DOMAIN/FAMILY: only a clash with one
            raise ProbeError(f"hooks.probes.files.{family}: a built-in probe family of that "
                             f"name exists; choose another name")
        shots = p.shots
        if shots and p.sampling != "none" and not _has_demo_rows(path):
            shots = 0
            (note or _note)(f"note: probe file {path} has no demo rows: family '{family}' is "
                            f"scored zero-shot (hooks.probes.shots={p.shots} needs demos)")
        loaded = load_probe_file(path, family, shots, p.sampling, p.seeds, p.joiner,
                                 terminator, eos, note=note or _note)
        items += loaded[: p.max_items]
    if p.answer_len:
        _check_answer_len(items, data.tokenizer, p.answer_len)
    return items


def _note(text: str) -> None:
    import sys

    import jax

    if jax.process_index() == 0:
        print(text, file=sys.stderr)


def _has_demo_rows(path: str) -> bool:
    """Whether a probe JSONL file has a `split: demo` row (malformed lines: the loader says)."""
    try:
        with paths.as_path(path).open("r") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and row.get("split") == "demo":
                    return True
    except OSError:
        return True  # unreadable: let the loader name the problem
    return False


def _check_answer_len(items: list, tokenizer, answer_len: int) -> None:
    """Every answer of every item within `hooks.probes.answer_len` tokens, or one line naming
    the first that is not and the length that fits them all."""
    longest, first, counts = 0, None, {}
    for it in items:
        i = counts[it.family] = counts.get(it.family, -1) + 1  # the item's label: family/i
        for answer in (it.correct, it.incorrect):
            n = len(answer_tokens(tokenizer, it.prompt, answer, it.terminator,
                                  it.terminator_eos)[1])
            longest = max(longest, n)
            if n > answer_len and first is None:
                first = (f"{it.family}/{i}", answer, n)
    if first is not None:
        label, answer, n = first
        raise ProbeError(f"probe item {label}: answer {answer!r} is {n} tokens, "
                         f"longer than hooks.probes.answer_len={answer_len} (the longest answer "
                         f"is {longest} tokens; 0 fits them all)")


def heldout_note(config, data: Data, rows: dict) -> str:
    """The start-up summary of the held-out sets (rows, distinct rows, distinct loss tokens,
    text documents, per domain), with a warning for each domain below
    `hooks.heldout.min_tokens` distinct loss tokens or (text) `min_documents` documents;
    `hooks.heldout.on_small=error` refuses such a domain instead."""
    h = config.hooks.heldout
    minimum, on_small = h.get("min_tokens", 0), h.get("on_small", "warn")
    min_docs = h.get("min_documents", 0)
    lines, small = [f"held-out sets (hooks.heldout: min_tokens={minimum}, "
                    f"min_documents={min_docs}):"], []
    for rec in heldout_summary(data, rows):
        docs = ""
        if "documents" in rec:
            docs = f"{rec['documents']} of {rec['of_documents']} documents" + (
                " (none hashed into held-out: the first one was moved there)"
                if rec["moved"] else "") + ", "
        lines.append(f"  {rec['domain']}: {docs}{rec['rows']} rows ({rec['distinct_rows']} "
                     f"distinct), {rec['tokens']:,} distinct loss tokens")
        if rec["tokens"] < minimum or rec.get("documents", min_docs) < min_docs:
            small.append(f"domain '{rec['domain']}' has {rec['tokens']:,} distinct held-out "
                         f"loss tokens ({docs}{rec['distinct_rows']} distinct rows), below "
                         f"hooks.heldout.min_tokens={minimum} or min_documents={min_docs}: its "
                         f"held-out loss and gap rest on little text (add documents, raise "
                         f"data.heldout_fraction or data.domains.{rec['domain']}.heldout_rows)")
    if small and on_small == "error":
        raise DataError("held-out set too small: " + small[0] +
                        "; hooks.heldout.on_small=warn runs anyway")
    return "\n".join(lines + [f"warning: {m}" for m in small])


def eval_batching(config, shards: int) -> EvalBatching:
    """Hook rows sharded over the batch mesh axes, `hooks.micro_batch` rows at a time (0: the
    train step's micro-batch)."""
    micro = config.hooks.micro_batch or config.train.batch_size // config.train.grad_accum
    return EvalBatching(micro_batch=micro, shards=shards)


def build_hooks(config, data: Data, shards: int = 1, length_multiple: int = 1,
                param_labels: tuple[str, ...] | None = None) -> list[Hook]:
    """The enabled hooks; `shards`: the size of the batch mesh axes their rows are split over;
    `length_multiple`: the row length the model's attention needs (probe rows are packed into
    rows of the train rows' length when they fit, else of their own padded length);
    `param_labels`: the model's layer groups (`genjax.hooks.layers.layer_labels`), by default
    those of genjax's transformer of `config.model`."""
    h, names = config.hooks, data.names
    batching = eval_batching(config, shards)
    per_domain = lambda total: max(1, total // len(names))
    heldout_total = h.heldout.batches * (h.heldout.batch_size or config.train.batch_size)
    heldout_n = {n: data.heldout_sizes.get(n, per_domain(heldout_total)) for n in names}
    token_bytes = data.tokenizer.token_bytes() if hasattr(data.tokenizer, "token_bytes") \
        else None
    hooks: list[Hook] = []
    if h.train_domains.enabled:
        hooks.append(TrainDomainsHook(names, every=h.train_domains.every,
                                      token_bytes=token_bytes))
    if h.heldout.enabled:
        rows = data.heldout_rows(heldout_n)
        hooks.append(HeldoutHook(rows, names, every=h.heldout.every, batching=batching,
                                 token_bytes=token_bytes,
                                 startup_note=heldout_note(config, data, rows)))
    if h.probes.enabled:
        hooks.append(ProbeHook(probe_items(config, data), data.tokenizer, h.probes.every,
                               h.probes.prompt_len, config.train.seq_len, batching=batching,
                               length_multiple=length_multiple))
    if h.memorization.enabled:
        n = {d: data.memorization_sizes.get(d, per_domain(h.memorization.examples))
             for d in names}
        seen, last_index = data.first_train_rows(n)
        fresh = data.heldout_rows(n, offset=heldout_n)  # not the held-out hook's rows
        hooks.append(MemorizationHook(seen, fresh, last_index // config.train.batch_size,
                                      names, every=h.memorization.every, batching=batching))
    if h.predictors.enabled:
        hooks.append(predictor_hook(config, data, batching, length_multiple))
    if h.attribution.enabled:
        hooks.append(AttributionHook(data.heldout_rows(h.attribution.rows_per_domain), names,
                                     shards, h.attribution.train_cosines, h.attribution.every,
                                     h.attribution.domains_at_once))
    if h.norms.enabled:
        labels = param_labels or layer_labels(
            abstract_model(ModelConfig.from_config(config.model))[1])
        hooks.append(NormsHook(labels, every=h.norms.every))
    return hooks


def predictor_hook(config, data: Data, batching: EvalBatching,
                   length_multiple: int = 1) -> PredictorHook:
    """`hooks.predictors` for genjax's transformer of `config.model` (its layer count and
    parameter groups), on held-out rows or on probe items' correct continuations."""
    p = config.hooks.predictors
    if p.source == "probes":
        rows = probe_rows(probe_items(config, data), data.tokenizer, p.examples,
                          config.hooks.probes.prompt_len, length_multiple)
    else:
        rows = heldout_rows(data, p.examples)
    groups = layer_labels(abstract_model(ModelConfig.from_config(config.model))[1])
    return PredictorHook(rows, config.model.n_layers, groups, every=p.every,
                         batching=batching, source=p.source)
