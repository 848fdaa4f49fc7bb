"""Compares two `gpu_check` runs (lib/aion-model/examples/gpu_check.rs) of the same inputs: a
device and precision against the CPU float32 run. Part of validation/gpu/run.sh.

    python3 validation/gpu/compare.py --cpu cpu_f32.safetensors --other cuda_f32.safetensors \\
        --precision f32 --levels 7,5,5,5,5 [--json FILE]

Tolerances (stated here, quoted in docs/validation.md), relative to the CPU run:

  what                           f32          bf16
  image-codec latents (max |Δ|)  2e-3 × max   5e-2 × max   cuDNN runs float32 convolutions in TF32
                                                           by default (LibTorch has no switch;
                                                           PyTorch's default too): ~1e-3 after the
                                                           MagViT stack; bf16 keeps 8 mantissa bits
  embeddings (relative L2/row)   1e-4         2e-2         cuBLAS matrix products stay float32
                                                           (no TF32 by default); bf16 as
                                                           lib/aion-model/tests/bf16
  tok_z logits (max |Δ|)         1e-4 × max   5e-2 × max
  tokens                         identical, except where every channel that differs moved one
                                 level and its CPU latent lies within half_l × the latent tolerance
                                 of a rounding edge (the float noise allowed above can cross it)

Prints one verdict line per quantity and exits non-zero if any is out of tolerance.
"""

import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from check_fixtures import fsq_edge_distance  # noqa: E402

TOL = {
    "f32": {"latent": 2e-3, "embedding": 1e-4, "logits": 1e-4},
    "bf16": {"latent": 5e-2, "embedding": 2e-2, "logits": 5e-2},
}


def compare(cpu: dict, other: dict, precision: str, levels: np.ndarray) -> dict:
    tol = TOL[precision]
    out = {"precision": precision, "tolerances": tol}
    z, z2 = cpu["pre_quant"].astype(np.float64), other["pre_quant"].astype(np.float64)
    zmax = float(np.abs(z).max())
    out["latent_max_rel_diff"] = float(np.abs(z2 - z).max() / zmax)
    t, t2 = cpu["tokens"], other["tokens"]
    dist, half_l = fsq_edge_distance(z, levels)
    basis = np.cumprod(np.concatenate([[1], levels[:-1]]))
    eps = tol["latent"] * zmax
    excused, unexplained = [], []
    for b, n in zip(*np.nonzero(t != t2)):
        d1, d2 = (t[b, n] // basis) % levels, (t2[b, n] // basis) % levels
        chans = np.nonzero(d1 != d2)[0]
        ok = all(abs(int(d1[c]) - int(d2[c])) == 1 and dist[b, c, n] <= half_l[c] * eps for c in chans)
        (excused if ok else unexplained).append(
            [int(b), int(n), int(t[b, n]), int(t2[b, n]), [float(dist[b, c, n]) for c in chans]])
    out["tokens"] = int(t.size)
    out["tokens_differing"] = len(excused) + len(unexplained)
    out["tokens_excused_at_edges"] = len(excused)
    out["tokens_unexplained"] = unexplained[:20]
    e, e2 = cpu["embedding"].astype(np.float64), other["embedding"].astype(np.float64)
    out["embedding_max_rel_l2"] = float((np.linalg.norm(e2 - e, axis=1) / np.linalg.norm(e, axis=1)).max())
    g, g2 = cpu["logits.tok_z"].astype(np.float64), other["logits.tok_z"].astype(np.float64)
    out["logits_max_rel_diff"] = float(np.abs(g2 - g).max() / np.abs(g).max())
    out["finite"] = bool(all(np.isfinite(other[k]).all() for k in ("pre_quant", "embedding", "logits.tok_z")))
    out["pass"] = bool(out["finite"] and not unexplained and out["latent_max_rel_diff"] <= tol["latent"]
                       and out["embedding_max_rel_l2"] <= tol["embedding"]
                       and out["logits_max_rel_diff"] <= tol["logits"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", required=True)
    ap.add_argument("--other", required=True)
    ap.add_argument("--precision", choices=sorted(TOL), required=True)
    ap.add_argument("--levels", default="7,5,5,5,5", help="the image codec's FSQ levels")
    ap.add_argument("--json")
    a = ap.parse_args()
    r = compare(load_file(a.cpu), load_file(a.other), a.precision, np.array([int(x) for x in a.levels.split(",")]))
    r["files"] = [a.cpu, a.other]
    tol = r["tolerances"]
    name = os.path.basename(a.other)
    print(f"{'ok  ' if r['pass'] else 'FAIL'} {name} vs {os.path.basename(a.cpu)} ({a.precision}): "
          f"latents {r['latent_max_rel_diff']:.1e} (≤ {tol['latent']:.0e}), "
          f"tokens {r['tokens_differing']} of {r['tokens']} differ ({r['tokens_excused_at_edges']} at edges, "
          f"{len(r['tokens_unexplained'])} not), embeddings {r['embedding_max_rel_l2']:.1e} (≤ {tol['embedding']:.0e}), "
          f"logits {r['logits_max_rel_diff']:.1e} (≤ {tol['logits']:.0e}){'' if r['finite'] else ', NON-FINITE values'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0 if r["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
