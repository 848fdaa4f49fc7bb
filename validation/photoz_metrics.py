"""Photometric-redshift metrics of point estimates and of predictive distributions, shared by
validation/photoz_baselines.py (the table of ours vs the classical methods).

Point estimates (as lib/aion-app/src/metrics.rs): with d = (z_pred - z_true) / (1 + z_true),
bias = median(d), sigma_NMAD = 1.4826 median(|d - median(d)|), outliers = fraction |d| > 0.05.

Predictive distributions come in three forms, each with its CDF F, quantiles, PIT = F(z_true)
and CRPS = integral of (F(x) - 1[x >= z_true])^2 dx:

* `Binned`: token probabilities of a scalar codec (aion-predict --save-pdf). Token 0 is the
  point v[0], token k >= 1 is uniform on (v[k-1], v[k]] (docs/finetune.md, "Point estimates"),
  so the CDF is piecewise linear between the codec values and the CRPS is exact.
* `Weighted`: weighted samples (k-NN neighbours, the training rows of a quantile regression
  forest's leaves); CRPS exact (sum w|x - y| - 1/2 sum sum w w' |x - x'|).
* `Quantiles`: predicted quantiles at fixed levels (gradient boosting with the quantile loss);
  the quantile function is linear between the levels and flat beyond them, and the CRPS is
  2 * integral of the pinball loss over the levels on a grid of 200 (an approximation).
"""

import numpy as np

OUTLIER = 0.05
LEVELS_68 = (0.16, 0.84)
LEVELS_95 = (0.025, 0.975)


def point_metrics(pred, truth):
    ok = np.isfinite(pred) & np.isfinite(truth)
    d = (pred[ok] - truth[ok]) / (1.0 + truth[ok])
    bias = float(np.median(d))
    return {
        "n": int(ok.sum()),
        "sigma_nmad": float(1.4826 * np.median(np.abs(d - bias))),
        "outliers": float(np.mean(np.abs(d) > OUTLIER)),
        "bias": bias,
    }


class Binned:
    """Piecewise-uniform densities over the codec values `values` (ascending, K), one row of
    probabilities `p` (N, K) per object."""

    def __init__(self, p, values):
        p = np.asarray(p, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)
        self.cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)  # F(v[k]), (N, K)
        self.cdf[:, -1] = 1.0

    def quantile(self, q):
        v, c = self.values, self.cdf
        k = np.argmax(c >= q, axis=1)  # first bin whose upper edge reaches q
        hi = c[np.arange(len(c)), k]
        lo = np.where(k > 0, c[np.arange(len(c)), np.maximum(k - 1, 0)], 0.0)
        a = np.where(k > 0, v[np.maximum(k - 1, 0)], v[0])
        b = v[k]
        frac = np.where(hi > lo, (q - lo) / np.maximum(hi - lo, 1e-300), 1.0)
        return a + np.clip(frac, 0.0, 1.0) * (b - a)

    def mean(self):
        v = self.values
        centres = np.concatenate([[v[0]], 0.5 * (v[1:] + v[:-1])])
        p = np.diff(np.concatenate([np.zeros((len(self.cdf), 1)), self.cdf], 1), axis=1)
        return p @ centres

    def _at(self, y):
        """F(y) for each row's y (linear inside the bin)."""
        v, c = self.values, self.cdf
        k = np.clip(np.searchsorted(v, y, side="left"), 0, len(v) - 1)  # v[k-1] < y <= v[k]
        rows = np.arange(len(c))
        lo = np.where(k > 0, c[rows, np.maximum(k - 1, 0)], 0.0)
        a = np.where(k > 0, v[np.maximum(k - 1, 0)], v[0])
        b = v[k]
        frac = np.where(b > a, (y - a) / np.where(b > a, b - a, 1.0), 1.0)
        f = lo + np.clip(frac, 0.0, 1.0) * (c[rows, k] - lo)
        return np.where(y < v[0], 0.0, np.where(y >= v[-1], 1.0, f))

    def pit(self, y):
        return self._at(np.asarray(y, dtype=np.float64))

    def crps(self, y):
        """Exact CRPS of the piecewise-linear CDF (with the point mass of token 0 at v[0])."""
        y = np.asarray(y, dtype=np.float64)[:, None]
        v, c = self.values, self.cdf
        a, b = v[:-1][None, :], v[1:][None, :]
        f0, f1 = c[:, :-1], c[:, 1:]

        def sq(u, w, fu, fw):  # integral over [u, w] of the linear function from fu to fw, squared
            return (w - u) * (fu * fu + fu * fw + fw * fw) / 3.0

        fy = f0 + (f1 - f0) * np.clip((y - a) / (b - a), 0.0, 1.0)
        below = sq(a, b, f0 - 1.0, f1 - 1.0)  # y <= a: H = 1 on the bin
        above = sq(a, b, f0, f1)  # y >= b: H = 0
        inside = sq(a, np.clip(y, a, b), f0, fy) + sq(np.clip(y, a, b), b, fy - 1.0, f1 - 1.0)
        per_bin = np.where(y <= a, below, np.where(y >= b, above, inside))
        out = per_bin.sum(1)
        # Outside the grid: below v[0] F = 0 (the truth is above: nothing); above v[-1] F = 1.
        # A truth below v[0] adds (v[0] - y) * 1 for the point mass region; above v[-1], y - v[-1].
        y = y[:, 0]
        return out + np.where(y < v[0], v[0] - y, 0.0) + np.where(y > v[-1], y - v[-1], 0.0)


class Weighted:
    """Weighted samples: `x` (N, M) values, `w` (N, M) non-negative weights (rows sum to 1)."""

    def __init__(self, x, w):
        order = np.argsort(x, axis=1)
        self.x = np.take_along_axis(np.asarray(x, dtype=np.float64), order, 1)
        w = np.take_along_axis(np.asarray(w, dtype=np.float64), order, 1)
        self.w = w / w.sum(1, keepdims=True)
        self.cum = np.cumsum(self.w, axis=1)

    def quantile(self, q):
        k = np.argmax(self.cum >= q - 1e-12, axis=1)
        return self.x[np.arange(len(self.x)), k]

    def mean(self):
        return (self.x * self.w).sum(1)

    def pit(self, y):
        return (self.w * (self.x <= np.asarray(y)[:, None])).sum(1)

    def crps(self, y):
        y = np.asarray(y, dtype=np.float64)[:, None]
        first = (self.w * np.abs(self.x - y)).sum(1)
        before = self.cum - self.w  # weight strictly before each sorted sample
        pair = 2.0 * (self.w * self.x * (2.0 * before + self.w - 1.0)).sum(1)
        return first - 0.5 * pair


class Quantiles:
    """Quantiles `q` (N, L) at ascending `levels` (L); crossing quantiles are sorted."""

    def __init__(self, levels, q):
        self.levels = np.asarray(levels, dtype=np.float64)
        self.q = np.sort(np.asarray(q, dtype=np.float64), axis=1)

    def quantile(self, level):
        return np.array([np.interp(level, self.levels, row) for row in self.q])

    def pit(self, y):
        out = np.empty(len(self.q))
        for i, (row, yi) in enumerate(zip(self.q, y)):
            out[i] = np.interp(yi, row, self.levels, left=0.0, right=1.0)
        return out

    def crps(self, y):
        taus = (np.arange(200) + 0.5) / 200
        qs = np.stack([np.interp(taus, self.levels, row) for row in self.q])
        u = np.asarray(y, dtype=np.float64)[:, None] - qs
        pinball = np.maximum(taus * u, (taus - 1.0) * u)
        return 2.0 * pinball.mean(1)


class Gaussian:
    """Normal distributions N(mean, sigma^2) (e.g. a probe head's regression output)."""

    def __init__(self, mean, sigma):
        self.mu = np.asarray(mean, dtype=np.float64)
        self.sd = np.asarray(sigma, dtype=np.float64)

    def quantile(self, q):
        from scipy.stats import norm
        return self.mu + self.sd * norm.ppf(q)

    def mean(self):
        return self.mu

    def pit(self, y):
        from scipy.stats import norm
        return norm.cdf((np.asarray(y) - self.mu) / self.sd)

    def crps(self, y):
        from scipy.stats import norm
        w = (np.asarray(y) - self.mu) / self.sd
        return self.sd * (w * (2 * norm.cdf(w) - 1) + 2 * norm.pdf(w) - 1 / np.sqrt(np.pi))


def distribution_metrics(dist, truth, bins=10):
    """Coverage of the central 68 % and 95 % intervals, mean CRPS (and divided by 1 + z), and
    the PIT histogram (`bins` equal bins, fractions)."""
    t = np.asarray(truth, dtype=np.float64)
    lo68, hi68 = (dist.quantile(q) for q in LEVELS_68)
    lo95, hi95 = (dist.quantile(q) for q in LEVELS_95)
    crps = dist.crps(t)
    pit = dist.pit(t)
    hist = np.histogram(np.clip(pit, 0, 1), bins=bins, range=(0, 1))[0] / len(t)
    return {
        "coverage_68": float(np.mean((t >= lo68) & (t <= hi68))),
        "coverage_95": float(np.mean((t >= lo95) & (t <= hi95))),
        "crps": float(np.mean(crps)),
        "crps_norm": float(np.mean(crps / (1.0 + t))),
        "width_68": float(np.median((hi68 - lo68) / 2.0 / (1.0 + t))),
        "pit_hist": [round(float(x), 4) for x in hist],
    }


def _self_test():
    """Checks against closed forms (run: python validation/photoz_metrics.py)."""
    rng = np.random.default_rng(0)
    # A uniform distribution on [0, 1] in 100 bins: CRPS(y) = y^3/3 + (1-y)^3/3... for U(0,1):
    # integral_0^y x^2 dx + integral_y^1 (x-1)^2 dx = y^3/3 + (1-y)^3/3.
    v = np.linspace(0, 1, 101)
    p = np.concatenate([[0.0], np.full(100, 0.01)])[None, :].repeat(3, 0)
    y = np.array([0.2, 0.5, 0.9])
    b = Binned(p, v)
    assert np.allclose(b.crps(y), y**3 / 3 + (1 - y) ** 3 / 3, atol=1e-12), b.crps(y)
    assert np.allclose(b.quantile(0.16), 0.16) and np.allclose(b.pit(y), y)
    assert np.allclose(b.mean(), 0.5)
    # Weighted samples: the closed form against the pairwise double sum.
    x, w = rng.normal(size=(4, 7)), rng.random((4, 7))
    yy = rng.normal(size=4)
    ws = Weighted(x, w)
    wn = w / w.sum(1, keepdims=True)
    direct = (wn * np.abs(x - yy[:, None])).sum(1) - 0.5 * np.einsum(
        "ni,nj,nij->n", wn, wn, np.abs(x[:, :, None] - x[:, None, :]))
    assert np.allclose(ws.crps(yy), direct, atol=1e-12)
    # Quantiles of N(0, 1) on a fine grid: CRPS(0) = (sqrt(2) - 1) / sqrt(pi) = 0.2337.
    from scipy.stats import norm
    lv = np.linspace(0.0005, 0.9995, 2000)
    qd = Quantiles(lv, norm.ppf(lv)[None, :])
    assert abs(qd.crps(np.array([0.0]))[0] - (np.sqrt(2) - 1) / np.sqrt(np.pi)) < 2e-3
    assert abs(Gaussian([0.0], [1.0]).crps(np.array([0.0]))[0] - (np.sqrt(2) - 1) / np.sqrt(np.pi)) < 1e-12
    print("photoz_metrics: self-test passed")


if __name__ == "__main__":
    _self_test()
