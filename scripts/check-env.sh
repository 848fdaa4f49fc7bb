#!/usr/bin/env bash
# Checks, without root and without changing anything, that this shell can build and run aion-hpc
# with the MPI and parallel HDF5 it provides (from `module load`, Spack, or the system), and says
# what is missing. It looks where the build looks:
#   MPI  (crate mpi-sys 0.2 / build-probe-mpi): $MPI_PKG_CONFIG (a .pc file), else
#        $CRAY_MPICH_DIR, else `$MPICC -show` / `mpicc -show`, else pkg-config mpich / ompi;
#   HDF5 (crate hdf5-metno-sys 0.12): $HDF5_DIR (include/ + lib/; HDF5_ROOT is NOT read), else
#        pkg-config hdf5, else /usr/include/hdf5/serial, /usr/include; it must be built with
#        parallel support (H5_HAVE_PARALLEL in H5pubconf.h) against the same MPI;
#   Rust >= 1.92 (cargo, rustc), libclang (bindgen; $LIBCLANG_PATH or llvm-config), a C compiler;
#   for the GPU build (--gpu): LibTorch 2.9.0 ($LIBTORCH, or scripts/build-gpu.sh) and CUDA.
#
#   scripts/check-env.sh [--gpu]     exit 0: ready to build (`cargo build --release --locked`)
#                                    exit 1: something required is missing (listed at the end)
set -uo pipefail
gpu=0
case "${1:-}" in
  --gpu) gpu=1 ;;
  "") ;;
  *) echo "usage: scripts/check-env.sh [--gpu]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
missing=()
ok() { printf '  ok    %s\n' "$*"; }
no() { printf '  MISSING %s\n' "$1"; missing+=("$1: $2"); }
warn() { printf '  warn  %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
ver_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

echo "== MPI"
mpi_libdirs=()
mpi_how=""
if [ -n "${MPI_PKG_CONFIG:-}" ]; then
  if have pkg-config && pkg-config --exists "$MPI_PKG_CONFIG"; then
    mpi_how="MPI_PKG_CONFIG=$MPI_PKG_CONFIG"
    read -ra mpi_libdirs <<<"$(pkg-config --libs-only-L "$MPI_PKG_CONFIG" | sed 's/-L//g')"
  else
    no "MPI" "MPI_PKG_CONFIG=$MPI_PKG_CONFIG is set but pkg-config cannot read it (the build stops there)"
  fi
elif [ -n "${CRAY_MPICH_DIR:-}" ]; then
  mpi_how="CRAY_MPICH_DIR=$CRAY_MPICH_DIR"
  mpi_libdirs=("$CRAY_MPICH_DIR/lib")
else
  mpicc=${MPICC:-mpicc}
  if have "$mpicc"; then
    show=$("$mpicc" -show 2>/dev/null || true)
    if [ -n "$show" ]; then
      mpi_how="$(command -v "$mpicc") -show: $show"
      read -ra mpi_libdirs <<<"$(tr ' ' '\n' <<<"$show" | sed -n 's/^-L//p' | tr '\n' ' ')"
    else
      no "MPI" "$(command -v "$mpicc") does not answer -show (is it an MPI compiler wrapper?)"
    fi
  elif have pkg-config && pkg-config --exists mpich; then
    mpi_how="pkg-config mpich"
    read -ra mpi_libdirs <<<"$(pkg-config --libs-only-L mpich | sed 's/-L//g')"
  elif have pkg-config && pkg-config --exists ompi; then
    mpi_how="pkg-config ompi"
    read -ra mpi_libdirs <<<"$(pkg-config --libs-only-L ompi | sed 's/-L//g')"
  else
    no "MPI" "no mpicc on PATH, no MPICC, MPI_PKG_CONFIG, CRAY_MPICH_DIR or mpich/ompi pkg-config entry (module load openmpi, or mpich, …)"
  fi
fi
if [ -n "$mpi_how" ]; then
  ok "found by $mpi_how"
  flavour=""
  if have ompi_info; then
    flavour=$(ompi_info --version 2>/dev/null | head -1)
  elif have mpichversion; then
    flavour="MPICH $(mpichversion 2>/dev/null | sed -n 's/^MPICH Version:[[:space:]]*//p')"
  elif have mpirun; then
    flavour=$(mpirun --version 2>&1 | head -1)
  fi
  [ -n "$flavour" ] && ok "flavour: $flavour"
  if have mpirun; then ok "launcher: $(command -v mpirun)"; else
    have srun && ok "launcher: srun (no mpirun on PATH)" || warn "no mpirun or srun on PATH: only single-process runs"
  fi
fi
mpi_lib=""
for d in "${mpi_libdirs[@]}"; do
  for f in "$d"/libmpi.so "$d"/libmpich.so "$d"/libmpi_*.so; do
    [ -e "$f" ] && { mpi_lib=$(readlink -f "$f"); break 2; }
  done
done
[ -n "$mpi_lib" ] && ok "library: $mpi_lib"

echo "== parallel HDF5"
inc=""
libdir=""
if [ -n "${HDF5_DIR:-}" ]; then
  inc=$HDF5_DIR/include
  libdir=$HDF5_DIR/lib
  how="HDF5_DIR=$HDF5_DIR"
elif have pkg-config && pkg-config --exists hdf5; then
  for i in $(pkg-config --cflags-only-I hdf5 | sed 's/-I//g'); do
    [ -f "$i/H5pubconf.h" ] && { inc=$i; break; }
  done
  libdir=$(pkg-config --libs-only-L hdf5 | sed 's/-L//g' | awk '{print $1}')
  how="pkg-config hdf5"
else
  for i in /usr/include/hdf5/serial /usr/include; do
    [ -f "$i/H5pubconf.h" ] && { inc=$i; break; }
  done
  how="the default location $inc"
fi
if [ -n "${HDF5_ROOT:-}${HDF5_HOME:-}" ] && [ -z "${HDF5_DIR:-}" ]; then
  warn "HDF5_ROOT/HDF5_HOME is set but the build reads only HDF5_DIR: export HDF5_DIR=${HDF5_ROOT:-$HDF5_HOME}"
fi
if [ -z "$inc" ] || [ ! -f "$inc/H5pubconf.h" ]; then
  hint="load a parallel HDF5 module and export HDF5_DIR=<its prefix> (with include/ and lib/)"
  if have h5pcc; then
    p=$(h5pcc -showconfig 2>/dev/null | sed -n 's/^[[:space:]]*Installation point:[[:space:]]*//p')
    [ -n "$p" ] && hint="h5pcc is on PATH: export HDF5_DIR=$p"
  fi
  no "parallel HDF5" "no H5pubconf.h found via ${how:-HDF5_DIR or pkg-config}; $hint"
else
  hver=$(sed -n 's/^#define H5_VERSION "\(.*\)"/\1/p' "$inc/H5pubconf.h")
  if grep -Eq '^#define H5_HAVE_PARALLEL 1' "$inc/H5pubconf.h"; then
    ok "HDF5 $hver with parallel support, found by $how ($inc)"
  else
    no "parallel HDF5" "HDF5 $hver at $inc (found by $how) is serial (no H5_HAVE_PARALLEL): load the parallel HDF5 module (e.g. hdf5-mpi, hdf5/…-parallel, spack install hdf5+mpi) and set HDF5_DIR"
  fi
  h5lib=""
  for d in $libdir; do [ -e "$d/libhdf5.so" ] && h5lib=$(readlink -f "$d/libhdf5.so"); done
  if [ -z "$h5lib" ]; then
    no "libhdf5.so" "not in ${libdir:-<no lib dir>} (HDF5_DIR must hold lib/libhdf5.so)"
  else
    ok "library: $h5lib"
    # The MPI that HDF5 was built with must be the MPI the tools are built with.
    h5mpi=$(ldd "$h5lib" 2>/dev/null | awk '/libmpi(ch)?[._]/ {print $3; exit}')
    if [ -z "$h5mpi" ] || [ "$h5mpi" = "not" ]; then
      warn "cannot tell which libmpi $h5lib loads (ldd); put the MPI library folder on LD_LIBRARY_PATH"
    elif [ -n "$mpi_lib" ] && [ "$(readlink -f "$h5mpi")" != "$mpi_lib" ]; then
      warn "HDF5 loads $(readlink -f "$h5mpi") but the MPI found above is $mpi_lib: load the HDF5 module built for this MPI"
    else
      ok "HDF5 loads $h5mpi"
    fi
  fi
fi

echo "== Rust, C, libclang"
need_rust=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
if have cargo && have rustc; then
  rv=$(rustc --version | awk '{print $2}')
  if ver_ge "$rv" "${need_rust:-1.92}"; then ok "rustc $rv"; else
    no "Rust" "rustc $rv is older than ${need_rust:-1.92} (rustup update, or module load rust)"
  fi
else
  no "Rust" "no cargo/rustc on PATH: install rustup in your home (https://rustup.rs, no root needed) or module load rust"
fi
if have "${CC:-cc}" || have gcc || have clang; then ok "C compiler: $(command -v "${CC:-cc}" || command -v gcc || command -v clang)"; else
  no "C compiler" "no cc/gcc/clang on PATH (module load gcc)"
fi
clang_lib=""
for d in "${LIBCLANG_PATH:-}" "$(llvm-config --libdir 2>/dev/null)" /usr/lib/llvm-*/lib /usr/lib64 /usr/lib/x86_64-linux-gnu /usr/lib; do
  [ -n "$d" ] || continue
  for f in "$d"/libclang.so "$d"/libclang-*.so* "$d"/libclang.so.*; do
    [ -e "$f" ] && { clang_lib=$f; break 2; }
  done
done
if [ -n "$clang_lib" ]; then ok "libclang (bindgen): $clang_lib"; else
  no "libclang" "bindgen needs libclang.so: module load llvm (or clang), or export LIBCLANG_PATH=<folder with libclang.so>"
fi

echo "== GPU build (LibTorch)"
tv=""
if [ -n "${LIBTORCH:-}" ]; then
  tv=$(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$LIBTORCH/version.py" 2>/dev/null || true)
  [ -n "$tv" ] || tv=$(cat "$LIBTORCH/build-version" 2>/dev/null || true)
  where="LIBTORCH=$LIBTORCH"
elif [ -x "$root/.venv-gpu/bin/python" ]; then
  tv=$("$root/.venv-gpu/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
  where="$root/.venv-gpu (scripts/build-gpu.sh)"
fi
if [ -n "$tv" ]; then
  case "$tv" in
    2.9.0*) ok "LibTorch $tv ($where)" ;;
    *) if [ $gpu = 1 ]; then no "LibTorch" "$tv at $where; burn-tch 0.21 needs torch 2.9.0"; else warn "LibTorch $tv at $where; burn-tch 0.21 needs torch 2.9.0"; fi ;;
  esac
elif [ $gpu = 1 ]; then
  no "LibTorch" "scripts/build-gpu.sh installs torch 2.9.0 in a venv and builds with it"
else
  echo "  -     not set up (only for the GPU build: scripts/build-gpu.sh)"
fi
if have nvidia-smi; then
  ok "NVIDIA driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1), $(nvidia-smi -L 2>/dev/null | wc -l) GPU(s) here"
else
  echo "  -     no nvidia-smi here (normal on a login node without GPUs)"
fi

echo
if [ ${#missing[@]} -eq 0 ]; then
  echo "ready: cargo build --release --locked   (at run time, load the same modules: the tools"
  echo "       find libmpi and libhdf5 through LD_LIBRARY_PATH as the modules set it)"
  exit 0
fi
echo "missing:"
printf '  - %s\n' "${missing[@]}"
exit 1
