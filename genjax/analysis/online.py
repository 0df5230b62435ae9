"""Online hop detection on the host rows while training runs.

A sink: it keeps the probe item margins of the rows seen (the last `history` rows) and
re-runs the offline regime analysis (`regime_track` + `find_hops`, the same definitions and
settings) on them every `check_every` rows, or by default as often as a `budget` share of the
wall time allows (at least `min_regime_steps // 4` rows apart). A hop is reported once, when a
check first finds it (its new regime has then lasted `min_regime_steps` rows); later checks
may refine its step, and after `close` the detector's hops are the offline analysis of the
same rows. With `save_on_hop`, it asks the trainer for a checkpoint right after each new hop.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from genjax.analysis.regimes import (
    DEFAULT_FLOOR,
    HOP_BETA,
    NAMES,
    Hop,
    find_hops,
    item_family,
    item_groups,
    regime_track,
)
from genjax.stream.sinks import BaseSink


class OnlineHopDetector(BaseSink):
    """Sink that detects regime hops per probe family as rows arrive."""

    def __init__(self, min_regime_steps: int = 20, seed: int = 0, save_on_hop: bool = False,
                 log: Callable[[str], None] | None = None, *, level: float = 0.95,
                 margin_floor: float = DEFAULT_FLOOR, hop_beta: float = HOP_BETA,
                 check_every: int | None = None, history: int = 2000, budget: float = 0.05):
        del seed  # nothing is resampled
        self.min_regime_steps, self.save_on_hop = min_regime_steps, save_on_hop
        self.kwargs = dict(level=level, floor=margin_floor, beta=hop_beta,
                           min_regime_steps=min_regime_steps)
        self.check_every, self.history, self.budget = check_every, history, budget
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.hops: list[Hop] = []
        self.checkpoint_requested = False
        self.columns: dict[str, np.ndarray] = {}

    def open(self, schema, meta, start_step):
        spec = next((s for s in schema if s.name == "probes/item_margin"), None)
        self.columns, self.groups = {}, {}
        self.steps: list[int] = []
        self.rows: list[np.ndarray] = []
        self._since, self._cost, self._last = 0, 0.0, time.perf_counter()
        if spec is None:
            return
        labels = spec.labels["item"]
        for family in dict.fromkeys(item_family(label) for label in labels):
            cols = np.array([i for i, label in enumerate(labels)
                             if item_family(label) == family])
            self.columns[family] = cols
            self.groups[family] = item_groups([labels[i] for i in cols])

    def write(self, step, row):
        margins = row.get("probes/item_margin")
        if not self.columns or margins is None or not np.isfinite(margins).all():
            return
        self.steps.append(int(step))
        self.rows.append(np.asarray(margins, np.float64))
        if len(self.rows) > self.history:
            self.steps, self.rows = self.steps[-self.history:], self.rows[-self.history:]
        self._since += 1
        if self._due():
            self.check()

    def _due(self) -> bool:
        if self.check_every is not None:
            return self._since >= self.check_every
        if self._since < max(1, self.min_regime_steps // 4):
            return False
        return time.perf_counter() - self._last >= self._cost / self.budget

    def _detect(self) -> list[Hop]:
        """The offline analysis's hops on the rows kept."""
        if len(self.rows) < 2 * self.min_regime_steps:
            return []
        steps, m = np.asarray(self.steps), np.stack(self.rows)
        return [hop for family, cols in self.columns.items()
                for hop in find_hops(family, regime_track(m[:, cols], steps,
                                                          self.groups[family], **self.kwargs),
                                     steps, self.min_regime_steps)]

    def check(self, announce: bool = True) -> list[Hop]:
        """Runs the analysis on the rows kept; returns (and logs) the hops not seen before."""
        t0 = time.perf_counter()
        self._since = 0
        new = self._add(self._detect(), announce)
        self._last = time.perf_counter()
        self._cost = self._last - t0
        return new

    def _add(self, found: list[Hop], announce: bool = True) -> list[Hop]:
        new = [hop for hop in found if not self._known(hop)]
        self.hops = sorted(self.hops + new, key=lambda h: h.step)
        for hop in new if announce else ():
            label = NAMES[1 if hop.direction == "to_generalizing" else -1]
            self.log(f"hop: {hop.family} became {label} at step {hop.step} (margin change "
                     f"{hop.size:+.4f}), detected at step {self.steps[-1]}")
        if new and self.save_on_hop:
            self.checkpoint_requested = True
        return new

    def _same(self, a: Hop, b: Hop) -> bool:
        """One hop seen twice: same family and direction, steps within a regime's length."""
        return (a.family, a.direction) == (b.family, b.direction) and \
            abs(a.step - b.step) <= self.min_regime_steps

    def _known(self, hop: Hop) -> bool:
        """A hop already reported: refined in place."""
        for i, old in enumerate(self.hops):
            if self._same(old, hop):
                self.hops[i] = hop
                return True
        return False

    def flush(self):
        pass

    def close(self):
        """The last check, on every row kept: announces what is new and withdraws what the
        whole series no longer supports (a regime's interval widens as rows arrive), so that
        the detector's hops end as the offline analysis of the same rows."""
        if not self.columns or not self.rows:
            return
        final = self._detect()
        for old in self.hops:
            if not any(self._same(old, h) for h in final):
                self.log(f"hop withdrawn: {old.family} at step {old.step} is not a hop in the "
                         f"analysis of all {len(self.rows)} rows")
        self._add(final)  # announces the new ones
        self.hops = sorted(final, key=lambda h: h.step)
