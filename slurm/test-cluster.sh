# Sourced by slurm/start-local-slurm.sh and slurm/start-two-node-slurm.sh: what the two local test
# clusters share (daemon pid files, the scheduling and plugin part of their slurm.conf).

# Whether the process of pid file $1 is running (a zombie is not).
alive() {
  local pid st
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  st=$(ps -o stat= -p "$pid" 2>/dev/null | tr -d ' ')
  [ -n "$st" ] && [ "${st#Z}" = "$st" ]
}

# Stops the process of pid file $1 (waits up to 5 s) and removes the file.
stop() {
  if alive "$1"; then
    kill "$(cat "$1")"
    for _ in $(seq 50); do alive "$1" || break; sleep 0.1; done
  fi
  rm -f "$1"
}

# The slurm.conf lines of a test cluster: no cgroups, accounting or mail; cores as the unit.
test_cluster_plugins() {
  cat <<CONF
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
CONF
}
