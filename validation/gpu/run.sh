#!/usr/bin/env bash
# The GPU check: run ON a lent GPU machine, from the repository root of the working copy there,
# after validation/gpu/prepare.sh made validation/gpu/carry/aion-gpu.tar.xz here. One command:
#
#   validation/gpu/run.sh            (results in $OUT, default /tmp/aion-gpu-out)
#
# What it does (docs/validation.md, "GPU check"), each step logged, a failed step does not stop
# the others; the last lines printed are a summary table:
#   1. environment: GPU, driver, torch, glibc, CPU; which carried binaries resolve their libraries;
#   2. the model crate's LibTorch parity tests against the reference fixtures, on the GPU
#      (AION_TEST_DEVICE=cuda), and the bf16 test binary;
#   3. a base-size random model (random_model.py: torch alone);
#   4. gpu_check (lib/aion-model/examples/gpu_check.rs) on the CPU in f32 and on the GPU in f32
#      and bf16, the same inputs: compare.py checks tokens, latents, embeddings and logits
#      against the CPU run within stated tolerances; the GPU runs also time the image codec, the
#      encoder (TFLOP/s) and both end to end, and an 8192^3 bf16 / f32 matrix product;
#   5. the full tool: aion-embed --device cuda (f32, bf16) on an HDF5 catalogue, objects/s end to
#      end from its run summary, and its embeddings against aion-embed --device tch-cpu. Needs the
#      carried MPI and HDF5 libraries; skipped (with the reason) if they do not resolve.
#
# AION_GPU_DEVICE=cpu runs the same steps with the CPU in the GPU's place (validation/gpu/prepare.sh
# --check does this on a machine without a GPU, to prove that what travels works).
# Knobs: AION_GPU_ROWS (compared rows, 16), AION_GPU_BENCH_ROWS (timed rows, 1024),
# AION_GPU_BATCH (64), AION_GPU_PARITY (0 skips step 2), AION_GPU_BUDGET_S (420: the seconds the
# whole script may take; each command's timeout is cut to what is left of it, so that the summary
# is printed inside the `run` call's timeout_s, 480 in docs/validation.md), AION_GPU_TIMEOUT_SCALE
# (1: multiplies each command's own timeout, sized for the GPU machine; prepare.sh --check raises
# it and the budget for a small CPU).
#
# Results in $OUT, at most 7 files (the `run` tool brings back 8): summary.txt, env.txt,
# tests.log (parity and bf16 tests), gpu_check.jsonl, compare.jsonl, aion-embed.jsonl (run
# summaries) and, only if an aion-embed run failed, aion-embed.log.
set -u
shopt -s lastpipe  # `... | while read l; do note "$l"; done` adds to the summary of this shell
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-/tmp/aion-gpu-out}
mkdir -p "$out"
dev=${AION_GPU_DEVICE:-cuda}
rows=${AION_GPU_ROWS:-16}
bench=${AION_GPU_BENCH_ROWS:-1024}
batch=${AION_GPU_BATCH:-64}
work=${AION_GPU_WORK:-/tmp/aion-gpu}
py=${PYTHON:-python3}
budget=${AION_GPU_BUDGET_S:-420}
scale=${AION_GPU_TIMEOUT_SCALE:-1}
summary=()
note() { summary+=("$1"); echo "$1"; }
# limit CAP WHAT: sets t, the timeout for the next command: CAP × scale seconds, or what is left of
# the budget less 20 s for the summary; notes WHAT as skipped and fails when under 10 s are left.
limit() {
  local cap=$(($1 * scale)) left=$((budget - SECONDS - 20))
  [ "$left" -ge 10 ] || { note "skipped, time budget of $budget s spent: $2"; return 1; }
  t=$((cap < left ? cap : left))
}
step() { echo; echo "=== [gpu $(date +%T)] $*"; }

step "unpack"
rm -rf "$work" && mkdir -p "$work"
tar -xJf validation/gpu/carry/aion-gpu.tar.xz -C "$work" || { echo "cannot unpack the carried archive"; exit 1; }
cat "$work/MANIFEST"
torch_lib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') ||
  { echo "no torch in $py"; exit 1; }
export LD_LIBRARY_PATH="$torch_lib:$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Open MPI and PMIx from the carried copy (Debian 12 packages, see MANIFEST), singleton runs
# without a daemon.
export OPAL_PREFIX="$work/usr" PMIX_PREFIX="$work/usr"
export OMPI_MCA_mca_base_component_path="$work/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3"
export PMIX_MCA_mca_base_component_path="$work/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix"
export OMPI_MCA_ess_singleton_isolated=1 OMPI_MCA_mca_base_component_show_load_errors=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

step "environment"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1 || true
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
  ldd --version | head -1
  lscpu | grep -E "Model name|^CPU\(s\)"
  for b in "$work"/bin/*; do
    missing=$(ldd "$b" 2>&1 | grep "not found" | tr -s ' \t' ' ')
    echo "$(basename "$b"): ${missing:-all libraries resolve}"
  done
} 2>&1 | tee "$out/env.txt"
resolves() { ! ldd "$work/bin/$1" 2>&1 | grep -q "not found"; }

if [ "${AION_GPU_PARITY:-1}" != 0 ]; then
  step "parity tests on $dev (LibTorch backend)"
  export AION_FIXTURES_DIR="$root/validation/fixtures"
  log="$out/tests.log"
  if limit 240 "parity tests"; then
    echo "### parity ::tch on $dev (timeout $t s)" > "$log"
    AION_TEST_DEVICE=$dev timeout "$t" "$work/bin/parity" ::tch > "$work/parity.log" 2>&1
    rc=$?
    cat "$work/parity.log" >> "$log"
    res=$(grep "^test result" "$work/parity.log" | tail -1)
    note "parity tests (tch, $dev): rc $rc; ${res:-no result line}"
    grep -E "^test .* FAILED|panicked" "$work/parity.log" | head -20
  fi
  if limit 90 "bf16 test"; then
    echo "### bf16 on $dev (timeout $t s)" >> "$log"
    AION_TEST_DEVICE=$dev timeout "$t" "$work/bin/bf16" > "$work/bf16.log" 2>&1
    rc=$?
    cat "$work/bf16.log" >> "$log"
    note "bf16 test ($dev): rc $rc; $(grep "^test result" "$work/bf16.log" | tail -1)"
  fi
fi

step "base-size random model"
limit 150 "random model and everything after it" || { printf '%s\n' "${summary[@]}" > "$out/summary.txt"; exit 1; }
timeout "$t" "$py" validation/gpu/random_model.py --out "$work/model" ||
  { note "random model: FAILED"; printf '%s\n' "${summary[@]}" > "$out/summary.txt"; exit 1; }

step "gpu_check: CPU f32, $dev f32 and bf16"
: > "$out/gpu_check.jsonl"
# output name, device, precision, timed rows: ref_cpu is the CPU float32 run that the others are
# compared with (named apart, so that a device run with AION_GPU_DEVICE=cpu does not replace it)
runs=("ref_cpu cpu f32 0" "$dev $dev f32 $bench" "$dev $dev bf16 $bench")
for r in "${runs[@]}"; do
  read -r name d p n <<< "$r"
  limit 180 "gpu_check $d $p" || continue
  timeout "$t" "$work/bin/gpu_check" --model "$work/model" --device "$d" --precision "$p" --rows "$rows" \
    --bench-rows "$n" --batch "$batch" --out "$work/${name}_$p.safetensors" | tee -a "$out/gpu_check.jsonl"
  rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || note "gpu_check $d $p: FAILED (rc $rc)"
done
for p in f32 bf16; do
  [ -f "$work/${dev}_$p.safetensors" ] || continue
  line=$("$py" validation/gpu/compare.py --cpu "$work/ref_cpu_f32.safetensors" --other "$work/${dev}_$p.safetensors" \
    --precision $p --jsonl "$out/compare.jsonl")
  note "$line"
done
"$py" - "$out/gpu_check.jsonl" <<'EOF' | while IFS= read -r l; do note "$l"; done
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "bench_rows" not in r:
        continue
    peak = r.get("matmul_8192_bf16_tflops")
    print(f"gpu_check {r['device']} {r['precision']}: image codec {r['image_codec_objects_per_s']:.0f} obj/s, "
          f"encoder {r['encoder_objects_per_s']:.0f} obj/s = {r['encoder_tflops']:.1f} TFLOP/s"
          + (f" ({100 * r['encoder_tflops'] / peak:.0f}% of the {peak:.0f} TFLOP/s bf16 matmul, "
             f"f32 matmul {r['matmul_8192_f32_tflops']:.0f})" if peak else "")
          + f", end to end {r['end_to_end_objects_per_s']:.0f} obj/s ({r['bench_rows']} rows, batch {r['batch']})")
EOF

step "full tool: aion-embed on an HDF5 catalogue"
if ! resolves aion-embed; then
  note "aion-embed: skipped, libraries missing: $(ldd "$work/bin/aion-embed" | grep 'not found' | awk '{print $1}' | tr '\n' ' ')"
else
  tool_dev=$([ "$dev" = cpu ] && echo tch-cpu || echo "$dev")
  "$py" - "$work" "$bench" "$rows" <<'EOF'
import sys
sys.path.insert(0, "validation")
from bench_embed import write_catalog
work, n, small = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
write_catalog(f"{work}/catalog.h5", n, n)
write_catalog(f"{work}/catalog_small.h5", small, small)
EOF
  embed() { # device precision catalog output
    local t
    limit 120 "aion-embed --device $1 --precision $2 on $(basename "$3")" || return 1
    timeout "$t" "$work/bin/aion-embed" --model "$work/model" --catalog "$3" --output "$4" --batch-size "$batch" \
      --chunk-rows "$batch" --device "$1" --precision "$2" --overwrite --log-level warn > "$4.log" 2>&1 ||
      { note "aion-embed --device $1 --precision $2: FAILED ($(tail -1 "$4.log"))"
        { echo "### $(basename "$4").log"; cat "$4.log"; } >> "$out/aion-embed.log"; return 1; }
  }
  for p in f32 bf16; do
    if embed "$tool_dev" $p "$work/catalog.h5" "$work/emb_$p.h5"; then
      "$py" -c "import json,sys; s=json.load(open(sys.argv[1]))['summary']; print(f'aion-embed --device $tool_dev --precision $p: {$bench / s[\"seconds\"]:.0f} objects/s end to end ({$bench} rows, {s[\"seconds\"]:.2f} s after loading)')" \
        "$work/emb_$p.h5.run.json" | while IFS= read -r l; do note "$l"; done
      "$py" -c 'import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))' "$work/emb_$p.h5.run.json" >> "$out/aion-embed.jsonl"
    fi
  done
  # Each device tokenizes with its own codec, and in bf16 the image codec runs in bf16 too and moves
  # ~5 % of the image tokens (those near an FSQ edge), which moves the embeddings by several per
  # cent: so a device's bf16 run is held to twice the distance of the CPU's own bf16 run (at least
  # 5e-2), measured here on the same rows, rather than to a fixed bound.
  if embed tch-cpu f32 "$work/catalog_small.h5" "$work/small_cpu.h5" &&
     embed tch-cpu bf16 "$work/catalog_small.h5" "$work/small_cpu_bf16.h5" &&
     embed "$tool_dev" f32 "$work/catalog_small.h5" "$work/small_dev.h5" &&
     embed "$tool_dev" bf16 "$work/catalog_small.h5" "$work/small_dev_bf16.h5"; then
    "$py" - "$work" "$tool_dev" <<'EOF' | while IFS= read -r l; do note "$l"; done
import sys, h5py, numpy as np
w, dev = sys.argv[1:]
def emb(name):
    with h5py.File(f"{w}/{name}.h5", "r") as f:
        return f["embedding"][()].astype(np.float64)
ref = emb("small_cpu")
def dist(name):
    e = emb(name)
    return float((np.linalg.norm(e - ref, axis=1) / np.linalg.norm(ref, axis=1)).max())
cpu_bf16 = dist("small_cpu_bf16")
print(f"aion-embed tch-cpu bf16 vs tch-cpu f32: embeddings max relative L2 {cpu_bf16:.1e} ({len(ref)} rows)")
for name, precision, tol, why in (("small_dev", "f32", 1e-2, "1e-2"),
                                  ("small_dev_bf16", "bf16", max(5e-2, 2 * cpu_bf16), "2 × the CPU's bf16, at least 5e-2")):
    err = dist(name)
    print(f"{'ok  ' if err <= tol else 'FAIL'} aion-embed {dev} {precision} vs tch-cpu f32: embeddings max relative L2 "
          f"{err:.1e} (≤ {tol:.1e}: {why}; image tokens from each device's own codec)")
EOF
  fi
fi

step "summary"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
