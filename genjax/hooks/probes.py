"""Contrastive probes: is the correct continuation likelier than the pattern-matching one?

Loads the mode-hopping suite's JSONL shape as it is (rows with `split` demo/test) and K-shot
samples demos (`none`, `random`, `ordered`, `balanced`) with `random.Random(seed)`. Each item
is teacher-forced as `context = prompt + " "`, then each answer's tokens followed by the
item's terminator (the text or EOS that ends an answer in training text: mean token
probability and summed log-prob then cannot be won by an answer that is a prefix of the other,
which would otherwise skip predicting where it ends). Each answer is its own sequence
`context + answer`, and the sequences are packed into rows of a fixed length (by default the
train rows', so that the probes share one forward pass with the held-out rows, see
`genjax.hooks.fused`): segment ids keep each sequence's attention to itself and its positions
restart, so each answer is scored exactly as in a plain pass over it alone. The context is
computed twice (once per answer): that costs FLOPs (llama_1b's 160 built-in items fill 7 rows
of 2,048 tokens, a forward of 0.7% of its train step's FLOPs) but lets every attention kernel,
splash included, run its plain causal mask with segment ids, and packing leaves no row padded
to the longest context.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random

import jax
import jax.numpy as jnp
import numpy as np

from genjax import paths
from genjax.batching import EvalBatching
from genjax.data.sources import ProbeItem
from genjax.data.tokenizers import Tokenizer
from genjax.hooks.base import MetricSpec, rows_compute
from genjax.model.lm import POSITIONS, SEGMENTS


class ProbeError(ValueError):
    """A malformed probe file: names the file and line."""


@dataclasses.dataclass(frozen=True)
class _Demo:
    prompt: str
    answer: str
    label: int | None
    demo_set: int


def load_probe_file(path: str | os.PathLike, family: str, shots: int = 0,
                    sampling: str = "random", seeds: int = 1, joiner: str = "\n",
                    terminator: str = "", terminator_eos: bool = False,
                    note=None) -> list[ProbeItem]:
    """Reads a published-format probe JSONL file into items, K-shot demos included. Each
    answer is scored followed by `terminator` (text) or EOS (`terminator_eos`); without
    either, test rows whose answers are prefixes of each other are named in one warning
    (`note(text)`, default stderr). With `seeds` > 1 the items of one test row are replicates
    (the same `group`)."""
    path = paths.as_path(path)
    if not path.is_file():
        raise ProbeError(f"probe file not found: {path}")
    demos: list[_Demo] = []
    tests: list[tuple[str, str, str]] = []
    prefix_lines: list[int] = []
    with path.open("r") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ProbeError(f"{where}: invalid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ProbeError(f"{where}: a row must be a JSON object")
            split = row.get("split", "test")
            if split == "demo":
                _require(row, ("prompt", "answer"), where)
                label = row.get("label")
                if label is not None and label not in (0, 1):
                    raise ProbeError(f"{where}: 'label' must be 0 or 1, got {label!r}")
                demo_set = row.get("demo_set", 0)
                if not isinstance(demo_set, int):
                    raise ProbeError(f"{where}: 'demo_set' must be an int")
                demos.append(_Demo(row["prompt"], row["answer"], label, demo_set))
            elif split == "test":
                _require(row, ("prompt", "correct_answer", "incorrect_answer"), where)
                tests.append((row["prompt"], row["correct_answer"], row["incorrect_answer"]))
                a, b = row["correct_answer"], row["incorrect_answer"]
                if a.startswith(b) or b.startswith(a):
                    prefix_lines.append(lineno)
            else:
                raise ProbeError(f"{where}: 'split' must be 'demo' or 'test', got {split!r}")
    if not tests:
        raise ProbeError(f"{path}: no test rows")
    if prefix_lines and not terminator and not terminator_eos:
        shown = ", ".join(f"{path}:{n}" for n in prefix_lines[:5])
        more = f" and {len(prefix_lines) - 5} more" if len(prefix_lines) > 5 else ""
        (note or _stderr)(
            f"warning: probe family '{family}': one answer is a prefix of the other at {shown}"
            f"{more}, and hooks.probes.terminator=none: the shorter answer is scored without "
            f"predicting its end (set hooks.probes.terminator=joiner or eos)")
    k = 0 if sampling == "none" else shots
    sets = sorted({d.demo_set for d in demos})
    items = []
    for seed in range(seeds):
        rng = random.Random(seed)
        pool = [d for d in demos if d.demo_set == sets[seed % len(sets)]] if sets else []
        if k and len(pool) < k:
            raise ProbeError(f"{path}: {k}-shot sampling needs {k} demo rows, found {len(pool)}")
        for index, (prompt, correct, incorrect) in enumerate(tests):
            chosen = _sample_demos(pool, k, sampling, rng, path)
            blocks = [f"{d.prompt} {d.answer}" for d in chosen] + [prompt]
            items.append(ProbeItem(family, joiner.join(blocks), correct, incorrect, terminator,
                                   terminator_eos, index if seeds > 1 else -1))
    return items


def _stderr(text: str) -> None:
    import sys

    if jax.process_index() == 0:
        print(text, file=sys.stderr)


def _require(row: dict, keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if not isinstance(row.get(key), str):
            raise ProbeError(f"{where}: missing string field '{key}'")


def _sample_demos(pool: list[_Demo], k: int, sampling: str, rng: random.Random,
                  path: paths.Path) -> list[_Demo]:
    if k == 0:
        return []
    if sampling == "ordered":
        return pool[:k]
    if sampling == "random":
        return rng.sample(pool, k)
    if sampling == "balanced":
        by_label = {lab: [d for d in pool if d.label == lab] for lab in (0, 1)}
        if any(len(v) < k // 2 for v in by_label.values()):
            raise ProbeError(f"{path}: balanced sampling needs {k // 2} demos of each label")
        chosen = rng.sample(by_label[0], k // 2) + rng.sample(by_label[1], k - k // 2)
        rng.shuffle(chosen)
        return chosen
    raise ProbeError(f"unknown demo sampling {sampling!r}")


def answer_tokens(tokenizer: Tokenizer, prompt: str, answer: str, terminator: str = "",
                  terminator_eos: bool = False) -> tuple[list[int], list[int]]:
    """(context tokens of `prompt + " "`, the tokens after them in
    `prompt + " " + answer + terminator`, then EOS with `terminator_eos`)."""
    context = tokenizer.encode(prompt + " ")
    full = tokenizer.encode(prompt + " " + answer + terminator)
    tail = full[len(context):] if full[: len(context)] == context else \
        tokenizer.encode(answer + terminator)  # the tokenizer merged across the boundary
    return context, tail + ([tokenizer.eos_id] if terminator_eos else [])


def item_answers(tokenizer: Tokenizer, item: ProbeItem) -> tuple[list[int], list[int], list[int]]:
    """(context, correct, incorrect) tokens of an item, answers with its terminator."""
    ctx, good = answer_tokens(tokenizer, item.prompt, item.correct, item.terminator,
                              item.terminator_eos)
    _, bad = answer_tokens(tokenizer, item.prompt, item.incorrect, item.terminator,
                           item.terminator_eos)
    return ctx, good, bad


def pack_items(items: list[ProbeItem], tokenizer: Tokenizer, row_len: int = 0,
               context_len: int = 0, length_multiple: int = 1) -> dict[str, np.ndarray]:
    """Both answers of every item as sequences `context + answer` (inputs, targets = the next
    tokens), packed first-fit into rows of `row_len` tokens, or, when a sequence is longer
    (or `row_len` is 0), of the longest sequence's length rounded up to `length_multiple`
    (splash attention's 128). Per token: `segments` (1, 2, ... per
    sequence in its row; 0 padding), `positions` (restarting per sequence), `loss_mask` (1
    where an answer token is predicted) and `slot` (2 x item + 0 for the correct answer, 1 for
    the incorrect one). `context_len` > 0 keeps the context's last tokens."""
    seqs = []
    for i, it in enumerate(items):
        ctx, good, bad = item_answers(tokenizer, it)
        if not good or not bad:
            raise ProbeError(f"probe item of family {it.family!r} has an empty answer")
        ctx = ctx[-context_len:] if context_len else ctx
        seqs += [(2 * i, ctx, good), (2 * i + 1, ctx, bad)]
    longest = max(len(c) + len(a) - 1 for _, c, a in seqs)
    if longest > row_len:
        row_len = longest + -longest % length_multiple
    free: list[int] = []  # tokens left in each row
    placed = []  # (row, start) per sequence
    for _, ctx, ans in seqs:
        n = len(ctx) + len(ans) - 1
        row = next((r for r, left in enumerate(free) if left >= n), len(free))
        if row == len(free):
            free.append(row_len)
        placed.append((row, row_len - free[row]))
        free[row] -= n
    shape = (len(free), row_len)
    out = {"inputs": np.full(shape, tokenizer.pad_id, np.int32),
           "targets": np.full(shape, tokenizer.pad_id, np.int32),
           "segments": np.zeros(shape, np.int32), "positions": np.zeros(shape, np.int32),
           "loss_mask": np.zeros(shape, np.float32), "slot": np.zeros(shape, np.int32)}
    for (slot, ctx, ans), (row, start) in zip(seqs, placed, strict=True):
        seq = ctx + ans
        span = slice(start, start + len(seq) - 1)
        out["inputs"][row, span], out["targets"][row, span] = seq[:-1], seq[1:]
        out["segments"][row, span] = out["segments"][row].max() + 1
        out["positions"][row, span] = np.arange(len(seq) - 1)
        out["slot"][row, span] = slot
        out["loss_mask"][row, start + len(ctx) - 1: span.stop] = 1.0  # predicts an answer token
    return out


def answer_lengths(packed: dict[str, np.ndarray], num_items: int) -> np.ndarray:
    """Scored tokens [items, 2] of each item's correct and incorrect answer (host side)."""
    scored = packed["loss_mask"] > 0
    return np.bincount(packed["slot"][scored], minlength=2 * num_items).reshape(num_items, 2)


def answer_scores(loss_NxT: jax.Array, rows: dict, lengths_Ix2: np.ndarray
                  ) -> dict[str, jax.Array]:
    """Per item: summed log-prob and mean token probability of each answer, from the packed
    rows' per-token cross-entropy; `lengths_Ix2` from `answer_lengths`."""
    mask_NxT, slot_NxT = rows["loss_mask"], rows["slot"]
    per_slot = lambda v_NxT: jax.ops.segment_sum((v_NxT * mask_NxT).ravel(), slot_NxT.ravel(),
                                                 lengths_Ix2.size).reshape(lengths_Ix2.shape)
    logp_Ix2 = -per_slot(loss_NxT)
    avg_prob_Ix2 = per_slot(jnp.exp(-loss_NxT)) / jnp.asarray(lengths_Ix2, jnp.float32)
    return {"correct_logp": logp_Ix2[:, 0], "incorrect_logp": logp_Ix2[:, 1],
            "correct_avg_prob": avg_prob_Ix2[:, 0], "incorrect_avg_prob": avg_prob_Ix2[:, 1]}


def item_labels(items: list[ProbeItem]) -> list[str]:
    """`FAMILY/i` per item (i counts within the family), or `FAMILY/ITEM.SEED` for the
    replicates of one test row (items with a `group`): analysis clusters them by ITEM."""
    counts: dict[tuple, int] = {}
    out = []
    for it in items:
        key = (it.family, it.group)
        counts[key] = counts.get(key, 0) + 1
        if it.group >= 0:
            out.append(f"{it.family}/{it.group}.{counts[key] - 1}")
        else:
            out.append(f"{it.family}/{counts[key] - 1}")
    return out


@dataclasses.dataclass
class ProbeHook:
    """Per family: hard accuracy, soft margin, log-prob margin; per item: both margins."""

    items: list[ProbeItem]
    tokenizer: Tokenizer
    every: int = 1
    context_len: int = 0
    row_len: int = 0  # tokens per packed row if every sequence fits (see pack_items)
    batching: EvalBatching = EvalBatching()
    length_multiple: int = 1  # row length multiple the model's attention needs
    name: str = "probes"
    requires = frozenset({POSITIONS, SEGMENTS})  # packed rows

    def __post_init__(self):
        if not self.items:
            raise ProbeError("the probe hook has no items (no built-in families, no files)")
        self.families = sorted({it.family for it in self.items})
        self.item_labels = item_labels(self.items)
        self.packed = pack_items(self.items, self.tokenizer, self.row_len, self.context_len,
                                 self.length_multiple)
        self.answer_lengths = answer_lengths(self.packed, len(self.items))
        fam_index = {f: i for i, f in enumerate(self.families)}
        self.item_family = np.asarray([fam_index[it.family] for it in self.items], np.int32)

    def schema(self):
        fam, items = tuple(self.families), tuple(self.item_labels)
        f, n = len(fam), len(items)

        def per_family(name, desc):
            return MetricSpec(name, ("family",), (f,), desc, labels={"family": fam})

        def per_item(name, desc, unit=""):
            return MetricSpec(name, ("item",), (n,), desc, unit, labels={"item": items})

        return (
            per_family("probes/accuracy", "fraction of items whose correct answer has the "
                       "higher mean token probability"),
            per_family("probes/soft_margin", "mean over items of P(correct) - P(incorrect), "
                       "P = mean token probability"),
            per_family("probes/logp_margin", "mean over items of log P(correct) - "
                       "log P(incorrect), summed over answer tokens"),
            per_item("probes/item_margin", "P(correct) - P(incorrect), mean token probability"),
            per_item("probes/item_logp_margin", "summed log-prob margin correct - incorrect",
                     "nats"),
        )

    def token_rows(self):
        return self.packed

    def data(self):
        return self.batching.pad(self.packed)  # padded rows: zero loss mask, slot 0

    def score(self, loss_NxT, correct_NxT, rows, ctx):
        s = answer_scores(loss_NxT, rows, self.answer_lengths)
        margin_I = s["correct_avg_prob"] - s["incorrect_avg_prob"]
        logp_margin_I = s["correct_logp"] - s["incorrect_logp"]
        win_I = (s["correct_avg_prob"] > s["incorrect_avg_prob"]).astype(jnp.float32)
        onehot_IxF = jax.nn.one_hot(self.item_family, len(self.families), dtype=jnp.float32)
        count_F = onehot_IxF.sum(0)
        family_mean = lambda v_I: (v_I @ onehot_IxF) / count_F
        return {"probes/accuracy": family_mean(win_I),
                "probes/soft_margin": family_mean(margin_I),
                "probes/logp_margin": family_mean(logp_margin_I),
                "probes/item_margin": margin_I,
                "probes/item_logp_margin": logp_margin_I}

    def compute(self, params, apply_fn, data, ctx):
        return rows_compute(self, params, apply_fn, data, ctx)
