"""Classical photometric-redshift baselines on the split of an aion-finetune run, and the table
of ours vs them.

    validation/.venv/bin/python validation/photoz_baselines.py \
        --run data/models/sdss-photoz-tiny [--catalog data/sdss_mgs/sdss_mgs_train.h5] [--json OUT]

Reads the run's `split.json` (row indices of the train / validation / test parts, written by
aion-finetune) so that every method sees exactly the same rows; features are the five SDSS
magnitudes and the four colours (standardised on the training rows). Hyper-parameters are chosen
on the validation rows, then the baselines are refitted on train + validation (more data than
our model trains on: the comparison is conservative) and evaluated on the test rows:

* k-nearest neighbours (scikit-learn `KNeighborsRegressor`, distance-weighted, k in 5..50);
* gradient boosting (scikit-learn `GradientBoostingRegressor`, depth 4, learning rate 0.05,
  subsample 0.8, number of trees chosen on validation up to 1500).

Our numbers are read from the run's `eval/test_tok_z.csv` (posterior mean of the redshift token
given the photometry), or from an aion-predict output with `--ours-h5 FILE --ours-dataset NAME`.
Metrics (as in lib/aion-app/src/metrics.rs): with d = (z_pred - z_true) / (1 + z_true),
bias = median(d), sigma_NMAD = 1.4826 median(|d - median(d)|), outliers = fraction |d| > 0.05.
"""

import argparse
import json
import os
import time

import h5py
import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.neighbors import KNeighborsRegressor

BANDS = "ugriz"
COLOURS = ["ug", "gr", "ri", "iz"]


def metrics(pred, truth):
    ok = np.isfinite(pred) & np.isfinite(truth)
    d = (pred[ok] - truth[ok]) / (1.0 + truth[ok])
    bias = float(np.median(d))
    return {
        "n": int(ok.sum()),
        "sigma_nmad": float(1.4826 * np.median(np.abs(d - bias))),
        "outliers": float(np.mean(np.abs(d) > 0.05)),
        "bias": bias,
    }


def features(f):
    mags = np.stack([f[f"mag_{b}"][:] for b in BANDS], 1).astype(np.float64)
    cols = mags[:, :-1] - mags[:, 1:]
    return np.concatenate([mags, cols], 1)


def knn(x, z, tr, va, te):
    best = None
    for k in [5, 10, 15, 20, 30, 50]:
        p = KNeighborsRegressor(k, weights="distance").fit(x[tr], z[tr]).predict(x[va])
        s = metrics(p, z[va])["sigma_nmad"]
        if best is None or s < best[0]:
            best = (s, k)
    k = best[1]
    fit = np.concatenate([tr, va])
    return KNeighborsRegressor(k, weights="distance").fit(x[fit], z[fit]).predict(x[te]), {"k": k}


def gboost(x, z, tr, va, te, seed):
    kw = dict(max_depth=4, learning_rate=0.05, subsample=0.8, random_state=seed)
    g = GradientBoostingRegressor(n_estimators=1500, **kw).fit(x[tr], z[tr])
    scores = [metrics(p, z[va])["sigma_nmad"] for p in g.staged_predict(x[va])]
    n = int(np.argmin(scores)) + 1
    fit = np.concatenate([tr, va])
    g = GradientBoostingRegressor(n_estimators=n, **kw).fit(x[fit], z[fit])
    return g.predict(x[te]), {"n_estimators": n, **{k: v for k, v in kw.items() if k != "random_state"}}


def ours(run, te, z, args):
    if args.ours_h5:
        with h5py.File(args.ours_h5) as f:
            p = f[args.ours_dataset][:].astype(np.float64).reshape(len(z), -1)[:, 0]
        return p[te], {"source": f"{args.ours_h5}:{args.ours_dataset}"}
    path = os.path.join(run, "eval", "test_tok_z.csv")
    a = np.genfromtxt(path, delimiter=",", names=True)
    if not np.array_equal(a["row"].astype(int), te):
        raise SystemExit(f"{path}: rows differ from the split's test rows")
    return a["mean"], {"source": path}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="aion-finetune output directory (split.json, eval/)")
    ap.add_argument("--catalog", default=os.path.join(here, "..", "data", "sdss_mgs", "sdss_mgs_train.h5"))
    ap.add_argument("--ours-h5", help="aion-predict output holding our redshifts for every catalogue row")
    ap.add_argument("--ours-dataset", default="z_mean")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the table as JSON here")
    args = ap.parse_args()

    split = json.load(open(os.path.join(args.run, "split.json")))
    tr, va, te = (np.asarray(split[k], dtype=int) for k in ("train", "val", "test"))
    with h5py.File(args.catalog) as f:
        x, z = features(f), f["Z"][:].astype(np.float64)
    mu, sd = x[tr].mean(0), x[tr].std(0)
    x = (x - mu) / sd

    rows = []
    t = time.time()
    p, hp = knn(x, z, tr, va, te)
    rows.append(("k-nearest neighbours", metrics(p, z[te]), hp, time.time() - t))
    t = time.time()
    p, hp = gboost(x, z, tr, va, te, args.seed)
    rows.append(("gradient boosting", metrics(p, z[te]), hp, time.time() - t))
    try:
        p, src = ours(args.run, te, z, args)
        rows.insert(0, ("AION tiny (ours)", metrics(p, z[te]), src, None))
    except (OSError, KeyError, ValueError) as e:
        print(f"(no predictions of ours: {e})")

    print(f"SDSS MGS photo-z, test split of {args.run}: {len(te)} galaxies "
          f"(train {len(tr)}, validation {len(va)})\n")
    print("| method | sigma_NMAD | outliers (>0.05) | bias | notes |")
    print("|---|---|---|---|---|")
    for name, m, hp, secs in rows:
        note = ", ".join(f"{k}={v}" for k, v in hp.items()) + (f", {secs:.1f} s" if secs else "")
        print(f"| {name} | {m['sigma_nmad']:.4f} | {100 * m['outliers']:.1f} % | {m['bias']:+.4f} | {note} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"method": n, **m, "settings": hp} for n, m, hp, _ in rows], f, indent=2)


if __name__ == "__main__":
    main()
