#!/usr/bin/env bash
# Stops the two-node test cluster of start-two-node-slurm.sh (its jobs, daemons by pid file, the
# network namespaces and the bridge). The single-node cluster and munged keep running.
set -u
name=aion2n
run=/run/$name
SLURM_CONF=/etc/slurm-$name/slurm.conf scancel --full --user=root 2>/dev/null || true
for f in "$run"/slurmd-*.pid "$run"/slurmctld.pid; do
  [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
  rm -f "$f"
done
sleep 0.5
for n in ${name}-n1 ${name}-n2; do
  ip netns del "$n" 2>/dev/null
  ip link del "v$n" 2>/dev/null
done
ip link del ${name}-br 2>/dev/null
rm -f /etc/slurm-$name/env.sh  # the tests take its presence for a running cluster
exit 0
