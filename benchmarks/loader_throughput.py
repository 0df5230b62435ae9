"""Prepared-data loader throughput: tokens/s one host reads from token shards through the
training pipeline (`Data.train_batches`: the mixture, grain threads, row assembly), against
what the llama_1b preset consumes per host.

A synthetic dataset of random token shards (uint16, in `genjax.data.shards`' format) is
written to a temporary directory, then each reader-thread count reads `--steps` global
batches of B x (T+1) tokens after one warm-up batch. The page cache holds the shards after the
first pass, as it would the hot part of a local SSD; a bucket is slower and is not measured
here. Each count is timed from the iterator's creation through `--steps` batches (at least 4x
its prefetch buffer), so batches prefetched before the clock starts cannot inflate it.
Why flat token files rather than ArrayRecord: `bare_*` rows read the same random rows of
B x (T+1) tokens through a bare grain pipeline (shuffle, read, batch) from the flat shards
(memory-mapped slices) and from an ArrayRecord file of one record per row (grain's
ArrayRecordDataSource, group_size 1 for random access); ArrayRecord also fixes T when the data
is prepared, flat tokens let any run choose its sequence length.
`need_tok_s` is what the llama_1b step on v5p-8 consumes (batch 256 x 2048 on one 4-chip host
in 3.39 s, estimated by `genjax compile`, benchmarks/TPU_ESTIMATES.md): 154,700 tokens/s per
host; `margin` is the measured rate over it (the target is >= 10).

    python benchmarks/loader_throughput.py --quick --out loader.json
"""

from __future__ import annotations

import itertools
import json
import pathlib
import sys
import tempfile
import time
from collections.abc import Sequence

import common
import numpy as np

from genjax.config import base_config
from genjax.data import build_data
from genjax.data.shards import FORMAT, MANIFEST
from genjax.data.tokenizers import ByteTokenizer

V5P8_STEP_S = 3.39  # llama_1b on v5p-8, hooks off (benchmarks/TPU_ESTIMATES.md)
NEED_TOK_S = 256 * 2048 / V5P8_STEP_S
COLUMNS = (("format", "format", "s"), ("threads", "reader threads", "d"), ("batch", "batch", "d"),
           ("seq_len", "seq", "d"), ("tok_s", "tokens/s", ",.0f"),
           ("need_tok_s", "1B on v5p needs", ",.0f"), ("margin", "margin", ".1f"))


def write_dataset(root: pathlib.Path, tokens: int, shard_tokens: int, seed: int = 0) -> None:
    """Random byte-vocabulary tokens as train and held-out shards with a complete manifest."""
    rng, shards = np.random.default_rng(seed), []
    for split, total in (("train", tokens), ("heldout", tokens // 50)):
        for part, start in enumerate(range(0, total, shard_tokens)):
            n = min(shard_tokens, total - start)
            name = f"{split}-00000-{part:04d}.bin"
            rng.integers(0, 256, n, dtype=np.uint16).tofile(root / name)
            shards.append({"file": name, "split": split, "tokens": n})
    totals = {"documents": 1, "heldout_documents": 1, "tokens": tokens,
              "heldout_tokens": tokens // 50, "bytes": tokens}
    (root / MANIFEST).write_text(json.dumps({
        "format": FORMAT, "tokenizer": ByteTokenizer().identity(), "dtype": "<u2",
        "eos_id": ByteTokenizer.eos_id, "heldout_fraction": 0.02, "text_field": "text",
        "inputs": [], "shards": shards, "sources": {}, "totals": totals, "complete": True}))


def measure(path: str, threads: int, batch: int, seq_len: int, steps: int) -> float:
    c = base_config()
    c.data.prepared = path
    c.train.update(batch_size=batch, seq_len=seq_len)
    data = build_data(c)
    next(data.train_batches(batch, 10**6, prefetch=0))  # shards mapped, pages cached
    t0 = time.perf_counter()  # from the iterator's creation: its start-up is counted
    it = data.train_batches(batch, 0, prefetch=2 * threads)  # grain: prefetch // 2 threads
    for _ in range(steps):
        next(it)
    return steps * batch * (seq_len + 1) / (time.perf_counter() - t0)


def bare(source, rows: int, threads: int, batch: int, steps: int) -> float:
    """tokens/s of a bare grain pipeline over `source` (random access, `rows` rows)."""
    import grain

    ds = grain.MapDataset.source(source).shuffle(seed=0).repeat().batch(batch)
    opts = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads)
    t0 = time.perf_counter()
    it, tokens = iter(ds.to_iter_dataset(opts)), 0
    for _ in range(steps):
        tokens += next(it).size
    return tokens / (time.perf_counter() - t0)


class FlatRows:
    """Row i of a flat uint16 token file, memory-mapped (what PreparedDomain reads)."""

    def __init__(self, path: pathlib.Path, row_tokens: int):
        self.tokens, self.n = np.memmap(path, "<u2", "r"), row_tokens

    def __len__(self) -> int:
        return len(self.tokens) // self.n

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.tokens[i * self.n:(i + 1) * self.n], np.int32)


class RecordRows:
    """Row i of an ArrayRecord file of one uint16 row per record."""

    def __init__(self, path: pathlib.Path):
        import grain

        self.source = grain.sources.ArrayRecordDataSource([str(path)])

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.frombuffer(self.source[i], "<u2").astype(np.int32)


def write_records(flat: pathlib.Path, out: pathlib.Path, row_tokens: int) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    tokens, writer = np.memmap(flat, "<u2", "r"), ArrayRecordWriter(str(out), "group_size:1")
    for i in range(len(tokens) // row_tokens):
        writer.write(np.asarray(tokens[i * row_tokens:(i + 1) * row_tokens]).tobytes())
    writer.close()


def main(argv: Sequence[str] | None = None) -> list[common.Row]:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, help="training tokens in the synthetic dataset")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--threads", default="1,2,4,8", help="reader-thread counts to measure")
    args = p.parse_args(argv)
    tokens = args.tokens or (20_000_000 if args.quick else 200_000_000)
    steps = args.steps or (20 if args.quick else 60)
    info = common.machine()
    print(f"loader throughput on {common.describe_machine(info)}; {tokens:,} tokens, "
          f"batch {args.batch} x {args.seq_len + 1}", flush=True)
    out: list[common.Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(pathlib.Path(tmp), tokens, shard_tokens=min(tokens, 2**25))
        for threads in [int(t) for t in args.threads.split(",")]:
            n = max(steps, 8 * threads)  # >= 4x the prefetch buffer of 2 x threads
            tok_s = measure(tmp, threads, args.batch, args.seq_len, n)
            out.append({"table": "loader", "variant": f"pipeline_{threads}",
                        "format": "flat (genjax pipeline)", "threads": threads,
                        "batch": args.batch, "seq_len": args.seq_len, "steps": n,
                        "tokens": tokens, "tok_s": tok_s, "need_tok_s": NEED_TOK_S,
                        "margin": tok_s / NEED_TOK_S, **info})
        root, row = pathlib.Path(tmp), args.seq_len + 1
        first = root / "train-00000-0000.bin"
        write_records(first, root / "rows.array_record", row)
        sources = {"flat (bare grain)": FlatRows(first, row),
                   "array_record (bare grain)": RecordRows(root / "rows.array_record")}
        for (name, source), threads in itertools.product(
                sources.items(), [int(t) for t in args.threads.split(",")]):
            n = max(steps, 8 * threads)
            tok_s = bare(source, len(source), threads, args.batch, n)
            out.append({"table": "loader", "variant": f"bare_{name.split()[0]}_{threads}",
                        "format": name, "threads": threads, "batch": args.batch,
                        "seq_len": args.seq_len, "steps": n, "tokens": len(source) * row,
                        "tok_s": tok_s, "need_tok_s": NEED_TOK_S,
                        "margin": tok_s / NEED_TOK_S, **info})
    common.print_table(out, COLUMNS, "prepared-data loader, one host")
    common.write_rows(args.out, out)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
