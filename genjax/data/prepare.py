"""`genjax data prepare`: text, JSONL and parquet files (globs, local or gs://) -> token shards
and a manifest (`genjax.data.shards` describes the format).

Each input file becomes its own shards, written under a temporary name and renamed (or
uploaded whole) when done; the manifest, rewritten after every file, lists the files finished.
Running the same command again after an interruption skips them and redoes only the file that
was in progress. Documents: a line of a .txt file, the `text_field` of a JSONL row or of a
parquet row; empty ones are skipped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np

from genjax import paths
from genjax.data.shards import FORMAT, MANIFEST, read_manifest, token_dtype
from genjax.data.sources import DataError, documents, expand_files, is_heldout
from genjax.data.tokenizers import Tokenizer

SUFFIXES = (".txt", ".jsonl", ".parquet")
BATCH_DOCUMENTS = 256  # documents tokenized together (the Rust tokenizer's threads)


def _batches(docs: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _ShardWriter:
    """Token shards of one split of one source, rotated every `shard_tokens`."""

    def __init__(self, out: paths.Path, split: str, source: int, dtype: np.dtype,
                 shard_tokens: int):
        self.out, self.split, self.source, self.dtype = out, split, source, dtype
        self.shard_tokens, self.buffer, self.size, self.done = shard_tokens, [], 0, []

    def add(self, ids: list[int]) -> None:
        self.buffer.append(np.asarray(ids, self.dtype))
        self.size += len(ids)
        if self.size >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.size:
            return
        name = f"{self.split}-{self.source:05d}-{len(self.done):04d}.bin"
        paths.write_atomic(self.out / name, np.concatenate(self.buffer).tobytes())
        self.done.append({"file": name, "split": self.split, "tokens": self.size})
        self.buffer, self.size = [], 0


def prepare(inputs: Sequence[str], out: str, tokenizer: Tokenizer, *,
            heldout_fraction: float = 0.01, text_field: str = "text",
            shard_tokens: int = 2**27, progress: bool = True) -> dict:
    """Tokenizes `inputs` into the dataset at `out`; returns its manifest. Resumes a dataset
    that an earlier call with the same inputs and settings left incomplete."""
    files = expand_files(inputs, what="input file", where="input")
    for f in files:
        if f.suffix not in SUFFIXES:
            raise DataError(f"input {f}: unknown file type (expected {', '.join(SUFFIXES)})")
    root = paths.as_path(out)
    settings = {"format": FORMAT, "tokenizer": tokenizer.identity(),
                "dtype": token_dtype(tokenizer.vocab_size).str, "eos_id": tokenizer.eos_id,
                "heldout_fraction": heldout_fraction, "text_field": text_field,
                "inputs": [str(f) for f in files]}
    manifest = _resume(root, settings)
    if manifest.get("complete"):
        return manifest
    root.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(settings["dtype"])
    bar = _Progress(len(files), enabled=progress)
    encode = getattr(tokenizer, "encode_batch", None) or (
        lambda texts: [tokenizer.encode(t) for t in texts])
    for index, file in enumerate(files):
        if str(file) in manifest["sources"]:
            bar.skip(manifest["sources"][str(file)])
            continue
        writers = {s: _ShardWriter(root, s, index, dtype, shard_tokens)
                   for s in ("train", "heldout")}
        counts = {"documents": 0, "heldout_documents": 0, "tokens": 0, "heldout_tokens": 0,
                  "bytes": 0}
        for batch in _batches(documents(file, text_field), BATCH_DOCUMENTS):
            for doc, ids in zip(batch, encode(batch)):
                held = is_heldout(doc, heldout_fraction)
                writers["heldout" if held else "train"].add([*ids, tokenizer.eos_id])
                counts["documents"] += 1
                counts["heldout_documents"] += held
                counts["heldout_tokens" if held else "tokens"] += len(ids) + 1
                counts["bytes"] += len(doc.encode())
            bar.update(counts)
        for w in writers.values():
            w.flush()
        manifest["shards"] += writers["train"].done + writers["heldout"].done
        manifest["sources"][str(file)] = counts
        _write(root, manifest)
        bar.finish_file(counts)
    manifest["totals"] = {k: sum(c[k] for c in manifest["sources"].values())
                          for k in ("documents", "heldout_documents", "tokens",
                                    "heldout_tokens", "bytes")}
    if manifest["totals"]["tokens"] == 0:
        raise DataError(f"{', '.join(inputs)}: no training documents")
    manifest["complete"] = True
    _write(root, manifest)
    bar.close(manifest["totals"])
    return manifest


def _resume(root: paths.Path, settings: dict) -> dict:
    """The manifest to continue: a fresh one, or the incomplete one left with the same
    settings (its unfinished shards are rewritten); another dataset there is refused."""
    fresh = {**settings, "shards": [], "sources": {}, "complete": False}
    if not (root / MANIFEST).exists():
        if root.exists() and any(root.iterdir()):
            raise DataError(f"{root} exists and is not a prepared dataset; use an empty or new "
                            "output directory")
        return fresh
    old = json.loads((root / MANIFEST).read_text())
    if old.get("complete"):
        read_manifest(str(root))  # validates it
    same = all(old.get(k) == v for k, v in settings.items())
    if not same:
        changed = sorted(k for k, v in settings.items() if old.get(k) != v)
        raise DataError(f"{root} holds a dataset prepared with other settings "
                        f"({', '.join(changed)}); use a new output directory")
    return old


def _write(root: paths.Path, manifest: dict) -> None:
    paths.write_atomic(root / MANIFEST, json.dumps(manifest, indent=1))


class _Progress:
    """One line on stderr, redrawn in place on a terminal, printed per file otherwise."""

    def __init__(self, files: int, enabled: bool):
        self.files, self.enabled, self.done = files, enabled, 0
        self.tty = enabled and sys.stderr.isatty()
        self.start, self.docs, self.tokens, self.last = time.monotonic(), 0, 0, 0.0

    def _line(self, counts: dict | None = None) -> str:
        dt = max(time.monotonic() - self.start, 1e-9)
        docs = self.docs + (counts["documents"] if counts else 0)
        tokens = self.tokens + (counts["tokens"] + counts["heldout_tokens"] if counts else 0)
        return (f"prepare: file {min(self.done + 1, self.files)}/{self.files}  {docs:,} "
                f"documents  {tokens:,} tokens  {tokens / dt:,.0f} tok/s")

    def skip(self, counts: dict) -> None:
        self.docs += counts["documents"]
        self.tokens += counts["tokens"] + counts["heldout_tokens"]
        self.done += 1
        if self.enabled:
            print(f"prepare: file {self.done}/{self.files} already done", file=sys.stderr)

    def update(self, counts: dict) -> None:
        if self.tty and time.monotonic() - self.last > 0.2:
            self.last = time.monotonic()
            print("\r" + self._line(counts), end="", file=sys.stderr, flush=True)

    def finish_file(self, counts: dict) -> None:
        if self.enabled:
            print(("\r" if self.tty else "") + self._line(counts), file=sys.stderr, flush=True)
        self.docs += counts["documents"]
        self.tokens += counts["tokens"] + counts["heldout_tokens"]
        self.done += 1

    def close(self, totals: dict) -> None:
        if self.enabled:
            print(f"prepare: done: {totals['documents']:,} documents "
                  f"({totals['heldout_documents']:,} held out), {totals['tokens']:,} training "
                  f"tokens, {totals['heldout_tokens']:,} held-out tokens", file=sys.stderr)
