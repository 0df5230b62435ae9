"""Regimes from per-item margins, hops (offline and online agree), false-hop rate on noise.

Measured false-hop rate at the defaults (min_regime_steps=20, 95% bootstrap CI): 0 hops in
20 pure-noise runs of 500 steps x 64 items, asserted below.
"""

import numpy as np

from genjax.analysis.online import OnlineHopDetector
from genjax.analysis.regimes import (
    GENERALIZING,
    PATTERN_MATCHING,
    UNDECIDED,
    find_hops,
    regimes_from_items,
    regimes_from_window,
)
from genjax.hooks.base import MetricSpec


def test_regimes_from_known_margins():
    rng = np.random.default_rng(0)
    pos = np.abs(rng.normal(0.3, 0.05, size=(10, 50)))
    neg = -pos
    straddle = rng.normal(0.0, 0.3, size=(10, 50))
    straddle -= straddle.mean(axis=1, keepdims=True)  # mean exactly 0: CI must include it
    assert (regimes_from_items(pos).labels == GENERALIZING).all()
    assert (regimes_from_items(neg).labels == PATTERN_MATCHING).all()
    assert (regimes_from_items(straddle).labels == UNDECIDED).all()
    ci = regimes_from_items(pos)
    assert (ci.ci_low < ci.mean).all() and (ci.mean < ci.ci_high).all()
    np.testing.assert_allclose(ci.mean, pos.mean(axis=1))


def planted(rng, levels, steps_each=100, items=64, noise=0.2):
    return np.concatenate([rng.normal(level, noise, size=(steps_each, items))
                           for level in levels])


def test_hops_found_offline_and_online_alike():
    rng = np.random.default_rng(1)
    margins = planted(rng, [0.1, -0.1, 0.0, 0.1, 0.1])  # gen -> pm -> undecided -> gen
    steps = np.arange(len(margins)) + 1000
    track = regimes_from_items(margins)
    hops = find_hops("fam", track, steps)
    assert [h.direction for h in hops] == ["to_pattern_matching", "to_generalizing"]
    assert 1100 <= hops[0].step <= 1105 and 1300 <= hops[1].step <= 1305
    assert 80 <= hops[0].left_duration <= 100 and hops[0].size < -0.15

    detector = OnlineHopDetector(log=lambda msg: None, save_on_hop=True)
    spec = MetricSpec("probes/item_margin", ("item",), (64,),
                      labels={"item": tuple(f"fam/{i}" for i in range(64))})
    detector.open([spec], {}, 0)
    requested = []
    for step, row in zip(steps, margins):
        detector.write(int(step), {"probes/item_margin": row})
        requested.append(detector.checkpoint_requested)
        detector.checkpoint_requested = False
    assert [(h.step, h.direction, h.left_duration) for h in detector.hops] == \
        [(h.step, h.direction, h.left_duration) for h in hops]
    # asked for a checkpoint as soon as each new regime was confirmed
    assert [int(s) for s, r in zip(steps, requested) if r] == [h.step + 19 for h in hops]


def test_no_hops_on_pure_noise():
    rng = np.random.default_rng(2)
    total = 0
    for _ in range(20):
        margins = rng.normal(0.0, 0.3, size=(500, 64))
        total += len(find_hops("fam", regimes_from_items(margins), np.arange(500)))
    assert total == 0


def test_window_regimes_without_item_data():
    rng = np.random.default_rng(3)
    margin = np.concatenate([rng.normal(-0.2, 0.05, 200), rng.normal(0.2, 0.05, 200)])
    track = regimes_from_window(margin, window=30)
    hops = find_hops("fam", track, np.arange(400))
    assert len(hops) == 1 and hops[0].direction == "to_generalizing"
    assert 200 <= hops[0].step <= 230  # a trailing window lags by up to its length
