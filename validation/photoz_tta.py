"""Experiment (issue 19): average the posteriors over copies of the catalogue whose inputs are
redrawn within their errors, the way aion-finetune's noise augmentation redraws them in training
(`[data.noise]`: each input value x becomes x + N(0, 1)·err, independently per modality and row).
aion-predict has no such option; this script makes the copies and averages its outputs.

    validation/.venv/bin/python validation/photoz_tta.py --name cr-4-tta32 --draws 32 \
        out/photoz/runs/cr-cb32-s{19,20,21,22}

Per run directory and draw, `aion-predict --save-logits --no-calibration` on the copy; the
posterior is the mean over runs and draws of softmax(logits / T). Scored at T = 1 and at the T
that minimises the negative log-likelihood of the scored rows themselves (optimistic, as the
"cal." figures of photoz_explore.py). The noise map is each run's own (`finetune.json`,
config.data.noise); the copies are made once per draw and shared by the runs. One line is
appended to validation/photoz/explore.jsonl.
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import h5py
import numpy as np
from scipy.optimize import minimize_scalar

from photoz_baselines import codec_values
from photoz_metrics import Binned, distribution_metrics, point_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def noise_datasets(run):
    """{value dataset: error dataset} of a run's [data.noise] (token keys mapped to datasets)."""
    cfg = json.load(open(os.path.join(run, "finetune.json")))["config"]
    mods = json.load(open(os.path.join(run, "modalities.json")))["modalities"]
    dataset = {m["token_key"]: m["dataset"] for m in mods}
    return {dataset[k]: e for k, e in cfg["data"]["noise"].items()}


def softmax(logits, t):
    l = logits / t
    p = np.exp(l - l.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def scores(p, values, z):
    dist = Binned(p, values)
    m = point_metrics(dist.quantile(0.5), z)
    m.update(distribution_metrics(dist, z))
    return m


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--name", required=True)
    ap.add_argument("--draws", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--catalog", default=os.path.join(ROOT, "out/photoz/val.h5"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release"))
    ap.add_argument("--log", default=os.path.join(HERE, "photoz", "explore.jsonl"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    maps = [noise_datasets(r) for r in a.runs]
    if any(m != maps[0] for m in maps):
        raise SystemExit("the runs' noise maps differ; one set of copies cannot serve them all")
    values = codec_values(a.runs[0])
    with h5py.File(a.catalog) as f:
        z = f["Z"][:].astype(np.float64)
    rng = np.random.default_rng(a.seed)
    t0 = time.time()
    logits = []  # (draws + 1, runs, rows, vocab); draw 0 = the catalogue as it is
    with tempfile.TemporaryDirectory() as tmp:
        for d in range(a.draws + 1):
            cat = a.catalog
            if d > 0:
                cat = os.path.join(tmp, "copy.h5")
                shutil.copy(a.catalog, cat)
                with h5py.File(cat, "r+") as f:
                    for ds, err in maps[0].items():
                        f[ds][...] = f[ds][:] + rng.standard_normal(len(z)) * f[err][:]
            per_run = []
            for run in a.runs:
                out = os.path.join(tmp, "pred.h5")
                subprocess.run([f"{a.bin}/aion-predict", "--model", run, "--catalog", cat, "--output", out,
                                "--target", "tok_z", "--save-logits", "--no-calibration", "--overwrite",
                                "--threads", str(a.threads), "--log-level", "warn"], check=True, cwd=ROOT)
                with h5py.File(out) as f:
                    per_run.append(f["logits/tok_z"][:, 0, : len(values)].astype(np.float64))
            logits.append(per_run)
    logits = np.asarray(logits)
    seconds = time.time() - t0

    def mixture(t, draws):
        sel = logits[1:] if draws else logits[:1]
        return softmax(sel, t).mean((0, 1))

    def nll(t, draws):
        p = mixture(t, draws)
        idx = np.clip(np.searchsorted(values, z), 0, len(values) - 1)  # the bin (v[k-1], v[k]] holding z
        return -np.mean(np.log(p[np.arange(len(z)), idx] + 1e-12))

    rec = {"name": a.name, "tta": [os.path.relpath(r, ROOT) for r in a.runs], "draws": a.draws, "seed": a.seed,
           "catalog": os.path.relpath(a.catalog, ROOT), "seconds": round(seconds, 1),
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "val": {}}
    for draws in (False, True):
        key = "tta" if draws else "clean"
        t = minimize_scalar(lambda t: nll(t, draws), bounds=(0.3, 3.0), method="bounded").x
        rec["val"][key] = {"raw": scores(mixture(1.0, draws), values, z),
                           "fitted_t": {"temperature": float(t), **scores(mixture(t, draws), values, z)}}
        for name, m in rec["val"][key].items():
            tt = m.get("temperature", 1.0)
            print(f"{a.name} {key:5s} {name:9s} T={tt:.3f}: σ_NMAD {m['sigma_nmad']:.4f} out {100 * m['outliers']:.1f} % "
                  f"bias {m['bias']:+.4f} cov68 {100 * m['coverage_68']:.1f} % cov95 {100 * m['coverage_95']:.1f} % "
                  f"CRPS/(1+z) {m['crps_norm']:.5f}")
    with open(a.log, "a") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
