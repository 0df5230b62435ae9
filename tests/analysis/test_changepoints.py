"""Change points: planted jumps and ramps are found; noise (white or strongly autocorrelated),
smooth decays, schedule shapes and smoothing give none.

Asserted below at the default penalty (beta=4), on series of 1,000-2,000 rows: 0 change
points on white, AR(1) phi 0.5 / 0.98 / 0.995 noise, exponential and power-law decays plus
AR(1) noise, a warmup-cosine schedule with 3% noise, and white noise smoothed over 5 and 20
rows (the issue measured 38 and 236 false change points per 10 series there); all 5 planted
2-sigma jumps per series within 10 steps. The full sweep is benchmarks/analysis_noise.py.
"""

import numpy as np

from genjax.analysis.changepoints import change_details, change_points, noise_sigma

N = 2000


def ar1(rng, n, phi, sd=1.0):
    """Stationary AR(1) with marginal sd `sd`."""
    e, x = rng.normal(size=n) * sd * np.sqrt(1 - phi**2), np.zeros(n)
    x[0] = rng.normal() * sd
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def test_planted_changes_found_within_tolerance():
    rng = np.random.default_rng(1)
    for _ in range(4):
        points = sorted(rng.choice(np.arange(200, 1800, 150), 5, replace=False))
        x = rng.normal(size=N)
        for p in points:
            x[p:] += rng.choice([-1, 1]) * 2.0
        found = change_points(x)
        assert len(found) == 5, (points, found)
        assert all(abs(f - p) <= 10 for f, p in zip(found, points))


def test_a_ramp_is_one_change_at_its_midpoint():
    rng = np.random.default_rng(5)
    x = ar1(rng, N, 0.5) + 8.0 * np.clip((np.arange(N) - 999) / 40, 0, 1)
    (change,) = change_details(x)
    assert 1005 <= change["index"] <= 1035 and change["start"] >= 990 and change["end"] <= 1050
    assert abs(change["size"] - 8.0) < 1.0


def test_pure_noise_gives_no_change_points():
    rng = np.random.default_rng(2)
    found = {phi: sum(len(change_points(ar1(rng, 1000, phi))) for _ in range(6))
             for phi in (0.0, 0.5, 0.98, 0.995)}
    assert not any(found.values()), found


def test_smooth_decays_and_schedules_give_none():
    from genjax.config import base_config
    from genjax.optim import make_schedule

    rng = np.random.default_rng(3)
    steps = np.arange(N)
    series = {f"exp{tau}_phi{phi}": 8 * np.exp(-steps / tau) + ar1(rng, N, phi)
              for tau in (30, 300, 1000) for phi in (0.0, 0.9)}
    series["power_law"] = 3 + 2.5 * (1 + steps / 50) ** -0.7 + rng.normal(size=N) * 0.02
    lr = np.array([float(make_schedule(base_config().optim, N)(i)) for i in range(N)])
    series["warmup_cosine"] = lr * (1 + 0.03 * rng.normal(size=N))
    found = {k: change_points(v, steps=steps) for k, v in series.items()}
    assert not any(found.values()), found


def test_smoothing_does_not_invent_change_points():
    rng = np.random.default_rng(4)
    found = {w: sum(len(change_points(rng.normal(size=1000), smooth_window=w))
                    for _ in range(5)) for w in (5, 20)}
    assert found == {5: 0, 20: 0}


def test_nan_rows_are_skipped_and_indices_map_back():
    rng = np.random.default_rng(3)
    x = rng.normal(size=600) * 0.1
    x[300:] += 1.0
    sparse = np.full(1200, np.nan)
    sparse[::2] = x  # a hook with every=2
    assert change_points(sparse) == [600]


def test_noise_sigma_is_the_long_run_scale():
    rng = np.random.default_rng(4)
    assert abs(noise_sigma(rng.normal(scale=2.0, size=4000)) - 2.0) < 0.15
    # AR(1) phi 0.5, innovation sd 1: long-run sd 1 / (1 - 0.5) = 2
    e, x = rng.normal(size=2000), np.zeros(2000)
    for i in range(1, 2000):
        x[i] = 0.5 * x[i - 1] + e[i]
    assert abs(noise_sigma(x) - 2.0) < 0.3
