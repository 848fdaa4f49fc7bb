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

# Runs one aion tool as a job step. The scripts ask Slurm for SIGUSR1 some minutes before the
# time limit (#SBATCH --signal=USR1@...): the tool then finishes the chunk in flight, records its
# progress in the output and exits with 3. This function then requeues the job
# (#SBATCH --requeue); the requeued run executes the same command and resumes from the output.
aion_step() {
  local rc=0
  "${AION_SRUN[@]}" "$@" || rc=$?
  if [ "$rc" -eq 3 ]; then
    echo "aion: progress saved before the time limit; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    sleep 60  # requeue ends this script; never fall through to a final exit status
  fi
  return "$rc"
}
