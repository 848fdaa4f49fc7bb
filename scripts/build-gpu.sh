#!/usr/bin/env bash
# Builds the GPU binaries (LibTorch, CUDA) of aion-hpc from a pip-installed torch 2.9.0, the
# LibTorch that burn-tch 0.21 / tch 0.22 are made for. No root needed.
#
#   scripts/build-gpu.sh                  venv .venv-gpu + torch 2.9.0 from PyPI (CUDA 12.8
#                                         build), then a release build into target/gpu/release
#   scripts/build-gpu.sh --cuda cu126     torch 2.9.0 built for CUDA 12.6 (PyTorch's index;
#                                         cu126, cu128, cu129 or cpu for a CPU-only LibTorch)
#   scripts/build-gpu.sh --python PY      use the torch 2.9.0 that Python PY already has
#   options: --venv DIR (default .venv-gpu), --target-dir DIR (default target/gpu), --debug,
#            --profile NAME (a cargo profile: the tests use `tch-test`, see Cargo.toml),
#            --bin NAME (only that binary; repeatable; default: all of them)
#
# The binaries link to the LibTorch of that torch install (its lib/ is their run path, so no
# LD_LIBRARY_PATH is needed; keep the venv where it is) and record its version and CUDA version:
# `target/gpu/release/aion-embed --version` prints them. Run them with --device cuda (each rank
# takes the GPU of its node-local rank) or tch-cpu. The NVIDIA driver of the GPU nodes must
# support the CUDA version of the wheel (cu128: driver >= 570). MPI and HDF5 are found as for the
# CPU build (scripts/check-env.sh, docs/install.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv-gpu
python=""
cuda=""
profile=release
target=$root/target/gpu
bins=(--bins)
while [ $# -gt 0 ]; do
  case "$1" in
    --venv) venv=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --cuda) cuda=$2; shift 2 ;;
    --target-dir) target=$2; shift 2 ;;
    --debug) profile=dev; shift ;;
    --profile) profile=$2; shift 2 ;;
    --bin)
      [ "${bins[0]}" = --bins ] && bins=()
      bins+=(--bin "$2")
      shift 2
      ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build-gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
torch_version=2.9.0
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

if [ -z "$python" ]; then
  if [ ! -x "$venv/bin/python" ]; then
    echo "[build-gpu] creating $venv"
    python3 -m venv "$venv"
  fi
  python=$venv/bin/python
  if ! "$python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
    index=()
    [ -n "$cuda" ] && index=(--index-url "https://download.pytorch.org/whl/$cuda")
    echo "[build-gpu] pip install torch==$torch_version ${index[*]} (several GB with CUDA)"
    "$python" -m pip install -q --upgrade pip
    "$python" -m pip install -q "torch==$torch_version" "${index[@]}"
  fi
fi
read -r have libtorch < <("$python" -c 'import torch, os; print(torch.__version__, os.path.dirname(torch.__file__))')
if [ "${have%%+*}" != "$torch_version" ]; then
  echo "[build-gpu] $python has torch $have; burn-tch 0.21 needs $torch_version" >&2
  exit 1
fi
echo "[build-gpu] LibTorch: torch $have at $libtorch"

export LIBTORCH=$libtorch
export CARGO_TARGET_DIR=$target
cd "$root"
cargo build --locked --profile "$profile" --features tch "${bins[@]}"
dir=$target/$([ "$profile" = dev ] && echo debug || echo "$profile")
echo
echo "[build-gpu] binaries in $dir:"
"$dir/aion-embed" --version
