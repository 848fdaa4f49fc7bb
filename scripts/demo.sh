#!/usr/bin/env bash
# The main job on the bundled sample, on a fresh Debian 12 machine (idempotent):
# installs the system packages, builds the tools in release mode, and runs them on the bundled
# real sample catalogue with 2 MPI ranks. Prints where the outputs are.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo build --release --locked --bins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
out="$root/out/demo"
mkdir -p "$out"
bin="$root/target/release"

echo "== aion-tokenize: Legacy Survey sample (data/legacysurvey/piczl_dr10.h5), 2 ranks"
mpirun -n 2 "$bin/aion-tokenize" --model validation/fixtures/scalar_codecs/hub \
  --catalog data/legacysurvey/piczl_dr10.h5 --output "$out/tokens.h5" --log-level warn
echo
echo "outputs:"
echo "  $out/tokens.h5           (tokens; h5ls -r to list)"
echo "  $out/tokens.h5.run.json  (provenance and summary)"
