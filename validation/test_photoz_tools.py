"""Tests of the photo-z validation tools on synthetic problems with known answers: the local
linear regression baseline (photoz_baselines.py, `llr`) and the photometric-noise floor
(photoz_noise_floor.py). Cheap (seconds); scripts/test.sh runs it.

    validation/.venv/bin/python validation/test_photoz_tools.py
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import photoz_baselines as pb  # noqa: E402
import photoz_noise_floor as nf  # noqa: E402
from photoz_metrics import distribution_metrics  # noqa: E402


def smooth(x):
    """A curved redshift-like function of three features and its gradient."""
    z = 0.1 + 0.05 * x[:, 0] + 0.02 * x[:, 1] ** 2 - 0.03 * np.sin(x[:, 2])
    g = np.stack([np.full(len(x), 0.05), 0.04 * x[:, 1], -0.03 * np.cos(x[:, 2])], 1)
    return z, g


def test_local_linear_recovers_the_function_and_its_gradient() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 3))
    z, _ = smooth(x)
    q = rng.normal(size=(200, 3)) * 0.8
    zq, gq = smooth(q)
    y = z + rng.normal(scale=0.002, size=len(z))
    y[rng.choice(len(y), 400, replace=False)] += 0.5  # 2 % gross outliers: clipped at 3 sigma
    pred, grad, res, keep = pb.local_linear(x, y, q, 100)
    assert np.median(np.abs(pred - zq)) < 0.002, np.median(np.abs(pred - zq))
    assert np.median(np.abs(grad - gq)) < 0.005, np.median(np.abs(grad - gq))
    assert res.shape == keep.shape == (200, 100)
    # The outliers are dropped from the second fit: about 2 % of the neighbours.
    assert 0.005 < 1.0 - keep.mean() < 0.05, keep.mean()


def test_llr_intervals_cover_as_stated_under_gaussian_scatter() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(12000, 3))
    z, _ = smooth(x)
    sigma = 0.01 * (1.0 + 0.5 * np.abs(x[:, 0]))  # heteroscedastic, known
    y = z + rng.normal(size=len(z)) * sigma
    idx = rng.permutation(len(x))
    fit, sel, ev = idx[:10000], idx[10000:11000], idx[11000:]
    pred, dist, settings = pb.llr(x, y, (fit, fit), sel, ev)
    m = distribution_metrics(dist, y[ev])
    assert settings["k"] in (25, 50, 100, 200, 400)
    assert np.sqrt(np.mean((pred - z[ev]) ** 2)) < 0.5 * np.mean(sigma[ev])
    assert 0.62 < m["coverage_68"] < 0.74, m["coverage_68"]
    assert 0.91 < m["coverage_95"] < 0.98, m["coverage_95"]


def test_noise_sigma_matches_monte_carlo_through_a_linear_relation() -> None:
    rng = np.random.default_rng(3)
    n, draws = 50, 20000
    errs = rng.uniform(0.005, 0.2, size=(n, 5))
    grad = rng.normal(size=(n, 5)) * 0.1
    mags = rng.uniform(15.0, 20.0, size=(n, 5))
    noisy = mags[None] + rng.standard_normal((draws, n, 5)) * errs[None]
    feats = noisy @ nf.A.T  # (draws, n, 5): u-g, g-r, r-i, i-z, r
    z = np.einsum("dni,ni->dn", feats, grad)
    mc = z.std(0)
    analytic = nf.noise_sigma(grad, errs)
    assert np.allclose(analytic, mc, rtol=0.03), np.max(np.abs(analytic / mc - 1))
    # Colours sharing a band are anti-correlated: cov(u-g, g-r) = -err_g².
    cov = nf.feature_error_cov(errs)
    assert np.allclose(cov[:, 0, 1], -errs[:, 1] ** 2)
    assert np.allclose(cov[:, 4, 4], errs[:, 2] ** 2)


def test_pooled_nmad_of_equal_gaussians_is_their_sigma() -> None:
    rng = np.random.default_rng(4)
    assert abs(nf.pooled_nmad(np.full(5000, 0.01), rng) - 0.01) < 0.0005


if __name__ == "__main__":
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            fn()
            print(f"ok {name}")
