"""Temperature calibration of an existing photo-z model, after the fact: the step aion-finetune
runs at export (lib/aion-app/src/calibration.rs), redone in Python on a model that has no
calibration.json (e.g. the bundled one, trained before the step existed), fitted on the
validation part and measured on the test part. It also cross-checks the Rust fit: for a model
that has a calibration.json fitted on the same validation rows, the two temperatures agree.

    validation/.venv/bin/python validation/photoz_posthoc.py --model data/models/sdss-photoz-tiny \
        --val out/photoz/val.h5 --test out/photoz/test.h5 [--json OUT]

`--val` / `--test`: catalogues of the model's split parts (validation/split_catalog.py). Each is
run through aion-predict (--save-logits --no-calibration, niced); T minimises the mean negative
log-likelihood of the true token over the ids with a codec value (as the Rust fit), by a bounded
scalar search over ln T in [ln 0.05, ln 50]. Metrics: validation/photoz_metrics.py, point
estimate the posterior median (as aion-predict's summary).
"""

import argparse
import json
import os
import subprocess

import h5py
import numpy as np
from scipy.optimize import minimize_scalar

from photoz_baselines import codec_values
from photoz_metrics import Binned, distribution_metrics, point_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def logits_of(model, catalog, out, threads):
    subprocess.run(["nice", "-n", "19", os.path.join(ROOT, "target/release/aion-predict"), "--model", model,
                    "--catalog", catalog, "--output", out, "--target", "tok_z", "--save-logits",
                    "--no-calibration", "--overwrite", "--threads", str(threads), "--log-level", "warn"],
                   check=True, cwd=ROOT)
    with h5py.File(out) as f:
        logits = f["logits/tok_z"][:, 0, :].astype(np.float64)
    with h5py.File(catalog) as f:
        z = f["Z"][:].astype(np.float64)
    return logits, z


def nll(logits, truth_tok, t):
    l = logits / t
    m = l.max(1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(l - m).sum(1))
    return float(np.mean(lse - l[np.arange(len(l)), truth_tok]))


def fit_temperature(logits, z, values):
    k = len(values)
    tok = np.minimum(np.searchsorted(values, z, side="left"), k - 1)  # first value >= z
    res = minimize_scalar(lambda u: nll(logits[:, :k], tok, np.exp(u)),
                          bounds=(np.log(0.05), np.log(50.0)), method="bounded", options={"xatol": 1e-5})
    return float(np.exp(res.x))


def metrics(logits, z, values, t):
    l = logits[:, : len(values)] / t
    dist = Binned(np.exp(l - l.max(1, keepdims=True)), values)
    return {"temperature": t, **point_metrics(dist.quantile(0.5), z), **distribution_metrics(dist, z)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--val", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--work", default=os.path.join(ROOT, "out/photoz/posthoc"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    values = codec_values(a.model)
    lv, zv = logits_of(a.model, a.val, os.path.join(a.work, "val.h5"), a.threads)
    lt, zt = logits_of(a.model, a.test, os.path.join(a.work, "test.h5"), a.threads)
    t = fit_temperature(lv, zv, values)
    rec = {"model": a.model, "fitted_on": f"{a.val} ({len(zv)} rows)", "evaluated_on": f"{a.test} ({len(zt)} rows)",
           "temperature": t, "val": {"raw": metrics(lv, zv, values, 1.0), "calibrated": metrics(lv, zv, values, t)},
           "test": {"raw": metrics(lt, zt, values, 1.0), "calibrated": metrics(lt, zt, values, t)}}
    cal = os.path.join(a.model, "calibration.json")
    if os.path.exists(cal):
        rec["rust_temperature"] = json.load(open(cal))["targets"]["tok_z"]["temperature"]
    for part in ("val", "test"):
        for how in ("raw", "calibrated"):
            m = rec[part][how]
            print(f"{part:4s} {how:10s} T={m['temperature']:.3f}: σ_NMAD {m['sigma_nmad']:.4f}, outliers "
                  f"{100 * m['outliers']:.1f} %, bias {m['bias']:+.4f}, coverage 68/95 {100 * m['coverage_68']:.1f} / "
                  f"{100 * m['coverage_95']:.1f} %, CRPS/(1+z) {m['crps_norm']:.4f}")
    if "rust_temperature" in rec:
        print(f"aion-finetune's temperature (calibration.json): {rec['rust_temperature']:.4f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
