"""Classical photometric-redshift baselines on the split of an aion-finetune run, and the table
of ours vs them, with the same rows, features and metrics for everyone.

    validation/.venv/bin/python validation/photoz_baselines.py \
        --run data/models/sdss-photoz-tiny --eval test \
        --ours "AION tiny (ours)=out/photoz/test.h5" [--json OUT] [--methods knn,rf,gbm]

The split is the run's `split.json` (or `--split FILE`): row indices of the train / validation /
test parts, written by aion-finetune. Two protocols:

* `--eval test` (the table of docs/finetune.md): hyper-parameters are chosen on the validation
  rows (models fitted on train), then the baselines are refitted on train + validation (more
  data than our model trains on: the comparison is conservative) and evaluated on the test rows.
* `--eval val` (exploration): fitted on train, hyper-parameters chosen on and evaluated on the
  validation rows (optimistic for the baselines); the test rows are never read.

Feature sets (`--features`, standardised on the fitted rows):
* `cr`: the colours u-g, g-r, r-i, i-z and the r magnitude;
* `all`: the five magnitudes, the four colours and the five magnitude errors.

Methods, each with a predictive distribution for coverage, PIT and CRPS (validation/photoz_metrics.py):
* k-nearest neighbours (`KNeighborsRegressor`, distance-weighted, k chosen on validation σ_NMAD);
  distribution = the k neighbours' redshifts with their weights;
* random forest (`RandomForestRegressor`, 300 trees, leaf size and features per split chosen on
  validation); point = the forest's mean, distribution = quantile regression forest weights
  (Meinshausen 2006: each fitted row weighted by 1 / leaf size in every tree sharing its leaf);
* gradient boosting (`HistGradientBoostingRegressor`, learning rate 0.05, leaf count and leaf
  size chosen on validation, number of trees chosen on validation σ_NMAD); distribution = 15
  models with the quantile loss (trees per level chosen on validation pinball loss);
* local linear regression (`llr`, the "k-NN local regression" of the SDSS photo-z tables, Beck et
  al. 2016): a linear fit of z on the features over the k nearest fitted rows of each galaxy,
  refitted once without the neighbours whose residual exceeds 3 σ, k chosen on validation;
  distribution = the prediction plus the kept neighbours' residuals.

Ours: aion-predict outputs over the part's catalogue (validation/split_catalog.py) written with
`--save-pdf`, `--ours NAME=FILE.h5` (repeatable); rows are matched by `object_id` (= the row of
the bundled catalogue); point estimate `--point median` (as aion-predict's summary) or `mean`;
the distribution is the piecewise-uniform posterior over the codec values (the bin edges
aion-predict writes beside the PDF, `pdf/<key>_bin_edges`).
"""

import argparse
import json
import os
import time

import h5py
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.neighbors import KNeighborsRegressor, NearestNeighbors

from photoz_metrics import Binned, Quantiles, Weighted, distribution_metrics, point_metrics

BANDS = "ugriz"
QUANTILE_LEVELS = [0.025, 0.05, 0.1, 0.16, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.84, 0.9, 0.95, 0.975]


def features(f, which):
    mags = np.stack([f[f"mag_{b}"][:] for b in BANDS], 1).astype(np.float64)
    cols = mags[:, :-1] - mags[:, 1:]
    if which == "cr":
        return np.concatenate([cols, mags[:, 2:3]], 1)
    errs = np.stack([f[f"magerr_{b}"][:] for b in BANDS], 1).astype(np.float64)
    return np.concatenate([mags, cols, errs], 1)


def sigma_nmad(p, z):
    return point_metrics(p, z)["sigma_nmad"]


def knn(x, z, fit, sel, ev):
    """k chosen on `sel` (models fitted on `fit`); returns point, distribution and settings for `ev`
    from a model fitted on `fit_final` (see `run_method`)."""
    best = min(
        (sigma_nmad(KNeighborsRegressor(k, weights="distance").fit(x[fit[0]], z[fit[0]]).predict(x[sel]), z[sel]), k)
        for k in [3, 5, 7, 10, 15, 20, 30, 50]
    )
    k = best[1]
    m = KNeighborsRegressor(k, weights="distance").fit(x[fit[1]], z[fit[1]])
    dist, idx = m.kneighbors(x[ev])
    w = 1.0 / np.maximum(dist, 1e-12)
    return m.predict(x[ev]), Weighted(z[fit[1]][idx], w), {"k": k}


def qrf_weights(rf, x_fit, x_ev):
    """Quantile-regression-forest weights (n_ev, n_fit)."""
    lf, le = rf.apply(x_fit), rf.apply(x_ev)
    w = np.zeros((len(x_ev), len(x_fit)))
    for t in range(lf.shape[1]):
        counts = np.bincount(lf[:, t])
        same = le[:, t][:, None] == lf[:, t][None, :]
        w += same / counts[lf[:, t]][None, :]
    return w / lf.shape[1]


def forest(x, z, fit, sel, ev, seed):
    grid = [(leaf, mf) for leaf in [1, 3, 5, 10] for mf in [0.5, 1.0]]
    scores = []
    for leaf, mf in grid:
        rf = RandomForestRegressor(300, min_samples_leaf=leaf, max_features=mf, n_jobs=2, random_state=seed)
        scores.append(sigma_nmad(rf.fit(x[fit[0]], z[fit[0]]).predict(x[sel]), z[sel]))
    leaf, mf = grid[int(np.argmin(scores))]
    rf = RandomForestRegressor(300, min_samples_leaf=leaf, max_features=mf, n_jobs=2, random_state=seed)
    rf.fit(x[fit[1]], z[fit[1]])
    w = qrf_weights(rf, x[fit[1]], x[ev])
    zz = np.broadcast_to(z[fit[1]], w.shape)
    return rf.predict(x[ev]), Weighted(zz, w), {"trees": 300, "min_samples_leaf": leaf, "max_features": mf}


def local_linear(x_fit, z_fit, x_ev, k, nn=None):
    """Local linear regression: per row of `x_ev`, least squares of z on [1, x] over its k nearest
    rows of `x_fit`, refitted once without the residuals beyond 3 sigma. Returns the predictions,
    the gradients (n_ev, d), the kept residuals (n_ev, k) and their mask."""
    if nn is None:
        nn = NearestNeighbors(n_neighbors=k).fit(x_fit)
    _, idx = nn.kneighbors(x_ev, n_neighbors=k)
    a = np.concatenate([np.ones(idx.shape + (1,)), x_fit[idx]], 2)  # (n, k, d+1)
    y = z_fit[idx]
    keep = np.ones(idx.shape, dtype=bool)
    ridge = 1e-6 * np.eye(a.shape[2])
    for _ in range(2):
        w = keep[:, :, None] * a
        coef = np.linalg.solve(np.einsum("nki,nkj->nij", w, a) + ridge, np.einsum("nki,nk->ni", w, y)[:, :, None])[:, :, 0]
        res = y - np.einsum("nkj,nj->nk", a, coef)
        sd = np.sqrt((keep * res**2).sum(1) / np.maximum(keep.sum(1) - a.shape[2], 1))
        keep = np.abs(res) <= 3.0 * sd[:, None]
    pred = coef[:, 0] + np.einsum("nj,nj->n", x_ev, coef[:, 1:])
    return pred, coef[:, 1:], res, keep


def llr(x, z, fit, sel, ev):
    grid = [k for k in [25, 50, 100, 200, 400] if x.shape[1] + 1 < k <= len(fit[0])]
    if not grid:
        raise SystemExit(f"local linear regression needs more than {x.shape[1] + 1} fitted rows")
    nn = NearestNeighbors(n_neighbors=max(grid)).fit(x[fit[0]])
    best = min((sigma_nmad(local_linear(x[fit[0]], z[fit[0]], x[sel], k, nn)[0], z[sel]), k) for k in grid)
    k = best[1]
    p, _, res, keep = local_linear(x[fit[1]], z[fit[1]], x[ev], k)
    return p, Weighted(p[:, None] + res, keep.astype(np.float64)), {"k": k}


def pinball(q, z, tau):
    u = z - q
    return float(np.mean(np.maximum(tau * u, (tau - 1.0) * u)))


def gboost(x, z, fit, sel, ev, seed):
    base = dict(learning_rate=0.05, early_stopping=False, random_state=seed)
    best = None
    for leaves in [15, 31]:
        for leaf_size in [10, 20, 40]:
            g = HistGradientBoostingRegressor(max_iter=2000, max_leaf_nodes=leaves, min_samples_leaf=leaf_size, **base)
            g.fit(x[fit[0]], z[fit[0]])
            s = [sigma_nmad(p, z[sel]) for p in g.staged_predict(x[sel])]
            i = int(np.argmin(s))
            if best is None or s[i] < best[0]:
                best = (s[i], leaves, leaf_size, i + 1)
    _, leaves, leaf_size, n = best
    kw = dict(max_leaf_nodes=leaves, min_samples_leaf=leaf_size, **base)
    point = HistGradientBoostingRegressor(max_iter=n, **kw).fit(x[fit[1]], z[fit[1]]).predict(x[ev])
    qs, iters = [], []
    for tau in QUANTILE_LEVELS:
        g = HistGradientBoostingRegressor(loss="quantile", quantile=tau, max_iter=1000, **kw)
        g.fit(x[fit[0]], z[fit[0]])
        s = [pinball(p, z[sel], tau) for p in g.staged_predict(x[sel])]
        m = int(np.argmin(s)) + 1
        iters.append(m)
        g = HistGradientBoostingRegressor(loss="quantile", quantile=tau, max_iter=m, **kw)
        qs.append(g.fit(x[fit[1]], z[fit[1]]).predict(x[ev]))
    settings = {"trees": n, "max_leaf_nodes": leaves, "min_samples_leaf": leaf_size,
                "learning_rate": 0.05, "quantile_trees": f"{min(iters)}-{max(iters)}"}
    return point, Quantiles(QUANTILE_LEVELS, np.stack(qs, 1)), settings


def codec_values(model_dir, codec_dir="Z"):
    from safetensors.numpy import load_file
    t = load_file(os.path.join(model_dir, "codecs", codec_dir, "model.safetensors"))
    for k in ("quantizer.buckets", "quantizer._index_to_val"):
        if k in t:
            return t[k].astype(np.float64)
    raise SystemExit(f"{model_dir}: no codec values in codecs/{codec_dir}")


def ours(path, rows, ids, key, point):
    """Our predictions for the catalogue rows `rows` (matched by object id)."""
    with h5py.File(path) as f:
        oid = f["object_id"][:]
        pdf = f[f"pdf/{key}"][:, 0, :].astype(np.float64)
        pt = f[f"pred/{key}/{point}"][:].astype(np.float64)
        calib = f[f"pred/{key}/{point}"].attrs.get("calibration")
        # The bin edges aion-predict writes with --save-pdf: v[0], then the codec values.
        values = f[f"pdf/{key}_bin_edges"][0, 1:].astype(np.float64)
    pos = {int(o): i for i, o in enumerate(oid)}
    try:
        take = np.array([pos[int(ids[r])] for r in rows])
    except KeyError as e:
        raise SystemExit(f"{path}: object {e} of the evaluated part is missing")
    info = {"source": path, "point": point}
    if calib is not None:
        info["calibration"] = calib.decode() if isinstance(calib, bytes) else str(calib)
    return pt[take], Binned(pdf[take], values), info


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="aion-finetune output directory (its split.json)")
    ap.add_argument("--split", help="a split file instead of --run")
    ap.add_argument("--catalog", default=os.path.join(here, "..", "data", "sdss_mgs", "sdss_mgs_train.h5"))
    ap.add_argument("--eval", choices=["val", "test"], default="test")
    ap.add_argument("--features", default="cr,all")
    ap.add_argument("--methods", default="knn,rf,gbm")
    ap.add_argument("--ours", action="append", default=[], metavar="NAME=FILE.h5")
    ap.add_argument("--point", choices=["median", "mean"], default="median")
    ap.add_argument("--key", default="tok_z")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the table as JSON here")
    args = ap.parse_args()

    split_path = args.split or os.path.join(args.run, "split.json")
    split = json.load(open(split_path))
    tr, va, te = (np.asarray(split[k], dtype=int) for k in ("train", "val", "test"))
    if args.eval == "test":
        fit, sel, ev = (tr, np.concatenate([tr, va])), va, te
    else:
        fit, sel, ev = (tr, tr), va, va
    with h5py.File(args.catalog) as f:
        z = f["Z"][:].astype(np.float64)
        ids = f["object_id"][:] if "object_id" in f else np.arange(len(z))
        feats = {w: features(f, w) for w in args.features.split(",")}

    rows = []
    for spec in args.ours:
        name, path = spec.split("=", 1)
        t = time.time()
        p, dist, info = ours(path, ev, ids, args.key, args.point)
        rows.append((name, p, dist, info, None))
    methods = {"knn": ("k-NN", knn), "rf": ("random forest", forest), "gbm": ("gradient boosting", gboost),
               "llr": ("local linear regression", llr)}
    for which, x in feats.items():
        mu, sd = x[fit[1]].mean(0), x[fit[1]].std(0)
        x = (x - mu) / sd
        for m in filter(None, args.methods.split(",")):
            label, fn = methods[m]
            t, c = time.time(), time.process_time()
            extra = () if m in ("knn", "llr") else (args.seed,)
            p, dist, hp = fn(x, z, fit, sel, ev, *extra)
            rows.append((f"{label} ({which})", p, dist, hp, (time.time() - t, time.process_time() - c)))

    truth = z[ev]
    print(f"SDSS MGS photo-z, {args.eval} part of {split_path}: {len(ev)} galaxies "
          f"(train {len(tr)}, validation {len(va)}, test {len(te)})\n")
    print("| method | σ_NMAD | outliers | bias | 68 % cov. | 95 % cov. | CRPS/(1+z) | notes |")
    print("|---|---|---|---|---|---|---|---|")
    table = []
    for name, p, dist, hp, secs in rows:
        m = {**point_metrics(p, truth), **distribution_metrics(dist, truth)}
        note = ", ".join(f"{k}={v}" for k, v in hp.items())
        if secs:
            note += f", {secs[0]:.0f} s"
        print(f"| {name} | {m['sigma_nmad']:.4f} | {100 * m['outliers']:.1f} % | {m['bias']:+.4f} | "
              f"{100 * m['coverage_68']:.1f} % | {100 * m['coverage_95']:.1f} % | {m['crps_norm']:.4f} | {note} |")
        table.append({"method": name, **m, "settings": hp, "seconds": secs and secs[0], "cpu_seconds": secs and secs[1]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"eval": args.eval, "split": split_path, "rows": table}, f, indent=2)


if __name__ == "__main__":
    main()
