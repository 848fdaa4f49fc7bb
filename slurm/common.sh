# Sourced by the aion-hpc sbatch scripts. Edit the site-specific part once for your cluster.
set -euo pipefail

# --- site-specific: the same modules the tools were built with (docs/install.md). Examples:
# module load openmpi/4.1 hdf5/1.10-parallel
# module load cuda/12.8                      # GPU build (scripts/build-gpu.sh)
# export LD_LIBRARY_PATH=$HOME/aion-venv/lib/python3.11/site-packages/torch/lib:$LD_LIBRARY_PATH
# export UCX_TLS=rc,sm,self                  # MPI transport, if your site asks for it

# The aion-hpc folder (this file is its slurm/common.sh) and the binaries: $AION_BIN, else the
# folder of aion-tokenize on PATH, else $AION_HOME/target/release (cargo build --release), else
# $AION_HOME/target/gpu/release (scripts/build-gpu.sh).
AION_HOME=${AION_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
if [ -z "${AION_BIN:-}" ]; then
  if command -v aion-tokenize >/dev/null 2>&1; then
    AION_BIN=$(dirname "$(command -v aion-tokenize)")
  elif [ ! -x "$AION_HOME/target/release/aion-tokenize" ] && [ -x "$AION_HOME/target/gpu/release/aion-tokenize" ]; then
    AION_BIN=$AION_HOME/target/gpu/release
  else
    AION_BIN=$AION_HOME/target/release
  fi
fi
export AION_HOME AION_BIN

# One thread per rank unless the job asked for more CPUs per task.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
export RAYON_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

# Open MPI under Slurm: srun must use PMIx (Debian's Open MPI has no PMI-1/2 support; MPICH and
# Cray MPICH use --mpi=pmi2 or cray_shasta: set AION_SRUN_MPI).
AION_SRUN=(srun "--mpi=${AION_SRUN_MPI:-pmix}" --kill-on-bad-exit=1)

# Runs one aion tool as a job step. The scripts ask Slurm for SIGUSR1 some minutes before the
# time limit (#SBATCH --signal=USR1@...): the tool then finishes the chunk in flight, records its
# progress in the output and exits with 3. This function then requeues the job
# (#SBATCH --requeue); the requeued run executes the same command and resumes from the output.
aion_step() {
  if [ ! -x "$1" ]; then
    echo "aion: $1 not found (AION_BIN=$AION_BIN): build with cargo build --release, or set AION_BIN to the folder of the aion-* binaries" >&2
    exit 2
  fi
  local rc=0
  "${AION_SRUN[@]}" "$@" || rc=$?
  if [ "$rc" -eq 3 ]; then
    echo "aion: progress saved before the time limit; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
    sleep 60  # requeue ends this script; never fall through to a final exit status
  fi
  return "$rc"
}

# The job's first log line: where and how it runs.
aion_banner() {
  echo "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}): $SLURM_NTASKS task(s) on $SLURM_JOB_NODELIST; binaries $AION_BIN"
}
