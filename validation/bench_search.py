"""Benchmark of `aion-search` against a plain numpy brute force (not a test).

Builds random D = 768 embeddings (an `aion-embed`-like HDF5 file), then for a few query counts
times

* `aion-search` (release build) alone (1 rank) and under `mpirun -n 2`, one thread per rank;
  pinned with `taskset` to cores {0} and {0, 1}, as numpy is for 1 and 2 threads;
* numpy: `X @ q.T` (cosine: divided by the row norms) + `argpartition` + a sort of the k best,
  on the same data and query vectors, with `OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = 1` and 2
  (threads fixed before numpy is imported, in a subprocess), both on the array already in
  memory ("compute") and including the h5py read of the file ("load + compute");

and prints rows scanned per second per core for each (by wall time, and per CPU-second: the CPU
time the process used, all threads, which the other jobs of a shared machine do not inflate),
the ratio ours / numpy, and the 1 → 2 rank efficiency `T1 / (2 T2)` (wall) and `C1 / C2` (CPU
seconds: how much extra work the second rank costs). For `aion-search`, "scan" is the scan of the rows (HDF5 reads included,
from the page cache) and "end to end" is the whole run after MPI start-up (opening the files,
queries, scan, merge, writing the result), both from `<output>.run.json`; process launch and MPI
initialisation (about 0.3 s alone, 1 s or more under mpirun) are printed apart. Every timing is the best of `--reps` runs (the machine may be shared:
the load average is printed). It also checks that both find the same neighbours.

Usage: bench_search.py [--rows 200000] [--dim 768] [--queries 1,16,64] [--k 10] [--reps 5]
                       [--bin target/release/aion-search] [--workdir /tmp/aion-bench-search]
Needs numpy and h5py (validation/.venv has them), mpirun, and `cargo build --release`.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

BASELINE = r"""
import json, sys, time
import numpy as np, h5py
emb, qfile, k, reps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
q = h5py.File(qfile, "r")["embedding"][:]
qn = q / np.linalg.norm(q, axis=1, keepdims=True)

def load():
    with h5py.File(emb, "r") as f:
        return f["embedding"][:]

def search(x):
    s = (x @ qn.T) / np.linalg.norm(x, axis=1)[:, None]       # cosine, (N, Q)
    part = np.argpartition(-s, k - 1, axis=0)[:k]               # k best rows per query, unsorted
    sc = np.take_along_axis(s, part, axis=0)
    order = np.lexsort((part, -sc), axis=0)                     # best first, ties by row
    return np.take_along_axis(part, order, axis=0).T

x = load()
best = {"compute": float("inf"), "compute_cpu": float("inf"), "load_compute": float("inf")}
for _ in range(reps):
    t, c = time.perf_counter(), time.process_time()
    rows = search(x)
    best["compute"] = min(best["compute"], time.perf_counter() - t)
    best["compute_cpu"] = min(best["compute_cpu"], time.process_time() - c)
for _ in range(reps):
    t = time.perf_counter(); rows = search(load()); best["load_compute"] = min(best["load_compute"], time.perf_counter() - t)
best["rows"] = rows.tolist()
print(json.dumps(best))
"""


def write_data(path: str, n: int, d: int) -> None:
    import h5py

    if os.path.exists(path):
        with h5py.File(path, "r") as f:
            if f["embedding"].shape == (n, d):
                return
    rng = np.random.default_rng(1)
    with h5py.File(path + ".tmp", "w") as f:
        ds = f.create_dataset("embedding", (n, d), dtype="f4", chunks=(max(1, (1 << 20) // (4 * d)), d))
        for s in range(0, n, 65536):
            e = min(n, s + 65536)
            ds[s:e] = rng.standard_normal((e - s, d), dtype=np.float32)
        f["object_id"] = np.arange(n, dtype=np.int64) * 7 + 1_000_000
        f["modalities_used"] = np.ones(n, dtype=np.uint64)
    os.replace(path + ".tmp", path)


def write_queries(path: str, emb: str, q: int) -> None:
    import h5py

    rng = np.random.default_rng(2)
    with h5py.File(emb, "r") as f:
        n, d = f["embedding"].shape
        rows = np.sort(rng.choice(n, q, replace=False))
        x = f["embedding"][rows, :] + 0.3 * rng.standard_normal((q, d), dtype=np.float32)
    with h5py.File(path, "w") as f:
        f["embedding"] = x.astype(np.float32)


def pin(cores: int) -> list:
    """`taskset -c 0..cores-1`: both contenders get the same cores (our reader thread, and
    numpy's BLAS threads, cannot spill onto others)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= cores:
        return ["taskset", "-c", ",".join(str(c) for c in range(cores))]
    return []


def run_ours(binary: str, ranks: int, emb: str, qfile: str, out: str, k: int, reps: int):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = [binary, "--embeddings", emb, "--query-file", qfile, "--k", str(k), "--output", out,
           "--overwrite", "--log-level", "warn", "--threads", "1"]
    if ranks > 1:
        cmd = ["mpirun", "-n", str(ranks), "--bind-to", "none"] + cmd
    cmd = pin(ranks) + cmd
    best = {"wall": float("inf"), "tool": float("inf"), "scan": float("inf"), "scan_cpu": float("inf")}
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        best["wall"] = min(best["wall"], time.perf_counter() - t)
        with open(out + ".run.json") as f:
            summary = json.load(f)["summary"]
        best["scan"] = min(best["scan"], summary["scan_seconds"])
        best["tool"] = min(best["tool"], summary["seconds"])
        best["scan_cpu"] = min(best["scan_cpu"], summary.get("scan_cpu_seconds") or float("nan"))
    import h5py

    with h5py.File(out, "r") as f:
        best["rows"] = f["neighbors/row"][:]
    return best


def run_numpy(threads: int, emb: str, qfile: str, k: int, reps: int):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run(pin(threads) + [sys.executable, "-c", BASELINE, emb, qfile, str(k), str(reps)], env=env,
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    r["rows"] = np.array(r["rows"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", default="1,16,64")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "target/release/aion-search"))
    ap.add_argument("--workdir", default="/tmp/aion-bench-search")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    emb = os.path.join(a.workdir, f"emb-{a.rows}x{a.dim}.h5")
    write_data(emb, a.rows, a.dim)
    with open(emb, "rb") as f:  # into the page cache, for every contender alike
        while f.read(1 << 24):
            pass
    n = a.rows
    print(f"# {n} rows × D = {a.dim} ({os.path.getsize(emb) / 1e9:.2f} GB), k = {a.k}, cosine, "
          f"best of {a.reps}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}")
    print(f"# load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    results = []
    for q in [int(v) for v in a.queries.split(",")]:
        qfile = os.path.join(a.workdir, f"q{q}.h5")
        write_queries(qfile, emb, q)
        out = os.path.join(a.workdir, f"out{q}.h5")
        o1 = run_ours(a.bin, 1, emb, qfile, out, a.k, a.reps)
        o2 = run_ours(a.bin, 2, emb, qfile, out, a.k, a.reps)
        n1 = run_numpy(1, emb, qfile, a.k, a.reps)
        n2 = run_numpy(2, emb, qfile, a.k, a.reps)
        same = int((o1["rows"] == n1["rows"]).all(axis=1).sum())
        identical = bool((o1["rows"] == o2["rows"]).all())
        r = {"queries": q, "same_neighbours_as_numpy": f"{same}/{q}", "ranks_1_vs_2_identical": identical}
        for name, d in [("ours_1rank", o1), ("ours_2ranks", o2), ("numpy_1thread", n1), ("numpy_2threads", n2)]:
            r.update({f"{name}_{k}_s": v for k, v in d.items() if k != "rows"})
        results.append(r)

        def per(t, cores):
            return f"{n / t / cores:>11,.0f}" if t == t and t > 0 else f"{'-':>11}"

        print(f"\nQ = {q} queries: rows/s/core; neighbours identical to numpy's: {same}/{q}, "
              f"1 and 2 ranks identical: {identical}")
        print(f"  {'':22} {'scan|compute':>12} {'end to end':>11} {'per CPU-s':>11}   (wall; end to end = "
              "after MPI init / incl. h5py load)")
        print(f"  {'aion-search 1 rank':22} {per(o1['scan'], 1)} {per(o1['tool'], 1)} {per(o1['scan_cpu'], 1)}"
              f"   launch + MPI init {o1['wall'] - o1['tool']:.2f} s")
        print(f"  {'aion-search 2 ranks':22} {per(o2['scan'], 2)} {per(o2['tool'], 2)} {per(o2['scan_cpu'], 1)}"
              f"   launch + MPI init {o2['wall'] - o2['tool']:.2f} s")
        print(f"  {'numpy 1 thread':22} {per(n1['compute'], 1)} {per(n1['load_compute'], 1)} {per(n1['compute_cpu'], 1)}")
        print(f"  {'numpy 2 threads':22} {per(n2['compute'], 2)} {per(n2['load_compute'], 2)} {per(n2['compute_cpu'], 1)}")
        print(f"  ours / numpy, 1 core : {n1['compute'] / o1['scan']:.2f} (scan vs compute), "
              f"{n1['load_compute'] / o1['tool']:.2f} (end to end), {n1['compute_cpu'] / o1['scan_cpu']:.2f} (CPU)")
        print(f"  ours / numpy, 2 cores: {n2['compute'] / o2['scan']:.2f} (scan vs compute), "
              f"{n2['load_compute'] / o2['tool']:.2f} (end to end), {n2['compute_cpu'] / o2['scan_cpu']:.2f} (CPU)")
        print(f"  1 -> 2 ranks efficiency: wall {o1['scan'] / (2 * o2['scan']):.2f} (scan), "
              f"{o1['tool'] / (2 * o2['tool']):.2f} (end to end); CPU {o1['scan_cpu'] / o2['scan_cpu']:.2f}; "
              f"numpy 1 -> 2 threads: wall {n1['compute'] / (2 * n2['compute']):.2f}, "
              f"CPU {n1['compute_cpu'] / n2['compute_cpu']:.2f}")
    print(f"\n# load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with open(os.path.join(a.workdir, "bench.json"), "w") as f:
        json.dump({"rows": n, "dim": a.dim, "k": a.k, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
