#!/usr/bin/env bash
# Builds, here (no GPU needed; Debian 12), what validation/gpu/run.sh runs on a lent GPU machine
# and packs it into validation/gpu/carry/aion-gpu.tar.xz (ignored by git; the `run` tool carries
# it). Not part of scripts/test.sh: the first run downloads torch 2.11 (several GB).
#
#   validation/gpu/prepare.sh            build + pack, print what travels and its size
#   validation/gpu/prepare.sh --check    also run run.sh from a scratch copy of the working tree
#                                        with the CPU in the GPU's place (AION_GPU_DEVICE=cpu)
#
# The GPU machines run PyTorch 2.11 (CUDA 13) and nothing can be downloaded there, while
# burn-tch 0.21 expects LibTorch 2.9: so the binaries are built against the PyPI wheel
# torch==2.11.0 (CUDA 13.0) in validation/gpu/.venv (tch 0.22 builds against it with the version
# check bypassed) and load the machine's own torch libraries at run time. Carried (stripped):
#   bin/gpu_check     lib/aion-model/examples/gpu_check.rs (model crate: no MPI, no HDF5)
#   bin/parity        the model crate's parity test binary (`--features tch`)
#   bin/bf16          its bf16 test binary
#   bin/aion-embed    the full tool (`--features tch`)
#   lib/              every shared library those need except glibc, libstdc++/libgcc_s and
#                     LibTorch/CUDA: Debian 12's Open MPI 4.1, PMIx, HDF5 1.10 (openmpi) and
#                     their dependencies, copied from this machine's packages (see MANIFEST)
#   usr/              Open MPI's and PMIx's plugin folders and help texts (OPAL_PREFIX)
# The device image is Ubuntu 24.04-based (Python 3.12.3): glibc 2.39 ≥ Debian 12's 2.36, which
# these were built with; run.sh checks that every binary resolves before using it.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
venv=validation/gpu/.venv
carry=validation/gpu/carry
limit_mib=64

if ! "$venv/bin/python" -c 'import torch, numpy, h5py, safetensors' 2>/dev/null; then
  python3 -m venv "$venv"
  # torch as on the GPU machines; numpy, h5py, safetensors as there too (run.sh's Python side).
  "$venv/bin/pip" install -q torch==2.11.0 numpy h5py safetensors
fi
torch_lib=$("$venv/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')

# LIBTORCH (set for the torch 2.9 builds, docs/install.md) would give the binaries a run path to
# that LibTorch; these take the GPU machine's torch through LD_LIBRARY_PATH (run.sh). Their own
# target folder: target/gpu holds scripts/build-gpu.sh's binaries, built against torch 2.9.
unset LIBTORCH LIBTORCH_INCLUDE LIBTORCH_LIB
export LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 PATH="$root/$venv/bin:$PATH"
export CARGO_TARGET_DIR="$root/target/gpu-check" CARGO_INCREMENTAL=0
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --release --locked -p aion-model --features tch --example gpu_check
tests=$(cargo test --release --locked -p aion-model --features tch --test parity --test bf16 --no-run \
  --message-format=json | "$venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["name"], m["executable"])')
cargo build --release --locked --features tch --bin aion-embed

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib"
cp "$CARGO_TARGET_DIR/release/examples/gpu_check" "$CARGO_TARGET_DIR/release/aion-embed" "$stage/bin/"
while read -r name exe; do cp "$exe" "$stage/bin/$name"; done <<< "$tests"
strip "$stage"/bin/*

# Shared libraries: the binaries' closure as the loader resolves it here, minus what the GPU
# machine has (glibc, the C++ runtime, its own torch and CUDA).
LD_LIBRARY_PATH="$torch_lib" ldd "$stage"/bin/* | awk '/=> \// {print $1, $3}' | sort -u |
  while read -r soname path; do
    case "$soname" in
      ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libutil.so*|libresolv.so*) continue ;;
      libstdc++.so*|libgcc_s.so*) continue ;;
    esac
    case "$path" in "$root"/*|*/torch/lib/*|*/nvidia/*) continue ;; esac
    cp -L "$path" "$stage/lib/$soname"
  done
for d in lib/x86_64-linux-gnu/openmpi/lib/openmpi3 lib/x86_64-linux-gnu/pmix2/lib/pmix share/openmpi share/pmix; do
  [ -d "/usr/$d" ] && mkdir -p "$stage/usr/$d" && cp -rL "/usr/$d/." "$stage/usr/$d/"
done
{
  echo "aion-hpc $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!validation/gpu/carry' || echo ' (with uncommitted changes)'), built $(date -u +%FT%TZ) on $(. /etc/os-release; echo "$PRETTY_NAME"), $(ldd --version | head -1)"
  echo "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)') (PyPI wheel; LibTorch of the machine at run time)"
  dpkg-query -W -f='${Package} ${Version}\n' libopenmpi3 libpmix2 libhdf5-openmpi-103-1 2>/dev/null || true
  (cd "$stage" && ls -l bin lib | awk 'NF > 5 {print $5, $NF}')
} > "$stage/MANIFEST"

mkdir -p "$carry"
tar -C "$stage" -cf - . | xz -9e -T2 > "$carry/aion-gpu.tar.xz"
cat "$stage/MANIFEST"
tree_bytes=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carry_bytes=$(du -cb "$carry" | tail -1 | cut -f1)
total=$((tree_bytes + carry_bytes))
printf 'carried archive %.1f MiB (unpacked %.1f MiB); working tree %.1f MiB; together %.1f MiB of the %d MiB limit\n' \
  "$(echo "$carry_bytes / 1048576" | bc -l)" "$(du -sb "$stage" | cut -f1 | awk '{print $1 / 1048576}')" \
  "$(echo "$tree_bytes / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)" "$limit_mib"
[ "$total" -le $((limit_mib * 1048576)) ] || { echo "too large to travel"; exit 1; }

if [ "${1:-}" = --check ]; then
  scratch=$(mktemp -d)
  # Laid out like the device machine's copy: tracked and untracked-not-ignored files + the carry.
  (git ls-files -z; git ls-files -z -o --exclude-standard) | tar --null -T - -cf - | tar -C "$scratch" -xf -
  cp -r "$carry" "$scratch/$carry"
  echo "check: running validation/gpu/run.sh in $scratch on the CPU"
  # Fewer rows, and the timeouts (sized for a 16-core GPU machine) × 20 for a small shared CPU.
  (cd "$scratch" && AION_GPU_DEVICE=cpu OUT="$scratch/out" AION_GPU_WORK="$scratch/work" \
    AION_GPU_ROWS="${AION_GPU_ROWS:-2}" AION_GPU_BENCH_ROWS="${AION_GPU_BENCH_ROWS:-4}" AION_GPU_BATCH=2 \
    AION_GPU_TIMEOUT_SCALE=20 AION_GPU_BUDGET_S=10800 PYTHON="$root/$venv/bin/python" validation/gpu/run.sh)
  echo "check output: $scratch/out"
  n=$(find "$scratch/out" -type f | wc -l)
  echo "check: $n result files (the run tool brings back 8, 16 MiB each): $(cd "$scratch/out" && du -b -- * | tr '\t\n' ' ')"
  [ "$n" -le 8 ] || { echo "too many result files to come back"; exit 1; }
fi
