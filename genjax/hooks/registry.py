"""Builds the hooks a config enables (`config.hooks.*`)."""

from __future__ import annotations

from genjax.data import Data
from genjax.hooks.base import Hook
from genjax.hooks.domains import HeldoutHook, MemorizationHook, TrainDomainsHook
from genjax.hooks.probes import ProbeError, ProbeHook, load_probe_file


def probe_items(config, data: Data) -> list:
    """Built-in families of the synthetic domains plus every file in `hooks.probes.files`."""
    p = config.hooks.probes
    items = data.probe_items(p.builtin_items) if p.builtin_items else []
    for family, path in sorted(p.files.items()):
        if not isinstance(path, str):
            raise ProbeError(f"hooks.probes.files.{family} must be a path string")
        loaded = load_probe_file(path, family, p.shots, p.sampling, p.seeds, p.joiner)
        items += loaded[: p.max_items]
    return items


def build_hooks(config, data: Data) -> list[Hook]:
    h, names = config.hooks, data.names
    per_domain = lambda total: max(1, total // len(names))
    hooks: list[Hook] = []
    if h.train_domains.enabled:
        hooks.append(TrainDomainsHook(names, every=h.train_domains.every))
    if h.heldout.enabled:
        total = h.heldout.batches * (h.heldout.batch_size or config.train.batch_size)
        hooks.append(HeldoutHook(data.heldout_rows(per_domain(total)), names,
                                 every=h.heldout.every))
    if h.probes.enabled:
        hooks.append(ProbeHook(probe_items(config, data), data.tokenizer, h.probes.every,
                               h.probes.prompt_len, h.probes.answer_len))
    if h.memorization.enabled:
        n = per_domain(h.memorization.examples)
        seen, last_index = data.first_train_rows(n)
        fresh = data.heldout_rows(n, offset=per_domain(
            h.heldout.batches * (h.heldout.batch_size or config.train.batch_size)))
        hooks.append(MemorizationHook(seen, fresh, last_index // config.train.batch_size,
                                      names, every=h.memorization.every))
    return hooks
