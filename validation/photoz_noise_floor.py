"""How much redshift scatter the photometric errors alone put into any photo-z from these
magnitudes (issue 19: is σ_NMAD ≤ 0.0125 within reach of photometry on this sample?).

    validation/.venv/bin/python validation/photoz_noise_floor.py \
        [--split validation/photoz/split-explore.json] [--json OUT]

Every estimator of z from the observed magnitudes m_obs = m_true + e (e ~ N(0, magerr²), the
catalogue's errors) inherits, to first order, the error grad(z)·e of the colour-redshift relation
at that galaxy. Two estimates of its size on the validation rows (fitted on the training rows
only; the test rows are never read):

* analytic: the gradient of a local linear regression (validation/photoz_baselines.py, `llr`,
  features u-g, g-r, r-i, i-z, r) at each galaxy, with the covariance of those features from the
  five band errors (colours sharing a band are anti-correlated): σ_i² = gᵀ Σ_i g. Gradients fitted
  on noisy neighbours are shrunk towards zero (regression dilution), so this errs low;
* Monte Carlo: the random forest of the baselines (colours + r, 300 trees, leaf 1), each galaxy's
  magnitudes redrawn `--draws` times with its errors; the spread of the forest's predictions.

Each gives σ_i/(1+z_i) per galaxy; the pooled figure is the σ_NMAD of one Gaussian draw per
galaxy per repetition (what the noise alone would make of a perfect estimator's residuals). The
error budget that is left for everything else (intrinsic colour-redshift degeneracy, a finite
training set) under a total σ_NMAD target T is sqrt(T² − floor²), treating the parts as
independent and Gaussian.
"""

import argparse
import json
import os

import h5py
import numpy as np
from sklearn.ensemble import RandomForestRegressor

from photoz_baselines import BANDS, local_linear, sigma_nmad

HERE = os.path.dirname(os.path.abspath(__file__))

# Features (u-g, g-r, r-i, i-z, r) as rows of a matrix on the magnitudes (u, g, r, i, z).
A = np.array([[1, -1, 0, 0, 0], [0, 1, -1, 0, 0], [0, 0, 1, -1, 0], [0, 0, 0, 1, -1], [0, 0, 1, 0, 0]], dtype=np.float64)


def feature_error_cov(errs):
    """Covariance (n, 5, 5) of the features (u-g, g-r, r-i, i-z, r) from independent band errors
    `errs` (n, 5): A diag(err²) Aᵀ per galaxy (colours sharing a band are anti-correlated)."""
    return np.einsum("ia,na,ja->nij", A, np.asarray(errs, dtype=np.float64) ** 2, A)


def noise_sigma(grad, errs):
    """First-order redshift error from the band errors, per galaxy: sqrt(gᵀ Σ g), with `grad` the
    gradient of z along the raw features (n, 5)."""
    return np.sqrt(np.einsum("ni,nij,nj->n", grad, feature_error_cov(errs), grad))


def pooled_nmad(sigma, rng, reps=200):
    """σ_NMAD of Gaussian residuals with per-galaxy widths `sigma` (already divided by 1 + z)."""
    d = rng.standard_normal((reps, len(sigma))) * sigma[None, :]
    return float(np.median([sigma_nmad(r, np.zeros_like(r)) for r in d]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default=os.path.join(HERE, "photoz", "split-explore.json"))
    ap.add_argument("--catalog", default=os.path.join(HERE, "..", "data", "sdss_mgs", "sdss_mgs_train.h5"))
    ap.add_argument("--k", type=int, default=100, help="neighbours of the local linear regression")
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--target", type=float, default=0.0125)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()

    split = json.load(open(args.split))
    tr, va = (np.asarray(split[k], dtype=int) for k in ("train", "val"))
    with h5py.File(args.catalog) as f:
        z = f["Z"][:].astype(np.float64)
        mags = np.stack([f[f"mag_{b}"][:] for b in BANDS], 1).astype(np.float64)
        errs = np.stack([f[f"magerr_{b}"][:] for b in BANDS], 1).astype(np.float64)
    x = mags @ A.T
    mu, sd = x[tr].mean(0), x[tr].std(0)
    xs = (x - mu) / sd
    rng = np.random.default_rng(args.seed)
    out = {"split": os.path.relpath(args.split, os.path.dirname(HERE)), "validation_rows": int(len(va)), "target": args.target}

    # Analytic: local gradients and the features' error covariance.
    pred, grad, _, _ = local_linear(xs[tr], z[tr], xs[va], args.k)
    g = grad / sd[None, :]  # dz per unit of each raw feature
    s_lin = noise_sigma(g, errs[va]) / (1.0 + z[va])
    out["llr"] = {"k": args.k, "sigma_nmad_of_llr": sigma_nmad(pred, z[va])}

    # Monte Carlo through the forest.
    rf = RandomForestRegressor(300, min_samples_leaf=1, max_features=1.0, n_jobs=2, random_state=args.seed)
    rf.fit(xs[tr], z[tr])
    noisy = mags[va][None] + rng.standard_normal((args.draws,) + mags[va].shape) * errs[va][None]
    p = rf.predict(((noisy.reshape(-1, 5) @ A.T) - mu) / sd).reshape(args.draws, len(va))
    s_rf = p.std(0) / (1.0 + z[va])
    out["rf"] = {"sigma_nmad_of_rf": sigma_nmad(rf.predict(xs[va]), z[va])}

    print(f"photometric-noise floor on {len(va)} validation galaxies of {out['split']} (fitted on {len(tr)} training rows)\n")
    print("| estimate | median σ_i/(1+z) | 16–84 % of σ_i/(1+z) | pooled σ_NMAD (the floor) | left for the rest under "
          f"{args.target} |")
    print("|---|---|---|---|---|")
    for name, s in (("local linear gradients (analytic)", s_lin), ("random forest, Monte Carlo", s_rf)):
        floor = pooled_nmad(s, rng)
        rest = float(np.sqrt(max(args.target**2 - floor**2, 0.0)))
        lo, hi = np.percentile(s, [16, 84])
        key = "llr" if name.startswith("local") else "rf"
        out[key].update({"median": float(np.median(s)), "p16": float(lo), "p84": float(hi), "floor": floor, "rest": rest})
        print(f"| {name} | {np.median(s):.4f} | {lo:.4f}–{hi:.4f} | {floor:.4f} | {rest:.4f} |")
    # Which band errors matter: the analytic variance with only one band's error switched on.
    share = {}
    total = (noise_sigma(g, errs[va]) ** 2).sum()
    for b, band in enumerate(BANDS):
        e1 = np.zeros_like(errs[va])
        e1[:, b] = errs[va][:, b]
        share[band] = float((noise_sigma(g, e1) ** 2).sum() / total)
    out["llr"]["variance_share_by_band"] = share
    print("\nshare of the analytic noise variance by band: " + ", ".join(f"{b} {100 * v:.0f} %" for b, v in share.items()))
    print(f"σ_NMAD of the estimators themselves on these rows: llr {out['llr']['sigma_nmad_of_llr']:.4f}, "
          f"random forest {out['rf']['sigma_nmad_of_rf']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
