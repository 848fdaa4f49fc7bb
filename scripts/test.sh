#!/usr/bin/env bash
# Runs every test of aion-hpc on a fresh Debian 12 machine (idempotent; what .ci/run calls):
#   1. installs the system packages and the reference's Python venv (scripts/setup.sh --tests);
#   2. regenerates the parity fixtures with the reference package and checks they are unchanged
#      up to float noise (validation/check_fixtures.py; any x86-64 processor);
#   3. starts a local single-node Slurm, and a second, two-node one (network namespaces);
#   4. builds a base-size random model in the Hub layout (its strict-loading test runs in step 5);
#   5. cargo fmt and clippy checks, then `cargo test` of the whole workspace on the CPU (NdArray)
#      backend, including the MPI (1, 2, 3 ranks) and Slurm (one and two nodes) end-to-end tests;
#   6. builds aion-embed as a user without root against an MPI and a parallel HDF5 in a private
#      prefix and runs it with `mpirun -n 2` (tests/private-prefix-build.sh);
#   7. builds aion-embed with the LibTorch (`tch`) feature (scripts/build-gpu.sh), checks what
#      `--version` records, and runs the model parity tests on LibTorch too.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
step() { echo; echo "=== [test.sh $(date +%T)] $*"; }

step "setup"
# What a full run holds on disk (the reference's venv ~7 GB, two target folders ~9 GB, the
# private-prefix build in /tmp): say so up front rather than fail on a full disk midway.
free_gb=$(df -Pk "$root" | awk 'NR == 2 {print int($4 / 1048576)}')
if [ "$free_gb" -lt 20 ]; then
  echo "[test.sh] warning: $free_gb GB free on the disk of $root; a first full run needs about 20 GB" >&2
fi
scripts/setup.sh --tests
venv="$root/validation/.venv"

step "fixtures: regenerate with polymathic-aion 0.0.2 and compare"
"$venv/bin/python" validation/check_fixtures.py
"$venv/bin/python" validation/test_check_fixtures.py
"$venv/bin/python" validation/test_photoz_tools.py

step "GPU check scripts parse (validation/gpu, run on a GPU machine only)"
bash -n validation/gpu/run.sh validation/gpu/prepare.sh
"$venv/bin/python" -m py_compile validation/gpu/random_model.py validation/gpu/compare.py validation/fixture_spread.py

step "local Slurm (one node, and two nodes)"
if [ "$(id -u)" = 0 ]; then slurm/start-local-slurm.sh; else sudo slurm/start-local-slurm.sh; fi
if [ "$(id -u)" = 0 ]; then slurm/start-two-node-slurm.sh; else sudo slurm/start-two-node-slurm.sh; fi

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export AION_REQUIRE_SLURM=1 AION_PYTHON="$venv/bin/python" OMP_NUM_THREADS=1

# A clean clone gains nothing from incremental compilation caches (gigabytes of disk).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

step "base-size random model (for the strict-loading test)"
export AION_BASE_MODEL_DIR="${AION_BASE_MODEL_DIR:-$root/target/base-model}"
[ -f "$AION_BASE_MODEL_DIR/model.safetensors" ] ||
  "$venv/bin/python" validation/make_base_model.py --out "$AION_BASE_MODEL_DIR"

step "cargo fmt --check, cargo clippy (warnings are errors)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (CPU backend)"
cargo test --workspace --locked

step "build without root against a private MPI + parallel HDF5 prefix, run with mpirun -n 2"
tests/private-prefix-build.sh

step "LibTorch (tch) build of the binaries, then the model parity tests on LibTorch"
# aion-embed first (scripts/build-gpu.sh; the other binaries differ only in their small main):
# the tests below then reuse every crate it built (the same features: the workspace with `tch`).
# Profile `tch-test` (Cargo.toml): the Rust side unoptimised, since the arithmetic of these
# small models is LibTorch's; it builds in about half the time of the dev profile.
export LIBTORCH="$("$venv/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$root/target/tch"
scripts/build-gpu.sh --python "$venv/bin/python" --profile tch-test --target-dir "$root/target/tch" \
  --bin aion-embed | tee "$root/target/tch/version.txt"
# The LibTorch and CUDA versions it was built against, and LibTorch found without LD_LIBRARY_PATH.
grep -q "LibTorch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')" "$root/target/tch/version.txt"
env -u LD_LIBRARY_PATH "$root/target/tch/tch-test/aion-embed" --version |
  grep -q "loaded: $(readlink -f "$LIBTORCH/lib/libtorch_cpu.so")"
# Only the LibTorch cases (`::tch`) and the bf16 test: the NdArray ones ran in step 5. Twice:
# f32 products on LibTorch's CPU device run on our GEMM or on LibTorch's, whichever is faster
# on the CPU (timed at start); AION_CPU_GEMM pins each so both paths are checked on any CPU.
env -u AION_BASE_MODEL_DIR CARGO_TARGET_DIR="$root/target/tch" AION_CPU_GEMM=ours \
  cargo test --workspace --profile tch-test --features tch --locked --test parity --test bf16 \
  -- ::tch bf16_
env -u AION_BASE_MODEL_DIR CARGO_TARGET_DIR="$root/target/tch" AION_CPU_GEMM=torch \
  cargo test --workspace --profile tch-test --features tch --locked --test parity -- ::tch

step "all tests passed"
