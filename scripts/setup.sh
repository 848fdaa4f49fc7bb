#!/usr/bin/env bash
# Installs what aion-hpc needs on Debian 12 (idempotent: only missing packages are installed).
#
#   scripts/setup.sh            build + run dependencies (MPI, parallel HDF5, cfitsio, clang for bindgen)
#   scripts/setup.sh --tests    + local Slurm (munge, slurmctld, slurmd) and the Python venv of
#                                 the reference package (validation/.venv, ~7 GB, torch 2.9.0)
#   scripts/setup.sh --no-root  installs nothing: checks the MPI, parallel HDF5, Rust, libclang
#                                 this shell provides (modules, Spack) = scripts/check-env.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tests=0
[ "${1:-}" = "--tests" ] && tests=1
[ "${1:-}" = "--no-root" ] && exec "$here/scripts/check-env.sh"

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

pkgs=(pkg-config libclang-dev gcc g++ make openmpi-bin libopenmpi-dev libhdf5-openmpi-dev hdf5-tools libcfitsio-dev python3-venv git)
[ $tests = 1 ] && pkgs+=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "[setup] Rust >= 1.92 (cargo) is required: https://rustup.rs" >&2; exit 1; }
rustv=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.92.0\n' "$rustv" | sort -V | head -1)" != "1.92.0" ]; then
  echo "[setup] rustc $rustv is too old: burn 0.21 needs >= 1.92" >&2
  exit 1
fi

if [ $tests = 1 ]; then
  echo "[setup] Python environment of the reference (validation/.venv)"
  "$here/validation/setup-venv.sh"
fi
