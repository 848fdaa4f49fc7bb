#!/usr/bin/env bash
# Cancels all jobs and stops the daemons started by start-local-slurm.sh (by pid file only).
set -u
scancel --full --user=root 2>/dev/null || true
for f in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid /run/munge/munged.pid; do
  [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
  rm -f "$f"
done
exit 0
