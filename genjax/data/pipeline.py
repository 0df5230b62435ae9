"""Grain pipelines: a weighted mixture of tagged domains, deterministic from (seed, step).

Batches are dicts of numpy arrays `{inputs_BxT, targets_BxT, loss_mask_BxT, domain_B}` with
keys `inputs`, `targets`, `loss_mask`, `domain`. The global batch of step s is the rows
[s*B, (s+1)*B) of one random-access grain `MapDataset`; process p reads only its slice, so
resuming needs nothing but the step.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from genjax.data.sources import (
    HELDOUT,
    KINDS,
    TRAIN,
    DataError,
    ProbeItem,
    expand_files,
)
from genjax.data.tokenizers import Tokenizer, make_tokenizer

_INFINITE = 2**40


@dataclasses.dataclass
class Data:
    """The run's domains and tokenizer, with builders for every stream the trainer needs."""

    domains: list  # ordered: domain id = index
    weights: list[float]
    tokenizer: Tokenizer
    seq_len: int
    seed: int
    heldout_sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # rows, per domain
    memorization_sizes: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.domains]

    def _rows(self, split: int) -> list[grain.MapDataset]:
        out = []
        for d in self.domains:
            if hasattr(d, "num_rows"):
                ds = grain.MapDataset.range(d.num_rows(split)).shuffle(seed=self.seed + d.domain_id)
                ds = ds.repeat()
            else:
                ds = grain.MapDataset.range(_INFINITE)
            out.append(ds.map(lambda i, d=d: dict(zip(("tokens", "loss_mask"), d.row(i, split)),
                                                  domain=np.int32(d.domain_id))))
        return out

    def mixture(self, split: int = TRAIN) -> grain.MapDataset:
        """Row i of the global example stream (the weighted interleave of all domains)."""
        return grain.MapDataset.mix(self._rows(split), self.weights).map(self.example)

    def example(self, row: dict) -> dict[str, np.ndarray]:
        tokens = row["tokens"]
        return {"inputs": tokens[:-1], "targets": tokens[1:], "loss_mask": row["loss_mask"],
                "domain": row["domain"]}

    def train_batches(self, global_batch: int, start_step: int = 0,
                      rows: tuple[int, int] | None = None,
                      prefetch: int = 4) -> grain.DatasetIterator:
        """Iterator over rows [start, stop) of each global batch (`rows`; default all), from
        `start_step` on: row j of step s is row s * global_batch + j of the example stream,
        whichever process reads it."""
        start, stop = rows or (0, global_batch)
        if not 0 <= start < stop <= global_batch:
            raise DataError(f"rows {start}..{stop} are not inside a batch of {global_batch}")
        local, mix = stop - start, self.mixture(TRAIN)
        ds = (grain.MapDataset.range(_INFINITE)
              .map(lambda k: mix[(k // local) * global_batch + start + k % local])
              .batch(local)[start_step:])
        opts = grain.ReadOptions(num_threads=max(1, prefetch // 2), prefetch_buffer_size=prefetch)
        return iter(ds.to_iter_dataset(opts))

    def train_batch(self, step: int, global_batch: int) -> dict[str, np.ndarray]:
        """The whole global batch of `step` (for tests and for memorization sets)."""
        return self.mixture(TRAIN).batch(global_batch)[step]

    def per_domain(self, value: int | dict[str, int]) -> list[int]:
        """One count per domain, from an int (every domain) or {domain name: count}."""
        if isinstance(value, dict):
            return [int(value[n]) for n in self.names]
        return [int(value)] * len(self.domains)

    def heldout_rows(self, rows_per_domain: int | dict[str, int],
                     offset: int | dict[str, int] = 0) -> dict[str, np.ndarray]:
        """Held-out rows [offset, offset + rows) of every domain, grouped by domain (`rows` and
        `offset` an int, or per domain name)."""
        counts, offsets = self.per_domain(rows_per_domain), self.per_domain(offset)
        rows = [self.example(ds[i]) for ds, n, o in zip(self._rows(HELDOUT), counts, offsets)
                for i in range(o, o + n)]
        return stack(rows)

    def first_train_rows(self, rows_per_domain: int | dict[str, int]
                         ) -> tuple[dict[str, np.ndarray], int]:
        """The first training rows of each domain in stream order (an int, or per domain
        name), and the last stream index used (rows are trained on by step
        `index // global_batch`)."""
        stream, picked, index = self.mixture(TRAIN), [], 0
        wanted = self.per_domain(rows_per_domain)
        counts = [0] * len(self.domains)
        while any(c < w for c, w in zip(counts, wanted)):
            row = stream[index]
            if counts[int(row["domain"])] < wanted[int(row["domain"])]:
                counts[int(row["domain"])] += 1
                picked.append(row)
            index += 1
        picked.sort(key=lambda r: int(r["domain"]))
        return stack(picked), index - 1

    def probe_items(self, n_per_family: int) -> list[ProbeItem]:
        """`n_per_family` items of every built-in family, named `DOMAIN/FAMILY`."""
        items, seen = [], set()
        for d in self.domains:
            for family in d.probe_families():
                batch = d.probe_items(family, n_per_family, self.seed)
                if batch and batch[0].family in seen:
                    raise DataError(f"probe family {batch[0].family!r} is defined twice")
                seen.add(batch[0].family if batch else family)
                items += batch
        return items


def stack(rows: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def build_data(config) -> Data:
    """Domains from `config.data.domains`, one text domain per file in `data.files` and one per
    dataset in `data.prepared`.
    Weights default to 1.0, except for data from files (text and prepared domains): those
    without a weight share theirs by training token count, together as much as one 1.0
    domain each (their mean weight is 1.0), so a big file is not drawn as often as a small
    one."""
    try:
        tokenizer = make_tokenizer(config.data)
    except ValueError as e:
        raise DataError(str(e)) from None
    specs = {name: dict(spec) for name, spec in config.data.domains.items()}
    for path in expand_files(config.data.files):
        if path.stem in specs:
            raise DataError(f"data.files: domain name '{path.stem}' is already taken")
        specs[path.stem] = {"kind": "text", "path": str(path),
                            "text_field": config.data.text_field}
    for path in [p.strip().rstrip("/") for p in config.data.prepared.split(",") if p.strip()]:
        name = path.rsplit("/", 1)[-1]
        if name in specs:
            raise DataError(f"data.prepared: domain name '{name}' is already taken")
        specs[name] = {"kind": "prepared", "path": path}
    if not specs:
        raise DataError("no data: set data.domains, data.files or data.prepared")
    domains, weights, sizes = [], [], {"heldout_rows": {}, "memorization_rows": {}}
    for domain_id, (name, spec) in enumerate(specs.items()):
        spec = dict(spec)
        for key, into in sizes.items():  # per-domain hook set sizes, not domain options
            if key in spec:
                into[name] = spec.pop(key)
                if not isinstance(into[name], int) or into[name] < 1:
                    raise DataError(f"data.domains.{name}.{key} must be an int >= 1, got "
                                    f"{into[name]!r}")
        kind = spec.pop("kind", None)
        if kind not in KINDS:
            raise DataError(f"data.domains.{name}.kind must be one of {sorted(KINDS)}, "
                            f"got {kind!r}")
        by_size = kind in ("text", "prepared") and "weight" not in spec
        weight = 0.0 if by_size else float(spec.pop("weight", 1.0))
        if weight <= 0 and not by_size:
            raise DataError(f"data.domains.{name}.weight must be positive")
        try:
            domains.append(KINDS[kind](name, domain_id, tokenizer, config.train.seq_len,
                                       config.data.heldout_fraction, config.seed, **spec))
        except TypeError as e:
            raise DataError(f"data.domains.{name} ({kind}): {e}") from e
        weights.append(weight)
        made_with = getattr(domains[-1], "manifest", {}).get("tokenizer", {})
        if made_with.get("vocab_size", 0) > config.model.vocab_size:
            raise DataError(f"data.domains.{name}: {spec['path']} was tokenized with a "
                            f"vocabulary of {made_with['vocab_size']}, more than "
                            f"model.vocab_size={config.model.vocab_size}")
    by_tokens = [i for i, w in enumerate(weights) if w == 0.0]
    total = sum(domains[i].train_tokens for i in by_tokens)
    for i in by_tokens:
        weights[i] = len(by_tokens) * domains[i].train_tokens / total
    if tokenizer.vocab_size > config.model.vocab_size:
        raise DataError(f"model.vocab_size={config.model.vocab_size} is smaller than the "
                        f"tokenizer's vocabulary ({tokenizer.vocab_size})")
    return Data(domains, weights, tokenizer, config.train.seq_len, config.seed,
                sizes["heldout_rows"], sizes["memorization_rows"])


def heldout_summary(data: Data, rows: dict[str, np.ndarray]) -> list[dict]:
    """Per domain, what a set of held-out rows holds: rows, distinct rows, distinct loss
    tokens, and for text domains their held-out documents (and whether none hashed into the
    held-out split, so that one was moved there)."""
    out = []
    for d in data.domains:
        pick = rows["domain"] == d.domain_id
        tokens, mask = rows["inputs"][pick], rows["loss_mask"][pick]
        distinct = {}
        for t, m in zip(tokens, mask):
            distinct.setdefault(t.tobytes(), float(m.sum()))
        rec = {"domain": d.name, "kind": d.kind, "rows": int(pick.sum()),
               "distinct_rows": len(distinct), "tokens": int(sum(distinct.values()))}
        if hasattr(d, "heldout_documents"):
            rec.update(documents=d.heldout_documents, of_documents=d.documents,
                       moved=d.moved_to_heldout)
        out.append(rec)
    return out
