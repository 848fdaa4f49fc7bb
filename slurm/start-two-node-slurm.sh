#!/usr/bin/env bash
# Brings up a second, two-node Slurm cluster on this one machine, for the multi-node tests: two
# slurmd, each in its own network namespace (own IP address on a private bridge) and UTS
# namespace (own host name), so MPI ranks on "node 1" and "node 2" talk over TCP as on a real
# cluster while sharing this machine's file system (the shared file system of a cluster). Must
# run as root; uses the munged of the single-node cluster (slurm/start-local-slurm.sh, which it
# starts if needed) and leaves that cluster alone: its own config, state, ports and pid files.
#
#   slurm/start-two-node-slurm.sh        idempotent; prints the SLURM_CONF to use
#   SLURM_CONF=/etc/slurm-aion2n/slurm.conf sbatch --nodes=2 --ntasks-per-node=2 …
#   slurm/stop-two-node-slurm.sh         stops it and removes the namespaces and the bridge
#
# Jobs on it need Open MPI over TCP on the bridge (exported by the job environment): set by
# $conf_dir/env.sh (OMPI_MCA_btl=tcp,self, OMPI_MCA_btl_tcp_if_include=10.77.0.0/24, …).
#
#   AION_SLURM2_CPUS=N   CPUs each node advertises (default 2; the nodes share the real cores)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start-two-node-slurm.sh must run as root" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=slurm/test-cluster.sh
. "$here/test-cluster.sh"
name=aion2n
conf_dir=/etc/slurm-$name
state=/var/spool/$name
run=/run/$name
logs=/var/log/slurm
net=10.77.0
br=${name}-br
nodes=(${name}-n1 ${name}-n2)
cpus=${AION_SLURM2_CPUS:-2}

# munge (shared with the single-node cluster: the same key authenticates both).
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || "$here/start-local-slurm.sh" >/dev/null

# Network: bridge $br (10.77.0.1, the controller) and one namespace + veth pair per node.
if ! ip link show "$br" >/dev/null 2>&1; then
  ip link add "$br" type bridge
  ip addr add "$net.1/24" dev "$br"
fi
ip link set "$br" up
for i in "${!nodes[@]}"; do
  n=${nodes[$i]}
  addr=$net.$((11 + i))
  if ! ip netns list | grep -qw "$n"; then
    ip netns add "$n"
    ip link add "v$n" type veth peer name eth0 netns "$n"
    ip link set "v$n" master "$br" up
    ip -n "$n" addr add "$addr/24" dev eth0
    ip -n "$n" link set eth0 up
    ip -n "$n" link set lo up
  fi
done

install -d -m 0755 "$conf_dir" "$state" "$state/ctld" "$run" "$logs"
for n in "${nodes[@]}"; do install -d -m 0755 "$state/$n" "$state/$n/tmp"; done
mem=$(($(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 4 / 10))
conf=$(mktemp)
cat >"$conf" <<CONF
# written by aion-hpc slurm/start-two-node-slurm.sh: two nodes on one machine, for tests
ClusterName=$name
SlurmctldHost=${name}-ctl($net.1)
SlurmctldPort=6917
SlurmdPort=6918
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/%n
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd-%n.pid
SlurmctldLogFile=$logs/$name-slurmctld.log
SlurmdLogFile=$logs/$name-slurmd-%n.log
TmpFS=$state/%n/tmp
$(test_cluster_plugins)
SlurmdParameters=config_overrides
ReturnToService=2
EnforcePartLimits=ALL
KillWait=5
MinJobAge=600
JobRequeue=1
NodeName=${nodes[0]} NodeAddr=$net.11 CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=${nodes[1]} NodeAddr=$net.12 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=two Nodes=${nodes[0]},${nodes[1]} Default=YES MaxTime=INFINITE State=UP
CONF
cat >"$conf_dir/env.sh" <<ENV
# Source before submitting to the two-node test cluster (written by start-two-node-slurm.sh).
export SLURM_CONF=$conf_dir/slurm.conf
export OMPI_MCA_btl=tcp,vader,self OMPI_MCA_pml=ob1 OMPI_MCA_btl_tcp_if_include=$net.0/24
export OMPI_MCA_oob_tcp_if_include=$net.0/24
ENV

if ! cmp -s "$conf" "$conf_dir/slurm.conf"; then
  install -m 0644 "$conf" "$conf_dir/slurm.conf"
  for n in "${nodes[@]}"; do stop "$run/slurmd-$n.pid"; done
  stop "$run/slurmctld.pid"
fi
rm -f "$conf"
export SLURM_CONF=$conf_dir/slurm.conf
# The controller: this machine's network, its own host name.
alive "$run/slurmctld.pid" ||
  unshare --uts sh -c "hostname ${name}-ctl && exec /usr/sbin/slurmctld -c -f $SLURM_CONF"
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
# Each node: its network namespace and host name (nsenter, not `ip netns exec`, which remounts
# /sys without the cgroup folders slurmd needs).
for n in "${nodes[@]}"; do
  alive "$run/slurmd-$n.pid" ||
    nsenter --net=/run/netns/"$n" unshare --uts sh -c "hostname $n && exec /usr/sbin/slurmd -f $SLURM_CONF -N $n"
done
for _ in $(seq 120); do
  states=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort)
  if [ "$(grep -cE ' (idle|mixed|allocated)$' <<<"$states")" = 2 ]; then
    echo "two-node Slurm up: $(tr '\n' ' ' <<<"$states")(SLURM_CONF=$SLURM_CONF; source $conf_dir/env.sh)"
    exit 0
  fi
  for n in "${nodes[@]}"; do
    grep -qE "^$n (down|drain)" <<<"$states" && scontrol update NodeName="$n" State=RESUME 2>/dev/null || true
  done
  sleep 0.5
done
echo "two-node Slurm did not become idle: $states (see $logs/$name-*.log)" >&2
exit 1
