"""Pre-tokenized datasets on disk or in a bucket (`genjax data prepare` writes them).

A dataset is a directory (local, file:// or gs://) holding `manifest.json` and flat token
shards: `{split}-{source:05d}-{part:04d}.bin`, little-endian uint16 (vocabularies up to 65,536)
or uint32, every document followed by the tokenizer's EOS. A document belongs to the held-out
split iff a hash of its text says so (`sources.is_heldout`), decided once when the data is
prepared, so no held-out document is ever in a training shard.

`PreparedDomain` reads one dataset as a domain: row i of a split is tokens
[i (T+1), (i+1) (T+1)) of that split's shards laid end to end, read on demand (memory-mapped
on local disk, ranged reads from a bucket), so nothing holds the corpus in memory.
"""

from __future__ import annotations

import bisect
import json

import numpy as np

from genjax import paths
from genjax.data.sources import HELDOUT, TRAIN, DataError
from genjax.data.tokenizers import Tokenizer

MANIFEST = "manifest.json"
FORMAT = "genjax.tokens/1"
SPLITS = {TRAIN: "train", HELDOUT: "heldout"}


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def read_manifest(path: str) -> dict:
    """The manifest of the dataset at `path`; DataError naming what is wrong."""
    try:
        root = paths.as_path(path)
        text = (root / MANIFEST).read_text()
    except paths.PathError as e:
        raise DataError(f"prepared data {e}") from None
    except FileNotFoundError:
        raise DataError(f"prepared data {path}: no {MANIFEST} (run genjax data prepare "
                        "first)") from None
    except Exception as e:  # noqa: BLE001 - local, gcsfs and auth errors differ in kind
        raise DataError(f"prepared data {path}: cannot read {MANIFEST}: "
                        f"{type(e).__name__}: {e}") from None
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise DataError(f"prepared data {path}/{MANIFEST} is not JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"prepared data {path}/{MANIFEST} is not a {FORMAT} manifest")
    if not manifest.get("complete"):
        raise DataError(f"prepared data {path} is incomplete (genjax data prepare was "
                        "interrupted; run the same command again to finish it)")
    return manifest


class _Shard:
    """One token file: memory-mapped on first read locally; in a bucket, each read is one
    ranged GET of exactly its bytes (fsspec's `cat_file`: no open, no read-ahead block, safe
    from grain's reader threads)."""

    def __init__(self, path: paths.Path, tokens: int, dtype: np.dtype):
        self.path, self.tokens, self.dtype = path, tokens, dtype
        self._array: np.ndarray | None = None
        self._remote = None  # (fsspec filesystem, path) on first remote read

    def check(self) -> None:
        try:
            size = self.path.stat().length
        except FileNotFoundError:
            raise DataError(f"prepared data shard missing: {self.path}") from None
        if size != self.tokens * self.dtype.itemsize:
            raise DataError(f"prepared data shard {self.path} is corrupt: {size} bytes, the "
                            f"manifest says {self.tokens} tokens of {self.dtype.itemsize} bytes")

    def read(self, start: int, stop: int) -> np.ndarray:
        if not paths.is_url(self.path):
            if self._array is None:
                self._array = np.memmap(self.path, self.dtype, "r", shape=(self.tokens,))
            return np.asarray(self._array[start:stop])
        if self._remote is None:
            import fsspec

            self._remote = fsspec.core.url_to_fs(str(self.path))
        fs, path = self._remote
        size = self.dtype.itemsize
        return np.frombuffer(fs.cat_file(path, start * size, stop * size), self.dtype)


class PreparedDomain:
    """A prepared dataset as a domain (`kind: "prepared"`, `path`: the dataset)."""

    kind = "prepared"
    options = {"path": ""}

    def __init__(self, name: str, domain_id: int, tokenizer: Tokenizer, seq_len: int,
                 heldout_fraction: float, seed: int, path: str = ""):
        del heldout_fraction, seed  # fixed when the data was prepared; order is the pipeline's
        self.name, self.domain_id, self.seq_len, self.path = name, domain_id, seq_len, path
        self.tokenizer = tokenizer
        self.manifest = read_manifest(path)
        made_with, ours = self.manifest["tokenizer"], tokenizer.identity()
        if made_with != ours:
            raise DataError(f"domain '{name}': {path} was tokenized with {_describe(made_with)},"
                            f" but this run's tokenizer is {_describe(ours)} (set data.tokenizer"
                            " and data.tokenizer_file to the manifest's)")
        dtype = np.dtype(self.manifest["dtype"])
        root = paths.as_path(path)
        self.shards: dict[int, list[_Shard]] = {TRAIN: [], HELDOUT: []}
        for rec in self.manifest["shards"]:
            split = TRAIN if rec["split"] == "train" else HELDOUT
            self.shards[split].append(_Shard(root / rec["file"], int(rec["tokens"]), dtype))
        for shard in (*self.shards[TRAIN], *self.shards[HELDOUT]):
            shard.check()
        self.starts = {k: np.cumsum([0] + [s.tokens for s in v]).tolist()
                       for k, v in self.shards.items()}
        totals = self.manifest["totals"]
        self.documents = totals["documents"]
        self.heldout_documents = totals["heldout_documents"]
        self.moved_to_heldout = False
        for split in (TRAIN, HELDOUT):
            if self.starts[split][-1] < seq_len + 1:
                raise DataError(f"domain '{name}': {path} has {self.starts[split][-1]} "
                                f"{SPLITS[split]} tokens, fewer than one row of "
                                f"train.seq_len+1={seq_len + 1}")

    @property
    def train_tokens(self) -> int:
        return self.starts[TRAIN][-1]

    def num_rows(self, split: int) -> int:
        return self.starts[split][-1] // (self.seq_len + 1)

    def row(self, index: int, split: int) -> tuple[np.ndarray, np.ndarray]:
        """(`seq_len + 1` token ids, `seq_len` target weights: all 1)."""
        n = self.seq_len + 1
        start = (int(index) % self.num_rows(split)) * n
        starts, shards, parts = self.starts[split], self.shards[split], []
        while n > 0:  # a row may span shards
            k = bisect.bisect_right(starts, start) - 1
            take = min(n, starts[k + 1] - start)
            parts.append(shards[k].read(start - starts[k], start - starts[k] + take))
            start, n = start + take, n - take
        tokens = np.concatenate(parts).astype(np.int32)
        return tokens, np.ones(self.seq_len, np.float32)

    def probe_families(self):
        return {}


def _describe(identity: dict) -> str:
    sha = f", sha256 {identity['sha256'][:12]}" if identity.get("sha256") else ""
    return f"{identity['kind']} (vocabulary {identity['vocab_size']}{sha})"
