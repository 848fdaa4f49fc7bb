"""Measures how much the reference's fixtures move when torch computes them with other CPU kernels.

    validation/.venv/bin/python validation/fixture_spread.py [--config NAME ...] [CASE ...]

The float tolerance of `check_fixtures.py` is derived from what this prints. Each configuration
regenerates the fixtures (all cases, or those named) with different CPU kernels or thread counts,
emulating another processor on this one:

  threads2      torch (and OpenMP) on 2 threads instead of the generators' 1: other reduction splits
                (passive OpenMP waits: spinning threads crawl on a shared machine)
  aten_avx2     ATEN_CPU_CAPABILITY=avx2: torch's own vectorised kernels (softmax, norms,
                elementwise) in their AVX2 build, as on a processor without AVX-512
  aten_default  ATEN_CPU_CAPABILITY=default: the same kernels without explicit vectorisation
  onednn_avx2   ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's convolutions limited to AVX2
  mkl_sse42     MKL_ENABLE_INSTRUCTIONS=SSE4_2: MKL's matrix products on their SSE4.2 path
  numpy_avx2    NPY_DISABLE_CPU_FEATURES: numpy's AVX-512 loops off (inputs made with np.exp etc.)
  all           everything above at once (2 threads, AVX2 / SSE4.2 kernels)

For every float array it prints the largest |regenerated − committed| over the finite elements,
divided by the array's largest finite |committed| value (the quantity `check_fixtures.py`
bounds), and for integer arrays how many elements changed (tokens moved by the noise). With
--pin the generators take the committed tokens for what they compute from tokens (as in
check_fixtures.py's second pass), so that a token moved at an edge does not count as float
spread in its decodes.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check_fixtures import FIX, cases_with_generators, fixture_files, judges, load_arrays, relative_spread  # noqa: E402

NPY_AVX512 = "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
CONFIGS = {
    "threads2": ({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}, 2),
    "aten_avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, 1),
    "aten_default": ({"ATEN_CPU_CAPABILITY": "default"}, 1),
    "onednn_avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, 1),
    "mkl_sse42": ({"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, 1),
    "numpy_avx2": ({"NPY_DISABLE_CPU_FEATURES": NPY_AVX512}, 1),
    "all": ({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE", "ATEN_CPU_CAPABILITY": "avx2",
             "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
             "NPY_DISABLE_CPU_FEATURES": NPY_AVX512}, 2),
}

# Runs a generator with torch.set_num_threads forced to N (the generators ask for 1).
RUNNER = """
import os, runpy, sys, torch
n = int(os.environ["SPREAD_THREADS"])
set_threads = torch.set_num_threads
torch.set_num_threads = lambda _: set_threads(n)
set_threads(n)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def regenerate(case: str, out: str, env: dict, threads: int, pin: bool) -> None:
    gen = os.path.join(FIX, case, "make_fixture.py")
    full = dict(os.environ, SPREAD_THREADS=str(threads), **env)
    if pin:
        full["AION_FIXTURE_PIN"] = os.path.join(FIX, case)
    r = subprocess.run([sys.executable, "-c", RUNNER, gen, "--out", out], env=full,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{case} failed under {env}:\n{r.stderr}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", action="append", choices=sorted(CONFIGS), help="default: all of them")
    ap.add_argument("--pin", action="store_true", help="pin the committed tokens (see above)")
    ap.add_argument("cases", nargs="*")
    args = ap.parse_args()
    cases = args.cases or cases_with_generators()
    worst = {}  # (case, file, array) -> (spread, config)
    with tempfile.TemporaryDirectory(prefix="aion-spread-") as tmp:
        for name in args.config or list(CONFIGS):
            env, threads = CONFIGS[name]
            print(f"== {name}: {env or ''} threads={threads}", flush=True)
            top = (0.0, "")
            for case in cases:
                out = os.path.join(tmp, name, case)
                regenerate(case, out, env, threads, args.pin)
                files = [r for r in fixture_files(case) if r.endswith((".safetensors", ".h5"))]
                new_all = {r: load_arrays(os.path.join(out, r)) for r in files}
                # Quantizer outputs (tokens, quantized values) are judged by their edges, not as floats.
                quantized = {(j.file, n) for j in judges(case, new_all) for n in j.names()}
                evidence = {(j.file, n) for j in judges(case, new_all) for n in getattr(j, "records", set)()}
                for rel in files:
                    old, new = load_arrays(os.path.join(FIX, case, rel)), new_all[rel]
                    for k in sorted(set(old) - {n for f, n in evidence if f == rel}):
                        a, b = old[k], new.get(k)
                        if b is None or a.shape != b.shape:
                            print(f"   {case}/{rel}:{k} missing or reshaped")
                            continue
                        key = (case, rel, k)
                        if np.issubdtype(a.dtype, np.floating) and (rel, k) not in quantized:
                            s = relative_spread(a, b)
                            if s > worst.get(key, (-1.0, ""))[0]:
                                worst[key] = (s, name)
                            if s > top[0]:
                                top = (s, f"{case}/{rel}:{k}")
                        elif not np.array_equal(a, b):
                            n = int(np.sum(a != b))
                            print(f"   {case}/{rel}:{k}: {n} of {a.size} values changed")
            print(f"   largest relative spread {top[0]:.2e} ({top[1]})", flush=True)
    print("\nper array, largest relative spread over the configurations (top 25):")
    for (case, rel, k), (s, name) in sorted(worst.items(), key=lambda kv: -kv[1][0])[:25]:
        print(f"   {s:.2e}  {case}/{rel}:{k}  [{name}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
