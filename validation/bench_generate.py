"""Throughput of aion-generate (objects/s), 1 and 2 ranks. Not a test: it prints a report.

    validation/.venv/bin/python validation/bench_generate.py --workdir /tmp/aion-bench \
        [--rows 8] [--threads 2] [--bin target/release] [--device cpu|tch-cpu]

Two cases, everything seeded, nothing downloaded:
  1. base size: the random base-size AION + full-size image codec that validation/bench_embed.py
     builds in the same --workdir (run it first, or this script builds them), generating the
     576 Legacy Survey image tokens (`tok_image`) of each row from its four fluxes with MaskGIT
     (8 steps, cosine, temperature 1) and decoding them to 4 x 96 x 96 pixels;
  2. the bundled photo-z model (data/models/sdss-photoz-tiny): 16 redshift samples per galaxy
     (`tok_z`, single pass, temperature 1) for the 1000 held-out SDSS galaxies, plus the spread of
     those samples against the spectroscopic redshift (mechanics only: a tiny model).
Objects/s are from the tools' own run summaries (processing after start-up), with CPU seconds of
all ranks; the machine's load average is printed next to them.
"""

import argparse
import json
import os
import subprocess
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


DEVICE = "cpu"


def run(bin_dir, args, ranks, threads):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [os.path.join(bin_dir, "aion-generate")] + args + [
        "--threads", str(threads), "--overwrite", "--log-level", "warn", "--device", DEVICE]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", "--bind-to", "none"] + cmd
    subprocess.run(cmd, check=True, env=env, stdin=subprocess.DEVNULL)
    out = args[args.index("--output") + 1]
    return json.load(open(out + ".run.json"))["summary"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "tch-cpu"],
                    help="burn NdArray, or LibTorch on the CPU (binaries built with --features tch)")
    a = ap.parse_args()
    global DEVICE
    DEVICE = a.device
    os.makedirs(a.workdir, exist_ok=True)
    report = {"threads": a.threads, "device": a.device, "load_start": os.getloadavg()}

    model = os.path.join(a.workdir, "model")
    cat = os.path.join(a.workdir, f"gen_catalog_{a.rows}.h5")
    if not os.path.exists(os.path.join(model, "model.safetensors")) or not os.path.exists(cat):
        import bench_embed  # builds the base model and a catalogue (needs torch + the package)
        from common import seed_all
        seed_all(7)
        bench_embed.build_model(model, 7)
        bench_embed.write_catalog(cat, a.rows, a.rows)
    out = os.path.join(a.workdir, "gen_image.h5")
    args = ["--model", model, "--catalog", cat, "--output", out, "--target", "tok_image",
            "--schedule", "maskgit", "--steps", "8", "--seed", "1",
            "--batch-size", "4", "--chunk-rows", "4"]
    for ranks in (1, 2):
        s = run(a.bin, args, ranks, max(1, a.threads // ranks))
        with h5py.File(out, "r") as f:
            ok = int(f["gen/tok_image/generated"][()].sum())
            flux = f["gen/tok_image/flux"][()]
        report[f"base_image_{ranks}rank"] = {
            "rows": a.rows, "generated": ok, "seconds": s["seconds"], "cpu_seconds": s.get("cpu_seconds"),
            "objects_per_s": a.rows / s["seconds"], "decoded_shape": list(flux.shape),
            "decoded_finite": bool(np.isfinite(flux).all())}

    bundled = os.path.join(ROOT, "data", "models", "sdss-photoz-tiny")
    test = os.path.join(ROOT, "data", "sdss_mgs", "sdss_mgs_test_split.h5")
    out = os.path.join(a.workdir, "gen_z.h5")
    args = ["--model", bundled, "--catalog", test, "--output", out, "--target", "tok_z",
            "--schedule", "single-pass", "--samples", "16", "--seed", "1"]
    for ranks in (1, 2):
        s = run(a.bin, args, ranks, max(1, a.threads // ranks))
        with h5py.File(out, "r") as f:
            z = f["gen/tok_z/value"][()]  # (N, 16)
        with h5py.File(test, "r") as f:
            truth = f["Z"][()]
        med = np.median(z, axis=1)
        d = (med - truth) / (1 + truth)
        report[f"bundled_z_{ranks}rank"] = {
            "rows": int(len(truth)), "samples": 16, "seconds": s["seconds"], "cpu_seconds": s.get("cpu_seconds"),
            "objects_per_s": len(truth) / s["seconds"],
            "sample_std_median": float(np.median(z.std(axis=1))),
            "sigma_nmad_of_sample_median": float(1.4826 * np.median(np.abs(d - np.median(d)))),
            "fraction_truth_within_16_84": float(np.mean(
                (truth >= np.quantile(z, 0.16, axis=1)) & (truth <= np.quantile(z, 0.84, axis=1))))}
    report["load_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
