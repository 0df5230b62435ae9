"""Abrupt changes on top of a smooth trend, under autocorrelated noise.

Model of a metric series x_t (t: the rows where it was logged, in order):

    x_t = trend(t) + sum_k delta_k * R(t; tau_k, L_k) + u_t,    u_t = phi * u_{t-1} + e_t

  - trend: a cubic B-spline in log(1 + step) with knots at most `KNOT_SPACING` apart in that
    coordinate. Exponential and power-law decays, warmup-and-decay shapes and the fast start of
    a run are smooth there (an exponential's 90%-to-10% fall spans 3.1 units of log time,
    whatever its time constant), so they are trend, not changes;
  - changes: level shifts R that complete within L rows (L = 1: a step; L = 2, 4, ... 64:
    ramps); a change completing within ~1/3 unit of log time (an event that takes 10% to 40%
    of the training time elapsed before it) is not a trend;
  - u: AR(1) noise. phi is estimated by profile likelihood (GLS over a grid of phi), and the
    fit is done on the prewhitened series (x_t - phi x_{t-1}), so a wander of a strongly
    autocorrelated series is not taken for a change, while a step stays sharp.

Changes are chosen by penalized least squares in the prewhitened space: forward selection of
the candidate (tau, L) that lowers the residual sum of squares most, while that reduction
exceeds `beta * sigma_e^2 * log(n)` (sigma_e: robust scale of the prewhitened residual,
the innovation scale, which is the series' long-run noise seen through its own correlation),
then backward elimination of any change the others make unnecessary; phi, sigma_e and the
changes are re-estimated together until they agree. Smoothing the series beforehand changes
nothing in this scale (the smoothing window only changes the estimated correlation).
"""

from __future__ import annotations

import dataclasses

import numpy as np

KNOT_SPACING = 1.0  # spline knots at most this far apart in log(1 + step)
RAMPS = (1, 2, 4, 8, 16, 32, 64)  # change durations tried, in rows
PHI_GRID = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99,
            0.993, 0.995, 0.997, 0.998, 0.999)
MAX_POINTS = 4000  # longer series are averaged in bins of consecutive rows first


@dataclasses.dataclass
class Change:
    index: int  # row (of the finite values) where the change is half done
    start: int  # first row of the change
    length: int  # rows it takes (1: a step)
    size: float  # level after minus level before


@dataclasses.dataclass
class Fit:
    changes: list[Change]
    trend: np.ndarray  # fitted trend plus changes, [n]
    phi: float
    sigma_e: float  # innovation scale (robust)
    penalty: float


def spline_basis(steps: np.ndarray, spacing: float = KNOT_SPACING) -> np.ndarray:
    """[n, k] cubic B-spline basis in u = log(1 + step) (steps >= 0), uniform knots at most
    `spacing` apart, reduced to an orthonormal basis of its column space (rows without support
    are dropped by rank)."""
    from scipy.interpolate import BSpline

    u = np.log1p(np.maximum(np.asarray(steps, np.float64), 0.0))
    lo, hi = float(u.min()), float(u.max())
    if hi - lo < 1e-9:
        return np.ones((len(u), 1)) / np.sqrt(len(u))
    intervals = max(1, int(np.ceil((hi - lo) / spacing - 1e-9)))
    inner = np.linspace(lo, hi, intervals + 1)
    knots = np.concatenate([[lo] * 3, inner, [hi] * 3])
    basis = BSpline.design_matrix(np.clip(u, lo, hi), knots, 3).toarray()
    return basis


def _orthonormal(a: np.ndarray, tol: float = 1e-11) -> np.ndarray:
    """Orthonormal basis of the column space of a [n, p] (p small), from the eigenvectors of
    its Gram matrix, twice for accuracy (LAPACK's SVD of a tall matrix is much slower, and
    far slower still when BLAS threads compete for the cores)."""
    for _ in range(2):
        if a.shape[1] == 0:
            return a
        w, v = np.linalg.eigh(a.T @ a)
        keep = w > tol * max(float(w.max()), 1e-300)
        a = a @ (v[:, keep] / np.sqrt(w[keep]))
    return a


def _lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of b on the columns of a (minimum norm if rank deficient)."""
    w, v = np.linalg.eigh(a.T @ a)
    keep = w > 1e-11 * max(float(w.max()), 1e-300)
    return v[:, keep] @ ((v[:, keep].T @ (a.T @ b)) / w[keep])


def _rank(a: np.ndarray) -> int:
    return _orthonormal(a).shape[1]


def _whiten(a: np.ndarray, phi: float) -> np.ndarray:
    """Prais-Winsten transform along axis 0: row 0 scaled by sqrt(1 - phi^2), then
    a_t - phi a_{t-1}."""
    out = np.empty_like(a)
    out[0] = a[0] * np.sqrt(1.0 - phi**2)
    out[1:] = a[1:] - phi * a[:-1]
    return out


def ramp(n: int, start: int, length: int) -> np.ndarray:
    """0 before `start`, rising linearly to 1 at row start + length - 1, then 1."""
    i = np.arange(n, dtype=np.float64)
    return np.clip((i - start + 1) / length, 0.0, 1.0)


def _robust_scale(e: np.ndarray) -> float:
    centered = e - np.median(e)
    mad = 1.4826 * float(np.median(np.abs(centered)))
    if mad == 0.0:  # quantized series (accuracies): most rows do not move
        mad = float(np.std(centered))
    return mad


class _Prefix:
    """Prefix sums of columns of v [n, m] and of i * v, for sums over row ranges."""

    def __init__(self, v: np.ndarray):
        i = np.arange(v.shape[0], dtype=np.float64)[:, None]
        z = np.zeros((1, v.shape[1]))
        self.p = np.concatenate([z, np.cumsum(v, 0)])
        self.pi = np.concatenate([z, np.cumsum(v * i, 0)])

    def dot(self, start: np.ndarray, length: int, phi: float, n: int) -> np.ndarray:
        """[len(start), m]: v . whitened ramp(start, length) for every start (rows >= 1)."""
        end = start + length
        box = self.p[end] - self.p[start]
        ibox = self.pi[end] - self.pi[start]
        tail = self.p[n] - self.p[end]
        return (box + (1.0 - phi) * (ibox - start[:, None] * box)) / length + (1.0 - phi) * tail


def _ramp_norm2(start: np.ndarray, length: int, phi: float, n: int) -> np.ndarray:
    k = np.arange(length, dtype=np.float64)
    inside = float(np.sum(((1.0 + (1.0 - phi) * k) / length) ** 2))
    return inside + (1.0 - phi) ** 2 * (n - start - length)


def _candidates(n: int, min_size: int) -> list[tuple[int, np.ndarray]]:
    out = []
    for length in RAMPS:
        if length > max(1, n // 8):
            break
        start = np.arange(max(1, min_size), n - length - min_size + 2)
        if start.size:
            out.append((length, start))
    return out


def _best_candidate(q: np.ndarray, r: np.ndarray, phi: float, cands, taken: set) -> tuple:
    """(reduction, start, length) of the candidate change that lowers the whitened residual
    sum of squares most, given the design q (orthonormal, whitened) and residual r (orthogonal
    to q)."""
    n = len(r)
    pq, pr = _Prefix(q), _Prefix(r[:, None])
    best = (0.0, -1, 0)
    for length, start in cands:
        proj = pq.dot(start, length, phi, n)  # [S, p]
        num = pr.dot(start, length, phi, n)[:, 0]
        den = _ramp_norm2(start, length, phi, n) - np.sum(proj**2, axis=1)
        ok = den > 1e-9 * _ramp_norm2(start, length, phi, n)
        red = np.where(ok, num**2 / np.where(ok, den, 1.0), 0.0)
        for s in taken:  # one change per location and length
            red[(start == s[0]) & (length == s[1])] = 0.0
        j = int(np.argmax(red))
        if red[j] > best[0]:
            best = (float(red[j]), int(start[j]), length)
    return best


def _design(trend_basis: np.ndarray, changes: list[tuple[int, int]]) -> np.ndarray:
    n = trend_basis.shape[0]
    cols = [ramp(n, s, length) for s, length in changes]
    return np.column_stack([trend_basis, *cols]) if cols else trend_basis


def _rss(x: np.ndarray, design: np.ndarray, phi: float) -> tuple[float, np.ndarray]:
    """Whitened residual sum of squares and the whitened residual."""
    zx, zd = _whiten(x[:, None], phi)[:, 0], _whiten(design, phi)
    q = _orthonormal(zd)
    r = zx - q @ (q.T @ zx)
    return float(r @ r), r


def _select(zx, zbasis, n_rows, phi, beta, cands, max_changes=8):
    """Forward selection then backward elimination of changes at a fixed phi (whitened data
    zx, whitened trend basis zbasis). A change is kept while it lowers the residual sum of
    squares by more than beta * log(n) * sigma^2, sigma^2 = that RSS / n (with the change).
    Returns (rss, chosen)."""
    n = n_rows
    q = _orthonormal(zbasis)
    r = zx - q @ (q.T @ zx)
    rss = float(r @ r)
    chosen: list[tuple[int, int]] = []
    pen = beta * np.log(n)
    while len(chosen) < max_changes:
        red, start, length = _best_candidate(q, r, phi, cands, set(chosen))
        if start < 0 or red <= pen * (rss - red) / n:
            break
        c = _whiten(ramp(n, start, length)[:, None], phi)
        c = c - q @ (q.T @ c)
        c /= np.linalg.norm(c)
        q = np.concatenate([q, c], axis=1)
        r = r - c[:, 0] * float(c[:, 0] @ r)
        rss = float(r @ r)
        chosen.append((start, length))
    while chosen:  # backward: drop what the others explain
        def rss_of(sel):
            cols = [_whiten(ramp(n, s, length)[:, None], phi) for s, length in sel]
            qq = _orthonormal(np.concatenate([zbasis, *cols], axis=1))
            rr = zx - qq @ (qq.T @ zx)
            return float(rr @ rr)
        losses = [(rss_of(chosen[:k] + chosen[k + 1:]) - rss, k) for k in range(len(chosen))]
        loss, k = min(losses)
        if loss > pen * rss / n:
            break
        chosen.pop(k)
        rss += loss
    return rss, sorted(chosen)


PHI_SEARCH = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998)


def _decays(steps: np.ndarray) -> np.ndarray:
    """[n, m] exp(-step / tau) for time constants tau spaced by e^0.5 up to the last step."""
    top = float(np.max(steps))
    taus = np.exp(np.arange(0.0, np.log(max(top, 2.0)) + 1e-9, 0.5))
    cols = np.exp(-np.asarray(steps, np.float64)[:, None] / taus[None, :])
    keep = np.linalg.norm(cols, axis=0) > 1e-6 * np.sqrt(len(steps))
    return cols[:, keep]


def _crit(n: int, rss: float, phi: float, k: int, m: int, beta: float) -> float:
    return (n * np.log(max(rss, 1e-300) / n) - np.log(1.0 - phi**2)
            + np.log(n) * (k + beta * m))


def _trend_options(x: np.ndarray, steps: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """(basis, parameters) of each trend tried: a constant; a constant plus one or two
    exponential decays (time constants from a grid, chosen by least squares: each costs 2
    parameters); the cubic spline in log time."""
    n = len(x)
    const = np.ones((n, 1))
    out = [(const, 1)]
    decays = _decays(steps)
    chosen: list[int] = []
    for _ in range(2):
        best = None
        for j in range(decays.shape[1]):
            if j in chosen:
                continue
            design = np.column_stack([const, decays[:, chosen + [j]]])
            rss = _rss(x, design, 0.0)[0]
            if best is None or rss < best[0]:
                best = (rss, j)
        if best is None:
            break
        chosen.append(best[1])
        out.append((np.column_stack([const, decays[:, chosen]]), 1 + 2 * len(chosen)))
    spline = spline_basis(steps)
    out.append((spline, _rank(spline)))
    return out


def _fit_option(x, basis, k, beta, cands, zx_of):
    """Best (criterion, chosen, phi, rss) for one trend: phi from the profile likelihood with
    at most one change, the changes at that phi, then phi again given them (twice at most)."""
    n = len(x)
    pen = beta * np.log(n)
    best_phi, best_c = 0.0, np.inf
    for phi in PHI_SEARCH:
        zb = _whiten(basis, phi)
        q = _orthonormal(zb)
        r = zx_of[phi] - q @ (q.T @ zx_of[phi])
        rss = float(r @ r)
        red = _best_candidate(q, r, phi, cands, set())[0]
        c = min(_crit(n, rss, phi, k, 0, beta),
                _crit(n, rss - red, phi, k, 1, beta) if red > pen * (rss - red) / n else np.inf)
        if c < best_c:
            best_phi, best_c = phi, c
    phi, chosen, rss = best_phi, None, 0.0
    for _ in range(2):
        rss, new = _select(zx_of[phi], _whiten(basis, phi), n, phi, beta, cands)
        if new == chosen:
            break
        chosen = new
        design = _design(basis, chosen)
        again = min(PHI_SEARCH, key=lambda f: _crit(n, _rss(x, design, f)[0], f, k,
                                                   len(chosen), beta))
        if again == phi:
            break
        phi = again
    rss, chosen = _select(zx_of[phi], _whiten(basis, phi), n, phi, beta, cands)
    return _crit(n, rss, phi, k, len(chosen), beta), chosen, phi, rss


def fit(values: np.ndarray, steps: np.ndarray | None = None, beta: float = 4.0,
        min_size: int = 3) -> Fit:
    """Trend plus changes of a finite series (see the module docstring): the trend, phi and
    the changes minimizing n log(RSS/n) - log(1 - phi^2) + log(n) (k + beta m), with k trend
    parameters and m changes (a BIC with beta/2 times its price per change)."""
    x = np.asarray(values, np.float64)
    n = len(x)
    steps = np.arange(n) if steps is None else np.asarray(steps, np.float64)
    if n < 2 * min_size + 2 or float(np.ptp(x)) == 0.0:
        return Fit([], np.full(n, float(np.mean(x)) if n else np.nan), 0.0, 0.0, 0.0)
    cands = _candidates(n, min_size)
    zx_of = {phi: _whiten(x[:, None], phi)[:, 0] for phi in PHI_SEARCH}
    best = None
    for basis, k in _trend_options(x, steps):
        crit, chosen, phi, rss = _fit_option(x, basis, k, beta, cands, zx_of)
        if best is None or crit < best[0]:
            best = (crit, chosen, phi, rss, basis)
    _, chosen, phi, rss, basis = best
    design = _design(basis, chosen)
    coef = _lstsq(_whiten(design, phi), zx_of[phi])
    k0 = basis.shape[1]
    changes = [Change(int(s + (length - 1) // 2), int(s), int(length), float(coef[k0 + j]))
               for j, (s, length) in enumerate(chosen)]
    sigma = float(np.sqrt(rss / n))
    return Fit(changes, design @ coef, phi, sigma, beta * sigma**2 * np.log(n))
