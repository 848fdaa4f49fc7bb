#!/usr/bin/env bash
# Builds aion-embed the way a user without root does on a cluster, against an Open MPI and a
# parallel HDF5 that live in a private prefix and are "loaded" by setting the environment a
# module sets (PATH, LD_LIBRARY_PATH, OPAL_PREFIX, PKG_CONFIG_PATH, HDF5_DIR), then runs
# `mpirun -n 2 aion-embed` with them on the bundled SDSS sample and compares the embeddings with
# those of the system build.
#
# The prefix holds Debian's own packages (openmpi-bin, libopenmpi3, libopenmpi-dev,
# openmpi-common, libhdf5-openmpi-103-1, libhdf5-openmpi-dev), fetched with `apt-get download`
# and unpacked with `dpkg -x` by the user, their hard-coded /usr paths relocated (OPAL_PREFIX
# for Open MPI, rewritten .pc files for pkg-config).
#
# Run as root (CI): creates the user `aion-noroot`, and runs the user's part in a private mount
# namespace in which the system's Open MPI and HDF5 files are hidden (covered by /dev/null or
# empty folders), so a build or a run that silently fell back to them fails. Run as a normal
# user: that user builds, without the hiding; `ldd` then shows which libraries load.
# Either way the test also checks with `ldd` that libmpi and libhdf5 come from the prefix.
#
# CI time: the user's target folder starts as a copy of this checkout's target/debug (when the
# suite has built it), and the user's build first runs `cargo clean -p mpi-sys -p
# hdf5-metno-sys` (what a user switching MPI modules must do too): everything that depends on
# MPI or HDF5 (the two -sys crates, mpi, hdf5-metno, aion-mpi, aion-io, aion-app, the binary) is
# compiled again, the rest (burn, the model crate, …) is reused. For that the copy is built with
# the same toolchain and crate sources at the same paths: in the namespace, root's Rust and crate
# cache are lent to the user at their own paths (read-only). Without a copy it builds from
# scratch (slower, same checks).
#
#   tests/private-prefix-build.sh            (scripts/test.sh runs it; needs network for apt)
#   AION_PREFIX_SEED=DIR                      target/debug to copy (default: this checkout's)
#   AION_PREFIX_KEEP=1 …                      keep the work folder (printed) for inspection
set -euo pipefail
phase=${1:-outer}
pkgs=(openmpi-bin libopenmpi3 libopenmpi-dev openmpi-common libhdf5-openmpi-103-1 libhdf5-openmpi-dev)
user=aion-noroot
say() { echo "[private-prefix $(date +%T)] $*"; }

# --- as root, inside the private mount namespace: hide the system MPI/HDF5, lend the toolchain
if [ "$phase" = ns ]; then
  work=$2
  hide_dir() { [ -d "$1" ] && mount --bind "$work/empty" "$1"; return 0; }
  hidden=0
  for d in /usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/hdf5/openmpi \
    /usr/include/hdf5/openmpi /usr/share/openmpi /etc/openmpi; do
    [ -d "$d" ] && { hide_dir "$d"; hidden=$((hidden + 1)); }
  done
  while read -r f; do
    if [ -f "$f" ] && [ ! -L "$f" ]; then
      mount --bind /dev/null "$f"
      hidden=$((hidden + 1))
    fi
  done < <(dpkg -L "${pkgs[@]}" 2>/dev/null | sort -u | grep -Ev '^/usr/share/(doc|man|lintian)/')
  say "system Open MPI / HDF5 hidden in this namespace ($hidden files and folders)"
  # The user's toolchain: root's Rust and crate cache, read-only, at the same paths (so the
  # copied target folder stays valid). Root's home is private: an empty one stands in for it.
  cargo_home=$(readlink -f "${CARGO_HOME:-$HOME/.cargo}")
  sysroot=$(rustc --print sysroot)
  mount --bind -o ro "$cargo_home/registry" "$work/registry"
  mount --bind -o ro "$sysroot" "$work/rust"
  runuser -u "$user" -- test -x "$HOME" || mount -t tmpfs -o mode=0755 tmpfs "$HOME"
  mkdir -p "$cargo_home"
  mount -t tmpfs -o "mode=0755,uid=$(id -u "$user")" tmpfs "$cargo_home"
  mkdir "$cargo_home/registry"
  mount --bind "$work/registry" "$cargo_home/registry"
  mkdir -p "$sysroot"
  mount --bind "$work/rust" "$sysroot"
  exec runuser -u "$user" -- env -i HOME="$work/home" USER="$user" LANG=C.UTF-8 \
    PATH="$sysroot/bin:/usr/local/bin:/usr/bin:/bin" CARGO_HOME="$cargo_home" \
    CARGO_INCREMENTAL=0 bash "$work/src/tests/private-prefix-build.sh" user "$work"
fi

# --- as the user: fetch and unpack the packages, load them, build, run, check
if [ "$phase" = user ]; then
  work=$2
  cd "$work"
  t0=$SECONDS
  mkdir -p debs prefix out
  (cd debs && apt-get download -q "${pkgs[@]}" >/dev/null)
  for d in debs/*.deb; do dpkg -x "$d" prefix; done
  P=$work/prefix/usr
  L=$P/lib/x86_64-linux-gnu
  # What the distribution's alternatives would link, and pkg-config files for this prefix.
  ln -sf mpicc.openmpi "$P/bin/mpicc"
  ln -sf mpirun.openmpi "$P/bin/mpirun"
  ln -sf h5pcc.openmpi "$P/bin/h5pcc"
  for pc in "$L"/pkgconfig/*.pc "$L"/openmpi/lib/pkgconfig/*.pc; do
    sed -i "s#/usr#$P#g" "$pc"
  done
  say "packages fetched and unpacked into $P ($((SECONDS - t0)) s)"

  # "module load openmpi hdf5-openmpi": the variables such modules set.
  export PATH="$P/bin:$PATH"
  export LD_LIBRARY_PATH="$L"
  export OPAL_PREFIX="$P"
  export PKG_CONFIG_PATH="$L/pkgconfig"
  export HDF5_DIR="$L/hdf5/openmpi"
  export OMP_NUM_THREADS=1 OMPI_MCA_rmaps_base_oversubscribe=1

  scripts=$work/src/scripts
  "$scripts/check-env.sh" | tee out/check-env.txt
  grep -q "found by $P/bin/mpicc -show" out/check-env.txt
  grep -q "HDF5 1.10.8 with parallel support, found by HDF5_DIR=$HDF5_DIR" out/check-env.txt

  cd "$work/src"
  export CARGO_TARGET_DIR=$work/target
  t1=$SECONDS
  # The MPI bindings' build script does not notice another MPI: start them (and what depends on
  # them) afresh in a copied target folder, as after switching modules.
  cargo clean --locked --offline -p mpi-sys -p hdf5-metno-sys 2>&1 | tail -1
  cargo build --locked --offline --bin aion-embed 2>&1 | tee "$work/out/build.log" | tail -3
  say "cargo build --bin aion-embed: $((SECONDS - t1)) s," \
    "$(grep -c '^ *Compiling' "$work/out/build.log") crates compiled"
  bin=$work/target/debug/aion-embed
  ldd "$bin" >"$work/out/ldd.txt"
  for lib in libmpi.so.40 libhdf5_openmpi.so.103; do
    got=$(awk -v l="$lib" '$1 == l {print $3}' "$work/out/ldd.txt")
    case "$got" in
      "$L"/*) say "$lib -> $got (the prefix)" ;;
      *) echo "FAIL: $lib resolves to '${got:-nothing}', not into $L" >&2; exit 1 ;;
    esac
  done
  "$bin" --version | tee "$work/out/version.txt"
  grep -q "^MPI       Open MPI v4.1.4" "$work/out/version.txt"
  grep -q "^HDF5      1.10.8 (parallel" "$work/out/version.txt"
  mpirun -n 2 "$bin" --model data/models/sdss-photoz-tiny \
    --catalog data/sdss_mgs/sdss_mgs_test_split.h5 --output "$work/out/embeddings.h5" \
    --log-level info 2>&1 | tee "$work/out/run.log" | grep -E 'aion-embed [01]/2\].*(host|embedded)' || true
  grep -q "aion-embed 1/2\]" "$work/out/run.log" || { echo "FAIL: no rank 1 of 2 in the log" >&2; exit 1; }
  [ -s "$work/out/embeddings.h5" ] || { echo "FAIL: no output" >&2; exit 1; }
  say "mpirun -n 2 aion-embed with the prefix's Open MPI and HDF5: ok"
  exit 0
fi

# --- outer: prepare the work folder (and user), then run the user's part
root=$(cd "$(dirname "$0")/.." && pwd)
t0=$SECONDS
work=$(mktemp -d /tmp/aion-private-prefix.XXXXXX)
chmod 0755 "$work"
cleanup() {
  if [ "${AION_PREFIX_KEEP:-0}" = 1 ]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/src" "$work/home" "$work/empty" "$work/rust" "$work/registry" "$work/target"
# The user's clone: the tracked and new (not ignored) files of this checkout.
(cd "$root" && git ls-files -z --cached --others --exclude-standard |
  tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$work/src"

seed=${AION_PREFIX_SEED:-$root/target/debug}
if [ -d "$seed/.fingerprint" ]; then
  mkdir -p "$work/target/debug"
  # Libraries, build-script outputs and fingerprints; not the test executables (no extension).
  (cd "$seed" && { find deps -maxdepth 1 -type f -name '*.*' -print0
    find build .fingerprint ! -type d -print0; } | tar --null -T - -cf -) |
    tar -C "$work/target/debug" -xf -
  say "target folder seeded from $seed ($(du -sh "$work/target" | cut -f1), $((SECONDS - t0)) s)"
fi

if [ "$(id -u)" = 0 ]; then
  id "$user" >/dev/null 2>&1 || useradd --no-create-home --home-dir /nonexistent \
    --shell /bin/bash "$user"
  chown -R "$user:" "$work/src" "$work/home" "$work/target"
  chown "$user:" "$work"
  unshare --mount --propagation private bash "$0" ns "$work"
else
  CARGO_INCREMENTAL=0 bash "$work/src/tests/private-prefix-build.sh" user "$work"
fi

# The same embeddings as the system build (when the suite built it: target/debug).
sys_bin=$root/target/debug/aion-embed
if [ -x "$sys_bin" ] && command -v h5diff >/dev/null; then
  OMP_NUM_THREADS=1 "$sys_bin" --model "$root/data/models/sdss-photoz-tiny" \
    --catalog "$root/data/sdss_mgs/sdss_mgs_test_split.h5" --output "$work/system.h5" \
    --log-level warn
  for ds in /embedding /object_id; do
    h5diff "$work/system.h5" "$work/out/embeddings.h5" "$ds" "$ds" ||
      { echo "FAIL: $ds differs from the system build's" >&2; exit 1; }
  done
  say "embeddings identical to the system build's (1 rank, $sys_bin)"
fi
say "passed in $((SECONDS - t0)) s"
