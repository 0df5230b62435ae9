"""Change points: planted jumps are found; noise (white or autocorrelated) gives none.

Measured false-change-point rate at the default penalty (beta=3), recorded here because the
tests below assert it: 0 change points in 40 white-noise series and 0 in 40 AR(1) (phi=0.5)
series of n=2,000; all 5 planted 2-sigma jumps per series found within 10 steps.
"""

import numpy as np

from genjax.analysis.changepoints import change_points, noise_sigma

N = 2000


def ar1(rng, n, phi):
    e, x = rng.normal(size=n), np.zeros(n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def test_planted_changes_found_within_tolerance():
    rng = np.random.default_rng(1)
    for _ in range(10):
        points = sorted(rng.choice(np.arange(200, 1800, 150), 5, replace=False))
        x = rng.normal(size=N)
        for p in points:
            x[p:] += rng.choice([-1, 1]) * 2.0
        found = change_points(x)
        assert len(found) == 5, (points, found)
        assert all(abs(f - p) <= 10 for f, p in zip(found, points))


def test_pure_noise_gives_no_change_points():
    rng = np.random.default_rng(2)
    white = sum(len(change_points(rng.normal(size=N))) for _ in range(40))
    correlated = sum(len(change_points(ar1(rng, N, 0.5))) for _ in range(40))
    assert white == 0 and correlated == 0


def test_nan_rows_are_skipped_and_indices_map_back():
    rng = np.random.default_rng(3)
    x = rng.normal(size=600) * 0.1
    x[300:] += 1.0
    sparse = np.full(1200, np.nan)
    sparse[::2] = x  # a hook with every=2
    assert change_points(sparse) == [600]


def test_noise_sigma_matches_known_scale():
    rng = np.random.default_rng(4)
    assert abs(noise_sigma(rng.normal(scale=2.0, size=20000)) - 2.0) < 0.1
    x = ar1(rng, 20000, 0.5)  # long-run sd = 1 / (1 - 0.5) = 2
    assert abs(noise_sigma(x) - 2.0) < 0.25
