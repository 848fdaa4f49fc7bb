"""How fast can the bench_embed workload possibly run on this CPU? A lower bound from FLOP counts.

    validation/.venv/bin/python validation/bench_bound.py --workdir /tmp/aion-bench [--rows 32] [--threads 2]

Run validation/bench_embed.py with the same --workdir first (it builds the random base-size AION,
the full image codec and the catalogue). This script then
  1. counts the floating-point operations of the workload with torch's FlopCounterMode (matrix
     products and convolutions, 2 per multiply-add): the reference's image codec encoding the
     catalogue's rows, and AION.encode of the resulting tokens (image + four fluxes);
  2. measures on T threads, in this process, the best rate torch reaches: the best of square matrix
     products (2048 to 6144, five tries each) in float32 and in bfloat16, and the image codec itself run in float32 and under bfloat16 autocast;
  3. prints the time each stage would take at the matrix-product rate (a bound no implementation
     on torch's kernels beats without doing less arithmetic), the codec's measured times, and the
     bound of the whole bf16 workload next to the reference's bf16 run (bench_embed's: transformer
     weights in bfloat16, codecs in float32), measured in the same process.
Issue 14 asks for bf16 >= 2x the reference's bf16 run; this says whether the processor allows it.
"""

import argparse
import json
import os
import sys
import time

import h5py
import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_embed import BANDS, FLUXES, IMAGE_CFG, KEYS, load_reference_model, reference  # noqa: E402


def image_codec(model_dir):
    from aion.codecs import ImageCodec
    from safetensors.torch import load_file

    codec = ImageCodec(**IMAGE_CFG).eval()
    codec.load_state_dict(load_file(os.path.join(model_dir, "codecs/image/model.safetensors")))
    return codec


@torch.no_grad()
def encode_images(codec, images, batch, bf16=False):
    """The codec on every row; bf16: under CPU autocast (the codec's own preprocessing makes float32
    tensors, so casting its weights is not enough)."""
    from aion.modalities import LegacySurveyImage

    out = []
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for a in range(0, images.shape[0], batch):
            out.append(codec.encode(LegacySurveyImage(flux=images[a:a + batch], bands=BANDS)))
    return torch.cat(out)


def best_matmul_gflops(dtype, sizes=(2048, 4096, 6144), repeat=5):
    """The best rate of torch.mm over a few square sizes, best of `repeat` each (a bound needs the best)."""
    best = 0.0
    for n in sizes:
        x, y = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        torch.mm(x, y)
        for _ in range(repeat):
            t0 = time.perf_counter()
            torch.mm(x, y)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def timed(fn, repeat=2):
    fn()  # warm-up (allocations, oneDNN primitive creation)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model_dir = os.path.join(a.workdir, "model")
    with h5py.File(os.path.join(a.workdir, f"catalog_{a.rows}.h5"), "r") as f:
        images = torch.from_numpy(f["image_array"][()])
        fluxes = {n: torch.from_numpy(f[n][()]) for n in FLUXES}

    codec = image_codec(model_dir)
    with FlopCounterMode(display=False) as fc:
        tok_image = encode_images(codec, images, a.batch)
    codec_flops = fc.get_total_flops()

    from aion.codecs.scalar import LogScalarCodec
    from aion.modalities import LegacySurveyFluxG, LegacySurveyFluxI, LegacySurveyFluxR, LegacySurveyFluxZ
    from safetensors.torch import load_file

    tokens = {"tok_image": tok_image}
    for name, key, cls in zip(FLUXES, KEYS, [LegacySurveyFluxG, LegacySurveyFluxR, LegacySurveyFluxI, LegacySurveyFluxZ]):
        c = LogScalarCodec(name, 1024, 4000, min_log_value=-3).eval()
        c.load_state_dict(load_file(os.path.join(model_dir, f"codecs/{name}/model.safetensors")))
        tokens[key] = c.encode(cls(value=fluxes[name]))
    n_tok = sum(v.reshape(v.shape[0], -1).shape[1] for v in tokens.values())
    model = load_reference_model(model_dir, "f32")
    with FlopCounterMode(display=False) as fe:
        for s in range(0, a.rows, a.batch):
            model.encode({k: v[s:s + a.batch] for k, v in tokens.items()}, num_encoder_tokens=n_tok)
    enc_flops = fe.get_total_flops()

    peak = {"f32": best_matmul_gflops(torch.float32), "bf16": best_matmul_gflops(torch.bfloat16)}
    codec_s = {}
    for name in ("f32", "bf16"):
        codec_s[name] = timed(lambda: encode_images(codec, images, a.batch, name == "bf16"))

    rep = {
        "rows": a.rows, "threads": a.threads, "tokens_per_row": n_tok,
        "gflop": {"image_codec": codec_flops / 1e9, "encoder": enc_flops / 1e9},
        "matmul_gflops": peak,
        "image_codec_seconds": codec_s,
        "image_codec_gflops": {k: codec_flops / 1e9 / v for k, v in codec_s.items()},
    }
    # the bound uses the best rate seen in this run at each precision (the codec's convolutions
    # can beat the matrix product)
    rate = {p: max(peak[p], rep["image_codec_gflops"][p]) for p in peak}
    rep["bound_gflops"] = rate
    rep["bound_seconds"] = {p: {"image_codec": codec_flops / 1e9 / r, "encoder": enc_flops / 1e9 / r,
                                "total": (codec_flops + enc_flops) / 1e9 / r} for p, r in rate.items()}
    _, ref_s, _, _ = reference(model_dir, os.path.join(a.workdir, f"catalog_{a.rows}.h5"), a.batch, "bf16")
    rep["reference_bf16_seconds"] = ref_s
    rep["best_possible_speedup_over_reference_bf16"] = ref_s / rep["bound_seconds"]["bf16"]["total"]
    print(json.dumps(rep, indent=1))


if __name__ == "__main__":
    main()
