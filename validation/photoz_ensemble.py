"""The ensemble of several photo-z runs (e.g. one configuration trained with other seeds), through
`aion-predict --ensemble`: each target's posterior is the mean of the members' probabilities. Scored
like validation/photoz_explore.py scores one run (same metrics, validation/photoz_metrics.py), on the
validation catalogue by default; one line is appended to validation/photoz/explore.jsonl.

    validation/.venv/bin/python validation/photoz_ensemble.py --name seeds4 \
        out/photoz/runs/a out/photoz/runs/b out/photoz/runs/c out/photoz/runs/d

"raw" is the mixture of the members' uncalibrated posteriors (--no-calibration); "calibrated" the
mixture of the posteriors each calibrated by its own calibration.json (temperature fitted on the
validation rows: optimistic when scored on those rows, honest on the test rows).
"""

import argparse
import json
import os
import subprocess
import time

import h5py
import numpy as np

from photoz_baselines import codec_values
from photoz_metrics import Binned, distribution_metrics, point_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="model directories (the first is --model)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--catalog", default=os.path.join(ROOT, "out/photoz/val.h5"))
    ap.add_argument("--out", default=os.path.join(ROOT, "out/photoz/ensembles"))
    ap.add_argument("--log", default=os.path.join(HERE, "photoz", "explore.jsonl"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="")
    a = ap.parse_args()

    os.makedirs(a.out, exist_ok=True)
    with h5py.File(a.catalog) as f:
        z = f["Z"][:].astype(np.float64)
    values = codec_values(a.runs[0])
    metrics = {}
    for name, extra in (("raw", ["--no-calibration"]), ("calibrated", [])):
        pred = os.path.join(a.out, f"{a.name}-{name}.h5")
        t0 = time.time()
        subprocess.run([f"{a.bin}/aion-predict", "--model", a.runs[0], "--ensemble", *a.runs[1:],
                        "--catalog", a.catalog, "--output", pred, "--target", "tok_z", "--save-pdf",
                        *extra, "--overwrite", "--threads", str(a.threads), "--log-level", "warn"],
                       check=True, cwd=ROOT)
        with h5py.File(pred) as f:
            pdf = f["pdf/tok_z"][:, 0, :].astype(np.float64)
        dist = Binned(pdf, values)
        m = {"seconds": round(time.time() - t0, 1)}
        for point in ("median", "mean"):
            est = dist.quantile(0.5) if point == "median" else dist.mean()
            m[point] = point_metrics(est, z)
        m.update(distribution_metrics(dist, z))
        metrics[name] = m
    rec = {"name": a.name, "ensemble": [os.path.relpath(r, ROOT) for r in a.runs], "note": a.note,
           "catalog": os.path.relpath(a.catalog, ROOT), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "val": metrics}
    with open(a.log, "a") as f:
        f.write(json.dumps(rec) + "\n")
    for name, m in metrics.items():
        print(f"{a.name} ({name}, {len(a.runs)} members): median σ_NMAD {m['median']['sigma_nmad']:.4f} "
              f"out {100 * m['median']['outliers']:.1f} % | mean σ_NMAD {m['mean']['sigma_nmad']:.4f} | "
              f"cov68 {100 * m['coverage_68']:.1f} % cov95 {100 * m['coverage_95']:.1f} % | "
              f"CRPS/(1+z) {m['crps_norm']:.5f}")


if __name__ == "__main__":
    main()
