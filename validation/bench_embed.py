"""End-to-end throughput of aion-embed against the reference package, same inputs, same weights,
same cores. Not a test: it prints a report (quote it, with the machine's load, in the issue note).

    validation/.venv/bin/python validation/bench_embed.py --workdir /tmp/aion-bench [--rows 32]
        [--threads 2] [--bin target/release] [--device cpu|tch-cpu] [--precision f32|bf16] [--mkl-intel-path]

What it does (everything is seeded, nothing is downloaded):
  1. builds a base-size AION (validation/make_base_model.py: D 768, 12+12 blocks, SwiGLU,
     qk-norm, random weights) and full-size random codecs for images (the released MagViT
     configuration, 70 M parameters) and the four LS fluxes, in the Hub layout;
  2. writes an MMU-style catalogue of N Legacy-Survey-like rows (4 x 160 x 160 image + g,r,i,z
     fluxes) and the same rows 4x larger (for peak memory);
  3. reference: a plain Python loop over the catalogue (h5py read, the package's codecs, AION.encode
     of all tokens, mean) with torch using --threads threads; with --precision bf16 also the same
     loop with the transformer's weights in bfloat16 (its codecs stay float32; ours run in bf16
     too, see docs/architecture.md);
  4. ours: aion-embed (release; --device cpu = burn NdArray, or tch-cpu = LibTorch; --precision)
     as 1 rank x T threads, as `mpirun -n 2` x T/2 threads, and as 1 rank x T/2 threads pinned
     to T/2 cores (the 1 -> 2 rank scaling: each rank has its own cores); checks that the
     embeddings agree with the float32 reference;
  5. transformer only: the same rows pre-tokenized, so the time is the encoder's; reports its
     FLOP/s next to a large matrix product measured in the same run, T threads, same precision:
     torch's (MKL), and for f32 also ours (`cargo bench -p aion-model --bench sgemm`, the gemm
     crate our f32 linear layers and attention run on);
  6. peak resident memory of aion-embed for N and 4N rows (bounded by the chunk, not the catalogue).
With --mkl-intel-path (needs a C compiler) everything runs with MKL on its Intel code path, as on an
Intel CPU: on AMD, torch's float32 matrix products otherwise take a slower non-AVX-512 path, which
flatters us against the reference (issue 14).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import seed_all  # noqa: E402

IMAGE_CFG = dict(quantizer_levels=[7, 5, 5, 5, 5], hidden_dims=512, multisurvey_projection_dims=54, n_compressions=2,
                 num_consecutive=4, embedding_dim=5, range_compression_factor=0.01, mult_factor=10.0)
FLUXES = ["FLUX_G", "FLUX_R", "FLUX_I", "FLUX_Z"]
KEYS = ["tok_flux_g", "tok_flux_r", "tok_flux_i", "tok_flux_z"]
BANDS = ["DES-G", "DES-R", "DES-I", "DES-Z"]


def build_model(model_dir, seed):
    from aion.codecs import ImageCodec
    from aion.codecs.scalar import LogScalarCodec
    from safetensors.torch import save_file

    if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_base_model.py"), "--out", model_dir], check=True)
    img_dir = os.path.join(model_dir, "codecs", "image")
    if not os.path.exists(os.path.join(img_dir, "model.safetensors")):
        os.makedirs(img_dir, exist_ok=True)
        g = torch.Generator().manual_seed(seed)
        codec = ImageCodec(**IMAGE_CFG)
        with torch.no_grad():
            for name, p in codec.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
                else:
                    p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1, generator=g)
        save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, os.path.join(img_dir, "model.safetensors"))
        json.dump(IMAGE_CFG, open(os.path.join(img_dir, "config.json"), "w"))
    for name in FLUXES:
        d = os.path.join(model_dir, "codecs", name)
        if os.path.exists(os.path.join(d, "model.safetensors")):
            continue
        os.makedirs(d, exist_ok=True)
        c = LogScalarCodec(name, 1024, 4000, min_log_value=-3)
        g = torch.Generator().manual_seed(seed + len(name))
        c._quantizer._reservoir.copy_(torch.randn(4000, generator=g) * 1.5 + 1.0)
        c._quantizer._generate_index_to_val()
        sd = {k.replace("_quantizer", "quantizer", 1): v.contiguous() for k, v in c.state_dict().items()}
        save_file(sd, os.path.join(d, "model.safetensors"))
        json.dump({"modality": name, "codebook_size": 1024, "reservoir_size": 4000, "min_log_value": -3}, open(os.path.join(d, "config.json"), "w"))


def write_catalog(path, n, seed):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:160, 0:160].astype(np.float32)
    with h5py.File(path, "w") as f:
        img = f.create_dataset("image_array", (n, 4, 160, 160), np.float32, chunks=(1, 4, 160, 160))
        for r in range(n):
            cx, cy = 80 + 5 * g.standard_normal(2)
            rad = np.hypot(xx - cx, yy - cy)
            img[r] = np.stack([a * np.exp(-rad / 5.0) for a in (0.5, 1.5, 2.5, 3.5)]) + 0.02 * g.standard_normal((4, 160, 160)).astype(np.float32)
        f.create_dataset("image_band", data=np.array([[b.lower().encode() for b in BANDS]] * n))
        for name in FLUXES:
            f.create_dataset(name, data=np.exp(g.standard_normal(n) + 1.0).astype(np.float32))
        f.create_dataset("object_id", data=np.arange(n, dtype=np.int64))


def load_reference_model(model_dir, precision):
    from aion.model import AION

    model = AION.from_pretrained(model_dir).eval()
    return model.to(torch.bfloat16) if precision == "bf16" else model


@torch.no_grad()
def reference(model_dir, catalog, batch, precision="f32"):
    """The reference's way: a Python loop with the package's codecs and AION.encode."""
    from aion.codecs import ImageCodec
    from aion.codecs.scalar import LogScalarCodec
    from aion.modalities import LegacySurveyFluxG, LegacySurveyFluxI, LegacySurveyFluxR, LegacySurveyFluxZ, LegacySurveyImage
    from safetensors.torch import load_file

    t0 = time.perf_counter()
    model = load_reference_model(model_dir, precision)
    img = ImageCodec(**IMAGE_CFG).eval()
    img.load_state_dict(load_file(os.path.join(model_dir, "codecs/image/model.safetensors")))
    flux = {}
    for name in FLUXES:
        c = LogScalarCodec(name, 1024, 4000, min_log_value=-3).eval()
        c.load_state_dict(load_file(os.path.join(model_dir, f"codecs/{name}/model.safetensors")))
        flux[name] = c
    t_load = time.perf_counter() - t0
    classes = [LegacySurveyFluxG, LegacySurveyFluxR, LegacySurveyFluxI, LegacySurveyFluxZ]
    out = []
    c1 = time.process_time()
    t1 = time.perf_counter()
    with h5py.File(catalog, "r") as f:
        n = f["object_id"].shape[0]
        for a in range(0, n, batch):
            b = min(n, a + batch)
            tokens = {"tok_image": img.encode(LegacySurveyImage(flux=torch.from_numpy(f["image_array"][a:b]), bands=BANDS))}
            for name, key, cls in zip(FLUXES, KEYS, classes):
                tokens[key] = flux[name].encode(cls(value=torch.from_numpy(f[name][a:b])))
            total = sum(v.reshape(v.shape[0], -1).shape[1] for v in tokens.values())
            out.append(model.encode(tokens, num_encoder_tokens=total).float().mean(1))
    return torch.cat(out).numpy(), time.perf_counter() - t1, time.process_time() - c1, t_load


@torch.no_grad()
def reference_encoder_only(model_dir, tokens_file, batch, precision="f32"):
    model = load_reference_model(model_dir, precision)
    with h5py.File(tokens_file, "r") as f:
        toks = {k: torch.from_numpy(f[k][()]) for k in ["tok_image"] + KEYS}
    n = toks["tok_image"].shape[0]
    t0, c0 = time.perf_counter(), time.process_time()
    for a in range(0, n, batch):
        part = {k: v[a:a + batch] for k, v in toks.items()}
        model.encode(part, num_encoder_tokens=580)
    return time.perf_counter() - t0, time.process_time() - c0


DEVICE = "cpu"  # --device of our tools: cpu (burn NdArray) or tch-cpu (LibTorch, a --features tch build)
PRECISION = "f32"  # --precision of our tools (transformer only; codecs are always f32)


def run_ours(bin_dir, args, ranks, threads, env_extra=None, cores=None):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS=str(threads))
    env.update(env_extra or {})
    tool = os.path.join(bin_dir, args[0])
    cmd = [tool] + args[1:] + ["--threads", str(threads), "--overwrite", "--log-level", "warn", "--device", DEVICE]
    if args[0] != "aion-tokenize":
        cmd += ["--precision", PRECISION]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", "--bind-to", "none"] + cmd
    if cores is not None:  # pinned: the process (all its threads) may only use these cores
        cmd = ["taskset", "-c", ",".join(map(str, cores))] + cmd
    subprocess.run(cmd, check=True, env=env, stdin=subprocess.DEVNULL)
    out = args[args.index("--output") + 1]
    summary = json.load(open(out + ".run.json"))["summary"]
    return summary["seconds"], summary.get("cpu_seconds", float("nan"))


def rel_l2(got, want):
    """Largest per-row relative L2 error."""
    return float((np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)).max())


def encoder_flops(tokens, layers=12, d=768, ffn=2048):
    per_layer = 2 * tokens * (3 * d * d + d * d + 3 * d * ffn) + 2 * 2 * tokens * tokens * d
    return layers * per_layer + 2 * tokens * d * d  # + decoder_proj_context


def sgemm_gflops(threads, n=4096, dtype=torch.float32):
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(3):
        torch.mm(a, b)
    return 3 * 2 * n ** 3 / (time.perf_counter() - t0) / 1e9


def our_sgemm_gflops(threads):
    """GFLOP/s of our f32 GEMM (lib/aion-model/benches/sgemm.rs), or None without cargo."""
    try:
        out = subprocess.run(["cargo", "bench", "-q", "--locked", "-p", "aion-model", "--bench", "sgemm", "--", str(threads)],
                             cwd=os.path.dirname(HERE), check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"our sgemm benchmark did not run: {e}", file=sys.stderr)
        return None
    return json.loads(out.strip().splitlines()[-1])


MKL_SHIM = """/* MKL asks this to decide whether to take its Intel code paths; answer yes. */
int mkl_serv_intel_cpu_true(void) { return 1; }
"""


def reexec_with_mkl_shim(workdir):
    """Builds the shim (cc) into workdir and runs this script again with it preloaded: MKL is linked
    into torch, so the library must be there when the process starts."""
    os.makedirs(workdir, exist_ok=True)
    src, lib = os.path.join(workdir, "mkl_shim.c"), os.path.join(workdir, "libmkl_shim.so")
    with open(src, "w") as f:
        f.write(MKL_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", lib, src], check=True)
    env = dict(os.environ, AION_BENCH_MKL_SHIM=lib)
    env["LD_PRELOAD"] = lib + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--rows", type=int, default=32,
                    help="a multiple of 2 x --batch, so that 2 ranks get the same number of chunks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release"))
    ap.add_argument("--device", default="cpu", choices=["cpu", "tch-cpu"],
                    help="our backend: burn NdArray (default build) or LibTorch on the CPU "
                         "(binaries built with --features tch, e.g. --bin target/tch/release)")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                    help="transformer precision, ours (--precision) and the reference's (weights cast); "
                         "bf16 needs --device tch-cpu")
    ap.add_argument("--mkl-intel-path", action="store_true",
                    help="make torch's MKL take the code path it takes on Intel CPUs (AVX-512 where the CPU has "
                         "it) on a non-Intel CPU too, by preloading a two-line library that answers MKL's "
                         "'is this an Intel CPU?' with yes: the reference then runs as fast as its MKL allows, "
                         "a stand-in for an Intel machine's reference on an AMD one (ours gets it too)")
    a = ap.parse_args()
    if a.mkl_intel_path and os.environ.get("AION_BENCH_MKL_SHIM") is None:
        reexec_with_mkl_shim(a.workdir)
    global DEVICE, PRECISION
    DEVICE, PRECISION = a.device, a.precision
    if a.rows % (2 * a.batch):
        print(f"warning: --rows {a.rows} is not a multiple of 2 x --batch: the 2-rank run is unbalanced", file=sys.stderr)
    seed_all(7)
    os.makedirs(a.workdir, exist_ok=True)
    model = os.path.join(a.workdir, "model")
    build_model(model, 7)
    cat = os.path.join(a.workdir, f"catalog_{a.rows}.h5")
    cat4 = os.path.join(a.workdir, f"catalog_{4 * a.rows}.h5")
    for path, n in [(cat, a.rows), (cat4, 4 * a.rows)]:
        if not os.path.exists(path):
            write_catalog(path, n, n)
    torch.set_num_threads(a.threads)
    load0 = os.getloadavg()
    ref_emb, ref_t, ref_cpu, ref_load = reference(model, cat, a.batch)
    report = {"rows": a.rows, "threads": a.threads, "device": a.device, "precision": a.precision, "machine_load_start": load0,
              "mkl_intel_path": bool(os.environ.get("AION_BENCH_MKL_SHIM")),
              "note": "seconds = processing after loading the model (wall); cpu = CPU seconds of all threads/ranks",
              "reference": {"seconds": ref_t, "cpu": ref_cpu, "load_seconds": ref_load, "rows_per_s": a.rows / ref_t, "rows_per_cpu_s": a.rows / ref_cpu}}
    ref_key = "reference"
    if a.precision == "bf16":
        emb_b, t_b, cpu_b, load_b = reference(model, cat, a.batch, "bf16")
        report["reference_bf16"] = {"seconds": t_b, "cpu": cpu_b, "load_seconds": load_b, "rows_per_s": a.rows / t_b,
                                    "rows_per_cpu_s": a.rows / cpu_b, "max_rel_l2_err_vs_f32_reference": rel_l2(emb_b, ref_emb)}
        ref_key = "reference_bf16"
    same_t, same_cpu = report[ref_key]["seconds"], report[ref_key]["cpu"]
    out = os.path.join(a.workdir, "emb.h5")
    common = ["aion-embed", "--model", model, "--catalog", cat, "--output", out, "--batch-size", str(a.batch), "--chunk-rows", str(a.batch)]
    half = max(1, a.threads // 2)
    for name, ranks, threads, cores in (("ours_1rank", 1, a.threads, None), ("ours_2rank", 2, half, None),
                                        ("ours_1rank_half_cores", 1, half, list(range(half)))):
        wall, cpu = run_ours(a.bin, common, ranks, threads, cores=cores)
        with h5py.File(out, "r") as f:
            emb = f["embedding"][()]
        report[name] = {"ranks": ranks, "threads_per_rank": threads, "pinned_cores": cores, "seconds": wall, "cpu": cpu, "rows_per_s": a.rows / wall,
                        "rows_per_cpu_s": a.rows / cpu,
                        f"speedup_vs_{ref_key}_wall": same_t / wall, f"speedup_vs_{ref_key}_cpu": same_cpu / cpu,
                        "max_abs_err_vs_f32_reference": float(np.abs(emb - ref_emb).max()),
                        "max_rel_l2_err_vs_f32_reference": rel_l2(emb, ref_emb)}
        if a.precision == "bf16":
            report[name]["speedup_vs_f32_reference_wall"] = ref_t / wall
    t1, t2, th = (report[k]["seconds"] for k in ("ours_1rank", "ours_2rank", "ours_1rank_half_cores"))
    report["two_ranks"] = {"vs_1rank_same_cores": t1 / t2, "scaling_efficiency_1_to_2_ranks": th / (2 * t2),
                           "note": "vs_1rank_same_cores = T(1 rank x T threads) / T(2 ranks x T/2); "
                                   "scaling efficiency = T(1 rank x T/2, pinned to T/2 cores) / (2 T(2 ranks x T/2))"}
    # Transformer only: tokens from our tokenizer, the same for both sides.
    toks = os.path.join(a.workdir, "tokens.h5")
    run_ours(a.bin, ["aion-tokenize", "--model", model, "--catalog", cat, "--output", toks], 1, a.threads)
    torch.set_num_threads(a.threads)
    ref_enc, ref_enc_cpu = reference_encoder_only(model, toks, a.batch, a.precision)
    wall, cpu = run_ours(a.bin, ["aion-embed", "--model", model, "--catalog", toks, "--output", out, "--batch-size", str(a.batch)], 1, a.threads)
    flops = encoder_flops(580) * a.rows
    peak = sgemm_gflops(a.threads, dtype=torch.bfloat16 if a.precision == "bf16" else torch.float32)
    report["encoder_only"] = {"reference_seconds": ref_enc, "reference_cpu": ref_enc_cpu, "ours_seconds": wall, "ours_cpu": cpu,
                              "encoder_gflop": flops / 1e9, "reference_gflops": flops / ref_enc / 1e9, "ours_gflops": flops / wall / 1e9,
                              "ours_gflop_per_cpu_s": flops / cpu / 1e9, "matmul_4096_gflops_torch": peak,
                              "ours_fraction_of_matmul": flops / wall / 1e9 / peak,
                              "reference_fraction_of_matmul": flops / ref_enc / 1e9 / peak}
    # Our f32 linear layers and attention run on the gemm crate (nn::sgemm), not on torch's MKL:
    # its peak is the fair denominator for our f32 encoder.
    ours_peak = our_sgemm_gflops(a.threads) if a.precision == "f32" else None
    if ours_peak:
        enc = report["encoder_only"]
        enc["matmul_4096_gflops_our_sgemm"] = ours_peak["gflops_4096"]
        enc["ours_fraction_of_our_sgemm"] = flops / wall / 1e9 / ours_peak["gflops_4096"]
        enc["reference_fraction_of_our_sgemm"] = flops / ref_enc / 1e9 / ours_peak["gflops_4096"]
    report["machine_load_end"] = os.getloadavg()
    # Peak memory: N vs 4N rows (same chunk size).
    rss = {}
    for path, n in [(cat, a.rows), (cat4, 4 * a.rows)]:
        o = os.path.join(a.workdir, f"rss_{n}.h5")
        p = subprocess.Popen(["/usr/bin/env", "bash", "-c", f"exec {os.path.join(a.bin, 'aion-embed')} --model {model} --catalog {path} --output {o} --overwrite --log-level warn --threads {a.threads} --batch-size {a.batch} --chunk-rows {a.batch} --device {a.device} --precision {a.precision}"],
                             env=dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1"))
        hwm = 0
        while p.poll() is None:
            try:
                for line in open(f"/proc/{p.pid}/status"):
                    if line.startswith("VmHWM"):
                        hwm = max(hwm, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.2)
        rss[n] = hwm / 1024.0
    report["peak_rss_mb_by_rows"] = rss
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
