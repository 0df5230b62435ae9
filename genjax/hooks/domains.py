"""Per-domain hooks: held-out loss/accuracy and gap, train-batch loss, memorization.

All per-domain values come from summed losses and token counts (`domain_sums`), so a domain's
value is exactly its token-weighted mean, never a mean of means. Eval rows are padded to the
`EvalBatching` plan with zero loss mask (a padded row adds nothing) and evaluated in
micro-batches through the model's chunked cross-entropy (`genjax.model.token_stats`).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from genjax.batching import EvalBatching
from genjax.hooks.base import MetricSpec, StepContext, domain_sums, rows_compute, safe_ratio


def _domain_spec(name: str, domains: list[str], description: str, unit: str = "") -> MetricSpec:
    return MetricSpec(name, ("domain",), (len(domains),), description, unit,
                      labels={"domain": tuple(domains)})


def _domain_means(loss_BxT, correct_BxT, mask_BxT, domain_B, num_domains):
    """(loss_D, accuracy_D, tokens_D): token-weighted per-domain means."""
    loss_sum_D, count_D = domain_sums(loss_BxT, mask_BxT, domain_B, num_domains)
    correct_sum_D, _ = domain_sums(correct_BxT, mask_BxT, domain_B, num_domains)
    return safe_ratio(loss_sum_D, count_D), safe_ratio(correct_sum_D, count_D), count_D


def train_batch_by_domain(ctx: StepContext, num_domains: int):
    """Per-domain means of the train batch, from the step's own forward pass."""
    return _domain_means(ctx.token_loss_BxT, ctx.token_correct_BxT, ctx.loss_mask_BxT,
                         ctx.domain_B, num_domains)


@dataclasses.dataclass
class HeldoutHook:
    """Loss and next-token accuracy per domain on fixed held-out rows, and the gap
    held-out loss minus this step's train-batch loss (NaN for a domain absent from the batch)."""

    rows: dict[str, np.ndarray]  # inputs, targets, loss_mask, domain: held-out rows
    domains: list[str]
    every: int = 1
    batching: EvalBatching = EvalBatching()
    token_bytes: np.ndarray | None = None  # [vocab] UTF-8 bytes per token: adds heldout/bpb
    startup_note: str = ""  # what the held-out set holds, printed once when a run starts
    name: str = "heldout"

    def schema(self):
        d = self.domains
        bpb = () if self.token_bytes is None else (
            _domain_spec("heldout/bpb", d, "held-out loss in bits per UTF-8 byte of the target "
                         "text (comparable across tokenizers)", "bits/byte"),)
        return (
            _domain_spec("heldout/loss", d, "token-weighted held-out cross-entropy",
                         "nats/token"),
            _domain_spec("heldout/accuracy", d, "held-out next-token argmax accuracy"),
            _domain_spec("gap/loss", d, "held-out loss minus train-batch loss", "nats/token"),
            *bpb,
        )

    def token_rows(self):
        return self.rows

    def data(self):
        return self.batching.pad(self.rows)

    def score(self, loss_NxT, correct_NxT, rows, ctx):
        loss_D, acc_D, _ = _domain_means(loss_NxT, correct_NxT, rows["loss_mask"],
                                         rows["domain"], len(self.domains))
        out = {"heldout/loss": loss_D, "heldout/accuracy": acc_D,
               "gap/loss": jnp.full_like(loss_D, jnp.nan)}  # filled by `finish`
        if self.token_bytes is not None:
            out["heldout/bpb"] = bits_per_byte(loss_NxT, rows["targets"], rows["loss_mask"],
                                               rows["domain"], len(self.domains),
                                               self.token_bytes)
        return out

    def compute(self, params, apply_fn, data, ctx):
        return rows_compute(self, params, apply_fn, data, ctx)

    def finish(self, values, ctx):
        """The gap, outside the every-N gate (NaN without a train step, ctx None)."""
        if ctx is None:
            return {}
        train_D = train_batch_by_domain(ctx, len(self.domains))[0]
        return {"gap/loss": values["heldout/loss"] - train_D}


def bits_per_byte(loss_BxT, targets_BxT, mask_BxT, domain_B, num_domains, token_bytes):
    """Per domain: summed loss (nats) / (ln 2 x UTF-8 bytes of the target tokens). Special
    tokens (EOS, padding) have no bytes, but their loss counts."""
    table = jnp.asarray(token_bytes, jnp.float32)
    loss_sum_D, _ = domain_sums(loss_BxT, mask_BxT, domain_B, num_domains)
    bytes_sum_D, _ = domain_sums(table[targets_BxT], mask_BxT, domain_B, num_domains)
    return safe_ratio(loss_sum_D, bytes_sum_D * math.log(2.0))


@dataclasses.dataclass
class TrainDomainsHook:
    """Per-domain loss, accuracy and token count of the train batch: no extra FLOPs."""

    domains: list[str]
    every: int = 1
    token_bytes: np.ndarray | None = None  # [vocab] UTF-8 bytes per token: adds .../bpb
    name: str = "train_domains"

    def schema(self):
        d = self.domains
        bpb = () if self.token_bytes is None else (
            _domain_spec("train_domains/bpb", d, "train-batch loss in bits per UTF-8 byte",
                         "bits/byte"),)
        return (
            _domain_spec("train_domains/loss", d, "train-batch cross-entropy per domain",
                         "nats/token"),
            _domain_spec("train_domains/accuracy", d, "train-batch next-token accuracy"),
            _domain_spec("train_domains/tokens", d, "loss tokens per domain in the batch",
                         "tokens"),
            *bpb,
        )

    def data(self):
        return ()

    def compute(self, params, apply_fn, data, ctx):
        loss_D, acc_D, tokens_D = train_batch_by_domain(ctx, len(self.domains))
        out = {"train_domains/loss": loss_D, "train_domains/accuracy": acc_D,
               "train_domains/tokens": tokens_D}
        if self.token_bytes is not None:
            if ctx.batch is None:  # a loop that does not pass its batch
                out["train_domains/bpb"] = jnp.full((len(self.domains),), jnp.nan)
            else:
                out["train_domains/bpb"] = bits_per_byte(
                    ctx.token_loss_BxT, ctx.batch["targets"], ctx.loss_mask_BxT, ctx.domain_B,
                    len(self.domains), self.token_bytes)
        return out


@dataclasses.dataclass
class MemorizationHook:
    """Loss on training rows the model saw in its first steps against fresh held-out rows of
    the same domains; `memorization/gap` = fresh - seen (large: memorized, ~0: generalizes)."""

    seen: dict[str, np.ndarray]
    fresh: dict[str, np.ndarray]
    seen_by_step: int  # every seen row was trained on at or before this step
    domains: list[str]
    every: int = 1
    batching: EvalBatching = EvalBatching()
    name: str = "memorization"

    def schema(self):
        d = self.domains
        return (
            _domain_spec("memorization/seen_loss", d,
                         f"loss on fixed train rows seen by step {self.seen_by_step}",
                         "nats/token"),
            _domain_spec("memorization/fresh_loss", d, "loss on fresh held-out rows",
                         "nats/token"),
            _domain_spec("memorization/gap", d, "fresh minus seen loss", "nats/token"),
        )

    def token_rows(self):
        rows = {k: np.concatenate([self.seen[k], self.fresh[k]]) for k in self.seen}
        rows["is_seen"] = np.concatenate([np.ones(len(self.seen["domain"]), np.float32),
                                          np.zeros(len(self.fresh["domain"]), np.float32)])
        return rows

    def data(self):
        return self.batching.pad(self.token_rows())

    def score(self, loss_NxT, correct_NxT, rows, ctx):
        n = len(self.domains)
        seen_mask = rows["loss_mask"] * rows["is_seen"][:, None]
        fresh_mask = rows["loss_mask"] * (1.0 - rows["is_seen"])[:, None]
        seen_sum, seen_n = domain_sums(loss_NxT, seen_mask, rows["domain"], n)
        fresh_sum, fresh_n = domain_sums(loss_NxT, fresh_mask, rows["domain"], n)
        seen_D, fresh_D = safe_ratio(seen_sum, seen_n), safe_ratio(fresh_sum, fresh_n)
        return {"memorization/seen_loss": seen_D, "memorization/fresh_loss": fresh_D,
                "memorization/gap": fresh_D - seen_D}

    def compute(self, params, apply_fn, data, ctx):
        return rows_compute(self, params, apply_fn, data, ctx)
