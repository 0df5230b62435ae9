"""Online hop detection on the host rows while training runs.

A sink: every row with probe item margins gets a per-family regime (bootstrap CI over items,
as offline), and a hop is reported as soon as a new decided regime has lasted
`min_regime_steps` rows — the same definition `find_hops` applies offline. With
`save_on_hop`, it asks the trainer for a checkpoint right after each hop, so checkpoints
bracket every mode switch: the trainer saves every requested checkpoint (orbax's interval check
is bypassed, and a save that does not happen is reported), the state after the step in flight
when the hop's row arrives. They count against `checkpoint.keep` like the others.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np

from genjax.analysis.regimes import (
    NAMES,
    UNDECIDED,
    Hop,
    regimes_from_items,
)
from genjax.stream.sinks import BaseSink


class _FamilyState:
    def __init__(self):
        self.stable: tuple[int, int, int] | None = None  # regime, first and last step
        self.stable_margins: list[float] = []
        self.run_label, self.run_start = UNDECIDED, -1
        self.run_margins: list[float] = []


class OnlineHopDetector(BaseSink):
    """Sink that detects regime hops per probe family as rows arrive."""

    def __init__(self, min_regime_steps: int = 20, n_boot: int = 1000, seed: int = 0,
                 save_on_hop: bool = False, log: Callable[[str], None] | None = None):
        self.min_regime_steps, self.n_boot, self.seed = min_regime_steps, n_boot, seed
        self.save_on_hop = save_on_hop
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.hops: list[Hop] = []
        self.checkpoint_requested = False

    def open(self, schema, meta, start_step):
        spec = next((s for s in schema if s.name == "probes/item_margin"), None)
        self.columns: dict[str, np.ndarray] = {}
        if spec is None:
            return
        labels = spec.labels["item"]
        for family in sorted({label.rsplit("/", 1)[0] for label in labels}):
            self.columns[family] = np.array([i for i, label in enumerate(labels)
                                             if label.rsplit("/", 1)[0] == family])
        self.state = {f: _FamilyState() for f in self.columns}

    def write(self, step, row):
        margins = row.get("probes/item_margin")
        if margins is None or not np.isfinite(margins).all():
            return
        for family, cols in self.columns.items():
            track = regimes_from_items(margins[cols][None, :], self.n_boot, self.seed)
            self._advance(family, step, int(track.labels[0]), float(track.mean[0]))

    def _advance(self, family: str, step: int, label: int, margin: float) -> None:
        st = self.state[family]
        if label != st.run_label:
            st.run_label, st.run_start, st.run_margins = label, step, []
        st.run_margins.append(margin)
        if label == UNDECIDED or len(st.run_margins) < self.min_regime_steps:
            return
        if len(st.run_margins) > self.min_regime_steps:  # the confirmed run goes on
            st.stable = (label, st.stable[1], step)
            return
        if st.stable is not None and st.stable[0] == label:  # same regime after a gap
            st.stable = (label, st.stable[1], step)
            st.stable_margins = st.stable_margins + st.run_margins
            return
        if st.stable is not None:
            # the size uses the new regime's rows seen so far (offline uses all of them)
            hop = Hop(family, st.run_start,
                      "to_generalizing" if label == 1 else "to_pattern_matching",
                      float(np.mean(st.run_margins) - np.mean(st.stable_margins)),
                      st.run_start - st.stable[1])
            self.hops.append(hop)
            self.log(f"hop: {family} became {NAMES[label]} at step {hop.step} "
                     f"(margin change {hop.size:+.4f}), detected at step {step}")
            if self.save_on_hop:
                self.checkpoint_requested = True
        st.stable, st.stable_margins = (label, st.run_start, step), st.run_margins

    def flush(self):
        pass

    def close(self):
        pass
