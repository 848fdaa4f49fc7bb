# Sourced by the aion-hpc sbatch scripts. Edit the site-specific part for your cluster.
set -euo pipefail

# --- site-specific (modules, MPI transport). Examples:
# module load openmpi/4.1 hdf5/1.10-parallel
# export UCX_TLS=rc,sm,self

# Where the aion-* binaries are: $AION_BIN, else target/release of the submit directory.
AION_BIN=${AION_BIN:-${SLURM_SUBMIT_DIR:-$PWD}/target/release}
if [ ! -x "$AION_BIN/aion-tokenize" ]; then
  echo "aion-hpc binaries not found in AION_BIN=$AION_BIN (build with: cargo build --release)" >&2
  exit 2
fi

# One thread per rank unless the job asked for more CPUs per task.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export RAYON_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# Open MPI under Slurm: srun must use PMIx (Debian's Open MPI has no PMI-1/2 support).
AION_SRUN=(srun --mpi=pmix --kill-on-bad-exit=1)
