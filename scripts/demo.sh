#!/usr/bin/env bash
# The main job on the bundled sample, on a fresh Debian 12 machine (idempotent): installs the
# system packages, builds the tools in release mode, then, with 2 MPI ranks and the bundled
# model `data/models/sdss-photoz-tiny` (a tiny AION trained from scratch on SDSS ugriz photometry,
# docs/finetune.md):
#   1. aion-embed   embeds the 5000 SDSS Main Galaxy Sample galaxies of data/sdss_mgs/;
#   2. aion-predict predicts the redshift posterior of the 1000 galaxies the model never saw in
#      training (its test split) and draws predicted vs spectroscopic redshift.
# Prints where the outputs and the figure are. Outputs go to out/demo/ (re-runs replace them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
scripts/setup.sh
cargo build --release --locked --bins
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
model=data/models/sdss-photoz-tiny
out="$root/out/demo"
mkdir -p "$out"
bin="$root/target/release"
ranks=2

echo "== aion-embed: 5000 SDSS galaxies (data/sdss_mgs/sdss_mgs_train.h5), $ranks ranks"
mpirun -n "$ranks" "$bin/aion-embed" --model "$model" \
  --catalog data/sdss_mgs/sdss_mgs_train.h5 --output "$out/embeddings.h5" \
  --overwrite --log-level warn

echo "== aion-predict: redshift of the 1000 held-out galaxies (data/sdss_mgs/sdss_mgs_test_split.h5), $ranks ranks"
mpirun -n "$ranks" "$bin/aion-predict" --model "$model" \
  --catalog data/sdss_mgs/sdss_mgs_test_split.h5 --output "$out/photoz.h5" \
  --target tok_z --overwrite --log-level warn

summary() { # metrics of the run summary written by aion-predict
  sed -n 's/.*"sigma_nmad": *\([0-9.eE+-]*\).*/  sigma_NMAD \1/p; s/.*"outlier_fraction": *\([0-9.eE+-]*\).*/  outlier fraction \1/p; s/.*"bias": *\([0-9.eE+-]*\).*/  bias \1/p; s/.*"coverage_68": *\([0-9.eE+-]*\).*/  68 % interval coverage \1/p; s/.*"coverage_95": *\([0-9.eE+-]*\).*/  95 % interval coverage \1/p; s/.*"crps": *\([0-9.eE+-]*\).*/  CRPS \1/p' "$1"
}
echo
echo "redshift of the held-out galaxies (posterior median vs spectroscopic z):"
summary "$out/photoz.h5.run.json" || true
echo
echo "outputs:"
echo "  $out/embeddings.h5          embedding (5000, 64), object_id, flags (h5ls -r to list)"
echo "  $out/photoz.h5              tok_z posterior: mean, median, mode, std, q16, q84 (docs/hdf5-schema.md)"
echo "  $out/photoz.h5.tok_z.png    figure (also .svg): predicted vs spectroscopic redshift, PIT, interval coverage"
echo "  $out/*.run.json             provenance and run summaries"
