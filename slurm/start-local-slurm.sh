#!/usr/bin/env bash
# Brings up a single-node Slurm (munged + slurmctld + slurmd) on this Debian machine, for the
# test suite: no systemd, no cgroups, no accounting. Must run as root. Idempotent: when the
# cluster is already up with the same configuration it only checks that the node is idle.
#
#   AION_SLURM_CPUS=N   CPUs the node advertises (default: the real count)
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start-local-slurm.sh must run as root" >&2; exit 1; }
# shellcheck source=slurm/test-cluster.sh
. "$(cd "$(dirname "$0")" && pwd)/test-cluster.sh"

export DEBIAN_FRONTEND=noninteractive
need=()
for p in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${need[@]}" >/dev/null
fi

host=$(hostname -s)
getent hosts "$host" >/dev/null || echo "127.0.0.1 $host" >> /etc/hosts

# munge: key readable by munge only, runtime dir recreated (/run is a tmpfs)
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge_ok && break; sleep 0.1; done
  munge_ok || { echo "munged did not start (see /var/log/munge/munged.log)" >&2; exit 1; }
fi

real=$(nproc --all)
cpus=${AION_SLURM_CPUS:-$real}
if [ "$cpus" = "$real" ]; then
  topo=$(slurmd -C | head -1 | grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' | tr '\n' ' ')
  extra=""
else
  topo="CPUs=$cpus "
  extra="SlurmdParameters=config_overrides"
fi
mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 9 / 10 ))
install -d -m 0755 /etc/slurm /run/slurm /var/log/slurm /var/spool/slurmctld /var/spool/slurmd
conf=$(mktemp)
cat > "$conf" <<CONF
# written by aion-hpc slurm/start-local-slurm.sh: one node, for tests
ClusterName=aionci
SlurmctldHost=${host}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$(test_cluster_plugins)
ReturnToService=2
EnforcePartLimits=ALL
KillWait=5
MinJobAge=600
JobRequeue=1
${extra}
NodeName=${host} NodeAddr=127.0.0.1 ${topo}RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF

if ! cmp -s "$conf" /etc/slurm/slurm.conf; then
  install -m 0644 "$conf" /etc/slurm/slurm.conf
  stop /run/slurm/slurmd.pid; stop /run/slurm/slurmctld.pid
fi
rm -f "$conf"
alive /run/slurm/slurmctld.pid || /usr/sbin/slurmctld -c
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
alive /run/slurm/slurmd.pid || /usr/sbin/slurmd
for _ in $(seq 120); do
  state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1)
  case "$state" in
    idle|mixed|allocated) echo "local Slurm up: node $host $state, $cpus CPU(s)"; exit 0 ;;
    *drain*|down*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.5
done
echo "Slurm node did not become idle (state '$state'); see /var/log/slurm/" >&2
exit 1
