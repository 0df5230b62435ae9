"""False hops, false change points, interval coverage and hop recall of `genjax analyze` on
synthetic probe margins with a known truth.

Noise model (issue 18): each family's per-item margins are a zero-mean stationary AR(1) drift
shared by the family's items (marginal sd s) plus independent per-item AR(1) noise (sd s),
both with coefficient phi; 2 families of 32 items, 2,000 steps, s = 0.05 (margin units, so that
the default effect-size floor of 0.02 is below every planted level but the 2 s one's 0.05).
For each phi in 0 (white), 0.9, 0.98, 0.995, with `--runs` runs (20; `--quick`: 5):
  - null: false hops (`find_hops` on `regime_track`, as `genjax analyze` runs them), the
    coverage of the 95% interval (the share of rows whose interval holds the true level 0),
    and false change points (`change_points`, as the report runs them) on each family margin,
    alone and plus a smooth exponential decay of 8 s (time constant 30, 300 or 1,000 steps,
    by run);
  - planted hops: the same noise plus a change of family 0's mean level by 2, 4 and 8 s at
    step 1,000 (from -D/2 to +D/2, downwards in odd runs), as a step and as a ramp over 50
    steps. Recall: a hop of the right direction within 20 steps of 1,000 (ramps: inside the
    ramp, 1,000-1,050). False hops of the other family are counted too.
  - the recall bound: how often intervals built from the noise's exact variance (true phi and
    sds) around the true levels, split at the true change, are decided on both sides (95%
    two-sided, beyond the effect-size floor), over 2,000 draws: the recall of the best
    detector that needs a decided regime on each side of a hop and has calibrated intervals.
    Recall above it comes from intervals narrower than the noise warrants.

    python benchmarks/analysis_noise.py --out analysis_noise.json   # 9-12 minutes on 2 cores
    python benchmarks/analysis_noise.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: threads only cost

import numpy as np  # noqa: E402

from genjax.analysis.changepoints import change_points  # noqa: E402
from genjax.analysis.regimes import (  # noqa: E402
    DEFAULT_FLOOR,
    ar1_mean_var,
    find_hops,
    regime_track,
)

STEPS, ITEMS, FAMILIES, S, HOP_AT, RAMP = 2000, 32, 2, 0.05, 1000, 50
PHIS = (0.0, 0.9, 0.98, 0.995)
SIZES = (2, 4, 8)
DECAY_TAUS = (30, 300, 1000)


def ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float, sd: float) -> np.ndarray:
    """Stationary AR(1) along axis 0 with marginal sd `sd` (started from its stationary law)."""
    e = rng.normal(size=shape) * sd * np.sqrt(1.0 - phi**2)
    x = np.empty(shape)
    x[0] = rng.normal(size=shape[1:]) * sd
    for t in range(1, shape[0]):
        x[t] = phi * x[t - 1] + e[t]
    return x


def family_margins(rng: np.random.Generator, phi: float, steps: int = STEPS,
                   items: int = ITEMS, s: float = S) -> np.ndarray:
    """[steps, items]: a shared drift plus per-item noise, both AR(1) with sd s."""
    return ar1(rng, (steps,), phi, s)[:, None] + ar1(rng, (steps, items), phi, s)


def level_change(size: float, ramp: int, steps: int = STEPS, at: int = HOP_AT) -> np.ndarray:
    """[steps]: -size/2 before `at`, +size/2 from the end of a linear ramp of `ramp` steps."""
    i = np.arange(steps, dtype=np.float64)
    return size * (np.clip((i - at + 1) / ramp, 0.0, 1.0) - 0.5)


def recall_bound(phi: float, size: float, ramp: int, draws: int = 2000, seed: int = 0,
                 level_z: float = 1.959964, floor: float = DEFAULT_FLOOR) -> float:
    """The share of draws in which exact-variance 95% intervals of the two levels, split at the
    true change (left: rows before it, right: rows after the ramp), both exclude zero in the
    change's direction and lie beyond `floor`. The family mean of `family_margins` is an AR(1)
    of sd s plus the mean of ITEMS independent AR(1)s of sd s (itself an AR(1) of sd
    s / sqrt(ITEMS)), so its segment means have variance (1 + 1 / ITEMS) x that of one AR(1)."""
    rng = np.random.default_rng([seed, int(phi * 1000), int(size), ramp])
    x = (ar1(rng, (STEPS, draws), phi, S) + ar1(rng, (STEPS, draws), phi, S / np.sqrt(ITEMS))
         + size * S * level_change(1.0, ramp)[:, None])
    left, right = x[:HOP_AT], x[HOP_AT + ramp - 1:]
    innovation_sd = S * np.sqrt(1.0 - phi**2)
    sd = lambda rows: np.sqrt(ar1_mean_var(len(rows), phi, innovation_sd) * (1 + 1 / ITEMS))
    a, b = left.mean(axis=0), right.mean(axis=0)
    decided = ((a + level_z * sd(left) < 0) & (a < -floor)
               & (b - level_z * sd(right) > 0) & (b > floor))
    return float(decided.mean())


def hit(hops, ramp: int, direction: str, at: int = HOP_AT) -> bool:
    inside = (lambda s: at <= s <= at + ramp) if ramp > 1 else (lambda s: abs(s - at) <= 20)
    return any(h.direction == direction and inside(h.step) for h in hops)


def measure(phi: float, runs: int, seed: int = 0, sizes=SIZES) -> dict:
    rng = np.random.default_rng([seed, int(phi * 1000)])
    steps = np.arange(STEPS)
    null = {"runs": runs, "false_hops": 0, "false_change_points": 0,
            "false_change_points_decay": 0, "coverage": []}
    for run in range(runs):
        for _ in range(FAMILIES):
            m = family_margins(rng, phi)
            track = regime_track(m, steps)
            null["false_hops"] += len(find_hops("f", track, steps))
            null["coverage"].append(float(np.mean((track.ci_low <= 0) & (track.ci_high >= 0))))
            x = m.mean(axis=1)
            null["false_change_points"] += len(change_points(x, steps=steps))
            decay = 8 * S * np.exp(-steps / DECAY_TAUS[run % len(DECAY_TAUS)])
            null["false_change_points_decay"] += len(change_points(x + decay, steps=steps))
    null["coverage_min_run"] = float(np.min(null["coverage"]))
    null["coverage"] = float(np.mean(null["coverage"]))
    planted = {}
    for ramp in (1, RAMP):
        for size in sizes:
            found = other = 0
            for run in range(runs):
                sign = 1.0 if run % 2 == 0 else -1.0
                direction = "to_generalizing" if sign > 0 else "to_pattern_matching"
                m = family_margins(rng, phi) + sign * level_change(size * S, ramp)[:, None]
                found += hit(find_hops("f", regime_track(m, steps), steps), ramp, direction)
                other += len(find_hops("g", regime_track(family_margins(rng, phi), steps),
                                       steps))
            planted[f"{'step' if ramp == 1 else 'ramp'}_{size}s"] = {
                "recall": found / runs, "false_hops_other_family": other,
                "recall_bound": recall_bound(phi, size, ramp, seed=seed)}
    return {"phi": phi, "null": null, "planted": planted}


def table(results: list[dict]) -> str:
    keys = list(results[0]["planted"])
    head = ["phi", "false hops", "false CPs (noise / +decay)", "95% CI coverage",
            *[f"recall {k} (bound)" for k in keys]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        n = r["null"]
        cells = [f"{r['phi']}", f"{n['false_hops']} in {n['runs']} runs",
                 f"{n['false_change_points']} / {n['false_change_points_decay']}",
                 f"{100 * n['coverage']:.1f}% (worst series {100 * n['coverage_min_run']:.0f}%)",
                 *[f"{100 * r['planted'][k]['recall']:.0f}% "
                   f"({100 * r['planted'][k]['recall_bound']:.0f}%)" for k in keys]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="5 runs per phi")
    ap.add_argument("--phis", default=",".join(map(str, PHIS)))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    runs = 5 if args.quick else args.runs
    results = []
    for phi in (float(p) for p in args.phis.split(",")):
        t0 = time.perf_counter()
        results.append(measure(phi, runs, args.seed))
        print(f"phi {phi}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(table(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"runs": runs, "steps": STEPS, "items": ITEMS, "s": S,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
