"""Abrupt changes on top of a smooth trend, under autocorrelated noise.

Model of a metric series x_t (t: the rows where it was logged, in order):

    x_t = trend(step_t) + sum_k delta_k * R(t; start_k, L_k) + u_t,   u_t = phi u_{t-1} + e_t

  - trend, the simplest of: a constant; a constant plus one or two exponential decays
    exp(-step / tau) (tau from a grid spaced by e^0.5, fitted by least squares); a cubic
    B-spline in log(1 + step), knots 1 or 1/2 unit apart (schedule shapes, power laws);
  - changes: level shifts R that complete within L rows (L = 1: a step; 2, 4, ..., 64: ramps);
  - u: AR(1) noise, phi from a grid by profile likelihood. Fits are generalized least
    squares: everything is prewhitened (Prais-Winsten, x_t - phi x_{t-1}), so a persistent
    wander is not taken for a change while a step stays sharp.

Trend, phi and changes minimize the BIC-like criterion

    n log(RSS / n) - log(1 - phi^2) + log(n) * (k + beta * m)

(RSS of the whitened residual, k trend parameters, m changes; each change costs beta / 2
times what BIC charges for its two parameters, because its location is searched over ~7n
candidates). For a fixed trend and phi the changes come from forward selection (the candidate
that lowers the RSS most, while it lowers it by more than `beta log(n) sigma_e^2`, sigma_e^2 the
residual variance with it) and backward elimination. The noise scale is therefore the series'
own innovation scale seen through its estimated correlation, never a raw standard deviation:
smoothing a series first raises phi and lowers sigma_e and leaves the test where it was.

Measured (benchmarks/analysis_noise.py): 0 change points at the default beta = 4 on 2,000-row
AR(1) series (phi 0 to 0.995) with or without exponential decays of 8 noise sd.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

KNOT_SPACING = 1.0  # spline knots at most this far apart in log(1 + step)
RAMPS = (1, 2, 4, 8, 16, 32, 64)  # change durations tried, in rows
PHI_SEARCH = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998)
MAX_POINTS = 2000  # longer series are averaged in bins of consecutive rows first
DEFAULT_BETA = 4.0


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
    sigma_e: float  # innovation scale: sqrt(whitened RSS / n)
    penalty: float  # the RSS reduction a change had to beat
    bin: int = 1  # rows averaged per point (series longer than MAX_POINTS)
    phi_fine: float = 0.0  # phi refined on a fine grid given the changes
    sigma_fine: float = 0.0
    phi_bc: float = 0.0  # phi_fine plus Kendall's bias correction (for long-run variances)
    sigma_bc: float = 0.0


def spline_basis(steps: np.ndarray, spacing: float = KNOT_SPACING) -> np.ndarray:
    """[n, k] cubic B-spline basis in u = log(1 + step) (steps >= 0), uniform knots at most
    `spacing` apart (columns without support are dropped later, by rank)."""
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
        w, v = np.linalg.eigh(_gram(a))
        keep = w > tol * max(float(w.max()), 1e-300)
        a = np.einsum("ij,jk->ik", a, v[:, keep] / np.sqrt(w[keep]))
    return a


def _gram(a: np.ndarray) -> np.ndarray:
    # einsum, not BLAS: multithreaded BLAS on these thin matrices is slower by 100x when the
    # cores are busy (a training run next to the analysis)
    return np.einsum("ij,ik->jk", a, a)


def _lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least-squares coefficients of b on the columns of a (minimum norm if rank deficient)."""
    w, v = np.linalg.eigh(_gram(a))
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


class _Search:
    """Every candidate change (start, length) against a growing orthonormal whitened design:
    keeps, per length, each candidate's squared norm outside the design, so that adding a
    column costs one pass over the candidates."""

    def __init__(self, q: np.ndarray, phi: float, cands):
        self.phi, self.cands, self.n = phi, cands, q.shape[0]
        self.free = [_ramp_norm2(start, length, phi, self.n) for length, start in cands]
        self.full = [f.copy() for f in self.free]
        self.add(q)

    def add(self, cols: np.ndarray) -> None:
        pq = _Prefix(cols)
        for j, (length, start) in enumerate(self.cands):
            self.free[j] = self.free[j] - np.sum(pq.dot(start, length, self.phi, self.n) ** 2, 1)

    def best(self, r: np.ndarray, taken) -> tuple[float, int, int]:
        """(reduction, start, length) of the candidate that lowers the RSS of the residual r
        (orthogonal to the design) most."""
        pr = _Prefix(r[:, None])
        best = (0.0, -1, 0)
        for j, (length, start) in enumerate(self.cands):
            num = pr.dot(start, length, self.phi, self.n)[:, 0]
            den = self.free[j]
            ok = den > 1e-9 * self.full[j]
            red = np.where(ok, num**2 / np.where(ok, den, 1.0), 0.0)
            for s0, l0 in taken:  # one change per location and length
                if l0 == length:
                    red[start == s0] = 0.0
            i = int(np.argmax(red))
            if red[i] > best[0]:
                best = (float(red[i]), int(start[i]), length)
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


def _select(zx, zbasis, n_rows, phi, beta, cands, max_changes=8, search=None):
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
    search = search or _Search(q, phi, cands)
    while len(chosen) < max_changes:
        red, start, length = search.best(r, chosen)
        if start < 0 or red <= pen * (rss - red) / n:
            break
        c = _whiten(ramp(n, start, length)[:, None], phi)[:, 0]
        c = c - q @ (q.T @ c)
        c /= np.linalg.norm(c)
        q = np.concatenate([q, c[:, None]], axis=1)
        search = copy.copy(search) if not chosen else search
        search.free = list(search.free)
        search.add(c[:, None])
        r = r - c * float(c @ r)
        rss = float(r @ r)
        chosen.append((start, length))
    for k in range(len(chosen) if len(chosen) > 1 else 0):  # re-place each given the others
        others = chosen[:k] + chosen[k + 1:]
        cols = [_whiten(ramp(n, s0, l0)[:, None], phi) for s0, l0 in others]
        qk = _orthonormal(np.concatenate([zbasis, *cols], axis=1))
        rk = zx - qk @ (qk.T @ zx)
        red, start, length = _Search(qk, phi, cands).best(rk, others)
        if start >= 0:
            chosen[k] = (start, length)
            rss = max(float(rk @ rk) - red, 0.0)
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
    parameters); the cubic spline in log time, knots 1 or 1/2 apart."""
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
    for spacing in (KNOT_SPACING, KNOT_SPACING / 2):
        spline = spline_basis(steps, spacing)
        out.append((spline, _rank(spline)))
    return out


def _fit_option(x, basis, k, beta, cands, zx_of):
    """Best (criterion, chosen, phi, rss) for one trend: phi from the profile likelihood with
    at most one change, the changes at that phi, then phi again given them (twice at most)."""
    n = len(x)
    pen = beta * np.log(n)
    searches = {}
    best_phi, best_c = 0.0, np.inf
    for phi in PHI_SEARCH:
        q = _orthonormal(_whiten(basis, phi))
        r = zx_of[phi] - q @ (q.T @ zx_of[phi])
        rss = float(r @ r)
        c = _crit(n, rss, phi, k, 0, beta)
        searches[phi] = _Search(q, phi, cands)
        red = searches[phi].best(r, [])[0]
        if red > pen * (rss - red) / n:
            c = min(c, _crit(n, rss - red, phi, k, 1, beta))
        if c < best_c:
            best_phi, best_c = phi, c
    phi, chosen = best_phi, None
    for _ in range(2):
        rss, new = _select(zx_of[phi], _whiten(basis, phi), n, phi, beta, cands,
                           search=searches.get(phi))
        if new == chosen:
            break
        chosen = new
        design = _design(basis, chosen)
        again = min(PHI_SEARCH, key=lambda f: _crit(n, _rss(x, design, f)[0], f, k,
                                                   len(chosen), beta))
        if again == phi:
            break
        phi, chosen = again, None
    rss, chosen = _select(zx_of[phi], _whiten(basis, phi), n, phi, beta, cands,
                          search=searches.get(phi))
    return _crit(n, rss, phi, k, len(chosen), beta), chosen, phi, rss


def fit(values: np.ndarray, steps: np.ndarray | None = None, beta: float = DEFAULT_BETA,
        min_size: int = 3) -> Fit:
    """Trend plus changes of a series without NaNs (see the module docstring). `steps`: the
    train step of each row (default 0, 1, ...); changes are indices into `values`. A series
    longer than MAX_POINTS is first averaged over bins of consecutive rows."""
    x = np.asarray(values, np.float64)
    n_rows = len(x)
    steps = np.arange(n_rows, dtype=np.float64) if steps is None else np.asarray(steps,
                                                                                np.float64)
    b = max(1, -(-n_rows // MAX_POINTS))
    if b > 1:  # bins of b rows (the last one may be shorter)
        edges = np.arange(0, n_rows, b)
        x = np.add.reduceat(x, edges) / np.diff(np.append(edges, n_rows))
        steps = np.add.reduceat(steps, edges) / np.diff(np.append(edges, n_rows))
    n = len(x)
    if n < 2 * min_size + 2 or not float(np.ptp(x)) > 0.0:
        return Fit([], np.repeat(np.full(n, float(np.mean(x)) if n else np.nan), b)[:n_rows],
                   0.0, 0.0, 0.0, b)
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
    changes = [Change(min(n_rows - 1, (s + (length - 1) // 2) * b + b // 2), s * b,
                      length * b, float(coef[k0 + j]))
               for j, (s, length) in enumerate(chosen)]
    sigma = float(np.sqrt(rss / n))
    return Fit(changes, np.repeat(design @ coef, b)[:n_rows], phi, sigma,
               beta * sigma**2 * np.log(n), b, *_phi_refined(x, design, phi))


PHI_FINE = tuple(np.round(np.concatenate([np.arange(0.0, 0.9, 0.05), np.arange(0.9, 0.99, 0.01),
                                          np.arange(0.99, 0.9995, 0.001)]), 4))


def _phi_refined(x: np.ndarray, design: np.ndarray, phi: float) -> tuple[float, ...]:
    """(phi, sigma_e) refined on a fine grid (profile likelihood given the design), and the
    same with Kendall's first-order bias correction (1 + 3 phi) / n added to phi (least
    squares underestimates phi by about that, which matters near 1: the variance of a mean
    grows like 1 / (1 - phi)^2)."""
    n = len(x)
    grid = sorted(set(PHI_FINE) | {phi})
    rss = {f: _rss(x, design, f)[0] for f in grid}
    ll = {f: -0.5 * n * np.log(max(rss[f], 1e-300) / n) + 0.5 * np.log(1.0 - f**2)
          for f in grid}
    best = max(ll, key=ll.get)
    bc = min(0.999, best + (1.0 + 3.0 * best) / n) if best > 0 else 0.0
    return (float(best), float(np.sqrt(rss[best] / n)), float(bc),
            float(np.sqrt(_rss(x, design, bc)[0] / n)))
