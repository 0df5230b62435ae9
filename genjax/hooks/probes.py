"""Contrastive probes: is the correct continuation likelier than the pattern-matching one?

Loads the mode-hopping suite's JSONL shape as it is (rows with `split` demo/test) and K-shot
samples demos (`none`, `random`, `ordered`, `balanced`) with `random.Random(seed)`. Each item
is teacher-forced as `context = prompt + " "`, then each answer's tokens followed by the
item's terminator (the text or EOS that ends an answer in training text: mean token
probability and summed log-prob then cannot be won by an answer that is a prefix of the other,
which would otherwise skip predicting where it ends). The two answers share
one pass over the context: the row is [context | correct | incorrect] and an attention mask
lets each answer see the context and its own earlier tokens but not the other answer; answer
positions continue from the context, so each answer is scored exactly as if it followed the
context alone.
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
from genjax.hooks.base import MetricSpec
from genjax.model.attention import (  # noqa: F401  (re-exported)
    SEG_CONTEXT,
    SEG_CORRECT,
    SEG_INCORRECT,
    SEG_PAD,
    SharedPrefix,
    probe_mask,
)
from genjax.model.lm import LOGITS_AT, POSITIONS, SHARED_PREFIX


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


def encode_items(items: list[ProbeItem], tokenizer: Tokenizer, context_len: int = 0,
                 answer_len: int = 0, length_multiple: int = 1) -> dict[str, np.ndarray]:
    """Token rows [context (left-padded) | correct | incorrect] with segment ids, positions,
    and `predictor` [N, 2 x answer_len]: for each position of the answer region (the rows'
    last 2 x answer_len tokens) the row position whose logits predict it. The context is
    left-padded further so that the row length is a multiple of `length_multiple` (splash
    attention's 128)."""
    encoded = []
    for it in items:
        ctx, good, bad = item_answers(tokenizer, it)
        if not good or not bad:
            raise ProbeError(f"probe item of family {it.family!r} has an empty answer")
        encoded.append((ctx, good, bad))
    lp = context_len or max(len(c) for c, _, _ in encoded)
    la = answer_len or max(max(len(g), len(b)) for _, g, b in encoded)
    lp += -(lp + 2 * la) % length_multiple
    n, s = len(items), lp + 2 * la
    tokens = np.full((n, s), tokenizer.pad_id, np.int32)
    segment = np.zeros((n, s), np.int32)
    positions = np.zeros((n, s), np.int32)
    predictor = np.zeros((n, s), np.int32)  # row position whose logits predict this token
    for i, (ctx, good, bad) in enumerate(encoded):
        ctx = ctx[-lp:]  # keep the end of an over-long context
        if len(good) > la or len(bad) > la:
            raise ProbeError(f"probe answer longer than hooks.probes.answer_len={la}")
        c0 = lp - len(ctx)
        tokens[i, c0:lp], segment[i, c0:lp] = ctx, SEG_CONTEXT
        positions[i, c0:lp] = np.arange(len(ctx))
        for seg, ans, start in ((SEG_CORRECT, good, lp), (SEG_INCORRECT, bad, lp + la)):
            span = slice(start, start + len(ans))
            tokens[i, span], segment[i, span] = ans, seg
            positions[i, span] = len(ctx) + np.arange(len(ans))
            predictor[i, span] = [lp - 1] + list(range(start, start + len(ans) - 1))
    return {"tokens": tokens, "segment": segment, "positions": positions,
            "predictor": predictor[:, lp:]}


def score_items(apply_fn, params, data) -> dict[str, jax.Array]:
    """Per item: summed log-prob and mean token probability of each answer. One pass over
    [context | correct | incorrect]; logits only where an answer token is predicted."""
    pred_NxK = data["predictor"]
    k = pred_NxK.shape[1]  # the answer region: the rows' last k positions
    logits_NxKxV = apply_fn(params, data["tokens"], data["positions"],
                            SharedPrefix(data["segment"], k // 2), pred_NxK)
    answers_NxK, segment_NxK = data["tokens"][:, -k:], data["segment"][:, -k:]
    token_logit_NxK = jnp.take_along_axis(logits_NxKxV, answers_NxK[..., None], axis=2)[..., 0]
    token_logp_NxK = token_logit_NxK - jax.nn.logsumexp(logits_NxKxV, axis=-1)
    out = {}
    for name, seg in (("correct", SEG_CORRECT), ("incorrect", SEG_INCORRECT)):
        m = (segment_NxK == seg).astype(jnp.float32)
        out[f"{name}_logp"] = jnp.sum(token_logp_NxK * m, axis=1)
        out[f"{name}_avg_prob"] = jnp.sum(jnp.exp(token_logp_NxK) * m, axis=1) / jnp.sum(m, 1)
    return out


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
    answer_len: int = 0
    batching: EvalBatching = EvalBatching()
    length_multiple: int = 1  # row length multiple the model's attention needs
    name: str = "probes"
    requires = frozenset({POSITIONS, SHARED_PREFIX, LOGITS_AT})  # the shared-prompt pass

    def __post_init__(self):
        if not self.items:
            raise ProbeError("the probe hook has no items (no built-in families, no files)")
        self.families = sorted({it.family for it in self.items})
        self.item_labels = item_labels(self.items)
        self.encoded = encode_items(self.items, self.tokenizer, self.context_len,
                                    self.answer_len, self.length_multiple)
        fam_index = {f: i for i, f in enumerate(self.families)}
        self.encoded["family"] = np.asarray([fam_index[it.family] for it in self.items],
                                            np.int32)

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

    def data(self):
        return self.batching.pad(self.encoded)  # padded rows: all SEG_PAD, sliced off below

    def compute(self, params, apply_fn, data, ctx):
        n = len(self.items)
        s = self.batching.map(lambda d: score_items(apply_fn, params, d), data, n)
        s = jax.tree.map(lambda v_N: v_N[:n], s)
        margin_N = s["correct_avg_prob"] - s["incorrect_avg_prob"]
        logp_margin_N = s["correct_logp"] - s["incorrect_logp"]
        win_N = (s["correct_avg_prob"] > s["incorrect_avg_prob"]).astype(jnp.float32)
        onehot_NxF = jax.nn.one_hot(data["family"][:n], len(self.families), dtype=jnp.float32)
        count_F = onehot_NxF.sum(0)
        family_mean = lambda v_N: (v_N @ onehot_NxF) / count_F
        return {"probes/accuracy": family_mean(win_N),
                "probes/soft_margin": family_mean(margin_N),
                "probes/logp_margin": family_mean(logp_margin_N),
                "probes/item_margin": margin_N,
                "probes/item_logp_margin": logp_margin_N}
